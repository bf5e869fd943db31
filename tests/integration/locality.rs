//! Locality with real proofs at 2KiB: the worker that runs a sector's PreCommit1 keeps its data
//! and runs its PreCommit2, Commit1 and Finalize; when that worker dies the sector runs
//! PreCommit1 again elsewhere, with the same ticket, and its proof still verifies; a worker
//! restarted with the same id and scratch path keeps its sectors; a holder lost while another
//! worker runs the sector's Commit2 stops that proof (synthetic, to reach that moment at will);
//! a holder that backed its sectors up (`--back-up-held`) lost after PreCommit1 leaves its
//! sector to go on from the store, without PreCommit1 again.
//!
//! The kills land when the holder's registry record shows the next phase running (seen through
//! a watch, within milliseconds): at 2KiB PreCommit2 and Commit1 take well under a second with
//! their proof process, so a kill may land just after the phase instead. Either way the holder
//! is gone holding the sector, which is what these tests are about; they assert what must hold
//! in both cases.

use std::time::{Duration, Instant};

use mesh::phases::Phase;
use mesh_tests::observe::{self, RegistryLog, Run, runs};
use mesh_tests::{Mesh, Proc, lines, require_2kib_params, verify_out_line, wait_for};

/// Waits until some worker other than those in `not` shows a task of `phase` running, and
/// returns that worker.
async fn running_on(log: &RegistryLog, ids: &[&str], not: &[&str], phase: Phase) -> String {
    wait_for(
        &format!("a worker to run {phase}"),
        Duration::from_secs(120),
        || async {
            ids.iter()
                .filter(|id| !not.contains(id))
                .find(|id| {
                    log.of(id)
                        .iter()
                        .any(|r| r.running.iter().any(|t| t.phase == phase))
                })
                .map(|id| id.to_string())
        },
    )
    .await
}

/// Waits until a worker other than those in `not` shows `phase` running in its registry record,
/// or has a result of it (a phase of milliseconds can end before its record goes out).
async fn reached(
    broker: &mesh::broker::Broker,
    log: &RegistryLog,
    ids: &[&str],
    not: &[&str],
    phase: Phase,
) -> String {
    // The registry's TTL, the grace and PreCommit1 again pass first, on a loaded machine.
    wait_for(
        &format!("a worker to run {phase}"),
        Duration::from_secs(300),
        || async {
            let done = runs(broker).await;
            ids.iter()
                .filter(|id| !not.contains(id))
                .find(|id| {
                    log.of(id)
                        .iter()
                        .any(|r| r.running.iter().any(|t| t.phase == phase))
                        || done.iter().any(|r| r.worker == **id && r.phase == phase)
                })
                .map(|id| id.to_string())
        },
    )
    .await
}

/// Seals one sector into `out`, its holder counted lost 1 s after its registry record goes.
fn seal_one_soon_relocated(mesh: &Mesh, out: &std::path::Path) -> Proc {
    mesh.seal(
        "publisher",
        &[
            "--count",
            "1",
            "--out",
            &out.display().to_string(),
            "--holder-grace",
            "1s",
        ],
    )
}

