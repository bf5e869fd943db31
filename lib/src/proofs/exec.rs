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

/// Sorts a proof library error into permanent (the verified inputs are wrong, so another attempt
/// gives the same answer), retryable (the machine ran out of something) or missing parameters.
fn classify(job: &str, e: anyhow::Error) -> JobFailure {
    let message = format!("{job}: {e:#}");
    if message.contains("No cached parameters found") || message.contains("No cached srs key") {
        return JobFailure {
            kind: FailureKind::MissingParams,
            message,
        };
    }
    let resource = e.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::OutOfMemory
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::ResourceBusy
            )
        })
    });
    JobFailure {
        kind: if resource {
            FailureKind::Retryable
        } else {
            FailureKind::Permanent
        },
        message,
    }
}
