//! Dispatch: what the mesh adds to moving a task, beside a bare JetStream loop on the same
//! server in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- dispatch
//!
//! - Throughput: synthetic sectors whose six phases take no time (`--executor synthetic`, every
//!   duration 0ms) through the whole mesh path — the publisher queues a task, a worker pulls it,
//!   runs the no-op, stores its outputs, publishes the result and acks, the publisher accepts
//!   the result and queues the next phase — as tasks per second (6 × sectors / the publisher's
//!   wall time), on one worker with one slot and on a pool of workers with many slots. Beside
//!   it, a raw async-nats loop: a work-queue stream and one pull consumer, N messages, pullers
//!   that fetch one message at a time, publish a reply to a second stream and double-ack, and a
//!   reader that acks the replies; 1 puller and as many pullers as the pool has slots.
//! - Idle pickup: one task at a time to an idle worker, from the publish to the worker's
//!   `task started` log line; beside it, from the publish to an idle puller's receipt.
//!
//! Writes `bench/results/dispatch.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use mesh::model::TaskClass;
use mesh::phases::Phase;
use mesh_tests::report::Report;
use mesh_tests::{Mesh, Proc, log_time_ms, percentile, publish_task, synthetic_task, wait_for};
use nix::sys::signal::Signal;

/// Sectors of the one-slot run (6 tasks each).
const SOLO_SECTORS: usize = 100;
/// Sectors of the pool run.
const POOL_SECTORS: usize = 200;
const POOL_WORKERS: usize = 4;
const POOL_SLOTS: usize = 16;
/// Tasks sent one at a time to an idle worker (and to an idle puller).
const PICKUPS: usize = 50;
/// Every phase a no-op.
const NO_OP: &str = "ap=0ms,pc1=0ms,pc2=0ms,c1=0ms,c2=0ms,fin=0ms";
/// The miner of the hand-published pickup tasks (not the publisher's, so that no sector record
/// of the throughput runs is involved).
const PICKUP_MINER: &str = "f01002";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Microseconds since the epoch of a log line's `2026-11-25T07:56:54.117297Z` prefix.
fn log_time_us(line: &str) -> u64 {
    let z = line.find('Z').expect("a timestamp");
    let dot = line[..z].rfind('.').expect("fractional seconds");
    let whole_ms = log_time_ms(&format!("{}Z", &line[..dot]));
    let digits = &line[dot + 1..z];
    let frac: u64 = digits.parse().expect("fraction digits");
    let micros = frac * 10u64.pow(6u32.saturating_sub(digits.len() as u32))
        / 10u64.pow((digits.len() as u32).saturating_sub(6));
    whole_ms * 1000 + micros
}

/// A small deterministic jitter, 20 to 220 ms, so that publishes do not line up with polls.
fn jitter(i: usize) -> Duration {
    Duration::from_millis(20 + (i as u64 * 7919 + 13) % 200)
}