/// No result ever sent a layer or tree D to the store, and PreCommit1 sent nothing.
fn nothing_of_the_cache_went_through_the_store(runs: &[Run]) {
    for run in runs {
        let cache = |n: &String| n.contains("layer") || n.contains("tree-d");
        assert!(!run.outputs.iter().any(cache), "{run:?}");
        if run.phase == Phase::PreCommit1 {
            assert!(run.outputs.is_empty(), "{run:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sector_stays_on_the_worker_that_ran_its_pc1() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let w1 = mesh.worker("w1", &["--pin-cpus"]);
    let w2 = mesh.worker("w2", &["--pin-cpus"]);
    let out = mesh.path("sealed.jsonl");
    let mut publisher = mesh.seal(
        "publisher",
        &["--count", "1", "--out", &out.display().to_string()],
    );
    let status = publisher.wait(Duration::from_secs(600)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    let lines = lines(&out);
    assert_eq!(verify_out_line(&lines[0]), 1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let holder = v["phases"]["pc1"]["worker"].as_str().unwrap().to_string();
    for phase in ["pc2", "c1", "fin"] {
        assert_eq!(
            v["phases"][phase]["worker"], *holder,
            "{phase}: {}",
            lines[0]
        );
    }
    let bytes = &v["store_bytes"];
    assert!(bytes["read"].as_u64().unwrap() > 0 && bytes["written"].as_u64().unwrap() > 0);
    nothing_of_the_cache_went_through_the_store(&runs(&broker).await);
    // What is left in the store is the replica and the trimmed cache; the holder let go.
    let records = mesh::publisher::list_sectors(&broker, "f01000".parse().unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = records[0].data.objects.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"sealed") && names.contains(&"cache/p_aux"),
        "{names:?}"
    );
    let sectors = mesh.scratch().join(&holder).join("sectors");
    assert_eq!(std::fs::read_dir(&sectors).unwrap().count(), 0);
    // Its PreCommit2 reserved fewer threads than the machine has (92% of them): its proof ran
    // pinned (--pin-cpus) to that many CPUs of its own.
    let cpus = std::thread::available_parallelism().unwrap().get();
    if cpus > 1 {
        let log = [("w1", &w1), ("w2", &w2)]
            .into_iter()
            .find(|(id, _)| *id == holder)
            .unwrap()
            .1
            .log_text();
        let line = log
            .lines()
            .find(|l| l.contains("phase=pc2") && l.contains("task started"))
            .unwrap_or_else(|| panic!("{log}"));
        let field = |name: &str| {
            let at = line
                .find(&format!(" {name}="))
                .unwrap_or_else(|| panic!("{line}"));
            line[at + name.len() + 2..]
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        };
        // `cpus` is this task's own; `threads` what all the worker's running tasks hold, the
        // PreCommit1 before it among them when it has not yet given its thread back.
        let own = (cpus * 92 / 100).max(1);
        assert_ne!(field("cpus"), "any", "{line}");
        assert_eq!(field("cpus").split(',').count(), own, "{line}");
        let threads: usize = field("threads").parse().unwrap();
        assert!(threads >= own, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_holder_sends_its_sector_back_to_pc1_and_the_proof_still_verifies() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let log = RegistryLog::watch(&broker).await;
    let ids = ["w1", "w2", "w3"];
    let mut workers: Vec<_> = ids.iter().map(|id| mesh.worker(id, &[])).collect();
    let out = mesh.path("sealed.jsonl");
    let mut publisher = seal_one_soon_relocated(&mesh, &out);

    // Kill the holder once it runs PreCommit2, then the next holder once it ran PreCommit2.
    let first = reached(&broker, &log, &ids, &[], Phase::PreCommit2).await;
    let at = ids.iter().position(|id| *id == first).unwrap();
    workers[at].kill();
    let killed = std::time::Instant::now();
    let second = reached(&broker, &log, &ids, &[&first], Phase::PreCommit2).await;
    println!(
        "FIGURE holder SIGKILLed in PreCommit2: the sector's PreCommit2 ran again on {second} {:.1} s later (registry TTL 30 s, --holder-grace 1s)",
        killed.elapsed().as_secs_f64()
    );
    let at = ids.iter().position(|id| *id == second).unwrap();
    workers[at].kill();

    let status = publisher.wait(Duration::from_secs(900)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    let lines = lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(verify_out_line(&lines[0]), 1);

    // The third worker ran it from PreCommit1 on; PreCommit1 ran on three workers in all.
    let last = ids
        .iter()
        .find(|id| ![first.as_str(), second.as_str()].contains(id))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for phase in ["pc1", "pc2", "c1", "fin"] {
        assert_eq!(v["phases"][phase]["worker"], *last, "{phase}: {}", lines[0]);
    }
    let runs = runs(&broker).await;
    nothing_of_the_cache_went_through_the_store(&runs);
    let pc1: Vec<&str> = runs
        .iter()
        .filter(|r| r.phase == Phase::PreCommit1 && r.done)
        .map(|r| r.worker.as_str())
        .collect();
    assert_eq!(pc1, [first.as_str(), second.as_str(), last], "{runs:?}");
    assert!(
        publisher
            .log_text()
            .contains("PreCommit1 runs again elsewhere")
    );
    // Sealed once: one Finalize.
    assert_eq!(
        runs.iter()
            .filter(|r| r.phase == Phase::Finalize && r.done)
            .count(),
        1,
        "{runs:?}"
    );
}

/// With `--back-up-held` the holder also sends its layers and trees to the store: when it
/// dies the sector goes on from there on the other worker, without PreCommit1 again.
#[tokio::test(flavor = "multi_thread")]
async fn a_backed_up_sector_goes_on_from_the_store_when_its_holder_dies() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let log = RegistryLog::watch(&broker).await;
    let ids = ["w1", "w2"];
    let mut workers: Vec<_> = ids
        .iter()
        .map(|id| mesh.worker(id, &["--back-up-held"]))
        .collect();
    let out = mesh.path("sealed.jsonl");
    let mut publisher = seal_one_soon_relocated(&mesh, &out);
    let holder = reached(&broker, &log, &ids, &[], Phase::PreCommit2).await;
    let at = ids.iter().position(|id| *id == holder).unwrap();
    workers[at].kill();
    let other = ids.iter().find(|id| **id != holder).unwrap();

    let status = publisher.wait(Duration::from_secs(900)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    let lines = lines(&out);
    assert_eq!(verify_out_line(&lines[0]), 1);
    assert!(
        publisher
            .log_text()
            .contains("goes on elsewhere from the store's backup"),
        "{}",
        publisher.tail(40)
    );
    let runs = runs(&broker).await;
    let pc1: Vec<&Run> = runs
        .iter()
        .filter(|r| r.phase == Phase::PreCommit1 && r.done)
        .collect();
    assert_eq!(pc1.len(), 1, "PreCommit1 ran once: {runs:?}");
    assert_eq!(pc1[0].worker, holder);
    assert!(
        pc1[0].outputs.iter().any(|n| n.contains("layer")),
        "the holder backed its layers up: {:?}",
        pc1[0].outputs
    );
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["phases"]["fin"]["worker"], **other, "{}", lines[0]);
    // Sealed, the backup is gone from the sector's objects: the replica and trimmed cache.
    let records = mesh::publisher::list_sectors(&broker, "f01000".parse().unwrap())
        .await
        .unwrap();
    assert!(
        !records[0].data.objects.keys().any(|n| n.contains("layer")),
        "{:?}",
        records[0].data.objects.keys()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_restarted_with_its_id_keeps_its_sector() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let log = RegistryLog::watch(&broker).await;
    let mut holder = mesh.worker("h1", &[]);
    // The sector stops after Commit1: Commit2 is not what this is about.
    let out = mesh.path("stopped.jsonl");
    let mut publisher = mesh.seal(
        "publisher",
        &[
            "--count",
            "1",
            "--until",
            "c1",
            "--out",
            &out.display().to_string(),
        ],
    );
    running_on(&log, &["h1"], &[], Phase::PreCommit2).await;
    holder.kill();
    // Same id, same scratch path: it finds the sector's directory and takes its tasks again.
    let mut again = mesh.worker("h1", &[]);

    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    assert!(publisher.log_text().contains("1 stopped as asked"));
    let runs = runs(&broker).await;
    for phase in [Phase::PreCommit1, Phase::PreCommit2, Phase::Commit1] {
        let done: Vec<&str> = runs
            .iter()
            .filter(|r| r.phase == phase && r.done)
            .map(|r| r.worker.as_str())
            .collect();
        assert_eq!(done, ["h1"], "{phase}: {runs:?}");
    }
    assert!(!runs.iter().any(|r| r.lost), "{runs:?}");
    let v: serde_json::Value = serde_json::from_str(&lines(&out)[0]).unwrap();
    assert_eq!(v["stopped_after"], "c1");
    assert_eq!(v["phases"]["c1"]["worker"], "h1");

    // The stopped sector is finished: the holder lets go of its directory.
    let sectors = mesh.scratch().join("h1/sectors");
    wait_for(
        "h1 to let go of the sector",
        Duration::from_secs(60),
        || async { (std::fs::read_dir(&sectors).unwrap().count() == 0).then_some(()) },
    )
    .await;
    again.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(again.wait(Duration::from_secs(30)).await.success());
}

/// Synthetic (every phase but the slow proof lasts milliseconds): the holder dies while another
/// worker runs the sector's Commit2. Finalize cannot run without the holder, so the sector goes
/// back to PreCommit1 at once, and the prover stops the proof it no longer needs instead of
/// running it to its end.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_lost_during_commit2_stops_that_proof_and_the_sector_seals_elsewhere() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let fast = "ap=10ms,pc1=10ms,pc2=10ms,c1=10ms,c2=10ms,fin=10ms";
    let worker = |id: &str, durations: &str, phases: &str| {
        mesh.worker(
            id,
            &[
                "--executor",
                "synthetic",
                "--synthetic-durations",
                durations,
                "--phases",
                phases,
            ],
        )
    };
    // h1 holds the sector (it serves every phase of a holder); p1 proves, for ten minutes.
    let mut holder = worker("h1", fast, "ap,pc1,pc2,c1,fin");
    let mut prover = worker("p1", "c2=10m", "c2");
    let mut publisher = mesh.seal(
        "publisher",
        &["--count", "1", "--synthetic", "--holder-grace", "1s"],
    );
    wait_for("p1 to run c2", Duration::from_secs(60), || async {
        let taker = observe::taker(&broker, Phase::Commit2, 1).await;
        (taker.as_deref() == Some("p1")).then_some(())
    })
    .await;
    holder.kill();
    let killed = Instant::now();

    wait_for(
        "p1 to stop the proof of the lost sector",
        Duration::from_secs(90),
        || async {
            prover
                .log_text()
                .contains("the sector moved on; task stopped and dropped")
                .then_some(())
        },
    )
    .await;
    println!(
        "FIGURE holder SIGKILLed during another worker's Commit2: that Commit2 stopped {:.1} s later (registry TTL 30 s, --holder-grace 1s, ack wait 10 s)",
        killed.elapsed().as_secs_f64()
    );
    prover.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(prover.wait(Duration::from_secs(30)).await.success());

    // A fresh worker seals it from PreCommit1 on.
    let _h2 = worker("h2", fast, "ap,pc1,pc2,c1,c2,fin");
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    assert!(
        publisher
            .log_text()
            .contains("PreCommit1 runs again elsewhere")
    );
    let runs = runs(&broker).await;
    let done = |phase: Phase| -> Vec<&str> {
        runs.iter()
            .filter(|r| r.phase == phase && r.done)
            .map(|r| r.worker.as_str())
            .collect()
    };
    assert_eq!(done(Phase::PreCommit1), ["h1", "h2"], "{runs:?}");
    assert_eq!(
        done(Phase::Commit2),
        ["h2"],
        "p1 published no proof: {runs:?}"
    );
    assert_eq!(done(Phase::Finalize), ["h2"], "{runs:?}");
}
