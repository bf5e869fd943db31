//! The miners sharing the pool and their weights, in the `mesh-miners` bucket: a publisher
//! registers its miner (weight 1) on start, an operator changes weights with `mesh-publisher
//! miners weight`, and every worker follows the bucket to share its slots by weight.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError};
use crate::model::{MinerId, decode_json};
use crate::names;

/// Largest weight a miner may have: a miner with weight w gets w shares for every one share of
/// a miner with weight 1.
pub const MAX_WEIGHT: u32 = 1000;

/// One miner's entry (JSON, so `nats kv get mesh-miners f01000` is readable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinerEntry {
    pub weight: u32,
    pub registered_ms: u64,
}

/// Checks a weight an operator typed.
pub fn check_weight(weight: u32) -> Result<u32, String> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(weight)
    } else {
        Err(format!(
            "weight {weight} is out of range: use 1 to {MAX_WEIGHT} (a miner with weight 2 gets \
             twice the share of one with weight 1)"
        ))
    }
}

/// Registers `miner` with weight 1 unless it is registered already (its weight stays).
pub async fn register(broker: &Broker, miner: MinerId) -> Result<(), BrokerError> {
    let bucket = broker.bucket(names::MINERS_BUCKET).await?;
    let entry = MinerEntry {
        weight: 1,
        registered_ms: crate::now_ms(),
    };
    let body = serde_json::to_vec(&entry).expect("miner entry serializes");
    match bucket.create(miner.to_string(), body.into()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(BrokerError::api(format!("register miner {miner}"), e)),
    }
}

/// Sets a miner's weight (registering it if needed).
pub async fn set_weight(broker: &Broker, miner: MinerId, weight: u32) -> anyhow::Result<()> {
    let weight = check_weight(weight).map_err(anyhow::Error::msg)?;
    let bucket = broker.bucket(names::MINERS_BUCKET).await?;
    let registered_ms = match read(&bucket, &miner.to_string()).await? {
        Some(entry) => entry.registered_ms,
        None => crate::now_ms(),
    };
    let body = serde_json::to_vec(&MinerEntry {
        weight,
        registered_ms,
    })
    .expect("miner entry serializes");
    bucket
        .put(miner.to_string(), body.into())
        .await
        .map_err(|e| BrokerError::api(format!("set the weight of {miner}"), e))?;
    Ok(())
}

async fn read(bucket: &kv::Store, key: &str) -> Result<Option<MinerEntry>, BrokerError> {
    let Some(value) = bucket
        .get(key)
        .await
        .map_err(|e| BrokerError::api(format!("read miner {key}"), e))?
    else {
        return Ok(None);
    };
    Ok(decode_json(&value).ok())
}

/// Every registered miner.
pub async fn list(broker: &Broker) -> Result<BTreeMap<MinerId, MinerEntry>, BrokerError> {
    let entries = broker.json_entries(names::MINERS_BUCKET).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, entry)| Some((key.parse().ok()?, entry)))
        .collect())
}

/// The weights as a worker sees them: kept current by following the bucket. A miner that is
/// not registered has weight 1.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    map: Arc<RwLock<BTreeMap<MinerId, u32>>>,
}

impl Weights {
    pub fn get(&self, miner: MinerId) -> u32 {
        self.map
            .read()
            .expect("weights lock")
            .get(&miner)
            .copied()
            .unwrap_or(1)
    }

    /// Follows the bucket until `stop`, re-opening the watch after errors.
    pub async fn follow(self, bucket: kv::Store, stop: CancellationToken) {
        super::follow::follow(bucket, ">".into(), "miner weights", stop, move |entry| {
            let Ok(miner) = entry.key.parse::<MinerId>() else {
                return;
            };
            let mut map = self.map.write().expect("weights lock");
            match decode_json::<MinerEntry>(&entry.value) {
                Ok(e) if entry.operation == kv::Operation::Put => {
                    map.insert(miner, e.weight.clamp(1, MAX_WEIGHT));
                }
                _ => {
                    map.remove(&miner);
                }
            }
        })
        .await;
    }
}
