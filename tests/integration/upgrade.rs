//! A rolling upgrade in the order that used to fail sectors: the publisher first, while every
//! worker still runs the release before. The next release is the same binaries under
//! `MESH_TEST_NEXT_VERSION` (a version shim: its messages look the same but say they are one
//! version newer), so old and new are real processes of the two versions side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::phases::Phase;
use mesh::sector::NEXT_VERSION_ENV;
use mesh_tests::{Mesh, Proc, bin, observe, wait_for};
use nix::sys::signal::Signal;

const SECTORS: usize = 4;
/// Synthetic workers holding no sector, with phases long enough for the publisher to be
/// upgraded mid-seal.
const WORKER: [&str; 5] = [
    "--no-holding",
    "--executor",
    "synthetic",
    "--synthetic-durations",
    "ap=300ms,pc1=1s,pc2=500ms,c1=200ms,c2=500ms,fin=200ms",
];

/// `sectors --json` of miner f01000: (sector, state).
fn states(mesh: &Mesh) -> Vec<(u64, String)> {
    mesh.publisher(&["sectors", "--miner", "f01000", "--json"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("sectors --json line");
            (
                v["sector"].as_u64().unwrap(),
                v["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_upgraded_before_its_workers_fails_no_sector() {
    let mut mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let mut old: Vec<Proc> = ["old-a", "old-b"]
        .iter()
        .map(|id| mesh.worker(id, &WORKER))
        .collect();
    wait_for(
        "the old workers to register",
        Duration::from_secs(30),
        || async {
            let live = mesh::broker::workers::list(&broker).await.unwrap();
            (live.len() == 2).then_some(())
        },
    )
    .await;

    // The old release seals until a few tasks are done, then its publisher is stopped.
    let mut sealer = mesh.seal(
        "old-publisher",
        &["--count", &SECTORS.to_string(), "--synthetic"],
    );
    wait_for("old tasks to run", Duration::from_secs(60), || async {
        (observe::runs(&broker).await.len() >= SECTORS + 2).then_some(())
    })
    .await;
    sealer.signal(Signal::SIGTERM);
    sealer.wait(Duration::from_secs(30)).await;
    let before = observe::runs(&broker).await.len();
    assert!(
        before < SECTORS * Phase::ALL.len(),
        "the old release finished everything ({before} tasks) before the upgrade"
    );

    // The new publisher will not publish what no live worker reads…
    mesh.env.push((NEXT_VERSION_ENV.into(), "1".into()));
    let url = mesh.url();
    let refused = std::process::Command::new(bin("mesh-publisher"))
        .args(["run", "--nats", &url, "--store", &mesh.store])
        .args(["--miner", "f01000"])
        .env(NEXT_VERSION_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "every live worker (2 of them: old-a, old-b) reads task messages of version 1 at \
             most, and this publisher writes version 2"
        ) && stderr.contains("--allow-newer"),
        "{stderr}"
    );
    // …unless told to. The old workers leave its tasks, at no attempt's cost, and `status`
    // says which wait.
    let mut publisher = mesh.run_publisher("f01000", "new-publisher", &["--allow-newer"]);
    let waiting = wait_for(
        "status to show tasks left for upgraded workers",
        Duration::from_secs(60),
        || async {
            let status = mesh.publisher(&["status"]);
            status
                .contains("tasks waiting for another worker")
                .then_some(status)
        },
    )
    .await;
    assert!(
        waiting.contains("message version 2 is newer than this worker reads (1)"),
        "{waiting}"
    );
    let left: usize = old
        .iter()
        .map(|w| {
            w.log_text()
                .matches("task left for an upgraded worker")
                .count()
        })
        .sum();
    assert!(left > 0);

    // The workers are upgraded one at a time: a new one joins, an old one drains away.
    let mut new = mesh.worker("new-a", &WORKER);
    wait_for(
        "the new worker to register",
        Duration::from_secs(30),
        || async {
            let workers = mesh.publisher(&["workers"]);
            workers.contains("reads tasks v2").then_some(())
        },
    )
    .await;
    old[1].signal(Signal::SIGTERM);
    assert!(old[1].wait(Duration::from_secs(30)).await.success());

    let sealed = wait_for("every sector to seal", Duration::from_secs(180), || async {
        let states = states(&mesh);
        (states.len() == SECTORS && states.iter().all(|(_, s)| s == "sealed")).then_some(states)
    })
    .await;
    assert_eq!(sealed.len(), SECTORS);

    let runs = observe::runs(&broker).await;
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.done) {
        *done.entry(&run.task).or_default() += 1;
    }
    assert_eq!(done.len(), SECTORS * Phase::ALL.len(), "every task ran");
    assert!(done.values().all(|&n| n == 1), "a task ran twice: {done:?}");
    // Deliveries the old workers handed back were no attempts.
    let retried: Vec<_> = runs.iter().filter(|r| r.attempt != 1).collect();
    assert!(retried.is_empty(), "{retried:?}");
    assert!(runs.iter().all(|r| r.done), "a task failed: {runs:?}");
    let status = mesh.publisher(&["status"]);
    assert!(status.contains("dead letters: 0"), "{status}");
    assert!(
        !status.contains("tasks waiting for another worker"),
        "the deferral entries went with their tasks: {status}"
    );
    let by_new = observe::on(&runs, "new-a").count();
    println!(
        "FIGURE rolling upgrade, publisher first: {before} tasks ran on the old release; the old \
         workers left {left} newer tasks unrun at no attempt's cost; the new worker ran \
         {by_new}; all {SECTORS} sectors sealed, every task once, at attempt 1"
    );

    publisher.signal(Signal::SIGTERM);
    new.signal(Signal::SIGTERM);
    old[0].signal(Signal::SIGTERM);
    for proc in [&mut publisher, &mut new, &mut old[0]] {
        proc.wait(Duration::from_secs(30)).await;
    }
}

/// The other case of a task left unrun: a real worker hands a synthetic task back. That costs
/// no attempt either: the task allows one attempt, and it still runs when a synthetic worker
/// takes it after the hand-back.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_for_the_other_executor_is_handed_back_at_no_attempts_cost() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let mut real = mesh.worker("real", &["--no-holding"]);
    mesh.task_consumer("f01000", Phase::AddPiece, mesh::model::TaskClass::Cc)
        .await;
    let task =
        mesh_tests::synthetic_task("f01000".parse().unwrap(), 1, Phase::AddPiece, false, vec![]);
    assert_eq!(task.max_attempts, 1);
    mesh_tests::publish_task(&broker, &task).await;
    let deferred = broker.keys(mesh::names::DEFERRED_BUCKET).await.unwrap();
    let key = wait_for(
        "the real worker to hand the task back",
        Duration::from_secs(30),
        || async {
            let status = mesh.publisher(&["status", "--json"]);
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            let entry = status["deferred"].as_array()?.first()?.clone();
            Some(format!(
                "f01000.{}.{}",
                entry["stream"].as_str().unwrap(),
                entry["sequence"]
            ))
        },
    )
    .await;
    assert!(deferred.get(&key).await.unwrap().is_some());
    assert!(
        real.log_text()
            .contains("task is not for this worker's executor")
    );
    // The real worker would compete for the task each time it comes back (a mixed mesh is a
    // misconfiguration the warning names), and could win every time: its idle polls fall in
    // step with the hand-back's delay. Stopped, it leaves the task to the synthetic worker.
    real.signal(Signal::SIGTERM);
    real.wait(Duration::from_secs(30)).await;

    let mut sim = mesh.worker("sim", &WORKER);
    let run = observe::wait_run(
        &broker,
        "the synthetic worker to run it",
        Duration::from_secs(60),
        |r| r.task == task.id.0,
    )
    .await;
    assert!(
        run.done && run.worker == "sim" && run.attempt == 1,
        "{run:?}"
    );
    wait_for(
        "its deferral entry to go",
        Duration::from_secs(10),
        || async { deferred.get(&key).await.unwrap().is_none().then_some(()) },
    )
    .await;
    let status = mesh.publisher(&["status"]);
    assert!(status.contains("dead letters: 0"), "{status}");
    sim.signal(Signal::SIGTERM);
    sim.wait(Duration::from_secs(30)).await;
}
