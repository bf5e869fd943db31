//! Drain marks: the autoscaler's way of telling a worker to stop taking tasks before its
//! instance is removed, and of taking that back when demand returns first; and an operator's
//! (`mesh-publisher worker drain`/`resume`), which no autoscaler lifts. A mark is a key in the
//! `mesh-drain` bucket named by the worker id; the worker follows its own key, and says in its
//! registry record (`draining`) when it has stopped taking tasks.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError};
use crate::names;

/// Why and since when a worker drains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMark {
    /// The autoscaler group that drains the worker; empty for an operator's mark.
    pub group: String,
    pub since_ms: u64,
    /// An operator's reason (`worker drain --reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DrainMark {
    /// An operator's mark: no group, so no autoscaler lifts it.
    pub fn by_hand(reason: &str, now_ms: u64) -> DrainMark {
        DrainMark {
            group: String::new(),
            since_ms: now_ms,
            reason: Some(reason.to_string()),
        }
    }

    pub fn is_by_hand(&self) -> bool {
        self.group.is_empty()
    }
}

/// Every drain mark, by worker id.
pub async fn marks(broker: &Broker) -> Result<BTreeMap<String, DrainMark>, BrokerError> {
    Ok(broker
        .json_entries(names::DRAIN_BUCKET)
        .await?
        .into_iter()
        .collect())
}

pub async fn mark(bucket: &kv::Store, worker: &str, mark: &DrainMark) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(mark).expect("a drain mark serializes");
    bucket
        .put(worker, body.into())
        .await
        .map_err(|e| BrokerError::api(format!("mark {worker} draining"), e))?;
    Ok(())
}

pub async fn unmark(bucket: &kv::Store, worker: &str) -> Result<(), BrokerError> {
    bucket
        .purge(worker)
        .await
        .map_err(|e| BrokerError::api(format!("lift the drain of {worker}"), e))
}

/// Follows `worker`'s drain mark until `stop`: `held` is true while a mark is set.
pub async fn follow(
    bucket: kv::Store,
    worker: String,
    held: watch::Sender<bool>,
    stop: CancellationToken,
) {
    super::follow::follow(
        bucket,
        worker,
        "this worker's drain mark",
        stop,
        move |entry| {
            held.send_replace(entry.operation == kv::Operation::Put);
        },
    )
    .await;
}
