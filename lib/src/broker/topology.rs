//! The streams, consumers and buckets of the mesh: their definitions (also exported as the JSON
//! files in `nats/`), idempotent creation (`mesh-publisher init`) and the check every process
//! makes at start.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType,
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
    /// How long a worker's registry entry lives without a heartbeat.
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
            worker_ttl: Duration::from_secs(15),
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
    /// duplicate window, the message size limit and no count or byte limits.
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
            // Never drop a queued task to make room: refuse the publish instead.
            discard: DiscardPolicy::New,
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
            max_age: HELD_MAX_AGE,
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
            ack_wait: Duration::from_secs(60),
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
    ) -> StreamConfig {
        StreamConfig {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::New,
            max_messages_per_subject: history,
            max_age,
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
        )
    }

    pub fn workers_bucket(&self) -> StreamConfig {
        self.bucket(
            names::WORKERS_BUCKET,
            "mesh live workers, kept by heartbeats",
            1,
            self.worker_ttl,
        )
    }

    pub fn miners_bucket(&self) -> StreamConfig {
        self.bucket(
            names::MINERS_BUCKET,
            "mesh miners sharing the pool, with their weights",
            1,
            Duration::ZERO,
        )
    }

    pub fn drain_bucket(&self) -> StreamConfig {
        self.bucket(
            names::DRAIN_BUCKET,
            "mesh drain marks per worker, set by the autoscaler",
            1,
            Duration::ZERO,
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
        ]);
        out
    }

    /// Creates or updates every stream, consumer and bucket. Safe to run any number of times.
    pub async fn ensure(&self, broker: &Broker) -> Result<Vec<String>, BrokerError> {
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
            }
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

/// Checks that the streams and consumers of the given phases and sizes, and the result stream,
/// dead-letter stream and buckets, exist. Names the first thing missing and how to make it.
pub async fn check(
    broker: &Broker,
    phases: &[Phase],
    sizes: &[SectorSize],
) -> Result<(), BrokerError> {
    // Collected before the first await: an iterator of closures held across it would keep the
    // future from being `Send` (and so from `tokio::spawn`).
    let mut streams: Vec<String> = Vec::new();
    for &size in sizes {
        streams.extend(phases.iter().map(|&phase| names::task_stream(phase, size)));
    }
    for stream in streams.into_iter().chain([
        names::HELD_STREAM.to_string(),
        names::RESULT_STREAM.to_string(),
        names::DLQ_STREAM.to_string(),
    ]) {
        broker.stream(&stream).await?;
    }
    broker.bucket(names::SECTORS_BUCKET).await?;
    broker.bucket(names::WORKERS_BUCKET).await?;
    broker.bucket(names::MINERS_BUCKET).await?;
    broker.bucket(names::DRAIN_BUCKET).await?;
    Ok(())
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

/// Creates (or updates) the consumer through which workers take `miner`'s tasks of `class` from
/// the task stream of `phase` and `size`, with the ack wait `init` gave that stream. Publishers
/// call it before they publish the first such task; it is safe to call any number of times.
pub async fn ensure_task_consumer(
    broker: &Broker,
    phase: Phase,
    size: SectorSize,
    miner: MinerId,
    class: TaskClass,
) -> Result<(), BrokerError> {
    let name = names::task_stream(phase, size);
    let stream = broker.stream(&name).await?;
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
        .map_err(|e| {
            BrokerError::api(
                format!(
                    "create consumer {} on {name}",
                    names::task_consumer(miner, class)
                ),
                e,
            )
        })?;
    Ok(())
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