fn worker_flags(slots: usize) -> Vec<String> {
    [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        NO_OP,
        "--cpus",
        "64",
        "--gpus",
        "0",
        "--slots",
        &slots.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn start_worker(mesh: &Mesh, id: &str, slots: usize) -> Proc {
    let flags = worker_flags(slots);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    mesh.worker(id, &flags)
}

async fn until_started(workers: &[Proc]) {
    wait_for("the workers to start", Duration::from_secs(60), || {
        let up = workers
            .iter()
            .all(|w| w.log_text().contains("worker started"));
        async move { up.then_some(()) }
    })
    .await;
}

/// Drains the workers (SIGTERM) and waits for them to exit.
async fn stop(workers: Vec<Proc>) {
    for w in &workers {
        w.signal(Signal::SIGTERM);
    }
    for mut w in workers {
        w.wait(Duration::from_secs(30)).await;
    }
}

/// `sectors` no-op sectors through the mesh on `workers` workers of `slots` slots: tasks/s.
async fn mesh_throughput(
    mesh: &Mesh,
    label: &str,
    workers: usize,
    slots: usize,
    sectors: usize,
) -> f64 {
    let procs: Vec<Proc> = (0..workers)
        .map(|i| start_worker(mesh, &format!("{label}-{i}"), slots))
        .collect();
    until_started(&procs).await;
    let started = Instant::now();
    let mut publisher = mesh.seal(
        &format!("publisher-{label}"),
        &["--count", &sectors.to_string(), "--synthetic"],
    );
    let status = publisher.wait(Duration::from_secs(300)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    let wall = started.elapsed();
    let done: usize = procs
        .iter()
        .map(|w| w.log_text().matches("task done").count())
        .sum();
    assert!(done >= 6 * sectors, "{done} tasks done of {}", 6 * sectors);
    stop(procs).await;
    (6 * sectors) as f64 / wall.as_secs_f64()
}

/// Publish → the idle worker's `task started`, in ms, one task at a time.
async fn mesh_pickups(mesh: &Mesh) -> Vec<f64> {
    mesh.task_consumer(PICKUP_MINER, Phase::AddPiece, TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let worker = start_worker(mesh, "idle", 1);
    until_started(std::slice::from_ref(&worker)).await;
    let mut sent = Vec::new();
    for i in 0..PICKUPS {
        tokio::time::sleep(jitter(i)).await;
        let miner = PICKUP_MINER.parse().expect("a miner id");
        let task = synthetic_task(miner, 1 + i as u64, Phase::AddPiece, false, Vec::new());
        sent.push((task.id.0.clone(), now_us()));
        publish_task(&broker, &task).await;
        // Wait until the worker is idle again.
        wait_for("the task to finish", Duration::from_secs(30), || {
            let ended = worker.log_text().matches("task done").count()
                + worker.log_text().matches("dead-letter").count();
            async move { (ended > i).then_some(()) }
        })
        .await;
    }
    let text = worker.log_text();
    let latencies = sent
        .iter()
        .map(|(id, at)| {
            let line = text
                .lines()
                .find(|l| l.contains("task started") && l.contains(&format!("task={id}")))
                .unwrap_or_else(|| panic!("no start of {id}:\n{}", worker.tail(20)));
            log_time_us(line).saturating_sub(*at) as f64 / 1000.0
        })
        .collect();
    stop(vec![worker]).await;
    latencies
}

/// A work-queue stream and its pull consumer, as the mesh's task streams are made.
async fn raw_queue(js: &jetstream::Context, name: &str, subjects: &str) {
    let stream = js
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create a raw stream");
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("pullers".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("create a raw consumer");
}

/// The `pullers` consumer of `stream` on a connection of its own (as each worker has one).
async fn on_own_connection(
    url: &str,
    stream: &str,
) -> (jetstream::Context, consumer::PullConsumer) {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let consumer = js
        .get_stream(stream)
        .await
        .expect("open a raw stream")
        .get_consumer("pullers")
        .await
        .expect("open the raw consumer");
    (js, consumer)
}

/// `tasks` messages through a raw JetStream loop with `connections` × `per_connection`
/// pullers: tasks/s from the first publish to the last reply read.
async fn raw_throughput(
    url: &str,
    run: &str,
    connections: usize,
    per_connection: usize,
    tasks: usize,
) -> f64 {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    raw_queue(
        &js,
        &format!("RAW_TASKS_{run}"),
        &format!("raw.{run}.task.>"),
    )
    .await;
    let replies = js
        .create_stream(stream::Config {
            name: format!("RAW_REPLIES_{run}"),
            subjects: vec![format!("raw.{run}.reply.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the reply stream");
    let reader = replies
        .create_consumer(consumer::pull::Config {
            durable_name: Some("reader".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create the reply consumer");
    let done = Arc::new(AtomicUsize::new(0));
    let mut pullers = Vec::new();
    for _ in 0..connections {
        let (js, consumer) = on_own_connection(url, &format!("RAW_TASKS_{run}")).await;
        for _ in 0..per_connection {
            let (js, consumer, done) = (js.clone(), consumer.clone(), done.clone());
            let run = run.to_string();
            pullers.push(tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < tasks {
                    // One message at a time; waits briefly when none is there.
                    let mut batch = consumer
                        .batch()
                        .max_messages(1)
                        .expires(Duration::from_millis(200))
                        .messages()
                        .await
                        .expect("pull");
                    let Some(Ok(msg)) = batch.next().await else {
                        continue;
                    };
                    let n = msg.info().expect("a JetStream message").stream_sequence;
                    js.publish(format!("raw.{run}.reply.{n}"), msg.payload.clone())
                        .await
                        .expect("publish a reply")
                        .await
                        .expect("reply stored");
                    msg.double_ack().await.expect("ack");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let payload = bytes::Bytes::from(vec![7u8; 600]);
    let started = Instant::now();
    for i in 0..tasks {
        js.publish(format!("raw.{run}.task.{i}"), payload.clone())
            .await
            .expect("publish a task")
            .await
            .expect("task stored");
    }
    let mut messages = reader.messages().await.expect("read replies");
    for _ in 0..tasks {
        let msg = messages.next().await.expect("a reply").expect("a reply");
        msg.ack().await.expect("ack a reply");
    }
    let wall = started.elapsed();
    for p in pullers {
        p.await.expect("puller");
    }
    tasks as f64 / wall.as_secs_f64()
}

/// Publish → an idle puller's receipt, in ms, one message at a time.
async fn raw_pickups(url: &str) -> Vec<f64> {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    raw_queue(&js, "RAW_IDLE", "raw.idle.>").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_, consumer) = on_own_connection(url, "RAW_IDLE").await;
    let puller = tokio::spawn(async move {
        let mut taken = 0;
        while taken < PICKUPS {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .expect("pull");
            let Some(Ok(msg)) = batch.next().await else {
                continue;
            };
            let at = Instant::now();
            msg.double_ack().await.expect("ack");
            tx.send(at).expect("report a receipt");
            taken += 1;
        }
    });
    let mut latencies = Vec::new();
    for i in 0..PICKUPS {
        tokio::time::sleep(jitter(i)).await;
        let sent = Instant::now();
        js.publish(format!("raw.idle.{i}"), bytes::Bytes::from(vec![7u8; 600]))
            .await
            .expect("publish")
            .await
            .expect("stored");
        let received = rx.recv().await.expect("a receipt");
        latencies.push(received.duration_since(sent).as_secs_f64() * 1000.0);
    }
    puller.await.expect("puller");
    latencies
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    let run_started = Instant::now();
    let mut mesh = Mesh::start().await;
    // PC2 claims 92 % of the machine's threads in lotus's table: one at a time per worker
    // whatever the slots. Give it one thread, so that slots alone bound what runs at once.
    mesh.env
        .push(("PC2_2K_MAX_PARALLELISM".to_string(), "1".to_string()));
    let url = mesh.url();
    let pool = POOL_WORKERS * POOL_SLOTS;

    println!("dispatch: mesh, 1 worker × 1 slot, {SOLO_SECTORS} no-op sectors…");
    let mesh_solo = mesh_throughput(&mesh, "solo", 1, 1, SOLO_SECTORS).await;
    println!("  {mesh_solo:.0} tasks/s");
    println!(
        "dispatch: mesh, {POOL_WORKERS} workers × {POOL_SLOTS} slots, {POOL_SECTORS} no-op sectors…"
    );
    let mesh_pool = mesh_throughput(&mesh, "pool", POOL_WORKERS, POOL_SLOTS, POOL_SECTORS).await;
    println!("  {mesh_pool:.0} tasks/s");
    println!("dispatch: mesh, idle pickup × {PICKUPS}…");
    let mut mesh_pick = mesh_pickups(&mesh).await;

    let (solo_tasks, pool_tasks) = (6 * SOLO_SECTORS, 6 * POOL_SECTORS);
    println!("dispatch: raw JetStream, 1 puller, {solo_tasks} messages…");
    let raw_solo = raw_throughput(&url, "SOLO", 1, 1, solo_tasks).await;
    println!("  {raw_solo:.0} tasks/s");
    println!(
        "dispatch: raw JetStream, {POOL_WORKERS} × {POOL_SLOTS} pullers, {pool_tasks} messages…"
    );
    let raw_pool = raw_throughput(&url, "POOL", POOL_WORKERS, POOL_SLOTS, pool_tasks).await;
    println!("  {raw_pool:.0} tasks/s");
    println!("dispatch: raw JetStream, idle pickup × {PICKUPS}…");
    let mut raw_pick = raw_pickups(&url).await;

    let mut report = Report::new(
        "dispatch",
        "Dispatch: no-op tasks through the mesh beside raw JetStream",
        &format!(
            "One nats-server (file storage), the dev-profile binaries. **Throughput**: synthetic \
             2KiB sectors whose six phases are no-ops (`mesh-worker run --executor synthetic \
             --synthetic-durations {NO_OP} --cpus 64 --slots S`, PC2 given 1 thread) sealed by \
             `mesh-publisher seal --synthetic --count N`; tasks/s = 6 × N / the publisher's wall \
             time. Each task goes the whole way: the publisher queues it, a worker pulls it, runs \
             the no-op, stores its outputs, publishes the result and acks, the publisher accepts \
             the result and queues the next phase. **Raw**: async-nats alone on the same server: \
             a work-queue stream with one pull consumer, the tasks published up front, pullers \
             that take one message at a time, publish a reply to a second stream and double-ack, \
             a reader that acks the replies; tasks/s from the first publish to the last reply \
             read; pullers on as many connections as the mesh has workers. **Pickup**: {PICKUPS} \
             tasks sent one at a time to an idle one-slot worker, from the publish to its `task \
             started` log line; raw: from the publish to an idle puller's receipt (a pull request \
             waiting at the server)."
        ),
        &[
            "path",
            "workers × slots",
            "tasks",
            "tasks/s",
            "pickup p50",
            "pickup p99",
        ],
    );
    let dash = || "–".to_string();
    let rate = |r: f64| format!("{r:.0}");
    report.row(vec![
        "mesh".into(),
        "1 × 1".into(),
        solo_tasks.to_string(),
        rate(mesh_solo),
        dash(),
        dash(),
    ]);
    report.row(vec![
        "raw JetStream".into(),
        "1 × 1".into(),
        solo_tasks.to_string(),
        rate(raw_solo),
        dash(),
        dash(),
    ]);
    report.row(vec![
        "mesh".into(),
        format!("{POOL_WORKERS} × {POOL_SLOTS}"),
        pool_tasks.to_string(),
        rate(mesh_pool),
        dash(),
        dash(),
    ]);
    report.row(vec![
        "raw JetStream".into(),
        format!("{POOL_WORKERS} × {POOL_SLOTS}"),
        pool_tasks.to_string(),
        rate(raw_pool),
        dash(),
        dash(),
    ]);
    let (mp50, mp99) = (
        percentile(&mut mesh_pick, 50.0),
        percentile(&mut mesh_pick, 99.0),
    );
    let (rp50, rp99) = (
        percentile(&mut raw_pick, 50.0),
        percentile(&mut raw_pick, 99.0),
    );
    report.row(vec![
        "mesh, idle worker".into(),
        "1 × 1".into(),
        PICKUPS.to_string(),
        dash(),
        ms(mp50),
        ms(mp99),
    ]);
    report.row(vec![
        "raw JetStream, idle puller".into(),
        "1 × 1".into(),
        PICKUPS.to_string(),
        dash(),
        ms(rp50),
        ms(rp99),
    ]);
    report.note(format!(
        "Mesh / raw: throughput {:.3} at 1 slot, {:.3} at {pool} slots; pickup p50 {:.1}×, p99 \
         {:.1}×.",
        mesh_solo / raw_solo,
        mesh_pool / raw_pool,
        mp50 / rp50,
        mp99 / rp99,
    ));
    let worst = (mesh_solo / raw_solo).min(mesh_pool / raw_pool);
    report.note(format!(
        "Goal (throughput at least 0.5 of the raw loop): {}. A raw message costs the server \
         three requests (a pull, the reply, the ack); a mesh task about 18, most of them a \
         chain in which each waits for the one before (the take, the sector's state, the \
         registry writes, the result and its ack, the publisher's read and compare-and-set of \
         the sector, the next task's publish and its bell). At 1 slot that chain's latency sets \
         the pace; at {pool} slots the two cores that the server, the workers and the publisher \
         share do.",
        if worst >= 0.5 {
            "met".to_string()
        } else {
            format!("missed, by {:.1}× at worst", 0.5 / worst)
        },
    ));
    report.note(
        "The raw loop is the floor, not a like-for-like rival: its messages are independent, \
         while the mesh's six tasks of a sector are a chain through the publisher, and each mesh \
         task also reads the sector's state, writes its outputs to the store and its result \
         carries timings. Pickup on the mesh is a bell (a core message naming the task's miner \
         and class, rung after each publish and heard by one idle worker of the stream's queue \
         group) followed by a one-message fetch from that miner's consumer; raw is a pull \
         request already waiting at the server.",
    );
    report.note(format!(
        "Whole scenario: {:.0} s.",
        run_started.elapsed().as_secs_f64()
    ));
    report.write();
}
