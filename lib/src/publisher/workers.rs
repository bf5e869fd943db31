//! `mesh-publisher workers`: every live worker from the `mesh-workers` bucket, shown as
//! `lotus-miner sealing workers` shows its workers: host, what it serves, CPU, RAM and GPU bars
//! of what its running tasks hold by the resource table, and the tasks themselves; and
//! `worker drain`/`resume`, an operator's drain of one worker.

use std::fmt::Write;

use tracing::warn;

use crate::broker::Broker;
use crate::broker::drain::DrainMark;
use crate::broker::workers::WorkerRecord;
use crate::model::shown;
use crate::names;
use crate::sector::message_version;
use crate::units::human_bytes;

/// Refuses to publish a task message version that no live worker reads: the tasks would wait
/// until workers are upgraded. With `allow_newer`, or when some workers read it (the others
/// leave such tasks to them, at no attempt's cost), it says so and goes on. No live worker at
/// all (a pool scaled to zero) is no reason to refuse.
pub async fn check_readers(broker: &Broker, allow_newer: bool) -> anyhow::Result<()> {
    let version = message_version();
    let workers = crate::broker::workers::list(broker).await?;
    let older: Vec<&WorkerRecord> = workers
        .iter()
        .filter(|w| w.message_version < version)
        .collect();
    if older.is_empty() {
        return Ok(());
    }
    let names = older
        .iter()
        .take(5)
        .map(|w| shown(&w.id.0))
        .collect::<Vec<_>>()
        .join(", ");
    let newest = older.iter().map(|w| w.message_version).max().unwrap_or(1);
    if older.len() < workers.len() || allow_newer {
        warn!(
            older = older.len(),
            workers = workers.len(),
            writes = version,
            some = %names,
            "workers in the registry read task messages of an older version than this publisher \
             writes: they leave its tasks to upgraded workers (upgrade them)"
        );
        return Ok(());
    }
    anyhow::bail!(
        "every live worker ({} of them: {names}) reads task messages of version {newest} at \
         most, and this publisher writes version {version}: its tasks would wait until workers \
         are upgraded. Upgrade the workers first (docs/upgrades.md), or pass --allow-newer to \
         publish anyway (old workers leave such tasks, at no attempt's cost)",
        older.len()
    )
}

/// Width of the bars, as lotus draws them.
const BAR: usize = 64;

