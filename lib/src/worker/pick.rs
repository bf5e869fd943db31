//! Which miner's task a free slot takes: the pure part of fair sharing. Each task stream tells
//! (per miner and class) how many tasks wait and how many run across the whole pool; the miner
//! whose share would stay lowest after one more task goes first, by weight (D'Hondt:
//! the smallest `(running + 1) / weight`), so that busy miners split the pool in proportion to
//! their weights and a miner that arrives late starts at the next free slot. Within a miner,
//! deal sectors go first.

use std::cmp::Ordering;

use crate::model::{MinerId, TaskClass};

/// One class of one miner's tasks on a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    /// Tasks no worker has taken yet.
    pub waiting: u64,
    /// Tasks delivered and not yet acknowledged: running, or waiting to be redelivered.
    pub running: u64,
}

/// One miner's tasks on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinerLoad {
    pub miner: MinerId,
    pub weight: u32,
    pub deals: Queue,
    pub cc: Queue,
}

impl MinerLoad {
    fn running(&self) -> u64 {
        self.deals.running + self.cc.running
    }

    fn waiting(&self) -> u64 {
        self.deals.waiting + self.cc.waiting
    }

    fn queue(&self, class: TaskClass) -> Queue {
        match class {
            TaskClass::Deals => self.deals,
            TaskClass::Cc => self.cc,
        }
    }
}

/// The consumers to try, best first. Only queues with waiting tasks, unless `probe`: then the
/// queues with nothing waiting but tasks delivered follow (a task whose worker died or that was
/// handed back with a delay is redelivered from there, and is not counted as waiting).
pub fn order(loads: &[MinerLoad], probe: bool) -> Vec<(MinerId, TaskClass)> {
    let mut miners: Vec<&MinerLoad> = loads.iter().filter(|l| l.weight > 0).collect();
    miners.sort_by(|a, b| share_order(a, b));
    let mut out = Vec::new();
    for load in &miners {
        for class in TaskClass::ALL {
            if load.queue(class).waiting > 0 {
                out.push((load.miner, class));
            }
        }
    }
    if probe {
        for load in &miners {
            for class in TaskClass::ALL {
                let q = load.queue(class);
                if q.waiting == 0 && q.running > 0 {
                    out.push((load.miner, class));
                }
            }
        }
    }
    out
}

/// Smallest `(running + 1) / weight` first; then the heavier miner; then the miner with fewer
/// tasks waiting (ties are common on short streams such as AddPiece, where miners often run
/// none: the smaller backlog goes first, so a small miner's sectors enter the pipeline without
/// queueing behind a large one's, as the shortest job first would have it); then the lower id.
fn share_order(a: &MinerLoad, b: &MinerLoad) -> Ordering {
    let lhs = (a.running() + 1) as u128 * b.weight as u128;
    let rhs = (b.running() + 1) as u128 * a.weight as u128;
    lhs.cmp(&rhs)
        .then(b.weight.cmp(&a.weight))
        .then(a.waiting().cmp(&b.waiting()))
        .then(a.miner.cmp(&b.miner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn miner(n: u64) -> MinerId {
        format!("f0{}", 1000 + n).parse().unwrap()
    }

    fn load(n: u64, weight: u32, waiting: u64, running: u64) -> MinerLoad {
        MinerLoad {
            miner: miner(n),
            weight,
            deals: Queue::default(),
            cc: Queue { waiting, running },
        }
    }

    #[test]
    fn a_late_miner_goes_first() {
        // A runs 20 of its 200 tasks; B just arrived.
        let loads = [load(0, 1, 180, 20), load(1, 1, 10, 0)];
        assert_eq!(order(&loads, false)[0].0, miner(1));
    }

    #[test]
    fn on_a_tie_the_smaller_backlog_goes_first() {
        // Neither runs anything: the miner with 2 waiting enters before the one with 24.
        let loads = [load(0, 1, 24, 0), load(3, 1, 2, 0)];
        assert_eq!(order(&loads, false)[0].0, miner(3));
    }

    #[test]
    fn deals_before_cc_within_a_miner_and_idle_queues_only_when_probing() {
        let a = MinerLoad {
            miner: miner(0),
            weight: 1,
            deals: Queue {
                waiting: 1,
                running: 0,
            },
            cc: Queue {
                waiting: 5,
                running: 0,
            },
        };
        let b = load(1, 1, 0, 3);
        assert_eq!(
            order(&[a, b], false),
            [(miner(0), TaskClass::Deals), (miner(0), TaskClass::Cc)]
        );
        assert_eq!(order(&[a, b], true)[2], (miner(1), TaskClass::Cc));
    }

    proptest! {
        /// Filling a pool slot by slot, each time from the first queue in `order`, gives every
        /// miner that has work at least its share of the slots by weight, rounded down (and
        /// less than one slot per miner above it), and never gives a slot to a miner with
        /// nothing waiting.
        #[test]
        fn slots_split_by_weight(
            weights in proptest::collection::vec(1u32..6, 1..6),
            slots in 1u64..200,
        ) {
            let mut loads: Vec<MinerLoad> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| load(i as u64, w, 1_000_000, 0))
                .collect();
            // One miner has nothing waiting.
            loads.push(load(99, 5, 0, 0));
            for _ in 0..slots {
                let (first, _) = order(&loads, false)[0];
                prop_assert_ne!(first, miner(99));
                let l = loads.iter_mut().find(|l| l.miner == first).unwrap();
                l.cc.waiting -= 1;
                l.cc.running += 1;
            }
            let total: u32 = weights.iter().sum();
            let n = weights.len() as f64;
            for l in &loads[..weights.len()] {
                let fair = slots as f64 * l.weight as f64 / total as f64;
                let running = l.cc.running as f64;
                prop_assert!(
                    running >= (fair + 1e-9).floor() && running < fair + n,
                    "{} of weight {} runs {running}, fair {fair:.2}", l.miner, l.weight
                );
            }
        }
    }
}
