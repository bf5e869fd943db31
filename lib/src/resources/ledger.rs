//! The ledger of what a worker's running tasks hold, and the one check that decides whether
//! another task fits, as lotus's scheduler decides it (`CanHandleRequest`): minimum memory
//! against RAM, peak memory against RAM and swap, threads against CPU threads, GPU use against
//! GPUs, plus the per-kind `max_concurrent`, the worker's slot cap and its scratch space.
//!
//! A task prepares (downloads its inputs) before it runs. Memory, scratch and slots are held
//! from the take to the end; threads and GPU only while it runs. A GPU task's threads and GPU
//! count, while it prepares, against a preparing window of one machine's worth, as in lotus:
//! a transfer never holds a GPU, and the next Commit2 fetches its input while one proves. A
//! task without a GPU is taken only when its threads are free beside those running and those
//! promised to tasks preparing, so that it never waits (and never jumps the fair share).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Machine;
use super::cores::Cores;
use crate::model::{Need, SectorSize};
use crate::phases::Phase;
use crate::units::human_bytes;

/// GPU shares are counted in thousandths so that sums are exact.
const GPU_UNITS: f64 = 1000.0;

/// What one task of a phase and size holds on this machine while it runs: its table entry
/// resolved for the machine's threads and GPUs, and its scratch need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub threads: u32,
    pub min_memory: u64,
    pub max_memory: u64,
    /// Counted on top of the memory checks but not held (shared by tasks of the kind).
    pub base_memory: u64,
    /// Thousandths of a GPU; 0 on a machine without GPUs.
    pub gpu_milli: u32,
    pub gpu_required: bool,
    pub max_concurrent: u32,
    pub scratch: u64,
}

impl Claim {
    pub fn new(need: &Need, machine: &Machine, scratch: u64) -> Claim {
        let gpus = machine.gpus.len();
        Claim {
            threads: need.threads(machine.cpu_threads, gpus),
            min_memory: need.min_memory,
            max_memory: need.max_memory,
            base_memory: need.base_min_memory,
            gpu_milli: if need.uses_gpu(gpus) {
                (need.gpu_utilization * GPU_UNITS).round() as u32
            } else {
                0
            },
            gpu_required: need.gpu_required,
            max_concurrent: need.max_concurrent,
            scratch,
        }
    }
}

/// What running tasks hold, as the registry and `mesh-publisher workers` show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub tasks: u32,
    pub threads: u32,
    pub min_memory: u64,
    pub max_memory: u64,
    /// GPUs in use (1.0 = one whole GPU).
    pub gpu: f64,
    pub scratch: u64,
}

/// Why a task does not fit now (or, on an empty ledger, ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoGpu,
    Slots { slots: u32 },
    MaxConcurrent { limit: u32 },
    Threads { need: u32, free: u32 },
    Memory { need: u64, free: u64 },
    VirtualMemory { need: u64, free: u64 },
    Gpu { need: u32, free: u32 },
    Scratch { need: u64, free: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |n: &u64| human_bytes(*n);
        match self {
            Refusal::NoGpu => write!(f, "it requires a GPU and this worker has none"),
            Refusal::Slots { slots } => write!(f, "all {slots} slots are taken"),
            Refusal::MaxConcurrent { limit } => {
                write!(f, "max_concurrent {limit} of its kind already run")
            }
            Refusal::Threads { need, free } => {
                write!(f, "it needs {need} CPU threads, {free} are free")
            }
            Refusal::Memory { need, free } => write!(
                f,
                "it needs {} of memory (minimum + base), {} is free",
                b(need),
                b(free)
            ),
            Refusal::VirtualMemory { need, free } => write!(
                f,
                "it needs {} of memory and swap at its peak (maximum + base), {} is free",
                b(need),
                b(free)
            ),
            Refusal::Gpu { need, free } => write!(
                f,
                "it needs {:.2} GPU, {:.2} is free",
                *need as f64 / GPU_UNITS,
                *free as f64 / GPU_UNITS
            ),
            Refusal::Scratch { need, free } => write!(
                f,
                "it needs {} of scratch space, {} is free",
                b(need),
                b(free)
            ),
        }
    }
}

type Kind = (Phase, SectorSize);

