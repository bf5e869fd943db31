//! The `--out` file: one JSON object per sealed sector with everything `verify_seal` needs.

use serde::Serialize;

use crate::proofs::proof_name;
use crate::sector::SectorRecord;

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
}

impl SealedSector {
    /// The line for a sealed record; `None` if the record lacks a commitment, seed or proof.
    pub fn from_record(rec: &SectorRecord) -> Option<Self> {
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
        })
    }

    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("plain struct serializes");
        line.push('\n');
        line
    }
}
