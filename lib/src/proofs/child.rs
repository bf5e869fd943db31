//! The parent side of the job protocol: runs a [`Job`] in a child process (`<program> exec`),
//! with the proof settings in its environment, and kills it when cancelled.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::job::{Job, JobFailure, JobOutcome};

/// The SDR parent cache lotus and filecoin-proofs use by default.
pub const DEFAULT_PARENT_CACHE: &str = "/var/tmp/filecoin-parents";

/// How to start proof child processes.
#[derive(Debug, Clone)]
pub struct ChildRunner {
    /// A binary that understands `exec --job FILE --outcome FILE` (`mesh-worker` does).
    pub program: PathBuf,
    /// Passed as `FIL_PROOFS_PARAMETER_CACHE`.
    pub param_cache: PathBuf,
    /// Passed as `FIL_PROOFS_PARENT_CACHE` (created if missing: the library will not).
    pub parent_cache: PathBuf,
}

/// The CPU threads a proof may use: what its task reserved by the resource table, and the CPUs
/// it was given to run on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pin {
    /// Threads the task reserved; 0 reserves none (the task uses what is free).
    pub threads: u32,
    /// Threads of the whole machine.
    pub machine_threads: u32,
    /// CPUs to pin the child to; empty for no pinning.
    pub cpus: Vec<usize>,
}

impl Pin {
    /// The child's environment for it. A task that reserves fewer threads than the machine
    /// has gets its thread pools capped to them (rayon's, and ec-gpu's for the CPU multiexp of
    /// Commit2) and, where the worker knows its CPUs, is pinned to its own: the proofs' other
    /// pools size themselves by the CPUs the process may run on.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(threads) = self.cap() {
            env.push(("RAYON_NUM_THREADS", threads.to_string()));
            env.push(("EC_GPU_NUM_THREADS", threads.to_string()));
        }
        if !self.cpus.is_empty() {
            let cpus = crate::resources::cores::list(&self.cpus);
            env.push((crate::resources::cores::PROOF_CPUS_ENV, cpus));
        }
        env
    }

    /// The threads the proof's pools are capped to: those reserved, when fewer than the
    /// machine's; `None` when it reserves none or every one.
    pub fn cap(&self) -> Option<u32> {
        (self.threads > 0 && self.threads < self.machine_threads).then_some(self.threads)
    }
}

impl ChildRunner {
    /// Runs `job` in a child whose files (job, outcome, log) live in `dir`, capped and pinned
    /// as `pin` says. A child that dies without an outcome is a retryable failure that quotes
    /// the end of its log.
    pub async fn run(
        &self,
        job: &Job,
        dir: &Path,
        pin: &Pin,
        cancel: &CancellationToken,
    ) -> JobOutcome {
        let job_path = dir.join("job.mpk");
        let outcome_path = dir.join("outcome.mpk");
        let log_path = dir.join("child.log");
        let bytes = rmp_serde::to_vec_named(job)
            .map_err(|e| JobFailure::permanent(format!("encode job: {e}")))?;
        tokio::fs::write(&job_path, bytes)
            .await
            .map_err(|e| JobFailure::retryable(format!("write job file: {e}")))?;
        let log = std::fs::File::create(&log_path)
            .map_err(|e| JobFailure::retryable(format!("create child log: {e}")))?;
        let mut command = Command::new(&self.program);
        command
            .arg("exec")
            .arg("--job")
            .arg(&job_path)
            .arg("--outcome")
            .arg(&outcome_path)
            .env("FIL_PROOFS_PARAMETER_CACHE", &self.param_cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command.env("FIL_PROOFS_PARENT_CACHE", &self.parent_cache);
        command.envs(pin.env());
        tokio::fs::create_dir_all(&self.parent_cache)
            .await
            .map_err(|e| {
                JobFailure::retryable(format!(
                    "create parent cache {}: {e}",
                    self.parent_cache.display()
                ))
            })?;
        let mut child = command.spawn().map_err(|e| {
            JobFailure::retryable(format!(
                "start proof process {}: {e}",
                self.program.display()
            ))
        })?;
        let status = tokio::select! {
            status = child.wait() => status,
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(JobFailure::retryable(format!("{} cancelled", job.name())));
            }
        };
        let status =
            status.map_err(|e| JobFailure::retryable(format!("wait for proof process: {e}")))?;
        match tokio::fs::read(&outcome_path).await {
            Ok(bytes) => rmp_serde::from_slice::<JobOutcome>(&bytes).map_err(|e| {
                JobFailure::retryable(format!("decode outcome of {}: {e}", job.name()))
            })?,
            Err(_) => Err(JobFailure::retryable(format!(
                "{} process ended ({status}) without an outcome; its log ends: {}",
                job.name(),
                log_tail(&log_path).await
            ))),
        }
    }
}

async fn log_tail(path: &Path) -> String {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        "(empty)".to_string()
    } else {
        tail.join(" | ")
    }
}
