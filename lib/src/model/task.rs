//! Task and result messages: versioned structs, MessagePack on the wire.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{MinerId, Phase, PieceInfo, SectorNum, SectorSize, TaskId, WorkerId};
use crate::proofs::{self, RegisteredSealProof};

/// Version of the task and result structs; a reader refuses newer versions it cannot know.
pub const MESSAGE_VERSION: u16 = 1;

/// Largest task or result body accepted (the NATS default `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Longest object name or key (S3's limit on keys); each `/`-separated segment is a file name
/// of at most 255 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;
/// Most objects one task reads, one result writes or Finalize keeps (a 64GiB PC2 writes ~35).
pub const MAX_OBJECTS: usize = 1024;
/// Most pieces in one sector (the market actor allows 512 deals a sector; fillers add ~30).
pub const MAX_PIECES: usize = 4096;
/// Largest opaque proof output a message carries (PC1 output, C2 proof); real ones are a few
/// KiB, and a sector record holds both.
pub const MAX_BLOB_BYTES: usize = 128 << 10;
/// Longest failure reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest worker id a result may carry.
const MAX_WORKER_ID_BYTES: usize = 256;

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

    /// The generation the task's id names, if the id is `<miner>.<sector>.<phase>.<generation>`
    /// of this task's own miner, sector and phase.
    pub fn generation(&self) -> Option<u32> {
        let (_, generation) = self.id.0.rsplit_once('.')?;
        let generation = generation.parse().ok()?;
        (TaskId::new(self.miner, self.sector, self.phase, generation) == self.id)
            .then_some(generation)
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
    /// params match the phase, that the id is the sector's and phase's, that every object stays
    /// inside the sector's prefix (and pieces name inputs), and that piece sizes and blobs are
    /// ones a proof step can take.
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
        let prefix = crate::names::sector_prefix(self.miner, self.sector);
        for input in &self.inputs {
            check_object(input, &prefix).map_err(InvalidTask)?;
        }
        match &self.params {
            PhaseParams::AddPiece { pieces } => {
                for piece in pieces {
                    if let Some(name) = &piece.object
                        && !self.inputs.iter().any(|input| input.name == *name)
                    {
                        return Err(InvalidTask(format!(
                            "piece object '{}' is not among the task's inputs",
                            shown(name)
                        )));
                    }
                }
                check_pieces(pieces.iter().map(|p| p.size), stream_size).map_err(InvalidTask)?;
            }
            PhaseParams::PreCommit1 { piece_infos, .. }
            | PhaseParams::Commit1 { piece_infos, .. } => {
                check_pieces(piece_infos.iter().map(|p| p.size), stream_size)
                    .map_err(InvalidTask)?;
            }
            PhaseParams::PreCommit2 { pc1_output } => {
                check_blob("pc1 output", pc1_output).map_err(InvalidTask)?;
            }
            PhaseParams::Commit2 | PhaseParams::Finalize => {}
        }
        Ok(())
    }
}

/// Checks pieces' unpadded sizes: each is 127 × 2^k, and together they fit in the sector as
/// `add_piece` lays them out (so no proof step is handed sizes it cannot place).
pub(crate) fn check_pieces(
    sizes: impl ExactSizeIterator<Item = u64>,
    sector: SectorSize,
) -> Result<(), String> {
    if sizes.len() > MAX_PIECES {
        return Err(format!(
            "{} pieces, more than the {MAX_PIECES} a sector may hold",
            sizes.len()
        ));
    }
    let sizes: Vec<u64> = sizes.collect();
    if let Some(bad) = sizes.iter().find(|&&size| {
        size < 127
            || size % 127 != 0
            || !(size / 127).is_power_of_two()
            || size > sector.unpadded_bytes()
    }) {
        return Err(format!(
            "piece size {bad} is not 127 × 2^k bytes within a {sector} sector"
        ));
    }
    super::fillers(sector, &sizes).map_err(|e| e.to_string())?;
    Ok(())
}

fn check_blob(what: &str, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(format!(
            "{what} of {} bytes is larger than the {MAX_BLOB_BYTES} bytes allowed",
            bytes.len()
        ));
    }
    Ok(())
}

/// An untrusted string as an error message may quote it: escaped and cut short.
fn shown(s: &str) -> String {
    s.escape_debug().take(200).collect()
}

