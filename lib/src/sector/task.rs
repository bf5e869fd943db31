//! The task message: one phase of one sector, for any worker to run.

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::MESSAGE_VERSION;
use super::message_version;
use crate::model::{
    MAX_OBJECTS, MinerId, ObjectRef, RegisteredSealProof, SectorNum, SectorSize, TaskClass,
    WorkerId, check_object, shown,
};
use crate::names;
use crate::phases::{Params, Phase};

/// Identifies one task: a sector's phase, and how many times that phase was driven afresh.
/// It is also the `Nats-Msg-Id` of the task message, so re-publishing it is deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl TaskId {
    pub fn new(miner: MinerId, sector: SectorNum, phase: Phase, generation: u32) -> Self {
        TaskId(format!("{miner}.{sector}.{phase}.{generation}"))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    pub params: Params,
    /// The worker that holds this task's inputs locally, when locality matters (32GiB PC1→C1);
    /// any worker may run it once that worker is gone.
    pub holder: Option<WorkerId>,
    /// A simulation sector's task: only workers with the synthetic executor run it, and only
    /// they run it (see `proofs::synthetic`).
    #[serde(default)]
    pub synthetic: bool,
    /// On the holder, upload what the phase wrote as a worker not holding the sector would
    /// (what `--back-up-held` does for every sector): a lotus sector's replica and cache must
    /// be in the store for lotus to download.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub back_up: bool,
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

/// A task message that cannot be run as it is: it fails for good, whoever runs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTask(pub String);

impl TaskHead {
    /// The generation, when the id is `<miner>.<sector>.<phase>.<generation>` of this very
    /// head. An id that is not is no sector's task (the publisher would fence a result of it
    /// off) and may be as long as a message: it goes into no header and no result.
    pub fn generation(&self) -> Option<u32> {
        let (_, generation) = self.id.0.rsplit_once('.')?;
        let generation = generation.parse().ok()?;
        (TaskId::new(self.miner, self.sector, self.phase, generation) == self.id)
            .then_some(generation)
    }
}

impl Task {
    /// The subject class: deal sectors go first within a miner.
    pub fn class(&self) -> TaskClass {
        TaskClass::of(self.has_deals)
    }

    /// The generation the task's id names, if the id is `<miner>.<sector>.<phase>.<generation>`
    /// of this task's own miner, sector and phase.
    pub fn generation(&self) -> Option<u32> {
        self.head().generation()
    }

    pub fn head(&self) -> TaskHead {
        TaskHead {
            id: self.id.clone(),
            miner: self.miner,
            sector: self.sector,
            phase: self.phase,
        }
    }

    /// Checks what decoding cannot: versions, that the proof matches the stream's size, that the
    /// id is the sector's and phase's, that every object stays inside the sector's prefix, and
    /// what the phase checks of its parameters (that they are its own, that pieces name inputs,
    /// that piece sizes and blobs are ones a proof step can take).
    pub fn validate(&self, stream_size: SectorSize) -> Result<(), InvalidTask> {
        if self.version > message_version() {
            return Err(InvalidTask(format!(
                "task version {} is newer than this worker understands ({}); upgrade the worker",
                self.version,
                message_version()
            )));
        }
        match SectorSize::of_proof(self.proof) {
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
        // The id names the attempt's scratch directory and the result the publisher fences:
        // it must be this very sector's and phase's.
        if self.generation().is_none() {
            return Err(InvalidTask(format!(
                "task id '{}' is not {}.{}.{}.<generation>",
                shown(&self.id.0),
                self.miner,
                self.sector,
                self.phase
            )));
        }
        if self.inputs.len() > MAX_OBJECTS {
            return Err(InvalidTask(format!(
                "task has {} inputs, more than the {MAX_OBJECTS} allowed",
                self.inputs.len()
            )));
        }
        let prefix = names::sector_prefix(self.miner, self.sector);
        for input in &self.inputs {
            check_object(input, &prefix).map_err(InvalidTask)?;
        }
        self.phase
            .check_params(&self.params, &self.inputs, stream_size)
            .map_err(InvalidTask)
    }
}
#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{PieceInfo, PieceSpec, decode, encode};
    use crate::phases::{ap, pc1};

    pub(crate) fn sample_task() -> Task {
        let miner: MinerId = "f01000".parse().unwrap();
        Task {
            version: MESSAGE_VERSION,
            id: TaskId::new(miner, SectorNum(7), Phase::PreCommit1, 0),
            miner,
            sector: SectorNum(7),
            proof: SectorSize::KiB2.seal_proof(),
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
            params: Params::PreCommit1(pc1::Params {
                ticket: [1; 32],
                piece_infos: vec![PieceInfo {
                    comm_p: [2; 32],
                    size: 2032,
                }],
            }),
            holder: None,
            synthetic: false,
            back_up: false,
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

        // An id that is not this sector's and phase's would name another scratch directory.
        for id in [
            "../../etc",
            "f01000.7.pc1.x",
            "f01000.8.pc1.0",
            "f01000.7.pc2.0",
            "f01000.7.pc1.01",
        ] {
            let mut bad = sample_task();
            bad.id = TaskId(id.into());
            assert_eq!(bad.generation(), None, "{id}");
            let err = bad.validate(SectorSize::KiB2).unwrap_err().0;
            assert!(err.contains("f01000.7.pc1.<generation>"), "{err}");
        }
        let mut redriven = sample_task();
        redriven.id = TaskId::new(redriven.miner, redriven.sector, redriven.phase, 3);
        assert_eq!(redriven.generation(), Some(3));

        // AddPiece reads its pieces from the task's inputs, and they must fit the sector.
        let mut ap = sample_task();
        ap.phase = Phase::AddPiece;
        ap.id = TaskId::new(ap.miner, ap.sector, ap.phase, 0);
        ap.inputs[0].name = "piece-0".into();
        ap.inputs[0].key = "f01000/7/piece-0".into();
        let piece = |object: &str, size| PieceSpec {
            object: Some(object.into()),
            size,
        };
        ap.params = Params::AddPiece(ap::Params {
            pieces: vec![piece("piece-0", 1016)],
        });
        ap.validate(SectorSize::KiB2).unwrap();
        for (pieces, why) in [
            (
                vec![piece("../../etc/shadow", 1016)],
                "not among the task's inputs",
            ),
            (vec![piece("piece-0", 0)], "127 × 2^k"),
            (vec![piece("piece-0", 1000)], "127 × 2^k"),
            (vec![piece("piece-0", 4064)], "127 × 2^k"),
            (vec![piece("piece-0", 1016); 3], "do not fit"),
        ] {
            ap.params = Params::AddPiece(ap::Params { pieces });
            let err = ap.validate(SectorSize::KiB2).unwrap_err().0;
            assert!(err.contains(why), "{err}");
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
}
