//! Recovery: how long a SIGKILLed worker's task takes to run again elsewhere, over 20 kills,
//! beside bare JetStream redelivery with the same ack wait on the same server.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- recovery
//!
//! A real nats-server, `init --ack-wait 2s`, a pool of two synthetic workers and one sector at a
//! time. Each round, the worker that started the sector's PC1 is SIGKILLed 0–2.375 s into the
//! task (spread evenly over the rounds, so the kill falls at every point of the progress-ack and
//! poll cycles); the figure is the time from the kill to the `task started` line of attempt 2
//! of that task on the surviving worker (its log timestamp). A replacement then joins, so every
//! kill starts from a pool of two.
//! The baseline is a bare pull consumer on the same server with the same ack wait: the time from
//! a delivery left unacked to its redelivery to a waiting pull, which is the floor JetStream sets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::Config as StreamConfig;
use futures::StreamExt;
use mesh::broker::topology::stored_ack_wait;
use mesh::model::{MinerId, SectorSize, TaskClass};
use mesh::phases::Phase;
use mesh_tests::report::Report;
use mesh_tests::{Mesh, Proc, log_time_ms, wait_for};

const KILLS: usize = 20;
const ACK_WAIT: Duration = Duration::from_secs(2);
/// The worker's default `--poll-interval`: how often an idle worker looks for redeliveries.
const POLL: Duration = Duration::from_secs(2);
/// Unacked deliveries timed for the JetStream baseline.
const REDELIVERIES: usize = 5;
/// PC1 outlasts the latest kill (2.375 s in) with room for a slow look at the logs.
const DURATIONS: &str = "ap=200ms,pc1=4s,pc2=100ms,c1=100ms,c2=100ms,fin=100ms";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The value of `key=` in a log line's span fields (`task{task=… miner=…}`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    let start = line
        .match_indices(&needle)
        .find(|(i, _)| line[..*i].ends_with([' ', '{']))?
        .0
        + needle.len();
    line[start..].split([' ', '}', ':']).next()
}

/// The first log line of `proc` that contains every needle.
fn find_line(proc: &Proc, needles: &[&str]) -> Option<String> {
    proc.log_text()
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
}

/// Re-runs `init` on the mesh's server with the short ack wait (init updates the streams in
/// place; consumers made later read the ack wait from the stream's metadata).
fn init_ack_wait(mesh: &Mesh) {
    let ack_wait = format!("{}s", ACK_WAIT.as_secs());
    mesh.publisher(&["init", "--sizes", "2KiB", "--ack-wait", &ack_wait]);
}

