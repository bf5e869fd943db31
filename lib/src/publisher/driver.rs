//! The sector driver: creates sectors, turns each accepted result into the sector's next task,
//! verifies proofs, and keeps every sector's state in the `mesh-sectors` bucket with
//! compare-and-set, so that any number of publisher processes (and restarts) agree.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv;
use async_nats::jetstream::{self, AckKind};
use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::metrics::ResultOutcome;
use super::randomness::Randomness;
use crate::broker::keys::{KeyError, Keys};
use crate::broker::{Broker, BrokerError};
use crate::model::{
    MinerId, PieceSpec, SectorIdentity, SectorNum, SectorSize, TaskClass, decode, encode, fillers,
    piece_size_for,
};
use crate::names;
use crate::phases::{Artefact, Output, Phase, c2};
use crate::proofs::child::{ChildRunner, Pin};
use crate::proofs::job::{FailureKind, Job, JobOutput};
use crate::proofs::params;
use crate::sector::{
    Outcome, SectorRecord, SectorState, TaskResult, message_version, newer_version,
};
use crate::store::Store;

/// How many times a proof that fails verification is made again before the sector fails.
const PROOF_REDRIVES: u32 = 2;
/// How long a result of a newer message version waits before it is offered again (to this
/// publisher or an upgraded one sharing the miner's result consumer).
const NEWER_RESULT_DELAY: Duration = Duration::from_secs(30);
/// How long a publisher told to stop lets the result it is handling finish.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a publisher tells the server that it is still handling a result (a proof's
/// verification can outlast the result consumer's ack wait, which is short so that a result a
/// dead publisher held goes to its partner soon).
pub const RESULT_PROGRESS: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub miner: MinerId,
    /// Runs `verify_seal` in a child process (`<program> exec`).
    pub runner: ChildRunner,
    /// Deliveries after which a failing task is dead-lettered.
    pub max_attempts: u32,
    /// How long the worker holding a sector's data may be gone before the sector goes back to
    /// PreCommit1 elsewhere.
    pub holder_grace: Duration,
}

/// The default of [`PublisherConfig::holder_grace`]: two registry TTLs, so that a worker
/// restarted at once (same id, same scratch) keeps its sectors.
pub const HOLDER_GRACE: Duration = Duration::from_secs(60);

/// Counters for the summary and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub dropped_late: AtomicU64,
}

pub struct Driver {
    broker: Broker,
    store: Store,
    config: PublisherConfig,
    sectors: Keys,
    results: PullConsumer,
    randomness: Arc<dyn Randomness>,
    /// The worker consumers this process made sure of (one per phase, size and class).
    consumers: Mutex<HashSet<(Phase, SectorSize, TaskClass)>>,
    /// Holders of this miner's sectors found gone, and since when (see `check_holders`).
    missing: Mutex<std::collections::HashMap<crate::model::WorkerId, std::time::Instant>>,
    pub stats: Stats,
    /// What this publisher counts (served when the binary registers it: `--metrics`).
    pub metrics: super::metrics::Metrics,
}

/// What handling one result did.
pub enum Handled {
    /// The sector moved on; here is its new record.
    Advanced(Box<SectorRecord>),
    /// The result was not for the sector's current task (late, duplicate or unknown).
    Dropped,
    /// The result could not be handled now; it comes back later.
    Deferred,
}

impl Driver {
    /// Registers the miner in the pool (weight 1 unless an operator set one), opens its result
    /// consumer (creating it on first use) and the sectors bucket.
    pub async fn new(
        broker: Broker,
        store: Store,
        config: PublisherConfig,
        randomness: Arc<dyn Randomness>,
    ) -> anyhow::Result<Self> {
        crate::broker::topology::check(&broker, &[], &[]).await?;
        crate::broker::miners::register(&broker, config.miner).await?;
        let sectors = broker.keys(names::SECTORS_BUCKET).await?;
        let results = crate::broker::topology::result_consumer(&broker, config.miner).await?;
        Ok(Driver {
            broker,
            store,
            config,
            sectors,
            results,
            randomness,
            consumers: Mutex::default(),
            missing: Mutex::default(),
            stats: Stats::default(),
            metrics: super::metrics::Metrics::default(),
        })
    }

