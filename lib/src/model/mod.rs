//! The task model: identifiers, pieces, task and result messages, and the sector state machine.

#[cfg(test)]
mod fuzz;
mod ids;
mod piece;
mod sector;
mod task;

pub use ids::{MinerId, ParseIdError, Phase, SectorNum, SectorSize, TaskClass, TaskId, WorkerId};
pub use piece::{PieceInfo, PiecesDoNotFit, fillers, piece_size_for};
pub use sector::{SectorRecord, SectorState, Stale};
pub use task::{
    DecodeError, InvalidTask, MAX_BLOB_BYTES, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_OBJECTS,
    MAX_PIECES, MAX_REASON_CHARS, MESSAGE_VERSION, ObjectRef, Outcome, PhaseOutput, PhaseParams,
    PieceSpec, Task, TaskHead, TaskResult, Timings, check_object, decode, decode_json, encode,
    one_line,
};
