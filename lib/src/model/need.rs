//! What one task of a phase and size needs of a machine, field for field lotus's `Resources`
//! (`storage/sealer/storiface/resources.go`): each phase file gives its row, the worker's
//! resource table overrides them, and the ledger counts them.

use serde::{Deserialize, Serialize};

/// Share of a machine's threads a multi-threaded task (`max_parallelism = -1`) takes, as lotus
/// computes it: 92 % (16 threads → 14, 64 → 58).
const PARALLEL_PERCENT: u32 = 92;

/// What one task needs, field for field lotus's `Resources`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Need {
    /// Memory that must be free for decent performance.
    pub min_memory: u64,
    /// Peak memory (RAM and swap together).
    pub max_memory: u64,
    /// GPUs the task uses when the worker has some (1.0 = a whole GPU).
    pub gpu_utilization: f64,
    /// CPU threads without a GPU: -1 means 92 % of the machine's threads.
    pub max_parallelism: i32,
    /// CPU threads when a GPU is used; 0 means as `max_parallelism`.
    pub max_parallelism_gpu: i32,
    /// Memory shared by all tasks of the kind (parameters, parent cache), checked on top of
    /// `min_memory` and `max_memory`.
    pub base_min_memory: u64,
    /// Tasks of this phase and size at once on one worker; 0 means no limit.
    pub max_concurrent: u32,
    /// mesh's own: never run this without a GPU (lotus runs GPU phases on the CPU when a worker
    /// has none).
    pub gpu_required: bool,
}

impl Need {
    /// CPU threads the task takes on a machine with `cpus` threads and `gpus` GPUs (lotus's
    /// `Resources.Threads`).
    pub fn threads(&self, cpus: u32, gpus: usize) -> u32 {
        let mut parallelism = self.max_parallelism;
        if self.gpu_utilization > 0.0 && gpus > 0 && self.max_parallelism_gpu != 0 {
            parallelism = self.max_parallelism_gpu;
        }
        if parallelism == -1 {
            let n = cpus * PARALLEL_PERCENT / 100;
            return if n == 0 { cpus } else { n };
        }
        parallelism.max(0) as u32
    }

    /// Whether the task would use a GPU on a machine with `gpus` GPUs.
    pub fn uses_gpu(&self, gpus: usize) -> bool {
        gpus > 0 && self.gpu_utilization > 0.0
    }
}
