//! Task and result messages: versioned structs, MessagePack on the wire.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{MinerId, Phase, PieceInfo, SectorNum, TaskId, WorkerId};
use crate::proofs::{self, RegisteredSealProof};

/// Version of the task and result structs; a reader refuses newer versions it cannot know.
pub const MESSAGE_VERSION: u16 = 1;

/// Largest task or result body accepted (the NATS default `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// An object in the store: where it is, how big, and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The file's path inside an attempt's scratch directory, e.g. `cache/p_aux`.
    pub name: String,
    /// The object's key in the store, e.g. `f01000/12/pc1-3fa9/cache/p_aux`.
    pub key: String,
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
}

/// One piece a sector is built from, as the publisher asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceSpec {
    /// Name of the piece's object among the task inputs; `None` for zeros.
    pub object: Option<String>,
    /// Unpadded size the piece takes (127 × 2^k).
    pub size: u64,
}

/// What a phase needs besides its input objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseParams {
    AddPiece {
        pieces: Vec<PieceSpec>,
    },
    PreCommit1 {
        #[serde(with = "serde_bytes")]
        ticket: [u8; 32],
        piece_infos: Vec<PieceInfo>,
    },
    PreCommit2 {
        pc1_output: ByteBuf,
    },
    Commit1 {
        #[serde(with = "serde_bytes")]
        ticket: [u8; 32],
        #[serde(with = "serde_bytes")]
        seed: [u8; 32],
        #[serde(with = "serde_bytes")]
        comm_r: [u8; 32],
        #[serde(with = "serde_bytes")]
        comm_d: [u8; 32],
        piece_infos: Vec<PieceInfo>,
    },
    Commit2,
    Finalize,
}

impl PhaseParams {
    pub fn phase(&self) -> Phase {
        match self {
            PhaseParams::AddPiece { .. } => Phase::AddPiece,
            PhaseParams::PreCommit1 { .. } => Phase::PreCommit1,
            PhaseParams::PreCommit2 { .. } => Phase::PreCommit2,
            PhaseParams::Commit1 { .. } => Phase::Commit1,
            PhaseParams::Commit2 => Phase::Commit2,
            PhaseParams::Finalize => Phase::Finalize,
        }
    }
}

/// One phase of one sector, for any worker to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub version: u16,
    pub id: TaskId,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub proof: RegisteredSealProof,
    pub phase: Phase,
    /// Lotus priority of the phase; lower runs first.
    pub priority: i8,
    pub has_deals: bool,
    /// Deliveries after which a failing task is dead-lettered instead of retried.
    pub max_attempts: u32,
    pub inputs: Vec<ObjectRef>,
    pub params: PhaseParams,
    /// The worker that holds this task's inputs locally, when locality matters (32GiB PC1→C1);
    /// any worker may run it once that worker is gone.
    pub holder: Option<WorkerId>,
    /// A simulation sector's task: only workers with the synthetic executor run it, and only
    /// they run it (see `proofs::synthetic`).
    #[serde(default)]
    pub synthetic: bool,
    pub created_ms: u64,
}

/// The fields that say whose task a body is, read on their own from a body that does not decode
/// as a whole (say, an unknown proof type), so that its sector can still be failed with the
/// reason instead of waiting forever.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskHead {
    pub id: TaskId,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
}

impl Task {
    /// The subject class: deal sectors go first within a miner.
    pub fn class(&self) -> super::TaskClass {
        super::TaskClass::of(self.has_deals)
    }

    pub fn head(&self) -> TaskHead {
        TaskHead {
            id: self.id.clone(),
            miner: self.miner,
            sector: self.sector,
            phase: self.phase,
        }
    }
}

/// A task message that cannot be run as it is: it fails for good, whoever runs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTask(pub String);

impl Task {
    /// Checks what decoding cannot: versions, that the proof matches the stream's size, that the
    /// params match the phase, and that every object stays inside the sector's prefix.
    pub fn validate(&self, stream_size: super::SectorSize) -> Result<(), InvalidTask> {
        if self.version > MESSAGE_VERSION {
            return Err(InvalidTask(format!(
                "task version {} is newer than this worker understands ({MESSAGE_VERSION}); \
                 upgrade the worker",
                self.version
            )));
        }
        match proofs::proof_size(self.proof) {
            Some(size) if size == stream_size => {}
            Some(size) => {
                return Err(InvalidTask(format!(
                    "proof type {:?} is for {size} sectors but the task is on the {stream_size} stream",
                    self.proof
                )));
            }
            None => {
                return Err(InvalidTask(format!(
                    "proof type {:?} has a sector size the mesh does not serve",
                    self.proof
                )));
            }
        }
        if self.params.phase() != self.phase {
            return Err(InvalidTask(format!(
                "task says phase {} but carries parameters for {}",
                self.phase,
                self.params.phase()
            )));
        }
        let prefix = crate::names::sector_prefix(self.miner, self.sector);
        for input in &self.inputs {
            check_object(input, &prefix).map_err(InvalidTask)?;
        }
        Ok(())
    }
}

