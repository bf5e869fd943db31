//! Store clean-up beyond a sector's own: objects that no sector record refers to
//! (`mesh-publisher gc`), and removing a failed or stopped sector with all its objects
//! (`mesh-publisher remove`).
//!
//! Only keys of the mesh's sector layout (`<miner>/<sector>/…`) are considered; anything else in
//! the store (parameters, other tools' files) is never listed or touched. Objects of a sector
//! that is still being sealed are left alone: a worker may be writing them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::Serialize;

use super::status;
use crate::broker::Broker;
use crate::model::{MinerId, SectorNum};
use crate::names;
use crate::sector::{SectorRecord, SectorState};
use crate::store::Store;

/// An object no sector record refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Garbage {
    pub key: String,
    pub size: u64,
    /// Seconds since the object was last written.
    pub age_s: u64,
    pub why: String,
}

/// What `remove` took away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub objects: usize,
    pub bytes: u64,
}

/// `<miner>/<sector>/…` back to its miner and sector.
fn sector_of(key: &str) -> Option<(MinerId, SectorNum)> {
    let mut parts = key.split('/');
    let miner = parts.next()?.parse().ok()?;
    let sector = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((miner, SectorNum(sector)))
}

/// Why `key` (of a sector whose record is `record`) is garbage, or `None` if it is not.
fn why_garbage(key: &str, sector: &str, record: Option<&SectorRecord>) -> Option<String> {
    let Some(record) = record else {
        return Some(format!("sector {sector} has no record"));
    };
    if matches!(record.state, SectorState::Active { .. }) {
        return None;
    }
    if record.data.objects.values().any(|o| o.key == key) {
        return None;
    }
    Some(format!(
        "sector {sector} is {} and does not refer to it",
        record.state.label()
    ))
}

/// The objects of `miner` (every miner when `None`) that no sector record refers to, last
/// written more than `older_than` ago: of sectors without a record (removed, or never
/// created), and of finished sectors that no longer refer to them (attempts that lost a race,
/// uploads a crash cut off). A sector whose record cannot be read keeps its objects.
pub async fn find(
    broker: &Broker,
    store: &Store,
    miner: Option<MinerId>,
    older_than: Duration,
) -> anyhow::Result<Vec<Garbage>> {
    let (records, unreadable) = status::read_sectors(broker, miner).await?;
    let records: BTreeMap<(MinerId, SectorNum), SectorRecord> = records
        .into_iter()
        .map(|r| ((r.miner, r.sector), r))
        .collect();
    let unreadable: BTreeSet<String> = unreadable.into_iter().map(|u| u.key).collect();
    let prefix = miner.map(|m| format!("{m}/")).unwrap_or_default();
    let listed = store
        .list_objects(&prefix)
        .await
        .with_context(|| format!("list the store {}", store.name()))?;
    let now = SystemTime::now();
    let mut garbage = Vec::new();
    for object in listed {
        let Some((miner, sector)) = sector_of(&object.key) else {
            continue;
        };
        let age = now.duration_since(object.modified).unwrap_or_default();
        let name = names::sector_key(miner, sector);
        if age < older_than || unreadable.contains(&name) {
            continue;
        }
        if let Some(why) = why_garbage(&object.key, &name, records.get(&(miner, sector))) {
            garbage.push(Garbage {
                key: object.key,
                size: object.size,
                age_s: age.as_secs(),
                why,
            });
        }
    }
    Ok(garbage)
}

/// Deletes `garbage`; returns what was deleted (an object already gone counts as deleted).
pub async fn delete(store: &Store, garbage: &[Garbage]) -> anyhow::Result<Removed> {
    let mut removed = Removed {
        objects: 0,
        bytes: 0,
    };
    for object in garbage {
        store.delete(&object.key).await.with_context(|| {
            format!(
                "delete {} ({} deleted before it); run gc again to finish",
                object.key, removed.objects
            )
        })?;
        removed.objects += 1;
        removed.bytes += object.size;
    }
    Ok(removed)
}

