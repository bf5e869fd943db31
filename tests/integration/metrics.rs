//! `--metrics` on the worker and the publisher, scraped while they work: the counters move as
//! the work does, and `/healthz` follows the NATS connection. (The autoscaler's are scraped in
//! `autoscaler`, whose tests size groups by them.)

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_tests::{Mesh, free_port, http_get, sample, scrape, wait_for};

/// Waits until the page at `port` has `name{labels}` equal to `value`, and returns the page.
async fn wait_sample(port: u16, name: &str, labels: &[(&str, &str)], value: f64) -> String {
    wait_for(
        &format!("{name}{labels:?} to be {value} at port {port}"),
        Duration::from_secs(60),
        || async move {
            let text = scrape(port).await?;
            (sample(&text, name, labels) == Some(value)).then_some(text)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_and_publisher_metrics_move_with_the_work() {
    let mesh = Mesh::start().await;
    let (worker_port, publisher_port) = (free_port(), free_port());
    let worker_at = format!("127.0.0.1:{worker_port}");
    let publisher_at = format!("127.0.0.1:{publisher_port}");
    let mut worker = mesh.worker(
        "metered",
        &[
            "--executor",
            "synthetic",
            "--synthetic-durations",
            "pc1=4s",
            "--metrics",
            &worker_at,
        ],
    );
    // Served from the start; once the worker runs, its free resources and zero counters.
    let idle = wait_for(
        "the worker's resources",
        Duration::from_secs(30),
        || async {
            scrape(worker_port)
                .await
                .filter(|page| page.contains("mesh_worker_threads{"))
        },
    )
    .await;
    let build = sample(&idle, "mesh_build_info", &[("worker", "metered")]);
    assert_eq!(build, Some(1.0), "{idle}");
    assert_eq!(
        sample(&idle, "mesh_worker_threads", &[("state", "held")]),
        Some(0.0),
        "{idle}"
    );
    assert!(
        sample(&idle, "mesh_worker_threads", &[("state", "free")]).is_some_and(|t| t >= 1.0),
        "{idle}"
    );
    // Every counter starts at zero, so that a rule's increase() sees the first event.
    let zero_pc1 = [("phase", "pc1"), ("size", "2KiB")];
    for counter in [
        "mesh_worker_tasks_started_total",
        "mesh_worker_tasks_dead_lettered_total",
        "mesh_worker_leases_lost_total",
    ] {
        assert_eq!(
            sample(&idle, counter, &zero_pc1),
            Some(0.0),
            "{counter}: {idle}"
        );
    }
    assert_eq!(
        http_get(worker_port, "/healthz").await,
        Some((200, "ok\n".to_string()))
    );

    let mut seal = mesh.seal(
        "seal",
        &["--count", "1", "--synthetic", "--metrics", &publisher_at],
    );
    // While PreCommit1 runs (4 s): AddPiece done, PreCommit1 started and holding a thread.
    let pc1 = [("phase", "pc1"), ("size", "2KiB")];
    let ap = [("phase", "ap"), ("size", "2KiB")];
    let during = wait_sample(worker_port, "mesh_worker_tasks_started_total", &pc1, 1.0).await;
    assert_eq!(
        sample(&during, "mesh_worker_tasks_done_total", &ap),
        Some(1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mesh_worker_tasks_done_total", &pc1),
        Some(0.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mesh_worker_tasks_running", &[]),
        Some(1.0),
        "{during}"
    );
    assert!(
        sample(&during, "mesh_worker_threads", &[("state", "held")]).is_some_and(|t| t >= 1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mesh_worker_task_duration_seconds_count", &ap),
        Some(1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mesh_worker_task_queue_wait_seconds_count", &pc1),
        Some(1.0),
        "{during}"
    );
    // AddPiece's piece and unsealed copy went up, PreCommit1's input came down.
    for direction in ["upload", "download"] {
        let bytes = sample(
            &during,
            "mesh_worker_store_bytes_total",
            &[("direction", direction)],
        );
        assert!(bytes.is_some_and(|b| b > 0.0), "{direction}: {during}");
    }
    // The publisher sees the same sector in PreCommit1, AddPiece's result accepted.
    let publisher = wait_sample(
        publisher_port,
        "mesh_publisher_sectors",
        &[("miner", "f01000"), ("state", "pc1")],
        1.0,
    )
    .await;
    let results = |text: &str, phase: &str| {
        sample(
            text,
            "mesh_publisher_results_total",
            &[("phase", phase), ("outcome", "done")],
        )
    };
    assert_eq!(results(&publisher, "ap"), Some(1.0), "{publisher}");
    assert_eq!(
        sample(
            &publisher,
            "mesh_publisher_tasks_published_total",
            &[("phase", "pc1"), ("size", "2KiB")]
        ),
        Some(1.0),
        "{publisher}"
    );
    assert_eq!(
        sample(&publisher, "mesh_publisher_sectors", &[("state", "sealed")]),
        Some(0.0)
    );
    assert_eq!(
        http_get(publisher_port, "/healthz").await.map(|(s, _)| s),
        Some(200)
    );

    // Sealed: every phase done once, nothing running, no thread held, no retries.
    let status = seal.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", seal.tail(20));
    let after = wait_sample(
        worker_port,
        "mesh_worker_tasks_done_total",
        &[("phase", "fin")],
        1.0,
    )
    .await;
    for phase in ["ap", "pc1", "pc2", "c1", "c2", "fin"] {
        let labels = [("phase", phase), ("size", "2KiB")];
        let done = sample(&after, "mesh_worker_tasks_done_total", &labels);
        assert_eq!(done, Some(1.0), "{phase}: {after}");
    }
    assert_eq!(sample(&after, "mesh_worker_tasks_running", &[]), Some(0.0));
    assert_eq!(
        sample(&after, "mesh_worker_threads", &[("state", "held")]),
        Some(0.0)
    );
    let retried: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("mesh_worker_tasks_retried_total{"))
        .collect();
    assert!(
        !retried.is_empty() && retried.iter().all(|l| l.ends_with(" 0")),
        "{retried:?}"
    );
    let pc1_seconds = sample(&after, "mesh_worker_task_duration_seconds_sum", &pc1);
    assert!(pc1_seconds.is_some_and(|s| s >= 4.0), "{after}");

    // The alerts and the dashboard ask only for series these daemons serve (the autoscaler's
    // from one sizing an idle group).
    let (mut scaler, scaler_port) = crate::autoscaler::autoscaler(&mesh, 1, "1m");
    let scaler_page = wait_for(
        "the autoscaler's metrics",
        Duration::from_secs(30),
        || async move {
            let text = scrape(scaler_port).await?;
            text.contains("mesh_autoscaler_group_desired_instances{")
                .then_some(text)
        },
    )
    .await;
    scaler.kill();
    let served: BTreeSet<String> = [&after, &publisher, &scaler_page]
        .into_iter()
        .flat_map(|page| series_names(page))
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/mesh.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let named = metric_names(&text);
        assert!(named.len() >= 5, "{file} names {named:?}");
        let unknown: Vec<&String> = named.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{file} names series no daemon serves: {unknown:?} (served: {served:?})"
        );
    }

    // The worker serves on while NATS is gone, and says it is unhealthy.
    let mut mesh = mesh;
    mesh.servers[0].kill();
    let (status, why) = wait_for(
        "the worker's health to fail without NATS",
        Duration::from_secs(30),
        || async {
            http_get(worker_port, "/healthz")
                .await
                .filter(|(s, _)| *s != 200)
        },
    )
    .await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("not connected to NATS"), "{why}");
    worker.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_address_in_use_is_refused_with_the_flag_named() {
    let mesh = Mesh::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let mut worker = mesh.worker(
        "clash",
        &["--executor", "synthetic", "--metrics", at.as_str()],
    );
    let status = worker.wait(Duration::from_secs(30)).await;
    assert!(!status.success());
    let log = worker.log_text();
    assert!(
        log.contains(&format!("--metrics {at}: cannot listen there")),
        "{log}"
    );
}

/// Every series name an exposition page has or declares: its samples' names, and the series of
/// each `# TYPE` (a family with no sample yet, such as dead letters on a healthy run).
fn series_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split(' ');
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `mesh_…` name in a rules file or dashboard.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("mesh_") {
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if !starts_word {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}
