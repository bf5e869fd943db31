//! What an operator asks first (`mesh-publisher status`): how many sectors of each miner are in
//! each phase, sealed or failed, and how much work waits, runs and is dead-lettered per stream.
//! Read-only: it reads the sectors bucket and stream and consumer info, and changes nothing.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::warn;

use crate::broker::deferred::Deferral;
use crate::broker::{Broker, BrokerError, consumers};
use crate::model::{MinerId, SectorNum, decode, shown};
use crate::names;
use crate::phases::Phase;
use crate::render::table;
use crate::sector::{SectorRecord, SectorState};

/// One miner's sectors by state: in each phase, sealed and failed. As JSON, one field per phase
/// token (`"pc1": 2`) in pipeline order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinerSectors {
    pub miner: String,
    /// Sectors in each phase; a phase with none may be left out.
    pub active: BTreeMap<Phase, u64>,
    pub sealed: u64,
    pub failed: u64,
    /// Stopped on purpose after a phase (`seal --until`).
    pub stopped: u64,
    pub total: u64,
}

impl MinerSectors {
    /// Sectors in `phase`.
    pub fn in_phase(&self, phase: Phase) -> u64 {
        self.active.get(&phase).copied().unwrap_or(0)
    }
}

impl Serialize for MinerSectors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(Phase::ALL.len() + 5))?;
        map.serialize_entry("miner", &self.miner)?;
        for phase in Phase::ALL {
            map.serialize_entry(phase.token(), &self.in_phase(phase))?;
        }
        map.serialize_entry("sealed", &self.sealed)?;
        map.serialize_entry("failed", &self.failed)?;
        map.serialize_entry("stopped", &self.stopped)?;
        map.serialize_entry("total", &self.total)?;
        map.end()
    }
}

/// The work on one task stream, as its workers' consumers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamBacklog {
    pub stream: String,
    pub phase: String,
    pub size: String,
    /// Tasks no worker has taken yet.
    pub waiting: u64,
    /// Tasks delivered to a worker and not yet acknowledged.
    pub running: u64,
    /// Of the running ones, those delivered more than once (a worker died or failed them).
    pub redelivered: u64,
}

/// The whole `status` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub sectors: Vec<MinerSectors>,
    pub streams: Vec<StreamBacklog>,
    pub dead_letters: u64,
    /// Sector keys whose value is not a sector record this version reads (written by hand, by
    /// a newer version, or by a miner writing garbage under its own keys), with why.
    pub unreadable: Vec<Unreadable>,
    /// Tasks that workers left for others (a message version newer than they read: a rolling
    /// upgrade that reached the publishers first), oldest first.
    pub deferred: Vec<Deferral>,
}

