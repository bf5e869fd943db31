//! The stateless worker: pulls one task per free slot from the task streams it serves (highest
//! lotus priority first), runs each in an attempt of its own, heartbeats into the worker
//! registry, and drains on shutdown.

mod attempt;
mod phases;
pub mod registry;
pub mod scratch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, topology};
use crate::model::{Phase, SectorSize, WorkerId};
use crate::names;
use crate::proofs::child::ChildRunner;
use crate::proofs::job::{Job, JobOutcome};
use crate::proofs::synthetic::Synthetic;
use crate::resources::{self, Resources};
use crate::store::Store;
use registry::{Registry, WorkerRecord};
use scratch::ScratchRoot;

/// What runs a task's proof job.
#[derive(Debug, Clone)]
pub enum Executor {
    /// Real proofs, each in a child process (the default).
    Proofs(ChildRunner),
    /// SIMULATION: sleeps and fake outputs of the right shape; runs only synthetic sectors.
    Synthetic(Synthetic),
}

impl Executor {
    pub fn is_synthetic(&self) -> bool {
        matches!(self, Executor::Synthetic(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Executor::Proofs(_) => "proofs",
            Executor::Synthetic(_) => "synthetic",
        }
    }

    async fn run(&self, job: &Job, dir: &std::path::Path, abort: &CancellationToken) -> JobOutcome {
        match self {
            Executor::Proofs(runner) => runner.run(job, dir, abort).await,
            Executor::Synthetic(synthetic) => synthetic.run(job, abort).await,
        }
    }
}

/// Everything a worker needs besides its connections.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: WorkerId,
    pub phases: Vec<Phase>,
    pub sizes: Vec<SectorSize>,
    /// Tasks run at once; the worker never holds more deliveries than this.
    pub slots: usize,
    /// Base directory for scratch space.
    pub scratch: PathBuf,
    pub executor: Executor,
    /// How often an idle worker looks for tasks when no publish woke it (redeliveries and
    /// delayed naks do not ring the doorbell).
    pub poll_interval: Duration,
    /// First retry delay after a retryable failure; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Tries for publishing a result or dead letter before giving the task back.
    pub publish_attempts: u32,
    pub heartbeat: Duration,
    pub resources: Resources,
    /// How long a running task waits out an unreachable store before giving the task back.
    pub store_patience: Duration,
    /// Scratch bytes this worker may fill; tasks are pulled only while their need fits in
    /// what running tasks leave (see [`scratch::need`]).
    pub scratch_limit: u64,
}

impl WorkerConfig {
    /// A config with the defaults for everything but identity and what to serve.
    pub fn new(executor: Executor, scratch: PathBuf) -> Self {
        let resources = resources::detect();
        let id = WorkerId(format!(
            "{}-{}",
            resources::safe_name(&resources.host),
            std::process::id()
        ));
        WorkerConfig {
            id,
            phases: Phase::ALL.to_vec(),
            sizes: vec![SectorSize::KiB2],
            slots: 1,
            scratch,
            executor,
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            publish_attempts: 20,
            heartbeat: Duration::from_secs(5),
            resources,
            store_patience: Duration::from_secs(30 * 60),
            scratch_limit: u64::MAX,
        }
    }

