//! Commit1: the vanilla proofs of the challenges the seed picks, from the sealed replica and the
//! cache. Its output file (~100 KB at 2KiB, ~16 MiB at 32GiB) is Commit2's input.

use std::fs::File;
use std::io;
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::{self as api, seal};
use serde::{Deserialize, Serialize};

use super::{
    Artefact, G, Job, K, M, Phase, SectorData, Spec, layers, mismatch, row, sim, to_api_pieces,
};
use crate::model::{Need, ObjectRef, PieceInfo, SectorSize, WorkerId, check_pieces};

pub struct Commit1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    #[serde(with = "serde_bytes")]
    pub ticket: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub seed: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub comm_r: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub comm_d: [u8; 32],
    pub piece_infos: Vec<PieceInfo>,
}

impl Spec for Commit1 {
    const TOKEN: &'static str = "c1";
    const TITLE: &'static str = "Commit1";
    const PRIORITY: i8 = 2;
    const LOTUS_ENV: &'static str = "C1";
    const LOTUS_FLAG: &'static str = "commit";
    const READS: &'static [Artefact] = &[Artefact::Sealed, Artefact::Cache];
    const WRITES: &'static [Artefact] = &[Artefact::C1Output];
    const SIMULATED: Duration = Duration::from_millis(20);
    const HELD: bool = true;

    fn need(size: SectorSize) -> Need {
        match size {
            SectorSize::GiB64 | SectorSize::GiB32 | SectorSize::MiB512 => row(G, G, 0.0, 0, 0, G),
            SectorSize::MiB8 => row(8 * M, 8 * M, 0.0, 0, 0, 8 * M),
            SectorSize::KiB2 => row(2 * K, 2 * K, 0.0, 0, 0, 2 * K),
        }
    }

    /// The sealed replica and the cache.
    fn scratch(size: SectorSize) -> u64 {
        (4 + layers(size)) * size.bytes()
    }

    fn params(data: &SectorData) -> Result<super::Params, String> {
        let missing = |what: &str| format!("sector has no {what} for c1");
        Ok(super::Params::Commit1(Params {
            ticket: data.ticket,
            seed: data.seed.ok_or_else(|| missing("seed"))?,
            comm_r: data.comm_r.ok_or_else(|| missing("comm_r"))?,
            comm_d: data.comm_d.ok_or_else(|| missing("comm_d"))?,
            piece_infos: data.piece_infos.clone(),
        }))
    }

    fn check_params(
        params: &super::Params,
        _inputs: &[ObjectRef],
        size: SectorSize,
    ) -> Result<(), String> {
        let super::Params::Commit1(Params { piece_infos, .. }) = params else {
            return Err(mismatch(Phase::Commit1, "parameters", params.phase()));
        };
        check_pieces(piece_infos.iter().map(|p| p.size), size)
    }

    /// Nothing besides the output file.
    fn absorb(
        _data: &mut SectorData,
        _size: SectorSize,
        _worker: &WorkerId,
        output: &super::Output,
        _seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        match output {
            super::Output::Commit1 => Ok(()),
            other => Err(mismatch(Phase::Commit1, "output", other.phase())),
        }
    }

    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::Commit1(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::Commit1, "parameters", job.phase()));
        };
        let pre_commit = seal::SealPreCommitPhase2Output {
            registered_proof: job.id.proof,
            comm_r: p.comm_r,
            comm_d: p.comm_d,
        };
        let out = seal::seal_commit_phase1(
            job.path(Artefact::Cache),
            job.path(Artefact::Sealed),
            job.id.prover_id,
            api::SectorId::from(job.id.sector),
            p.ticket,
            p.seed,
            pre_commit,
            &to_api_pieces(&p.piece_infos),
        )?;
        let file = File::create(job.path(Artefact::C1Output)).context("create c1 output file")?;
        serde_json::to_writer(io::BufWriter::new(file), &out).context("write c1 output")?;
        Ok(super::Output::Commit1)
    }

    /// An output file hashed from the randomness and commitments, after reading the replica
    /// and the aux files.
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let super::Params::Commit1(p) = &job.params else {
            anyhow::bail!(mismatch(Phase::Commit1, "parameters", job.phase()));
        };
        sim::read_input(&job.path(Artefact::Sealed))?;
        let cache = job.path(Artefact::Cache);
        for name in sim::AUX {
            sim::read_input(&cache.join(name))?;
        }
        sim::write_shape(
            &job.path(Artefact::C1Output),
            &sim::hash(&[b"c1", &p.seed, &p.comm_r, &p.comm_d]),
            4096,
        )?;
        Ok(super::Output::Commit1)
    }
}
