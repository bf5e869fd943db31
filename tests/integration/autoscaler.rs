//! The autoscaler with its local provider (real `mesh-worker` processes, synthetic executor, a
//! real nats-server): a group at zero wakes when sectors arrive, serves them, drains and returns
//! to zero, and never removes a worker that holds a task; a load that comes in bursts closer
//! together than the down window does not make it flap; a drain mark stops a worker from taking
//! tasks until it is lifted. Each prints its figures (`FIGURE` lines with `--no-capture`).

use std::time::Duration;

use futures::FutureExt;

use mesh_tests::{Mesh, Proc, bin, free_port, lines, log_field, log_time_ms, observe, wait_for};

const WORKER_FLAGS: &str = r#""--executor", "synthetic", "--cpus", "4""#;
const DURATIONS: &str = "ap=100ms,pc1=1500ms,pc2=300ms,c1=50ms,c2=300ms,fin=50ms";

/// Writes the config of one local group `sim` serving every phase at 2KiB and starts the
/// autoscaler with metrics on a free port.
pub(crate) fn autoscaler(mesh: &Mesh, max: u32, down_window: &str) -> (Proc, u16) {
    autoscaler_with(mesh, max, down_window, "2m", DURATIONS)
}

/// [`autoscaler`] with the group's drain timeout and its workers' synthetic durations.
fn autoscaler_with(
    mesh: &Mesh,
    max: u32,
    down_window: &str,
    drain_timeout: &str,
    durations: &str,
) -> (Proc, u16) {
    autoscaler_named(
        mesh,
        "autoscaler",
        max,
        down_window,
        drain_timeout,
        &format!("{WORKER_FLAGS}, \"--synthetic-durations\", \"{durations}\""),
        "15s",
    )
}

/// [`autoscaler_with`], logging to `<name>.log`, with its workers' flags (TOML strings, comma
/// separated) and the groups' lease time.
pub(crate) fn autoscaler_named(
    mesh: &Mesh,
    name: &str,
    max: u32,
    down_window: &str,
    drain_timeout: &str,
    flags: &str,
    lease: &str,
) -> (Proc, u16) {
    let config = mesh.path(&format!("{name}.toml"));
    let text = format!(
        r#"
lease = "{lease}"

[[group]]
name = "sim"
phases = ["ap", "pc1", "pc2", "c1", "c2", "fin"]
sizes = ["2KiB"]
slots = 2
min = 0
max = {max}
scale_down_window = "{down_window}"
drain_timeout = "{drain_timeout}"
poll_interval = "250ms"

[group.provider]
kind = "local"
worker = "{worker}"
args = ["--store", "{store}", "--scratch", "{scratch}", {flags}]
log_dir = "{logs}"
"#,
        worker = bin("mesh-worker").display(),
        store = mesh.store,
        scratch = mesh.scratch().display(),
        logs = mesh.path("workers").display(),
    );
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    let url = mesh.url();
    let config = config.display().to_string();
    let metrics = format!("127.0.0.1:{port}");
    let proc = Proc::spawn(
        &bin("mesh-autoscaler"),
        &[
            "run",
            "--nats",
            &url,
            "--config",
            &config,
            "--metrics",
            &metrics,
        ],
        &[],
        &mesh.log(name),
    );
    (proc, port)
}

/// `/metrics`, or nothing while the server is not up.
async fn metrics(port: u16) -> Option<String> {
    mesh_tests::scrape(port).await
}

fn gauge(text: &str, name: &str) -> Option<u64> {
    mesh_tests::sample(text, name, &[("group", "sim")]).map(|v| v as u64)
}

/// Waits until the group serves `actual` instances and drains none.
async fn wait_size(port: u16, actual: u64, deadline: Duration) {
    wait_for(
        &format!("the group to serve {actual} instance(s) and drain none"),
        deadline,
        || async move {
            let text = metrics(port).await?;
            (gauge(&text, "mesh_autoscaler_group_serving_instances")? == actual
                && gauge(&text, "mesh_autoscaler_group_draining_instances")? == 0)
                .then_some(())
        },
    )
    .await;
}

/// The autoscaler's log lines with `needle`.
fn log_lines(mesh: &Mesh, needle: &str) -> Vec<String> {
    log_lines_of(mesh, "autoscaler", needle)
}

