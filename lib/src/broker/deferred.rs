//! Tasks a worker leaves for another: a message version newer than it reads (a rolling upgrade
//! that reached the publishers first), or a task for the other executor. JetStream counts every
//! delivery, handing a task back included, so each such delivery is written down in the
//! `mesh-deferred` bucket under the message's stream and sequence (which a redelivery keeps,
//! and which need nothing of the body): the worker that runs the task counts its attempts as
//! the deliveries less the deferrals, and removes the entry when the task ends. The entry is
//! what `mesh-publisher status` shows as tasks waiting for an upgraded worker.
//!
//! Only the `version` and `id` fields of a newer body are read; both keep their meaning in
//! every version (`sector::MESSAGE_VERSION`).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::keys::{KeyError, Keys};
use crate::model::WorkerId;
use crate::names;
use crate::sector::message_version;

/// How long a task left for a newer worker waits before it is offered again.
pub const DEFER_DELAY: Duration = Duration::from_secs(5);
/// How long a worker that left a task for a newer one stops taking tasks of that phase and
/// size: the next ones are most likely as new.
pub const DEFER_PAUSE: Duration = Duration::from_secs(60);
/// Compare-and-set tries of one deferral before it is given up (and the delivery counts as an
/// attempt).
const WRITE_TRIES: u32 = 5;

/// One deferred task message, for operators (`nats kv get mesh-deferred <key>`) and `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferral {
    /// This entry's own format ([`message_version`] of its writer).
    pub version: u16,
    /// The task's message version, when the body says.
    pub task_version: Option<u16>,
    /// The task's id, when the body says.
    pub task: Option<String>,
    pub stream: String,
    pub sequence: u64,
    /// Deliveries that were deferrals, not attempts.
    pub deferrals: u32,
    /// The last worker that left it, and why.
    pub worker: WorkerId,
    pub reason: String,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// Where a delivered task message is kept: its stream and sequence, and its key,
/// `<miner>.<stream>.<sequence>` (`_` for the miner when the subject names none).
fn place(msg: &jetstream::Message) -> Option<(String, u64, String)> {
    let info = msg.info().ok()?;
    let miner = names::task_publisher(&msg.subject)
        .map(|m| m.to_string())
        .unwrap_or_else(|| "_".into());
    let key = format!("{miner}.{}.{}", info.stream, info.stream_sequence);
    Some((info.stream.to_string(), info.stream_sequence, key))
}

/// What a body newer than this worker reads still tells: its version and task id.
fn head(body: &[u8]) -> (Option<u16>, Option<String>) {
    #[derive(Deserialize)]
    struct Head {
        version: Option<u16>,
        id: Option<String>,
    }
    match crate::model::decode::<Head>(body) {
        Ok(head) => (head.version, head.id),
        Err(_) => (None, None),
    }
}

/// Counts one more deferral of `msg` (compare-and-set), then hands the message back after
/// [`DEFER_DELAY`]. When the count cannot be written, this delivery will count as an attempt.
pub async fn leave(keys: &Keys, msg: &jetstream::Message, worker: &WorkerId, reason: &str) {
    if let Err(e) = count_one(keys, msg, worker, reason).await {
        warn!(error = %e, "the task was left for another worker, but the deferral was not \
               recorded: this delivery counts as an attempt");
    }
    if let Err(e) = msg.ack_with(AckKind::Nak(Some(DEFER_DELAY))).await {
        warn!(error = %e, "hand-back not sent; the task returns after the ack wait");
    }
}

async fn count_one(
    keys: &Keys,
    msg: &jetstream::Message,
    worker: &WorkerId,
    reason: &str,
) -> Result<u32, String> {
    let (stream, sequence, key) = place(msg).ok_or("the message has no stream sequence")?;
    let (task_version, task) = head(&msg.payload);
    let now = crate::now_ms();
    let mut last = String::new();
    for _ in 0..WRITE_TRIES {
        let current = keys.entry(&key).await.map_err(|e| e.to_string())?;
        let (before, revision) = match current {
            Some(entry) if entry.operation == jetstream::kv::Operation::Put => (
                serde_json::from_slice::<Deferral>(&entry.value).ok(),
                entry.revision,
            ),
            Some(entry) => (None, entry.revision),
            None => (None, 0),
        };
        let next = Deferral {
            version: message_version(),
            task_version,
            task: task.clone(),
            stream: stream.clone(),
            sequence,
            deferrals: before.as_ref().map_or(0, |d| d.deferrals) + 1,
            worker: worker.clone(),
            reason: reason.to_string(),
            first_ms: before.as_ref().map_or(now, |d| d.first_ms),
            last_ms: now,
        };
        let body = Bytes::from(serde_json::to_vec(&next).expect("a deferral serializes"));
        match keys.update(&key, body, revision).await {
            Ok(_) => return Ok(next.deferrals),
            Err(e @ KeyError::Changed { .. }) => last = e.to_string(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("{key} kept changing: {last}"))
}

/// How many deliveries of `msg` were deferrals. A count that cannot be read is taken as none
/// (the delivery may then count an attempt too many), with a warning.
pub async fn counted(keys: &Keys, msg: &jetstream::Message) -> u32 {
    let Some((_, _, key)) = place(msg) else {
        return 0;
    };
    match keys.get(&key).await {
        Ok(Some(value)) => serde_json::from_slice::<Deferral>(&value).map_or(0, |d| d.deferrals),
        Ok(None) => 0,
        Err(e) => {
            warn!(error = %e, "could not read how often the task was left for another worker; \
                   counting every delivery as an attempt");
            0
        }
    }
}

/// Removes `msg`'s entry once its task has ended (acked or terminated). Left behind, it only
/// shows in `status` until the bucket's age limit removes it.
pub async fn clear(keys: &Keys, msg: &jetstream::Message) {
    let Some((_, _, key)) = place(msg) else {
        return;
    };
    if let Err(e) = keys.purge(&key).await {
        warn!(error = %e, key, "could not remove the task's deferral entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_body_still_gives_its_version_and_id() {
        #[derive(Serialize)]
        struct Future {
            version: u16,
            id: String,
            something_new: Vec<u8>,
        }
        let body = crate::model::encode(&Future {
            version: 9,
            id: "f01000.7.pc1.0".into(),
            something_new: vec![1, 2, 3],
        });
        assert_eq!(head(&body), (Some(9), Some("f01000.7.pc1.0".into())));
        assert_eq!(head(b"\xc1garbage"), (None, None));
    }
}