    pub fn miner(&self) -> MinerId {
        self.config.miner
    }

    /// The NATS connection this publisher uses.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The miner's results, as a stream that keeps pulling.
    pub async fn results(&self) -> anyhow::Result<jetstream::consumer::pull::Stream> {
        Ok(self
            .results
            .stream()
            .max_messages_per_batch(32)
            .heartbeat(Duration::from_secs(5))
            // A pull of a publisher whose host died takes results until it expires.
            .expires(Duration::from_secs(15))
            .messages()
            .await?)
    }

    /// Loads a sector and the revision to compare-and-set against.
    pub async fn load(&self, sector: SectorNum) -> anyhow::Result<Option<(SectorRecord, u64)>> {
        let key = names::sector_key(self.config.miner, sector);
        let Some(entry) = self.sectors.entry(&key).await? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        if let Some(version) = newer_version(&entry.value) {
            anyhow::bail!(
                "sector {key} was written by a newer publisher (record version {version}; this \
                 one reads {}): upgrade this publisher rather than let it move the sector back",
                message_version()
            );
        }
        let record = decode(&entry.value).with_context(|| format!("decode sector {key}"))?;
        Ok(Some((record, entry.revision)))
    }

    /// Compare-and-set of a sector record: `Ok(false)` when another writer got there first
    /// (reload and decide again), `Err` when the write failed for another reason.
    pub(crate) async fn store_record(
        &self,
        record: &SectorRecord,
        revision: u64,
    ) -> anyhow::Result<bool> {
        let key = names::sector_key(record.miner, record.sector);
        match self
            .sectors
            .update(&key, encode(record).into(), revision)
            .await
        {
            Ok(_) => {
                self.metrics.sector(record);
                Ok(true)
            }
            Err(KeyError::Changed { .. }) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("store sector {key}"))),
        }
    }

    /// The object store the sectors' data is in.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Changes sector `sector`'s record with `change` and stores it (compare-and-set, read
    /// again on a conflict). `change` returns `Err` to refuse, `Ok(false)` to leave the record
    /// as it is. Returns the record as stored (or as read, when left).
    pub(crate) async fn update(
        &self,
        sector: SectorNum,
        mut change: impl FnMut(&mut SectorRecord) -> Result<bool, String>,
    ) -> anyhow::Result<Result<SectorRecord, String>> {
        loop {
            let Some((mut record, revision)) = self.load(sector).await? else {
                return Ok(Err(format!("no sector {}.{sector}", self.config.miner)));
            };
            match change(&mut record) {
                Err(why) => return Ok(Err(why)),
                Ok(false) => return Ok(Ok(record)),
                Ok(true) => {}
            }
            if self.store_record(&record, revision).await? {
                return Ok(Ok(record));
            }
        }
    }

    /// Creates committed-capacity sector `sector` for a lotus miner, with the chain's `ticket`
    /// and the number from `reservation`, and publishes its AddPiece task. False, creating
    /// nothing, when the sector exists already (a pledge resumed).
    pub(crate) async fn create_lotus_sector(
        &self,
        size: SectorSize,
        sector: SectorNum,
        ticket: crate::lotus::Ticket,
        reservation: &str,
    ) -> anyhow::Result<bool> {
        let miner = self.config.miner;
        let mut record = SectorRecord::new(
            miner,
            sector,
            size,
            size.seal_proof(),
            Vec::new(),
            Vec::new(),
            ticket.value,
            crate::now_ms(),
        );
        record.lotus = Some(crate::sector::LotusImport {
            ticket_epoch: ticket.epoch,
            reservation: reservation.to_string(),
            secret: hex::encode(rand::random::<[u8; 16]>()),
            received: false,
            done: None,
        });
        if !self.insert(record).await? {
            return Ok(false);
        }
        info!(%miner, %sector, %size, ticket_epoch = ticket.epoch, reservation, "lotus sector created");
        Ok(true)
    }

    /// Stores a new sector's record and publishes its first task. False, storing nothing, when
    /// a record of that sector exists.
    async fn insert(&self, record: SectorRecord) -> anyhow::Result<bool> {
        let key = names::sector_key(record.miner, record.sector);
        match self.sectors.create(&key, encode(&record).into()).await {
            Ok(_) => self.metrics.sector(&record),
            Err(KeyError::Exists(_)) => return Ok(false),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("store new sector {key}")));
            }
        }
        self.ensure_published(record).await?;
        Ok(true)
    }

    /// Every sector of this miner.
    pub async fn sectors(&self) -> anyhow::Result<Vec<SectorRecord>> {
        let records = super::list_sectors(&self.broker, self.config.miner).await?;
        self.metrics.all_sectors(&records);
        Ok(records)
    }

    /// Reserves `count` new sector numbers for this miner.
    async fn allocate(&self, count: u64) -> anyhow::Result<u64> {
        let key = names::sector_counter_key(self.config.miner);
        reserve(&key, &RESERVE_RETRIES, || self.try_reserve(&key, count)).await
    }

    /// One compare-and-set of the sector counter `key`: the first of `count` numbers.
    async fn try_reserve(&self, key: &str, count: u64) -> Result<u64, ReserveError> {
        let entry = self.sectors.entry(key).await.map_err(|e| {
            ReserveError::broker(e.timed_out(), format!("read sector counter {key}"), e)
        })?;
        let entry = entry.filter(|e| e.operation == kv::Operation::Put);
        let Some(entry) = entry else {
            return match self
                .sectors
                .create(key, (1 + count).to_string().into())
                .await
            {
                Ok(_) => Ok(1),
                Err(KeyError::Exists(_)) => Err(ReserveError::Conflict),
                Err(e) => Err(ReserveError::broker(
                    e.timed_out(),
                    format!("create sector counter {key}"),
                    e,
                )),
            };
        };
        let first: u64 = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("sector counter {key} is not a number"))
            .map_err(ReserveError::Failed)?;
        let next = (first + count).to_string();
        match self.sectors.update(key, next.into(), entry.revision).await {
            Ok(_) => Ok(first),
            Err(KeyError::Changed { .. }) => Err(ReserveError::Conflict),
            Err(e) => Err(ReserveError::broker(
                e.timed_out(),
                format!("update sector counter {key}"),
                e,
            )),
        }
    }

    /// Creates `count` sectors of `size`, each holding all `pieces` (committed-capacity when
    /// there are none), and publishes their AddPiece tasks.
    pub async fn create_sectors(
        &self,
        size: SectorSize,
        count: u64,
        pieces: &[PathBuf],
        synthetic: bool,
        until: Option<Phase>,
    ) -> anyhow::Result<Vec<SectorNum>> {
        let mut sizes = Vec::new();
        for piece in pieces {
            let meta = std::fs::metadata(piece)
                .with_context(|| format!("--piece {}: cannot read it", piece.display()))?;
            if !meta.is_file() {
                bail!("--piece {}: not a file", piece.display());
            }
            sizes.push(piece_size_for(meta.len()));
        }
        fillers(size, &sizes)?;
        let first = self.allocate(count).await?;
        let miner = self.config.miner;
        let mut made = Vec::new();
        for n in first..first + count {
            let sector = SectorNum(n);
            let mut specs = Vec::new();
            let mut objects = Vec::new();
            for (i, (path, &piece_size)) in pieces.iter().zip(&sizes).enumerate() {
                let name = Artefact::piece(i);
                let key = format!("{}{name}", names::sector_prefix(miner, sector));
                let object = self
                    .store
                    .put_file(&name, &key, path)
                    .await
                    .with_context(|| format!("upload piece {}", path.display()))?;
                objects.push(object);
                specs.push(PieceSpec {
                    object: Some(name),
                    size: piece_size,
                });
            }
            let mut record = SectorRecord::new(
                miner,
                sector,
                size,
                size.seal_proof(),
                specs,
                objects,
                self.randomness.ticket(miner, sector),
                crate::now_ms(),
            );
            record.synthetic = synthetic;
            record.until = until;
            if !self.insert(record).await? {
                bail!(
                    "store new sector {}: it exists already",
                    names::sector_key(miner, sector)
                );
            }
            info!(%miner, %sector, %size, pieces = pieces.len(), synthetic, "sector created");
            made.push(sector);
        }
        Ok(made)
    }

    /// Publishes the task of every active sector whose task is not known to be queued, and
    /// returns the unfinished sectors. Run at start and now and then.
    pub async fn resume(&self) -> anyhow::Result<Vec<SectorRecord>> {
        let mut unfinished = Vec::new();
        for record in self.sectors().await? {
            if record.state.is_finished() {
                continue;
            }
            unfinished.push(self.ensure_published(record).await?);
        }
        Ok(unfinished)
    }

    /// Publishes the record's current task if it is not marked published (its message id makes
    /// a repeat harmless), then marks it. Returns the record as stored.
    pub(crate) async fn ensure_published(
        &self,
        record: SectorRecord,
    ) -> anyhow::Result<SectorRecord> {
        let SectorState::Active {
            task: task_id,
            published: false,
            ..
        } = &record.state
        else {
            return Ok(record);
        };
        if record.awaits_lotus() {
            return Ok(record);
        }
        let task = match record.task(self.config.max_attempts, crate::now_ms()) {
            Some(Ok(task)) => task,
            Some(Err(reason)) => bail!("sector {}.{}: {reason}", record.miner, record.sector),
            None => return Ok(record),
        };
        let kind = (task.phase, record.size, task.class());
        let held = task.holder.is_some();
        if !held && !self.consumers.lock().expect("lock").contains(&kind) {
            crate::broker::topology::ensure_task_consumer(
                &self.broker,
                kind.0,
                kind.1,
                record.miner,
                kind.2,
            )
            .await?;
            self.consumers.lock().expect("lock").insert(kind);
        }
        let (subject, stream, bell, named) = match &task.holder {
            Some(holder) => (
                names::held_subject(holder, task.phase, record.size, record.miner),
                names::HELD_STREAM.to_string(),
                names::held_bell(holder),
                bytes::Bytes::new(),
            ),
            None => (
                names::task_subject(task.phase, record.size, record.miner, task.class()),
                names::task_stream(task.phase, record.size),
                names::bell(task.phase, record.size),
                names::bell_body(record.miner, task.class()).into(),
            ),
        };
        self.broker
            .publish_durable(
                subject,
                &task.id.0,
                Some(crate::broker::headers::task(&task)),
                encode(&task).into(),
                10,
            )
            .await
            .map_err(|e| match e {
                BrokerError::Api { reason, .. } if reason.contains("no responders") => {
                    BrokerError::Missing {
                        what: format!("stream {stream}"),
                    }
                    .into()
                }
                other => anyhow::Error::from(other),
            })?;
        self.metrics.published(task.phase, record.size);
        // Idle workers look at once; a lost ring only waits for their next poll.
        if let Err(e) = self.broker.client().publish(bell, named).await {
            warn!(error = %e, "cannot ring the workers' bell; they find the task at their next poll");
        }
        let task_id = task_id.clone();
        // Mark it, unless the sector moved on meanwhile (another publisher got there first).
        loop {
            let Some((mut current, revision)) = self.load(record.sector).await? else {
                bail!("sector {}.{} vanished", record.miner, record.sector);
            };
            if !current.mark_published(&task_id) || self.store_record(&current, revision).await? {
                return Ok(current);
            }
        }
    }

    /// Sends back to PreCommit1 every sector of this miner that waits on a worker holding its
    /// data once that worker has been gone (no registry record, or draining without running
    /// the sector's task) for `grace` as this publisher saw it. Returns the sectors relocated.
    pub async fn check_holders(&self) -> anyhow::Result<Vec<SectorNum>> {
        let grace = self.config.holder_grace;
        let workers = self.broker.bucket(names::WORKERS_BUCKET).await?;
        let mut seen: std::collections::HashMap<crate::model::WorkerId, bool> = Default::default();
        let mut relocated = Vec::new();
        let now = std::time::Instant::now();
        let mut missing = self.missing.lock().expect("lock").clone();
        let mut still_missing = std::collections::HashMap::new();
        for record in self.sectors().await? {
            let Some(holder) = record.waits_on_holder().cloned() else {
                continue;
            };
            let SectorState::Active { task, .. } = &record.state else {
                continue;
            };
            let alive = match seen.get(&holder) {
                Some(&alive) => alive,
                None => {
                    let alive = match workers.get(&holder.0).await {
                        Ok(Some(body)) => {
                            serde_json::from_slice::<crate::broker::workers::WorkerRecord>(&body)
                                .map(|w| !w.draining || w.running.iter().any(|r| r.task == *task))
                                .unwrap_or(true)
                        }
                        Ok(None) => false,
                        // Cannot tell: assume alive, ask again next time.
                        Err(_) => true,
                    };
                    seen.insert(holder.clone(), alive);
                    alive
                }
            };
            if alive {
                continue;
            }
            let since = *missing.entry(holder.clone()).or_insert(now);
            still_missing.insert(holder.clone(), since);
            if now.duration_since(since) < grace {
                continue;
            }
            let reason = format!(
                "worker {holder} holding its data is gone (no heartbeat, or draining) for {}",
                humantime::format_duration(Duration::from_secs(
                    now.duration_since(since).as_secs()
                ))
            );
            loop {
                let Some((mut current, revision)) = self.load(record.sector).await? else {
                    break;
                };
                let restore = current.backed_up();
                if current.waits_on_holder() != Some(&holder)
                    || !current.relocate(&reason, crate::now_ms())
                {
                    break;
                }
                if self.store_record(&current, revision).await? {
                    let sector = names::sector_key(current.miner, current.sector);
                    if restore {
                        warn!(%sector, %holder, "the worker holding the sector is gone; the sector goes on elsewhere from the store's backup of its data");
                    } else {
                        warn!(%sector, %holder, "the worker holding the sector is gone; PreCommit1 runs again elsewhere");
                    }
                    self.ensure_published(current).await?;
                    relocated.push(record.sector);
                    break;
                }
            }
        }
        missing.retain(|holder, _| still_missing.contains_key(holder));
        *self.missing.lock().expect("lock") = missing;
        Ok(relocated)
    }

    /// [`Driver::handle`], given at most [`STOP_GRACE`] more once `cancel` fires. A handling
    /// that ends in time keeps its writes; one that does not is dropped, its result left
    /// unacknowledged for the next publisher (`None`). That is safe at any point: results are
    /// fenced and records written by compare-and-set, and a sector whose record moved on
    /// without its next task published gets it from the next publisher's fence or sweep.
    pub async fn handle_until(
        &self,
        msg: &jetstream::Message,
        cancel: &CancellationToken,
    ) -> Option<anyhow::Result<Handled>> {
        let handling = self.handle(msg);
        tokio::pin!(handling);
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + RESULT_PROGRESS,
            RESULT_PROGRESS,
        );
        loop {
            tokio::select! {
                handled = &mut handling => return Some(handled),
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
                () = cancel.cancelled() => break,
            }
        }
        match tokio::time::timeout(STOP_GRACE, handling).await {
            Ok(handled) => Some(handled),
            Err(_) => {
                warn!(
                    subject = %msg.subject,
                    grace = ?STOP_GRACE,
                    "told to stop while handling a result, which did not end within the grace: \
                     it is left unacknowledged for the next publisher"
                );
                None
            }
        }
    }

    /// Handles one result message: fences it, verifies a proof, advances the sector with
    /// compare-and-set, publishes the next task, then acks.
    pub async fn handle(&self, msg: &jetstream::Message) -> anyhow::Result<Handled> {
        if let Some(version) = newer_version(&msg.payload) {
            warn!(
                subject = %msg.subject,
                version,
                understood = message_version(),
                "a result of a newer message version than this publisher reads: leaving it for \
                 an upgraded publisher (upgrade this one)"
            );
            let _ = msg.ack_with(AckKind::Nak(Some(NEWER_RESULT_DELAY))).await;
            self.metrics.result(None, ResultOutcome::Newer);
            return Ok(Handled::Deferred);
        }
        let result: TaskResult = match decode(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                error!(subject = %msg.subject, error = %e, "undecodable result; discarding it");
                self.metrics.result(None, ResultOutcome::Dropped);
                term(msg).await;
                return Ok(Handled::Dropped);
            }
        };
        let key = names::sector_key(result.miner, result.sector);
        let next = loop {
            let Some((record, revision)) = self.load(result.sector).await? else {
                warn!(sector = %key, "result for an unknown sector; dropping it");
                self.metrics
                    .result(Some(result.phase), ResultOutcome::Dropped);
                ack(msg).await;
                return Ok(Handled::Dropped);
            };
            if let Err(stale) = record.fence(&result) {
                self.stats.dropped_late.fetch_add(1, Ordering::Relaxed);
                info!(
                    sector = %key,
                    task = %result.task,
                    worker = %result.worker,
                    attempt = result.attempt,
                    reason = %stale,
                    "dropping late result"
                );
                self.metrics.result(Some(result.phase), ResultOutcome::Late);
                // The sector may be waiting on a task a crash left unpublished.
                self.ensure_published(record).await?;
                ack(msg).await;
                return Ok(Handled::Dropped);
            }
            let mut next = record.clone();
            let now = crate::now_ms();
            match &result.outcome {
                Outcome::Done {
                    output: Output::Commit2(c2::Output { proof }),
                    ..
                } if record.synthetic => {
                    info!(sector = %key, "synthetic sector: its proof is a simulation, not verified");
                    next.apply(
                        &result,
                        || self.randomness.seed(result.miner, result.sector),
                        now,
                    )
                }
                Outcome::Done {
                    output: Output::Commit2(c2::Output { proof }),
                    ..
                } => match self.verify(&record, proof).await.inspect(|&valid| {
                    self.metrics.verified(valid);
                }) {
                    Ok(true) => next.apply(
                        &result,
                        || self.randomness.seed(result.miner, result.sector),
                        now,
                    ),
                    Ok(false) => {
                        warn!(sector = %key, worker = %result.worker, "proof did not verify");
                        if next.redrive(now).is_none_or(|g| g > PROOF_REDRIVES) {
                            next.fail(
                                result.phase,
                                format!(
                                    "proof from worker {} did not verify (after {PROOF_REDRIVES} \
                                     retries)",
                                    result.worker
                                ),
                                now,
                            );
                        }
                    }
                    Err(e) => {
                        error!(sector = %key, error = %format!("{e:#}"), "cannot verify the proof now; will retry");
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(30))))
                            .await;
                        return Ok(Handled::Deferred);
                    }
                },
                _ => next.apply(
                    &result,
                    || self.randomness.seed(result.miner, result.sector),
                    now,
                ),
            }
            if self.store_record(&next, revision).await? {
                break next;
            }
        };
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let outcome = match &result.outcome {
            Outcome::Done { .. } => ResultOutcome::Done,
            Outcome::Failed { .. } => ResultOutcome::Failed,
            Outcome::Lost { .. } => ResultOutcome::Lost,
        };
        self.metrics.result(Some(result.phase), outcome);
        log_transition(&result, &next);
        let next = self.ensure_published(next).await?;
        if matches!(
            next.state,
            SectorState::Sealed { .. } | SectorState::Failed { .. } | SectorState::Stopped { .. }
        ) {
            self.cleanup(&next).await;
        }
        ack(msg).await;
        Ok(Handled::Advanced(Box::new(next)))
    }

    /// Runs `verify_seal` on a proof in a child process. `Err` means it could not be checked
    /// (no verifying key); `Ok(false)` that the proof is wrong.
    async fn verify(&self, record: &SectorRecord, proof: &[u8]) -> anyhow::Result<bool> {
        let (Some(seed), Some(comm_r), Some(comm_d)) =
            (record.data.seed, record.data.comm_r, record.data.comm_d)
        else {
            return Ok(false);
        };
        let files = params::param_files(record.proof)?;
        params::pull(
            &self.store,
            &self.config.runner.param_cache,
            std::slice::from_ref(&files.vk),
            record.size,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = tempfile::tempdir().context("create a directory for verification")?;
        let job = Job::Verify {
            id: SectorIdentity {
                proof: record.proof,
                prover_id: record.miner.prover_id(),
                sector: record.sector.0,
            },
            ticket: record.data.ticket,
            seed,
            comm_r,
            comm_d,
            proof_bytes: proof.to_vec(),
        };
        let never = tokio_util::sync::CancellationToken::new();
        match self
            .config
            .runner
            .run(&job, dir.path(), &Pin::default(), &never)
            .await
        {
            Ok(JobOutput::Verify { valid }) => Ok(valid),
            Ok(other) => bail!("verification produced {other:?}"),
            Err(f) if f.kind == FailureKind::Permanent => {
                warn!(error = %f, "proof rejected by verify_seal");
                Ok(false)
            }
            Err(f) => bail!("{f}"),
        }
    }

    /// Deletes the sector's objects that its finished record no longer refers to:
    /// dropped cache files, intermediate outputs and outputs of attempts that lost the race. A
    /// failed sector keeps what its failed phase needs, for `dlq retry`; `mesh-publisher
    /// remove` takes the rest.
    async fn cleanup(&self, record: &SectorRecord) {
        let prefix = names::sector_prefix(record.miner, record.sector);
        let keep: std::collections::BTreeSet<&str> = record
            .data
            .objects
            .values()
            .map(|o| o.key.as_str())
            .collect();
        let listed = match self.store.list(&prefix).await {
            Ok(listed) => listed,
            Err(e) => {
                warn!(error = %e, "could not list sector objects for cleanup");
                return;
            }
        };
        let mut removed = 0;
        for (key, _) in listed {
            if !keep.contains(key.as_str()) && self.store.delete(&key).await.is_ok() {
                removed += 1;
            }
        }
        info!(sector = %names::sector_key(record.miner, record.sector), removed, kept = keep.len(), "intermediate objects removed");
    }

    /// The task streams this miner's sectors of `size` need exist.
    pub async fn check_size(&self, size: SectorSize) -> anyhow::Result<()> {
        crate::broker::topology::check(&self.broker, &crate::phases::Phase::ALL, &[size]).await?;
        Ok(())
    }
}

