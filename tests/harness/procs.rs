//! Child processes of a test: output to a log file, killed by pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub struct Proc {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RUST_BACKTRACE", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Proc {
            child,
            log: log.to_path_buf(),
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.exited = self.child.wait().ok();
    }

    /// The exit status if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits for the process to end, polling, and panics after `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!(
            "{} to exit; its log ends:\n{}",
            self.log.display(),
            self.tail(30)
        );
        crate::wait_for(&what, deadline, || {
            let status = self.try_status();
            async move { status }
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.tail(40));
        }
    }
}
