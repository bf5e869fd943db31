//! AddPiece: lays the sector's pieces (none for committed capacity) and the zero pieces that fill
//! the rest into a new unsealed sector, and computes each piece's commitment.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::time::Duration;

use anyhow::Context;
use filecoin_proofs_api::{UnpaddedBytesAmount, seal};
use serde::{Deserialize, Serialize};

use super::{Artefact, G, Job, K, M, Phase, SectorData, Spec, mismatch, row, sim};
use crate::model::{
    MAX_PIECES, Need, ObjectRef, PieceInfo, PieceSpec, SectorSize, WorkerId, check_pieces, fillers,
    shown,
};

pub struct AddPiece;

/// The pieces to lay out, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub pieces: Vec<PieceSpec>,
}

/// The commitments of the pieces and of the zero pieces that fill the sector, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub piece_infos: Vec<PieceInfo>,
}

impl Spec for AddPiece {
    const TOKEN: &'static str = "ap";
    const TITLE: &'static str = "AddPiece";
    const PRIORITY: i8 = 6;
    const LOTUS_ENV: &'static str = "AP";
    const LOTUS_FLAG: &'static str = "addpiece";
    const READS: &'static [Artefact] = &[Artefact::Pieces];
    const WRITES: &'static [Artefact] = &[Artefact::Unsealed];
    const SIMULATED: Duration = Duration::from_millis(170);

    fn need(size: SectorSize) -> Need {
        match size {
            SectorSize::GiB64 => row(8 * G, 8 * G, 0.0, 1, 0, G),
            SectorSize::GiB32 => row(4 * G, 4 * G, 0.0, 1, 0, G),
            SectorSize::MiB512 => row(G, G, 0.0, 1, 0, G),
            SectorSize::MiB8 => row(8 * M, 8 * M, 0.0, 1, 0, 8 * M),
            SectorSize::KiB2 => row(2 * K, 2 * K, 0.0, 1, 0, 2 * K),
        }
    }

    /// The pieces and the unsealed file.
    fn scratch(size: SectorSize) -> u64 {
        2 * size.bytes()
    }

    fn params(data: &SectorData) -> Result<super::Params, String> {
        Ok(super::Params::AddPiece(Params {
            pieces: data.pieces.clone(),
        }))
    }

    /// Every piece object is among the task's inputs, and the pieces fit the sector.
    fn check_params(
        params: &super::Params,
        inputs: &[ObjectRef],
        size: SectorSize,
    ) -> Result<(), String> {
        let super::Params::AddPiece(Params { pieces }) = params else {
            return Err(mismatch(Phase::AddPiece, "parameters", params.phase()));
        };
        for name in pieces.iter().filter_map(|p| p.object.as_ref()) {
            if !inputs.iter().any(|input| input.name == *name) {
                return Err(format!(
                    "piece object '{}' is not among the task's inputs",
                    shown(name)
                ));
            }
        }
        check_pieces(pieces.iter().map(|p| p.size), size)
    }

    fn check_output(output: &super::Output) -> Result<(), String> {
        match output {
            super::Output::AddPiece(Output { piece_infos }) if piece_infos.len() > MAX_PIECES => {
                Err(format!(
                    "{} pieces, more than the {MAX_PIECES} allowed",
                    piece_infos.len()
                ))
            }
            _ => Ok(()),
        }
    }

    fn absorb(
        data: &mut SectorData,
        size: SectorSize,
        _worker: &WorkerId,
        output: &super::Output,
        _seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let super::Output::AddPiece(Output { piece_infos }) = output else {
            return Err(mismatch(Phase::AddPiece, "output", output.phase()));
        };
        if piece_infos.is_empty() {
            return Err("it carries no piece infos".into());
        }
        check_pieces(piece_infos.iter().map(|p| p.size), size)?;
        data.piece_infos = piece_infos.clone();
        Ok(())
    }

    /// Writes every piece, then zero pieces up to the sector size, into a new unsealed file.
    fn run(job: &Job) -> anyhow::Result<super::Output> {
        let proof = job.id.proof;
        let mut target = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(job.path(Artefact::Unsealed))
            .context("create unsealed file")?;
        let mut written: Vec<UnpaddedBytesAmount> = Vec::new();
        let mut piece_infos = Vec::new();
        for piece in laid_out(job)? {
            let source: Box<dyn Read> = match &piece.object {
                Some(name) => {
                    let path = job.file(name);
                    let file = File::open(&path)
                        .with_context(|| format!("open piece {}", path.display()))?;
                    let len = file.metadata()?.len();
                    if len > piece.size {
                        anyhow::bail!(
                            "piece {} is {len} bytes, larger than its slot of {} bytes",
                            path.display(),
                            piece.size
                        );
                    }
                    Box::new(
                        io::BufReader::new(file)
                            .chain(io::repeat(0))
                            .take(piece.size),
                    )
                }
                None => Box::new(io::repeat(0).take(piece.size)),
            };
            let (info, _) = seal::add_piece(
                proof,
                source,
                &mut target,
                UnpaddedBytesAmount(piece.size),
                &written,
            )?;
            written.push(UnpaddedBytesAmount(piece.size));
            piece_infos.push(PieceInfo {
                comm_p: info.commitment,
                size: u64::from(info.size),
            });
        }
        target.sync_all().context("sync unsealed file")?;
        Ok(super::Output::AddPiece(Output { piece_infos }))
    }

    /// Commitments hashed from the pieces' bytes (or their size, for zeros).
    fn simulate(job: &Job) -> anyhow::Result<super::Output> {
        let mut piece_infos = Vec::new();
        for piece in laid_out(job)? {
            let comm_p = match &piece.object {
                Some(name) => sim::hash(&[b"piece", &sim::read_input(&job.file(name))?]),
                None => sim::hash(&[b"zeros", &piece.size.to_le_bytes()]),
            };
            piece_infos.push(PieceInfo {
                comm_p,
                size: piece.size,
            });
        }
        let seed = sim::hash(&[b"unsealed", &sim::piece_bytes(&piece_infos)]);
        sim::write_shape(
            &job.path(Artefact::Unsealed),
            &seed,
            sim::shape_len(job.id.proof),
        )?;
        Ok(super::Output::AddPiece(Output { piece_infos }))
    }
}

/// The job's pieces followed by the zero pieces that fill the rest of its sector.
fn laid_out(job: &Job) -> anyhow::Result<Vec<PieceSpec>> {
    let super::Params::AddPiece(Params { pieces }) = &job.params else {
        anyhow::bail!(mismatch(Phase::AddPiece, "parameters", job.phase()));
    };
    let proof = job.id.proof;
    let size = SectorSize::of_proof(proof)
        .with_context(|| format!("proof type {proof:?} has no size the mesh serves"))?;
    let sizes: Vec<u64> = pieces.iter().map(|p| p.size).collect();
    let zeros = fillers(size, &sizes)?;
    let zero_pieces = zeros
        .into_iter()
        .map(|size| PieceSpec { object: None, size });
    Ok(pieces.iter().cloned().chain(zero_pieces).collect())
}