/// The workers as text, `now_ms` being the time to measure ages against.
pub fn render(workers: &[WorkerRecord], now_ms: u64) -> String {
    if workers.is_empty() {
        return "no live workers (a worker shows up here within 5 s of `mesh-worker run`)\n".into();
    }
    let mut out = String::new();
    for w in workers {
        let m = &w.machine;
        let u = &w.usage;
        // Every string is the worker's own say: escaped, so that no record can write terminal
        // escapes into an operator's terminal.
        let mut flags = vec![
            format!("pid {}", w.pid),
            format!(
                "mesh {}, reads tasks v{}",
                shown(&w.version),
                w.message_version
            ),
            format!("{} executor", shown(&w.executor)),
            format!("up {}", age(now_ms, w.started_ms)),
        ];
        if w.draining {
            flags.push("DRAINING".into());
        }
        let _ = writeln!(
            out,
            "Worker {}, host {} ({})",
            shown(&w.id.0),
            shown(&m.host),
            flags.join(", ")
        );
        let phases: Vec<&str> = w.phases.iter().map(|p| p.token()).collect();
        let sizes: Vec<&str> = w.sizes.iter().map(|s| s.label()).collect();
        let slots = w.slots.map_or("no slot cap".to_string(), |n| {
            format!("at most {n} at once")
        });
        let _ = writeln!(
            out,
            "        Serves: {} · {} · {slots}",
            phases.join(" "),
            sizes.join(" ")
        );
        let _ = writeln!(
            out,
            "        CPU:  [{}] {}/{} core(s) in use",
            bar(u.threads as f64, m.cpu_threads as f64),
            u.threads,
            m.cpu_threads
        );
        let _ = writeln!(
            out,
            "        RAM:  [{}] {:.0}% {}/{}",
            bar(u.min_memory as f64, m.memory_bytes as f64),
            percent(u.min_memory as f64, m.memory_bytes as f64),
            human_bytes(u.min_memory),
            human_bytes(m.memory_bytes)
        );
        let vmem = m.memory_bytes.saturating_add(m.swap_bytes);
        let _ = writeln!(
            out,
            "        VMEM: [{}] {:.0}% {}/{}",
            bar(u.max_memory as f64, vmem as f64),
            percent(u.max_memory as f64, vmem as f64),
            human_bytes(u.max_memory),
            human_bytes(vmem)
        );
        if m.gpus.is_empty() {
            let _ = writeln!(out, "        GPU:  none");
        } else {
            let _ = writeln!(
                out,
                "        GPU:  [{}] {:.2}/{} in use ({})",
                bar(u.gpu, m.gpus.len() as f64),
                u.gpu,
                m.gpus.len(),
                m.gpus
                    .iter()
                    .map(|g| shown(g))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if w.running.is_empty() {
            let _ = writeln!(out, "        Tasks: none running");
        }
        for t in &w.running {
            let _ = writeln!(
                out,
                "        Task: {} {} {}.{} attempt {}, running {}",
                t.phase,
                t.size,
                t.miner,
                t.sector,
                t.attempt,
                age(now_ms, t.since_ms)
            );
        }
        out.push('\n');
    }
    out
}

fn percent(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        100.0 * used / total
    } else {
        0.0
    }
}

/// `||||||      ` filled in proportion, never past the end.
fn bar(used: f64, total: f64) -> String {
    let filled = if total > 0.0 {
        ((used / total) * BAR as f64).round().clamp(0.0, BAR as f64) as usize
    } else {
        0
    };
    format!("{}{}", "|".repeat(filled), " ".repeat(BAR - filled))
}

/// `3m12s`, to the second.
fn age(now_ms: u64, since_ms: u64) -> String {
    let secs = now_ms.saturating_sub(since_ms) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// `worker drain ID`: marks live worker `id` draining by hand (no autoscaler lifts the mark).
/// It finishes its running tasks and takes no new ones until [`resume`]. Says what it did.
pub async fn drain(broker: &Broker, id: &str, reason: &str) -> anyhow::Result<String> {
    let Some(worker) = crate::broker::workers::list(broker)
        .await?
        .into_iter()
        .find(|w| w.id.0 == id)
    else {
        anyhow::bail!(
            "no live worker {}: `mesh-publisher workers` lists them (a stopped worker takes \
             nothing anyway)",
            shown(id)
        );
    };
    let bucket = broker.bucket(names::DRAIN_BUCKET).await?;
    let mark = DrainMark::by_hand(reason, crate::now_ms());
    crate::broker::drain::mark(&bucket, id, &mark).await?;
    Ok(format!(
        "worker {} drains: it finishes its {} running task(s) and takes no new ones until \
         `mesh-publisher worker resume {}`",
        shown(id),
        worker.running.len(),
        shown(id)
    ))
}

/// `worker resume ID`: lifts worker `id`'s drain mark, whoever set it. Says what it did.
pub async fn resume(broker: &Broker, id: &str) -> anyhow::Result<String> {
    let marks = crate::broker::drain::marks(broker).await?;
    let Some(mark) = marks.get(id) else {
        anyhow::bail!(
            "worker {} is not drained by a mark (`mesh-publisher workers` shows DRAINING for a \
             worker that stops by itself, on SIGTERM)",
            shown(id)
        );
    };
    let bucket = broker.bucket(names::DRAIN_BUCKET).await?;
    crate::broker::drain::unmark(&bucket, id).await?;
    Ok(if mark.is_by_hand() {
        format!("worker {} takes tasks again", shown(id))
    } else {
        format!(
            "worker {} takes tasks again; autoscaler group {} had marked it to be removed and \
             may mark it again",
            shown(id),
            shown(&mark.group)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::workers::RunningTask;
    use crate::model::{SectorNum, SectorSize, WorkerId};
    use crate::phases::Phase;
    use crate::resources::{Machine, Usage};
    use crate::sector::TaskId;

    #[test]
    fn a_worker_reads_like_lotus_miner_sealing_workers() {
        let w = WorkerRecord {
            id: WorkerId("pc1-box".into()),
            pid: 42,
            version: "0.1.0".into(),
            message_version: 1,
            machine: Machine {
                host: "sealer-7".into(),
                cpu_threads: 64,
                memory_bytes: 1 << 40,
                swap_bytes: 0,
                gpus: vec!["NVIDIA A100".into()],
                cpu_ids: Vec::new(),
                gpu_ids: Vec::new(),
            },
            phases: vec![Phase::PreCommit1],
            sizes: vec![SectorSize::GiB32],
            slots: None,
            executor: "proofs".into(),
            usage: Usage {
                tasks: 2,
                threads: 2,
                min_memory: 112 << 30,
                max_memory: 128 << 30,
                gpu: 0.0,
                scratch: 0,
            },
            running: vec![RunningTask {
                task: TaskId("f01000.12.pc1.1".into()),
                miner: "f01000".parse().unwrap(),
                sector: SectorNum(12),
                phase: Phase::PreCommit1,
                size: SectorSize::GiB32,
                attempt: 1,
                since_ms: 1_000,
            }],
            draining: false,
            started_ms: 0,
            heartbeat_ms: 0,
        };
        let mut hostile = w.clone();
        hostile.machine.host = "evil\u{1b}]0;owned\u{7}".into();
        hostile.machine.gpus = vec!["gpu\u{1b}[2J".into()];
        let text = render(&[hostile], 193_000);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains(r"host evil\u{1b}]0;owned\u{7} ("), "{text}");
        let text = render(&[w], 193_000);
        assert!(
            text.contains("Worker pc1-box, host sealer-7 (pid 42"),
            "{text}"
        );
        assert!(text.contains("Serves: pc1 · 32GiB · no slot cap"), "{text}");
        assert!(text.contains("] 2/64 core(s) in use"), "{text}");
        assert!(text.contains("] 11% 112.0 GiB/1.0 TiB"), "{text}");
        assert!(text.contains("0.00/1 in use (NVIDIA A100)"), "{text}");
        assert!(
            text.contains("Task: pc1 32GiB f01000.12 attempt 1, running 3m 12s"),
            "{text}"
        );
        assert_eq!(bar(1.0, 2.0).matches('|').count(), 32);
        assert_eq!(bar(5.0, 2.0).len(), BAR);
    }
}