/// Why one try to reserve sector numbers did not.
#[derive(Debug)]
enum ReserveError {
    /// Another publisher of this miner moved the counter first: read it again and retry.
    Conflict,
    /// The broker did not answer in time; it may next time.
    Transient(anyhow::Error),
    /// Retrying cannot help: the request was refused or the counter is broken.
    Failed(anyhow::Error),
}

impl ReserveError {
    fn broker(timed_out: bool, what: String, e: impl std::fmt::Display) -> Self {
        // A refused request only times out: after a refusal, waiting is no use.
        let refused = crate::broker::connect::recent_refusal().is_some();
        let e = anyhow::Error::new(BrokerError::api(what, e));
        if timed_out && !refused {
            ReserveError::Transient(e)
        } else {
            ReserveError::Failed(e)
        }
    }
}

/// How `reserve` retries: a conflict soon (jittered, so racing publishers spread out), a broker
/// that does not answer with backoff; both a bounded number of times.
struct ReserveRetries {
    conflicts: ExponentialBuilder,
    outages: ExponentialBuilder,
}

const RESERVE_RETRIES: ReserveRetries = ReserveRetries {
    conflicts: ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(250))
        .with_jitter()
        .with_max_times(30),
    outages: ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(5),
};

/// Runs `try_once` until it reserves numbers, retrying as `retries` says; any other error is
/// returned at once.
async fn reserve<F, Fut>(key: &str, retries: &ReserveRetries, try_once: F) -> anyhow::Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, ReserveError>>,
{
    let settle_conflicts = || {
        (&try_once)
            .retry(retries.conflicts)
            .when(|e| matches!(e, ReserveError::Conflict))
    };
    let reserved = settle_conflicts
        .retry(retries.outages)
        .when(|e| matches!(e, ReserveError::Transient(_)))
        .notify(|e, retry_in| {
            if let ReserveError::Transient(e) = e {
                warn!(%key, error = %format!("{e:#}"), ?retry_in, "cannot reserve sector numbers; retrying");
            }
        })
        .await;
    match reserved {
        Ok(first) => Ok(first),
        Err(ReserveError::Conflict) => bail!(
            "reserve sector numbers: sector counter {key} kept changing under other publishers of \
             this miner; run the command again"
        ),
        Err(ReserveError::Transient(e)) => Err(e.context(
            "reserve sector numbers: NATS did not answer, also after retries; check that it is \
             up and reachable, then run the command again",
        )),
        Err(ReserveError::Failed(e)) => Err(e.context("reserve sector numbers")),
    }
}

