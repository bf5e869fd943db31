//! The child side of the job protocol: runs one [`Job`] with `filecoin-proofs-api` in this
//! process and writes its outcome. Binaries expose it as a hidden `exec` subcommand.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::{self as api, UnpaddedBytesAmount, seal};

use super::job::{FailureKind, Job, JobFailure, JobOutcome, JobOutput, PieceSource};
use super::params;
use crate::model::PieceInfo;

/// Runs the job in `job_path` and writes the outcome to `outcome_path`. Exits non-zero only when
/// the outcome cannot be written; the parent reads failures from the outcome file.
pub fn main(job_path: &Path, outcome_path: &Path) -> ExitCode {
    watch_parent();
    let outcome = fs::read(job_path)
        .map_err(|e| JobFailure::retryable(format!("read job file {}: {e}", job_path.display())))
        .and_then(|bytes| {
            rmp_serde::from_slice::<Job>(&bytes)
                .map_err(|e| JobFailure::permanent(format!("decode job file: {e}")))
        })
        .and_then(run);
    let write = rmp_serde::to_vec_named(&outcome)
        .map_err(io::Error::other)
        .and_then(|bytes| fs::write(outcome_path, bytes));
    match write {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write outcome {}: {e}", outcome_path.display());
            ExitCode::from(3)
        }
    }
}

/// Exits when the parent dies, so that a killed worker leaves no orphaned proof running.
fn watch_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("parent process {parent} is gone; stopping");
                std::process::exit(4);
            }
        }
    });
}

/// Runs one job in this process.
pub fn run(job: Job) -> JobOutcome {
    let name = job.name();
    run_inner(job).map_err(|e| classify(name, e))
}

fn run_inner(job: Job) -> anyhow::Result<JobOutput> {
    match job {
        Job::AddPiece {
            proof,
            pieces,
            unsealed,
        } => add_pieces(proof, &pieces, &unsealed),
        Job::PreCommit1 {
            id,
            ticket,
            piece_infos,
            cache,
            unsealed,
            sealed,
        } => {
            fs::create_dir_all(&cache).context("create cache directory")?;
            // PC1 copies the data into the replica file, which must already exist.
            File::create(&sealed).context("create replica file")?;
            let out = seal::seal_pre_commit_phase1(
                id.proof,
                &cache,
                &unsealed,
                &sealed,
                id.prover_id,
                api::SectorId::from(id.sector),
                ticket,
                &to_api_pieces(&piece_infos),
            )?;
            let pc1_output = serde_json::to_vec(&out).context("encode pc1 output")?;
            Ok(JobOutput::PreCommit1 { pc1_output })
        }
        Job::PreCommit2 {
            pc1_output,
            cache,
            unsealed,
            sealed,
        } => {
            let pc1: seal::SealPreCommitPhase1Output =
                serde_json::from_slice(&pc1_output).context("decode pc1 output")?;
            // PC2 encodes the replica in place: it always starts from a fresh copy of the data.
            fs::copy(&unsealed, &sealed).context("copy unsealed data into the replica file")?;
            let out = seal::seal_pre_commit_phase2(pc1, &cache, &sealed)?;
            Ok(JobOutput::PreCommit2 {
                comm_r: out.comm_r,
                comm_d: out.comm_d,
            })
        }
        Job::Commit1 {
            id,
            ticket,
            seed,
            comm_r,
            comm_d,
            piece_infos,
            cache,
            sealed,
            c1_output,
        } => {
            let pre_commit = seal::SealPreCommitPhase2Output {
                registered_proof: id.proof,
                comm_r,
                comm_d,
            };
            let out = seal::seal_commit_phase1(
                &cache,
                &sealed,
                id.prover_id,
                api::SectorId::from(id.sector),
                ticket,
                seed,
                pre_commit,
                &to_api_pieces(&piece_infos),
            )?;
            let file = File::create(&c1_output).context("create c1 output file")?;
            serde_json::to_writer(io::BufWriter::new(file), &out).context("write c1 output")?;
            Ok(JobOutput::Commit1)
        }
        Job::Commit2 { id, c1_output } => {
            let file = File::open(&c1_output).context("open c1 output")?;
            let c1: seal::SealCommitPhase1Output =
                serde_json::from_reader(io::BufReader::new(file)).context("decode c1 output")?;
            if c1.registered_proof != id.proof {
                anyhow::bail!(
                    "c1 output is for {:?}, the task is for {:?}",
                    c1.registered_proof,
                    id.proof
                );
            }
            let out = seal::seal_commit_phase2(c1, id.prover_id, api::SectorId::from(id.sector))?;
            Ok(JobOutput::Commit2 { proof: out.proof })
        }
        Job::Finalize { cache } => {
            seal::clear_cache(&cache)?;
            Ok(JobOutput::Finalize)
        }
        Job::Verify {
            id,
            ticket,
            seed,
            comm_r,
            comm_d,
            proof_bytes,
        } => {
            let valid = seal::verify_seal(
                id.proof,
                comm_r,
                comm_d,
                id.prover_id,
                api::SectorId::from(id.sector),
                ticket,
                seed,
                &proof_bytes,
            )?;
            Ok(JobOutput::Verify { valid })
        }
        Job::GenerateParams { proof } => {
            let files = params::generate(proof)?;
            Ok(JobOutput::GenerateParams { files })
        }
    }
}

