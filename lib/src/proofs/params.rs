//! Groth parameters: the files a proof type needs, generating insecure test parameters, and
//! sharing them through the object store so that provers and verifiers use the same files.

use std::path::Path;

use anyhow::Context;
use filecoin_proofs::{DefaultPieceHasher, MerkleTreeTrait, with_shape};
use storage_proofs_core::compound_proof::CompoundProof;
use storage_proofs_core::parameter_cache::{CacheableParameters, parameter_id, verifying_key_id};
use storage_proofs_porep::stacked::{StackedCircuit, StackedCompound, StackedDrg};

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::RegisteredSealProof;
use super::child::ChildRunner;
use super::job::{Job, JobOutput};
use crate::model::SectorSize;
use crate::store::{Store, StoreError, sha256_file};

/// The default parameter cache, as filecoin-proofs and lotus use it.
pub const DEFAULT_CACHE: &str = "/var/tmp/filecoin-proof-parameters";

/// The store key prefix under which parameters are shared.
pub const STORE_PREFIX: &str = "params";

/// The parameter files one seal proof type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamFiles {
    /// Groth parameters, read by Commit2 (1.1 GB at 2KiB, ~100 GB at 32GiB).
    pub params: String,
    /// Verifying key, read by `verify_seal`.
    pub vk: String,
}

impl ParamFiles {
    pub fn all(&self) -> [&str; 2] {
        [&self.params, &self.vk]
    }

    pub fn names(&self) -> Vec<String> {
        vec![self.params.clone(), self.vk.clone()]
    }
}

/// The parameter files of a seal proof type. Cheap: derives names from the circuit identifier.
pub fn param_files(proof: RegisteredSealProof) -> anyhow::Result<ParamFiles> {
    let id = with_shape!(
        u64::from(proof.sector_size()),
        cache_identifier,
        &proof.as_v1_config(),
    )?;
    Ok(ParamFiles {
        params: parameter_id(&id),
        vk: verifying_key_id(&id),
    })
}

fn cache_identifier<Tree: 'static + MerkleTreeTrait>(
    config: &filecoin_proofs::PoRepConfig,
) -> anyhow::Result<String> {
    let public_params = filecoin_proofs::parameters::public_params::<Tree>(config)?;
    Ok(
        <StackedCompound<Tree, DefaultPieceHasher> as CacheableParameters<
            StackedCircuit<Tree, DefaultPieceHasher>,
            _,
        >>::cache_identifier(&public_params),
    )
}

/// Builds the SDR parent cache of a seal proof type (under `FIL_PROOFS_PARENT_CACHE`) if it is
/// missing, as the first PreCommit1 of that size otherwise would (about 1 GB at 512MiB, 56 GiB
/// at 32GiB).
pub fn build_parent_cache(proof: RegisteredSealProof) -> anyhow::Result<()> {
    with_shape!(
        u64::from(proof.sector_size()),
        parent_cache_of,
        &proof.as_v1_config(),
    )
}

fn parent_cache_of<Tree: 'static + MerkleTreeTrait>(
    config: &filecoin_proofs::PoRepConfig,
) -> anyhow::Result<()> {
    let public_params = filecoin_proofs::parameters::public_params::<Tree>(config)?;
    public_params.graph.parent_cache()?;
    Ok(())
}

/// Files of `wanted` that are not in `dir`.
pub fn missing<'a>(dir: &Path, wanted: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    wanted
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .map(str::to_string)
        .collect()
}

/// Generates random (insecure, test-only) Groth parameters and verifying key for a proof type
/// into the parameter cache this process was started with (`FIL_PROOFS_PARAMETER_CACHE`).
/// Runs for minutes (about 17 on 2 cores at 2KiB) and needs a few GB of memory.
pub fn generate(proof: RegisteredSealProof) -> anyhow::Result<Vec<String>> {
    with_shape!(
        u64::from(proof.sector_size()),
        generate_shape,
        &proof.as_v1_config(),
    )
    .with_context(|| format!("generate parameters for {proof:?}"))?;
    let files = param_files(proof)?;
    Ok(files.names())
}

