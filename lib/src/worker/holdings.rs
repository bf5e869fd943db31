//! The sectors this worker holds: a sector whose PreCommit1 ran here keeps its unsealed copy,
//! replica, layers and trees in `<scratch>/<worker-id>/sectors/<miner>.<sector>/`, which
//! outlives the attempt and the process, and its PreCommit2, Commit1 and Finalize run there (the
//! publisher sends them to this worker only). A marker file written when PreCommit1 succeeds
//! says which task made the directory; a directory without one is a PreCommit1 that did not
//! finish, and is removed. A restarted worker with the same id and scratch path finds its
//! sectors again ([`Holdings::open`]); [`Holdings::stale`] says which of them the mesh has moved
//! on from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::model::{MinerId, SectorNum, SectorSize, WorkerId};
use crate::phases::Phase;
use crate::sector::{SectorRecord, SectorState, TaskId};

const SECTORS_DIR: &str = "sectors";
const MARKER: &str = ".mesh-sector";

/// What the marker of a held sector's directory says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub size: SectorSize,
    /// The PreCommit1 task that made the directory.
    pub pc1: TaskId,
}

/// The sector directories of one worker, shared by its attempts.
#[derive(Debug, Clone)]
pub struct Holdings {
    dir: PathBuf,
    held: Arc<Mutex<BTreeMap<(MinerId, SectorNum), Held>>>,
}

impl Holdings {
    /// Opens (creating it) the sectors directory under the worker's scratch root and takes
    /// stock: directories with a marker are held sectors; the rest are removed.
    pub fn open(root: &Path) -> std::io::Result<Holdings> {
        let dir = root.join(SECTORS_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut held = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let marker = std::fs::read(path.join(MARKER))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Held>(&bytes).ok());
            match (parse_name(&name), marker) {
                (Some(key), Some(marker)) => {
                    held.insert(key, marker);
                }
                _ => {
                    info!(dir = %path.display(), "removing an unfinished sector directory");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        if !held.is_empty() {
            info!(sectors = held.len(), "holding sectors from an earlier run");
        }
        Ok(Holdings {
            dir,
            held: Arc::new(Mutex::new(held)),
        })
    }

    fn path(&self, miner: MinerId, sector: SectorNum) -> PathBuf {
        self.dir.join(format!("{miner}.{sector}"))
    }

    /// A fresh directory for a PreCommit1 of the sector (whatever an earlier attempt left there
    /// is removed); the sector is not held until [`Holdings::keep`].
    pub fn begin(&self, miner: MinerId, sector: SectorNum) -> std::io::Result<PathBuf> {
        self.held
            .lock()
            .expect("holdings lock")
            .remove(&(miner, sector));
        let dir = self.path(miner, sector);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Marks the sector, whose PreCommit1 `pc1` just succeeded in its directory, as held.
    pub fn keep(&self, miner: MinerId, sector: SectorNum, held: Held) -> std::io::Result<()> {
        let body = serde_json::to_vec(&held).expect("marker serializes");
        std::fs::write(self.path(miner, sector).join(MARKER), body)?;
        self.held
            .lock()
            .expect("holdings lock")
            .insert((miner, sector), held);
        Ok(())
    }

    /// The directory of a held sector, if this worker holds it and it is still there.
    pub fn get(&self, miner: MinerId, sector: SectorNum) -> Option<PathBuf> {
        let held = self.held.lock().expect("holdings lock");
        let dir = self.path(miner, sector);
        (held.contains_key(&(miner, sector)) && dir.join(MARKER).is_file()).then_some(dir)
    }

    /// Removes a sector's directory (held or not); returns the disk it had claimed when held.
    pub fn free(&self, miner: MinerId, sector: SectorNum) -> u64 {
        let held = self
            .held
            .lock()
            .expect("holdings lock")
            .remove(&(miner, sector));
        let dir = self.path(miner, sector);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %dir.display(), error = %e, "could not remove a sector directory");
        }
        held.map_or(0, |h| Phase::kept(h.size))
    }

    /// Every held sector.
    pub fn list(&self) -> Vec<(MinerId, SectorNum, Held)> {
        self.held
            .lock()
            .expect("holdings lock")
            .iter()
            .map(|(&(miner, sector), held)| (miner, sector, held.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.held.lock().expect("holdings lock").is_empty()
    }

    /// Disk the held sectors claim.
    pub fn kept_bytes(&self) -> u64 {
        self.held
            .lock()
            .expect("holdings lock")
            .values()
            .map(|h| Phase::kept(h.size))
            .sum()
    }
}

/// Whether worker `me` may let go of a sector it holds, given the sector's record (`None`: the
/// sector is gone): yes once the sector is finished, or another worker holds it, or it went
/// back to a PreCommit1 other than the one that made the directory. A sector whose PreCommit1
/// result is not applied yet is still ours.
pub fn stale(me: &WorkerId, held: &Held, record: Option<&SectorRecord>) -> Option<String> {
    let Some(record) = record else {
        return Some("the sector no longer exists".into());
    };
    match (&record.state, &record.data.holder) {
        (state, _) if state.is_finished() => Some(format!("the sector is {}", state.label())),
        (_, Some(holder)) if holder == me => None,
        (_, Some(holder)) => Some(format!("worker {holder} holds the sector now")),
        (SectorState::Active { task, .. }, None) if *task == held.pc1 => None,
        (SectorState::Active { task, .. }, None) => {
            Some(format!("the sector waits for task {task}, not this worker"))
        }
        _ => None,
    }
}

/// `f01000.12` back to its miner and sector.
fn parse_name(name: &str) -> Option<(MinerId, SectorNum)> {
    let (miner, sector) = name.split_once('.')?;
    Some((miner.parse().ok()?, SectorNum(sector.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_sectors_survive_a_restart_and_unfinished_ones_do_not() {
        let root = tempfile::tempdir().unwrap();
        let miner: MinerId = "f01000".parse().unwrap();
        let holdings = Holdings::open(root.path()).unwrap();
        let kept = holdings.begin(miner, SectorNum(1)).unwrap();
        std::fs::write(kept.join("sc-02-data-tree-d.dat"), b"d").unwrap();
        let held = Held {
            size: SectorSize::KiB2,
            pc1: TaskId::new(miner, SectorNum(1), Phase::PreCommit1, 0),
        };
        holdings.keep(miner, SectorNum(1), held.clone()).unwrap();
        let unfinished = holdings.begin(miner, SectorNum(2)).unwrap();
        assert_eq!(holdings.get(miner, SectorNum(2)), None);

        let again = Holdings::open(root.path()).unwrap();
        assert_eq!(again.list(), vec![(miner, SectorNum(1), held)]);
        assert_eq!(again.get(miner, SectorNum(1)), Some(kept.clone()));
        assert!(!unfinished.exists());
        assert_eq!(again.kept_bytes(), Phase::kept(SectorSize::KiB2));
        assert_eq!(
            again.free(miner, SectorNum(1)),
            Phase::kept(SectorSize::KiB2)
        );
        assert!(!kept.exists() && again.is_empty());
    }
}
