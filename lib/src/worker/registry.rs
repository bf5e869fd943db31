//! The worker's own entry in the `mesh-workers` bucket (a `broker::workers::WorkerRecord`): what
//! it serves and runs, refreshed by a heartbeat well inside the bucket's TTL, published at once
//! when a task is taken or ends, and deleted at a clean exit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::broker::workers::{RunningTask, WorkerRecord};
use crate::resources::Usage;
use crate::sector::TaskId;

/// The heartbeat when the registry's TTL cannot be read: a third of `init`'s default TTL.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(10);

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

    /// Adds a task that began to run and publishes the record at once (with what the take
    /// claimed: see [`Registry::hold`]).
    pub fn started(&self, task: RunningTask) {
        self.running
            .lock()
            .expect("registry lock")
            .insert(task.task.clone(), task);
        self.publish_now();
    }

    /// Removes a task that ended; the record goes out with the claim given back
    /// ([`Registry::set_usage`]), one publish for both.
    pub fn finished(&self, task: &TaskId) {
        self.running.lock().expect("registry lock").remove(task);
    }

    /// Sets what running tasks hold after a take, without publishing: the task's start (or,
    /// when it is dropped before it runs, the claim given back) publishes it, so that a task
    /// costs two registry writes, not four.
    pub fn hold(&self, usage: Usage) {
        self.record.lock().expect("registry lock").usage = usage;
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

    /// Publishes the record every `every` (by default a third of the bucket's TTL) until
    /// `stop`, then deletes it.
    pub async fn heartbeat(
        self,
        bucket: kv::Store,
        every: Option<Duration>,
        stop: CancellationToken,
    ) {
        let key = self.record.lock().expect("registry lock").id.0.clone();
        let every = match every {
            Some(every) => every,
            None => match bucket.status().await {
                Ok(status) if !status.max_age().is_zero() => status.max_age() / 3,
                Ok(_) => FALLBACK_HEARTBEAT,
                Err(e) => {
                    warn!(error = %e, every = ?FALLBACK_HEARTBEAT, "could not read the registry's TTL; heartbeating at the default");
                    FALLBACK_HEARTBEAT
                }
            },
        };
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
