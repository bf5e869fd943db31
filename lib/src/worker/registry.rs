//! The worker's entry in the `mesh-workers` bucket: what it serves and runs, refreshed by a
//! heartbeat well inside the bucket's TTL and deleted at a clean exit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::broker::{Broker, BrokerError};
use crate::model::{MinerId, SectorNum, SectorSize, WorkerId};
use crate::phases::Phase;
use crate::resources::{Machine, Usage};
use crate::sector::TaskId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    pub task: TaskId,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
    pub size: SectorSize,
    pub attempt: u32,
    pub since_ms: u64,
}

/// A live worker as others see it (JSON, so `nats kv get mesh-workers <id>` is readable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub pid: u32,
    pub version: String,
    /// The machine as the worker schedules on it (detected, or declared by its operator).
    pub machine: Machine,
    pub phases: Vec<Phase>,
    pub sizes: Vec<SectorSize>,
    /// Cap on tasks at once; `None` when the resource table alone decides.
    pub slots: Option<u32>,
    /// `proofs`, or `synthetic` for a simulation worker.
    #[serde(default)]
    pub executor: String,
    /// What the running tasks hold, by the resource table.
    pub usage: Usage,
    pub running: Vec<RunningTask>,
    /// Not taking tasks: shutting down, or held by the autoscaler's drain mark.
    pub draining: bool,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
}

impl WorkerRecord {
    /// Tasks this worker holds: taken (counted at once) or running (listed once started).
    pub fn busy(&self) -> usize {
        self.running.len().max(self.usage.tasks as usize)
    }
}

/// Shared view of what the worker runs, updated by attempts and published by the heartbeat.
#[derive(Clone, Debug)]
pub struct Registry {
    record: Arc<Mutex<WorkerRecord>>,
    running: Arc<Mutex<BTreeMap<TaskId, RunningTask>>>,
    /// Rung to publish the record before the next heartbeat is due.
    publish: Arc<tokio::sync::Notify>,
}

impl Registry {
    pub fn new(record: WorkerRecord) -> Self {
        Registry {
            record: Arc::new(Mutex::new(record)),
            running: Arc::default(),
            publish: Arc::default(),
        }
    }

    pub fn started(&self, task: RunningTask) {
        self.running
            .lock()
            .expect("registry lock")
            .insert(task.task.clone(), task);
    }

    pub fn finished(&self, task: &TaskId) {
        self.running.lock().expect("registry lock").remove(task);
    }

    /// Sets what running tasks hold and publishes the record at once, so that others (the
    /// autoscaler, `mesh-publisher workers`) see a task taken or ended without waiting for the
    /// heartbeat.
    pub fn set_usage(&self, usage: Usage) {
        self.record.lock().expect("registry lock").usage = usage;
        self.publish_now();
    }

    /// Sets whether the worker takes tasks and publishes the record at once, so that the
    /// autoscaler sees a drain begin or end without waiting for the heartbeat.
    pub fn set_draining(&self, draining: bool) {
        self.record.lock().expect("registry lock").draining = draining;
        self.publish_now();
    }

    /// Publishes the record now rather than at the next heartbeat.
    fn publish_now(&self) {
        self.publish.notify_one();
    }

    pub fn snapshot(&self) -> WorkerRecord {
        let mut record = self.record.lock().expect("registry lock").clone();
        record.running = self
            .running
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        record.heartbeat_ms = crate::now_ms();
        record
    }

    /// Publishes the record every `every` until `stop`, then deletes it.
    pub async fn heartbeat(self, bucket: kv::Store, every: Duration, stop: CancellationToken) {
        let key = self.record.lock().expect("registry lock").id.0.clone();
        loop {
            let body = serde_json::to_vec(&self.snapshot()).expect("worker record serializes");
            if let Err(e) = bucket.put(&key, body.into()).await {
                warn!(error = %e, "worker heartbeat not stored");
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.publish.notified() => {}
                () = stop.cancelled() => break,
            }
        }
        if let Err(e) = bucket.delete(&key).await {
            warn!(error = %e, "could not remove worker from the registry");
        }
    }
}

/// Every live worker in the registry, by id. Entries that do not decode (another version) are
/// skipped.
pub async fn list(broker: &Broker) -> Result<Vec<WorkerRecord>, BrokerError> {
    let mut out: Vec<WorkerRecord> = broker
        .json_entries(crate::names::WORKERS_BUCKET)
        .await?
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
