//! The parent side of the job protocol: runs a [`Job`] in a child process (`<program> exec`),
//! with the proof settings in its environment, and kills it when cancelled. The child's output
//! (the proofs' progress) is logged in the caller's span as it comes, at most
//! [`LINES_PER_SECOND`] a second, and its last lines go with a failure.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

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
    /// The GPUs the task was given, as the child's `CUDA_VISIBLE_DEVICES` names them; empty:
    /// the child's GPU environment is the worker's.
    pub gpus: Vec<String>,
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
        if !self.gpus.is_empty() {
            // CUDA, and NVIDIA's OpenCL, see only the task's GPUs, numbered as NVML numbers
            // them; AMD's OpenCL reads GPU_DEVICE_ORDINAL.
            let gpus = self.gpus.join(",");
            env.push(("CUDA_DEVICE_ORDER", "PCI_BUS_ID".into()));
            if self.gpus.iter().all(|g| g.parse::<u32>().is_ok()) {
                env.push(("GPU_DEVICE_ORDINAL", gpus.clone()));
            }
            env.push(("CUDA_VISIBLE_DEVICES", gpus));
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
        let bytes = rmp_serde::to_vec_named(job)
            .map_err(|e| JobFailure::permanent(format!("encode job: {e}")))?;
        tokio::fs::write(&job_path, bytes)
            .await
            .map_err(|e| JobFailure::retryable(format!("write job file: {e}")))?;
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
            .stderr(Stdio::piped())
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
        let output = Output::follow(child.stderr.take(), job.name());
        let status = tokio::select! {
            status = child.wait() => status,
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(JobFailure::retryable(format!("{} cancelled", job.name())));
            }
        };
        let status =
            status.map_err(|e| JobFailure::retryable(format!("wait for proof process: {e}")))?;
        let tail = output.finish().await;
        let outcome = match tokio::fs::read(&outcome_path).await {
            Ok(bytes) => rmp_serde::from_slice::<JobOutcome>(&bytes).map_err(|e| {
                JobFailure::retryable(format!("decode outcome of {}: {e}", job.name()))
            })?,
            Err(_) => {
                return Err(JobFailure::retryable(format!(
                    "{} process ended ({status}) without an outcome; its log ends: {}",
                    job.name(),
                    if tail.is_empty() { "(empty)" } else { &tail }
                )));
            }
        };
        outcome.map_err(|mut failure| {
            if !tail.is_empty() {
                failure.message = format!("{}; its log ends: {tail}", failure.message);
            }
            failure
        })
    }
}

/// How many of a child's lines are logged per second at most (a burst of as many passes).
pub const LINES_PER_SECOND: u32 = 5;
/// How many of its last lines a failure quotes.
const TAIL_LINES: usize = 5;

