//! What a publisher counts, served by `mesh-publisher run`/`seal`/`lotus run --metrics` under
//! `mesh_publisher_`: results by phase and outcome, tasks published by phase and size, proofs
//! verified, and the miner's sectors by state (as this publisher last read or wrote them; all
//! of them are read again every 30 s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::model::{SectorNum, SectorSize};
use crate::phases::Phase;
use crate::sector::{SectorRecord, SectorState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    phase: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    phase: &'static str,
    size: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerifyLabels {
    valid: &'static str,
}

/// The states a sector is counted in: the phase its current task runs, or how it ended.
const STATES: [&str; 9] = [
    "ap", "pc1", "pc2", "c1", "c2", "fin", "sealed", "failed", "stopped",
];

fn state(record: &SectorRecord) -> &'static str {
    match &record.state {
        SectorState::Active { phase, .. } => phase.token(),
        SectorState::Sealed { .. } => "sealed",
        SectorState::Failed { .. } => "failed",
        SectorState::Stopped { .. } => "stopped",
    }
}

/// What a result did to its sector, for `mesh_publisher_results_total{outcome}`.
#[derive(Clone, Copy, Debug)]
pub enum ResultOutcome {
    /// Accepted: the phase is done.
    Done,
    /// Accepted: the task failed for good (the sector fails).
    Failed,
    /// Accepted: the holder lost the sector's data (back to PreCommit1).
    Lost,
    /// Not the sector's current task (late, duplicate); dropped.
    Late,
    /// For no sector of this miner, or not decodable; dropped.
    Dropped,
    /// Of a newer message version; left for an upgraded publisher.
    Newer,
}

impl ResultOutcome {
    fn label(self) -> &'static str {
        match self {
            ResultOutcome::Done => "done",
            ResultOutcome::Failed => "failed",
            ResultOutcome::Lost => "lost",
            ResultOutcome::Late => "late",
            ResultOutcome::Dropped => "dropped",
            ResultOutcome::Newer => "newer",
        }
    }
}

/// The publisher's metric families; cheap to clone, counting whether or not they are served.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    results: Family<ResultLabels, Counter>,
    published: Family<TaskLabels, Counter>,
    verified: Family<VerifyLabels, Counter>,
    sectors: Sectors,
}

impl Metrics {
    /// Adds the families to `registry` (a daemon's, from `crate::metrics::registry`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("publisher");
        r.register(
            "results",
            "Task results handled, by phase and outcome (done, failed, lost: accepted; late, \
             dropped: not for the sector's current task; newer: left for an upgraded publisher)",
            self.results.clone(),
        );
        r.register(
            "tasks_published",
            "Tasks published to the workers, by phase and size",
            self.published.clone(),
        );
        r.register(
            "proofs_verified",
            "Commit2 proofs verified, by whether they were valid",
            self.verified.clone(),
        );
        r.register_collector(Box::new(self.sectors.clone()));
        self.register_zeros();
    }

    /// Creates every counter at zero, so that a rule's `increase()` sees the first event.
    fn register_zeros(&self) {
        for phase in Phase::ALL {
            for outcome in [
                ResultOutcome::Done,
                ResultOutcome::Failed,
                ResultOutcome::Lost,
                ResultOutcome::Late,
                ResultOutcome::Dropped,
                ResultOutcome::Newer,
            ] {
                let _ = self.results.get_or_create(&ResultLabels {
                    phase: phase.token(),
                    outcome: outcome.label(),
                });
            }
        }
        for valid in ["true", "false"] {
            let _ = self.verified.get_or_create(&VerifyLabels { valid });
        }
    }

    /// One result handled; `phase` is `None` when the result could not be read.
    pub(super) fn result(&self, phase: Option<Phase>, outcome: ResultOutcome) {
        self.results
            .get_or_create(&ResultLabels {
                phase: phase.map_or("unknown", Phase::token),
                outcome: outcome.label(),
            })
            .inc();
    }

    pub(super) fn published(&self, phase: Phase, size: SectorSize) {
        self.published
            .get_or_create(&TaskLabels {
                phase: phase.token(),
                size: size.label(),
            })
            .inc();
    }

    pub(super) fn verified(&self, valid: bool) {
        self.verified
            .get_or_create(&VerifyLabels {
                valid: if valid { "true" } else { "false" },
            })
            .inc();
    }

    /// A record as stored now.
    pub(super) fn sector(&self, record: &SectorRecord) {
        self.sectors
            .states
            .lock()
            .expect("sector states lock")
            .insert(record.sector, state(record));
    }

    /// Every sector of the miner, as just read.
    pub(super) fn all_sectors(&self, records: &[SectorRecord]) {
        let states = records.iter().map(|r| (r.sector, state(r))).collect();
        *self.sectors.states.lock().expect("sector states lock") = states;
    }
}

/// `mesh_publisher_sectors{state}`, counted at each scrape.
#[derive(Clone, Debug, Default)]
struct Sectors {
    states: Arc<Mutex<BTreeMap<SectorNum, &'static str>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

impl prometheus_client::collector::Collector for Sectors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts: BTreeMap<&str, i64> = STATES.iter().map(|s| (*s, 0)).collect();
        for state in self.states.lock().expect("sector states lock").values() {
            *counts.entry(state).or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "sectors",
            "The miner's sectors by state: the phase whose task they wait for or run, or how \
             they ended.",
            None,
            MetricType::Gauge,
        )?;
        for state in STATES {
            ConstGauge::new(counts[state]).encode(family.encode_family(&StateLabels { state })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_a_sector_state() {
        for phase in Phase::ALL {
            assert!(
                STATES.contains(&phase.token()),
                "{phase} has no state label"
            );
        }
    }
}
