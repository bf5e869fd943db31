//! Local processes: each instance is a `mesh-worker run` child of the autoscaler, named
//! `<group>-<n>`. Removing one sends it SIGTERM (it is drained by then, so it exits at once);
//! when the autoscaler stops, it stops its workers the same way and waits for them, at most the
//! group's drain timeout before they hand their tasks back. Workers drain and exit by
//! themselves when the autoscaler dies without stopping them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Instance, InstanceState, ProviderError, WorkerSpec};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The `mesh-worker` binary; default: the one next to `mesh-autoscaler`, else `PATH`'s.
    pub worker: Option<PathBuf>,
    /// More arguments for `mesh-worker run` (e.g. `--store`, `--scratch`, `--executor`);
    /// `--id`, `--phases`, `--sizes`, `--slots` and `--nats` come from the group.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for the workers.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where each worker's log goes (`<name>.log`); default: discarded.
    pub log_dir: Option<PathBuf>,
}

/// How long a worker told to hand its tasks back may take to exit before it is killed.
const HAND_BACK_GRACE: Duration = Duration::from_secs(10);

pub struct Local {
    config: LocalConfig,
    spec: WorkerSpec,
    program: PathBuf,
    children: BTreeMap<String, Child>,
    /// Removed and told to stop, not yet exited.
    stopping: BTreeMap<String, Child>,
    next: u64,
}

impl Local {
    pub fn new(config: &LocalConfig, spec: &WorkerSpec) -> Result<Self, ProviderError> {
        let program = match &config.worker {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.join("mesh-worker")))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("mesh-worker")),
        };
        if config.worker.is_some() && !program.is_file() {
            return Err(ProviderError::new(
                &spec.group,
                format!("worker = {:?}", program.display().to_string()),
                "no such file: point `worker` at the mesh-worker binary, or leave it out to use \
                 the one next to mesh-autoscaler",
            ));
        }
        if let Some(dir) = &config.log_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                ProviderError::new(
                    &spec.group,
                    format!("log_dir {}", dir.display()),
                    format!("cannot create it ({e}): give a directory this user can write"),
                )
            })?;
        }
        Ok(Local {
            config: config.clone(),
            spec: spec.clone(),
            program,
            children: BTreeMap::new(),
            stopping: BTreeMap::new(),
            next: 1,
        })
    }

    pub async fn instances(&mut self) -> Result<Vec<Instance>, ProviderError> {
        let mut out = Vec::new();
        let mut exited = Vec::new();
        for (name, child) in &mut self.children {
            match child.try_wait() {
                Ok(None) => out.push(Instance {
                    name: name.clone(),
                    state: InstanceState::Running,
                }),
                Ok(Some(status)) => {
                    warn!(group = %self.spec.group, worker = %name, %status, "local worker exited on its own");
                    exited.push(name.clone());
                }
                Err(e) => {
                    warn!(group = %self.spec.group, worker = %name, error = %e, "cannot check a local worker")
                }
            }
        }
        for name in exited {
            self.children.remove(&name);
        }
        self.stopping
            .retain(|_, child| matches!(child.try_wait(), Ok(None)));
        out.extend(self.stopping.keys().map(|name| Instance {
            name: name.clone(),
            state: InstanceState::Stopping,
        }));
        Ok(out)
    }

    pub async fn grow(&mut self, size: u32) -> Result<(), ProviderError> {
        while (self.children.len() as u32) < size {
            // The pid keeps names apart between autoscalers on one host, and from the workers
            // of a killed one that are still draining.
            let name = format!("{}-{}-{}", self.spec.group, std::process::id(), self.next);
            self.next += 1;
            let child = self.spawn(&name)?;
            info!(group = %self.spec.group, worker = %name, pid = child.id(), "started a local worker");
            self.children.insert(name, child);
        }
        Ok(())
    }

    fn spawn(&self, name: &str) -> Result<Child, ProviderError> {
        let token = |items: Vec<&str>| items.join(",");
        let mut cmd = Command::new(&self.program);
        cmd.arg("run")
            .args(["--id", name])
            .args(["--nats", &self.spec.nats])
            .args([
                "--phases",
                &token(self.spec.phases.iter().map(|p| p.token()).collect()),
            ])
            .args([
                "--sizes",
                &token(self.spec.sizes.iter().map(|s| s.label()).collect()),
            ]);
        cmd.args(["--slots", &self.spec.slots.to_string()])
            .args(&self.config.args);
        // Workers connect as the worker role: the autoscaler's own identity stays here, and
        // the group's `env` gives theirs (e.g. MESH_NATS_USER=worker).
        for var in crate::broker::connect::NATS_IDENTITY_ENV {
            cmd.env_remove(var);
        }
        // A worker drains and exits when the autoscaler is gone, even killed by SIGKILL.
        cmd.envs(&self.config.env)
            .env("MESH_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(false);
        match &self.config.log_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.log"));
                let log = std::fs::File::create(&path).map_err(|e| {
                    ProviderError::new(&self.spec.group, format!("log {}", path.display()), e)
                })?;
                let err = log.try_clone().map_err(|e| {
                    ProviderError::new(&self.spec.group, format!("log {}", path.display()), e)
                })?;
                cmd.stdout(log).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        cmd.spawn().map_err(|e| {
            ProviderError::new(
                &self.spec.group,
                format!("start {}", self.program.display()),
                format!(
                    "{e}: set `worker` in the group's provider table to the mesh-worker binary"
                ),
            )
        })
    }

    pub async fn remove(&mut self, names: &[String]) -> Result<(), ProviderError> {
        for name in names {
            let Some(child) = self.children.remove(name) else {
                warn!(group = %self.spec.group, worker = %name, "no such local worker to remove");
                continue;
            };
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            info!(group = %self.spec.group, worker = %name, "stopping a local worker");
            self.stopping.insert(name.clone(), child);
        }
        Ok(())
    }

    /// Stops every worker and waits for them together: SIGTERM (each drains); for those still
    /// running after `grace` (the group's drain timeout) or once `abort` is cancelled, a second
    /// SIGTERM (each hands its tasks back at once); SIGKILL for any left ten seconds later.
    pub async fn shutdown(&mut self, grace: Duration, abort: &CancellationToken) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        let _ = self.remove(&names).await;
        let mut stopping = std::mem::take(&mut self.stopping);
        let all_exited = async {
            for child in stopping.values_mut() {
                let _ = child.wait().await;
            }
        };
        tokio::select! {
            () = all_exited => return,
            () = tokio::time::sleep(grace) => {}
            () = abort.cancelled() => {}
        }
        for (name, child) in &mut stopping {
            if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
                warn!(group = %self.spec.group, worker = %name, "a local worker is still draining: telling it to hand its tasks back");
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for (name, mut child) in stopping {
            if tokio::time::timeout(HAND_BACK_GRACE, child.wait())
                .await
                .is_err()
            {
                warn!(group = %self.spec.group, worker = %name, "a local worker did not stop after its tasks were handed back: killing it");
                let _ = child.kill().await;
            }
        }
    }
}
