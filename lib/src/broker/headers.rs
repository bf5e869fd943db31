//! The `Mesh-*` headers of task and result messages and dead letters: what the message is, in
//! words the `nats` CLI shows (`nats stream view MESH_RESULT`). Only for people and log
//! collectors: the body is the authority, and nothing in the mesh reads these back.

use async_nats::HeaderMap;

use crate::model::SectorSize;
use crate::names;
use crate::sector::{Outcome, Task, TaskHead, TaskResult};

fn head(headers: &mut HeaderMap, head: &TaskHead) {
    headers.insert(names::MINER_HEADER, head.miner.to_string().as_str());
    headers.insert(names::SECTOR_HEADER, head.sector.to_string().as_str());
    headers.insert(names::PHASE_HEADER, head.phase.token());
    headers.insert(names::TASK_HEADER, head.id.0.as_str());
}

/// A task's: miner, sector, phase, size, task id, message version.
pub fn task(task: &Task) -> HeaderMap {
    let mut headers = HeaderMap::new();
    head(&mut headers, &task.head());
    if let Some(size) = SectorSize::of_proof(task.proof) {
        headers.insert(names::SIZE_HEADER, size.label());
    }
    headers.insert(names::VERSION_HEADER, task.version.to_string().as_str());
    headers
}

/// A result's: miner, sector, phase, task id, attempt, worker, outcome, message version.
pub fn result(result: &TaskResult) -> HeaderMap {
    let mut headers = HeaderMap::new();
    head(
        &mut headers,
        &TaskHead {
            id: result.task.clone(),
            miner: result.miner,
            sector: result.sector,
            phase: result.phase,
        },
    );
    headers.insert(names::ATTEMPT_HEADER, result.attempt.to_string().as_str());
    headers.insert(names::WORKER_HEADER, result.worker.0.as_str());
    let outcome = match result.outcome {
        Outcome::Done { .. } => "done",
        Outcome::Failed { .. } => "failed",
        Outcome::Lost { .. } => "lost",
    };
    headers.insert(names::OUTCOME_HEADER, outcome);
    headers.insert(names::VERSION_HEADER, result.version.to_string().as_str());
    headers
}

/// Adds a dead letter's task to its headers, when its body says which it is.
pub fn letter(headers: &mut HeaderMap, task: &TaskHead) {
    head(headers, task);
}
