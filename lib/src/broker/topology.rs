//! The streams, consumers and buckets of the mesh: their definitions (also exported as the JSON
//! files in `nats/`), idempotent creation (`mesh-publisher init`) and the check every process
//! makes at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, FromConsumer, ReplayPolicy, pull};
use async_nats::jetstream::stream::{
    Config as StreamConfig, ConsumerLimits, DiscardPolicy, RetentionPolicy, StorageType,
};
use serde::Serialize;

use super::{Broker, BrokerError};
use crate::model::{MAX_MESSAGE_BYTES, MinerId, SectorSize, TaskClass, WorkerId};
use crate::names;
use crate::phases::Phase;

/// Task stream metadata key holding the `--ack-wait` of `init` in milliseconds, so that the
/// per-miner consumers publishers create later get the same ack wait.
pub const ACK_WAIT_KEY: &str = "mesh.ack_wait_ms";

/// The ack wait `init` stored in a task stream's metadata, if it did.
pub fn stored_ack_wait(stream: &StreamConfig) -> Option<Duration> {
    let ms = stream.metadata.get(ACK_WAIT_KEY)?;
    ms.parse().ok().map(Duration::from_millis)
}

/// The consumer every worker shared before consumers were per miner; `init` removes it, as a
/// work queue allows no unfiltered consumer beside filtered ones.
const LEGACY_TASK_CONSUMER: &str = "workers";

/// How long a held task waits for its holder, and a holder's consumer for its worker.
const HELD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an entry of the deferred bucket outlives its last write.
const DEFERRED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

// The limits of the streams (README: Stream limits). Each is visible in `nats stream info`.

/// How long a result may stay unacknowledged before it goes to another of the miner's
/// publishers (one that handles it longer sends progress acks).
pub const RESULT_ACK_WAIT: Duration = Duration::from_secs(15);

/// Tasks one miner may have waiting in one task stream per class (per subject): the server
/// refuses more, so no miner can fill a stream that every miner shares.
pub const TASKS_PER_SUBJECT: i64 = 10_000;
/// Bytes of tasks waiting in one task stream (held stream: for all workers); a task is 1–4 KiB.
/// A single server reserves each stream's byte limit from its `max_file_store`, so the limits
/// of every stream together stay small (about 3.2 GiB for five sizes).
pub const TASK_STREAM_BYTES: i64 = 64 << 20;
/// How long a task may wait to be taken: for ever. A publisher does not publish a task again
/// once it is queued, so a task removed by age would strand its sector; what bounds a task
/// stream is its per-subject, byte and size limits, and only miners' own classes are accepted.
pub const TASK_MAX_AGE: Duration = Duration::ZERO;
/// Consumers of one task stream: one per miner and class.
pub const TASK_STREAM_CONSUMERS: i32 = 2 * 512;
/// Bytes of results and of dead letters kept, each (the oldest go first).
pub const HISTORY_BYTES: i64 = 512 << 20;
/// Consumers of the result and dead-letter streams: one per miner, and operators' reads.
pub const HISTORY_CONSUMERS: i32 = 1024;
/// Consumers of the held stream and of each bucket: about one per worker (its held tasks, its
/// watches of weights and drain marks), plus publishers' and operators' reads.
pub const WATCH_CONSUMERS: i32 = 10_000;
/// Longest a consumer of the held stream or a bucket may live unused: a consumer left behind
/// is removed by the server after this, whatever it asked for.
pub const BUCKET_CONSUMER_IDLE: Duration = Duration::from_secs(600);
/// Bytes of the sectors bucket: none. A full bucket would refuse sector states and stop all
/// sealing; it grows with the sectors sealed (records of a few KiB, 5 revisions each).
pub const SECTORS_BYTES: i64 = -1;
/// Bytes of each other bucket (one small JSON value per worker or miner).
pub const SMALL_BUCKET_BYTES: i64 = 64 << 20;

