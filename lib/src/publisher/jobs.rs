//! `mesh-publisher jobs`, the mesh's `lotus-miner sealing jobs`: every task of an active
//! sector, running (on which worker, since when, which attempt) or queued, from the sector
//! records and the workers' registry.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::broker::workers::{self, RunningTask};
use crate::model::{MinerId, SectorNum, SectorSize, WorkerId};
use crate::phases::Phase;
use crate::sector::{SectorState, TaskId};

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A worker runs its proof.
    Running,
    /// In its stream, or taken by a worker that is still downloading its inputs.
    Queued,
    /// Not published yet: a publisher of the miner (re)publishes it at its next sweep.
    Unpublished,
    /// Waits for lotus to ask for it (a lotus sector's Commit1 before the seed).
    Lotus,
}

impl JobState {
    fn label(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Queued => "queued",
            JobState::Unpublished => "unpublished",
            JobState::Lotus => "waits for lotus",
        }
    }
}

/// One task of an active sector.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub miner: MinerId,
    pub sector: SectorNum,
    pub phase: Phase,
    pub size: SectorSize,
    pub task: TaskId,
    pub state: JobState,
    /// The worker running it.
    pub worker: Option<WorkerId>,
    /// The attempt running (deliveries less hand-backs).
    pub attempt: Option<u32>,
    /// Since it started running, or since its sector began waiting for it.
    pub since_ms: u64,
}

/// The tasks of every active sector (of `miner`, or of all miners): running ones first, oldest
/// first.
pub async fn jobs(broker: &Broker, miner: Option<MinerId>) -> anyhow::Result<Vec<Job>> {
    let records = super::status::sectors(broker, miner).await?;
    let mut running: HashMap<TaskId, (WorkerId, RunningTask)> = HashMap::new();
    for worker in workers::list(broker).await? {
        for task in worker.running {
            running.insert(task.task.clone(), (worker.id.clone(), task));
        }
    }
    let mut jobs: Vec<Job> = records
        .into_iter()
        .filter_map(|record| {
            let SectorState::Active {
                phase,
                task,
                published,
                since_ms,
                ..
            } = &record.state
            else {
                return None;
            };
            let mut job = Job {
                miner: record.miner,
                sector: record.sector,
                phase: *phase,
                size: record.size,
                task: task.clone(),
                state: JobState::Queued,
                worker: None,
                attempt: None,
                since_ms: *since_ms,
            };
            if let Some((worker, run)) = running.remove(task) {
                job.state = JobState::Running;
                job.worker = Some(worker);
                job.attempt = Some(run.attempt);
                job.since_ms = run.since_ms;
            } else if record.awaits_lotus() {
                job.state = JobState::Lotus;
            } else if !published {
                job.state = JobState::Unpublished;
            }
            Some(job)
        })
        .collect();
    jobs.sort_by_key(|j| (j.state != JobState::Running, j.since_ms, j.miner, j.sector));
    Ok(jobs)
}

/// A table of `jobs` as `lotus-miner sealing jobs` shows them, ages counted to `now_ms`.
pub fn render(jobs: &[Job], now_ms: u64) -> String {
    let mut rows = vec![
        [
            "miner", "sector", "phase", "size", "state", "worker", "attempt", "age",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for job in jobs {
        let age = Duration::from_secs(now_ms.saturating_sub(job.since_ms) / 1000);
        rows.push(vec![
            job.miner.to_string(),
            job.sector.to_string(),
            job.phase.token().to_string(),
            job.size.label().to_string(),
            job.state.label().to_string(),
            job.worker
                .as_ref()
                .map_or("-".to_string(), |w| crate::model::shown(&w.0)),
            job.attempt.map_or("-".to_string(), |a| a.to_string()),
            humantime::format_duration(age).to_string(),
        ]);
    }
    crate::render::table(&rows)
}
