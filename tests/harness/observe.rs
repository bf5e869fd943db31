//! What the mesh did, read from what it keeps rather than from log text: every attempt's result
//! in the `MESH_RESULT` stream (kept by limits, so a test reads them all after the publisher has
//! taken them), and each worker's own record in the `mesh-workers` bucket (what it runs and
//! holds now, and every version it published while a [`RegistryLog`] watched).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use mesh::broker::Broker;
use mesh::broker::workers::{RunningTask, WorkerRecord};
use mesh::model::{MinerId, SectorNum};
use mesh::phases::Phase;
use mesh::sector::{Outcome, TaskResult};

/// One attempt of a task that reached its end, from its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub task: String,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
    pub attempt: u32,
    pub worker: String,
    /// When it began to run, holding its threads: the end less run and upload.
    pub start_ms: u64,
    pub end_ms: u64,
    pub done: bool,
    /// The objects it sent to the store, by name (`cache/p_aux`, `sealed`, …).
    pub outputs: Vec<String>,
    /// It found the sector's data gone from the worker that was to hold it.
    pub lost: bool,
}

impl Run {
    fn from_result(r: TaskResult) -> Run {
        let t = r.timings;
        Run {
            task: r.task.0,
            miner: r.miner,
            sector: r.sector,
            phase: r.phase,
            attempt: r.attempt,
            worker: r.worker.0,
            // From the moment it held its threads (after its downloads) to its end.
            start_ms: r.finished_ms.saturating_sub(t.run_ms + t.upload_ms),
            end_ms: r.finished_ms,
            done: matches!(r.outcome, Outcome::Done { .. }),
            outputs: match &r.outcome {
                Outcome::Done { outputs, .. } => outputs.iter().map(|o| o.name.clone()).collect(),
                _ => Vec::new(),
            },
            lost: matches!(r.outcome, Outcome::Lost { .. }),
        }
    }
}

/// Every result published so far, as runs in the order they were published.
pub async fn runs(broker: &Broker) -> Vec<Run> {
    let stream = broker
        .stream(mesh::names::RESULT_STREAM)
        .await
        .expect("the result stream");
    let state = stream.get_info().await.expect("result stream info").state;
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue; // a gap: deleted by limits
        };
        let result: TaskResult = mesh::model::decode(&msg.payload).expect("a result decodes");
        out.push(Run::from_result(result));
    }
    out
}

/// Waits until a result matches `done`, and returns that run.
pub async fn wait_run(
    broker: &Broker,
    what: &str,
    deadline: std::time::Duration,
    done: impl Fn(&Run) -> bool,
) -> Run {
    crate::wait_for(what, deadline, || async {
        runs(broker).await.into_iter().find(|r| done(r))
    })
    .await
}

/// The runs of `worker`.
pub fn on<'a>(runs: &'a [Run], worker: &'a str) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter().filter(move |r| r.worker == worker)
}

/// What `worker` runs now by its registry record (nothing when it has none).
pub async fn running(broker: &Broker, worker: &str) -> Vec<RunningTask> {
    mesh::broker::workers::list(broker)
        .await
        .expect("list the worker registry")
        .into_iter()
        .find(|r| r.id.0 == worker)
        .map(|r| r.running)
        .unwrap_or_default()
}

/// The worker whose registry record shows a task of `phase` running as delivery `attempt` (a
/// killed worker's record stays until the bucket's TTL ends it, showing what it ran then).
pub async fn taker(broker: &Broker, phase: Phase, attempt: u32) -> Option<String> {
    mesh::broker::workers::list(broker)
        .await
        .expect("list the worker registry")
        .into_iter()
        .find(|r| {
            r.running
                .iter()
                .any(|t| t.phase == phase && t.attempt == attempt)
        })
        .map(|r| r.id.0)
}

/// Every version of every worker's record published while it watched (a worker publishes at
/// once when a task is taken or ends, and on its heartbeat).
#[derive(Clone)]
pub struct RegistryLog {
    records: Arc<Mutex<Vec<WorkerRecord>>>,
    _watch: Arc<tokio::task::JoinHandle<()>>,
}

impl RegistryLog {
    pub async fn watch(broker: &Broker) -> RegistryLog {
        let bucket = broker
            .bucket(mesh::names::WORKERS_BUCKET)
            .await
            .expect("the workers bucket");
        let mut watch = bucket.watch_all().await.expect("watch the workers bucket");
        let records: Arc<Mutex<Vec<WorkerRecord>>> = Arc::default();
        let sink = records.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                if let Ok(record) = serde_json::from_slice::<WorkerRecord>(&entry.value) {
                    sink.lock().unwrap().push(record);
                }
            }
        });
        RegistryLog {
            records,
            _watch: Arc::new(task),
        }
    }

    /// The versions of `worker`'s record seen so far, oldest first.
    pub fn of(&self, worker: &str) -> Vec<WorkerRecord> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.id.0 == worker)
            .cloned()
            .collect()
    }
}

impl Drop for RegistryLog {
    fn drop(&mut self) {
        if Arc::strong_count(&self._watch) == 1 {
            self._watch.abort();
        }
    }
}
