//! Scratch space: one directory per worker (`<scratch>/<worker-id>/`), one fresh subdirectory
//! per attempt, removed when the attempt ends, and the sectors the worker holds under
//! `sectors/` (see `holdings`), which outlive the process. What dead workers on this host left
//! is removed at start, except the sectors they hold: a worker restarted with the same id and
//! scratch path takes them up again.
//!
//! An attempt stopped mid-way can leave blocking work running (a file being written, a
//! simulation finishing) that creates directories again after its attempt's were removed:
//! each attempt's end also removes such strays, every directory of the root that no running
//! attempt owns.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

const OWNER_FILE: &str = "owner";
/// What survives a worker's exit: its held sectors (see `holdings`).
const KEPT: &str = "sectors";
/// Bytes free on the filesystem holding `dir` (or its nearest existing ancestor's), if known.
pub fn free_space(dir: &Path) -> Option<u64> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let probe = probe.canonicalize().ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|d| probe.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

/// The scratch root of this worker process: `<base>/<worker-id>/`.
#[derive(Debug, Clone)]
pub struct ScratchRoot {
    dir: PathBuf,
    /// The names of the attempt directories in use.
    live: Arc<Mutex<HashSet<OsString>>>,
}

impl ScratchRoot {
    /// Creates this worker's root under `base` and clears what workers on this host whose
    /// process is gone left there (but their held sectors). Refuses a root that a live process
    /// on this host owns: two workers with one id and scratch path would share their sectors.
    pub fn create(base: &Path, worker: &str, host: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = base.join(worker);
        if let Some(pid) = owner(&dir, host).filter(|&pid| pid != std::process::id() && alive(pid))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "worker id {worker} is in use under {} by process {pid}: give each worker \
                     on a host its own --scratch or --id",
                    base.display()
                ),
            ));
        }
        sweep_dead(base, host);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(OWNER_FILE),
            format!("{host} {}", std::process::id()),
        )?;
        Ok(ScratchRoot {
            dir,
            live: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh directory for one attempt; `name` must be one plain path component.
    pub fn attempt(&self, name: &str) -> std::io::Result<AttemptDir> {
        let dir = join_inside(&self.dir, name)
            .filter(|_| Path::new(name).components().count() == 1)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("attempt name {name:?} is not a plain directory name"),
                )
            })?;
        let mut live = self.live.lock().expect("scratch lock");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        live.insert(name.into());
        Ok(AttemptDir {
            dir: Some(dir),
            root: self.clone(),
        })
    }

    /// Removes the directories of the root that no running attempt owns (but held sectors):
    /// what blocking work of a stopped attempt wrote after its directory was removed.
    fn remove_strays(&self) {
        let live = self.live.lock().expect("scratch lock");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name != KEPT && !live.contains(&name) && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                warn!(dir = %entry.path().display(), "removing what a stopped attempt left");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Marks an attempt's directory no longer in use.
    fn release(&self, dir: &Path) {
        if let Some(name) = dir.file_name() {
            self.live.lock().expect("scratch lock").remove(name);
        }
    }

    /// Removes the root at a clean exit, but the sectors the worker holds.
    pub fn remove(&self) {
        if let Err(e) = clear(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "could not remove scratch root");
        }
    }
}

/// `dir/name`, or `None` unless `name` is a relative path of plain components (no root, `.`,
/// `..` or NUL): whatever a message names stays inside `dir`, even if the message was never
/// validated. (Symbolic links inside `dir` are not followed here; the attempt directory is
/// fresh and only the mesh writes to it.)
pub fn join_inside(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty()
        && !name.contains('\0')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| dir.join(name))
}

/// The process on `host` that owns a worker root, from its owner file.
fn owner(dir: &Path, host: &str) -> Option<u32> {
    let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut parts = owner.split_whitespace();
    let (owner_host, pid) = (parts.next()?, parts.next()?);
    (owner_host == host).then(|| pid.parse().ok()).flatten()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes a worker root but its non-empty sectors directory.
fn clear(dir: &Path) -> std::io::Result<()> {
    let kept = dir.join(KEPT);
    let holds = std::fs::read_dir(&kept).is_ok_and(|mut d| d.next().is_some());
    if !holds {
        return std::fs::remove_dir_all(dir);
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path() != kept {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

fn sweep_dead(base: &Path, host: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if owner(&entry.path(), host).is_some_and(|pid| !alive(pid)) {
            info!(dir = %entry.path().display(), "removing scratch of a dead worker (but the sectors it holds)");
            let _ = clear(&entry.path());
        }
    }
}

/// One attempt's directory; removed on [`AttemptDir::remove`] or, failing that, on drop.
#[derive(Debug)]
pub struct AttemptDir {
    dir: Option<PathBuf>,
    root: ScratchRoot,
}

impl AttemptDir {
    pub fn path(&self) -> &Path {
        self.dir.as_deref().expect("present until removed")
    }

    /// Removes the directory. An attempt stopped mid-way may still have a write in flight (a
    /// blocking task, a proof process being killed) that lands while the tree is removed: a
    /// few more tries, a moment apart, take what it left. What lands after that (or what an
    /// earlier stopped attempt left) goes with the root's strays.
    pub async fn remove(mut self) {
        let Some(dir) = self.dir.take() else { return };
        let mut tries = 0;
        loop {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not remove attempt scratch");
                    break;
                }
            }
        }
        self.root.release(&dir);
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || root.remove_strays()).await;
    }
}