fn log_transition(result: &TaskResult, next: &SectorRecord) {
    let sector = names::sector_key(next.miner, next.sector);
    match &next.state {
        SectorState::Active { phase, .. } if *phase == result.phase => {
            info!(%sector, phase = %result.phase, worker = %result.worker, "phase runs again");
        }
        SectorState::Active { phase, .. } => info!(
            %sector,
            done = %result.phase,
            worker = %result.worker,
            attempt = result.attempt,
            run_ms = result.timings.run_ms,
            next = %phase,
            "phase done"
        ),
        SectorState::Sealed { .. } => {
            let proof = if next.synthetic {
                "synthetic, not verified"
            } else {
                "verified"
            };
            info!(%sector, done = %result.phase, worker = %result.worker, proof, "sector sealed")
        }
        SectorState::Failed { phase, reason, .. } => {
            error!(%sector, %phase, %reason, "sector failed")
        }
        SectorState::Stopped { after, .. } => {
            info!(%sector, done = %result.phase, worker = %result.worker, %after, "sector stopped as asked")
        }
    }
}

async fn ack(msg: &jetstream::Message) {
    if let Err(e) = msg.double_ack().await {
        warn!(error = %e, "result ack not confirmed; it may be handled again (harmlessly)");
    }
}

async fn term(msg: &jetstream::Message) {
    let _ = msg.ack_with(AckKind::Term).await;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const FAST: ReserveRetries = ReserveRetries {
        conflicts: ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(1))
            .with_jitter()
            .with_max_times(4),
        outages: ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(1))
            .with_max_times(2),
    };

    /// Runs `reserve` over tries that fail as `outcome` says for the nth call (from 1).
    async fn tries(
        outcome: impl Fn(u32) -> Result<u64, ReserveError>,
    ) -> (anyhow::Result<u64>, u32) {
        let calls = Cell::new(0);
        let reserved = reserve("f01000.next", &FAST, || {
            calls.set(calls.get() + 1);
            std::future::ready(outcome(calls.get()))
        })
        .await;
        (reserved, calls.get())
    }

    #[tokio::test]
    async fn conflicts_are_retried_a_bounded_number_of_times() {
        let (reserved, calls) = tries(|n| {
            if n < 3 {
                Err(ReserveError::Conflict)
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!((reserved.unwrap(), calls), (7, 3));

        let (reserved, calls) = tries(|_| Err(ReserveError::Conflict)).await;
        let e = format!("{:#}", reserved.unwrap_err());
        assert!(
            e.contains("kept changing") && e.contains("run the command again"),
            "{e}"
        );
        // The conflict retries of each of the outage tries; a conflict is not an outage.
        assert_eq!(calls, 5);
    }

    #[tokio::test]
    async fn a_failure_is_not_retried() {
        let (reserved, calls) = tries(|_| {
            Err(ReserveError::Failed(anyhow::anyhow!(
                "create sector counter f01000.next: permissions violation"
            )))
        })
        .await;
        let e = format!("{:#}", reserved.unwrap_err());
        assert_eq!(calls, 1, "{e}");
        assert!(
            e.starts_with("reserve sector numbers: create sector counter"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_outage_is_waited_out_then_reported() {
        let (reserved, calls) = tries(|n| match n {
            1 => Err(ReserveError::Transient(anyhow::anyhow!("timed out"))),
            2 => Err(ReserveError::Conflict),
            _ => Ok(3),
        })
        .await;
        assert_eq!((reserved.unwrap(), calls), (3, 3));

        let (reserved, calls) =
            tries(|_| Err(ReserveError::Transient(anyhow::anyhow!("timed out")))).await;
        let e = format!("{:#}", reserved.unwrap_err());
        assert_eq!(calls, 3, "{e}");
        assert!(
            e.contains("check that it is up") && e.ends_with("timed out"),
            "{e}"
        );
    }
}
