//! The synthetic executor: a SIMULATION of the proofs, for chaos, load and scheduling runs with
//! hundreds of sectors. Each phase sleeps for a configured duration, checks that its inputs are
//! there, and writes outputs of the right names and shape (files capped at 64 KiB, commitments
//! and proofs of the right length derived by hashing) so that the store, the broker and the
//! publisher see the same traffic as with real proofs. Nothing it makes verifies: sectors
//! sealed by it are marked synthetic and the publisher does not check their proofs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::job::{Job, JobFailure, JobOutcome, JobOutput, PieceSource};
use super::{RegisteredSealProof, proof_size};
use crate::model::{Phase, PieceInfo};

/// Files the simulation writes are at most this long, whatever the sector size.
const SHAPE_CAP: u64 = 64 * 1024;

/// Bytes of a Commit2 proof: 192 per partition, one partition at the test sizes.
const PROOF_BYTES: usize = 192;

/// Per-phase durations of the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    durations: BTreeMap<Phase, Duration>,
}

impl Default for Synthetic {
    /// Lotus's 32GiB phase times with an hour scaled down to a second: AddPiece 10 min, PC1
    /// 3.5 h, PC2 30 min, C1 1 min, C2 30 min, Finalize 5 min.
    fn default() -> Self {
        let ms = |phase, ms| (phase, Duration::from_millis(ms));
        Synthetic {
            durations: BTreeMap::from([
                ms(Phase::AddPiece, 170),
                ms(Phase::PreCommit1, 3500),
                ms(Phase::PreCommit2, 500),
                ms(Phase::Commit1, 20),
                ms(Phase::Commit2, 500),
                ms(Phase::Finalize, 80),
            ]),
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

    /// Simulates `job`: waits its phase's duration (cancellable), then checks inputs and
    /// writes outputs.
    pub async fn run(&self, job: &Job, cancel: &CancellationToken) -> JobOutcome {
        let phase = phase_of(job).ok_or_else(|| {
            JobFailure::permanent(format!(
                "the synthetic executor does not run {}",
                job.name()
            ))
        })?;
        tokio::select! {
            () = tokio::time::sleep(self.duration(phase)) => {}
            () = cancel.cancelled() => {
                return Err(JobFailure::retryable(format!("{} cancelled", job.name())));
            }
        }
        let job = job.clone();
        tokio::task::spawn_blocking(move || simulate(&job))
            .await
            .map_err(|e| JobFailure::retryable(format!("synthetic job panicked: {e}")))?
    }
}

fn phase_of(job: &Job) -> Option<Phase> {
    Some(match job {
        Job::AddPiece { .. } => Phase::AddPiece,
        Job::PreCommit1 { .. } => Phase::PreCommit1,
        Job::PreCommit2 { .. } => Phase::PreCommit2,
        Job::Commit1 { .. } => Phase::Commit1,
        Job::Commit2 { .. } => Phase::Commit2,
        Job::Finalize { .. } => Phase::Finalize,
        Job::Verify { .. } | Job::GenerateParams { .. } => return None,
    })
}

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Writes `len` bytes derived from `seed`.
fn write_shape(path: &Path, seed: &[u8; 32], len: u64) -> Result<(), JobFailure> {
    let block = hash(&[seed]);
    let data: Vec<u8> = block.iter().copied().cycle().take(len as usize).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_failure("create", parent, e))?;
    }
    std::fs::write(path, data).map_err(|e| io_failure("write", path, e))
}

fn read_input(path: &Path) -> Result<Vec<u8>, JobFailure> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            JobFailure::permanent(format!("synthetic: input {} is missing", path.display()))
        } else {
            io_failure("read", path, e)
        }
    })
}

fn io_failure(what: &str, path: &Path, e: std::io::Error) -> JobFailure {
    JobFailure::retryable(format!("synthetic: {what} {}: {e}", path.display()))
}

fn shape_len(proof: RegisteredSealProof) -> u64 {
    proof_size(proof).map_or(2048, |s| s.bytes()).min(SHAPE_CAP)
}

