//! Finalize: trims the cache to what proving a sealed sector needs (tree R, p_aux, t_aux); the
//! layers and trees C and D are dropped. The sector keeps its sealed replica, the trimmed cache,
//! and its unsealed copy when it holds deals.

use std::time::Duration;

use filecoin_proofs_api::seal;
use serde::{Deserialize, Serialize};

use super::{Artefact, Job, M, Phase, SectorData, Spec, cache_files, layers, mismatch, row, sim};
use crate::model::{MAX_OBJECTS, Need, SectorSize, WorkerId, is_safe_segment, shown};

pub struct Finalize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The cache files Finalize kept (the rest are dropped).
    pub kept: Vec<String>,
}

impl Spec for Finalize {
    const TOKEN: &'static str = "fin";
    const TITLE: &'static str = "Finalize";
    const PRIORITY: i8 = -2;
    const LOTUS_ENV: &'static str = "FIN";
    const LOTUS_FLAG: &'static str = "finalize";
    const READS: &'static [Artefact] = &[Artefact::Cache];
    const WRITES: &'static [Artefact] = &[];
    const SIMULATED: Duration = Duration::from_millis(80);
    const HELD: bool = true;
    /// On the holder, the replica and the trimmed cache leave it for the store.
    const HELD_WRITES: &'static [Artefact] = &[Artefact::Sealed, Artefact::Cache];

    /// Lotus has no Finalize row; this is its Fetch row (1 MiB, no threads).
    fn need(_size: SectorSize) -> Need {
        row(M, M, 0.0, 0, 0, 0)
    }

    /// The cache it trims, and the replica beside it.
    fn scratch(size: SectorSize) -> u64 {
        (4 + layers(size)) * size.bytes()
    }

    fn params(_data: &SectorData) -> Result<super::Params, String> {
        Ok(super::Params::Finalize)
    }

    /// Kept files are plain file names, and not too many.
    fn check_output(output: &super::Output) -> Result<(), String> {
        let super::Output::Finalize(Output { kept }) = output else {
            return Ok(());
        };
        if kept.len() > MAX_OBJECTS {
            return Err(format!(
                "{} kept files, more than the {MAX_OBJECTS} allowed",
                kept.len()
            ));
        }
        match kept.iter().find(|k| !is_safe_segment(k)) {
            Some(bad) => Err(format!("kept file '{}' is not a file name", shown(bad))),
            None => Ok(()),
        }
    }

    /// Drops every object but the replica, the kept cache files and (for deals) the unsealed
    /// copy.
    fn absorb(
        data: &mut SectorData,
        _size: SectorSize,
        _worker: &WorkerId,
        output: &super::Output,
        _seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let super::Output::Finalize(Output { kept }) = output else {
            return Err(mismatch(Phase::Finalize, "output", output.phase()));
        };
        let is_kept = |name: &str| {
            Artefact::in_cache(name).is_some_and(|file| kept.iter().any(|k| k == file))
        };
        // On the holder the replica and kept files arrive as this task's outputs; otherwise
        // they are among the sector's objects already.
        if data.holder.is_none() && !data.objects.keys().any(|name| is_kept(name)) {
            return Err("it kept none of the sector's cache files".into());
        }
        if kept.is_empty() {
            return Err("it kept none of the sector's cache files".into());
        }
        let has_deals = data.has_deals();
        data.objects.retain(|name, _| match Artefact::of(name) {
            Some(Artefact::Sealed) => true,
            Some(Artefact::Unsealed) => has_deals,
            Some(Artefact::Cache) => is_kept(name),
            _ => false,
        });
        Ok(())
    }

    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let cache = job.path(Artefact::Cache);
        seal::clear_cache(&cache)?;
        Ok(super::Output::Finalize(Output {
            kept: cache_files(&cache)?,
        }))
    }

    /// Removes the layers and trees C and D, after checking tree R is there.
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let cache = job.path(Artefact::Cache);
        for name in sim::LAYERS.iter().chain([&sim::TREE_D, &sim::TREE_C]) {
            match std::fs::remove_file(cache.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        sim::read_input(&cache.join(sim::TREE_R))?;
        Ok(super::Output::Finalize(Output {
            kept: cache_files(&cache)?,
        }))
    }
}