/// Settings an operator may change at `init`.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Stream replicas: 1 on a single server, 3 (or 5) in a cluster.
    pub replicas: usize,
    /// Sector sizes to make task streams for.
    pub sizes: Vec<SectorSize>,
    /// How long a task may go without an ack or progress ack before it is redelivered. Workers
    /// send progress acks well inside it, so it can be short even for hours-long tasks.
    pub ack_wait: Duration,
    /// Window in which a re-published task or result with the same message id is dropped.
    pub duplicate_window: Duration,
    /// How long results are kept (they are read within seconds; the rest is history).
    pub result_max_age: Duration,
    /// How long dead letters are kept.
    pub dlq_max_age: Duration,
    /// How long a worker's registry entry lives without a heartbeat; workers heartbeat every
    /// third of it. 30 s: at 1,000 workers the heartbeats are ~100 writes a second, about 0.75%
    /// of a server core (`bench/results/scale.md`).
    pub worker_ttl: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            replicas: 1,
            sizes: SectorSize::ALL.to_vec(),
            ack_wait: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(3600),
            result_max_age: Duration::from_secs(14 * 24 * 3600),
            dlq_max_age: Duration::from_secs(90 * 24 * 3600),
            worker_ttl: Duration::from_secs(30),
        }
    }
}

impl Topology {
    pub fn validate(&self) -> Result<(), String> {
        if ![1, 3, 5].contains(&self.replicas) {
            return Err(format!(
                "--replicas {} is not allowed: use 1 on a single server, 3 or 5 in a cluster \
                 (an even count survives no more failures than one less)",
                self.replicas
            ));
        }
        if self.sizes.is_empty() {
            return Err("--sizes is empty: name at least one sector size".into());
        }
        if self.ack_wait < Duration::from_secs(2) {
            return Err(format!(
                "--ack-wait {} is too short: at least 2s, so that progress acks can keep up",
                humantime::format_duration(self.ack_wait)
            ));
        }
        if self.ack_wait > Duration::from_secs(3600) {
            return Err(format!(
                "--ack-wait {} is too long: at most 1h (a dead worker's task waits that long \
                 to be redelivered; progress acks keep long tasks alive anyway)",
                humantime::format_duration(self.ack_wait)
            ));
        }
        Ok(())
    }

    /// What every stream of the mesh has in common: file storage, the configured replicas, the
    /// duplicate window and the message size limit; each stream sets its own byte, age and
    /// consumer limits.
    fn stream(&self, name: String, description: String, subject: String) -> StreamConfig {
        StreamConfig {
            name,
            description: Some(description),
            subjects: vec![subject],
            storage: StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_message_size: MAX_MESSAGE_BYTES as i32,
            max_messages: -1,
            max_bytes: -1,
            max_consumers: -1,
            max_messages_per_subject: -1,
            ..Default::default()
        }
    }