/// A reason as it travels in a header and stays in a sector record: control characters
/// (newlines, terminal escapes) become spaces, and it ends after [`MAX_REASON_CHARS`].
pub fn one_line(s: &str) -> String {
    s.chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Refuses object names that could escape a scratch directory and keys outside the sector:
/// a name is a relative path of safe segments, and a key is `prefix` followed by one.
pub fn check_object(object: &ObjectRef, prefix: &str) -> Result<(), String> {
    if !is_safe_path(&object.name) {
        return Err(format!(
            "object name '{}' is not a safe relative path",
            shown(&object.name)
        ));
    }
    let inside = object.key.len() <= MAX_KEY_BYTES
        && object.key.strip_prefix(prefix).is_some_and(is_safe_path);
    if !inside {
        return Err(format!(
            "object key '{}' is outside the sector's prefix '{prefix}'",
            shown(&object.key)
        ));
    }
    Ok(())
}

/// Non-empty `/`-separated segments of `[A-Za-z0-9._-]`, none of them `.` or `..`: a path that
/// stays below whatever directory or prefix it is joined to.
fn is_safe_path(path: &str) -> bool {
    path.len() <= MAX_KEY_BYTES && path.split('/').all(is_safe_segment)
}

fn is_safe_segment(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_SEGMENT_BYTES
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
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

    /// Checks what decoding cannot before a publisher applies the result: the worker id is
    /// printable, output objects stay inside the result's sector, Finalize keeps plain file
    /// names, and nothing is larger than a sector record can hold. (Whether the result belongs
    /// to the sector at all is [`SectorRecord::fence`](super::SectorRecord::fence)'s job.)
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
        let prefix = crate::names::sector_prefix(self.miner, self.sector);
        for object in outputs {
            check_object(object, &prefix)?;
        }
        match output {
            PhaseOutput::AddPiece { piece_infos } if piece_infos.len() > MAX_PIECES => {
                Err(format!(
                    "{} pieces, more than the {MAX_PIECES} allowed",
                    piece_infos.len()
                ))
            }
            PhaseOutput::PreCommit1 { pc1_output } => check_blob("pc1 output", pc1_output),
            PhaseOutput::Commit2 { proof } => check_blob("proof", proof),
            PhaseOutput::Finalize { kept } => {
                if kept.len() > MAX_OBJECTS {
                    return Err(format!(
                        "{} kept files, more than the {MAX_OBJECTS} allowed",
                        kept.len()
                    ));
                }
                match kept.iter().find(|k| !is_safe_segment(k)) {
                    Some(bad) => Err(format!("kept file '{}' is not a file name", shown(bad))),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE_BYTES} bytes allowed")]
    TooLarge(usize),
    #[error("undecodable message body: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    #[error("undecodable JSON body: {0}")]
    MalformedJson(#[from] serde_json::Error),
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

/// [`decode`] for the JSON bodies of the registry buckets (workers, miners, drain marks), which
/// stay JSON so that `nats kv get` shows them.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(serde_json::from_slice(bytes)?)
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
        ap.params = PhaseParams::AddPiece {
            pieces: vec![piece("piece-0", 1016)],
        };
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
            ap.params = PhaseParams::AddPiece { pieces };
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

    #[test]
    fn results_carry_only_safe_objects_and_bounded_fields() {
        let task = sample_task();
        let result = |outcome| TaskResult {
            version: MESSAGE_VERSION,
            task: task.id.clone(),
            miner: task.miner,
            sector: task.sector,
            phase: Phase::Finalize,
            attempt: 1,
            worker: WorkerId("w1".into()),
            outcome,
            timings: Timings::default(),
            finished_ms: 0,
        };
        let kept = |kept: Vec<&str>| Outcome::Done {
            outputs: vec![],
            output: PhaseOutput::Finalize {
                kept: kept.into_iter().map(String::from).collect(),
            },
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
            output: PhaseOutput::Commit1,
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
            output: PhaseOutput::Commit2 {
                proof: ByteBuf::from(vec![0; MAX_BLOB_BYTES + 1]),
            },
        };
        assert!(result(proof).validate().unwrap_err().contains("proof"));
        let mut odd_worker = result(kept(vec!["p_aux"]));
        odd_worker.worker = WorkerId("w\x1b[2J".into());
        assert!(odd_worker.validate().is_err());

        let reason = one_line(&format!("line\nbreak\x1b[31m{}", "x".repeat(5000)));
        assert!(reason.starts_with("line break [31m"), "{reason}");
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS);
        assert_eq!(one_line(&reason), reason);
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
        assert!(matches!(
            decode_json::<u32>(&big),
            Err(DecodeError::TooLarge(_))
        ));
        assert!(matches!(
            decode_json::<u32>(b"{"),
            Err(DecodeError::MalformedJson(_))
        ));
    }
}