/// Where a started task runs: the CPUs its proof is pinned to (empty: unpinned) and the GPUs it
/// was given, as indices into the machine's GPUs (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub cpus: Vec<usize>,
    pub gpus: Vec<usize>,
}

/// How a GPU claim is spread over devices: a whole GPU per full thousand thousandths, and the
/// rest on one more. A claim of at most one GPU (every entry of lotus's table) is one device.
fn gpu_shares(milli: u32) -> Vec<u32> {
    let whole = GPU_UNITS as u32;
    let mut shares = vec![whole; (milli / whole) as usize];
    if !milli.is_multiple_of(whole) {
        shares.push(milli % whole);
    }
    shares
}

/// The resources of one worker and what its running tasks hold.
#[derive(Debug, Clone)]
pub struct Ledger {
    cpus: u32,
    memory: u64,
    swap: u64,
    gpu_milli: u32,
    slots: Option<u32>,
    scratch_limit: u64,
    /// Disk the sectors this worker holds keep claimed between their phases.
    kept: u64,
    /// Everything taken; `threads` and `gpu` of running tasks only.
    used: Usage,
    gpu_used_milli: u32,
    /// Thousandths free on each GPU, by the machine's GPU index.
    gpu_free: Vec<u32>,
    /// Threads and GPU of the tasks preparing (taken, not yet running).
    preparing_threads: u32,
    preparing_gpu_milli: u32,
    per_kind: BTreeMap<Kind, u32>,
    cores: Cores,
}

impl Ledger {
    pub fn new(machine: &Machine, slots: Option<u32>, scratch_limit: u64) -> Ledger {
        Ledger {
            cpus: machine.cpu_threads,
            memory: machine.memory_bytes,
            swap: machine.swap_bytes,
            gpu_milli: machine.gpus.len() as u32 * GPU_UNITS as u32,
            slots,
            scratch_limit,
            kept: 0,
            used: Usage::default(),
            gpu_used_milli: 0,
            gpu_free: vec![GPU_UNITS as u32; machine.gpus.len()],
            preparing_threads: 0,
            preparing_gpu_milli: 0,
            per_kind: BTreeMap::new(),
            cores: Cores::new(&machine.cpu_ids),
        }
    }

    /// Whether one more task of `kind` may be taken: everything against what is taken; a GPU
    /// task's threads and GPU against the preparing window, another's threads against the
    /// machine less what runs and what prepares.
    pub fn check(&self, kind: Kind, claim: &Claim) -> Result<(), Refusal> {
        if claim.gpu_required && self.gpu_milli == 0 {
            return Err(Refusal::NoGpu);
        }
        if let Some(slots) = self.slots
            && self.used.tasks >= slots
        {
            return Err(Refusal::Slots { slots });
        }
        let running = self.per_kind.get(&kind).copied().unwrap_or(0);
        if claim.max_concurrent > 0 && running >= claim.max_concurrent {
            return Err(Refusal::MaxConcurrent {
                limit: claim.max_concurrent,
            });
        }
        let need = claim.min_memory.saturating_add(claim.base_memory);
        let free = self.memory.saturating_sub(self.used.min_memory);
        if need > free {
            return Err(Refusal::Memory { need, free });
        }
        let need = claim.max_memory.saturating_add(claim.base_memory);
        let free = self
            .memory
            .saturating_add(self.swap)
            .saturating_sub(self.used.max_memory);
        if need > free {
            return Err(Refusal::VirtualMemory { need, free });
        }
        if claim.gpu_milli > 0 {
            self.fits(claim, self.preparing_threads, self.preparing_gpu_milli)?;
        } else {
            let threads = self.preparing_threads.saturating_add(self.used.threads);
            self.fits(claim, threads, 0)?;
        }
        let free = self
            .scratch_limit
            .saturating_sub(self.used.scratch)
            .saturating_sub(self.kept);
        if claim.scratch > free {
            return Err(Refusal::Scratch {
                need: claim.scratch,
                free,
            });
        }
        Ok(())
    }