    pub fn retry_delay(&self, delivered: u32) -> Duration {
        let factor = 2u32.saturating_pow(delivered.saturating_sub(1).min(16));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("--phases is empty: name at least one of ap, pc1, pc2, c1, c2, fin".into());
        }
        if self.sizes.is_empty() {
            return Err("--sizes is empty: name at least one sector size, e.g. 2KiB".into());
        }
        if self.slots == 0 || self.slots > 1024 {
            return Err(format!(
                "--slots {} is out of range: use 1 to 1024",
                self.slots
            ));
        }
        fn first_repeat<T: PartialEq>(items: &[T]) -> Option<&T> {
            (1..items.len())
                .find(|&i| items[..i].contains(&items[i]))
                .map(|i| &items[i])
        }
        if let Some(phase) = first_repeat(&self.phases) {
            return Err(format!(
                "--phases names {phase} twice: name each phase once"
            ));
        }
        if let Some(size) = first_repeat(&self.sizes) {
            return Err(format!("--sizes names {size} twice: name each size once"));
        }
        let range = |flag: &str, value: Duration, min: Duration, max: Duration| {
            if (min..=max).contains(&value) {
                return Ok(());
            }
            let f = humantime::format_duration;
            Err(format!(
                "{flag} {} is out of range: use {} to {}",
                f(value),
                f(min),
                f(max)
            ))
        };
        // Below 100ms idle workers flood the server; above a minute redeliveries wait too long.
        let ms = Duration::from_millis;
        range("--poll-interval", self.poll_interval, ms(100), ms(60_000))?;
        range("--retry-delay", self.retry_base, ms(100), self.retry_max)?;
        let day = Duration::from_secs(24 * 3600);
        range("--store-patience", self.store_patience, Duration::ZERO, day)?;
        let smallest_need = self
            .phases
            .iter()
            .flat_map(|&p| self.sizes.iter().map(move |&s| scratch::need(p, s)))
            .min()
            .unwrap_or(0);
        if smallest_need > self.scratch_limit {
            return Err(format!(
                "the scratch limit ({}) fits no task this worker serves: the smallest need is {}; \
                 give it more scratch space (--scratch-limit, or free space under {})",
                bytes(self.scratch_limit),
                bytes(smallest_need),
                self.scratch.display()
            ));
        }
        Ok(())
    }
}

/// What attempts share.
struct Ctx {
    broker: Broker,
    store: Store,
    config: WorkerConfig,
    registry: Registry,
    scratch: ScratchRoot,
    progress_every: Duration,
}

struct Source {
    phase: Phase,
    size: SectorSize,
    consumer: PullConsumer,
    /// Scratch bytes its tasks may need.
    need: u64,
}

