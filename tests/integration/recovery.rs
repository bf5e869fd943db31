//! Worker and publisher faults, with the synthetic executor so that every phase can be hit in
//! seconds: SIGKILL in each phase, SIGSTOP past the ack wait, a publisher killed mid-run, and a
//! worker without the scratch space a task needs. Each prints what it measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh::model::SectorSize;
use mesh::phases::Phase;
use mesh_tests::{Mesh, Proc, wait_for};
use nix::sys::signal::Signal;

/// Log lines of `proc` that contain every needle.
fn log_lines(proc: &Proc, needles: &[&str]) -> Vec<String> {
    proc.log_text()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split([' ', '}', ':']).next()
}

/// How many times each task ran to completion, over all `workers`.
fn completions(workers: &[&Proc]) -> BTreeMap<String, usize> {
    let mut done = BTreeMap::new();
    for w in workers {
        for line in log_lines(w, &["task done"]) {
            if let Some(task) = field(&line, "task") {
                *done.entry(task.to_string()).or_default() += 1;
            }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_in_any_phase_has_its_task_restarted_within_15s() {
    let mesh = Mesh::start().await;
    // Every phase lasts 3 s, so each can be caught running.
    let durations = [
        "--synthetic-durations",
        "ap=3s,pc1=3s,pc2=3s,c1=3s,c2=3s,fin=3s",
    ];
    let flags: Vec<&str> = SYNTHETIC.iter().chain(&durations).copied().collect();
    let mut workers: Vec<(String, Proc)> = ["w0", "w1"]
        .iter()
        .map(|id| (id.to_string(), mesh.worker(id, &flags)))
        .collect();
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);

    let mut figures = Vec::new();
    for (n, phase) in Phase::ALL.into_iter().enumerate() {
        let started = format!("phase={} attempt=1}}: task started", phase.token());
        let victim = wait_for(
            &format!("{phase} to start"),
            Duration::from_secs(60),
            || {
                let found = workers
                    .iter()
                    .position(|(_, w)| !log_lines(w, &[&started]).is_empty());
                async move { found }
            },
        )
        .await;
        let (id, mut proc) = workers.remove(victim);
        proc.kill();
        let killed = Instant::now();
        // Keep two workers: the replacement starts cold, the survivor is idle and warm.
        let fresh = format!("w{}", n + 2);
        workers.push((fresh.clone(), mesh.worker(&fresh, &flags)));
        let restarted = format!("phase={} attempt=2}}: task started", phase.token());
        let (taker, after) = wait_for(
            &format!("{phase} to restart on another worker"),
            Duration::from_secs(60),
            || {
                let found = workers
                    .iter()
                    .find(|(_, w)| !log_lines(w, &[&restarted]).is_empty())
                    .map(|(id, _)| (id.clone(), killed.elapsed()));
                async move { found }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_wakes_to_a_redelivered_task_and_its_late_result_is_dropped() {
    let mesh = Mesh::start().await;
    let flags: Vec<&str> = SYNTHETIC
        .iter()
        // PC2 is slow so that the sleeper's late PC1 result reaches the publisher while the
        // sector is still being sealed (a publisher that has exited drops nothing).
        .chain(&["--synthetic-durations", "pc1=4s,pc2=3s"])
        .copied()
        .collect();
    let sleeper = mesh.worker("sleeper", &flags);
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);
    wait_for("pc1 to start", Duration::from_secs(30), || {
        let started = !log_lines(&sleeper, &["phase=pc1 attempt=1}: task started"]).is_empty();
        async move { started.then_some(()) }
    })
    .await;
    sleeper.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let attempt_dirs = || -> Vec<String> {
        std::fs::read_dir(mesh.scratch().join("sleeper"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(attempt_dirs().len(), 1, "the stopped attempt holds scratch");

    let rescuer = mesh.worker("rescuer", &flags);
    wait_for("the rescuer to finish pc1", Duration::from_secs(60), || {
        let done = !log_lines(&rescuer, &["phase=pc1 attempt=2}: task done"]).is_empty();
        async move { done.then_some(()) }
    })
    .await;
    println!(
        "FIGURE stopped worker: its pc1 was redelivered and finished elsewhere {:.1} s after SIGSTOP",
        stopped.elapsed().as_secs_f64()
    );
    sleeper.signal(Signal::SIGCONT);
    let status = publisher.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", publisher.tail(20));

    // The sleeper finishes its stale attempt; the publisher drops that result and says so.
    wait_for(
        "the sleeper's late result to be dropped",
        Duration::from_secs(60),
        || {
            let dropped = log_lines(&publisher, &["dropping late result", "worker=sleeper"]).len();
            async move { (dropped == 1).then_some(()) }
        },
    )
    .await;
    let summary = log_lines(&publisher, &["late results dropped"]);
    println!(
        "FIGURE stopped worker: publisher summary: {}",
        summary.join(" ")
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
    let done = completions(&[&sleeper, &rescuer]);
    assert_eq!(done["f01000.1.pc1.0"], 2, "both attempts ran to their end");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_publisher_resumes_every_sector_and_no_task_runs_twice() {
    let mesh = Mesh::start().await;
    let flags: Vec<&str> = SYNTHETIC
        .iter()
        .chain(&[
            "--slots",
            "3",
            "--synthetic-durations",
            "ap=100ms,pc1=600ms,pc2=300ms,c1=50ms,c2=300ms,fin=50ms",
        ])
        .copied()
        .collect();
    let w1 = mesh.worker("w1", &flags);
    let w2 = mesh.worker("w2", &flags);
    let count = 24;
    let mut first = mesh.seal("first", &["--count", &count.to_string(), "--synthetic"]);
    wait_for("a few sectors to seal", Duration::from_secs(60), || {
        let sealed = log_lines(&first, &["sector sealed"]).len();
        async move { (sealed >= 3).then_some(()) }
    })
    .await;
    first.kill();
    let sealed_before = states(&mesh).iter().filter(|(_, s)| s == "sealed").count();
    let mut second = mesh.seal("second", &["--resume"]);
    let status = second.wait(Duration::from_secs(180)).await;
    assert!(status.success(), "{}", second.tail(20));
    let states = states(&mesh);
    assert_eq!(states.len(), count);
    assert!(states.iter().all(|(_, s)| s == "sealed"), "{states:?}");
    let resumed = log_lines(&second, &["resuming sector"]).len();
    assert_eq!(resumed, count - sealed_before);

    let done = completions(&[&w1, &w2]);
    assert_eq!(done.len(), count * Phase::ALL.len(), "every task ran");
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks that ran twice: {twice:?}");
    println!(
        "FIGURE publisher restart: killed with {sealed_before} of {count} sealed; the restarted \
         one resumed {resumed}; {} tasks each ran once",
        done.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_takes_only_tasks_that_fit_its_scratch_space() {
    let mesh = Mesh::start().await;
    // Room for one AddPiece (or a Commit2), not for PC1, PC2, C1 or Finalize.
    let fits_ap = Phase::AddPiece.scratch(SectorSize::KiB2);
    assert!(fits_ap < Phase::Commit1.scratch(SectorSize::KiB2));
    let limit = fits_ap.to_string();
    let small: Vec<&str> = SYNTHETIC
        .iter()
        .chain(&["--slots", "4", "--scratch-limit", &limit])
        .copied()
        .collect();
    let small = mesh.worker("small", &small);
    let mut publisher = mesh.seal("publisher", &["--count", "4", "--synthetic"]);
    wait_for(
        "the small worker to run ap",
        Duration::from_secs(30),
        || {
            let ran = !log_lines(&small, &["phase=ap", "task done"]).is_empty();
            async move { ran.then_some(()) }
        },
    )
    .await;
    let big = mesh.worker("big", &SYNTHETIC);
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(20));

    let started = log_lines(&small, &["task started"]);
    for line in &started {
        let phase: Phase = field(line, "phase").unwrap().parse().unwrap();
        assert!(
            phase.scratch(SectorSize::KiB2) <= fits_ap,
            "the small worker ran a task that does not fit: {line}"
        );
    }
    assert!(
        !log_lines(
            &small,
            &[
                "this worker will not take these tasks",
                "phase=pc1",
                "of scratch space"
            ]
        )
        .is_empty(),
        "{}",
        small.tail(20)
    );
    let on_big = log_lines(&big, &["task started"]).len();
    println!(
        "FIGURE scratch limit {limit} B: the small worker ran {} tasks (ap and c2 only); the big \
         one ran {on_big}",
        started.len()
    );
    assert_eq!(started.len() + on_big, 4 * Phase::ALL.len());

    // A limit that fits nothing is refused at start.
    let mut none = mesh.worker(
        "none",
        &["--executor", "synthetic", "--scratch-limit", "1KiB"],
    );
    let status = none.wait(Duration::from_secs(30)).await;
    assert!(!status.success());
    let log = none.log_text();
    assert!(
        log.contains("fits no task this worker serves") && log.contains("--scratch-limit"),
        "{log}"
    );
}