impl Drop for AttemptDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(&dir);
            self.root.release(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_nearest_existing_directory() {
        assert!(free_space(Path::new("/tmp/surely/not/there")).is_some());
    }

    #[test]
    fn attempts_are_removed_and_dead_roots_swept() {
        let base = tempfile::tempdir().unwrap();
        // A root left by a process that no longer exists on this host, and one on another host.
        let dead = base.path().join("h-dead");
        std::fs::create_dir_all(dead.join("task-1")).unwrap();
        std::fs::write(dead.join(OWNER_FILE), "h 4000000000").unwrap();
        let other = base.path().join("other-host");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(OWNER_FILE), "elsewhere 4000000000").unwrap();

        // A dead worker that holds a sector: only the sector stays.
        let holder = base.path().join("h-holder");
        std::fs::create_dir_all(holder.join("task-2")).unwrap();
        std::fs::create_dir_all(holder.join("sectors/f01000.1")).unwrap();
        std::fs::write(holder.join(OWNER_FILE), "h 4000000000").unwrap();

        let _first = ScratchRoot::create(base.path(), "h-me", "h").unwrap();
        assert!(!dead.exists());
        assert!(other.exists());
        assert!(!holder.join("task-2").exists() && !holder.join(OWNER_FILE).exists());
        assert!(holder.join("sectors/f01000.1").exists());
        // A root a live process owns is refused; this process's own is not.
        std::fs::write(base.path().join("h-me").join(OWNER_FILE), "h 1").unwrap();
        let e = ScratchRoot::create(base.path(), "h-me", "h").unwrap_err();
        assert!(e.to_string().contains("own --scratch or --id"), "{e}");
        std::fs::write(
            base.path().join("h-me").join(OWNER_FILE),
            format!("h {}", std::process::id()),
        )
        .unwrap();
        let root = ScratchRoot::create(base.path(), "h-me", "h").unwrap();

        let attempt = root.attempt("t-1").unwrap();
        std::fs::write(attempt.path().join("f"), b"x").unwrap();
        let path = attempt.path().to_path_buf();
        drop(attempt);
        assert!(!path.exists());
        root.remove();
        assert!(!root.path().exists());
    }

    #[tokio::test]
    async fn an_attempts_end_removes_what_a_stopped_attempt_wrote_late() {
        let base = tempfile::tempdir().unwrap();
        let root = ScratchRoot::create(base.path(), "w", "h").unwrap();
        let running = root.attempt("t-1").unwrap();
        let stopped = root.attempt("t-2").unwrap();
        let stopped_path = stopped.path().to_path_buf();
        stopped.remove().await;
        // Blocking work of the stopped attempt creates its directory again.
        std::fs::create_dir_all(stopped_path.join("cache")).unwrap();
        std::fs::create_dir_all(root.path().join(KEPT).join("f01000.1")).unwrap();

        root.attempt("t-3").unwrap().remove().await;
        assert!(!stopped_path.exists());
        assert!(
            running.path().exists(),
            "a running attempt keeps its directory"
        );
        assert!(root.path().join(KEPT).join("f01000.1").exists());
        assert!(root.path().join(OWNER_FILE).exists());
        running.remove().await;
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn names_from_messages_stay_inside_the_attempt() {
        let dir = Path::new("/scratch/w/t-1");
        assert_eq!(
            join_inside(dir, "cache/p_aux"),
            Some(dir.join("cache/p_aux"))
        );
        for bad in ["", "/etc/passwd", "../x", "cache/../../x", "./x", "a\0b"] {
            assert_eq!(join_inside(dir, bad), None, "{bad:?}");
        }
        let base = tempfile::tempdir().unwrap();
        let root = ScratchRoot::create(base.path(), "w", "h").unwrap();
        for bad in ["../escape", "a/b", "/tmp/x", ".."] {
            assert!(root.attempt(bad).is_err(), "{bad:?}");
        }
        assert!(!base.path().join("escape").exists());
    }
}
