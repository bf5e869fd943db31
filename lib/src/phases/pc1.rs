//! PreCommit1: the SDR layers and tree D of the unsealed sector, bound to the miner, sector and
//! ticket. Its output (the labels' commitments, ~0.5 KB at 2KiB) rides in the sector's record.

use std::fs::{self, File};
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::{self as api, seal};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{Artefact, G, Job, K, M, Phase, SectorData, Spec, mismatch, row, sim, to_api_pieces};
use crate::model::{Need, ObjectRef, PieceInfo, SectorSize, WorkerId, check_blob, check_pieces};

pub struct PreCommit1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    #[serde(with = "serde_bytes")]
    pub ticket: [u8; 32],
    pub piece_infos: Vec<PieceInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// `SealPreCommitPhase1Output` as JSON, opaque to the mesh.
    pub pc1_output: ByteBuf,
    /// The worker kept the layers and tree D in its sector directory (it holds the sector)
    /// rather than sending them to the store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl Spec for PreCommit1 {
    const TOKEN: &'static str = "pc1";
    const TITLE: &'static str = "PreCommit1";
    const PRIORITY: i8 = 5;
    const LOTUS_ENV: &'static str = "PC1";
    const LOTUS_FLAG: &'static str = "precommit1";
    const READS: &'static [Artefact] = &[Artefact::Unsealed];
    const WRITES: &'static [Artefact] = &[Artefact::Cache];
    const SIMULATED: Duration = Duration::from_millis(3500);
    const HELD: bool = true;
    /// On the worker that keeps the sector, the layers and tree D stay there.
    const HELD_WRITES: &'static [Artefact] = &[];

    fn need(size: SectorSize) -> Need {
        match size {
            SectorSize::GiB64 => row(112 * G, 128 * G, 0.0, 1, 0, 10 * M),
            SectorSize::GiB32 => row(56 * G, 64 * G, 0.0, 1, 0, 10 * M),
            SectorSize::MiB512 => row(768 * M, G, 0.0, 1, 0, M),
            SectorSize::MiB8 => row(8 * M, 8 * M, 0.0, 1, 0, 8 * M),
            SectorSize::KiB2 => row(2 * K, 2 * K, 0.0, 1, 0, 2 * K),
        }
    }

    /// The unsealed file, the (empty) replica, the layers and tree D (twice the sector), and
    /// room for trees C and R: the sector stays on the worker until Finalize.
    fn scratch(size: SectorSize) -> u64 {
        super::Phase::kept(size)
    }

    fn params(data: &SectorData) -> Result<super::Params, String> {
        Ok(super::Params::PreCommit1(Params {
            ticket: data.ticket,
            piece_infos: data.piece_infos.clone(),
        }))
    }

    fn check_params(
        params: &super::Params,
        _inputs: &[ObjectRef],
        size: SectorSize,
    ) -> Result<(), String> {
        let super::Params::PreCommit1(Params { piece_infos, .. }) = params else {
            return Err(mismatch(Phase::PreCommit1, "parameters", params.phase()));
        };
        check_pieces(piece_infos.iter().map(|p| p.size), size)
    }

    fn check_output(output: &super::Output) -> Result<(), String> {
        match output {
            super::Output::PreCommit1(Output { pc1_output, .. }) => {
                check_blob("pc1 output", pc1_output)
            }
            _ => Ok(()),
        }
    }

    fn absorb(
        data: &mut SectorData,
        _size: SectorSize,
        worker: &WorkerId,
        output: &super::Output,
        _seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let super::Output::PreCommit1(Output { pc1_output, held }) = output else {
            return Err(mismatch(Phase::PreCommit1, "output", output.phase()));
        };
        if pc1_output.is_empty() {
            return Err("it carries no pc1 output".into());
        }
        data.pc1_output = Some(pc1_output.clone());
        data.holder = held.then(|| worker.clone());
        Ok(())
    }

    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::PreCommit1(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::PreCommit1, "parameters", job.phase()));
        };
        let cache = job.path(Artefact::Cache);
        let sealed = job.path(Artefact::Sealed);
        fs::create_dir_all(&cache).context("create cache directory")?;
        // PC1 copies the data into the replica file, which must already exist.
        File::create(&sealed).context("create replica file")?;
        let out = seal::seal_pre_commit_phase1(
            job.id.proof,
            &cache,
            job.path(Artefact::Unsealed),
            &sealed,
            job.id.prover_id,
            api::SectorId::from(job.id.sector),
            p.ticket,
            &to_api_pieces(&p.piece_infos),
        )?;
        let pc1_output = serde_json::to_vec(&out).context("encode pc1 output")?;
        Ok(super::Output::PreCommit1(Output {
            pc1_output: ByteBuf::from(pc1_output),
            held: false,
        }))
    }

    /// Layers and tree D hashed from the identity, ticket, pieces and unsealed bytes.
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::PreCommit1(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::PreCommit1, "parameters", job.phase()));
        };
        let data = sim::read_input(&job.path(Artefact::Unsealed))?;
        let seed = sim::hash(&[
            b"pc1",
            &job.id.prover_id,
            &job.id.sector.to_le_bytes(),
            &p.ticket,
            &sim::piece_bytes(&p.piece_infos),
            &data,
        ]);
        let cache = job.path(Artefact::Cache);
        for name in sim::LAYERS.iter().chain([&sim::TREE_D]) {
            sim::write_shape(
                &cache.join(name),
                &sim::hash(&[&seed, name.as_bytes()]),
                data.len() as u64,
            )?;
        }
        let mut pc1_output = seed.to_vec();
        pc1_output.extend_from_slice(&sim::hash(&[&seed]));
        Ok(super::Output::PreCommit1(Output {
            pc1_output: ByteBuf::from(pc1_output),
            held: false,
        }))
    }
}
