//! `mesh-publisher sector abort`: an operator gives up on an active sector. Its record turns
//! failed with the reason (compare-and-set, so a result that lands meanwhile is weighed first),
//! which stops everything else: publishers fence its results and publish nothing more for it, a
//! worker running its task stops it at its next look at the record (`worker::attempt`), and a
//! worker holding its data lets it go. Then its task message is deleted from its stream (queued
//! or running: a work queue keeps it until acked) and its objects from the store.

use anyhow::{Context, bail};
use async_nats::jetstream::stream::RawMessageErrorKind;

use super::gc;
use crate::broker::Broker;
use crate::broker::keys::KeyError;
use crate::model::{MinerId, SectorNum, decode, encode};
use crate::names;
use crate::phases::Phase;
use crate::sector::{SectorRecord, SectorState, Task};
use crate::store::Store;

/// What an abort did.
#[derive(Debug)]
pub struct Aborted {
    /// The phase the sector was in.
    pub phase: Phase,
    /// Whether its task was found in its stream (queued, or running and not yet acked) and
    /// deleted.
    pub dropped: bool,
    /// Its objects deleted from the store.
    pub removed: gc::Removed,
}

/// Aborts active sector `sector` of `miner` with `reason`.
pub async fn abort(
    broker: &Broker,
    store: &Store,
    miner: MinerId,
    sector: SectorNum,
    reason: &str,
) -> anyhow::Result<Aborted> {
    let key = names::sector_key(miner, sector);
    let keys = broker.keys(names::SECTORS_BUCKET).await?;
    let (phase, task) = loop {
        let entry = keys
            .entry(&key)
            .await
            .with_context(|| format!("read sector {key}"))?
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
        let Some(entry) = entry else {
            bail!("sector {key} has no record: see `mesh-publisher sectors --miner {miner}`");
        };
        let mut record: SectorRecord =
            decode(&entry.value).with_context(|| format!("decode sector {key}"))?;
        let now = crate::now_ms();
        let SectorState::Active { phase, .. } = record.state else {
            bail!(
                "sector {key} is not being sealed (it is {}): only active sectors are aborted; \
                 `mesh-publisher remove` deletes failed and stopped ones",
                record.state.label()
            );
        };
        let task = record.task(u32::MAX, now).and_then(Result::ok);
        record.fail(phase, format!("aborted by an operator: {reason}"), now);
        match keys
            .update(&key, encode(&record).into(), entry.revision)
            .await
        {
            Ok(_) => break (phase, task),
            // A result or another operator got there first: look again.
            Err(KeyError::Changed { .. }) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("fail sector {key}"))),
        }
    };
    let dropped = match &task {
        Some(task) => drop_queued(broker, task)
            .await
            .with_context(|| format!("sector {key} is failed, but its queued task stays"))?,
        None => false,
    };
    let removed = gc::delete_sector_objects(store, miner, sector, "aborted").await?;
    Ok(Aborted {
        phase,
        dropped,
        removed,
    })
}

/// Deletes `task`'s message from its stream, found by its message id among its subject's
/// messages; false when it is not there (never published, or acked already).
async fn drop_queued(broker: &Broker, task: &Task) -> anyhow::Result<bool> {
    let size = crate::model::SectorSize::of_proof(task.proof)
        .with_context(|| format!("task {} has a proof of no known size", task.id))?;
    let (stream, subject) = match &task.holder {
        Some(holder) => (
            names::HELD_STREAM.to_string(),
            names::held_subject(holder, task.phase, size, task.miner),
        ),
        _ => (
            names::task_stream(task.phase, size),
            names::task_subject(task.phase, size, task.miner, task.class()),
        ),
    };
    let stream = broker.stream(&stream).await?;
    let mut sequence = 1;
    loop {
        let message = stream
            .raw_message_builder()
            .sequence(sequence)
            .next_by_subject(subject.clone())
            .send()
            .await;
        let message = match message {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(false),
            Err(e) => bail!("look for task {} in {subject}: {e}", task.id),
        };
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string());
        if id.as_deref() == Some(task.id.0.as_str()) {
            stream
                .delete_message(message.sequence)
                .await
                .with_context(|| format!("delete task {} from {subject}", task.id))?;
            return Ok(true);
        }
        sequence = message.sequence + 1;
    }
}
