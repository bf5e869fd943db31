//! Scale: what many idle workers cost one nats-server, and how fast one of them picks up a task,
//! as the pool grows; beside the same number of bare JetStream pullers.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- scale
//!
//! The pool is measured twice. Up to 1,000 workers in this one process: each is the real
//! worker loop, `mesh::worker::run`, with its own connection, registry heartbeat, weight and
//! drain-mark watches, bell subscriptions and idle polls (synthetic executor, every phase a
//! no-op; the loops are polled as one task), since a thousand processes do not fit a small
//! machine. And as separate `mesh-worker run` processes, as many as this machine holds
//! ([`PROCESS_POOLS`]). For each pool size on a fresh server: the server's CPU while the pool
//! idles, then a trickle of single AddPiece tasks with the pool idle between them: pickup
//! (publish → the server delivering the task to a worker's fetch, the consumer's last delivery
//! time) and done (publish → its result seen).
//!
//! Writes `bench/results/scale.md`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use mesh::model::{SectorSize, TaskClass, WorkerId, encode};
use mesh::phases::Phase;
use mesh::proofs::synthetic::Synthetic;
use mesh::worker::{Executor, WorkerConfig};
use mesh_tests::report::Report;
use mesh_tests::{Mesh, NatsServer, Proc, percentile, publish_task, synthetic_task, wait_for};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

/// Pool sizes, the workers in this process.
const POOLS: [usize; 6] = [10, 50, 100, 200, 500, 1_000];
/// Pool sizes, each worker a `mesh-worker` process: what this machine holds beside the rest.
const PROCESS_POOLS: [usize; 3] = [10, 50, 100];
/// Tasks in each trickle.
const TRICKLE: usize = 25;
/// How long the server's CPU is read while the pool idles.
const IDLE: Duration = Duration::from_secs(10);
/// How long a registered pool runs before it is measured: each worker reads the pool's size at
/// its first poll (a pool starting up looks small) and again 10 polls later, 20 s at most.
const SETTLE: Duration = Duration::from_secs(25);
/// Every phase a no-op.
const NO_OP: &str = "ap=0ms,pc1=0ms,pc2=0ms,c1=0ms,c2=0ms,fin=0ms";
const MINER: &str = "f01000";

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A deterministic jitter, 50 to 300 ms, so that publishes fall anywhere in the idle polls.
fn jitter(i: usize) -> Duration {
    Duration::from_millis(50 + (i as u64 * 7919 + 13) % 250)
}

/// Clock ticks per second of /proc/<pid>/stat.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime
    // the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

/// CPU used by the server and by the workers' processes over a window, in % of one core.
struct CpuWindow {
    server: String,
    workers: Vec<String>,
    started: Instant,
    server_cpu: f64,
    workers_cpu: f64,
}

/// CPU seconds of the processes `pids` together.
fn cpu_seconds_of(pids: &[String]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(pid)).sum()
}

impl CpuWindow {
    /// `workers`: the pids of the workers' processes (`self` for this one).
    fn start(server: &NatsServer, workers: &[String]) -> CpuWindow {
        let server = server.pid().to_string();
        CpuWindow {
            server_cpu: cpu_seconds(&server),
            workers_cpu: cpu_seconds_of(workers),
            server,
            workers: workers.to_vec(),
            started: Instant::now(),
        }
    }

    /// (server %, workers' processes %).
    fn end(self) -> (f64, f64) {
        let wall = self.started.elapsed().as_secs_f64();
        (
            100.0 * (cpu_seconds(&self.server) - self.server_cpu) / wall,
            100.0 * (cpu_seconds_of(&self.workers) - self.workers_cpu) / wall,
        )
    }
}

/// One pool size's figures.
struct Figures {
    pickup: Vec<f64>,
    done: Vec<f64>,
    idle_server: f64,
    idle_own: f64,
    trickle_server: f64,
    trickle_own: f64,
}

/// Milliseconds from `sent_ns` to the consumer's last delivery.
async fn delivered_after(consumer: &mut consumer::PullConsumer, sent_ns: i128) -> f64 {
    let info = consumer.info().await.expect("consumer info");
    let last = info
        .delivered
        .last_active
        .expect("a delivery")
        .unix_timestamp_nanos();
    (last - sent_ns) as f64 / 1e6
}