fn to_api_pieces(pieces: &[PieceInfo]) -> Vec<api::PieceInfo> {
    pieces
        .iter()
        .map(|p| api::PieceInfo {
            commitment: p.comm_p,
            size: UnpaddedBytesAmount(p.size),
        })
        .collect()
}

/// Writes every piece, then zero pieces up to the sector size, into a new unsealed file.
fn add_pieces(
    proof: api::RegisteredSealProof,
    pieces: &[PieceSource],
    unsealed: &Path,
) -> anyhow::Result<JobOutput> {
    let size = crate::proofs::proof_size(proof)
        .with_context(|| format!("proof type {proof:?} has no size the mesh serves"))?;
    let sizes: Vec<u64> = pieces.iter().map(|p| p.size).collect();
    let fillers = crate::model::fillers(size, &sizes)?;
    let mut target = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(unsealed)
        .context("create unsealed file")?;
    let mut written: Vec<UnpaddedBytesAmount> = Vec::new();
    let mut infos = Vec::new();
    let zero_pieces = fillers.iter().map(|&size| PieceSource { path: None, size });
    for piece in pieces.iter().cloned().chain(zero_pieces) {
        let source: Box<dyn Read> = match &piece.path {
            Some(path) => {
                let file =
                    File::open(path).with_context(|| format!("open piece {}", path.display()))?;
                let len = file.metadata()?.len();
                if len > piece.size {
                    anyhow::bail!(
                        "piece {} is {len} bytes, larger than its slot of {} bytes",
                        path.display(),
                        piece.size
                    );
                }
                Box::new(
                    io::BufReader::new(file)
                        .chain(io::repeat(0))
                        .take(piece.size),
                )
            }
            None => Box::new(io::repeat(0).take(piece.size)),
        };
        let (info, _) = seal::add_piece(
            proof,
            source,
            &mut target,
            UnpaddedBytesAmount(piece.size),
            &written,
        )?;
        written.push(UnpaddedBytesAmount(piece.size));
        infos.push(PieceInfo {
            comm_p: info.commitment,
            size: u64::from(info.size),
        });
    }
    target.sync_all().context("sync unsealed file")?;
    Ok(JobOutput::AddPiece { piece_infos: infos })
}