/// Runs the worker until `drain` is cancelled (stop pulling, finish running tasks, return) or
/// `abort` is cancelled (kill running proofs and hand their tasks back at once).
pub async fn run(
    config: WorkerConfig,
    broker: Broker,
    store: Store,
    drain: CancellationToken,
    abort: CancellationToken,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    topology::check(&broker, &config.phases, &config.sizes).await?;
    store.check().await?;

    // Highest lotus priority first; then the sizes in the order given.
    let mut sources = Vec::new();
    let mut ack_wait = Duration::from_secs(30);
    for phase in Phase::by_priority() {
        if !config.phases.contains(&phase) {
            continue;
        }
        for &size in &config.sizes {
            let need = scratch::need(phase, size);
            if need > config.scratch_limit {
                warn!(
                    %phase,
                    %size,
                    need = %bytes(need),
                    limit = %bytes(config.scratch_limit),
                    "scratch limit is below what these tasks need: this worker will not take them"
                );
                continue;
            }
            let mut consumer = broker
                .consumer(&names::task_stream(phase, size), names::TASK_CONSUMER)
                .await?;
            let info = consumer.info().await?;
            ack_wait = ack_wait.min(info.config.ack_wait);
            sources.push(Source {
                phase,
                size,
                consumer,
                need,
            });
        }
    }
    let progress_every = (ack_wait / 4).max(Duration::from_millis(250));

    let mut doorbell = futures::stream::select_all(
        futures::future::try_join_all(sources.iter().map(|s| {
            broker
                .client()
                .subscribe(names::task_stream_subjects(s.phase, s.size))
        }))
        .await?,
    );

    let scratch = ScratchRoot::create(&config.scratch, &config.id.0, &config.resources.host)?;
    let registry = Registry::new(WorkerRecord {
        id: config.id.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        resources: config.resources.clone(),
        phases: config.phases.clone(),
        sizes: config.sizes.clone(),
        slots: config.slots,
        executor: config.executor.name().to_string(),
        running: Vec::new(),
        draining: false,
        started_ms: crate::now_ms(),
        heartbeat_ms: 0,
    });
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(registry.clone().heartbeat(
        broker.bucket(names::WORKERS_BUCKET).await?,
        config.heartbeat,
        heartbeat_stop.clone(),
    ));

    info!(
        worker = %config.id,
        phases = ?config.phases.iter().map(|p| p.token()).collect::<Vec<_>>(),
        sizes = ?config.sizes.iter().map(|s| s.label()).collect::<Vec<_>>(),
        slots = config.slots,
        scratch_limit = %bytes(config.scratch_limit),
        executor = %match &config.executor {
            Executor::Proofs(_) => "proofs".to_string(),
            Executor::Synthetic(s) => format!("SYNTHETIC (simulation: {})", s.describe()),
        },
        store = %store.name(),
        ?ack_wait,
        "worker started"
    );
    let slots = Arc::new(Semaphore::new(config.slots));
    // Scratch bytes promised to running tasks, and a bell for when some are given back.
    let reserved = Arc::new(AtomicU64::new(0));
    let room = Arc::new(Notify::new());
    let limit = config.scratch_limit;
    let ctx = Arc::new(Ctx {
        broker,
        store,
        config,
        registry: registry.clone(),
        scratch,
        progress_every,
    });
    let tracker = TaskTracker::new();

    'pull: loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            () = drain.cancelled() => break 'pull,
        };
        let (msg, phase, size) = loop {
            // Bells rung before this sweep are answered by it.
            while let Some(Some(_)) = doorbell.next().now_or_never() {}
            let free = limit.saturating_sub(reserved.load(Ordering::SeqCst));
            if let Some(found) = sweep(&sources, free).await {
                break found;
            }
            tokio::select! {
                Some(_) = doorbell.next() => {
                    // The bell can ring a moment before the stream has stored the task.
                    let mut found = None;
                    for delay_ms in [0, 10, 40, 150] {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        let free = limit.saturating_sub(reserved.load(Ordering::SeqCst));
                        found = sweep(&sources, free).await;
                        if found.is_some() {
                            break;
                        }
                    }
                    if let Some(found) = found {
                        break found;
                    }
                }
                () = room.notified() => {}
                () = tokio::time::sleep(ctx.config.poll_interval) => {}
                () = drain.cancelled() => break 'pull,
            }
        };
        let ctx = ctx.clone();
        let abort = abort.clone();
        let need = scratch::need(phase, size);
        reserved.fetch_add(need, Ordering::SeqCst);
        let (reserved, room) = (reserved.clone(), room.clone());
        tracker.spawn(async move {
            attempt::run(ctx, msg, phase, size, abort).await;
            reserved.fetch_sub(need, Ordering::SeqCst);
            room.notify_one();
            drop(permit);
        });
    }

    registry.set_draining();
    let running = tracker.len();
    if running > 0 {
        info!(
            running,
            "draining: no new tasks; waiting for running tasks to finish"
        );
    }
    tracker.close();
    tracker.wait().await;
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    ctx.scratch.remove();
    info!("worker stopped");
    Ok(())
}

/// Asks each source whose tasks fit in `free` scratch bytes, in priority order, for one task,
/// without waiting.
async fn sweep(
    sources: &[Source],
    free: u64,
) -> Option<(async_nats::jetstream::Message, Phase, SectorSize)> {
    for source in sources.iter().filter(|s| s.need <= free) {
        let stream = names::task_stream(source.phase, source.size);
        let mut batch = match source.consumer.fetch().max_messages(1).messages().await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(%stream, error = %e, "pull failed");
                continue;
            }
        };
        match batch.next().await {
            Some(Ok(msg)) => return Some((msg, source.phase, source.size)),
            Some(Err(e)) => warn!(%stream, error = %e, "pull failed"),
            None => {}
        }
    }
    None
}

/// Bytes for people: `64.0 KiB`, `448.0 GiB`, `unlimited`.
fn bytes(n: u64) -> String {
    if n == u64::MAX {
        return "unlimited".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