    pub fn task_stream(&self, phase: Phase, size: SectorSize) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::WorkQueue,
            // Never drop a queued task to make room: refuse the publish instead, and count
            // per subject (one miner's class) so that one miner cannot fill the stream.
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            max_messages_per_subject: TASKS_PER_SUBJECT,
            max_bytes: TASK_STREAM_BYTES,
            max_age: TASK_MAX_AGE,
            max_consumers: TASK_STREAM_CONSUMERS,
            metadata: [(
                ACK_WAIT_KEY.to_string(),
                self.ack_wait.as_millis().to_string(),
            )]
            .into(),
            ..self.stream(
                names::task_stream(phase, size),
                format!("mesh {} tasks for {size} sectors", phase.title()),
                names::task_stream_subjects(phase, size),
            )
        }
    }

    /// The consumer through which every worker takes one miner's tasks of one class from a task
    /// stream. Per miner, so that workers can share the pool between miners by weight; per class,
    /// so that deal sectors go first. `max_deliver` is unlimited on purpose: when the server
    /// exhausts `max_deliver` it leaves the message stuck in the stream, so the worker that
    /// receives a delivery past the task's `max_attempts` dead-letters it instead.
    pub fn task_consumer(
        &self,
        phase: Phase,
        size: SectorSize,
        miner: MinerId,
        class: TaskClass,
    ) -> pull::Config {
        pull::Config {
            durable_name: Some(names::task_consumer(miner, class)),
            description: Some(format!(
                "mesh workers pull {miner}'s {class} tasks one at a time"
            )),
            filter_subject: names::task_subject(phase, size, miner, class),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: DeliverPolicy::All,
            replay_policy: ReplayPolicy::Instant,
            max_deliver: -1,
            max_ack_pending: 10_000,
            max_waiting: 512,
            ..Default::default()
        }
    }

    /// The stream of tasks bound to the worker that holds their sector's data. A work queue like
    /// the task streams; each worker takes its own subjects through its own consumer
    /// ([`Topology::held_consumer`]). A task whose holder never comes back is redriven by the
    /// publisher and left here: `max_age` removes it after a week.
    pub fn held_stream(&self) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::WorkQueue,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            max_messages_per_subject: TASKS_PER_SUBJECT,
            max_bytes: TASK_STREAM_BYTES,
            max_age: HELD_MAX_AGE,
            max_consumers: WATCH_CONSUMERS,
            consumer_limits: Some(ConsumerLimits {
                inactive_threshold: HELD_MAX_AGE,
                max_ack_pending: 0,
            }),
            metadata: [(
                ACK_WAIT_KEY.to_string(),
                self.ack_wait.as_millis().to_string(),
            )]
            .into(),
            ..self.stream(
                names::HELD_STREAM.to_string(),
                "mesh tasks bound to the worker holding their sector's data".into(),
                names::HELD_SUBJECTS.to_string(),
            )
        }
    }

    /// The consumer through which worker `worker` takes the tasks of the sectors it holds. It
    /// outlives the worker's process (the id is stable across restarts), and the server removes
    /// it after a week unused.
    pub fn held_consumer(&self, worker: &WorkerId) -> pull::Config {
        pull::Config {
            durable_name: Some(names::held_consumer(worker)),
            description: Some(format!(
                "mesh worker {worker} pulls the tasks of the sectors it holds"
            )),
            filter_subject: names::held_filter(worker),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: DeliverPolicy::All,
            replay_policy: ReplayPolicy::Instant,
            max_deliver: -1,
            max_ack_pending: 10_000,
            max_waiting: 16,
            inactive_threshold: HELD_MAX_AGE,
            ..Default::default()
        }
    }

    pub fn result_stream(&self) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: self.result_max_age,
            max_bytes: HISTORY_BYTES,
            max_consumers: HISTORY_CONSUMERS,
            ..self.stream(
                names::RESULT_STREAM.to_string(),
                "mesh task results, read by each miner's publisher".into(),
                names::RESULT_SUBJECTS.to_string(),
            )
        }
    }

    /// The durable consumer through which a miner's publishers read that miner's results.
    pub fn result_consumer(&self, miner: MinerId) -> pull::Config {
        pull::Config {
            durable_name: Some(names::result_consumer(miner)),
            description: Some(format!("results of miner {miner}")),
            filter_subject: names::result_filter(miner),
            ack_policy: AckPolicy::Explicit,
            // Short, so that a result held by a publisher that died goes to another soon; the
            // handling publisher sends progress acks (`RESULT_PROGRESS`).
            ack_wait: RESULT_ACK_WAIT,
            deliver_policy: DeliverPolicy::All,
            replay_policy: ReplayPolicy::Instant,
            max_deliver: -1,
            max_ack_pending: 1000,
            ..Default::default()
        }
    }

    pub fn dlq_stream(&self) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: self.dlq_max_age,
            max_bytes: HISTORY_BYTES,
            max_consumers: HISTORY_CONSUMERS,
            // A dead letter carries the whole task plus its reason headers.
            max_message_size: MAX_MESSAGE_BYTES as i32 * 2,
            ..self.stream(
                names::DLQ_STREAM.to_string(),
                "mesh tasks that failed for good, with their reason".into(),
                names::DLQ_SUBJECTS.to_string(),
            )
        }
    }

    /// A key-value bucket as the stream that backs it (what `nats kv add` would make).
    fn bucket(
        &self,
        name: &str,
        description: &str,
        history: i64,
        max_age: Duration,
        max_bytes: i64,
    ) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::New,
            max_messages_per_subject: history,
            max_age,
            max_bytes,
            max_consumers: WATCH_CONSUMERS,
            // Watches and key listings are ephemeral; no consumer outlives its client long.
            consumer_limits: Some(ConsumerLimits {
                inactive_threshold: BUCKET_CONSUMER_IDLE,
                max_ack_pending: 0,
            }),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            duplicate_window: max_age
                .min(Duration::from_secs(120))
                .max(Duration::from_secs(1)),
            ..self.stream(
                format!("KV_{name}"),
                description.to_string(),
                format!("$KV.{name}.>"),
            )
        }
    }

    pub fn sectors_bucket(&self) -> StreamConfig {
        self.bucket(
            names::SECTORS_BUCKET,
            "mesh sector state per <miner>.<sector>",
            5,
            Duration::ZERO,
            SECTORS_BYTES,
        )
    }

    pub fn workers_bucket(&self) -> StreamConfig {
        self.bucket(
            names::WORKERS_BUCKET,
            "mesh live workers, kept by heartbeats",
            1,
            self.worker_ttl,
            SMALL_BUCKET_BYTES,
        )
    }

    pub fn miners_bucket(&self) -> StreamConfig {
        self.bucket(
            names::MINERS_BUCKET,
            "mesh miners sharing the pool, with their weights",
            1,
            Duration::ZERO,
            SMALL_BUCKET_BYTES,
        )
    }

    pub fn drain_bucket(&self) -> StreamConfig {
        self.bucket(
            names::DRAIN_BUCKET,
            "mesh drain marks per worker, set by the autoscaler",
            1,
            Duration::ZERO,
            SMALL_BUCKET_BYTES,
        )
    }

    pub fn leases_bucket(&self) -> StreamConfig {
        self.bucket(
            names::LEASES_BUCKET,
            "mesh autoscaler leases: which autoscaler sizes each group",
            1,
            Duration::ZERO,
            SMALL_BUCKET_BYTES,
        )
    }

    /// Entries expire a week after their last write: a deferred task's entry goes when the
    /// task ends, and one left behind (its stream purged meanwhile) must not stay for ever.
    pub fn deferred_bucket(&self) -> StreamConfig {
        self.bucket(
            names::DEFERRED_BUCKET,
            "mesh tasks left by workers for a newer version: deliveries that were no attempts",
            1,
            DEFERRED_TTL,
            SMALL_BUCKET_BYTES,
        )
    }

    /// Every stream of the topology.
    pub fn streams(&self) -> Vec<StreamConfig> {
        let mut out = Vec::new();
        for &size in &self.sizes {
            for phase in Phase::ALL {
                out.push(self.task_stream(phase, size));
            }
        }
        out.extend([
            self.held_stream(),
            self.result_stream(),
            self.dlq_stream(),
            self.sectors_bucket(),
            self.workers_bucket(),
            self.miners_bucket(),
            self.drain_bucket(),
            self.leases_bucket(),
            self.deferred_bucket(),
        ]);
        out
    }

    /// Creates or updates every stream, consumer and bucket, and the consumers of `miners`.
    /// Safe to run any number of times.
    pub async fn ensure(
        &self,
        broker: &Broker,
        miners: &[MinerId],
    ) -> Result<Vec<String>, BrokerError> {
        let js = broker.js();
        let mut made = Vec::new();
        for config in self.streams() {
            let name = config.name.clone();
            js.create_or_update_stream(config).await.map_err(|e| {
                use async_nats::jetstream::ErrorCode;
                use async_nats::jetstream::context::CreateStreamErrorKind;
                match e.kind() {
                    CreateStreamErrorKind::JetStream(err)
                        if err.error_code() == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED =>
                    {
                        BrokerError::api(
                            format!("--replicas {}", self.replicas),
                            "the server is not part of a JetStream cluster: use --replicas 1, \
                             or run 3 or more clustered servers (see nats/cluster/)",
                        )
                    }
                    _ => BrokerError::api(format!("create stream {name}"), e),
                }
            })?;
            made.push(format!("stream {name}"));
        }
        made.extend(self.ensure_consumers(broker, miners).await?);
        Ok(made)
    }

    /// Removes the shared consumer of older versions from each task stream, makes the task
    /// consumers (every phase, size and class) and the result consumer of each of `miners`,
    /// which a miner's role may not create itself, and gives the task consumers made earlier
    /// this topology's ack wait.
    async fn ensure_consumers(
        &self,
        broker: &Broker,
        miners: &[MinerId],
    ) -> Result<Vec<String>, BrokerError> {
        use futures::TryStreamExt;
        let js = broker.js();
        let mut made = Vec::new();
        // One line per miner, and one for the consumers of others whose ack wait was set: a
        // line per consumer would be 60 per miner at five sizes.
        let mut per_miner: BTreeMap<MinerId, usize> = BTreeMap::new();
        let mut others = 0;
        for &size in &self.sizes {
            for phase in Phase::ALL {
                let stream = names::task_stream(phase, size);
                if js
                    .delete_consumer_from_stream(LEGACY_TASK_CONSUMER, stream.as_str())
                    .await
                    .is_ok()
                {
                    made.push(format!(
                        "removed the shared consumer {stream}/{LEGACY_TASK_CONSUMER} (consumers \
                         are per miner now)"
                    ));
                }
                let mut configs: Vec<pull::Config> = Vec::new();
                for &miner in miners {
                    for class in TaskClass::ALL {
                        configs.push(self.task_consumer(phase, size, miner, class));
                    }
                }
                let existing: Vec<_> = broker
                    .stream(&stream)
                    .await?
                    .consumers()
                    .try_collect()
                    .await
                    .map_err(|e| BrokerError::api(format!("list consumers of {stream}"), e))?;
                for info in existing {
                    let known = configs
                        .iter()
                        .any(|c| c.durable_name == info.config.durable_name);
                    if known || !info.name.starts_with("workers-") {
                        continue;
                    }
                    // A push consumer of that name is not the mesh's: leave it to the operator.
                    if let Ok(config) = pull::Config::try_from_consumer_config(info.config) {
                        configs.push(pull::Config {
                            ack_wait: self.ack_wait,
                            ..config
                        });
                    }
                }
                for (n, config) in configs.into_iter().enumerate() {
                    let name = config.durable_name.clone().unwrap_or_default();
                    js.create_consumer_on_stream(config, stream.as_str())
                        .await
                        .map_err(|e| {
                            BrokerError::api(format!("create consumer {name} on {stream}"), e)
                        })?;
                    match miners.get(n / TaskClass::ALL.len()) {
                        Some(&miner) => *per_miner.entry(miner).or_default() += 1,
                        None => others += 1,
                    }
                }
            }
        }
        for &miner in miners {
            let config = self.result_consumer(miner);
            let name = names::result_consumer(miner);
            js.create_consumer_on_stream(config, names::RESULT_STREAM)
                .await
                .map_err(|e| {
                    BrokerError::api(
                        format!("create consumer {name} on {}", names::RESULT_STREAM),
                        e,
                    )
                })?;
            made.push(format!(
                "consumers of {miner}: {} task consumers (every phase, size and class) and \
                 {}/{name}",
                per_miner.get(&miner).copied().unwrap_or_default(),
                names::RESULT_STREAM,
            ));
        }
        if others > 0 {
            made.push(format!(
                "the ack wait of {others} task consumers of other miners set to {}",
                humantime::format_duration(self.ack_wait)
            ));
        }
        Ok(made)
    }

    /// Writes the topology as JSON files that `nats stream add --config FILE` and
    /// `nats consumer add STREAM --config FILE` accept, into `dir`.
    pub fn export(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let streams_dir = dir.join("streams");
        let consumers_dir = dir.join("consumers");
        std::fs::create_dir_all(&streams_dir)?;
        std::fs::create_dir_all(&consumers_dir)?;
        let mut written = Vec::new();
        for config in self.streams() {
            let file = format!("streams/{}.json", config.name);
            write_json(&dir.join(&file), &config)?;
            written.push(file);
        }
        // Publishers create these per miner and class on first use; one serves as the example.
        let example = self.task_consumer(
            Phase::PreCommit1,
            SectorSize::KiB2,
            "f01000".parse().expect("a miner id"),
            TaskClass::Cc,
        );
        let file = "consumers/MESH_TASK_PC1_2KIB.workers-f01000-cc.json".to_string();
        write_json(&dir.join(&file), &example)?;
        written.push(file);
        Ok(written)
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// Checks that the streams of the given phases and sizes, and the held, result and dead-letter
/// streams and the buckets, exist. Names the first thing missing and how to make it. Reads
/// stream names only: the info of a stream would list every subject in it, which a miner's
/// role is not allowed to see.
pub async fn check(
    broker: &Broker,
    phases: &[Phase],
    sizes: &[SectorSize],
) -> Result<(), BrokerError> {
    use futures::TryStreamExt;
    let existing: std::collections::HashSet<String> = broker
        .js()
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| BrokerError::api("list the streams", e))?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for &size in sizes {
        for &phase in phases {
            let name = names::task_stream(phase, size);
            wanted.push((name.clone(), format!("stream {name}")));
        }
    }
    for name in [names::HELD_STREAM, names::RESULT_STREAM, names::DLQ_STREAM] {
        wanted.push((name.to_string(), format!("stream {name}")));
    }
    for bucket in [
        names::SECTORS_BUCKET,
        names::WORKERS_BUCKET,
        names::MINERS_BUCKET,
        names::DRAIN_BUCKET,
    ] {
        wanted.push((format!("KV_{bucket}"), format!("key-value bucket {bucket}")));
    }
    match wanted
        .into_iter()
        .find(|(name, _)| !existing.contains(name))
    {
        Some((_, what)) => Err(BrokerError::Missing { what }),
        None => Ok(()),
    }
}

