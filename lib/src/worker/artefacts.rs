//! A task as its phase's proof job, and which files of the attempt directory go back to the
//! store afterwards: those of the artefacts the phase writes (a directory's files only when new
//! or changed, so that PreCommit2 does not upload PreCommit1's layers again).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::model::{ObjectRef, SectorIdentity};
use crate::phases::{self, Artefact};
use crate::sector::Task;
use crate::store::sha256_file;

/// The proof job for `task`, reading and writing inside `dir`.
pub fn job(task: &Task, dir: &Path) -> phases::Job {
    phases::Job {
        id: SectorIdentity {
            proof: task.proof,
            prover_id: task.miner.prover_id(),
            sector: task.sector.0,
        },
        dir: dir.to_path_buf(),
        params: task.params.clone(),
    }
}

/// Files to upload after `task` ran in `dir` (`on_holder`: the sector's directory on the
/// worker that holds it, from which only what leaves it is uploaded; `backup_since`: on the
/// holder, back up everything the phase wrote since then, as a worker that does not hold
/// sectors would upload it): (object name, local path).
pub async fn outputs(
    task: &Task,
    dir: &Path,
    on_holder: bool,
    backup_since: Option<SystemTime>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let backup = on_holder && backup_since.is_some();
    for &artefact in task.phase.uploads(on_holder && !backup) {
        if artefact.is_dir() && backup {
            // The holder's directory keeps earlier phases' files, which are not inputs here:
            // what this phase wrote is what changed since it began.
            for (name, path) in changed_files(dir, artefact, &[]).await? {
                let modified = tokio::fs::metadata(&path).await?.modified()?;
                if backup_since.is_some_and(|since| modified >= since) {
                    files.push((name, path));
                }
            }
        } else if artefact.is_dir() {
            files.extend(changed_files(dir, artefact, &task.inputs).await?);
        } else {
            files.push((artefact.name().to_string(), artefact.path(dir)));
        }
    }
    Ok(files)
}

/// Files directly inside a directory artefact that are new, or differ from the input of the
/// same name; sorted.
async fn changed_files(
    dir: &Path,
    artefact: Artefact,
    inputs: &[ObjectRef],
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut entries = match tokio::fs::read_dir(artefact.path(dir)).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e.into()),
    };
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            let name = artefact.file(&entry.file_name().to_string_lossy());
            files.push((name, entry.path()));
        }
    }
    files.sort();
    let mut changed = Vec::with_capacity(files.len());
    for (name, path) in files {
        if let Some(input) = inputs.iter().find(|i| i.name == name) {
            let p = path.clone();
            let sha = tokio::task::spawn_blocking(move || sha256_file(&p)).await??;
            if sha == input.sha256 {
                continue;
            }
        }
        changed.push((name, path));
    }
    Ok(changed)
}
