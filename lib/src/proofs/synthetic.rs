//! The synthetic executor: a SIMULATION of the proofs, for chaos, load and scheduling runs with
//! hundreds of sectors. Each phase sleeps for a configured duration, then runs its phase file's
//! simulation: it checks that its inputs are there and writes outputs of the right names and
//! shape (files capped at 64 KiB, commitments and proofs of the right length derived by hashing)
//! so that the store, the broker and the publisher see the same traffic as with real proofs.
//! Nothing it makes verifies: sectors sealed by it are marked synthetic and the publisher does
//! not check their proofs.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::exec::classify;
use super::job::JobFailure;
use crate::phases::{self, Output, Phase};

/// Per-phase durations of the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    durations: BTreeMap<Phase, Duration>,
}

impl Default for Synthetic {
    /// Each phase's own default: lotus's 32GiB time with an hour scaled down to a second
    /// (AddPiece 10 min → 170 ms, PC1 3.5 h → 3.5 s, …).
    fn default() -> Self {
        Synthetic {
            durations: Phase::ALL.map(|p| (p, p.simulated())).into(),
        }
    }
}

impl Synthetic {
    /// Parses `ap=200ms,pc1=3s,…`; phases left out keep their default duration.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut synthetic = Synthetic::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((phase, duration)) = item.split_once('=') else {
                return Err(format!(
                    "synthetic duration {item:?} is not PHASE=DURATION: write e.g. \
                     `pc1=3s,c2=500ms`"
                ));
            };
            let phase: Phase = phase.trim().parse().map_err(|e| format!("{e}"))?;
            let duration = humantime::parse_duration(duration.trim()).map_err(|e| {
                format!(
                    "synthetic duration for {phase} {duration:?} is not a duration ({e}): \
                     write e.g. 500ms, 3s or 1m"
                )
            })?;
            if duration > Duration::from_secs(24 * 3600) {
                return Err(format!(
                    "synthetic duration for {phase} is over a day: the simulation is meant to be \
                     fast; use at most 24h"
                ));
            }
            synthetic.durations.insert(phase, duration);
        }
        Ok(synthetic)
    }

    pub fn duration(&self, phase: Phase) -> Duration {
        self.durations.get(&phase).copied().unwrap_or_default()
    }

    /// `ap=170ms,pc1=3.5s,…`, for logs.
    pub fn describe(&self) -> String {
        self.durations
            .iter()
            .map(|(p, d)| format!("{}={}", p.token(), humantime::format_duration(*d)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Simulates `job`: waits its phase's duration (cancellable), then runs the phase's
    /// simulation.
    pub async fn run(
        &self,
        job: &phases::Job,
        cancel: &CancellationToken,
    ) -> Result<Output, JobFailure> {
        let name = job.phase().title();
        tokio::select! {
            () = tokio::time::sleep(self.duration(job.phase())) => {}
            () = cancel.cancelled() => {
                return Err(JobFailure::retryable(format!("{name} cancelled")));
            }
        }
        let job = job.clone();
        tokio::task::spawn_blocking(move || phases::simulate(&job))
            .await
            .map_err(|e| JobFailure::retryable(format!("synthetic job panicked: {e}")))?
            .map_err(|e| classify(name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SectorIdentity, SectorSize};
    use crate::phases::{Params, ap, c1, c2, fin, pc1, pc2};
    use crate::proofs::job::FailureKind;

    #[test]
    fn durations_parse_with_defaults_for_the_rest() {
        let s = Synthetic::parse("pc1=2s, c2=150ms").unwrap();
        assert_eq!(s.duration(Phase::PreCommit1), Duration::from_secs(2));
        assert_eq!(s.duration(Phase::Commit2), Duration::from_millis(150));
        assert_eq!(s.duration(Phase::AddPiece), Duration::from_millis(170));
        assert_eq!(Synthetic::parse("").unwrap(), Synthetic::default());
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let e = Synthetic::parse("pc1").unwrap_err();
        assert!(e.contains("PHASE=DURATION"), "{e}");
        let e = Synthetic::parse("pc3=1s").unwrap_err();
        assert!(e.contains("pc3"), "{e}");
        let e = Synthetic::parse("pc1=fast").unwrap_err();
        assert!(e.contains("\"fast\"") && e.contains("500ms"), "{e}");
        let e = Synthetic::parse("pc1=2days").unwrap_err();
        assert!(e.contains("over a day"), "{e}");
    }

    #[tokio::test]
    async fn every_phase_reads_what_the_previous_one_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let job = |params| phases::Job {
            id: SectorIdentity {
                proof: SectorSize::KiB2.seal_proof(),
                prover_id: [1; 32],
                sector: 7,
            },
            dir: dir.path().to_path_buf(),
            params,
        };
        let fast = Synthetic::parse("ap=0s,pc1=0s,pc2=0s,c1=0s,c2=0s,fin=0s").unwrap();
        let never = CancellationToken::new();

        // PC1 before AddPiece has nothing to read: a permanent failure naming the file.
        let pc1 = job(Params::PreCommit1(pc1::Params {
            ticket: [2; 32],
            piece_infos: vec![],
        }));
        let e = fast.run(&pc1, &never).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent, "{e}");
        assert!(e.message.contains("unsealed"), "{e}");

        let ap = job(Params::AddPiece(ap::Params { pieces: vec![] }));
        let Ok(Output::AddPiece(ap::Output { piece_infos })) = fast.run(&ap, &never).await else {
            panic!("add piece failed");
        };
        assert_eq!(piece_infos.len(), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join("unsealed"))
                .unwrap()
                .len(),
            2048
        );

        let Ok(Output::PreCommit1(pc1::Output { pc1_output, .. })) = fast.run(&pc1, &never).await
        else {
            panic!("pc1 failed");
        };
        let pc2 = job(Params::PreCommit2(pc2::Params { pc1_output }));
        let Ok(Output::PreCommit2(pc2::Output { comm_r, comm_d })) = fast.run(&pc2, &never).await
        else {
            panic!("pc2 failed");
        };
        assert_ne!(comm_r, comm_d);
        let c1 = job(Params::Commit1(c1::Params {
            ticket: [2; 32],
            seed: [3; 32],
            comm_r,
            comm_d,
            piece_infos,
        }));
        assert!(matches!(fast.run(&c1, &never).await, Ok(Output::Commit1)));
        let Ok(Output::Commit2(c2::Output { proof })) =
            fast.run(&job(Params::Commit2), &never).await
        else {
            panic!("c2 failed");
        };
        assert_eq!(proof.len(), 192);
        let Ok(Output::Finalize(fin::Output { kept })) =
            fast.run(&job(Params::Finalize), &never).await
        else {
            panic!("fin failed");
        };
        assert_eq!(kept, ["p_aux", "sc-02-data-tree-r-last.dat", "t_aux"]);
    }

    #[tokio::test]
    async fn a_cancelled_simulation_is_retryable() {
        let slow = Synthetic::parse("c2=1h").unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let job = phases::Job {
            id: SectorIdentity {
                proof: SectorSize::KiB2.seal_proof(),
                prover_id: [0; 32],
                sector: 1,
            },
            dir: "/nonexistent".into(),
            params: Params::Commit2,
        };
        let e = slow.run(&job, &cancel).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Retryable);
    }
}