/// Times `REDELIVERIES` redeliveries of one unacked message to a waiting pull on a bare consumer
/// with ack wait `ACK_WAIT`: the floor under any worker recovery.
async fn jetstream_floor(mesh: &Mesh) -> Vec<Duration> {
    let broker = mesh.broker().await;
    let js = broker.js();
    let stream = js
        .create_stream(StreamConfig {
            name: "BENCH_REDELIVERY".into(),
            subjects: vec!["bench.redelivery".into()],
            ..Default::default()
        })
        .await
        .expect("create the baseline stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .expect("create the baseline consumer");
    js.publish("bench.redelivery", "task".into())
        .await
        .expect("publish")
        .await
        .expect("publish acked");
    let mut arrivals = Vec::new();
    while arrivals.len() <= REDELIVERIES {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(ACK_WAIT + Duration::from_secs(5))
            .messages()
            .await
            .expect("pull");
        // Left unacked: the server delivers it again after the ack wait.
        if let Some(message) = batch.next().await {
            message.expect("a message");
            arrivals.push(Instant::now());
        }
    }
    js.delete_stream("BENCH_REDELIVERY")
        .await
        .expect("delete the baseline stream");
    arrivals.windows(2).map(|w| w[1] - w[0]).collect()
}

struct Kill {
    task: String,
    victim: String,
    taker: String,
    recovery: Duration,
}

/// One sector through the pool; its PC1 is killed `delay` after it starts. Returns the kill.
async fn one_kill(
    mesh: &Mesh,
    round: usize,
    workers: &mut Vec<(String, Proc)>,
    flags: &[&str],
    delay: Duration,
) -> Kill {
    let mut publisher = mesh.seal(
        &format!("publisher{round}"),
        &["--count", "1", "--synthetic"],
    );
    let sector = (round + 1).to_string();
    let sector_field = format!(" sector={sector} ");
    let (victim, line) = wait_for(
        &format!("pc1 of sector {sector} to start"),
        Duration::from_secs(60),
        || {
            let found = workers.iter().enumerate().find_map(|(i, (_, w))| {
                find_line(
                    w,
                    &[&sector_field, "attempt=1}", "phase=pc1", "task started"],
                )
                .map(|l| (i, l))
            });
            async move { found }
        },
    )
    .await;
    let task = field(&line, "task")
        .expect("task id in the log line")
        .to_string();
    tokio::time::sleep(delay).await;
    let (victim, mut proc) = workers.remove(victim);
    let killed_ms = now_ms();
    proc.kill();
    let task_field = format!("{{task={task} ");
    assert!(
        find_line(&proc, &[&task_field, "attempt=1}", "task done"]).is_none(),
        "the kill of {victim} landed after {task} was done: make PC1 longer"
    );

    let (taker, restarted_ms) = wait_for(
        &format!("{task} to restart on another worker"),
        Duration::from_secs(60),
        || {
            let found = workers.iter().find_map(|(id, w)| {
                find_line(w, &[&task_field, "attempt=2}", "task started"])
                    .map(|l| (id.clone(), log_time_ms(&l)))
            });
            async move { found }
        },
    )
    .await;
    // The replacement comes after the recovery, as it would in a real pool: one started at the
    // kill would poll in step with the redelivery and flatter the figure.
    let fresh = format!("w{}", round + 2);
    workers.push((fresh.clone(), mesh.worker(&fresh, flags)));
    let status = publisher.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", publisher.tail(20));
    Kill {
        task,
        victim,
        taker,
        recovery: Duration::from_millis(restarted_ms.saturating_sub(killed_ms)),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// min, median, max of a non-empty list.
fn spread(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    };
    (values[0], median, values[n - 1])
}

fn signed_secs(a: Duration, b: Duration) -> String {
    format!("{:+.2} s", a.as_secs_f64() - b.as_secs_f64())
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    let started = Instant::now();
    let mesh = Mesh::start().await;
    init_ack_wait(&mesh);
    let broker = mesh.broker().await;
    let pc1_stream = mesh::names::task_stream(Phase::PreCommit1, SectorSize::KiB2);
    let stored = stored_ack_wait(
        &broker
            .stream(&pc1_stream)
            .await
            .expect("pc1 stream")
            .cached_info()
            .config,
    );
    assert_eq!(stored, Some(ACK_WAIT), "init stored the ack wait");

    println!("recovery: JetStream baseline, {REDELIVERIES} redeliveries of an unacked message…");
    let floor = jetstream_floor(&mesh).await;

    println!("recovery: {KILLS} worker kills, ack wait {ACK_WAIT:?}, two synthetic workers…");
    let flags = [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        DURATIONS,
    ];
    let mut workers: Vec<(String, Proc)> = ["w0", "w1"]
        .iter()
        .map(|id| (id.to_string(), mesh.worker(id, &flags)))
        .collect();
    for (id, w) in &workers {
        let line = wait_for(&format!("{id} to start"), Duration::from_secs(60), || {
            let line = find_line(w, &["worker started"]);
            async move { line }
        })
        .await;
        assert!(
            line.contains(&format!("ack_wait={}s", ACK_WAIT.as_secs())),
            "{id} runs with the short ack wait: {line}"
        );
    }
    let mut kills = Vec::new();
    for round in 0..KILLS {
        // 0 to 2.375 s in 125 ms steps, each once over 20 rounds: the kill falls at every
        // point of the progress-ack cycle (500 ms) and of an idle worker's poll cycle (2 s).
        let delay = Duration::from_millis((round * 7 % 20) as u64 * 125);
        let kill = one_kill(&mesh, round, &mut workers, &flags, delay).await;
        println!(
            "  kill {:>2}: {} on {} killed {} ms in; attempt 2 started on {} after {}",
            round + 1,
            kill.task,
            kill.victim,
            delay.as_millis(),
            kill.taker,
            secs(kill.recovery)
        );
        if round == 0 {
            // The publisher made the per-miner consumers: they carry the short ack wait.
            let info = broker
                .stream(&pc1_stream)
                .await
                .expect("pc1 stream")
                .consumer_info(mesh::names::task_consumer(
                    "f01000".parse::<MinerId>().expect("miner"),
                    TaskClass::Cc,
                ))
                .await
                .expect("pc1 consumer");
            assert_eq!(info.config.ack_wait, ACK_WAIT, "the consumer's ack wait");
        }
        kills.push(kill);
    }

    let (min, median, max) = spread(kills.iter().map(|k| k.recovery).collect());
    let (fmin, fmedian, fmax) = spread(floor);
    let mut report = Report::new(
        "recovery",
        "Recovery: worker SIGKILL to its task running elsewhere",
        &format!(
            "A real nats-server after `mesh-publisher init --ack-wait {ack}s`, two synthetic \
             workers (`--executor synthetic`, PC1 lasts 4 s; progress acks every {prog} ms; \
             default `--poll-interval` {poll} s), one sector at a time. {KILLS} times, the \
             worker running a PC1 is SIGKILLed 0–2.375 s into it (125 ms steps, each once) and \
             measured from the kill to the `task started` line (log timestamp) of attempt 2 of \
             that task on the surviving worker; a replacement joins after that, so every kill \
             starts from a pool of two. Baseline in the same run: \
             a bare JetStream pull consumer with the same ack wait on the same server, the time \
             from a delivery left unacked to its redelivery to a waiting pull, \
             {REDELIVERIES} times.",
            ack = ACK_WAIT.as_secs(),
            poll = POLL.as_secs(),
            prog = (ACK_WAIT / 4).as_millis(),
        ),
        &[
            "kills",
            "ack wait",
            "min",
            "median",
            "max",
            "median − ack wait",
        ],
    );
    report.row(vec![
        format!("mesh: {KILLS} worker SIGKILLs"),
        secs(ACK_WAIT),
        secs(min),
        secs(median),
        secs(max),
        signed_secs(median, ACK_WAIT),
    ]);
    report.row(vec![
        format!("baseline: bare JetStream, {REDELIVERIES} redeliveries"),
        secs(ACK_WAIT),
        secs(fmin),
        secs(fmedian),
        secs(fmax),
        signed_secs(fmedian, ACK_WAIT),
    ]);
    report.note(format!(
        "Recovery ≈ ack wait − time since the dead worker's last progress ack (0–{} ms) + \
         pickup: a redelivery wakes no one, so an idle worker finds it at its next look (every \
         {} s). The last column is what the mesh adds to the ack wait; the baseline row is the \
         floor JetStream sets. The ack wait only moves the floor: with the default 10 s \
         (progress acks every 2.5 s) expect about 8 s more, less up to 2 s more taken off by \
         the longer progress-ack interval.",
        (ACK_WAIT / 4).as_millis(),
        POLL.as_secs()
    ));
    report.note(format!("Runtime {:.0} s.", started.elapsed().as_secs_f64()));
    report.write();
}