/// `workers` real worker loops in this process, idle, then a trickle of tasks.
async fn mesh_pool(workers: usize) -> Figures {
    let mesh = Mesh::start().await;
    mesh.task_consumer(MINER, Phase::AddPiece, TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let store = mesh::store::Store::open(&mesh::store::StoreConfig {
        url: mesh.store.clone(),
        options: Vec::new(),
    })
    .expect("open the store");
    let mut config = WorkerConfig::new(
        Executor::Synthetic(Synthetic::parse(NO_OP).expect("durations")),
        mesh.scratch(),
    );
    config.slots = Some(1);
    config.machine.gpus = Vec::new();
    let drain = CancellationToken::new();
    let abort = CancellationToken::new();
    // The worker loop's future is not `Send` (an async closure inside it), so the loops are
    // polled together as one task here; what they spawn runs on the whole runtime.
    let mut pool = Vec::new();
    for i in 0..workers {
        let mut config = config.clone();
        config.id = WorkerId(format!("sim-{i}"));
        let own = mesh::broker::Broker::connect(&mesh.url(), &format!("mesh-worker sim-{i}"))
            .await
            .expect("connect a worker");
        pool.push(mesh::worker::run(
            config,
            own,
            store.clone(),
            drain.clone(),
            abort.clone(),
        ));
    }
    let measure = async {
        let figures = measure(&mesh, &broker, workers, &["self".to_string()]).await;
        drain.cancel();
        figures
    };
    let (ended, figures) = tokio::time::timeout(
        Duration::from_secs(900),
        futures::future::join(futures::future::join_all(pool), measure),
    )
    .await
    .expect("the pool measured and stopped within 900 s");
    for run in ended {
        run.expect("worker run");
    }
    figures
}

/// `workers` `mesh-worker run` processes (one slot each, synthetic, every phase a no-op), idle,
/// then a trickle of tasks.
async fn process_pool(workers: usize) -> Figures {
    let mesh = Mesh::start().await;
    mesh.task_consumer(MINER, Phase::AddPiece, TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let args = [
        "--no-holding",
        "--slots",
        "1",
        "--executor",
        "synthetic",
        "--synthetic-durations",
        NO_OP,
    ];
    let mut pool: Vec<Proc> = (0..workers)
        .map(|i| mesh.worker(&format!("proc-{i}"), &args))
        .collect();
    let pids: Vec<String> = pool.iter().map(|p| p.pid().to_string()).collect();
    let figures = measure(&mesh, &broker, workers, &pids).await;
    for worker in &pool {
        worker.signal(Signal::SIGTERM);
    }
    for worker in &mut pool {
        assert!(
            worker.wait(Duration::from_secs(60)).await.success(),
            "a worker process failed:\n{}",
            worker.tail(20)
        );
    }
    figures
}

/// The idle window and the trickle, once `workers` workers have registered; the workers' CPU
/// is that of the processes `pids`.
async fn measure(
    mesh: &Mesh,
    broker: &mesh::broker::Broker,
    workers: usize,
    pids: &[String],
) -> Figures {
    wait_for("every worker to register", Duration::from_secs(600), || {
        let broker = broker.clone();
        async move {
            let n = mesh::broker::workers::list(&broker).await.ok()?.len();
            (n >= workers).then_some(())
        }
    })
    .await;
    // Past the first polls and heartbeats of the start, and the polls spread over the pool.
    tokio::time::sleep(SETTLE).await;

    let window = CpuWindow::start(&mesh.servers[0], pids);
    tokio::time::sleep(IDLE).await;
    let (idle_server, idle_own) = window.end();

    let mut consumer: consumer::PullConsumer = broker
        .stream(&mesh::names::task_stream(Phase::AddPiece, SectorSize::KiB2))
        .await
        .expect("the AddPiece stream")
        .get_consumer(&mesh::names::task_consumer(
            MINER.parse().expect("a miner"),
            TaskClass::Cc,
        ))
        .await
        .expect("the task consumer");
    let mut results = broker
        .client()
        .subscribe(mesh::names::result_filter(MINER.parse().expect("a miner")))
        .await
        .expect("subscribe to results");
    let (mut pickup, mut done) = (Vec::new(), Vec::new());
    let window = CpuWindow::start(&mesh.servers[0], pids);
    for i in 0..TRICKLE {
        tokio::time::sleep(jitter(i)).await;
        let miner = MINER.parse().expect("a miner id");
        let task = synthetic_task(miner, 1 + i as u64, Phase::AddPiece, false, Vec::new());
        let sent = now_ns();
        publish_task(broker, &task).await;
        tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .expect("a result within 30 s")
            .expect("the result subscription");
        done.push((now_ns() - sent) as f64 / 1e6);
        pickup.push(delivered_after(&mut consumer, sent).await);
    }
    let (trickle_server, trickle_own) = window.end();
    Figures {
        pickup,
        done,
        idle_server,
        idle_own,
        trickle_server,
        trickle_own,
    }
}

/// `pullers` bare JetStream pullers, each on its own connection with a pull request waiting at
/// the server, idle, then the same trickle; each replies on a core subject once it has acked.
async fn raw_pool(pullers: usize) -> Figures {
    let server = NatsServer::start();
    let url = server.url();
    let js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
    let stream = js
        .create_stream(stream::Config {
            name: "RAW_TASKS".to_string(),
            subjects: vec!["raw.task.>".to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the raw stream");
    let mut consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("pullers".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_waiting: 4096,
            ..Default::default()
        })
        .await
        .expect("create the raw consumer");
    let stop = CancellationToken::new();
    let mut running = Vec::new();
    for _ in 0..pullers {
        let client = async_nats::connect(&url).await.expect("connect");
        let mine = jetstream::new(client.clone())
            .get_stream("RAW_TASKS")
            .await
            .expect("the raw stream")
            .get_consumer::<consumer::pull::Config>("pullers")
            .await
            .expect("the raw consumer");
        let stop = stop.clone();
        running.push(tokio::spawn(async move {
            loop {
                let mut batch = mine
                    .batch()
                    .max_messages(1)
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                    .expect("pull");
                let next = tokio::select! {
                    next = batch.next() => next,
                    () = stop.cancelled() => return,
                };
                let Some(Ok(msg)) = next else { continue };
                msg.double_ack().await.expect("ack");
                client
                    .publish("raw.reply", msg.payload.clone())
                    .await
                    .expect("reply");
            }
        }));
    }
    let mut replies = js
        .client()
        .subscribe("raw.reply")
        .await
        .expect("subscribe to replies");
    wait_for(
        "every pull request to wait",
        Duration::from_secs(60),
        || {
            let consumer = consumer.clone();
            async move {
                let mut consumer = consumer;
                let waiting = consumer.info().await.ok()?.num_waiting;
                (waiting as usize >= pullers).then_some(())
            }
        },
    )
    .await;

    let window = CpuWindow::start(&server, &["self".to_string()]);
    tokio::time::sleep(IDLE).await;
    let (idle_server, idle_own) = window.end();

    let (mut pickup, mut done) = (Vec::new(), Vec::new());
    let window = CpuWindow::start(&server, &["self".to_string()]);
    for i in 0..TRICKLE {
        tokio::time::sleep(jitter(i)).await;
        let miner = MINER.parse().expect("a miner id");
        let payload = encode(&synthetic_task(
            miner,
            1 + i as u64,
            Phase::AddPiece,
            false,
            Vec::new(),
        ));
        let sent = now_ns();
        js.publish(format!("raw.task.{i}"), payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .expect("a reply within 30 s")
            .expect("the reply subscription");
        done.push((now_ns() - sent) as f64 / 1e6);
        pickup.push(delivered_after(&mut consumer, sent).await);
    }
    let (trickle_server, trickle_own) = window.end();
    stop.cancel();
    for puller in running {
        puller.await.expect("puller");
    }
    Figures {
        pickup,
        done,
        idle_server,
        idle_own,
        trickle_server,
        trickle_own,
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn row(path: &str, workers: usize, mut f: Figures) -> Vec<String> {
    let pct = |v: f64| format!("{v:.1} %");
    vec![
        path.to_string(),
        workers.to_string(),
        ms(percentile(&mut f.pickup, 50.0)),
        ms(percentile(&mut f.pickup, 99.0)),
        ms(percentile(&mut f.done, 50.0)),
        pct(f.idle_server),
        pct(f.trickle_server),
        format!("{} / {}", pct(f.idle_own), pct(f.trickle_own)),
    ]
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    let run_started = Instant::now();
    let mut report = Report::new(
        "scale",
        "Scale: idle workers on one server, beside bare JetStream pullers",
        &format!(
            "One nats-server (file storage) per row, the dev-profile build. **Mesh**: N workers, \
             each the real worker loop (`mesh::worker::run`: its own NATS connection, registry \
             heartbeat every 10 s, weight and drain-mark watches, the six task streams' bells heard \
             in a queue group while it has room, idle polls spread over the pool (every 2 s each \
             up to 25 workers, every 2 s × N ÷ 25 beyond), one slot, the synthetic executor with every \
             phase a no-op), all N in this one process (their take loops polled as one task, what \
             they spawn on the runtime's threads). **Mesh, processes**: N `mesh-worker run` \
             processes of the same build and settings, as many as this machine holds beside the \
             rest. \
             **Raw**: N async-nats pullers, each on its own connection with a one-message pull \
             request waiting at the server (expiring after 30 s, then renewed), replying on a core \
             subject once acked. Per row: the server's CPU over {} s of idling ({} s after the last worker \
             registered), then {TRICKLE} \
             single AddPiece tasks published one at a time, 50–300 ms apart, each after the last \
             was done. **Pickup**: from the publish to the server delivering the task to a \
             worker's fetch (the consumer's last delivery time; same clock). **Done**: from the \
             publish to the task's result (mesh) or reply (raw) seen by the publishing side. CPU \
             in % of one core, from /proc/<pid>/stat; the last column is the workers' processes \
             together (this one, which holds the in-process workers; idle / trickle).",
            IDLE.as_secs(),
            SETTLE.as_secs(),
        ),
        &[
            "path",
            "workers",
            "pickup p50",
            "pickup p99",
            "done p50",
            "server CPU idle",
            "server CPU trickle",
            "workers' CPU",
        ],
    );
    let mut mesh_rows = Vec::new();
    for workers in POOLS {
        println!("scale: mesh, {workers} workers…");
        let f = mesh_pool(workers).await;
        mesh_rows.push(row("mesh", workers, f));
        println!("  {}", mesh_rows.last().expect("a row").join(" | "));
        println!("scale: raw JetStream, {workers} pullers…");
        let f = raw_pool(workers).await;
        let raw = row("raw JetStream", workers, f);
        println!("  {}", raw.join(" | "));
        report.row(mesh_rows.last().expect("a row").clone());
        report.row(raw);
    }
    for workers in PROCESS_POOLS {
        println!("scale: mesh, {workers} worker processes…");
        let f = process_pool(workers).await;
        let row = row("mesh, processes", workers, f);
        println!("  {}", row.join(" | "));
        report.row(row);
    }
    report.note(
        "Each publish rings its stream's bell once, and one idle worker with room hears it (a \
         queue group): the bell names the task's miner and class and the worker fetches from \
         that consumer, so a task costs the server \
         the same whatever the pool's size. Idle workers poll for what no bell announces \
         (redeliveries, tasks handed back); together they poll as often as 25 workers do, \
         and heartbeat every 10 s each (a third of the registry's TTL), which is what still \
         grows with the pool. An idle raw puller costs the server nothing until its request \
         expires. The workers (in this process, or as processes) share the machine's two cores \
         with the server here: on separate machines the server's figures stand, and the pickup \
         times would lose the time spent waiting for a core.",
    );
    report.note(format!(
        "Whole scenario: {:.0} s.",
        run_started.elapsed().as_secs_f64()
    ));
    report.write();
}
