//! The job protocol between a worker (or publisher) and the child process that runs one proof
//! call. The parent writes a [`Job`] file, the child writes a [`JobOutcome`] file; both MessagePack.
//! Proof calls are synchronous, long and read process-global `FIL_PROOFS_*` settings, so each runs
//! in a process of its own that the parent can watch, heartbeat for and kill.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RegisteredSealProof;
use crate::model::PieceInfo;

/// One piece to add to a sector: a file, or zeros when `path` is `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PieceSource {
    pub path: Option<PathBuf>,
    /// Unpadded size the piece takes in the sector (127 × 2^k bytes); a shorter file is
    /// zero-filled to it.
    pub size: u64,
}

/// The randomness and identity that bind a replica to its miner and sector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SectorIdentity {
    pub proof: RegisteredSealProof,
    pub prover_id: [u8; 32],
    pub sector: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    AddPiece {
        proof: RegisteredSealProof,
        pieces: Vec<PieceSource>,
        unsealed: PathBuf,
    },
    PreCommit1 {
        id: SectorIdentity,
        ticket: [u8; 32],
        piece_infos: Vec<PieceInfo>,
        cache: PathBuf,
        unsealed: PathBuf,
        sealed: PathBuf,
    },
    PreCommit2 {
        pc1_output: Vec<u8>,
        cache: PathBuf,
        unsealed: PathBuf,
        sealed: PathBuf,
    },
    Commit1 {
        id: SectorIdentity,
        ticket: [u8; 32],
        seed: [u8; 32],
        comm_r: [u8; 32],
        comm_d: [u8; 32],
        piece_infos: Vec<PieceInfo>,
        cache: PathBuf,
        sealed: PathBuf,
        c1_output: PathBuf,
    },
    Commit2 {
        id: SectorIdentity,
        c1_output: PathBuf,
    },
    Finalize {
        cache: PathBuf,
    },
    Verify {
        id: SectorIdentity,
        ticket: [u8; 32],
        seed: [u8; 32],
        comm_r: [u8; 32],
        comm_d: [u8; 32],
        proof_bytes: Vec<u8>,
    },
    GenerateParams {
        proof: RegisteredSealProof,
    },
}

impl Job {
    pub fn name(&self) -> &'static str {
        match self {
            Job::AddPiece { .. } => "add piece",
            Job::PreCommit1 { .. } => "precommit1",
            Job::PreCommit2 { .. } => "precommit2",
            Job::Commit1 { .. } => "commit1",
            Job::Commit2 { .. } => "commit2",
            Job::Finalize { .. } => "finalize",
            Job::Verify { .. } => "verify seal",
            Job::GenerateParams { .. } => "generate parameters",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobOutput {
    AddPiece { piece_infos: Vec<PieceInfo> },
    PreCommit1 { pc1_output: Vec<u8> },
    PreCommit2 { comm_r: [u8; 32], comm_d: [u8; 32] },
    Commit1,
    Commit2 { proof: Vec<u8> },
    Finalize,
    Verify { valid: bool },
    GenerateParams { files: Vec<String> },
}

/// Whether a failed job may succeed if run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The inputs are wrong; running again gives the same answer.
    Permanent,
    /// Something around the job failed (disk full, process killed); another attempt may work.
    Retryable,
    /// The Groth parameters for the proof are not in the parameter cache.
    MissingParams,
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl JobFailure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }
}

pub type JobOutcome = Result<JobOutput, JobFailure>;
