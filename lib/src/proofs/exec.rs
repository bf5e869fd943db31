//! The child side of the job protocol: runs one [`Job`] in this process (a phase's proof call,
//! verification or parameter generation) and writes its outcome. Binaries expose it as a hidden `exec` subcommand.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use filecoin_proofs_api::{self as api, seal};

use super::job::{FailureKind, Job, JobFailure, JobOutcome, JobOutput};
use super::params;
use crate::phases;
use crate::resources::cores;

/// Runs the job in `job_path` and writes the outcome to `outcome_path`. Exits non-zero only when
/// the outcome cannot be written; the parent reads failures from the outcome file.
pub fn main(job_path: &Path, outcome_path: &Path) -> ExitCode {
    // Before any thread starts: the proofs size their pools by the CPUs this process may use.
    if let Ok(list) = std::env::var(cores::PROOF_CPUS_ENV)
        && let Err(e) = cores::parse(&list).and_then(|cpus| cores::pin(&cpus))
    {
        eprintln!("running unpinned: {e}");
    }
    if let Ok(gpus) = std::env::var("CUDA_VISIBLE_DEVICES") {
        tracing::info!(
            gpus,
            "this proof process sees only these GPUs (CUDA_VISIBLE_DEVICES)"
        );
    }
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
                // At once, not through `exit`: its atexit handlers and stdio flushes can wait
                // on locks the proof's threads hold, and the orphan would run on (seen under
                // load in CI: still running 10 s after its worker was killed).
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
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
        Job::Phase(job) => phases::run(&job).map(JobOutput::Phase),
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

/// Sorts a proof library error: missing parameters; retryable when the machine failed the job
/// (any I/O error: disk full, a missing directory, no memory); otherwise permanent, since the
/// inputs were checked against their sha256 and the same inputs give the same answer (and so is
/// a simulated phase's [`MissingInput`](phases::MissingInput), which is no I/O error).
pub(crate) fn classify(job: &str, e: anyhow::Error) -> JobFailure {
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
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::model::{MinerId, PieceSpec, SectorIdentity, SectorSize};
    use crate::phases::{Artefact, Output, Params, ap, c1, pc1, pc2};

    /// AddPiece → PC1 → PC2 → C1 → Finalize in this process, each phase in a directory of its
    /// own holding only copies of its inputs, as workers run them. (C2 needs parameters:
    /// integration tests.)
    #[test]
    fn phases_run_from_relocated_inputs() {
        let miner: MinerId = "f01000".parse().unwrap();
        let id = SectorIdentity {
            proof: SectorSize::KiB2.seal_proof(),
            prover_id: miner.prover_id(),
            sector: 1,
        };
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| -> PathBuf {
            let d = root.path().join(name);
            fs::create_dir_all(d.join("cache")).unwrap();
            d
        };
        let copy = |from: &Path, to: &Path, artefact: Artefact| {
            fs::copy(artefact.path(from), artefact.path(to)).unwrap();
        };
        let copy_cache = |from: &Path, to: &Path| {
            for e in fs::read_dir(from.join("cache")).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), to.join("cache").join(e.file_name())).unwrap();
            }
        };
        let job = |dir: &Path, params: Params| {
            Job::Phase(phases::Job {
                id,
                dir: dir.to_path_buf(),
                params,
            })
        };
        let phase = |dir: &Path, params: Params| match run(job(dir, params)) {
            Ok(JobOutput::Phase(output)) => output,
            other => panic!("{other:?}"),
        };

        let ap = dir("ap");
        fs::write(ap.join("piece-0"), vec![7u8; 100]).unwrap();
        let Output::AddPiece(ap::Output { piece_infos }) = phase(
            &ap,
            Params::AddPiece(ap::Params {
                pieces: vec![PieceSpec {
                    object: Some("piece-0".into()),
                    size: 127,
                }],
            }),
        ) else {
            panic!("not an AddPiece output")
        };
        assert_eq!(piece_infos.len(), 5, "the piece and four fillers");
        assert_eq!(fs::metadata(ap.join("unsealed")).unwrap().len(), 2048);

        let pc1 = dir("pc1");
        copy(&ap, &pc1, Artefact::Unsealed);
        let ticket = [3u8; 32];
        let Output::PreCommit1(pc1::Output { pc1_output, .. }) = phase(
            &pc1,
            Params::PreCommit1(pc1::Params {
                ticket,
                piece_infos: piece_infos.clone(),
            }),
        ) else {
            panic!("not a PreCommit1 output")
        };

        let pc2 = dir("pc2");
        copy(&ap, &pc2, Artefact::Unsealed);
        copy_cache(&pc1, &pc2);
        let Output::PreCommit2(pc2::Output { comm_r, comm_d }) =
            phase(&pc2, Params::PreCommit2(pc2::Params { pc1_output }))
        else {
            panic!("not a PreCommit2 output")
        };

        let c1 = dir("c1");
        copy(&pc2, &c1, Artefact::Sealed);
        copy_cache(&pc2, &c1);
        let c1_params = c1::Params {
            ticket,
            seed: [4u8; 32],
            comm_r,
            comm_d,
            piece_infos,
        };
        phase(&c1, Params::Commit1(c1_params.clone()));
        assert!(fs::metadata(c1.join("c1.out")).unwrap().len() > 10_000);

        // A wrong commitment is the inputs' fault: permanent.
        let bad = dir("c1-bad");
        copy(&pc2, &bad, Artefact::Sealed);
        copy_cache(&pc2, &bad);
        let err = run(job(
            &bad,
            Params::Commit1(c1::Params {
                comm_d: [9u8; 32],
                piece_infos: vec![],
                ..c1_params
            }),
        ))
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Permanent, "{err}");

        let Output::Finalize(kept) = phase(&c1, Params::Finalize) else {
            panic!("not a Finalize output")
        };
        assert!(!kept.kept.iter().any(|f| f.contains("layer")), "{kept:?}");
        assert!(kept.kept.iter().any(|f| f == "p_aux"), "{kept:?}");
    }
}