/// The log lines of autoscaler `name` with `needle`.
pub(crate) fn log_lines_of(mesh: &Mesh, name: &str, needle: &str) -> Vec<String> {
    lines(&mesh.log(name))
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

/// Every local worker's log: (starts, ends) of tasks, and whether it stopped cleanly.
fn worker_logs(mesh: &Mesh) -> Vec<(String, usize, usize, bool)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(mesh.path("workers")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            text.matches("task started").count(),
            text.matches("task done").count(),
            text.contains("worker stopped"),
        ));
    }
    out.sort();
    out
}

fn seal(mesh: &Mesh, name: &str, count: usize) -> Proc {
    let count = count.to_string();
    mesh.seal(name, &["--count", &count, "--synthetic"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_wakes_from_zero_serves_its_sectors_and_returns_to_zero() {
    let mesh = Mesh::start().await;
    let (mut scaler, port) = autoscaler(&mesh, 3, "3s");
    wait_size(port, 0, Duration::from_secs(30)).await;

    let published = mesh::now_ms();
    let mut sealing = seal(&mesh, "seal", 12);
    let status = sealing.wait(Duration::from_secs(240)).await;
    assert!(status.success(), "{}", sealing.tail(20));
    wait_size(port, 0, Duration::from_secs(60)).await;
    let zero = mesh::now_ms();
    // The group reports zero once every worker was told to stop (SIGTERM); each then drains
    // and exits on its own time, which on a loaded machine is more than one poll.
    wait_for(
        "every local worker to log that it stopped",
        Duration::from_secs(60),
        || async { worker_logs(&mesh).iter().all(|w| w.3).then_some(()) },
    )
    .await;

    let grew = log_lines(&mesh, "grew the group");
    assert!(!grew.is_empty(), "the group never grew");
    let most: u64 = grew
        .iter()
        .filter_map(|l| log_field(l, "size")?.parse().ok())
        .max()
        .unwrap();
    assert!(most <= 3, "grew to {most}, above max 3");
    let removed = log_lines(&mesh, "removed");
    let busy_removed = removed
        .iter()
        .filter(|l| log_field(l, "busy") != Some("0"))
        .count();
    assert_eq!(busy_removed, 0, "busy workers removed: {removed:#?}");
    assert!(
        removed
            .iter()
            .all(|l| log_field(l, "reason") == Some("drained")),
        "{removed:#?}"
    );
    let workers = worker_logs(&mesh);
    assert_eq!(workers.len() as u64, removed.len() as u64, "{workers:?}");
    for (name, starts, ends, stopped) in &workers {
        assert_eq!(starts, ends, "{name} was cut off in a task");
        assert!(stopped, "{name} did not stop cleanly");
    }
    let tasks: usize = workers.iter().map(|w| w.1).sum();
    assert_eq!(tasks, 12 * 6, "every phase of every sector ran once");

    // Backlog to the scale-up call; last task end to zero.
    let first_grow = log_time_ms(&grew[0]);
    let last_end = std::fs::read_dir(mesh.path("workers"))
        .unwrap()
        .flat_map(|e| lines(&e.unwrap().path()))
        .filter(|l| l.contains("task done"))
        .map(|l| log_time_ms(&l))
        .max()
        .unwrap();
    println!(
        "FIGURE autoscaler (local provider, 250 ms poll, 3 s down window): 12 synthetic sectors \
         published at zero; first scale-up call {} ms after the publisher started; grew to {most} \
         workers ({} scale-up calls); last task end to zero instances {:.1} s (window 3 s); {} \
         workers removed, {busy_removed} of them busy; {tasks} tasks, none cut off",
        first_grow.saturating_sub(published),
        grew.len(),
        zero.saturating_sub(last_end) as f64 / 1000.0,
        removed.len()
    );
    scaler.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(scaler.wait(Duration::from_secs(60)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_closer_than_the_down_window_do_not_make_it_flap() {
    let mesh = Mesh::start().await;
    let (mut scaler, port) = autoscaler(&mesh, 2, "20s");
    wait_size(port, 0, Duration::from_secs(30)).await;
    // Five bursts of one sector each; between them the pool idles for a moment.
    for burst in 0..5 {
        let mut sealing = seal(&mesh, &format!("burst-{burst}"), 1);
        let status = sealing.wait(Duration::from_secs(120)).await;
        assert!(status.success(), "{}", sealing.tail(20));
    }
    let text = metrics(port).await.unwrap();
    let held = mesh_tests::sample(
        &text,
        "mesh_autoscaler_decisions_total",
        &[("group", "sim"), ("reason", "held_by_window")],
    )
    .unwrap_or(0.0);
    let ups = log_lines(&mesh, "grew the group").len();
    let downs = log_lines(&mesh, "draining").len();
    assert_eq!(downs, 0, "drained between bursts");
    assert!(ups >= 1);
    // Direction changes so far: only up.
    println!(
        "FIGURE autoscaler sawtooth: 5 bursts of 1 sector, idle gaps under the 20 s down window: \
         {ups} scale-up call(s), {downs} drains; {held} evaluations held by the window"
    );
    scaler.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(scaler.wait(Duration::from_secs(60)).await.success());
    for (name, starts, ends, stopped) in worker_logs(&mesh) {
        assert_eq!(starts, ends, "{name} was cut off in a task");
        assert!(stopped, "{name} did not stop when the autoscaler did");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_mark_stops_a_worker_taking_tasks_until_it_is_lifted() {
    let mesh = Mesh::start().await;
    let flags = [
        "--executor",
        "synthetic",
        "--cpus",
        "4",
        "--synthetic-durations",
        "ap=50ms,pc1=50ms,pc2=50ms,c1=50ms,c2=50ms,fin=50ms",
    ];
    let held = mesh.worker("held", &flags);
    let free = mesh.worker("free", &flags);
    let broker = mesh.broker().await;
    let bucket = broker.bucket(mesh::names::DRAIN_BUCKET).await.unwrap();
    let mark = mesh::broker::drain::DrainMark {
        group: "test".into(),
        since_ms: mesh::now_ms(),
        reason: None,
    };
    mesh::broker::drain::mark(&bucket, "held", &mark)
        .await
        .unwrap();
    wait_for(
        "the worker to say it drains",
        Duration::from_secs(20),
        || {
            let broker = &broker;
            async move {
                let workers = mesh::broker::workers::list(broker).await.ok()?;
                workers
                    .iter()
                    .any(|w| w.id.0 == "held" && w.draining)
                    .then_some(())
            }
        },
    )
    .await;
    let mut sealing = seal(&mesh, "seal", 3);
    assert!(sealing.wait(Duration::from_secs(120)).await.success());
    let ran = |w: &Proc| w.log_text().matches("task started").count();
    assert_eq!(ran(&held), 0, "the held worker took tasks");
    assert_eq!(ran(&free), 18);

    mesh::broker::drain::unmark(&bucket, "held").await.unwrap();
    wait_for("the mark to be lifted", Duration::from_secs(20), || {
        let text = held.log_text();
        async move { text.contains("drain mark lifted").then_some(()) }
    })
    .await;
    drop(free);
    let mut sealing = seal(&mesh, "seal-2", 1);
    assert!(sealing.wait(Duration::from_secs(120)).await.success());
    assert_eq!(ran(&held), 6, "the worker took tasks again once lifted");
}

/// Whether process `pid` has exited (gone, or a zombie its new parent has not reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// An autoscaler killed by SIGKILL cannot stop its local workers: each sees its parent gone,
/// drains (finishing the task it runs) and exits by itself.
#[tokio::test(flavor = "multi_thread")]
async fn workers_of_a_killed_autoscaler_stop_by_themselves() {
    let mesh = Mesh::start().await;
    let (mut scaler, _port) = autoscaler(&mesh, 2, "1m");
    let _sealing = seal(&mesh, "seal", 2);
    let broker = mesh.broker().await;
    let pids = wait_for(
        "the group's workers to register",
        Duration::from_secs(60),
        || {
            let broker = &broker;
            async move {
                let workers = mesh::broker::workers::list(broker).await.ok()?;
                let pids: Vec<(String, u32)> = workers
                    .into_iter()
                    .filter(|w| w.id.0.starts_with("sim-"))
                    .map(|w| (w.id.0, w.pid))
                    .collect();
                (!pids.is_empty()).then_some(pids)
            }
        },
    )
    .await;
    scaler.kill();
    for (name, pid) in &pids {
        wait_for(
            &format!("{name} (pid {pid}) to exit without its autoscaler"),
            Duration::from_secs(60),
            || async move { exited(*pid).then_some(()) },
        )
        .await;
        let log =
            std::fs::read_to_string(mesh.path("workers").join(format!("{name}.log"))).unwrap();
        assert!(
            log.contains("the parent process is gone: draining") && log.contains("worker stopped"),
            "{log}"
        );
    }
    println!("FIGURE orphaned local workers stopped: {}", pids.len());
}

/// An autoscaler told to stop (SIGTERM) while its worker runs a task ten minutes long waits
/// the group's drain timeout, then tells the worker to hand the task back, and both exit.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_autoscaler_waits_the_drain_timeout_then_has_tasks_handed_back() {
    let mesh = Mesh::start().await;
    let (mut scaler, _port) = autoscaler_with(&mesh, 1, "1m", "1s", "ap=10m");
    let _sealing = seal(&mesh, "seal", 1);
    let broker = mesh.broker().await;
    let name = wait_for("AddPiece to start", Duration::from_secs(60), || async {
        observe::taker(&broker, mesh::phases::Phase::AddPiece, 1).await
    })
    .await;
    scaler.signal(nix::sys::signal::Signal::SIGTERM);
    let status = scaler.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", scaler.tail(20));
    assert_eq!(
        log_lines(&mesh, "a local worker is still draining").len(),
        1,
        "{}",
        scaler.tail(20)
    );
    assert!(log_lines(&mesh, "did not stop after its tasks were handed back").is_empty());
    let log = std::fs::read_to_string(mesh.path("workers").join(format!("{name}.log"))).unwrap();
    assert!(
        log.contains("aborted; handing the task back") && log.contains("worker stopped"),
        "{log}"
    );
}

/// Two autoscalers with the same group: one sizes it, the other stands by. The active one,
/// SIGKILLed while it scales up, stops renewing its lease; the standby takes the group over
/// within the lease time and the sectors seal.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_autoscaler_takes_a_group_over_when_the_active_one_dies() {
    let mesh = Mesh::start().await;
    let lease = Duration::from_secs(3);
    // No worker holds a sector's data: the dead autoscaler's workers take theirs with them,
    // which sends the sectors back to PreCommit1 after the holder grace (`locality` tests it).
    let flags =
        format!("{WORKER_FLAGS}, \"--no-holding\", \"--synthetic-durations\", \"{DURATIONS}\"");
    let start = |name: &str| autoscaler_named(&mesh, name, 3, "1m", "2m", &flags, "3s");
    let leader = |port: u16| async move {
        metrics(port)
            .await
            .and_then(|text| gauge(&text, "mesh_autoscaler_group_leader"))
    };
    let (mut first, first_port) = start("first");
    wait_for(
        "the first to take the lease",
        Duration::from_secs(30),
        || leader(first_port).map(|l| (l == Some(1)).then_some(())),
    )
    .await;
    let (mut second, second_port) = start("second");
    wait_for("the second to stand by", Duration::from_secs(30), || {
        leader(second_port).map(|l| (l == Some(0)).then_some(()))
    })
    .await;
    let mut sealing = seal(&mesh, "seal", 6);
    wait_for(
        "the first to start workers",
        Duration::from_secs(60),
        || async {
            (!log_lines_of(&mesh, "first", "started a local worker").is_empty()).then_some(())
        },
    )
    .await;
    assert!(
        log_lines_of(&mesh, "second", "started a local worker").is_empty(),
        "the standby started workers: {}",
        second.tail(20)
    );
    first.kill();
    let killed = std::time::Instant::now();
    wait_for("the second to take over", Duration::from_secs(60), || {
        leader(second_port).map(|l| (l == Some(1)).then_some(()))
    })
    .await;
    let takeover = killed.elapsed();
    let started = std::time::Instant::now();
    while log_lines_of(&mesh, "second", "started a local worker").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second did not start workers: {}",
            std::fs::read_to_string(mesh.log("second")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let serving = killed.elapsed();
    assert_eq!(
        log_lines_of(&mesh, "second", "took the group over").len(),
        1,
        "{}",
        second.tail(20)
    );
    let status = sealing.wait(Duration::from_secs(240)).await;
    assert!(status.success(), "{}", sealing.tail(20));
    println!(
        "FIGURE autoscaler pair: the standby took the group over {:.1} s after the active one's \
         SIGKILL and started its first worker {:.1} s after it (lease {} s); 6 sectors sealed",
        takeover.as_secs_f64(),
        serving.as_secs_f64(),
        lease.as_secs()
    );
    // A lease time, plus the standby's look every third of it, plus a loaded machine's slack.
    assert!(
        takeover < lease * 2 + Duration::from_secs(5),
        "took over after {takeover:?}"
    );
    second.signal(nix::sys::signal::Signal::SIGTERM);
    let status = second.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", second.tail(20));
    assert_eq!(log_lines_of(&mesh, "second", "lease released").len(), 1);
}
