//! The `--out` file: one JSON object per sealed sector with everything `verify_seal` needs,
//! and what it cost: who ran each phase, how often and how long, and the bytes it moved
//! through the store.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::phases::Phase;
use crate::proofs::proof_name;
use crate::sector::SectorRecord;

/// One phase of a sector, summed over its accepted runs (more than one when the sector went
/// back to PreCommit1).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PhaseAccount {
    /// The worker whose run was accepted last.
    pub worker: String,
    /// Deliveries of the accepted runs.
    pub attempts: u32,
    /// From each run's task becoming active to its result being accepted, summed.
    pub ms: u64,
}

/// Per phase, in the order a sector goes through them (a JSON object keyed by phase token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phases(pub Vec<(Phase, PhaseAccount)>);

impl Serialize for Phases {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (phase, account) in &self.0 {
            map.serialize_entry(phase.token(), account)?;
        }
        map.end()
    }
}

/// Bytes a sector's tasks read from and wrote to the store.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StoreBytes {
    pub read: u64,
    pub written: u64,
}

/// A sector's phases and store traffic, from its record's history.
pub fn accounting(rec: &SectorRecord) -> (Phases, StoreBytes) {
    let mut phases = Vec::new();
    let mut bytes = StoreBytes::default();
    for phase in Phase::ALL {
        let runs: Vec<_> = rec.history.iter().filter(|r| r.phase == phase).collect();
        let Some(last) = runs.last() else {
            continue;
        };
        phases.push((
            phase,
            PhaseAccount {
                worker: last.worker.0.clone(),
                attempts: runs.iter().map(|r| r.attempt).sum(),
                ms: runs.iter().map(|r| r.wall_ms).sum(),
            },
        ));
    }
    for run in &rec.history {
        bytes.read += run.read_bytes;
        bytes.written += run.written_bytes;
    }
    (Phases(phases), bytes)
}

/// The `--out` line of a sector stopped after `after` (`seal --until`): no proof, only what
/// it cost.
pub fn stopped_line(rec: &SectorRecord, after: Phase) -> String {
    let (phases, store_bytes) = accounting(rec);
    let mut line = serde_json::json!({
        "miner": rec.miner.to_string(),
        "sector": rec.sector.0,
        "proof_type": proof_name(rec.proof),
        "stopped_after": after.token(),
        "phases": phases,
        "store_bytes": store_bytes,
    })
    .to_string();
    line.push('\n');
    line
}

/// One line of `--out`. Field order is the documented order; all bytes are lowercase hex.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SealedSector {
    pub miner: String,
    pub sector: u64,
    pub proof_type: String,
    pub prover_id: String,
    pub ticket: String,
    pub seed: String,
    pub comm_r: String,
    pub comm_d: String,
    pub proof: String,
    /// Present (true) only for sectors of the synthetic executor, whose proof is not real.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
    pub phases: Phases,
    pub store_bytes: StoreBytes,
}

impl SealedSector {
    /// The line for a sealed record; `None` if the record lacks a commitment, seed or proof.
    pub fn from_record(rec: &SectorRecord) -> Option<Self> {
        let (phases, store_bytes) = accounting(rec);
        Some(SealedSector {
            miner: rec.miner.to_string(),
            sector: rec.sector.0,
            proof_type: proof_name(rec.proof),
            prover_id: hex::encode(rec.miner.prover_id()),
            ticket: hex::encode(rec.data.ticket),
            seed: hex::encode(rec.data.seed?),
            comm_r: hex::encode(rec.data.comm_r?),
            comm_d: hex::encode(rec.data.comm_d?),
            proof: hex::encode(rec.data.proof_bytes.as_ref()?),
            synthetic: rec.synthetic,
            phases,
            store_bytes,
        })
    }

    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("plain struct serializes");
        line.push('\n');
        line
    }
}