/// Creates (or updates) worker `worker`'s consumer of the held stream, with the ack wait `init`
/// gave that stream, and returns it.
pub async fn ensure_held_consumer(
    broker: &Broker,
    worker: &WorkerId,
) -> Result<async_nats::jetstream::consumer::PullConsumer, BrokerError> {
    let stream = broker.stream(names::HELD_STREAM).await?;
    let default = Topology::default();
    let topology = Topology {
        ack_wait: stored_ack_wait(&stream.cached_info().config).unwrap_or(default.ack_wait),
        ..default
    };
    stream
        .create_consumer(topology.held_consumer(worker))
        .await
        .map_err(|e| {
            BrokerError::api(
                format!(
                    "create consumer {} on {}",
                    names::held_consumer(worker),
                    names::HELD_STREAM
                ),
                e,
            )
        })
}

/// Makes sure the consumer through which workers take `miner`'s tasks of `class` from the task
/// stream of `phase` and `size` exists. `init --miners` makes them; a publisher whose role may
/// (no roles configured) creates a missing one, with the ack wait `init` gave the stream.
/// Publishers call it before they publish the first such task; it is safe to call any number of
/// times.
pub async fn ensure_task_consumer(
    broker: &Broker,
    phase: Phase,
    size: SectorSize,
    miner: MinerId,
    class: TaskClass,
) -> Result<(), BrokerError> {
    let name = names::task_stream(phase, size);
    let consumer = names::task_consumer(miner, class);
    if find_consumer(broker, &name, &consumer).await?.is_some() {
        return Ok(());
    }
    let stream = broker
        .stream(&name)
        .await
        .map_err(|e| missing_consumer(&name, &consumer, miner, e))?;
    let default = Topology::default();
    let topology = Topology {
        ack_wait: stored_ack_wait(&stream.cached_info().config).unwrap_or(default.ack_wait),
        ..default
    };
    broker
        .js()
        .create_consumer_on_stream(
            topology.task_consumer(phase, size, miner, class),
            name.as_str(),
        )
        .await
        .map_err(|e| missing_consumer(&name, &consumer, miner, e))?;
    Ok(())
}