    /// Whether a task's threads and GPU fit beside `threads` and `gpu_milli` already counted.
    fn fits(&self, claim: &Claim, threads: u32, gpu_milli: u32) -> Result<(), Refusal> {
        let free = self.cpus.saturating_sub(threads);
        if claim.threads > free {
            return Err(Refusal::Threads {
                need: claim.threads,
                free,
            });
        }
        let free = self.gpu_milli.saturating_sub(gpu_milli);
        if claim.gpu_milli > free {
            return Err(Refusal::Gpu {
                need: claim.gpu_milli,
                free,
            });
        }
        Ok(())
    }

    /// Whether a task taken now could run at once (its threads are free on the machine, and
    /// its GPU share on one GPU), rather than wait in the preparing window for a running task
    /// to end.
    pub fn runs_now(&self, claim: &Claim) -> bool {
        self.fits(claim, self.used.threads, self.gpu_used_milli)
            .is_ok()
            && (claim.gpu_milli == 0 || self.pick_gpus(claim.gpu_milli).is_some())
    }

    /// The GPUs that would take a claim of `milli`: for each share, the GPU with the most free
    /// that holds it (the lowest index among equals), no GPU twice.
    fn pick_gpus(&self, milli: u32) -> Option<Vec<usize>> {
        let mut free = self.gpu_free.clone();
        let mut picked = Vec::new();
        for share in gpu_shares(milli) {
            let (gpu, _) = free
                .iter()
                .enumerate()
                .filter(|&(i, &f)| f >= share && !picked.contains(&i))
                .max_by_key(|&(i, &f)| (f, std::cmp::Reverse(i)))?;
            free[gpu] -= share;
            picked.push(gpu);
        }
        Some(picked)
    }

    /// Whether a task of `kind` could ever run here (it fits an idle worker).
    pub fn ever_fits(&self, kind: Kind, claim: &Claim) -> Result<(), Refusal> {
        Ledger::new_like(self).check(kind, claim)
    }

    fn new_like(other: &Ledger) -> Ledger {
        Ledger {
            used: Usage::default(),
            kept: 0,
            gpu_used_milli: 0,
            preparing_threads: 0,
            preparing_gpu_milli: 0,
            gpu_free: vec![GPU_UNITS as u32; other.gpu_free.len()],
            per_kind: BTreeMap::new(),
            cores: Cores::new(other.cores.ids()),
            ..other.clone()
        }
    }

    /// Records a task as taken, preparing. Call only after [`Ledger::check`] said it fits.
    pub fn take(&mut self, kind: Kind, claim: &Claim) {
        *self.per_kind.entry(kind).or_default() += 1;
        self.used.tasks += 1;
        self.used.min_memory += claim.min_memory;
        self.used.max_memory += claim.max_memory;
        self.used.scratch += claim.scratch;
        self.preparing_threads += claim.threads;
        self.preparing_gpu_milli += claim.gpu_milli;
    }

    /// Moves a prepared task's threads and GPU from the preparing window onto the machine, if
    /// they are free there: where it runs (the CPUs to pin its proof to, the GPUs it was
    /// given), or `None` to wait.
    pub fn start(&mut self, claim: &Claim) -> Option<Placement> {
        self.fits(claim, self.used.threads, self.gpu_used_milli)
            .ok()?;
        let gpus = if claim.gpu_milli > 0 {
            self.pick_gpus(claim.gpu_milli)?
        } else {
            Vec::new()
        };
        for (&gpu, share) in gpus.iter().zip(gpu_shares(claim.gpu_milli)) {
            self.gpu_free[gpu] -= share;
        }
        self.preparing_threads = self.preparing_threads.saturating_sub(claim.threads);
        self.preparing_gpu_milli = self.preparing_gpu_milli.saturating_sub(claim.gpu_milli);
        self.used.threads += claim.threads;
        self.gpu_used_milli += claim.gpu_milli;
        self.used.gpu = self.gpu_used_milli as f64 / GPU_UNITS;
        Some(Placement {
            cpus: self.cores.take(claim.threads),
            gpus,
        })
    }