fn generate_shape<Tree: 'static + MerkleTreeTrait>(
    config: &filecoin_proofs::PoRepConfig,
) -> anyhow::Result<()> {
    type Compound<Tree> = StackedCompound<Tree, DefaultPieceHasher>;
    let public_params = filecoin_proofs::parameters::public_params::<Tree>(config)?;
    let mut rng = rand::rngs::OsRng;
    <Compound<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::groth_params(
        Some(&mut rng),
        &public_params,
    )?;
    <Compound<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::verifying_key(
        Some(&mut rng),
        &public_params,
    )?;
    Ok(())
}

/// Generates test parameters for `proof` into `cache` through a child process, logging progress
/// while it runs. Files appear in `cache` only once complete, so an interrupted run leaves nothing
/// half-written behind. Returns the names of the files written.
pub async fn generate_into(
    runner: &ChildRunner,
    proof: RegisteredSealProof,
    cache: &Path,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    tokio::fs::create_dir_all(cache)
        .await
        .with_context(|| format!("create parameter cache {}", cache.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".generating-")
        .tempdir_in(cache)
        .with_context(|| format!("create a work directory in {}", cache.display()))?;
    let runner = ChildRunner {
        param_cache: work.path().to_path_buf(),
        ..runner.clone()
    };
    let started = Instant::now();
    let job = Job::GenerateParams { proof };
    let pin = super::child::Pin::default();
    let run = runner.run(&job, work.path(), &pin, cancel);
    tokio::pin!(run);
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    ticker.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            _ = ticker.tick() => info!(
                proof = ?proof,
                elapsed_s = started.elapsed().as_secs(),
                "still generating parameters (2KiB takes about 17 minutes on 2 cores)"
            ),
        }
    };
    let files = match outcome {
        Ok(JobOutput::GenerateParams { files }) => files,
        Ok(other) => anyhow::bail!("generate parameters: unexpected outcome {other:?}"),
        Err(e) => anyhow::bail!("generate parameters: {e}"),
    };
    for name in &files {
        tokio::fs::rename(work.path().join(name), cache.join(name))
            .await
            .with_context(|| format!("move {name} into {}", cache.display()))?;
    }
    info!(
        elapsed_s = started.elapsed().as_secs(),
        dir = %cache.display(),
        "parameters generated"
    );
    Ok(files)
}

/// A parameter file that neither the local cache nor the store has.
#[derive(Debug, thiserror::Error)]
#[error(
    "Groth parameter file {file} is in neither {cache} nor the store {store}: for test sizes \
     run `mesh-worker params generate --size {size}` then `mesh-worker params push --store \
     {store}`; for production sizes fetch the official parameters (e.g. `lotus fetch-params \
     {size}`) and push them"
)]
pub struct ParamsUnavailable {
    pub file: String,
    pub cache: String,
    pub store: String,
    pub size: String,
}

fn sidecar(name: &str) -> String {
    format!("{STORE_PREFIX}/{name}.sha256")
}

fn store_key(name: &str) -> String {
    format!("{STORE_PREFIX}/{name}")
}

/// Uploads the named files from the local cache to the store (with a sha256 sidecar each),
/// skipping those the store already has with the same digest. Returns the files uploaded.
pub async fn push(store: &Store, cache: &Path, files: &[String]) -> anyhow::Result<Vec<String>> {
    let mut pushed = Vec::new();
    for name in files {
        let path = cache.join(name);
        let local_sha = tokio::task::spawn_blocking({
            let path = path.clone();
            move || sha256_file(&path)
        })
        .await??;
        if let Ok(remote) = store.get_bytes(&sidecar(name)).await
            && remote.as_ref() == hex::encode(local_sha).as_bytes()
        {
            info!(file = %name, "already in the store");
            continue;
        }
        info!(file = %name, "uploading");
        let object = store.put_file(name, &store_key(name), &path).await?;
        store
            .put_bytes(&sidecar(name), hex::encode(object.sha256).into_bytes())
            .await?;
        pushed.push(name.clone());
    }
    Ok(pushed)
}

