//! Placement: which task a worker takes, and when. In-process workers (`mesh::worker::run`)
//! with the synthetic executor (a SIMULATION of the proofs, so that hundreds of tasks run in
//! seconds) against a real nats-server; what they did is read from the results they published
//! and the records they kept in the worker registry, not from their logs.
//!
//! - a worker never holds more than its machine by lotus's resource table (32GiB sectors on a
//!   declared 16-thread, 256 GiB machine), replayed from its results and checked against what it
//!   published as held;
//! - a phase marked GPU-only never lands on a worker without a GPU;
//! - a mixed backlog is taken in lotus's priority order: phase, then deals, then sector number;
//! - fair share: a miner that arrives with 10 tasks behind another's 200 starts before the other's
//!   queue (at most one start per slot already under way), holds its weighted share of the slots,
//!   and leaves the rest to the other. Checked by the order of starts; the times (first start,
//!   span against the share's prediction, pool busy) are printed. Each prints its figures
//!   (`FIGURE` lines with `--no-capture`).

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::model::{MinerId, SectorNum, SectorSize, TaskClass};
use mesh::phases::Phase;
use mesh::resources::{Claim, Ledger, Machine, Table};
use mesh_tests::inproc::{InProcWorker, machine};
use mesh_tests::observe::{self, RegistryLog, Run};
use mesh_tests::{Mesh, bin, publish_task, synthetic_task, wait_for};

/// One task start or end, from a run's result.
#[derive(Debug, Clone)]
struct Event {
    at_ms: u64,
    started: bool,
    run: Run,
}