    /// Gives back what [`Ledger::take`] (and [`Ledger::start`], when `started` says where the
    /// task ran) recorded for a task that ended.
    pub fn give_back(&mut self, kind: Kind, claim: &Claim, started: Option<&Placement>) {
        if let Some(n) = self.per_kind.get_mut(&kind) {
            *n = n.saturating_sub(1);
        }
        self.used.tasks = self.used.tasks.saturating_sub(1);
        self.used.min_memory = self.used.min_memory.saturating_sub(claim.min_memory);
        self.used.max_memory = self.used.max_memory.saturating_sub(claim.max_memory);
        self.used.scratch = self.used.scratch.saturating_sub(claim.scratch);
        match started {
            Some(placement) => {
                self.used.threads = self.used.threads.saturating_sub(claim.threads);
                self.gpu_used_milli = self.gpu_used_milli.saturating_sub(claim.gpu_milli);
                self.used.gpu = self.gpu_used_milli as f64 / GPU_UNITS;
                for (&gpu, share) in placement.gpus.iter().zip(gpu_shares(claim.gpu_milli)) {
                    if let Some(free) = self.gpu_free.get_mut(gpu) {
                        *free = (*free + share).min(GPU_UNITS as u32);
                    }
                }
                self.cores.give_back(&placement.cpus);
            }
            None => {
                self.preparing_threads = self.preparing_threads.saturating_sub(claim.threads);
                self.preparing_gpu_milli = self.preparing_gpu_milli.saturating_sub(claim.gpu_milli);
            }
        }
    }

    /// Claims `bytes` of scratch for a sector this worker now holds, until [`Ledger::unkeep`].
    pub fn keep(&mut self, bytes: u64) {
        self.kept = self.kept.saturating_add(bytes);
    }

    /// Gives back what [`Ledger::keep`] claimed for a sector the worker let go of.
    pub fn unkeep(&mut self, bytes: u64) {
        self.kept = self.kept.saturating_sub(bytes);
    }

    /// What the machine has: `tasks` is the slot limit (0: none), `min_memory` the memory and
    /// `max_memory` memory and swap, `scratch` the scratch limit.
    pub fn capacity(&self) -> Usage {
        Usage {
            tasks: self.slots.unwrap_or(0),
            threads: self.cpus,
            min_memory: self.memory,
            max_memory: self.memory.saturating_add(self.swap),
            gpu: f64::from(self.gpu_milli) / GPU_UNITS,
            scratch: self.scratch_limit,
        }
    }

