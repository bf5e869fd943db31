//! The job protocol between a worker (or publisher) and the child process that runs one proof
//! call. The parent writes a [`Job`] file, the child writes a [`JobOutcome`] file; both MessagePack.
//! Proof calls are synchronous, long and read process-global `FIL_PROOFS_*` settings, so each runs
//! in a process of its own that the parent can watch, heartbeat for and kill.

use serde::{Deserialize, Serialize};

use crate::model::{RegisteredSealProof, SectorIdentity};
use crate::phases;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// One sealing phase of one sector (the phase file makes the proof call).
    Phase(phases::Job),
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
            Job::Phase(job) => job.phase().title(),
            Job::Verify { .. } => "verify seal",
            Job::GenerateParams { .. } => "generate parameters",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobOutput {
    Phase(phases::Output),
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
