//! Pieces: their commitments, the sizes they take in a sector, and the zero pieces that fill the
//! rest of it.

use serde::{Deserialize, Serialize};

use super::SectorSize;

/// Most pieces in one sector (the market actor allows 512 deals a sector; fillers add ~30).
pub const MAX_PIECES: usize = 4096;

/// One piece a sector is built from, as the publisher asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceSpec {
    /// Name of the piece's object among the task inputs; `None` for zeros.
    pub object: Option<String>,
    /// Unpadded size the piece takes (127 × 2^k).
    pub size: u64,
}

/// A piece's commitment (CommP) and its unpadded size in the sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    #[serde(with = "serde_bytes")]
    pub comm_p: [u8; 32],
    pub size: u64,
}

/// The unpadded size a piece of `len` bytes takes: the smallest 127 × 2^k that holds it.
pub fn piece_size_for(len: u64) -> u64 {
    let mut size = 127;
    while size < len {
        size *= 2;
    }
    size
}

/// The padded size (what lotus calls `PaddedPieceSize`) of an unpadded piece size.
pub fn padded(unpadded: u64) -> u64 {
    unpadded / 127 * 128
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pieces of {total} bytes (padded and aligned) do not fit in a {sector} sector of {capacity} \
     bytes: pass fewer or smaller pieces, or use a larger --size"
)]
pub struct PiecesDoNotFit {
    pub total: u64,
    pub sector: SectorSize,
    pub capacity: u64,
}

/// Checks that pieces of these unpadded sizes fit in a sector, each aligned to its own size as
/// `add_piece` places them, and returns the unpadded sizes of the zero pieces that fill the rest
/// (ascending, which keeps every filler aligned).
pub fn fillers(sector: SectorSize, pieces: &[u64]) -> Result<Vec<u64>, PiecesDoNotFit> {
    let capacity = sector.bytes();
    let mut offset = 0u64;
    for &piece in pieces {
        let p = padded(piece);
        offset = offset.div_ceil(p) * p + p;
    }
    if offset > capacity {
        return Err(PiecesDoNotFit {
            total: offset,
            sector,
            capacity,
        });
    }
    let mut rest = capacity - offset;
    let mut out = Vec::new();
    let mut bit = 128u64;
    while rest > 0 {
        if rest & bit != 0 {
            out.push(bit / 128 * 127);
            rest -= bit;
        }
        bit <<= 1;
    }
    Ok(out)
}

/// Checks pieces' unpadded sizes: each is 127 × 2^k, and together they fit in the sector as
/// `add_piece` lays them out (so no proof step is handed sizes it cannot place).
pub fn check_pieces(
    sizes: impl ExactSizeIterator<Item = u64>,
    sector: SectorSize,
) -> Result<(), String> {
    if sizes.len() > MAX_PIECES {
        return Err(format!(
            "{} pieces, more than the {MAX_PIECES} a sector may hold",
            sizes.len()
        ));
    }
    let sizes: Vec<u64> = sizes.collect();
    if let Some(bad) = sizes.iter().find(|&&size| {
        size < 127
            || size % 127 != 0
            || !(size / 127).is_power_of_two()
            || size > sector.unpadded_bytes()
    }) {
        return Err(format!(
            "piece size {bad} is not 127 × 2^k bytes within a {sector} sector"
        ));
    }
    fillers(sector, &sizes).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_sizes_are_powers_of_two_times_127() {
        assert_eq!(piece_size_for(0), 127);
        assert_eq!(piece_size_for(127), 127);
        assert_eq!(piece_size_for(128), 254);
        assert_eq!(piece_size_for(1000), 1016);
        assert_eq!(piece_size_for(2032), 2032);
    }

    #[test]
    fn fillers_complete_the_sector_aligned() {
        let s = SectorSize::KiB2;
        assert_eq!(fillers(s, &[]).unwrap(), vec![2032]);
        assert_eq!(fillers(s, &[2032]).unwrap(), Vec::<u64>::new());
        assert_eq!(fillers(s, &[127]).unwrap(), vec![127, 254, 508, 1016]);
        // A 1016 after a 127 is aligned to 1024 padded bytes: nothing is left.
        assert_eq!(fillers(s, &[127, 1016]).unwrap(), Vec::<u64>::new());
        let err = fillers(s, &[1016, 127, 1016]).unwrap_err();
        assert_eq!(err.total, 3072);
        assert!(err.to_string().contains("2KiB"));
    }
}
