//! A sector's life in messages: the task its current phase publishes, the result a worker sends
//! back, and the record that absorbs it (the sector state machine). What each phase's task
//! carries and produces is the phase's own (`phases`); this module sequences them and checks
//! what comes from the wire.

#[cfg(test)]
mod golden;
mod record;
mod result;
mod task;

pub use record::{LotusDone, LotusImport, PhaseRun, Relocation, SectorRecord, SectorState, Stale};
pub use result::{Outcome, TaskResult, Timings};
pub use task::{InvalidTask, Task, TaskHead, TaskId};

/// Version of the task and result structs and of sector records; a reader refuses newer
/// versions it cannot know.
pub const MESSAGE_VERSION: u16 = 1;

/// The version a task, result or record body gives when it is newer than
/// [`MESSAGE_VERSION`], read from its `version` field alone (whatever else the body holds, it
/// was written by a newer mesh, and this one must not guess at it).
pub fn newer_version(body: &[u8]) -> Option<u16> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u16,
    }
    crate::model::decode::<Versioned>(body)
        .ok()
        .map(|v| v.version)
        .filter(|&v| v > MESSAGE_VERSION)
}
