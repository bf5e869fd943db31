//! Commit2: the SNARK (192 bytes per partition) over Commit1's vanilla proofs, with the Groth
//! parameters of the sector's proof type. The publisher verifies it before Finalize.

use std::fs::File;
use std::io;
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::{self as api, seal};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{Artefact, G, Job, K, M, Phase, SectorData, Spec, mismatch, row, sim};
use crate::model::{Need, SectorSize, WorkerId, check_blob};

pub struct Commit2;

/// Bytes of a simulated proof: 192 per partition, one partition at the test sizes.
const PROOF_BYTES: usize = 192;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub proof: ByteBuf,
}

impl Spec for Commit2 {
    const TOKEN: &'static str = "c2";
    const TITLE: &'static str = "Commit2";
    const PRIORITY: i8 = 3;
    const LOTUS_ENV: &'static str = "C2";
    const LOTUS_FLAG: &'static str = "commit";
    const READS: &'static [Artefact] = &[Artefact::C1Output];
    const WRITES: &'static [Artefact] = &[];
    const SIMULATED: Duration = Duration::from_millis(500);
    const NEEDS_PARAMS: bool = true;

    fn need(size: SectorSize) -> Need {
        match size {
            SectorSize::GiB64 => row(60 * G, 190 * G, 1.0, -1, 6, 64 * G),
            SectorSize::GiB32 => row(30 * G, 150 * G, 1.0, -1, 6, 32 * G),
            SectorSize::MiB512 => row(G, 3 * G / 2, 1.0, 1, 0, 10 * G),
            SectorSize::MiB8 => row(8 * M, 8 * M, 1.0, 1, 0, 8 * M),
            SectorSize::KiB2 => row(2 * K, 2 * K, 1.0, 1, 0, 2 * K),
        }
    }

    /// Only Commit1's output, under 1/64 of the sector.
    fn scratch(size: SectorSize) -> u64 {
        size.bytes() / 64
    }

    fn params(_data: &SectorData) -> Result<super::Params, String> {
        Ok(super::Params::Commit2)
    }

    fn check_output(output: &super::Output) -> Result<(), String> {
        match output {
            super::Output::Commit2(Output { proof }) => check_blob("proof", proof),
            _ => Ok(()),
        }
    }

    /// Keeps the proof (the publisher verifies it before it gets here).
    fn absorb(
        data: &mut SectorData,
        _size: SectorSize,
        _worker: &WorkerId,
        output: &super::Output,
        _seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let super::Output::Commit2(Output { proof }) = output else {
            return Err(mismatch(Phase::Commit2, "output", output.phase()));
        };
        if proof.is_empty() {
            return Err("it carries an empty proof".into());
        }
        data.proof_bytes = Some(proof.clone());
        Ok(())
    }

    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let file = File::open(job.path(Artefact::C1Output)).context("open c1 output")?;
        let c1: seal::SealCommitPhase1Output =
            serde_json::from_reader(io::BufReader::new(file)).context("decode c1 output")?;
        if c1.registered_proof != job.id.proof {
            anyhow::bail!(
                "c1 output is for {:?}, the task is for {:?}",
                c1.registered_proof,
                job.id.proof
            );
        }
        let out =
            seal::seal_commit_phase2(c1, job.id.prover_id, api::SectorId::from(job.id.sector))?;
        Ok(super::Output::Commit2(Output {
            proof: ByteBuf::from(out.proof),
        }))
    }

    /// A proof hashed from the sector and Commit1's output.
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let c1 = sim::read_input(&job.path(Artefact::C1Output))?;
        let block = sim::hash(&[b"proof", &job.id.sector.to_le_bytes(), &c1]);
        let proof: Vec<u8> = block.iter().copied().cycle().take(PROOF_BYTES).collect();
        Ok(super::Output::Commit2(Output {
            proof: ByteBuf::from(proof),
        }))
    }
}