/// The starts and ends of `runs` in time order (an end before a start at the same millisecond:
/// what it freed is what the start took).
fn events<'a>(runs: impl IntoIterator<Item = &'a Run>) -> Vec<Event> {
    let mut out: Vec<Event> = runs
        .into_iter()
        .flat_map(|r| {
            [(r.start_ms, true), (r.end_ms, false)].map(|(at_ms, started)| Event {
                at_ms,
                started,
                run: r.clone(),
            })
        })
        .collect();
    out.sort_by_key(|e| (e.at_ms, e.started));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_never_holds_more_than_its_machine_by_the_lotus_table() {
    let mesh = Mesh::start().await;
    mesh.publisher(&["init", "--sizes", "32GiB"]);
    let broker = mesh.broker().await;
    let registry = RegistryLog::watch(&broker).await;
    let (cpus, memory) = (16u32, 256u64 << 30);
    let machine: Machine = machine("big", cpus, memory, 0);
    let mut config = mesh.worker_config(
        "big",
        "ap=200ms,pc1=1500ms,pc2=600ms,c1=100ms,c2=600ms,fin=100ms",
    );
    config.sizes = vec![SectorSize::GiB32];
    config.machine = machine.clone();
    config.scratch_limit = 1 << 50;
    let worker = mesh.start_worker(config).await;
    let sectors = 8;
    mesh.seal_in_process("f01000", SectorSize::GiB32, sectors as u64)
        .await;
    worker.drain().await.expect("the worker ends cleanly");

    // Replay the results: at every start, what runs must fit the machine by the table.
    let table = Table::lotus();
    let claim = |phase| Claim::new(&table.get(phase, SectorSize::GiB32), &machine, 0);
    let mut running: BTreeMap<String, Phase> = BTreeMap::new();
    let mut most: BTreeMap<Phase, usize> = BTreeMap::new();
    let (mut peak_threads, mut peak_max_memory) = (0u32, 0u64);
    let runs = observe::runs(&broker).await;
    assert_eq!(
        runs.len(),
        sectors * Phase::ALL.len(),
        "every task ran once"
    );
    assert!(runs.iter().all(|r| r.done && r.worker == "big"), "{runs:?}");
    for e in events(&runs) {
        if !e.started {
            running.remove(&e.run.task);
            continue;
        }
        running.insert(e.run.task.clone(), e.run.phase);
        let threads: u32 = running.values().map(|&p| claim(p).threads).sum();
        let min: u64 = running.values().map(|&p| claim(p).min_memory).sum();
        let max: u64 = running.values().map(|&p| claim(p).max_memory).sum();
        assert!(threads <= cpus, "{threads} threads held at {e:?}");
        assert!(min <= memory && max <= memory, "memory over at {e:?}");
        peak_threads = peak_threads.max(threads);
        peak_max_memory = peak_max_memory.max(max);
        let n = running.values().filter(|&&p| p == e.run.phase).count();
        let m = most.entry(e.run.phase).or_default();
        *m = (*m).max(n);
    }
    // What the worker itself published as held agrees: never over, and at least what its
    // running tasks claim (a task holds its claim from its pull, a little before it runs).
    let records = registry.of("big");
    assert!(records.iter().any(|r| r.running.len() > 1), "{records:?}");
    for r in &records {
        assert!(r.usage.threads <= cpus, "{r:?}");
        assert!(r.usage.max_memory <= memory, "{r:?}");
        let threads: u32 = r.running.iter().map(|t| claim(t.phase).threads).sum();
        assert!(r.usage.threads >= threads, "{r:?}");
    }
    // The table lets 3 PreCommit1 run at once here (64 GiB peak each, plus 10 MiB base): the
    // worker ran exactly that many, never 4.
    let mut ledger = Ledger::new(&machine, None, u64::MAX);
    let kind = (Phase::PreCommit1, SectorSize::GiB32);
    let mut allowed = 0;
    while ledger.check(kind, &claim(Phase::PreCommit1)).is_ok() {
        ledger.take(kind, &claim(Phase::PreCommit1));
        allowed += 1;
    }
    assert_eq!(allowed, 3);
    assert_eq!(most[&Phase::PreCommit1], allowed, "{most:?}");
    // PC2 and C2 take 14 of the 16 threads: never two at once.
    assert_eq!(most[&Phase::PreCommit2], 1, "{most:?}");
    assert_eq!(most[&Phase::Commit2], 1, "{most:?}");
    println!(
        "FIGURE resources: {sectors} synthetic 32GiB sectors on a declared 16-thread, 256 GiB \
         worker: at most {} PC1, {} PC2, {} C2, {} AddPiece at once; peak {peak_threads}/16 \
         threads and {:.0}/256 GiB peak memory held; never over",
        most[&Phase::PreCommit1],
        most[&Phase::PreCommit2],
        most[&Phase::Commit2],
        most[&Phase::AddPiece],
        peak_max_memory as f64 / (1u64 << 30) as f64,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_only_phase_never_lands_on_a_worker_without_a_gpu() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let registry = RegistryLog::watch(&broker).await;
    // Every worker of the farm marks Commit2 GPU-only, in the lotus environment style.
    let gpu_required = |name: &str| (name == "C2_2K_GPU_REQUIRED").then(|| "true".to_string());
    let start = async |id: &str, gpus: usize| -> InProcWorker {
        let mut config =
            mesh.worker_config(id, "ap=50ms,pc1=200ms,pc2=100ms,c1=50ms,c2=300ms,fin=50ms");
        config.machine.cpu_threads = 4;
        config.machine.gpus = machine(id, 4, 0, gpus).gpus;
        config.table.apply_env(&gpu_required).unwrap();
        mesh.start_worker(config).await
    };
    let gpu = start("gpu", 1).await;
    let cpu = start("cpu", 0).await;
    // The worker without a GPU says it will not take Commit2, and why.
    let refusal = cpu
        .config
        .plan()
        .into_iter()
        .find(|s| s.phase == Phase::Commit2)
        .and_then(|s| s.refusal)
        .expect("Commit2 refused on the worker without a GPU");
    assert!(refusal.to_string().contains("requires a GPU"), "{refusal}");
    let sectors = 8;
    mesh.seal_in_process("f01000", SectorSize::KiB2, sectors as u64)
        .await;
    let runs = observe::runs(&broker).await;
    let c2 = |w: &str| {
        observe::on(&runs, w)
            .filter(|r| r.phase == Phase::Commit2)
            .count()
    };
    assert_eq!(c2("gpu"), sectors, "every Commit2 ran on the GPU worker");
    assert_eq!(c2("cpu"), 0, "no Commit2 on the worker without a GPU");
    let cpu_tasks = observe::on(&runs, "cpu").count();
    assert!(cpu_tasks > 0, "the worker without a GPU took other work");
    // One whole GPU per Commit2: never more than the one GPU in use.
    let records = registry.of("gpu");
    assert!(records.iter().any(|r| r.usage.gpu > 0.0), "{records:?}");
    assert!(records.iter().all(|r| r.usage.gpu <= 1.0), "{records:?}");
    for worker in [gpu, cpu] {
        worker.drain().await.expect("the worker ends cleanly");
    }
    // `mesh-worker info` says why.
    let info = std::process::Command::new(bin("mesh-worker"))
        .args(["info", "--gpus", "0"])
        .env("C2_2K_GPU_REQUIRED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("c2 ")
            && l.contains("not served: it requires a GPU and this worker has none")),
        "{text}"
    );
    println!(
        "FIGURE gpu-only: {sectors} Commit2 on the GPU worker, 0 on the other (which ran \
         {cpu_tasks} other tasks)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_backlog_is_taken_in_lotus_priority_order() {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let miner: MinerId = "f01000".parse().unwrap();
    for phase in Phase::ALL {
        for class in TaskClass::ALL {
            mesh.task_consumer("f01000", phase, class).await;
        }
    }
    // Published in a scrambled phase and class order, sector numbers rising: deal sectors are
    // 11 to 13, committed-capacity ones 1 to 3 (a sector's tasks are all of one class).
    let mut kinds: Vec<(Phase, bool)> = Phase::ALL
        .iter()
        .flat_map(|&p| [(p, false), (p, true)])
        .collect();
    kinds.rotate_left(5);
    kinds.swap(0, 7);
    let mut published = Vec::new();
    for n in 1..=3 {
        for &(phase, deals) in &kinds {
            let sector = if deals { 10 + n } else { n };
            let t = synthetic_task(miner, sector, phase, deals, Vec::new());
            publish_task(&broker, &t).await;
            published.push((phase, deals, sector));
        }
    }
    let mut config =
        mesh.worker_config("one", "ap=20ms,pc1=20ms,pc2=20ms,c1=20ms,c2=20ms,fin=20ms");
    config.slots = Some(1);
    let worker = mesh.start_worker(config).await;
    let total = published.len();
    // One slot: the results come in the order the tasks were taken.
    let runs = wait_for("every task to run", Duration::from_secs(60), || {
        let broker = broker.clone();
        async move {
            let runs = observe::runs(&broker).await;
            (runs.len() >= total).then_some(runs)
        }
    })
    .await;
    worker.drain().await.expect("the worker ends cleanly");
    let taken: Vec<(Phase, bool, u64)> = runs
        .iter()
        .map(|r| (r.phase, r.sector.0 > 10, r.sector.0))
        .collect();
    let mut expected = published.clone();
    expected.sort_by_key(|&(phase, deals, sector)| (phase.priority(), !deals, sector));
    assert_eq!(taken, expected);
    let order: Vec<String> = taken
        .iter()
        .take(8)
        .map(|(p, d, s)| format!("{p}/{}/{s}", if *d { "deals" } else { "cc" }))
        .collect();
    println!(
        "FIGURE priority: {total} tasks (6 phases × deals/cc × 3 sectors) published scrambled, \
         taken in lotus order: {} …",
        order.join(" ")
    );
}

/// Pool of the fairness runs: 4 workers, each a simulated 2-thread machine (2 PC1 at once).
const WORKERS: usize = 4;
const SLOTS: usize = 8;
const PC1_MS: u64 = 1500;

struct Fairness {
    first_start_ms: u64,
    b_span_ms: u64,
    predicted_ms: f64,
    rounds_ms: u64,
    busy: f64,
    b_most: usize,
    /// A's starts after B published and before B's first start.
    a_before_b: usize,
    /// A's starts from B's first start to B's last start.
    a_during_b: usize,
}

/// Miner A has 200 PC1 tasks queued and running on the pool; miner B (weight `weight_b`)
/// publishes 10 a little later. Measures B's wait for its first start, B's span from first start
/// to last end against what its share of the slots predicts, and how busy the pool stayed while
/// tasks waited.
async fn contention(weight_b: u32, check_view: bool) -> Fairness {
    let mesh = Mesh::start().await;
    let broker = mesh.broker().await;
    let (a, b): (MinerId, MinerId) = ("f01000".parse().unwrap(), "f01001".parse().unwrap());
    for miner in ["f01000", "f01001"] {
        mesh.task_consumer(miner, Phase::PreCommit1, TaskClass::Cc)
            .await;
    }
    if weight_b != 1 {
        mesh.publisher(&["miners", "weight", "f01001", &weight_b.to_string()]);
    }
    let store = mesh::store::Store::open(&mesh::store::StoreConfig {
        url: mesh.store.clone(),
        options: Vec::new(),
    })
    .unwrap();
    let unsealed = mesh.path("unsealed");
    std::fs::write(&unsealed, vec![7u8; 2048]).unwrap();
    let pc1 = async |miner: MinerId, sector: u64| {
        let key = format!(
            "{}unsealed",
            mesh::names::sector_prefix(miner, SectorNum(sector))
        );
        let input = store.put_file("unsealed", &key, &unsealed).await.unwrap();
        publish_task(
            &broker,
            &synthetic_task(miner, sector, Phase::PreCommit1, false, vec![input]),
        )
        .await;
    };
    for sector in 1..=200 {
        pc1(a, sector).await;
    }
    let mut workers: Vec<InProcWorker> = Vec::new();
    for i in 0..WORKERS {
        let mut config = mesh.worker_config(&format!("w{i}"), "pc1=1500ms");
        config.phases = vec![Phase::PreCommit1];
        config.machine.cpu_threads = 2;
        config.machine.gpus = Vec::new();
        workers.push(mesh.start_worker(config).await);
    }
    let done = |at_least: usize| {
        let broker = broker.clone();
        async move { (observe::runs(&broker).await.len() >= at_least).then_some(()) }
    };
    // B arrives once the pool has run A's tasks for a while.
    wait_for(
        "a first round of A's tasks",
        Duration::from_secs(60),
        || done(SLOTS + 2),
    )
    .await;
    if check_view {
        workers_view(&mesh).await;
    }
    let b_published_ms = mesh::now_ms();
    for sector in 1..=10 {
        pc1(b, sector).await;
    }
    wait_for("every task to end", Duration::from_secs(180), || done(210)).await;
    for worker in workers {
        worker.drain().await.expect("the worker ends cleanly");
    }

    let runs = observe::runs(&broker).await;
    assert!(runs.iter().all(|r| r.done), "{runs:?}");
    let starts = |miner: MinerId| -> Vec<u64> {
        runs.iter()
            .filter(|r| r.miner == miner)
            .map(|r| r.start_ms)
            .collect()
    };
    let b_starts = starts(b);
    assert_eq!(b_starts.len(), 10, "each of B's tasks ran once");
    let b_first = *b_starts.iter().min().unwrap();
    let b_last_end = runs
        .iter()
        .filter(|r| r.miner == b)
        .map(|r| r.end_ms)
        .max()
        .unwrap();
    // Busy fraction while tasks waited: from the first start to the last start.
    let first = runs.iter().map(|r| r.start_ms).min().unwrap();
    let last_start = runs.iter().map(|r| r.start_ms).max().unwrap();
    let busy_ms: u64 = runs
        .iter()
        .map(|r| {
            r.end_ms
                .min(last_start)
                .saturating_sub(r.start_ms.max(first))
        })
        .sum();
    let busy = busy_ms as f64 / (SLOTS as u64 * (last_start - first)) as f64;
    // B's most tasks at once.
    let b_most = b_starts
        .iter()
        .map(|&t| {
            runs.iter()
                .filter(|r| r.miner == b && r.start_ms <= t && t < r.end_ms)
                .count()
        })
        .max()
        .unwrap();
    let a_starts = starts(a);
    let b_last_start = *b_starts.iter().max().unwrap();
    let a_before_b = a_starts
        .iter()
        .filter(|&&t| b_published_ms <= t && t < b_first)
        .count();
    let a_during_b = a_starts
        .iter()
        .filter(|&&t| b_first <= t && t <= b_last_start)
        .count();
    let share = weight_b as f64 / (weight_b + 1) as f64;
    let b_slots = (SLOTS as f64 * share).round() as u64;
    Fairness {
        first_start_ms: b_first.saturating_sub(b_published_ms),
        b_span_ms: b_last_end - b_first,
        predicted_ms: 10.0 * PC1_MS as f64 / (SLOTS as f64 * share),
        rounds_ms: 10u64.div_ceil(b_slots) * PC1_MS,
        busy,
        b_most,
        a_before_b,
        a_during_b,
    }
}

/// `mesh-publisher workers` mid-run: every worker, its two busy threads and its tasks.
async fn workers_view(mesh: &Mesh) {
    let text = wait_for(
        "the workers view to show busy workers",
        Duration::from_secs(20),
        || {
            let text = mesh.publisher(&["workers"]);
            async move { (text.matches("] 2/2 core(s) in use").count() == WORKERS).then_some(text) }
        },
    )
    .await;
    for i in 0..WORKERS {
        assert!(text.contains(&format!("Worker w{i}, host ")), "{text}");
    }
    assert!(text.contains("Serves: pc1 · 2KiB · no slot cap"), "{text}");
    assert!(text.contains("Task: pc1 2KiB f01000."), "{text}");
    assert!(text.contains("GPU:  none"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&mesh.publisher(&["workers", "--json"])).unwrap();
    let workers = json.as_array().unwrap();
    assert_eq!(workers.len(), WORKERS);
    assert!(
        workers.iter().all(|w| w["machine"]["cpu_threads"] == 2),
        "{json}"
    );
}

fn report(name: &str, weight_b: u32, f: &Fairness) {
    println!(
        "FIGURE fair share ({name}): A 200 PC1 queued, B (weight {weight_b}) 10 later, {SLOTS} \
         slots, {PC1_MS} ms per task: A started {} after B published and before B's first start \
         ({} ms later; one task: {PC1_MS} ms); B ran up to {} at once; A started {} while B's ran; \
         B done {:.1} s after its first start, its share predicts {:.1} s (whole rounds: {:.1} s; \
         ratio {:.2}); pool busy {:.1}% while tasks waited",
        f.a_before_b,
        f.first_start_ms,
        f.b_most,
        f.a_during_b,
        f.b_span_ms as f64 / 1000.0,
        f.predicted_ms / 1000.0,
        f.rounds_ms as f64 / 1000.0,
        f.b_span_ms as f64 / f.predicted_ms,
        100.0 * f.busy
    );
}

/// Fairness is checked by the order of starts, which a loaded machine stretches but does not
/// change; the times are figures. First come, first served would start A's 190 waiting tasks
/// before B's first; strict priority would give B every slot and start none of A's meanwhile.
fn check(f: &Fairness) {
    // At most one A start per slot: only takes already under way when B published.
    assert!(
        f.a_before_b <= SLOTS,
        "A started {} tasks after B published, before B's first",
        f.a_before_b
    );
    assert!(f.a_during_b >= 1, "A started nothing while B ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_miner_gets_its_share_of_a_busy_pool() {
    let f = contention(1, true).await;
    report("equal weights", 1, &f);
    check(&f);
    // Half the slots (4); one more when two workers pick at the same moment.
    assert!(
        f.b_most <= SLOTS / 2 + 1,
        "B held {} slots at once",
        f.b_most
    );
    assert!(
        f.a_during_b >= 3,
        "A started only {} tasks while B ran",
        f.a_during_b
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heavier_late_miner_gets_a_larger_share() {
    let f = contention(3, false).await;
    report("B weighs 3", 3, &f);
    check(&f);
    // Three quarters of the slots (6); one less when a slot frees before B's take.
    assert!(
        f.b_most >= SLOTS * 3 / 4 - 1,
        "B held only {} slots at most",
        f.b_most
    );
}

/// The lotus-style flags pick phases as `lotus-worker run` does, and `mesh-worker info` shows
/// what the worker would serve (it connects to nothing).
#[test]
fn lotus_flags_choose_what_a_worker_serves() {
    let serves = |args: &[&str]| -> Vec<String> {
        let out = std::process::Command::new(bin("mesh-worker"))
            .arg("info")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        info["serving"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["phase"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        serves(&["--addpiece=false", "--precommit2=false", "--commit=false"]),
        ["Finalize", "PreCommit1"]
    );
    assert_eq!(
        serves(&["--phases", "ap", "--precommit1", "--commit=true"]),
        ["Commit1", "Commit2", "PreCommit1", "AddPiece"]
    );
    assert_eq!(
        serves(&["--phases", "pc2", "--precommit2=false", "--finalize"]),
        ["Finalize"]
    );
}
