//! The `mesh-workers` bucket: what each live worker serves, holds and runs, as the worker
//! publishes it (see `worker::registry`) and the autoscaler and `mesh-publisher workers` read it.

use serde::{Deserialize, Serialize};

use super::{Broker, BrokerError};
use crate::model::{MinerId, SectorNum, SectorSize, WorkerId};
use crate::names;
use crate::phases::Phase;
use crate::resources::{Machine, Usage};
use crate::sector::TaskId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    pub task: TaskId,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
    pub size: SectorSize,
    pub attempt: u32,
    pub since_ms: u64,
}

/// A live worker as others see it (JSON, so `nats kv get mesh-workers <id>` is readable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub pid: u32,
    pub version: String,
    /// The task message version it reads (`sector::message_version`); workers older than this
    /// field read version 1.
    #[serde(default = "first_message_version")]
    pub message_version: u16,
    /// The machine as the worker schedules on it (detected, or declared by its operator).
    pub machine: Machine,
    pub phases: Vec<Phase>,
    pub sizes: Vec<SectorSize>,
    /// Cap on tasks at once; `None` when the resource table alone decides.
    pub slots: Option<u32>,
    /// `proofs`, or `synthetic` for a simulation worker.
    #[serde(default)]
    pub executor: String,
    /// What the running tasks hold, by the resource table.
    pub usage: Usage,
    pub running: Vec<RunningTask>,
    /// Not taking tasks: shutting down, or held by the autoscaler's drain mark.
    pub draining: bool,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
}

fn first_message_version() -> u16 {
    1
}

impl WorkerRecord {
    /// Tasks this worker holds: taken (counted at once) or running (listed once started).
    pub fn busy(&self) -> usize {
        self.running.len().max(self.usage.tasks as usize)
    }
}

/// Every live worker in the registry, by id. Entries that do not decode (another version) are
/// skipped.
pub async fn list(broker: &Broker) -> Result<Vec<WorkerRecord>, BrokerError> {
    let mut out: Vec<WorkerRecord> = broker
        .json_entries(names::WORKERS_BUCKET)
        .await?
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