/// Sorts a proof library error: missing parameters; retryable when the machine failed the job
/// (any I/O error: disk full, a missing directory, no memory); otherwise permanent, since the
/// inputs were checked against their sha256 and the same inputs give the same answer.
fn classify(job: &str, e: anyhow::Error) -> JobFailure {
    let message = format!("{job}: {e:#}");
    if message.contains("No cached parameters found") || message.contains("No cached srs key") {
        return JobFailure {
            kind: FailureKind::MissingParams,
            message,
        };
    }
    let io = e
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some());
    JobFailure {
        kind: if io {
            FailureKind::Retryable
        } else {
            FailureKind::Permanent
        },
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MinerId, SectorSize};
    use crate::proofs::job::SectorIdentity;
    use crate::proofs::{prover_id, seal_proof};

    /// AddPiece → PC1 → PC2 → C1 in this process, each phase in a directory of its own holding
    /// only copies of its inputs, as workers run them. (C2 needs parameters: integration tests.)
    #[test]
    fn phases_run_from_relocated_inputs() {
        let proof = seal_proof(SectorSize::KiB2);
        let miner: MinerId = "f01000".parse().unwrap();
        let id = SectorIdentity {
            proof,
            prover_id: prover_id(miner),
            sector: 1,
        };
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let d = root.path().join(name);
            fs::create_dir_all(d.join("cache")).unwrap();
            d
        };
        let copy_cache = |from: &Path, to: &Path| {
            for e in fs::read_dir(from.join("cache")).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), to.join("cache").join(e.file_name())).unwrap();
            }
        };
        let ap = dir("ap");
        let piece_path = ap.join("piece");
        fs::write(&piece_path, vec![7u8; 100]).unwrap();
        let out = run(Job::AddPiece {
            proof,
            pieces: vec![PieceSource {
                path: Some(piece_path),
                size: 127,
            }],
            unsealed: ap.join("unsealed"),
        })
        .unwrap();
        let JobOutput::AddPiece { piece_infos } = out else {
            panic!("{out:?}")
        };
        assert_eq!(piece_infos.len(), 5, "the piece and four fillers");
        assert_eq!(fs::metadata(ap.join("unsealed")).unwrap().len(), 2048);

        let pc1 = dir("pc1");
        fs::copy(ap.join("unsealed"), pc1.join("unsealed")).unwrap();
        let ticket = [3u8; 32];
        let out = run(Job::PreCommit1 {
            id,
            ticket,
            piece_infos: piece_infos.clone(),
            cache: pc1.join("cache"),
            unsealed: pc1.join("unsealed"),
            sealed: pc1.join("sealed"),
        })
        .unwrap();
        let JobOutput::PreCommit1 { pc1_output } = out else {
            panic!("{out:?}")
        };

        let pc2 = dir("pc2");
        fs::copy(ap.join("unsealed"), pc2.join("unsealed")).unwrap();
        copy_cache(&pc1, &pc2);
        let out = run(Job::PreCommit2 {
            pc1_output,
            cache: pc2.join("cache"),
            unsealed: pc2.join("unsealed"),
            sealed: pc2.join("sealed"),
        })
        .unwrap();
        let JobOutput::PreCommit2 { comm_r, comm_d } = out else {
            panic!("{out:?}")
        };

        let c1 = dir("c1");
        fs::copy(pc2.join("sealed"), c1.join("sealed")).unwrap();
        copy_cache(&pc2, &c1);
        run(Job::Commit1 {
            id,
            ticket,
            seed: [4u8; 32],
            comm_r,
            comm_d,
            piece_infos,
            cache: c1.join("cache"),
            sealed: c1.join("sealed"),
            c1_output: c1.join("c1.out"),
        })
        .unwrap();
        assert!(fs::metadata(c1.join("c1.out")).unwrap().len() > 10_000);

        // A wrong commitment is the inputs' fault: permanent.
        let err = run(Job::Commit1 {
            id,
            ticket,
            seed: [4u8; 32],
            comm_r,
            comm_d: [9u8; 32],
            piece_infos: vec![],
            cache: c1.join("cache"),
            sealed: c1.join("sealed"),
            c1_output: c1.join("c1-bad.out"),
        })
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Permanent, "{err}");

        run(Job::Finalize {
            cache: c1.join("cache"),
        })
        .unwrap();
        let left: Vec<String> = fs::read_dir(c1.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.iter().any(|f| f.contains("layer")), "{left:?}");
    }
}