/// The result consumer of `miner`, made by `init --miners` (or here, when no roles are
/// configured and it is missing).
pub async fn result_consumer(
    broker: &Broker,
    miner: MinerId,
) -> Result<async_nats::jetstream::consumer::PullConsumer, BrokerError> {
    let stream = names::RESULT_STREAM;
    let consumer = names::result_consumer(miner);
    let wanted = Topology::default().result_consumer(miner);
    if let Some(mut found) = find_consumer(broker, stream, &consumer).await? {
        // One made by an older release waits longer before a dead publisher's results go on.
        if found.cached_info().config.ack_wait != wanted.ack_wait {
            match broker.js().create_consumer_on_stream(wanted, stream).await {
                Ok(updated) => found = updated,
                Err(e) => tracing::warn!(
                    %consumer,
                    error = %e,
                    "cannot set the result consumer's ack wait to {}; run `mesh-publisher init \
                     --miners {miner}` with the admin user",
                    humantime::format_duration(RESULT_ACK_WAIT)
                ),
            }
        }
        return Ok(found);
    }
    broker
        .js()
        .create_consumer_on_stream(wanted, stream)
        .await
        .map_err(|e| missing_consumer(stream, &consumer, miner, e))
}

/// Consumer `consumer` of stream `stream`, or `None` when it does not exist (a role with
/// consumer info only).
async fn find_consumer(
    broker: &Broker,
    stream: &str,
    consumer: &str,
) -> Result<Option<async_nats::jetstream::consumer::PullConsumer>, BrokerError> {
    match broker.js().get_consumer_from_stream(consumer, stream).await {
        Ok(found) => Ok(Some(found)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(BrokerError::api(
            format!("read consumer {consumer} of {stream}"),
            e,
        )),
    }
}

fn not_found(e: &async_nats::jetstream::stream::ConsumerError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::ConsumerErrorKind;
    matches!(e.kind(), ConsumerErrorKind::JetStream(j)
        if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND
            || j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// A consumer a miner's role cannot create: `init --miners` makes it.
fn missing_consumer(
    stream: &str,
    consumer: &str,
    miner: MinerId,
    e: impl std::fmt::Display,
) -> BrokerError {
    BrokerError::api(
        format!(
            "consumer {consumer} of {stream} is missing and could not be made (miners may not \
             create consumers: run `mesh-publisher init --miners {miner}` as admin)"
        ),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_nats_files_match_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let written = Topology::default().export(dir.path()).unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats");
        for file in written {
            let fresh = std::fs::read_to_string(dir.path().join(&file)).unwrap();
            let old = std::fs::read_to_string(committed.join(&file)).unwrap_or_default();
            assert_eq!(
                fresh, old,
                "nats/{file} is stale: run `mesh-publisher init --export nats` and commit it"
            );
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let t = Topology {
            replicas: 7,
            ..Topology::default()
        };
        assert!(t.validate().unwrap_err().contains("--replicas 7"));
        let t = Topology {
            ack_wait: Duration::from_millis(500),
            ..Topology::default()
        };
        assert!(t.validate().unwrap_err().contains("--ack-wait 500ms"));
    }
}
