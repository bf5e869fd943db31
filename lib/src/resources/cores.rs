//! Which CPUs each running proof may use. A task whose table entry reserves fewer threads than
//! the machine has gets that many CPUs of its own, and its proof child is pinned to them (the
//! proofs size their thread pools by the CPUs they may run on), so that a PreCommit2 that
//! reserves 14 of 16 threads uses 14, not 16.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The environment variable that hands a proof child its CPUs (`0,1,5`).
pub const PROOF_CPUS_ENV: &str = "MESH_PROOF_CPUS";

/// The CPUs this process may run on, in order; empty if the system does not say.
pub fn allowed() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins this process to `cpus`, before it starts any thread pool.
pub fn pin(cpus: &[usize]) -> Result<(), String> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pin to CPUs {cpus:?}: {e}"))
}

/// CPUs as [`PROOF_CPUS_ENV`] writes them (`0,1,5`); what [`parse`] reads.
pub fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`PROOF_CPUS_ENV`].
pub fn parse(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|c| {
            c.trim()
                .parse()
                .map_err(|_| format!("{PROOF_CPUS_ENV}={list}: '{c}' is not a CPU number"))
        })
        .collect()
}

/// The CPUs a worker hands out and which are taken.
#[derive(Debug, Clone, Default)]
pub struct Cores {
    ids: Vec<usize>,
    taken: Vec<bool>,
}

impl Cores {
    pub fn new(ids: &[usize]) -> Cores {
        Cores {
            ids: ids.to_vec(),
            taken: vec![false; ids.len()],
        }
    }

    /// Takes `threads` free CPUs, lowest first. Empty (run unpinned) when the task reserves no
    /// thread or every one, when the CPUs are not known, or when too few are free (the ledger's
    /// thread count, not this, decides what fits).
    pub fn take(&mut self, threads: u32) -> Vec<usize> {
        let n = threads as usize;
        let free = self.taken.iter().filter(|t| !**t).count();
        if n == 0 || n >= self.ids.len() || n > free {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n);
        for (i, taken) in self.taken.iter_mut().enumerate() {
            if out.len() == n {
                break;
            }
            if !*taken {
                *taken = true;
                out.push(self.ids[i]);
            }
        }
        out
    }

    /// Every CPU handed out, taken or not.
    pub fn ids(&self) -> &[usize] {
        &self.ids
    }

    pub fn give_back(&mut self, cpus: &[usize]) {
        for cpu in cpus {
            if let Some(i) = self.ids.iter().position(|id| id == cpu) {
                self.taken[i] = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_get_cpus_of_their_own() {
        let mut cores = Cores::new(&[0, 1, 2, 3]);
        assert_eq!(cores.take(4), Vec::<usize>::new(), "every CPU: unpinned");
        assert_eq!(cores.take(0), Vec::<usize>::new());
        let a = cores.take(2);
        let b = cores.take(1);
        assert_eq!((a.clone(), b.clone()), (vec![0, 1], vec![2]));
        assert_eq!(cores.take(2), Vec::<usize>::new(), "one is free");
        cores.give_back(&a);
        assert_eq!(cores.take(3), vec![0, 1, 3]);
        assert!(
            Cores::default().take(1).is_empty(),
            "unknown CPUs: unpinned"
        );
        assert_eq!(parse("0, 3,12").unwrap(), vec![0, 3, 12]);
        assert_eq!(parse(&list(&[0, 3, 12])).unwrap(), vec![0, 3, 12]);
        assert!(parse("0,x").unwrap_err().contains("'x'"));
        assert!(!allowed().is_empty());
    }

    /// What a proof child does first: after pinning, the thread pools it starts (sized by
    /// `available_parallelism`, as rayon and num_cpus size them) see only its CPUs.
    #[test]
    fn a_pinned_process_sees_only_its_cpus() {
        let all = allowed();
        assert!(!all.is_empty());
        // A thread of its own: pinning applies to the calling thread.
        std::thread::spawn(move || {
            pin(&all[..1]).unwrap();
            assert_eq!(allowed(), all[..1]);
            assert_eq!(std::thread::available_parallelism().unwrap().get(), 1);
        })
        .join()
        .unwrap();
        assert!(pin(&[CpuSet::count() + 1]).unwrap_err().contains("CPU"));
    }
}
