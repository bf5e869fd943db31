//! What the phases' simulations share: outputs of the right names and shape derived by hashing
//! (files capped at [`SHAPE_CAP`], whatever the sector size), and the cache files the proofs
//! library would write. Nothing a simulation makes verifies.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::model::{PieceInfo, RegisteredSealProof, SectorSize};

/// Files a simulation writes are at most this long.
const SHAPE_CAP: u64 = 64 * 1024;

/// Cache files as the proofs library names them (a sector up to 512MiB: two layers, one tree).
pub(super) const LAYERS: [&str; 2] = ["sc-02-data-layer-1.dat", "sc-02-data-layer-2.dat"];
pub(super) const TREE_D: &str = "sc-02-data-tree-d.dat";
pub(super) const TREE_C: &str = "sc-02-data-tree-c.dat";
pub(super) const TREE_R: &str = "sc-02-data-tree-r-last.dat";
pub(super) const AUX: [&str; 2] = ["p_aux", "t_aux"];

/// An input a simulated phase needs is not in the attempt directory: the task's inputs are
/// wrong, and another attempt would find the same (a permanent failure).
#[derive(Debug, thiserror::Error)]
#[error("synthetic: input {} is missing", .0.display())]
pub struct MissingInput(pub PathBuf);

pub(super) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Writes `len` bytes derived from `seed`, creating the parent directory.
pub(super) fn write_shape(path: &Path, seed: &[u8; 32], len: u64) -> anyhow::Result<()> {
    let block = hash(&[seed]);
    let data: Vec<u8> = block.iter().copied().cycle().take(len as usize).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("synthetic: create {}", parent.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("synthetic: write {}", path.display()))
}

/// Reads an input; a missing one is a [`MissingInput`], any other failure an I/O error.
pub(super) fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::Error::new(MissingInput(path.to_path_buf()))
        } else {
            anyhow::Error::new(e).context(format!("synthetic: read {}", path.display()))
        }
    })
}

/// The length of a simulated sector-sized file.
pub(super) fn shape_len(proof: RegisteredSealProof) -> u64 {
    SectorSize::of_proof(proof)
        .map_or(2048, |s| s.bytes())
        .min(SHAPE_CAP)
}

/// Piece infos as bytes, for hashing.
pub(super) fn piece_bytes(piece_infos: &[PieceInfo]) -> Vec<u8> {
    piece_infos
        .iter()
        .flat_map(|p| p.comm_p.iter().copied().chain(p.size.to_le_bytes()))
        .collect()
}