/// Reads a child's output line by line: logs each (within the rate) in the span current at
/// [`Output::follow`], and keeps the last [`TAIL_LINES`].
struct Output {
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Output {
    fn follow(stderr: Option<tokio::process::ChildStderr>, job: &'static str) -> Output {
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let reader = stderr.map(|stderr| {
            let kept = tail.clone();
            tokio::spawn(
                async move {
                    let mut lines = BufReader::new(stderr).lines();
                    let mut limit = Limit::new(LINES_PER_SECOND);
                    while let Ok(Some(line)) = lines.next_line().await {
                        let line = line.trim().to_string();
                        if line.is_empty() {
                            continue;
                        }
                        match (limit.pass(Instant::now()), line.split_once(' ')) {
                            (None, _) => {}
                            (Some(skipped), Some(("WARN" | "ERROR", text))) if skipped > 0 => {
                                warn!(job, skipped, "{}", text.trim_start())
                            }
                            (Some(0), Some(("WARN" | "ERROR", text))) => {
                                warn!(job, "{}", text.trim_start())
                            }
                            (Some(skipped), Some(("INFO" | "DEBUG" | "TRACE", text))) => {
                                log_info(job, skipped, text.trim_start())
                            }
                            (Some(skipped), _) => log_info(job, skipped, &line),
                        }
                        let mut kept = kept.lock().expect("tail lock");
                        if kept.len() == TAIL_LINES {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                }
                .in_current_span(),
            )
        });
        Output { tail, reader }
    }

    /// Waits for the rest of the output (the child has exited) and returns its last lines, ` | `
    /// between them.
    async fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            // A grandchild holding the pipe open must not hold the task up.
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        let tail = self.tail.lock().expect("tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// A child's line at `info`, saying how many were skipped before it when some were.
fn log_info(job: &'static str, skipped: u64, text: &str) {
    if skipped > 0 {
        info!(job, skipped, "{text}");
    } else {
        info!(job, "{text}");
    }
}

/// A token bucket: `per_second` lines a second, bursts of as many.
struct Limit {
    per_second: u32,
    tokens: f64,
    last: Option<Instant>,
    skipped: u64,
}

impl Limit {
    fn new(per_second: u32) -> Limit {
        Limit {
            per_second,
            tokens: f64::from(per_second),
            last: None,
            skipped: 0,
        }
    }

    /// Whether a line at `now` is logged: `Some(lines skipped since the last one logged)`.
    fn pass(&mut self, now: Instant) -> Option<u64> {
        let rate = f64::from(self.per_second);
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
            self.tokens = (self.tokens + refill).min(rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.skipped))
        } else {
            self.skipped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_passes_a_burst_then_its_rate_and_counts_what_it_skipped() {
        let start = Instant::now();
        let mut limit = Limit::new(5);
        let burst: Vec<_> = (0..8).map(|_| limit.pass(start)).collect();
        assert_eq!(&burst[..5], &[Some(0); 5]);
        assert_eq!(&burst[5..], &[None; 3]);
        // A fifth of a second later one more line passes, saying three were skipped.
        let later = start + Duration::from_millis(200);
        assert_eq!(limit.pass(later), Some(3));
        assert_eq!(limit.pass(later), None);
        assert_eq!(limit.pass(later + Duration::from_secs(10)), Some(1));
    }

    /// A child that prints and dies without an outcome, and one whose outcome is a failure:
    /// both failures quote its last lines.
    #[tokio::test]
    async fn a_failure_quotes_the_last_lines_of_the_childs_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("child.sh");
        let write_failure = |path: &Path| {
            let failure: JobOutcome = Err(JobFailure::permanent("the proof said no"));
            std::fs::write(path, rmp_serde::to_vec_named(&failure).unwrap()).unwrap();
        };
        let failed_outcome = dir.path().join("failed.mpk");
        write_failure(&failed_outcome);
        let runner = |body: String| {
            std::fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            ChildRunner {
                program: script.clone(),
                param_cache: dir.path().join("params"),
                parent_cache: dir.path().join("parents"),
            }
        };
        let job = Job::GenerateParams {
            proof: crate::model::SectorSize::KiB2.seal_proof(),
        };
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let never = CancellationToken::new();

        let lines = (1..=8)
            .map(|i| format!("echo 'layer {i} of 8' >&2"))
            .collect::<Vec<_>>()
            .join("\n");
        let died = runner(format!("{lines}\nexit 3"))
            .run(&job, &work, &Pin::default(), &never)
            .await
            .unwrap_err();
        assert_eq!(died.kind, super::super::job::FailureKind::Retryable);
        assert!(
            died.message.ends_with(
                "its log ends: layer 4 of 8 | layer 5 of 8 | layer 6 of 8 | layer 7 of 8 | layer 8 of 8"
            ),
            "{}",
            died.message
        );

        // `$5` is the outcome path the runner passes (`exec --job J --outcome O`).
        let copy = format!(
            "echo 'checking the proof' >&2\ncp {} \"$5\"",
            failed_outcome.display()
        );
        let said_no = runner(copy)
            .run(&job, &work, &Pin::default(), &never)
            .await
            .unwrap_err();
        assert_eq!(said_no.kind, super::super::job::FailureKind::Permanent);
        assert_eq!(
            said_no.message,
            "the proof said no; its log ends: checking the proof"
        );
    }
}