const LAYERS: [&str; 2] = ["sc-02-data-layer-1.dat", "sc-02-data-layer-2.dat"];
const TREE_D: &str = "sc-02-data-tree-d.dat";
const TREE_C: &str = "sc-02-data-tree-c.dat";
const TREE_R: &str = "sc-02-data-tree-r-last.dat";
const AUX: [&str; 2] = ["p_aux", "t_aux"];

fn simulate(job: &Job) -> JobOutcome {
    match job {
        Job::AddPiece {
            proof,
            pieces,
            unsealed,
        } => {
            let size = proof_size(*proof).ok_or_else(|| {
                JobFailure::permanent(format!("proof type {proof:?} has no size the mesh serves"))
            })?;
            let sizes: Vec<u64> = pieces.iter().map(|p| p.size).collect();
            let fillers = crate::model::fillers(size, &sizes)
                .map_err(|e| JobFailure::permanent(e.to_string()))?;
            let zero_pieces = fillers.iter().map(|&size| PieceSource { path: None, size });
            let mut piece_infos = Vec::with_capacity(pieces.len() + fillers.len());
            for piece in pieces.iter().cloned().chain(zero_pieces) {
                let comm_p = match &piece.path {
                    Some(path) => hash(&[b"piece", &read_input(path)?]),
                    None => hash(&[b"zeros", &piece.size.to_le_bytes()]),
                };
                piece_infos.push(PieceInfo {
                    comm_p,
                    size: piece.size,
                });
            }
            let seed = hash(&[b"unsealed", &encode(&piece_infos)]);
            write_shape(unsealed, &seed, shape_len(*proof))?;
            Ok(JobOutput::AddPiece { piece_infos })
        }
        Job::PreCommit1 {
            id,
            ticket,
            piece_infos,
            cache,
            unsealed,
            ..
        } => {
            let data = read_input(unsealed)?;
            let seed = hash(&[
                b"pc1",
                &id.prover_id,
                &id.sector.to_le_bytes(),
                ticket,
                &encode(piece_infos),
                &data,
            ]);
            for name in LAYERS.iter().chain([&TREE_D]) {
                write_shape(
                    &cache.join(name),
                    &hash(&[&seed, name.as_bytes()]),
                    data.len() as u64,
                )?;
            }
            let mut pc1_output = seed.to_vec();
            pc1_output.extend_from_slice(&hash(&[&seed]));
            Ok(JobOutput::PreCommit1 { pc1_output })
        }
        Job::PreCommit2 {
            pc1_output,
            cache,
            unsealed,
            sealed,
        } => {
            let data = read_input(unsealed)?;
            for name in LAYERS {
                read_input(&cache.join(name))?;
            }
            let comm_d = hash(&[b"comm_d", pc1_output]);
            let comm_r = hash(&[b"comm_r", pc1_output]);
            write_shape(sealed, &comm_r, data.len() as u64)?;
            for name in [TREE_C, TREE_R].iter().chain(AUX.iter()) {
                write_shape(&cache.join(name), &hash(&[&comm_r, name.as_bytes()]), 256)?;
            }
            Ok(JobOutput::PreCommit2 { comm_r, comm_d })
        }
        Job::Commit1 {
            seed,
            comm_r,
            comm_d,
            cache,
            sealed,
            c1_output,
            ..
        } => {
            read_input(sealed)?;
            for name in AUX {
                read_input(&cache.join(name))?;
            }
            write_shape(c1_output, &hash(&[b"c1", seed, comm_r, comm_d]), 4096)?;
            Ok(JobOutput::Commit1)
        }
        Job::Commit2 { id, c1_output } => {
            let c1 = read_input(c1_output)?;
            let block = hash(&[b"proof", &id.sector.to_le_bytes(), &c1]);
            let proof = block.iter().copied().cycle().take(PROOF_BYTES).collect();
            Ok(JobOutput::Commit2 { proof })
        }
        Job::Finalize { cache } => {
            for name in LAYERS.iter().chain([&TREE_D, &TREE_C]) {
                match std::fs::remove_file(cache.join(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_failure("remove", &cache.join(name), e)),
                }
            }
            read_input(&cache.join(TREE_R))?;
            Ok(JobOutput::Finalize)
        }
        Job::Verify { .. } | Job::GenerateParams { .. } => Err(JobFailure::permanent(format!(
            "the synthetic executor does not run {}",
            job.name()
        ))),
    }
}

