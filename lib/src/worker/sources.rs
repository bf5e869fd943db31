//! Where a worker takes tasks from: one source per task stream it serves (phase and size), each
//! with the per-miner, per-class consumers that publishers create. Taking a task reads what
//! waits and runs per miner straight from JetStream (the stream's subject counts, then the
//! consumers of the miners that have tasks), orders the miners with [`super::pick`], and
//! fetches one message without waiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{FromConsumer, PullConsumer, pull};
use futures::StreamExt;
use serde::Deserialize;
use tracing::{debug, warn};

use super::pick::{self, MinerLoad, Queue};
use crate::broker::miners::Weights;
use crate::broker::topology;
use crate::broker::{Broker, BrokerError};
use crate::model::{MinerId, SectorSize, TaskClass};
use crate::names;
use crate::phases::Phase;
use crate::resources::Claim;

/// How long one fetch may take. A pull request written just before the connection went away is
/// never answered, and a fetch without expiry would wait for that answer forever (a worker stuck
/// after a nats-server restart, its held sectors with it). A message the server hands out after
/// the fetch gave up comes back after the ack wait.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches one message if one waits, without waiting for more; a fetch that fails is logged
/// and finds nothing.
async fn fetch_one(consumer: &PullConsumer) -> Option<jetstream::Message> {
    let fetch = async {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        batch.next().await.transpose().map_err(|e| e.to_string())
    };
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {FETCH_TIMEOUT:?}")));
    fetched.unwrap_or_else(|e| {
        let info = consumer.cached_info();
        warn!(stream = %info.stream_name, consumer = %info.name, error = %e, "pull failed");
        None
    })
}

/// What [`Source::counts`] reads of a STREAM.INFO reply: a page of the per-subject counts (all
/// of them unless `total` says there are more), or the server's error.
#[derive(Debug, Deserialize)]
struct SubjectCounts {
    #[serde(default)]
    total: usize,
    state: Option<SubjectsState>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct SubjectsState {
    #[serde(default)]
    subjects: HashMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    description: String,
}

/// A task stream's messages per miner and class (waiting and delivered alike).
pub(super) type Counts = BTreeMap<(MinerId, TaskClass), u64>;

/// One task stream a worker serves.
pub(super) struct Source {
    pub phase: Phase,
    pub size: SectorSize,
    /// What one of its tasks holds on this worker.
    pub claim: Claim,
    name: String,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    consumers: HashMap<(MinerId, TaskClass), PullConsumer>,
    /// Subjects with tasks but no consumer, already warned about.
    warned: HashSet<(MinerId, TaskClass)>,
}

impl Source {
    pub async fn open(
        broker: &Broker,
        phase: Phase,
        size: SectorSize,
        claim: Claim,
    ) -> Result<Source, BrokerError> {
        let name = names::task_stream(phase, size);
        let stream = broker.stream(&name).await?;
        let consumers = task_consumers(&stream, broker.js()).await;
        Ok(Source {
            phase,
            size,
            claim,
            name,
            js: broker.js().clone(),
            stream,
            consumers,
            warned: HashSet::new(),
        })
    }

    pub fn kind(&self) -> (Phase, SectorSize) {
        (self.phase, self.size)
    }

    /// The ack wait `init` gave the stream's consumers, when its metadata says.
    pub fn ack_wait(&self) -> Option<Duration> {
        topology::stored_ack_wait(&self.stream.cached_info().config)
    }

    /// Takes one task if any miner has one waiting, the miner with the lowest weighted share
    /// first, given what [`Source::counts`] read. With `probe`, also asks consumers with nothing
    /// waiting but tasks delivered, where redeliveries come from.
    pub async fn take(
        &mut self,
        counts: Result<Counts, BrokerError>,
        weights: &Weights,
        probe: bool,
    ) -> Option<jetstream::Message> {
        let counts = match counts {
            Ok(counts) => counts,
            Err(e) => {
                warn!(stream = %self.name, error = %e, "cannot read the stream");
                return None;
            }
        };
        let first = counts.keys().next()?.0;
        let order = if !probe && counts.keys().all(|&(miner, _)| miner == first) {
            // One miner has tasks here: nothing to share, so no need to ask how much runs.
            TaskClass::ALL
                .into_iter()
                .map(|class| (first, class))
                .filter(|key| counts.contains_key(key))
                .collect()
        } else {
            let loads = self.loads(&counts, weights).await;
            pick::order(&loads, probe)
        };
        for (miner, class) in order {
            let Some(consumer) = self.consumer(miner, class).await else {
                continue;
            };
            if let Some(msg) = fetch_one(consumer).await {
                return Some(msg);
            }
        }
        None
    }

    /// Takes one task of `miner`'s `class`, if one waits, from a consumer listed at the start or
    /// opened since: what a bell naming them asks (a bell is a hint from a publisher; one
    /// naming a consumer this worker has not opened is answered by a look instead).
    pub async fn take_named(&self, miner: MinerId, class: TaskClass) -> Option<jetstream::Message> {
        fetch_one(self.consumers.get(&(miner, class))?).await
    }

