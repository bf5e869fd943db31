//! The miners sharing the pool and their weights, in the `mesh-miners` bucket: a publisher
//! registers its miner on start (key `<miner>`, which its role may write), an operator sets
//! weights with `mesh-publisher miners weight` (key `weight.<miner>`, which only `admin` may
//! write), and every worker follows the weight keys to share its slots by weight. A weight in a
//! registration is not a weight: a miner cannot raise its own share.

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

/// One miner's entry (JSON, so `nats kv get mesh-miners f01000` is readable): its registration
/// under `<miner>`, its weight under `weight.<miner>`. A registration's `weight` is 1, for
/// workers older than the weight keys; newer ones ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinerEntry {
    pub weight: u32,
    pub registered_ms: u64,
}

/// The key of `miner`'s weight: `weight.<miner>`.
pub fn weight_key(miner: MinerId) -> String {
    format!("{WEIGHT_PREFIX}{miner}")
}

const WEIGHT_PREFIX: &str = "weight.";

/// The miner a weight key names.
fn weight_of_key(key: &str) -> Option<MinerId> {
    key.strip_prefix(WEIGHT_PREFIX)?.parse().ok()
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

/// Sets a miner's weight (an operator's command: only `admin` may write weight keys).
pub async fn set_weight(broker: &Broker, miner: MinerId, weight: u32) -> anyhow::Result<()> {
    let weight = check_weight(weight).map_err(anyhow::Error::msg)?;
    let bucket = broker.bucket(names::MINERS_BUCKET).await?;
    let registered_ms = match read(&bucket, &weight_key(miner)).await? {
        Some(entry) => entry.registered_ms,
        None => crate::now_ms(),
    };
    let body = serde_json::to_vec(&MinerEntry {
        weight,
        registered_ms,
    })
    .expect("miner entry serializes");
    bucket
        .put(weight_key(miner), body.into())
        .await
        .map_err(|e| BrokerError::api(format!("set the weight of {miner}"), e))?;
    Ok(())
}

/// Moves weights that registrations held before weights had keys of their own (an operator
/// set them; a registration's weight is otherwise 1) to weight keys, once: `init` calls it.
pub async fn migrate_weights(broker: &Broker) -> Result<u32, BrokerError> {
    let bucket = broker.bucket(names::MINERS_BUCKET).await?;
    let entries: Vec<(String, MinerEntry)> = broker.json_entries(names::MINERS_BUCKET).await?;
    let mut moved = 0;
    for (key, entry) in &entries {
        let Ok(miner) = key.parse::<MinerId>() else {
            continue;
        };
        if entry.weight == 1 || entries.iter().any(|(k, _)| *k == weight_key(miner)) {
            continue;
        }
        let body = serde_json::to_vec(entry).expect("miner entry serializes");
        bucket
            .put(weight_key(miner), body.into())
            .await
            .map_err(|e| BrokerError::api(format!("move the weight of {miner}"), e))?;
        moved += 1;
    }
    Ok(moved)
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

/// Every registered or weighted miner, with its weight (1 unless an operator set one).
pub async fn list(broker: &Broker) -> Result<BTreeMap<MinerId, MinerEntry>, BrokerError> {
    let entries: Vec<(String, MinerEntry)> = broker.json_entries(names::MINERS_BUCKET).await?;
    let mut out: BTreeMap<MinerId, MinerEntry> = BTreeMap::new();
    for (key, entry) in &entries {
        if let Ok(miner) = key.parse::<MinerId>() {
            out.entry(miner).or_insert(MinerEntry {
                weight: 1,
                registered_ms: entry.registered_ms,
            });
        }
    }
    for (key, entry) in entries {
        if let Some(miner) = weight_of_key(&key) {
            let registered_ms = out
                .get(&miner)
                .map_or(entry.registered_ms, |e| e.registered_ms);
            out.insert(
                miner,
                MinerEntry {
                    weight: entry.weight.clamp(1, MAX_WEIGHT),
                    registered_ms,
                },
            );
        }
    }
    Ok(out)
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
        let keys = format!("{WEIGHT_PREFIX}>");
        super::follow::follow(bucket, keys, "miner weights", stop, move |entry| {
            let Some(miner) = weight_of_key(&entry.key) else {
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