    /// What running tasks hold, held sectors' disk included in `scratch`.
    pub fn usage(&self) -> Usage {
        Usage {
            scratch: self.used.scratch.saturating_add(self.kept),
            ..self.used
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Table;
    use proptest::prelude::*;

    const G: u64 = 1 << 30;

    fn machine(cpus: u32, memory: u64, gpus: usize) -> Machine {
        Machine {
            host: "test".into(),
            cpu_threads: cpus,
            memory_bytes: memory,
            swap_bytes: 0,
            gpus: (0..gpus).map(|i| format!("gpu{i}")).collect(),
            cpu_ids: (0..cpus as usize).collect(),
            gpu_ids: (0..gpus).map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn a_pc1_box_runs_as_many_pc1_as_its_memory_allows() {
        let m = machine(64, 1024 * G, 0);
        let table = Table::lotus();
        let kind = (Phase::PreCommit1, SectorSize::GiB32);
        let claim = Claim::new(&table.get(kind.0, kind.1), &m, 0);
        let mut ledger = Ledger::new(&m, None, u64::MAX);
        let mut n = 0;
        while ledger.check(kind, &claim).is_ok() {
            ledger.take(kind, &claim);
            n += 1;
        }
        // 64 GiB peak each: 15 fit below 1 TiB with the 10 MiB base on top (lotus counts so).
        assert_eq!(n, 15);
        assert!(matches!(
            ledger.check(kind, &claim),
            Err(Refusal::VirtualMemory { .. })
        ));
    }

    #[test]
    fn gpu_phases_share_gpus_and_gpu_only_phases_need_one() {
        let table = Table::lotus();
        let kind = (Phase::Commit2, SectorSize::KiB2);
        let mut need = table.get(kind.0, kind.1);
        let gpu_box = machine(16, 64 * G, 1);
        let claim = Claim::new(&need, &gpu_box, 0);
        let mut ledger = Ledger::new(&gpu_box, None, u64::MAX);
        ledger.take(kind, &claim);
        assert!(matches!(
            ledger.check(kind, &claim),
            Err(Refusal::Gpu { .. })
        ));
        // Without a GPU lotus runs it on the CPU, unless it is marked GPU-only.
        let cpu_box = machine(16, 64 * G, 0);
        let ledger = Ledger::new(&cpu_box, None, u64::MAX);
        assert!(ledger.check(kind, &Claim::new(&need, &cpu_box, 0)).is_ok());
        need.gpu_required = true;
        assert_eq!(
            ledger.ever_fits(kind, &Claim::new(&need, &cpu_box, 0)),
            Err(Refusal::NoGpu)
        );
    }

    #[test]
    fn max_concurrent_and_slots_cap_tasks() {
        let m = machine(64, 1024 * G, 0);
        let kind = (Phase::AddPiece, SectorSize::KiB2);
        let mut need = Table::lotus().get(kind.0, kind.1);
        need.max_concurrent = 2;
        let claim = Claim::new(&need, &m, 0);
        let mut ledger = Ledger::new(&m, Some(3), u64::MAX);
        ledger.take(kind, &claim);
        ledger.take(kind, &claim);
        assert_eq!(
            ledger.check(kind, &claim),
            Err(Refusal::MaxConcurrent { limit: 2 })
        );
        let other = (Phase::Commit1, SectorSize::KiB2);
        let c1 = Claim::new(&Table::lotus().get(other.0, other.1), &m, 0);
        ledger.take(other, &c1);
        assert_eq!(ledger.check(other, &c1), Err(Refusal::Slots { slots: 3 }));
        ledger.give_back(kind, &claim, None);
        assert!(ledger.check(kind, &claim).is_ok());
    }

    #[test]
    fn a_task_prepares_beside_a_running_one_and_starts_when_it_ends() {
        let m = machine(16, 1024 * G, 1);
        let kind = (Phase::Commit2, SectorSize::GiB32);
        let claim = Claim::new(&Table::lotus().get(kind.0, kind.1), &m, 0);
        assert_eq!((claim.threads, claim.gpu_milli), (6, 1000));
        let mut ledger = Ledger::new(&m, None, u64::MAX);
        ledger.take(kind, &claim);
        assert!(ledger.runs_now(&claim), "nothing runs yet");
        // Preparing holds no GPU: a second one may prepare, and the first starts.
        let first = ledger.start(&claim).expect("the GPU is free");
        assert_eq!(
            first.cpus,
            vec![0, 1, 2, 3, 4, 5],
            "pinned to its 6 threads"
        );
        assert_eq!(first.gpus, vec![0]);
        assert!(ledger.check(kind, &claim).is_ok());
        ledger.take(kind, &claim);
        assert!(!ledger.runs_now(&claim));
        assert_eq!(ledger.start(&claim), None, "waits for the GPU");
        // The preparing window is full: a third is not taken.
        assert!(matches!(
            ledger.check(kind, &claim),
            Err(Refusal::Gpu { .. })
        ));
        assert_eq!(ledger.usage().gpu, 1.0);
        ledger.give_back(kind, &claim, Some(&first));
        assert_eq!(ledger.start(&claim), Some(first));
        assert!(ledger.check(kind, &claim).is_ok());
    }

    #[test]
    fn each_gpu_task_gets_a_gpu_of_its_own() {
        let m = machine(16, 1024 * G, 2);
        let kind = (Phase::Commit2, SectorSize::GiB32);
        let claim = Claim::new(&Table::lotus().get(kind.0, kind.1), &m, 0);
        let mut ledger = Ledger::new(&m, None, u64::MAX);
        for _ in 0..3 {
            ledger.take(kind, &claim);
        }
        let first = ledger.start(&claim).expect("GPU 0 is free");
        let second = ledger.start(&claim).expect("GPU 1 is free");
        assert_eq!(
            (first.gpus.as_slice(), second.gpus.as_slice()),
            (&[0][..], &[1][..])
        );
        assert_eq!(ledger.start(&claim), None, "both GPUs are taken");
        ledger.give_back(kind, &claim, Some(&second));
        assert_eq!(ledger.start(&claim).map(|p| p.gpus), Some(vec![1]));
        // Half a GPU each: two share a device before the next one is used.
        let mut half = claim;
        half.gpu_milli = 500;
        half.threads = 1;
        let mut ledger = Ledger::new(&m, None, u64::MAX);
        let gpus: Vec<Vec<usize>> = (0..4)
            .map(|_| {
                ledger.take(kind, &half);
                ledger.start(&half).expect("room for a half").gpus
            })
            .collect();
        assert_eq!(gpus, [vec![0], vec![1], vec![0], vec![1]]);
        assert_eq!(gpu_shares(2500), [1000, 1000, 500]);
    }

    proptest! {
        /// Whatever mix of tasks comes and goes, what the ledger lets run never exceeds the
        /// machine.
        #[test]
        fn running_tasks_never_exceed_the_machine(
            cpus in 1u32..128,
            memory_gib in 1u64..2048,
            gpus in 0usize..4,
            ops in proptest::collection::vec((0usize..30, 0u8..3), 1..200),
        ) {
            let m = machine(cpus, memory_gib * G, gpus);
            let table = Table::lotus();
            let kinds: Vec<Kind> = Phase::ALL
                .iter()
                .flat_map(|&p| SectorSize::ALL.iter().map(move |&s| (p, s)))
                .collect();
            let mut ledger = Ledger::new(&m, None, 10 * G);
            // Taken tasks, with where they run once started.
            let mut taken: Vec<(Kind, Claim, Option<Placement>)> = Vec::new();
            for (pick, op) in ops {
                if op == 0 || taken.is_empty() {
                    let kind = kinds[pick % kinds.len()];
                    let claim = Claim::new(&table.get(kind.0, kind.1), &m, (pick as u64) << 28);
                    if ledger.check(kind, &claim).is_ok() {
                        ledger.take(kind, &claim);
                        taken.push((kind, claim, None));
                    }
                } else if op == 1 {
                    let i = pick % taken.len();
                    if taken[i].2.is_none() {
                        taken[i].2 = ledger.start(&taken[i].1);
                    }
                } else {
                    let (kind, claim, started) = taken.remove(pick % taken.len());
                    ledger.give_back(kind, &claim, started.as_ref());
                }
                let running = || taken.iter().filter(|t| t.2.is_some());
                let preparing = || taken.iter().filter(|t| t.2.is_none());
                let threads: u32 = running().map(|t| t.1.threads).sum();
                let gpu: u32 = running().map(|t| t.1.gpu_milli).sum();
                let min: u64 = taken.iter().map(|t| t.1.min_memory).sum();
                let max: u64 = taken.iter().map(|t| t.1.max_memory).sum();
                let scratch: u64 = taken.iter().map(|t| t.1.scratch).sum();
                prop_assert!(threads <= cpus);
                prop_assert!(gpu <= gpus as u32 * 1000);
                prop_assert!(preparing().map(|t| t.1.threads).sum::<u32>() <= cpus);
                // A task without a GPU never waits to start: its threads were free when taken.
                let cpu_only: u32 = taken.iter().filter(|t| t.1.gpu_milli == 0).map(|t| t.1.threads).sum();
                prop_assert!(cpu_only <= cpus);
                prop_assert!(preparing().map(|t| t.1.gpu_milli).sum::<u32>() <= gpus as u32 * 1000);
                prop_assert!(min <= m.memory_bytes);
                prop_assert!(max <= m.memory_bytes + m.swap_bytes);
                prop_assert!(scratch <= 10 * G);
                prop_assert_eq!(ledger.usage().threads, threads);
                prop_assert_eq!(ledger.usage().tasks as usize, taken.len());
                // No CPU is given to two running tasks.
                let mut pinned: Vec<usize> = running().flat_map(|t| t.2.clone().unwrap().cpus).collect();
                let n = pinned.len();
                pinned.sort();
                pinned.dedup();
                prop_assert_eq!(pinned.len(), n);
                // No GPU holds more than it has.
                for gpu in 0..gpus {
                    let on: u32 = running()
                        .map(|t| {
                            let placed = &t.2.as_ref().unwrap().gpus;
                            placed.iter().zip(gpu_shares(t.1.gpu_milli)).filter(|(g, _)| **g == gpu).map(|(_, s)| s).sum::<u32>()
                        })
                        .sum();
                    prop_assert!(on <= 1000);
                }
            }
        }
    }
}
