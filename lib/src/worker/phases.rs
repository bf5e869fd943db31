//! What each phase means on a worker: the proof job a task becomes, and which files of the
//! attempt directory go back to the store afterwards.

use std::path::{Path, PathBuf};

use serde_bytes::ByteBuf;

use crate::model::{ObjectRef, PhaseOutput, PhaseParams, Task};
use crate::proofs::job::{Job, JobOutput, PieceSource, SectorIdentity};
use crate::proofs::prover_id;

/// The proof job for `task`, reading and writing inside `dir`.
pub fn job(task: &Task, dir: &Path) -> Job {
    let id = SectorIdentity {
        proof: task.proof,
        prover_id: prover_id(task.miner),
        sector: task.sector.0,
    };
    let cache = dir.join("cache");
    let unsealed = dir.join("unsealed");
    let sealed = dir.join("sealed");
    let c1_output = dir.join("c1.out");
    match &task.params {
        PhaseParams::AddPiece { pieces } => Job::AddPiece {
            proof: task.proof,
            pieces: pieces
                .iter()
                .map(|p| PieceSource {
                    path: p.object.as_ref().map(|name| dir.join(name)),
                    size: p.size,
                })
                .collect(),
            unsealed,
        },
        PhaseParams::PreCommit1 {
            ticket,
            piece_infos,
        } => Job::PreCommit1 {
            id,
            ticket: *ticket,
            piece_infos: piece_infos.clone(),
            cache,
            unsealed,
            sealed,
        },
        PhaseParams::PreCommit2 { pc1_output } => Job::PreCommit2 {
            pc1_output: pc1_output.to_vec(),
            cache,
            unsealed,
            sealed,
        },
        PhaseParams::Commit1 {
            ticket,
            seed,
            comm_r,
            comm_d,
            piece_infos,
        } => Job::Commit1 {
            id,
            ticket: *ticket,
            seed: *seed,
            comm_r: *comm_r,
            comm_d: *comm_d,
            piece_infos: piece_infos.clone(),
            cache,
            sealed,
            c1_output,
        },
        PhaseParams::Commit2 => Job::Commit2 { id, c1_output },
        PhaseParams::Finalize => Job::Finalize { cache },
    }
}

/// Files to upload (scratch name, local path) and the phase output, from a finished job.
/// Cache files that are unchanged inputs are not uploaded again.
pub async fn collect(
    task: &Task,
    dir: &Path,
    output: JobOutput,
) -> anyhow::Result<(Vec<(String, PathBuf)>, PhaseOutput)> {
    let file = |name: &str| (name.to_string(), dir.join(name));
    Ok(match output {
        JobOutput::AddPiece { piece_infos } => (
            vec![file("unsealed")],
            PhaseOutput::AddPiece { piece_infos },
        ),
        JobOutput::PreCommit1 { pc1_output } => (
            changed_cache_files(dir, &task.inputs).await?,
            PhaseOutput::PreCommit1 {
                pc1_output: ByteBuf::from(pc1_output),
            },
        ),
        JobOutput::PreCommit2 { comm_r, comm_d } => {
            let mut files = vec![file("sealed")];
            files.extend(changed_cache_files(dir, &task.inputs).await?);
            (files, PhaseOutput::PreCommit2 { comm_r, comm_d })
        }
        JobOutput::Commit1 => (vec![file("c1.out")], PhaseOutput::Commit1),
        JobOutput::Commit2 { proof } => (
            vec![],
            PhaseOutput::Commit2 {
                proof: ByteBuf::from(proof),
            },
        ),
        JobOutput::Finalize => {
            let kept = cache_files(dir)
                .await?
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            (vec![], PhaseOutput::Finalize { kept })
        }
        other @ (JobOutput::Verify { .. } | JobOutput::GenerateParams { .. }) => {
            anyhow::bail!("a sealing task produced {other:?}")
        }
    })
}

/// File names directly inside `dir/cache`, sorted.
async fn cache_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir.join("cache")).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Cache files that are new, or differ from the input of the same name.
async fn changed_cache_files(
    dir: &Path,
    inputs: &[ObjectRef],
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (file, path) in cache_files(dir).await? {
        let name = format!("cache/{file}");
        if let Some(input) = inputs.iter().find(|i| i.name == name) {
            let p = path.clone();
            let sha = tokio::task::spawn_blocking(move || sha256_file(&p)).await??;
            if sha == input.sha256 {
                continue;
            }
        }
        out.push((name, path));
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}
