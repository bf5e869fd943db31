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
/// versions it cannot know. A change that an older reader would misread or fail to decode (a
/// field it does not know the meaning of, a new proof type or phase parameter) takes the next
/// version; the `version` and `id` fields keep their names and types in every version, so that
/// an older worker can still say which task it leaves for a newer one.
pub const MESSAGE_VERSION: u16 = 1;

/// Set (to anything) in a process's environment, it writes and reads [`MESSAGE_VERSION`] + 1:
/// a stand-in for the next release in upgrade tests, whose messages look the same but say they
/// are newer. Never set it in production.
pub const NEXT_VERSION_ENV: &str = "MESH_TEST_NEXT_VERSION";

/// The message version this process writes and reads: [`MESSAGE_VERSION`], or one more under
/// [`NEXT_VERSION_ENV`].
pub fn message_version() -> u16 {
    static VERSION: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        if std::env::var_os(NEXT_VERSION_ENV).is_some() {
            MESSAGE_VERSION + 1
        } else {
            MESSAGE_VERSION
        }
    })
}

/// The version a task, result or record body gives when it is newer than
/// [`message_version`], read from its `version` field alone (whatever else the body holds, it
/// was written by a newer mesh, and this one must not guess at it).
pub fn newer_version(body: &[u8]) -> Option<u16> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u16,
    }
    crate::model::decode::<Versioned>(body)
        .ok()
        .map(|v| v.version)
        .filter(|&v| v > message_version())
}