/// Downloads each named file the local cache lacks from the store, checking it against its
/// sha256 sidecar; files appear in the cache only once complete and verified.
pub async fn pull(
    store: &Store,
    cache: &Path,
    files: &[String],
    size: SectorSize,
) -> Result<Vec<String>, PullError> {
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(|e| PullError::Other(anyhow::anyhow!("create {}: {e}", cache.display())))?;
    let mut pulled = Vec::new();
    for name in missing(cache, files.iter().map(String::as_str)) {
        let unavailable = || ParamsUnavailable {
            file: name.clone(),
            cache: cache.display().to_string(),
            store: store.name().to_string(),
            size: size.label().to_string(),
        };
        let sha = match store.get_bytes(&sidecar(&name)).await {
            Ok(sha) => sha,
            Err(StoreError::NotFound { .. }) => return Err(PullError::Unavailable(unavailable())),
            Err(e) => return Err(PullError::Other(e.into())),
        };
        let sha: [u8; 32] = hex::decode(sha.as_ref())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                PullError::Other(anyhow::anyhow!(
                    "store sidecar {} is not a sha256",
                    sidecar(&name)
                ))
            })?;
        // One download per file per machine: tasks and processes sharing this cache take the
        // file's lock, and whoever gets it second finds the file in place.
        let _lock = download_lock(cache, &name)
            .await
            .map_err(PullError::Other)?;
        if cache.join(&name).is_file() {
            info!(file = %name, "another download put it in the cache");
            continue;
        }
        info!(file = %name, store = %store.name(), "pulling parameters");
        let tmp = cache.join(format!(
            ".{name}.{}.{:016x}.part",
            std::process::id(),
            rand::random::<u64>()
        ));
        let (got_size, got) = match store.get_file(&store_key(&name), &tmp).await {
            Ok(v) => v,
            Err(StoreError::NotFound { .. }) => return Err(PullError::Unavailable(unavailable())),
            Err(e) => return Err(PullError::Other(e.into())),
        };
        if got != sha {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(PullError::Other(
                StoreError::Corrupt {
                    key: store_key(&name),
                    expected: hex::encode(sha),
                    got: hex::encode(got),
                    expected_size: got_size,
                    got_size,
                }
                .into(),
            ));
        }
        tokio::fs::rename(&tmp, cache.join(&name))
            .await
            .map_err(|e| PullError::Other(anyhow::anyhow!("move {name} into place: {e}")))?;
        pulled.push(name);
    }
    Ok(pulled)
}

/// Takes the exclusive lock of `.{name}.lock` in the cache, waiting (without blocking a
/// thread) while another task or process holds it; the lock is released on drop.
async fn download_lock(
    cache: &Path,
    name: &str,
) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    let path = cache.join(format!(".{name}.lock"));
    // Read-only where it exists (flock needs no write access), so that users sharing a cache
    // share the lock whoever made it.
    let mut file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path),
        opened => opened,
    }
    .with_context(|| format!("open the download lock {}", path.display()))?;
    let mut waiting = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK)) => {
                if !waiting {
                    info!(file = %name, "waiting for another download of it into this cache");
                    waiting = true;
                }
                file = back;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err((_, e)) => anyhow::bail!("lock {}: {e}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Unavailable(ParamsUnavailable),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pulls of the same files into one empty cache at once (two Commit2 tasks on a fresh
    /// worker): each file is downloaded by one of them, and the other finds it in place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pulls_download_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::StoreConfig {
            url: dir.path().join("store").display().to_string(),
            options: vec![],
        })
        .unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        let names = vec!["one.params".to_string(), "one.vk".to_string()];
        for name in &names {
            std::fs::write(source.join(name), name.repeat(200_000)).unwrap();
        }
        push(&store, &source, &names).await.unwrap();

        let cache = dir.path().join("cache");
        let (a, b) = tokio::join!(
            pull(&store, &cache, &names, SectorSize::KiB2),
            pull(&store, &cache, &names, SectorSize::KiB2)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut downloads = [a.clone(), b.clone()].concat();
        downloads.sort();
        assert_eq!(downloads, names, "one download per file: {a:?} and {b:?}");
        for name in &names {
            assert_eq!(
                std::fs::read(cache.join(name)).unwrap(),
                std::fs::read(source.join(name)).unwrap()
            );
        }
        let parts: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".part"))
            .collect();
        assert!(parts.is_empty(), "{parts:?}");
    }

    #[test]
    fn two_kib_parameter_names_match_the_library() {
        let files = param_files(SectorSize::KiB2.seal_proof()).unwrap();
        assert!(
            files.params.starts_with(
                "v28-stacked-proof-of-replication-merkletree-poseidon_hasher-8-0-0-sha256_hasher-"
            ),
            "{}",
            files.params
        );
        assert!(files.params.ends_with(".params"));
        assert_eq!(files.vk, files.params.replace(".params", ".vk"));
    }
}
