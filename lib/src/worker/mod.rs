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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, topology};
use crate::model::{Phase, SectorSize, WorkerId};
use crate::names;
use crate::proofs::child::ChildRunner;
use crate::resources::{self, Resources};
use crate::store::Store;
use registry::{Registry, WorkerRecord};
use scratch::ScratchRoot;

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
    pub runner: ChildRunner,
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
}

impl WorkerConfig {
    /// A config with the defaults for everything but identity and what to serve.
    pub fn new(runner: ChildRunner, scratch: PathBuf) -> Self {
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
            runner,
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            publish_attempts: 20,
            heartbeat: Duration::from_secs(5),
            resources,
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
        if self.poll_interval < Duration::from_millis(100) {
            return Err("--poll-interval is below 100ms: that floods the server".into());
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
            let mut consumer = broker
                .consumer(&names::task_stream(phase, size), names::TASK_CONSUMER)
                .await?;
            let info = consumer.info().await?;
            ack_wait = ack_wait.min(info.config.ack_wait);
            sources.push(Source {
                phase,
                size,
                consumer,
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
        store = %store.name(),
        ?ack_wait,
        "worker started"
    );
    let slots = Arc::new(Semaphore::new(config.slots));
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
            if let Some(found) = sweep(&sources).await {
                break found;
            }
            tokio::select! {
                Some(_) = doorbell.next() => {
                    // The bell can ring a moment before the stream has stored the task.
                    let mut found = None;
                    for delay_ms in [0, 10, 40, 150] {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        found = sweep(&sources).await;
                        if found.is_some() {
                            break;
                        }
                    }
                    if let Some(found) = found {
                        break found;
                    }
                }
                () = tokio::time::sleep(ctx.config.poll_interval) => {}
                () = drain.cancelled() => break 'pull,
            }
        };
        let ctx = ctx.clone();
        let abort = abort.clone();
        tracker.spawn(async move {
            attempt::run(ctx, msg, phase, size, abort).await;
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

/// Asks each source in priority order for one task, without waiting.
async fn sweep(sources: &[Source]) -> Option<(async_nats::jetstream::Message, Phase, SectorSize)> {
    for source in sources {
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
