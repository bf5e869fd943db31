//! What a worker counts, served by `mesh-worker run --metrics` under `mesh_worker_`: tasks
//! started, done, retried, handed back and dead-lettered by phase and size; how long tasks
//! took and waited in their stream; store traffic by direction; progress acks and leases lost;
//! proof child failures; and, read from the ledger at each scrape, what the machine has free
//! and what running tasks and held sectors hold.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::SectorSize;
use crate::phases::Phase;
use crate::proofs::job::FailureKind;
use crate::resources::Ledger;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    phase: &'static str,
    size: &'static str,
}

impl TaskLabels {
    fn of(phase: Phase, size: SectorSize) -> Self {
        TaskLabels {
            phase: phase.token(),
            size: size.label(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    phase: &'static str,
    size: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// Which way store traffic went.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    Download,
    Upload,
}

impl Direction {
    fn labels(self) -> DirectionLabels {
        DirectionLabels {
            direction: match self {
                Direction::Download => "download",
                Direction::Upload => "upload",
            },
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(crate::metrics::duration_buckets())
}

type Histograms = Family<TaskLabels, Histogram, fn() -> Histogram>;

/// The worker's metric families. Cheap to clone (every field is shared), and counting whether or
/// not a registry serves them.
#[derive(Clone, Debug)]
pub struct Metrics {
    started: Family<TaskLabels, Counter>,
    done: Family<TaskLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    handed_back: Family<TaskLabels, Counter>,
    dead_lettered: Family<TaskLabels, Counter>,
    duration: Histograms,
    queue_wait: Histograms,
    store_bytes: Family<DirectionLabels, Counter>,
    store_seconds: Family<DirectionLabels, Counter<f64>>,
    progress_acks: Counter,
    leases_lost: Family<TaskLabels, Counter>,
    proof_failures: Family<FailureLabels, Counter>,
    resources: Resources,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Family::default(),
            done: Family::default(),
            retried: Family::default(),
            handed_back: Family::default(),
            dead_lettered: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            queue_wait: Family::new_with_constructor(duration_histogram),
            store_bytes: Family::default(),
            store_seconds: Family::default(),
            progress_acks: Counter::default(),
            leases_lost: Family::default(),
            proof_failures: Family::default(),
            resources: Resources::default(),
        }
    }
}

impl Metrics {
    /// Adds the families to `registry` (a daemon's, from `crate::metrics::registry`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("worker");
        r.register(
            "tasks_started",
            "Tasks whose proof or simulation started here (inputs downloaded, threads taken)",
            self.started.clone(),
        );
        r.register(
            "tasks_done",
            "Tasks finished here with their result published and acked",
            self.done.clone(),
        );
        r.register(
            "tasks_retried",
            "Task attempts that failed here and went back to their stream for another attempt",
            self.retried.clone(),
        );
        r.register(
            "tasks_handed_back",
            "Tasks handed back unrun or aborted: a newer message version, the other executor, \
             a forced shutdown (no attempt counted unless aborted)",
            self.handed_back.clone(),
        );
        r.register(
            "tasks_dead_lettered",
            "Tasks that failed for good here and went to MESH_DLQ",
            self.dead_lettered.clone(),
        );
        r.register_with_unit(
            "task_duration",
            "From taking a task to its result: inputs, waiting for threads, proof, outputs",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "task_queue_wait",
            "From a task's publication (or last hand-back) to this worker taking it",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "store",
            "Bytes of task inputs and outputs moved through the object store",
            Unit::Bytes,
            self.store_bytes.clone(),
        );
        r.register_with_unit(
            "store",
            "Time spent moving task inputs and outputs through the object store",
            Unit::Seconds,
            self.store_seconds.clone(),
        );
        r.register(
            "progress_acks",
            "Progress acks sent for running tasks (each keeps a task's lease an ack wait longer)",
            self.progress_acks.clone(),
        );
        r.register(
            "leases_lost",
            "Tasks whose final ack the server did not confirm: the ack wait had passed or the \
             connection dropped, so another worker may run the task again",
            self.leases_lost.clone(),
        );
        r.register(
            "proof_failures",
            "Proof children (or simulations) that failed, by kind: retryable, permanent, \
             missing_params",
            self.proof_failures.clone(),
        );
        r.register_collector(Box::new(self.resources.clone()));
    }

    /// Creates every counter of the phases and sizes this worker serves at zero, so that a
    /// rule's `increase()` sees the first event (a series that appears at 1 shows none).
    pub(super) fn serving(&self, kinds: impl IntoIterator<Item = (Phase, SectorSize)>) {
        for (phase, size) in kinds {
            let labels = TaskLabels::of(phase, size);
            for family in [
                &self.started,
                &self.done,
                &self.retried,
                &self.handed_back,
                &self.dead_lettered,
                &self.leases_lost,
            ] {
                let _ = family.get_or_create(&labels);
            }
            for kind in ["retryable", "permanent", "missing_params"] {
                let _ = self.proof_failures.get_or_create(&FailureLabels {
                    phase: phase.token(),
                    size: size.label(),
                    kind,
                });
            }
        }
        for direction in [Direction::Download, Direction::Upload] {
            let _ = self.store_bytes.get_or_create(&direction.labels());
            let _ = self.store_seconds.get_or_create(&direction.labels());
        }
    }

    pub(super) fn started(&self, phase: Phase, size: SectorSize) {
        self.started
            .get_or_create(&TaskLabels::of(phase, size))
            .inc();
    }

    pub(super) fn done(&self, phase: Phase, size: SectorSize, took: Duration) {
        let labels = TaskLabels::of(phase, size);
        self.done.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub(super) fn retried(&self, phase: Phase, size: SectorSize) {
        self.retried
            .get_or_create(&TaskLabels::of(phase, size))
            .inc();
    }

    pub(super) fn handed_back(&self, phase: Phase, size: SectorSize) {
        self.handed_back
            .get_or_create(&TaskLabels::of(phase, size))
            .inc();
    }

    pub(super) fn dead_lettered(&self, phase: Phase, size: SectorSize) {
        self.dead_lettered
            .get_or_create(&TaskLabels::of(phase, size))
            .inc();
    }

    pub(super) fn taken(&self, phase: Phase, size: SectorSize, waited: Duration) {
        self.queue_wait
            .get_or_create(&TaskLabels::of(phase, size))
            .observe(waited.as_secs_f64());
    }

    pub(super) fn moved(&self, direction: Direction, bytes: u64, took: Duration) {
        let labels = direction.labels();
        self.store_bytes.get_or_create(&labels).inc_by(bytes);
        self.store_seconds
            .get_or_create(&labels)
            .inc_by(took.as_secs_f64());
    }

    pub(super) fn progress_ack(&self) {
        self.progress_acks.inc();
    }

    pub(super) fn lease_lost(&self, phase: Phase, size: SectorSize) {
        self.leases_lost
            .get_or_create(&TaskLabels::of(phase, size))
            .inc();
    }

    pub(super) fn proof_failed(&self, phase: Phase, size: SectorSize, kind: FailureKind) {
        let kind = match kind {
            FailureKind::Retryable => "retryable",
            FailureKind::Permanent => "permanent",
            FailureKind::MissingParams => "missing_params",
        };
        self.proof_failures
            .get_or_create(&FailureLabels {
                phase: phase.token(),
                size: size.label(),
                kind,
            })
            .inc();
    }

    /// The ledger the resource gauges read from now on.
    pub(super) fn watch(&self, ledger: Arc<Mutex<Ledger>>) {
        let _ = self.resources.ledger.set(ledger);
    }
}

/// The resource gauges, read from the worker's ledger at each scrape (nothing while the
/// worker has not started).
#[derive(Clone, Debug, Default)]
struct Resources {
    ledger: Arc<OnceLock<Arc<Mutex<Ledger>>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

impl prometheus_client::collector::Collector for Resources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(ledger) = self.ledger.get() else {
            return Ok(());
        };
        let (held, total) = {
            let ledger = ledger.lock().expect("ledger lock");
            (ledger.usage(), ledger.capacity())
        };
        let running = ConstGauge::new(held.tasks as i64);
        running.encode(encoder.encode_descriptor(
            "tasks_running",
            "Tasks running here now.",
            None,
            MetricType::Gauge,
        )?)?;
        let pairs: [(&str, &str, Option<Unit>, f64, f64); 4] = [
            (
                "threads",
                "CPU threads running tasks hold, and those free.",
                None,
                held.threads as f64,
                total.threads as f64,
            ),
            (
                "memory",
                "Memory running tasks reserve (their minimum), and what is free of the machine's.",
                Some(Unit::Bytes),
                held.min_memory as f64,
                total.min_memory as f64,
            ),
            (
                "gpus",
                "GPUs running tasks hold (1 is a whole GPU), and those free.",
                None,
                held.gpu,
                total.gpu,
            ),
            (
                "scratch",
                "Scratch disk running tasks and held sectors claim, and what is free of the limit.",
                Some(Unit::Bytes),
                held.scratch as f64,
                total.scratch as f64,
            ),
        ];
        for (name, help, unit, held, total) in pairs {
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            for (state, value) in [("held", held), ("free", (total - held).max(0.0))] {
                ConstGauge::new(value).encode(family.encode_family(&StateLabels { state })?)?;
            }
        }
        Ok(())
    }
}
