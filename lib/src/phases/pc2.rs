//! PreCommit2: encodes the sealed replica from a fresh copy of the unsealed data, builds trees C
//! and R and commits to them (CommR) and to the data (CommD). Once the sector absorbs it, the
//! interactive seed is drawn.

use std::fs;
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::seal;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{Artefact, G, Job, K, M, Phase, SectorData, Spec, layers, mismatch, row, sim};
use crate::model::{Need, ObjectRef, SectorSize, WorkerId, check_blob};

pub struct PreCommit2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub pc1_output: ByteBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    #[serde(with = "serde_bytes")]
    pub comm_r: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub comm_d: [u8; 32],
}

impl Spec for PreCommit2 {
    const TOKEN: &'static str = "pc2";
    const TITLE: &'static str = "PreCommit2";
    const PRIORITY: i8 = 4;
    const LOTUS_ENV: &'static str = "PC2";
    const LOTUS_FLAG: &'static str = "precommit2";
    const READS: &'static [Artefact] = &[Artefact::Unsealed, Artefact::Cache];
    const WRITES: &'static [Artefact] = &[Artefact::Sealed, Artefact::Cache];
    const SIMULATED: Duration = Duration::from_millis(500);
    const HELD: bool = true;
    /// On the holder, the replica and trees stay there until Finalize.
    const HELD_WRITES: &'static [Artefact] = &[];

    fn need(size: SectorSize) -> Need {
        match size {
            SectorSize::GiB64 => row(30 * G, 30 * G, 1.0, -1, 6, G),
            SectorSize::GiB32 => row(15 * G, 15 * G, 1.0, -1, 6, G),
            SectorSize::MiB512 => row(G, 3 * G / 2, 0.0, -1, 0, G),
            SectorSize::MiB8 => row(8 * M, 8 * M, 0.0, -1, 0, 8 * M),
            SectorSize::KiB2 => row(2 * K, 2 * K, 0.0, -1, 0, 2 * K),
        }
    }

    /// PreCommit1's files plus the sealed replica and trees C and R.
    fn scratch(size: SectorSize) -> u64 {
        (5 + layers(size)) * size.bytes()
    }

    fn params(data: &SectorData) -> Result<super::Params, String> {
        let pc1_output = data
            .pc1_output
            .clone()
            .ok_or("sector has no pc1 output for pc2")?;
        Ok(super::Params::PreCommit2(Params { pc1_output }))
    }

    fn check_params(
        params: &super::Params,
        _inputs: &[ObjectRef],
        _size: SectorSize,
    ) -> Result<(), String> {
        let super::Params::PreCommit2(Params { pc1_output }) = params else {
            return Err(mismatch(Phase::PreCommit2, "parameters", params.phase()));
        };
        check_blob("pc1 output", pc1_output)
    }

    /// Keeps the commitments and draws the interactive seed.
    fn absorb(
        data: &mut SectorData,
        _size: SectorSize,
        _worker: &WorkerId,
        output: &super::Output,
        seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let super::Output::PreCommit2(Output { comm_r, comm_d }) = output else {
            return Err(mismatch(Phase::PreCommit2, "output", output.phase()));
        };
        data.comm_r = Some(*comm_r);
        data.comm_d = Some(*comm_d);
        data.seed = Some(seed());
        Ok(())
    }

    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::PreCommit2(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::PreCommit2, "parameters", job.phase()));
        };
        let pc1: seal::SealPreCommitPhase1Output =
            serde_json::from_slice(&p.pc1_output).context("decode pc1 output")?;
        let sealed = job.path(Artefact::Sealed);
        // PC2 encodes the replica in place: it always starts from a fresh copy of the data.
        fs::copy(job.path(Artefact::Unsealed), &sealed)
            .context("copy unsealed data into the replica file")?;
        let out = seal::seal_pre_commit_phase2(pc1, job.path(Artefact::Cache), &sealed)?;
        Ok(super::Output::PreCommit2(Output {
            comm_r: out.comm_r,
            comm_d: out.comm_d,
        }))
    }

    /// A replica and trees hashed from the PC1 output, after reading the layers.
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::PreCommit2(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::PreCommit2, "parameters", job.phase()));
        };
        let data = sim::read_input(&job.path(Artefact::Unsealed))?;
        let cache = job.path(Artefact::Cache);
        for name in sim::LAYERS {
            sim::read_input(&cache.join(name))?;
        }
        let comm_d = sim::hash(&[b"comm_d", &p.pc1_output]);
        let comm_r = sim::hash(&[b"comm_r", &p.pc1_output]);
        sim::write_shape(&job.path(Artefact::Sealed), &comm_r, data.len() as u64)?;
        for name in [sim::TREE_C, sim::TREE_R].iter().chain(sim::AUX.iter()) {
            sim::write_shape(
                &cache.join(name),
                &sim::hash(&[&comm_r, name.as_bytes()]),
                256,
            )?;
        }
        Ok(super::Output::PreCommit2(Output { comm_r, comm_d }))
    }
}
