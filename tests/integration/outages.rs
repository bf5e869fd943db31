//! Outages of what the mesh stands on: the nats-server killed and restarted, the leaders of a
//! 3-node cluster killed, the S3 server down for a while. Synthetic executor, real servers;
//! every sector must seal exactly once, nothing may land on the dead-letter stream, and every
//! client must reconnect by itself. Each test prints what it measured.

use std::time::{Duration, Instant};

use mesh::names;
use mesh_tests::{Mesh, Proc, Seaweed, s3_store, wait_for};

const WORKER: [&str; 6] = [
    "--executor",
    "synthetic",
    "--slots",
    "2",
    "--synthetic-durations",
    "ap=100ms,pc1=800ms,pc2=300ms,c1=50ms,c2=300ms,fin=50ms",
];

fn count(proc: &Proc, needle: &str) -> usize {
    proc.log_text().matches(needle).count()
}

/// Sectors of f01000 by state, from `sectors --json`.
fn sealed_and_total(mesh: &Mesh) -> (usize, usize) {
    let out = mesh.publisher(&["sectors", "--miner", "f01000", "--json"]);
    let states: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["state"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    (
        states.iter().filter(|s| *s == "sealed").count(),
        states.len(),
    )
}

async fn dead_letters(mesh: &Mesh) -> u64 {
    let broker = mesh.broker().await;
    let mut stream = broker.js().get_stream(names::DLQ_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Waits until the publisher has sealed `n` sectors.
async fn sealed_at_least(publisher: &Proc, n: usize) {
    wait_for(
        &format!("{n} sectors sealed"),
        Duration::from_secs(120),
        || {
            let sealed = count(publisher, "sector sealed");
            async move { (sealed >= n).then_some(()) }
        },
    )
    .await;
}

/// Checks the end of a run: the publisher succeeded, every sector sealed once, no dead letters,
/// the workers still alive.
async fn all_sealed(mesh: &Mesh, publisher: &mut Proc, workers: &mut [Proc], sectors: usize) {
    let status = publisher.wait(Duration::from_secs(300)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    assert_eq!(sealed_and_total(mesh), (sectors, sectors));
    // Each sector reported sealed, none sealed twice. A sealing whose compare-and-set answer was
    // lost in a failover is found by the publisher's reload instead of its own transition, so
    // the transitions may be fewer than the sectors.
    let log = publisher.log_text();
    let reported: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("sealed f01000.")?.split(':').next())
        .collect();
    assert_eq!(reported.len(), sectors, "every sector reported sealed");
    assert!(
        count(publisher, "sector sealed") <= sectors,
        "a sector was sealed twice"
    );
    assert_eq!(
        dead_letters(mesh).await,
        0,
        "dead letters:\n{}",
        mesh.publisher(&["dlq", "list"])
    );
    for w in workers {
        assert!(w.try_status().is_none(), "a worker died: {}", w.tail(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_and_restarted_nats_server_loses_nothing() {
    let mut mesh = Mesh::start().await;
    let mut workers = vec![mesh.worker("w1", &WORKER), mesh.worker("w2", &WORKER)];
    let sectors = 20;
    let mut publisher = mesh.seal("publisher", &["--count", "20", "--synthetic"]);
    sealed_at_least(&publisher, 3).await;

    mesh.servers[0].kill();
    let killed = Instant::now();
    wait_for("every client to notice", Duration::from_secs(30), || {
        let noticed = workers
            .iter()
            .chain([&publisher])
            .all(|p| count(p, "disconnected from nats") >= 1);
        async move { noticed.then_some(()) }
    })
    .await;
    // Down long enough for progress acks and heartbeats to fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.servers[0].restart();
    let down = killed.elapsed();
    let restarted = Instant::now();
    all_sealed(&mesh, &mut publisher, &mut workers, sectors).await;
    for p in workers.iter().chain([&publisher]) {
        assert!(
            count(p, "connected to nats") >= 2,
            "reconnected: {}",
            p.tail(20)
        );
    }
    println!(
        "FIGURE nats-server SIGKILLed for {:.1} s mid-run: all {sectors} sectors sealed once, \
         {:.1} s after the restart; no dead letters; 2 workers and the publisher reconnected",
        down.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
}

/// The cluster node that leads `stream` now (asked through any live node).
async fn leader(mesh: &Mesh, stream: &str) -> Option<usize> {
    let broker = mesh::broker::Broker::connect(&mesh.url(), "test")
        .await
        .ok()?;
    let mut stream = broker.js().get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    let name = info.cluster.clone()?.leader?;
    mesh.servers.iter().position(|s| s.name == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_stream_leaders_in_a_3_node_cluster_loses_nothing() {
    let mut mesh = Mesh::start_cluster().await;
    let mut workers = vec![mesh.worker("w1", &WORKER), mesh.worker("w2", &WORKER)];
    let sectors = 40;
    let mut publisher = mesh.seal("publisher", &["--count", "40", "--synthetic"]);
    sealed_at_least(&publisher, 3).await;

    let mut figures = Vec::new();
    for (stream, after) in [
        (
            names::task_stream(
                mesh::phases::Phase::PreCommit1,
                mesh::model::SectorSize::KiB2,
            ),
            3,
        ),
        (names::RESULT_STREAM.to_string(), 12),
    ] {
        sealed_at_least(&publisher, after).await;
        let old = leader(&mesh, &stream)
            .await
            .expect("the stream has a leader");
        let name = mesh.servers[old].name.clone();
        mesh.servers[old].kill();
        let killed = Instant::now();
        let new = wait_for(
            &format!("a new leader of {stream}"),
            Duration::from_secs(60),
            || {
                let mesh = &mesh;
                let stream = stream.clone();
                async move { leader(mesh, &stream).await.filter(|&n| n != old) }
            },
        )
        .await;
        let elected = killed.elapsed();
        let sealed = count(&publisher, "sector sealed");
        sealed_at_least(&publisher, (sealed + 2).min(sectors)).await;
        let progressed = killed.elapsed();
        figures.push(format!(
            "{stream}: leader {name} SIGKILLed, {} leads after {:.1} s, sealing went on \
             ({} more sealed {:.1} s after the kill)",
            mesh.servers[new].name,
            elected.as_secs_f64(),
            2,
            progressed.as_secs_f64()
        ));
        // Back to three nodes before the next kill, so the cluster keeps its quorum.
        mesh.servers[old].restart();
    }
    all_sealed(&mesh, &mut publisher, &mut workers, sectors).await;
    for f in figures {
        println!("FIGURE cluster R3: {f}");
    }
    println!("FIGURE cluster R3: all {sectors} sectors sealed once, no dead letters");
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_wait_out_an_s3_outage_and_no_sector_fails() {
    let mut s3 = Seaweed::start();
    s3_store(&s3, "outage").await;
    let mut mesh = Mesh::start().await;
    mesh.store = format!("s3://{}/outage", s3.bucket);
    mesh.env = s3.env();
    let mut workers = vec![mesh.worker("w1", &WORKER), mesh.worker("w2", &WORKER)];
    let sectors = 6;
    let mut publisher = mesh.seal("publisher", &["--count", "6", "--synthetic"]);
    sealed_at_least(&publisher, 1).await;

    s3.kill();
    let killed = Instant::now();
    wait_for(
        "a worker to wait for the store",
        Duration::from_secs(90),
        || {
            let waiting = workers
                .iter()
                .any(|w| count(w, "store unavailable; waiting for it") >= 2);
            async move { waiting.then_some(()) }
        },
    )
    .await;
    // Keep it down for a while: longer than one request's own retries take.
    if let Some(rest) = Duration::from_secs(20).checked_sub(killed.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    s3.restart();
    s3_store(&s3, "outage").await;
    let down = killed.elapsed();
    let back = Instant::now();
    all_sealed(&mesh, &mut publisher, &mut workers, sectors).await;
    let waits: usize = workers
        .iter()
        .map(|w| count(w, "store unavailable; waiting for it"))
        .sum();
    let naks: usize = workers.iter().map(|w| count(w, "will retry")).sum();
    println!(
        "FIGURE S3 server down {:.1} s: {waits} waits logged, {naks} attempts given back, all \
         {sectors} sectors sealed {:.1} s after it returned; none failed",
        down.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
}