fn encode(piece_infos: &[PieceInfo]) -> Vec<u8> {
    piece_infos
        .iter()
        .flat_map(|p| p.comm_p.iter().copied().chain(p.size.to_le_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proofs::job::SectorIdentity;

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
        let d = dir.path();
        let proof = crate::proofs::seal_proof(crate::model::SectorSize::KiB2);
        let id = SectorIdentity {
            proof,
            prover_id: [1; 32],
            sector: 7,
        };
        let fast = Synthetic::parse("ap=0s,pc1=0s,pc2=0s,c1=0s,c2=0s,fin=0s").unwrap();
        let never = CancellationToken::new();
        let (cache, unsealed, sealed, c1) = (
            d.join("cache"),
            d.join("unsealed"),
            d.join("sealed"),
            d.join("c1.out"),
        );

        // PC1 before AddPiece has nothing to read: a permanent failure naming the file.
        let pc1 = Job::PreCommit1 {
            id,
            ticket: [2; 32],
            piece_infos: vec![],
            cache: cache.clone(),
            unsealed: unsealed.clone(),
            sealed: sealed.clone(),
        };
        let e = fast.run(&pc1, &never).await.unwrap_err();
        assert!(e.message.contains("unsealed"), "{e}");

        let ap = Job::AddPiece {
            proof,
            pieces: vec![],
            unsealed: unsealed.clone(),
        };
        let Ok(JobOutput::AddPiece { piece_infos }) = fast.run(&ap, &never).await else {
            panic!("add piece failed");
        };
        assert_eq!(piece_infos.len(), 1);
        assert_eq!(std::fs::metadata(&unsealed).unwrap().len(), 2048);

        let Ok(JobOutput::PreCommit1 { pc1_output }) = fast.run(&pc1, &never).await else {
            panic!("pc1 failed");
        };
        let pc2 = Job::PreCommit2 {
            pc1_output,
            cache: cache.clone(),
            unsealed,
            sealed: sealed.clone(),
        };
        let Ok(JobOutput::PreCommit2 { comm_r, comm_d }) = fast.run(&pc2, &never).await else {
            panic!("pc2 failed");
        };
        assert_ne!(comm_r, comm_d);
        let c1_job = Job::Commit1 {
            id,
            ticket: [2; 32],
            seed: [3; 32],
            comm_r,
            comm_d,
            piece_infos,
            cache: cache.clone(),
            sealed,
            c1_output: c1.clone(),
        };
        assert!(matches!(
            fast.run(&c1_job, &never).await,
            Ok(JobOutput::Commit1)
        ));
        let c2 = Job::Commit2 { id, c1_output: c1 };
        let Ok(JobOutput::Commit2 { proof }) = fast.run(&c2, &never).await else {
            panic!("c2 failed");
        };
        assert_eq!(proof.len(), PROOF_BYTES);
        let fin = Job::Finalize {
            cache: cache.clone(),
        };
        assert!(matches!(
            fast.run(&fin, &never).await,
            Ok(JobOutput::Finalize)
        ));
        let mut left: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["p_aux", "sc-02-data-tree-r-last.dat", "t_aux"]);
    }

    #[tokio::test]
    async fn a_cancelled_simulation_is_retryable() {
        let slow = Synthetic::parse("c2=1h").unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let job = Job::Commit2 {
            id: SectorIdentity {
                proof: crate::proofs::seal_proof(crate::model::SectorSize::KiB2),
                prover_id: [0; 32],
                sector: 1,
            },
            c1_output: "/nonexistent".into(),
        };
        let e = slow.run(&job, &cancel).await.unwrap_err();
        assert_eq!(e.kind, crate::proofs::job::FailureKind::Retryable);
    }
}