/// A sector key that holds no readable record: left out of every count and listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// Gathers the status: every sector record, every task stream that exists, the dead letters.
pub async fn status(broker: &Broker) -> anyhow::Result<Status> {
    let (records, unreadable) = read_sectors(broker, None).await?;
    let streams = consumers::task_consumers(broker)
        .await?
        .into_iter()
        .map(|(phase, size, consumers)| StreamBacklog {
            stream: names::task_stream(phase, size),
            phase: phase.to_string(),
            size: size.label().to_string(),
            waiting: consumers.iter().map(|c| c.num_pending).sum(),
            running: consumers.iter().map(|c| c.num_ack_pending as u64).sum(),
            redelivered: consumers.iter().map(|c| c.num_redelivered as u64).sum(),
        })
        .collect();
    let dead_letters = broker
        .stream(names::DLQ_STREAM)
        .await?
        .cached_info()
        .state
        .messages;
    let mut deferred: Vec<Deferral> = match broker.json_entries(names::DEFERRED_BUCKET).await {
        Ok(entries) => entries.into_iter().map(|(_, d)| d).collect(),
        // A mesh whose `init` predates the bucket has none.
        Err(BrokerError::Missing { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    deferred.sort_by_key(|d| d.first_ms);
    Ok(Status {
        sectors: count(&records),
        streams,
        dead_letters,
        unreadable,
        deferred,
    })
}

/// Counts sectors per miner and state, in miner order.
pub fn count(records: &[SectorRecord]) -> Vec<MinerSectors> {
    let mut by_miner: BTreeMap<MinerId, MinerSectors> = BTreeMap::new();
    for record in records {
        let row = by_miner
            .entry(record.miner)
            .or_insert_with(|| MinerSectors {
                miner: record.miner.to_string(),
                ..MinerSectors::default()
            });
        let cell = match &record.state {
            SectorState::Active { phase, .. } => row.active.entry(*phase).or_default(),
            SectorState::Sealed { .. } => &mut row.sealed,
            SectorState::Failed { .. } => &mut row.failed,
            SectorState::Stopped { .. } => &mut row.stopped,
        };
        *cell += 1;
        row.total += 1;
    }
    by_miner.into_values().collect()
}

/// The status as plain aligned tables.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    if status.sectors.is_empty() {
        out.push_str("no sectors yet\n");
    } else {
        let stopped = status.sectors.iter().any(|m| m.stopped > 0);
        let mut header = vec!["miner".to_string()];
        header.extend(Phase::ALL.map(|p| p.token().to_string()));
        header.extend(["sealed", "failed"].map(String::from));
        if stopped {
            header.push("stopped".into());
        }
        header.push("total".into());
        let mut rows = vec![header];
        for m in &status.sectors {
            let mut row = vec![m.miner.clone()];
            row.extend(Phase::ALL.map(|p| m.in_phase(p).to_string()));
            row.extend([m.sealed, m.failed].map(|n| n.to_string()));
            if stopped {
                row.push(m.stopped.to_string());
            }
            row.push(m.total.to_string());
            rows.push(row);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if status.streams.is_empty() {
        out.push_str("no task streams: run `mesh-publisher init`\n");
    } else {
        let mut rows = vec![
            ["stream", "waiting", "running", "redelivered"]
                .map(String::from)
                .to_vec(),
        ];
        for s in &status.streams {
            rows.push(vec![
                s.stream.clone(),
                s.waiting.to_string(),
                s.running.to_string(),
                s.redelivered.to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if !status.unreadable.is_empty() {
        let keys: Vec<&str> = status.unreadable.iter().map(|u| u.key.as_str()).collect();
        out.push_str(&format!(
            "unreadable sector records: {} ({}); left out above: inspect with `nats kv get {} \
             KEY`, delete with `nats kv del` if they are not the mesh's\n",
            keys.len(),
            keys.join(", "),
            names::SECTORS_BUCKET
        ));
    }
    if !status.deferred.is_empty() {
        out.push_str(&render_deferred(&status.deferred, crate::now_ms()));
        out.push('\n');
    }
    out.push_str(&format!(
        "dead letters: {}{}\n",
        status.dead_letters,
        if status.dead_letters > 0 {
            " (see `mesh-publisher dlq list`)"
        } else {
            ""
        }
    ));
    out
}

/// Tasks left for other workers: which, how often, why, since when.
fn render_deferred(deferred: &[Deferral], now_ms: u64) -> String {
    let mut out = format!(
        "tasks waiting for another worker: {} (left unrun by workers that cannot run them, at \
         no attempt's cost; upgrade those workers)\n",
        deferred.len()
    );
    let mut rows = vec![
        ["task", "stream", "left", "since", "last left by", "why"]
            .map(String::from)
            .to_vec(),
    ];
    let shown_task = |d: &Deferral| match &d.task {
        Some(task) => shown(task),
        None => format!("{}#{}", d.stream, d.sequence),
    };
    for d in deferred {
        let age = std::time::Duration::from_secs(now_ms.saturating_sub(d.first_ms) / 1000);
        rows.push(vec![
            shown_task(d),
            shown(&d.stream),
            format!("{}×", d.deferrals),
            format!("{} ago", humantime::format_duration(age)),
            shown(&d.worker.0),
            shown(&d.reason),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// Failed sectors as a table: where each failed, when, and the whole reason.
pub fn render_failed(records: &[SectorRecord]) -> String {
    let mut rows = vec![
        ["sector", "size", "phase", "failed at", "reason"]
            .map(String::from)
            .to_vec(),
    ];
    for record in records {
        if let SectorState::Failed {
            phase,
            reason,
            at_ms,
        } = &record.state
        {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(*at_ms);
            rows.push(vec![
                names::sector_key(record.miner, record.sector),
                record.size.label().to_string(),
                phase.to_string(),
                humantime::format_rfc3339_seconds(at).to_string(),
                reason.clone(),
            ]);
        }
    }
    if rows.len() == 1 {
        return "no failed sectors\n".into();
    }
    table(&rows)
}

/// Every readable sector record (of `miner`, or of all miners), in miner and sector order. A
/// key whose value does not decode is left out with a warning (see [`read_sectors`]), so that
/// one bad record does not hide every other.
pub async fn sectors(broker: &Broker, miner: Option<MinerId>) -> anyhow::Result<Vec<SectorRecord>> {
    let (records, unreadable) = read_sectors(broker, miner).await?;
    for u in &unreadable {
        warn!(key = %u.key, error = %u.error, "sector record unreadable; left out");
    }
    Ok(records)
}

/// Every sector record (of `miner`, or of all miners), in miner and sector order, and the keys
/// whose value does not decode.
pub async fn read_sectors(
    broker: &Broker,
    miner: Option<MinerId>,
) -> anyhow::Result<(Vec<SectorRecord>, Vec<Unreadable>)> {
    let bucket = broker.keys(names::SECTORS_BUCKET).await?;
    // Listed through a consumer filtered on the miner's keys: a miner's role may read only
    // those.
    let filter = miner.map_or_else(|| ">".to_string(), |miner| format!("{miner}.>"));
    let keys = broker
        .keys_under(names::SECTORS_BUCKET, &filter)
        .await?
        .into_iter()
        .filter(|key| sector_key(key).is_some());
    // A farm has thousands of sectors: fetch several at a time.
    let values: Vec<(String, Option<bytes::Bytes>)> = futures::stream::iter(keys)
        .map(|key| {
            let bucket = bucket.clone();
            async move {
                let value = bucket
                    .get(&key)
                    .await
                    .with_context(|| format!("read sector {key}"))?;
                anyhow::Ok((key, value))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let (mut records, mut unreadable) = (Vec::new(), Vec::new());
    for (key, value) in values {
        let Some(value) = value else { continue };
        match decode::<SectorRecord>(&value) {
            Ok(record) => records.push(record),
            Err(e) => unreadable.push(Unreadable {
                key: shown(&key),
                error: e.to_string(),
            }),
        }
    }
    records.sort_by_key(|r| (r.miner, r.sector));
    unreadable.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((records, unreadable))
}

/// `f01000.12` → (f01000, 12); `None` for other keys such as `f01000.next`.
fn sector_key(key: &str) -> Option<(MinerId, SectorNum)> {
    let (miner, sector) = key.split_once('.')?;
    Some((miner.parse().ok()?, SectorNum(sector.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SectorSize;

    fn record(miner: &str, sector: u64, state: SectorState) -> SectorRecord {
        let mut rec = SectorRecord::new(
            miner.parse().unwrap(),
            SectorNum(sector),
            SectorSize::KiB2,
            SectorSize::KiB2.seal_proof(),
            Vec::new(),
            Vec::new(),
            [0; 32],
            0,
        );
        rec.state = state;
        rec
    }

    #[test]
    fn sectors_are_counted_per_miner_and_state() {
        let active = |phase| SectorState::Active {
            phase,
            task: crate::sector::TaskId("x".into()),
            generation: 0,
            published: true,
            since_ms: 0,
        };
        let failed = SectorState::Failed {
            phase: Phase::AddPiece,
            reason: "corrupt".into(),
            at_ms: 0,
        };
        let records = [
            record("f01001", 1, active(Phase::Commit2)),
            record("f01000", 1, active(Phase::PreCommit1)),
            record("f01000", 2, active(Phase::PreCommit1)),
            record("f01000", 3, SectorState::Sealed { at_ms: 0 }),
            record("f01000", 4, failed),
        ];
        let counts = count(&records);
        assert_eq!(
            counts,
            [
                MinerSectors {
                    miner: "f01000".into(),
                    active: [(Phase::PreCommit1, 2)].into(),
                    sealed: 1,
                    failed: 1,
                    stopped: 0,
                    total: 4,
                },
                MinerSectors {
                    miner: "f01001".into(),
                    active: [(Phase::Commit2, 1)].into(),
                    total: 1,
                    ..MinerSectors::default()
                },
            ]
        );
    }

    #[test]
    fn miner_rows_are_json_with_a_field_per_phase() {
        let row = MinerSectors {
            miner: "f01000".into(),
            active: [(Phase::PreCommit1, 2)].into(),
            sealed: 1,
            failed: 0,
            stopped: 0,
            total: 3,
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"miner":"f01000","ap":0,"pc1":2,"pc2":0,"c1":0,"c2":0,"fin":0,"sealed":1,"failed":0,"stopped":0,"total":3}"#
        );
    }

    #[test]
    fn tasks_left_for_other_workers_show_which_how_often_and_why() {
        let deferred = vec![Deferral {
            version: 1,
            task_version: Some(2),
            task: Some("f01000.7.pc1.0".into()),
            stream: "MESH_TASK_PC1_2KIB".into(),
            sequence: 12,
            deferrals: 3,
            worker: crate::model::WorkerId("w1".into()),
            reason: "message version 2 is newer than this worker reads (1)".into(),
            first_ms: 1_000,
            last_ms: 2_000,
        }];
        assert_eq!(
            render_deferred(&deferred, 91_000),
            "\
tasks waiting for another worker: 1 (left unrun by workers that cannot run them, at no attempt's \
cost; upgrade those workers)
task            stream              left  since       last left by  why
f01000.7.pc1.0  MESH_TASK_PC1_2KIB  3×    1m 30s ago  w1            message version 2 is newer than this worker reads (1)
"
        );
    }

    #[test]
    fn the_status_renders_as_aligned_tables() {
        let status = Status {
            sectors: vec![MinerSectors {
                miner: "f01000".into(),
                active: [(Phase::PreCommit1, 12)].into(),
                failed: 1,
                total: 13,
                ..MinerSectors::default()
            }],
            streams: vec![StreamBacklog {
                stream: "MESH_TASK_PC1_2KIB".into(),
                phase: "pc1".into(),
                size: "2KiB".into(),
                waiting: 10,
                running: 2,
                redelivered: 1,
            }],
            dead_letters: 1,
            unreadable: vec![Unreadable {
                key: "f01001.7".into(),
                error: "undecodable message body: EOF".into(),
            }],
            deferred: Vec::new(),
        };
        assert_eq!(
            render(&status),
            "\
miner   ap  pc1  pc2  c1  c2  fin  sealed  failed  total
f01000  0   12   0    0   0   0    0       1       13

stream              waiting  running  redelivered
MESH_TASK_PC1_2KIB  10       2        1

unreadable sector records: 1 (f01001.7); left out above: inspect with `nats kv get mesh-sectors \
KEY`, delete with `nats kv del` if they are not the mesh's
dead letters: 1 (see `mesh-publisher dlq list`)
"
        );
    }

    #[test]
    fn failed_sectors_show_their_phase_time_and_whole_reason() {
        let reason = "input piece-0: object f01000/2/piece-0 is corrupt: expected 1016 bytes";
        let records = [
            record("f01000", 1, SectorState::Sealed { at_ms: 0 }),
            record(
                "f01000",
                2,
                SectorState::Failed {
                    phase: Phase::AddPiece,
                    reason: reason.into(),
                    at_ms: 1_700_000_000_000,
                },
            ),
        ];
        assert_eq!(
            render_failed(&records),
            format!(
                "\
sector    size  phase  failed at             reason
f01000.2  2KiB  ap     2023-11-14T22:13:20Z  {reason}
"
            )
        );
        assert_eq!(render_failed(&records[..1]), "no failed sectors\n");
    }

    #[test]
    fn only_sector_keys_name_sectors() {
        assert_eq!(
            sector_key("f01000.12"),
            Some(("f01000".parse().unwrap(), SectorNum(12)))
        );
        assert_eq!(sector_key("f01000.next"), None);
        assert_eq!(sector_key("garbage"), None);
    }
}