    /// Messages in the stream per miner and class (waiting and delivered alike), from the
    /// stream's per-subject counts: one STREAM.INFO, read here rather than through async-nats's
    /// `info_with_subjects`, which asks for a second page even when the first holds every
    /// subject (a round trip more on every take that finds a task).
    pub async fn counts(&self) -> Result<Counts, BrokerError> {
        let what = || format!("read stream {}", self.name);
        let request = format!("STREAM.INFO.{}", self.name);
        let filter = names::task_stream_subjects(self.phase, self.size);
        let mut counts = BTreeMap::new();
        let mut offset = 0;
        loop {
            let body = serde_json::json!({ "subjects_filter": filter, "offset": offset });
            let reply: SubjectCounts = self
                .js
                .request(request.clone(), &body)
                .await
                .map_err(|e| BrokerError::api(what(), e))?;
            if let Some(error) = reply.error {
                return Err(BrokerError::api(what(), error.description));
            }
            let subjects = reply.state.map(|s| s.subjects).unwrap_or_default();
            if subjects.is_empty() {
                break;
            }
            offset += subjects.len();
            for (subject, count) in subjects {
                if let Some((_, _, miner, class)) = names::parse_task_subject(&subject)
                    && count > 0
                {
                    counts.insert((miner, class), count);
                }
            }
            if offset >= reply.total {
                break;
            }
        }
        Ok(counts)
    }

    /// What waits and runs per miner, from the consumers of the miners that have tasks.
    async fn loads(&mut self, counts: &Counts, weights: &Weights) -> Vec<MinerLoad> {
        let mut loads: BTreeMap<MinerId, MinerLoad> = BTreeMap::new();
        for &(miner, class) in counts.keys() {
            let Some(consumer) = self.consumer(miner, class).await else {
                continue;
            };
            let info = match consumer.info().await {
                Ok(info) => info.clone(),
                Err(e) => {
                    warn!(stream = %self.name, error = %e, "cannot read a consumer");
                    self.consumers.remove(&(miner, class));
                    continue;
                }
            };
            let load = loads.entry(miner).or_insert(MinerLoad {
                miner,
                weight: weights.get(miner),
                deals: Queue::default(),
                cc: Queue::default(),
            });
            let queue = Queue {
                waiting: info.num_pending,
                running: info.num_ack_pending as u64,
            };
            match class {
                TaskClass::Deals => load.deals = queue,
                TaskClass::Cc => load.cc = queue,
            }
        }
        loads.into_values().collect()
    }

    /// The consumer of `miner`'s `class` tasks, opened once.
    async fn consumer(&mut self, miner: MinerId, class: TaskClass) -> Option<&mut PullConsumer> {
        let key = (miner, class);
        if !self.consumers.contains_key(&key) {
            let name = names::task_consumer(miner, class);
            match self
                .stream
                .get_consumer::<jetstream::consumer::pull::Config>(&name)
                .await
            {
                Ok(consumer) => {
                    self.consumers.insert(key, consumer);
                }
                Err(e) => {
                    if self.warned.insert(key) {
                        warn!(
                            stream = %self.name,
                            consumer = %name,
                            error = %e,
                            "{miner} has {class} tasks here but no consumer to take them from: \
                             start `mesh-publisher run --miner {miner}` once, it creates them"
                        );
                    }
                    return None;
                }
            }
        }
        self.consumers.get_mut(&key)
    }
}

/// The miners' task consumers a stream has now, from one listing (the rest are opened when a
/// look first finds their tasks): a bell that names a miner is answered by a fetch alone.
async fn task_consumers(
    stream: &jetstream::stream::Stream,
    js: &jetstream::Context,
) -> HashMap<(MinerId, TaskClass), PullConsumer> {
    let mut found = HashMap::new();
    let mut listing = stream.consumers();
    while let Some(info) = listing.next().await {
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                debug!(stream = %stream.cached_info().config.name, error = %e, "cannot list the stream's consumers; opening them as tasks come");
                break;
            }
        };
        let Some((_, _, miner, class)) = names::parse_task_subject(&info.config.filter_subject)
            .filter(|&(_, _, miner, class)| info.name == names::task_consumer(miner, class))
        else {
            continue;
        };
        if let Ok(config) = pull::Config::try_from_consumer_config(info.config.clone()) {
            found.insert((miner, class), PullConsumer::new(config, info, js.clone()));
        }
    }
    found
}

/// The tasks of the sectors this worker holds, from its own consumer of the held stream.
pub(super) struct HeldSource {
    consumer: PullConsumer,
}

impl HeldSource {
    pub async fn open(
        broker: &Broker,
        worker: &crate::model::WorkerId,
    ) -> Result<Self, BrokerError> {
        let consumer = topology::ensure_held_consumer(broker, worker).await?;
        Ok(HeldSource { consumer })
    }

    /// Tasks waiting to be taken (0 when the consumer cannot be read).
    pub async fn waiting(&mut self) -> u64 {
        match self.consumer.info().await {
            Ok(info) => info.num_pending,
            Err(e) => {
                warn!(stream = names::HELD_STREAM, error = %e, "cannot read the held consumer");
                0
            }
        }
    }

    /// Takes one task if one waits, with the phase and size its subject names.
    pub async fn take(&mut self) -> Option<(jetstream::Message, Phase, SectorSize)> {
        let msg = fetch_one(&self.consumer).await?;
        match names::parse_held_subject(&msg.subject) {
            Some((_, phase, size, _)) => Some((msg, phase, size)),
            None => {
                warn!(subject = %msg.subject, "a held task on a subject of no task; dropping it");
                let _ = msg.ack_with(jetstream::AckKind::Term).await;
                None
            }
        }
    }
}
