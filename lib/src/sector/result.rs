//! The result message: the durable answer to one task attempt.

use serde::{Deserialize, Serialize};

use super::TaskId;
use crate::model::{MAX_OBJECTS, MinerId, ObjectRef, SectorNum, WorkerId, check_object, shown};
use crate::names;
use crate::phases::{Output, Phase};

/// Longest worker id a result may carry.
const MAX_WORKER_ID_BYTES: usize = 256;

/// Timings of one attempt, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub download_ms: u64,
    pub run_ms: u64,
    pub upload_ms: u64,
    /// Bytes the attempt read from the store (its inputs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read_bytes: u64,
    /// Bytes the attempt wrote to the store (its outputs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub written_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done {
        outputs: Vec<ObjectRef>,
        output: Output,
    },
    /// The task can never succeed as it is (bad input, corrupt object, attempts exhausted).
    Failed { reason: String },
    /// The task was for the worker holding the sector's data, and that worker no longer has
    /// it (its sector directory is gone): the sector goes back to PreCommit1 elsewhere.
    Lost { reason: String },
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

    /// Checks what decoding cannot before a publisher applies the result: the worker id is
    /// printable, output objects stay inside the result's sector, and the output is one its
    /// phase accepts (plain file names, nothing larger than a sector record can hold). Whether
    /// the result belongs to the sector at all is [`SectorRecord::fence`](super::SectorRecord::fence)'s
    /// job.
    pub fn validate(&self) -> Result<(), String> {
        let worker = &self.worker.0;
        if worker.is_empty()
            || worker.len() > MAX_WORKER_ID_BYTES
            || worker.chars().any(char::is_control)
        {
            return Err(format!("worker id '{}' is not printable", shown(worker)));
        }
        let Outcome::Done { outputs, output } = &self.outcome else {
            return Ok(());
        };
        if outputs.len() > MAX_OBJECTS {
            return Err(format!(
                "{} outputs, more than the {MAX_OBJECTS} allowed",
                outputs.len()
            ));
        }
        let prefix = names::sector_prefix(self.miner, self.sector);
        for object in outputs {
            check_object(object, &prefix)?;
        }
        output.phase().check_output(output)
    }
}
#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::model::MAX_BLOB_BYTES;
    use crate::phases::{c2, fin};
    use crate::sector::{MESSAGE_VERSION, TaskId};

    #[test]
    fn results_carry_only_safe_objects_and_bounded_fields() {
        let miner: MinerId = "f01000".parse().unwrap();
        let task = TaskId::new(miner, SectorNum(7), Phase::PreCommit1, 0);
        let result = |outcome| TaskResult {
            version: MESSAGE_VERSION,
            task: task.clone(),
            miner,
            sector: SectorNum(7),
            phase: Phase::Finalize,
            attempt: 1,
            worker: WorkerId("w1".into()),
            outcome,
            timings: Timings::default(),
            finished_ms: 0,
        };
        let kept = |kept: Vec<&str>| Outcome::Done {
            outputs: vec![],
            output: Output::Finalize(fin::Output {
                kept: kept.into_iter().map(String::from).collect(),
            }),
        };
        result(kept(vec!["p_aux", "t_aux"])).validate().unwrap();
        for bad in ["../sealed", "a/b", "", ".."] {
            let err = result(kept(vec![bad])).validate().unwrap_err();
            assert!(err.contains("not a file name"), "{err}");
        }
        let outputs = |name: &str, key: &str| Outcome::Done {
            outputs: vec![ObjectRef {
                name: name.into(),
                key: key.into(),
                size: 1,
                sha256: [0; 32],
            }],
            output: Output::Commit1,
        };
        result(outputs("c1.out", "f01000/7/c1-1/c1.out"))
            .validate()
            .unwrap();
        for (name, key) in [
            ("c1.out", "f01000/8/c1-1/c1.out"),
            ("c1.out", "f01000/7/"),
            ("c1.out", "f01000/7//c1.out"),
            ("c1.out", "f01000/7/c1-1/%2e%2e/x"),
            ("../c1.out", "f01000/7/c1-1/c1.out"),
        ] {
            assert!(
                result(outputs(name, key)).validate().is_err(),
                "{name} {key}"
            );
        }
        let proof = Outcome::Done {
            outputs: vec![],
            output: Output::Commit2(c2::Output {
                proof: ByteBuf::from(vec![0; MAX_BLOB_BYTES + 1]),
            }),
        };
        assert!(result(proof).validate().unwrap_err().contains("proof"));
        let mut odd_worker = result(kept(vec!["p_aux"]));
        odd_worker.worker = WorkerId("w\x1b[2J".into());
        assert!(odd_worker.validate().is_err());
    }
}
