//! Worker and publisher faults, with the synthetic executor so that every phase can be hit in
//! seconds: SIGKILL in each phase, SIGSTOP past the ack wait, a publisher killed mid-run (alone
//! or beside a partner), and a worker without the scratch space a task needs. Each prints what
//! it measured. The processes a fault hits are the binaries; the others run in process; what ran
//! where is read from the worker registry and the results, not from logs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh::broker::Broker;
use mesh::model::SectorSize;
use mesh::phases::Phase;
use mesh::publisher::SealRequest;
use mesh_tests::observe;
use mesh_tests::{Mesh, Proc, publish_result, result_ack_floor, result_consumer_info, wait_for};
use nix::sys::signal::Signal;

/// How many times each task ran to completion (by its results), over all workers.
async fn completions(broker: &Broker) -> BTreeMap<String, usize> {
    let mut done = BTreeMap::new();
    for run in observe::runs(broker).await {
        if run.done {
            *done.entry(run.task).or_default() += 1;
        }
    }
    done
}

/// `sectors --json` of miner f01000: (sector, state).
fn states(mesh: &Mesh) -> Vec<(u64, String)> {
    mesh.publisher(&["sectors", "--miner", "f01000", "--json"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("sectors --json line");
            (
                v["sector"].as_u64().expect("sector"),
                v["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

const SYNTHETIC: [&str; 2] = ["--executor", "synthetic"];
/// Per-phase redelivery is what these tests watch: no worker holds a sector's data, so that
/// every phase's task can restart on another worker (`locality` tests the holders).
const NO_HOLDING: &str = "--no-holding";

/// A synthetic worker's flags, holding no sector, with `extra`.
fn synthetic_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SYNTHETIC
        .iter()
        .chain(extra)
        .chain(&[NO_HOLDING])
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_in_any_phase_has_its_task_restarted_within_15s() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    // Every phase lasts 3 s, so each can be caught running.
    let durations = [
        "--synthetic-durations",
        "ap=3s,pc1=3s,pc2=3s,c1=3s,c2=3s,fin=3s",
    ];
    let flags = synthetic_flags(&durations);
    let mut workers: Vec<(String, Proc)> = ["w0", "w1"]
        .iter()
        .map(|id| (id.to_string(), mesh.worker(id, &flags)))
        .collect();
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);

    let mut figures = Vec::new();
    for (n, phase) in Phase::ALL.into_iter().enumerate() {
        let victim = wait_for(
            &format!("{phase} to start"),
            Duration::from_secs(60),
            || async { observe::taker(&broker, phase, 1).await },
        )
        .await;
        let victim = workers.iter().position(|(id, _)| *id == victim).unwrap();
        let (id, mut proc) = workers.remove(victim);
        proc.kill();
        let killed = Instant::now();
        // Keep two workers: the replacement starts cold, the survivor is idle and warm.
        let fresh = format!("w{}", n + 2);
        workers.push((fresh.clone(), mesh.worker(&fresh, &flags)));
        let (taker, after) = wait_for(
            &format!("{phase} to restart on another worker"),
            Duration::from_secs(60),
            || async {
                let taker = observe::taker(&broker, phase, 2).await?;
                Some((taker, killed.elapsed()))
            },
        )
        .await;
        println!(
            "FIGURE kill-to-restart {phase}: {id} SIGKILLed, task started on {taker} after {:.1} s",
            after.as_secs_f64()
        );
        figures.push((phase, after));
    }
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(20));
    assert_eq!(states(&mesh), [(1, "sealed".to_string())]);
    let worst = figures.iter().map(|(_, d)| *d).max().unwrap_or_default();
    println!(
        "FIGURE kill-to-restart over all phases: max {:.1} s (ack wait 10 s, progress acks every 2.5 s)",
        worst.as_secs_f64()
    );
    // The bound for the default configuration: ack wait 10 s + one poll interval.
    for (phase, after) in figures {
        assert!(
            after <= Duration::from_secs(15),
            "{phase} restarted only after {after:?}"
        );
    }
}

/// A worker told to stop (SIGTERM) while its task would run for ten more minutes waits its
/// `--drain-timeout`, hands the task back and exits 0; another worker runs the task as its
/// next attempt, without waiting out the ack wait, and the sector seals.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_past_its_timeout_hands_the_running_task_back() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let slow = ["--synthetic-durations", "ap=10m", "--drain-timeout", "1s"];
    let flags = synthetic_flags(&slow);
    let mut slow = mesh.worker("slow", &flags);
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);
    wait_for("AddPiece to start", Duration::from_secs(60), || async {
        observe::taker(&broker, Phase::AddPiece, 1).await
    })
    .await;
    slow.signal(Signal::SIGTERM);
    let status = slow.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", slow.tail(20));
    let log = slow.log_text();
    assert!(
        log.contains("the drain timeout passed: handing running tasks back")
            && log.contains("handing the task back"),
        "{log}"
    );

    // Its AddPiece lasts long enough to be seen running in the registry.
    let seen = ["--synthetic-durations", "ap=3s"];
    let flags = synthetic_flags(&seen);
    let _fresh = mesh.worker("fresh", &flags);
    let taker = wait_for("AddPiece to run again", Duration::from_secs(60), || async {
        observe::taker(&broker, Phase::AddPiece, 2).await
    })
    .await;
    assert_eq!(taker, "fresh");
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(20));
    assert_eq!(states(&mesh), [(1, "sealed".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_wakes_to_a_redelivered_task_and_its_late_result_is_dropped() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    // PC2 is slow so that the sleeper's late PC1 result reaches the publisher while the sector
    // is still being sealed (a publisher that has ended drops nothing).
    let durations = "pc1=4s,pc2=3s";
    let flags = [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        durations,
        NO_HOLDING,
    ];
    let sleeper = mesh.worker("sleeper", &flags);
    let attempt_dirs = || -> Vec<String> {
        std::fs::read_dir(mesh.scratch().join("sleeper"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir() && e.file_name() != "sectors")
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let faults = async {
        wait_for("pc1 to start", Duration::from_secs(30), || async {
            let taker = observe::taker(&broker, Phase::PreCommit1, 1).await;
            (taker.as_deref() == Some("sleeper")).then_some(())
        })
        .await;
        sleeper.signal(Signal::SIGSTOP);
        let stopped = Instant::now();
        assert_eq!(attempt_dirs().len(), 1, "the stopped attempt holds scratch");
        let mut config = mesh.worker_config("rescuer", durations);
        config.hold_sectors = false;
        let rescuer = mesh.start_worker(config).await;
        observe::wait_run(
            &broker,
            "the rescuer to finish pc1",
            Duration::from_secs(60),
            |r| r.worker == "rescuer" && r.phase == Phase::PreCommit1 && r.attempt == 2,
        )
        .await;
        println!(
            "FIGURE stopped worker: its pc1 was redelivered and finished elsewhere {:.1} s after \
             SIGSTOP",
            stopped.elapsed().as_secs_f64()
        );
        sleeper.signal(Signal::SIGCONT);
        rescuer
    };
    let (summary, rescuer) =
        tokio::join!(mesh.seal_in_process("f01000", SectorSize::KiB2, 1), faults);

    // On waking, the sleeper either finished its stale attempt and published its result, which
    // the publisher dropped, or saw first that the sector had moved on and stopped the attempt
    // (both timers ran out while it was stopped; which fires first is a race).
    let runs = observe::runs(&broker).await;
    let late: Vec<_> = observe::on(&runs, "sleeper")
        .filter(|r| r.phase == Phase::PreCommit1 && r.attempt == 1)
        .collect();
    assert!(late.len() <= 1, "{runs:?}");
    assert_eq!(summary.dropped_late, late.len() as u64, "{summary:?}");
    if late.is_empty() {
        assert!(
            sleeper
                .log_text()
                .contains("the sector moved on; task stopped and dropped"),
            "{}",
            sleeper.tail(20)
        );
    }
    println!(
        "FIGURE stopped worker: on waking, {}",
        if late.is_empty() {
            "it stopped its attempt, the sector having moved on".to_string()
        } else {
            format!(
                "it finished its attempt; the publisher dropped {} late result",
                summary.dropped_late
            )
        }
    );
    wait_for(
        "the sleeper's scratch to be cleaned",
        Duration::from_secs(30),
        || {
            let left = attempt_dirs();
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
    assert_eq!(states(&mesh), [(1, "sealed".to_string())]);
    let done = completions(&broker).await;
    assert_eq!(done["f01000.1.pc1.0"], 1 + late.len(), "{done:?}");
    rescuer.drain().await.expect("the rescuer ends cleanly");
}

/// Two in-process synthetic workers of three slots with phases of 50–600 ms.
async fn quick_workers(mesh: &Mesh) -> Vec<mesh_tests::inproc::InProcWorker> {
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        let mut config =
            mesh.worker_config(id, "ap=100ms,pc1=600ms,pc2=300ms,c1=50ms,c2=300ms,fin=50ms");
        config.slots = Some(3);
        workers.push(mesh.start_worker(config).await);
    }
    workers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_publisher_resumes_every_sector_and_no_task_runs_twice() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let workers = quick_workers(&mesh).await;
    let count = 24;
    let mut first = mesh.seal("first", &["--count", &count.to_string(), "--synthetic"]);
    let sealed = || async {
        let sectors = mesh::publisher::list_sectors(&broker, "f01000".parse().unwrap())
            .await
            .expect("list the sectors");
        sectors
            .iter()
            .filter(|r| r.state.label() == "sealed")
            .count()
    };
    wait_for("a few sectors to seal", Duration::from_secs(60), || async {
        (sealed().await >= 3).then_some(())
    })
    .await;
    first.kill();
    let sealed_before = sealed().await;
    let request = SealRequest {
        size: SectorSize::KiB2,
        count: 0,
        pieces: Vec::new(),
        synthetic: true,
        resume: true,
        out: None,
        until: None,
        status_every: Duration::from_secs(5),
    };
    let second = mesh.seal_with("f01000", request).await;
    let states = states(&mesh);
    assert_eq!(states.len(), count);
    assert!(states.iter().all(|(_, s)| s == "sealed"), "{states:?}");
    let resumed = second.sealed.len();
    assert_eq!(resumed, count - sealed_before);

    let done = completions(&broker).await;
    assert_eq!(done.len(), count * Phase::ALL.len(), "every task ran");
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks that ran twice: {twice:?}");
    println!(
        "FIGURE publisher restart: killed with {sealed_before} of {count} sealed; the restarted \
         one resumed {resumed}; {} tasks each ran once",
        done.len()
    );
    for worker in workers {
        worker.drain().await.expect("the worker ends cleanly");
    }
}

/// Two publishers of one miner share its results: each result goes to one of them, sectors
/// move by compare-and-set and tasks are deduplicated by their id, so both serve at once and
/// either may die.
#[tokio::test(flavor = "multi_thread")]
async fn two_publishers_of_a_miner_serve_together_and_a_killed_one_loses_nothing() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let workers = quick_workers(&mesh).await;
    let mut partner = mesh.run_publisher("f01000", "partner", &[]);
    wait_for("the partner to run", Duration::from_secs(30), || {
        let log = partner.log_text();
        async move { log.contains("publisher running").then_some(()) }
    })
    .await;
    let count = 20;
    let out = mesh.path("sealed.jsonl");
    let mut sealer = mesh.seal(
        "sealer",
        &[
            "--count",
            &count.to_string(),
            "--synthetic",
            "--out",
            &out.display().to_string(),
        ],
    );
    let handled =
        |log: &str| log.matches("phase done").count() + log.matches("sector sealed").count();
    wait_for(
        "the partner to handle results too",
        Duration::from_secs(60),
        || {
            let log = partner.log_text();
            async move { (handled(&log) >= 5).then_some(()) }
        },
    )
    .await;
    // A host that dies does not close its connection: the server goes on handing results to
    // its pull until that expires. A stopped process stands for it, then SIGKILL.
    partner.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let by_partner = handled(&partner.log_text());
    let unacked = || async {
        result_consumer_info(&broker, "f01000".parse().unwrap())
            .await
            .num_ack_pending
    };
    let held = wait_for(
        "results to reach the frozen partner",
        Duration::from_secs(60),
        || async { Some(unacked().await).filter(|n| *n > 0) },
    )
    .await;
    partner.kill();
    let status = sealer.wait(Duration::from_secs(180)).await;
    let finished = frozen.elapsed();
    assert!(status.success(), "{}", sealer.tail(30));

    let states = states(&mesh);
    assert_eq!(states.len(), count);
    assert!(states.iter().all(|(_, s)| s == "sealed"), "{states:?}");
    let mut numbers: Vec<String> = mesh_tests::lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["sector"].to_string())
        .collect();
    assert_eq!(numbers.len(), count, "one --out line per sector");
    numbers.dedup();
    assert_eq!(numbers.len(), count, "no sector twice in --out");
    let logs = sealer.log_text() + &partner.log_text();
    assert_eq!(
        logs.matches("sector sealed").count(),
        count,
        "each sector sealed once, by one of the two"
    );
    let done = completions(&broker).await;
    assert_eq!(done.len(), count * Phase::ALL.len(), "every task ran");
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks that ran twice: {twice:?}");
    println!(
        "FIGURE publisher pair: the partner handled {by_partner} results, then froze (SIGSTOP, \
         then SIGKILL) holding {held} unacknowledged results; the survivor sealed all {count} \
         sectors {:.1} s after the freeze (result ack wait {} s); {} tasks each ran once",
        finished.as_secs_f64(),
        mesh::broker::topology::RESULT_ACK_WAIT.as_secs(),
        done.len()
    );
    for worker in workers {
        worker.drain().await.expect("the worker ends cleanly");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_takes_only_tasks_that_fit_its_scratch_space() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    // Room for one AddPiece (or a Commit2), not for PC1, PC2, C1 or Finalize.
    let fits_ap = Phase::AddPiece.scratch(SectorSize::KiB2);
    assert!(fits_ap < Phase::Commit1.scratch(SectorSize::KiB2));
    let durations = "";
    let mut config = mesh.worker_config("small", durations);
    config.slots = Some(4);
    config.scratch_limit = fits_ap;
    // It says it will not take PC1, for want of scratch space.
    let refusal = config
        .plan()
        .into_iter()
        .find(|s| s.phase == Phase::PreCommit1)
        .and_then(|s| s.refusal)
        .expect("PC1 refused on the small worker");
    assert!(
        refusal.to_string().contains("of scratch space"),
        "{refusal}"
    );
    let small = mesh.start_worker(config).await;
    let big = async {
        observe::wait_run(
            &broker,
            "the small worker to run ap",
            Duration::from_secs(30),
            |r| r.worker == "small" && r.phase == Phase::AddPiece,
        )
        .await;
        mesh.start_worker(mesh.worker_config("big", durations))
            .await
    };
    let (_, big) = tokio::join!(mesh.seal_in_process("f01000", SectorSize::KiB2, 4), big);

    let runs = observe::runs(&broker).await;
    let on_small: Vec<_> = observe::on(&runs, "small").collect();
    for run in &on_small {
        assert!(
            run.phase.scratch(SectorSize::KiB2) <= fits_ap,
            "the small worker ran a task that does not fit: {run:?}"
        );
    }
    let on_big = observe::on(&runs, "big").count();
    println!(
        "FIGURE scratch limit {fits_ap} B: the small worker ran {} tasks (ap and c2 only); the \
         big one ran {on_big}",
        on_small.len()
    );
    assert_eq!(on_small.len() + on_big, 4 * Phase::ALL.len());
    for worker in [small, big] {
        worker.drain().await.expect("the worker ends cleanly");
    }

    // A limit that fits nothing is refused at start.
    let mut config = mesh.worker_config("none", durations);
    config.scratch_limit = 1024;
    let error = mesh.start_worker(config).await.join().await.unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("fits no task this worker serves") && error.contains("--scratch-limit"),
        "{error}"
    );
}

/// A publisher told to stop (SIGTERM) while it handles a result that cannot end (verifying a
/// Commit2 proof waits for a download of the verifying key, whose lock this test holds) waits
/// its grace, leaves the result unacknowledged for the next publisher and exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_stopped_while_it_handles_a_result_exits_within_its_grace() {
    use mesh::phases::{Output, c2};
    use mesh::sector::{MESSAGE_VERSION, Outcome, Task, TaskResult, Timings};
    use nix::fcntl::{Flock, FlockArg};

    let mesh = Mesh::start().await;
    // The store has a (stand-in) verifying key; the publisher's cache has none, and this test
    // holds the lock of its download.
    let files =
        mesh::proofs::params::param_files(mesh::model::SectorSize::KiB2.seal_proof()).unwrap();
    let stand_ins = mesh.path("stand-ins");
    std::fs::create_dir_all(&stand_ins).unwrap();
    std::fs::write(stand_ins.join(&files.vk), "a stand-in verifying key\n").unwrap();
    let store = mesh::store::Store::open(&mesh::store::StoreConfig {
        url: mesh.store.clone(),
        options: vec![],
    })
    .unwrap();
    mesh::proofs::params::push(&store, &stand_ins, std::slice::from_ref(&files.vk))
        .await
        .unwrap();
    let cache = mesh.path("publisher-params");
    std::fs::create_dir_all(&cache).unwrap();
    let lock = std::fs::File::create(cache.join(format!(".{}.lock", files.vk))).unwrap();
    let _held = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();

    // Real proofs up to Commit1 (milliseconds at 2KiB); no worker serves Commit2.
    let _worker = mesh.worker("w1", &["--phases", "ap,pc1,pc2,c1"]);
    let cache_arg = cache.display().to_string();
    // A sealing publisher and a partner that pulls the miner's results too: the one that does
    // not get the result would get it if the other's handling let the ack wait pass.
    let mut publishers = [
        mesh.seal("publisher", &["--count", "1", "--param-cache", &cache_arg]),
        mesh.run_publisher("f01000", "partner", &["--param-cache", &cache_arg]),
    ];
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let tasks = js.get_stream("MESH_TASK_C2_2KIB").await.unwrap();
    let task: Task = wait_for("the Commit2 task", Duration::from_secs(120), || {
        let tasks = &tasks;
        async move {
            let msg = tasks
                .get_last_raw_message_by_subject("mesh.task.c2.2kib.f01000.cc")
                .await
                .ok()?;
            mesh::model::decode(&msg.payload).ok()
        }
    })
    .await;
    // A proof for it, as a worker would send: verifying it needs the key.
    let result = TaskResult {
        version: MESSAGE_VERSION,
        task: task.id.clone(),
        miner: task.miner,
        sector: task.sector,
        phase: Phase::Commit2,
        attempt: 1,
        worker: mesh::model::WorkerId("w2".into()),
        outcome: Outcome::Done {
            outputs: vec![],
            output: Output::Commit2(c2::Output {
                proof: serde_bytes::ByteBuf::from(vec![0u8; 192]),
            }),
        },
        timings: Timings::default(),
        finished_ms: mesh::now_ms(),
    };
    let sequence = publish_result(&broker, &result).await;
    let handler = wait_for(
        "a publisher to wait for the key's download",
        Duration::from_secs(60),
        || {
            let waiting = publishers
                .iter()
                .position(|p| p.log_text().contains("waiting for another download"));
            async move { waiting }
        },
    )
    .await;

    // A handling that outlasts the ack wait keeps its result: progress acks.
    tokio::time::sleep(mesh::broker::topology::RESULT_ACK_WAIT + Duration::from_secs(3)).await;
    let info = result_consumer_info(&broker, task.miner).await;
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (1, 0),
        "the result being handled past the ack wait was redelivered: {info:?}"
    );
    let publisher = &mut publishers[handler];
    publisher.signal(Signal::SIGTERM);
    let told = Instant::now();
    publisher.wait(Duration::from_secs(60)).await;
    println!(
        "FIGURE publisher stopped {:.1} s after SIGTERM while handling a result (grace {} s)",
        told.elapsed().as_secs_f64(),
        mesh::publisher::STOP_GRACE.as_secs()
    );
    let log = publisher.log_text();
    assert!(
        log.contains("left unacknowledged for the next publisher")
            && (handler == 1 || log.contains("mesh-publisher seal --resume")),
        "{log}"
    );
    let floor = result_ack_floor(&broker, task.miner).await;
    assert!(
        floor < sequence,
        "the result (sequence {sequence}) was acknowledged: ack floor {floor}"
    );
}
