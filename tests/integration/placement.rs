//! Placement: which task a worker takes, and when. Synthetic executor (a SIMULATION of the
//! proofs, so that hundreds of tasks run in seconds), real nats-server, the mesh's binaries.
//!
//! - a worker never holds more than its machine by lotus's resource table (32GiB sectors on a
//!   declared 16-thread, 256 GiB machine), replayed from its log of task starts and ends;
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
use mesh_tests::{Mesh, Proc, bin, log_field, log_time_ms, publish_task, synthetic_task, wait_for};

/// One task start or end in a worker's log.
#[derive(Debug, Clone)]
struct Event {
    at_ms: u64,
    task: String,
    miner: String,
    phase: Phase,
    started: bool,
    line: String,
}

/// The starts ("task started") and ends ("task done") in a worker's log, in log order.
fn events(worker: &Proc) -> Vec<Event> {
    worker
        .log_text()
        .lines()
        .filter_map(|line| {
            let started = line.contains("task started");
            if !started && !line.contains("task done") {
                return None;
            }
            Some(Event {
                at_ms: log_time_ms(line),
                task: log_field(line, "task")?.to_string(),
                miner: log_field(line, "miner")?.to_string(),
                phase: log_field(line, "phase")?.parse().ok()?,
                started,
                line: line.to_string(),
            })
        })
        .collect()
}