/// Refuses object names that could escape a scratch directory and keys outside the sector.
pub fn check_object(object: &ObjectRef, prefix: &str) -> Result<(), String> {
    let name_ok = !object.name.is_empty()
        && !object.name.starts_with('/')
        && object.name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !name_ok {
        return Err(format!(
            "object name '{}' is not a safe relative path",
            object.name
        ));
    }
    if !object.key.starts_with(prefix) || object.key.split('/').any(|p| p == "..") {
        return Err(format!(
            "object key '{}' is outside the sector's prefix '{prefix}'",
            object.key
        ));
    }
    Ok(())
}

/// Timings of one attempt, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub download_ms: u64,
    pub run_ms: u64,
    pub upload_ms: u64,
}

/// What a finished phase produced besides its output objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseOutput {
    AddPiece {
        piece_infos: Vec<PieceInfo>,
    },
    PreCommit1 {
        pc1_output: ByteBuf,
    },
    PreCommit2 {
        #[serde(with = "serde_bytes")]
        comm_r: [u8; 32],
        #[serde(with = "serde_bytes")]
        comm_d: [u8; 32],
    },
    Commit1,
    Commit2 {
        proof: ByteBuf,
    },
    /// The cache files Finalize kept (the rest are dropped).
    Finalize {
        kept: Vec<String>,
    },
}

impl PhaseOutput {
    pub fn phase(&self) -> Phase {
        match self {
            PhaseOutput::AddPiece { .. } => Phase::AddPiece,
            PhaseOutput::PreCommit1 { .. } => Phase::PreCommit1,
            PhaseOutput::PreCommit2 { .. } => Phase::PreCommit2,
            PhaseOutput::Commit1 => Phase::Commit1,
            PhaseOutput::Commit2 { .. } => Phase::Commit2,
            PhaseOutput::Finalize { .. } => Phase::Finalize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done {
        outputs: Vec<ObjectRef>,
        output: PhaseOutput,
    },
    /// The task can never succeed as it is (bad input, corrupt object, attempts exhausted).
    Failed { reason: String },
}

/// The durable answer to one task attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub version: u16,
    pub task: TaskId,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
    /// JetStream delivery count of the attempt that produced this result.
    pub attempt: u32,
    pub worker: WorkerId,
    pub outcome: Outcome,
    pub timings: Timings,
    pub finished_ms: u64,
}

impl TaskResult {
    /// `Nats-Msg-Id` of the result: a re-sent result of the same attempt is deduplicated.
    pub fn message_id(&self) -> String {
        format!("{}.{}.{}", self.task, self.attempt, self.worker)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE_BYTES} bytes allowed")]
    TooLarge(usize),
    #[error("undecodable message body: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("mesh messages always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SectorSize;

    pub(crate) fn sample_task() -> Task {
        let miner: MinerId = "f01000".parse().unwrap();
        Task {
            version: MESSAGE_VERSION,
            id: TaskId::new(miner, SectorNum(7), Phase::PreCommit1, 0),
            miner,
            sector: SectorNum(7),
            proof: crate::proofs::seal_proof(SectorSize::KiB2),
            phase: Phase::PreCommit1,
            priority: Phase::PreCommit1.priority(),
            has_deals: false,
            max_attempts: 5,
            inputs: vec![ObjectRef {
                name: "unsealed".into(),
                key: "f01000/7/ap-1a2b/unsealed".into(),
                size: 2048,
                sha256: [7; 32],
            }],
            params: PhaseParams::PreCommit1 {
                ticket: [1; 32],
                piece_infos: vec![PieceInfo {
                    comm_p: [2; 32],
                    size: 2032,
                }],
            },
            holder: None,
            synthetic: false,
            created_ms: 1,
        }
    }

    #[test]
    fn tasks_round_trip_and_validate() {
        let task = sample_task();
        let back: Task = decode(&encode(&task)).unwrap();
        assert_eq!(back, task);
        task.validate(SectorSize::KiB2).unwrap();
    }

    #[test]
    fn invalid_tasks_say_why() {
        let task = sample_task();
        let err = task.validate(SectorSize::GiB32).unwrap_err().to_string();
        assert!(err.contains("2KiB") && err.contains("32GiB"), "{err}");

        let mut wrong_phase = sample_task();
        wrong_phase.phase = Phase::Commit2;
        assert!(wrong_phase.validate(SectorSize::KiB2).is_err());

        for (name, key) in [
            ("../etc/passwd", "f01000/7/x"),
            ("/abs", "f01000/7/x"),
            ("cache/../../x", "f01000/7/x"),
            ("unsealed", "f01001/7/x"),
            ("unsealed", "f01000/7/../../f01001/7/x"),
        ] {
            let mut bad = sample_task();
            bad.inputs[0].name = name.into();
            bad.inputs[0].key = key.into();
            assert!(bad.validate(SectorSize::KiB2).is_err(), "{name} {key}");
        }

        let mut future = sample_task();
        future.version = MESSAGE_VERSION + 1;
        assert!(
            future
                .validate(SectorSize::KiB2)
                .unwrap_err()
                .0
                .contains("upgrade")
        );
    }

    #[test]
    fn garbage_and_oversized_bodies_are_refused() {
        assert!(matches!(
            decode::<Task>(b"garbage"),
            Err(DecodeError::Malformed(_))
        ));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<Task>(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
