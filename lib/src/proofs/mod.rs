//! Everything that touches `filecoin-proofs`: the proof type per sector size, prover ids, the job
//! protocol that runs proofs in child processes, and the Groth parameters.

pub mod child;
pub mod exec;
pub mod job;
pub mod params;
pub mod synthetic;

pub use filecoin_proofs_api::RegisteredSealProof;

use crate::model::{MinerId, SectorSize};

/// The seal proof the mesh uses for new sectors of a size (the current interactive PoRep).
pub fn seal_proof(size: SectorSize) -> RegisteredSealProof {
    match size {
        SectorSize::KiB2 => RegisteredSealProof::StackedDrg2KiBV1_1,
        SectorSize::MiB8 => RegisteredSealProof::StackedDrg8MiBV1_1,
        SectorSize::MiB512 => RegisteredSealProof::StackedDrg512MiBV1_1,
        SectorSize::GiB32 => RegisteredSealProof::StackedDrg32GiBV1_1,
        SectorSize::GiB64 => RegisteredSealProof::StackedDrg64GiBV1_1,
    }
}

/// The sector size of a seal proof, if the mesh serves it.
pub fn proof_size(proof: RegisteredSealProof) -> Option<SectorSize> {
    SectorSize::from_bytes(u64::from(proof.sector_size()))
}

/// The name of a proof type as `RegisteredSealProof` spells it, e.g. `StackedDrg2KiBV1_1`.
pub fn proof_name(proof: RegisteredSealProof) -> String {
    format!("{proof:?}")
}

/// The prover id of a miner, as lotus derives it: the actor id as an unsigned LEB128 varint (the
/// payload of its ID address), zero-padded to 32 bytes.
pub fn prover_id(miner: MinerId) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut n = miner.actor();
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = byte;
            break;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prover_id_is_the_leb128_actor_id() {
        let id = prover_id("f01000".parse().unwrap());
        assert_eq!(&id[..3], &[0xe8, 0x07, 0x00]);
        assert!(id[2..].iter().all(|b| *b == 0));
        assert_eq!(prover_id("f00".parse().unwrap()), [0u8; 32]);
    }

    #[test]
    fn every_size_has_a_proof_of_that_size() {
        for size in SectorSize::ALL {
            assert_eq!(proof_size(seal_proof(size)), Some(size));
        }
        assert_eq!(
            proof_name(seal_proof(SectorSize::KiB2)),
            "StackedDrg2KiBV1_1"
        );
    }
}