fn count(worker: &Proc, needle: &str) -> usize {
    worker.log_text().matches(needle).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_never_holds_more_than_its_machine_by_the_lotus_table() {
    let mesh = Mesh::start().await;
    mesh.publisher(&["init", "--sizes", "32GiB"]);
    let (cpus, memory) = (16u32, 256u64 << 30);
    let worker = mesh.worker(
        "big",
        &[
            "--executor",
            "synthetic",
            "--synthetic-durations",
            "ap=200ms,pc1=1500ms,pc2=600ms,c1=100ms,c2=600ms,fin=100ms",
            "--sizes",
            "32GiB",
            "--cpus",
            "16",
            "--memory",
            "256GiB",
            "--swap",
            "0",
            "--gpus",
            "0",
            "--scratch-limit",
            "1PiB",
        ],
    );
    let sectors = 8;
    let mut publisher = mesh.seal_sized(
        "f01000",
        "publisher",
        "32GiB",
        &["--count", &sectors.to_string(), "--synthetic"],
    );
    let status = publisher.wait(Duration::from_secs(180)).await;
    assert!(status.success(), "{}", publisher.tail(20));

    // Replay the log: at every start, what runs must fit the machine by the table.
    let machine = Machine {
        host: "big".into(),
        cpu_threads: cpus,
        memory_bytes: memory,
        swap_bytes: 0,
        gpus: Vec::new(),
    };
    let table = Table::lotus();
    let claim = |phase| Claim::new(&table.get(phase, SectorSize::GiB32), &machine, 0);
    let mut running: BTreeMap<String, Phase> = BTreeMap::new();
    let mut most: BTreeMap<Phase, usize> = BTreeMap::new();
    let (mut peak_threads, mut peak_max_memory) = (0u32, 0u64);
    let events = events(&worker);
    assert_eq!(
        events.len(),
        2 * sectors * Phase::ALL.len(),
        "every task started and ended"
    );
    for e in &events {
        if !e.started {
            running.remove(&e.task);
            continue;
        }
        running.insert(e.task.clone(), e.phase);
        let threads: u32 = running.values().map(|&p| claim(p).threads).sum();
        let min: u64 = running.values().map(|&p| claim(p).min_memory).sum();
        let max: u64 = running.values().map(|&p| claim(p).max_memory).sum();
        assert!(threads <= cpus, "{threads} threads held at: {}", e.line);
        assert!(min <= memory && max <= memory, "memory over at: {}", e.line);
        // What the worker itself says it holds agrees.
        let said: u32 = log_field(&e.line, "threads").unwrap().parse().unwrap();
        assert!(said <= cpus, "{}", e.line);
        let said: u64 = log_field(&e.line, "max_memory").unwrap().parse().unwrap();
        assert!(said <= memory, "{}", e.line);
        peak_threads = peak_threads.max(threads);
        peak_max_memory = peak_max_memory.max(max);
        let n = running.values().filter(|&&p| p == e.phase).count();
        let m = most.entry(e.phase).or_default();
        *m = (*m).max(n);
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
    let mut mesh = Mesh::start().await;
    // Every worker of the farm marks Commit2 GPU-only, in the lotus environment style.
    mesh.env
        .push(("C2_2K_GPU_REQUIRED".to_string(), "true".to_string()));
    let flags = [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        "ap=50ms,pc1=200ms,pc2=100ms,c1=50ms,c2=300ms,fin=50ms",
        "--cpus",
        "4",
    ];
    let with_gpu: Vec<&str> = flags.iter().copied().chain(["--gpus", "1"]).collect();
    let without: Vec<&str> = flags.iter().copied().chain(["--gpus", "0"]).collect();
    let gpu = mesh.worker("gpu", &with_gpu);
    let cpu = mesh.worker("cpu", &without);
    let sectors = 8;
    let mut publisher = mesh.seal(
        "publisher",
        &["--count", &sectors.to_string(), "--synthetic"],
    );
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(20));

    let c2 = |w: &Proc| {
        events(w)
            .iter()
            .filter(|e| e.started && e.phase == Phase::Commit2)
            .count()
    };
    assert_eq!(c2(&gpu), sectors, "every Commit2 ran on the GPU worker");
    assert_eq!(c2(&cpu), 0, "no Commit2 on the worker without a GPU");
    let cpu_tasks = count(&cpu, "task started");
    assert!(cpu_tasks > 0, "the worker without a GPU took other work");
    assert!(
        cpu.log_text()
            .lines()
            .any(|l| l.contains("this worker will not take these tasks")
                && l.contains("phase=c2")
                && l.contains("requires a GPU")),
        "{}",
        cpu.tail(20)
    );
    // One whole GPU per Commit2: never more than the one GPU in use.
    for e in events(&gpu).iter().filter(|e| e.started) {
        let used: f64 = log_field(&e.line, "gpu").unwrap().parse().unwrap();
        assert!(used <= 1.0, "{}", e.line);
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
    let worker = mesh.worker(
        "one",
        &[
            "--executor",
            "synthetic",
            "--slots",
            "1",
            "--synthetic-durations",
            "ap=20ms,pc1=20ms,pc2=20ms,c1=20ms,c2=20ms,fin=20ms",
        ],
    );
    let total = published.len();
    let started = wait_for("every task to start", Duration::from_secs(60), || {
        let started: Vec<Event> = events(&worker).into_iter().filter(|e| e.started).collect();
        async move { (started.len() >= total).then_some(started) }
    })
    .await;
    let taken: Vec<(Phase, bool, u64)> = started
        .iter()
        .map(|e| {
            let sector: u64 = log_field(&e.line, "sector").unwrap().parse().unwrap();
            let deals = log_field(&e.line, "deals").unwrap() == "true";
            (e.phase, deals, sector)
        })
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
    let flags = [
        "--executor",
        "synthetic",
        "--phases",
        "pc1",
        "--cpus",
        "2",
        "--synthetic-durations",
        "pc1=1500ms",
    ];
    let workers: Vec<Proc> = (0..WORKERS)
        .map(|i| mesh.worker(&format!("w{i}"), &flags))
        .collect();
    // B arrives once the pool has run A's tasks for a while.
    wait_for(
        "a first round of A's tasks",
        Duration::from_secs(60),
        || {
            let done: usize = workers.iter().map(|w| count(w, "task done")).sum();
            async move { (done >= SLOTS + 2).then_some(()) }
        },
    )
    .await;
    if check_view {
        workers_view(&mesh).await;
    }
    let b_published_ms = mesh::now_ms();
    for sector in 1..=10 {
        pc1(b, sector).await;
    }
    wait_for("every task to end", Duration::from_secs(180), || {
        let done: usize = workers.iter().map(|w| count(w, "task done")).sum();
        async move { (done >= 210).then_some(()) }
    })
    .await;

    let all: Vec<Event> = workers.iter().flat_map(events).collect();
    let starts = |miner: &str| -> Vec<u64> {
        all.iter()
            .filter(|e| e.started && e.miner == miner)
            .map(|e| e.at_ms)
            .collect()
    };
    let b_starts = starts("f01001");
    assert_eq!(b_starts.len(), 10, "each of B's tasks ran once");
    let b_first = *b_starts.iter().min().unwrap();
    let b_last_end = all
        .iter()
        .filter(|e| !e.started && e.miner == "f01001")
        .map(|e| e.at_ms)
        .max()
        .unwrap();
    // Each task's interval, by task id.
    let mut intervals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in &all {
        let entry = intervals.entry(e.task.as_str()).or_insert((0, u64::MAX));
        if e.started {
            entry.0 = e.at_ms;
        } else {
            entry.1 = e.at_ms;
        }
    }
    // Busy fraction while tasks waited: from the first start to the last start.
    let first = intervals.values().map(|i| i.0).min().unwrap();
    let last_start = intervals.values().map(|i| i.0).max().unwrap();
    let busy_ms: u64 = intervals
        .values()
        .map(|&(s, e)| e.min(last_start).saturating_sub(s.max(first)))
        .sum();
    let busy = busy_ms as f64 / (SLOTS as u64 * (last_start - first)) as f64;
    // B's most tasks at once.
    let b_most = b_starts
        .iter()
        .map(|&t| {
            intervals
                .iter()
                .filter(|&(id, &(s, e))| id.starts_with("f01001.") && s <= t && t < e)
                .count()
        })
        .max()
        .unwrap();
    let a_starts = starts("f01000");
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