/// Removes a failed or stopped sector: its record (with compare-and-set, so that a sector a
/// retry just made active again stays), then every object under its prefix. Sealed and active
/// sectors are refused.
pub async fn remove(
    broker: &Broker,
    store: &Store,
    miner: MinerId,
    sector: SectorNum,
) -> anyhow::Result<Removed> {
    let key = names::sector_key(miner, sector);
    let bucket = broker.keys(names::SECTORS_BUCKET).await?;
    let entry = bucket
        .entry(&key)
        .await
        .with_context(|| format!("read sector {key}"))?
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
    let Some(entry) = entry else {
        bail!(
            "sector {key} has no record: see `mesh-publisher sectors --miner {miner}`; \
             `mesh-publisher gc --miner {miner}` finds objects left without one"
        );
    };
    // An unreadable record is removed too: it cannot be sealed or retried.
    if let Ok(record) = crate::model::decode::<SectorRecord>(&entry.value) {
        match &record.state {
            SectorState::Failed { .. } | SectorState::Stopped { .. } => {}
            SectorState::Sealed { .. } => bail!(
                "sector {key} is sealed: its replica and cache are what the miner proves with, \
                 and the mesh does not remove them; only failed or stopped sectors are removed"
            ),
            SectorState::Active { .. } => bail!(
                "sector {key} is being sealed (it waits for {}): only failed or stopped \
                 sectors are removed, as workers may be writing an active sector's objects",
                record.state.label()
            ),
        }
    }
    bucket.delete(&key, entry.revision).await.with_context(|| {
        format!("remove sector {key} (if it changed meanwhile, look at it and try again)")
    })?;
    delete_sector_objects(store, miner, sector, "removed").await
}

/// Deletes every object of sector `sector` of `miner`, whose record says it is `done` (removed,
/// aborted) already.
pub async fn delete_sector_objects(
    store: &Store,
    miner: MinerId,
    sector: SectorNum,
    done: &str,
) -> anyhow::Result<Removed> {
    let key = names::sector_key(miner, sector);
    let prefix = names::sector_prefix(miner, sector);
    let objects = store
        .list_objects(&prefix)
        .await
        .with_context(|| format!("list {prefix} (the sector is {done}; run gc to finish)"))?;
    let garbage: Vec<Garbage> = objects
        .into_iter()
        .map(|o| Garbage {
            key: o.key,
            size: o.size,
            age_s: 0,
            why: format!("sector {key} was {done}"),
        })
        .collect();
    delete(store, &garbage).await
}

/// A table of `garbage`, largest first, with a total.
pub fn render(garbage: &[Garbage]) -> String {
    let mut sorted: Vec<&Garbage> = garbage.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
    let mut rows = vec![vec![
        "object".to_string(),
        "size".to_string(),
        "age".to_string(),
        "why".to_string(),
    ]];
    for g in sorted {
        rows.push(vec![
            g.key.clone(),
            bytesize::ByteSize(g.size).to_string(),
            humantime::format_duration(Duration::from_secs(g.age_s)).to_string(),
            g.why.clone(),
        ]);
    }
    crate::render::table(&rows)
}

/// "3 objects, 1.2 GiB".
pub fn total(objects: usize, bytes: u64) -> String {
    format!(
        "{objects} object{}, {}",
        if objects == 1 { "" } else { "s" },
        bytesize::ByteSize(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sector_layout_is_considered() {
        let f01000: MinerId = "f01000".parse().unwrap();
        assert_eq!(
            sector_of("f01000/7/pc2-1/sealed"),
            Some((f01000, SectorNum(7)))
        );
        assert_eq!(sector_of("f01000/7/piece-0"), Some((f01000, SectorNum(7))));
        assert_eq!(sector_of("f01000/7"), None);
        assert_eq!(sector_of("params/v28-stacked.params"), None);
        assert_eq!(sector_of("f01000/x/piece-0"), None);
    }
}
