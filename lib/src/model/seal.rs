//! The seal proof of each sector size, and the identity that binds a replica to its miner and
//! sector (the proofs library's own types, named here so that every layer shares them).

use serde::{Deserialize, Serialize};

pub use filecoin_proofs_api::RegisteredSealProof;

use super::{MinerId, SectorSize};

/// Who a replica belongs to: the proof type, the miner's prover id and the sector number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorIdentity {
    pub proof: RegisteredSealProof,
    pub prover_id: [u8; 32],
    pub sector: u64,
}

impl SectorSize {
    /// The seal proof the mesh uses for new sectors of this size (the current interactive
    /// PoRep).
    pub fn seal_proof(self) -> RegisteredSealProof {
        match self {
            SectorSize::KiB2 => RegisteredSealProof::StackedDrg2KiBV1_1,
            SectorSize::MiB8 => RegisteredSealProof::StackedDrg8MiBV1_1,
            SectorSize::MiB512 => RegisteredSealProof::StackedDrg512MiBV1_1,
            SectorSize::GiB32 => RegisteredSealProof::StackedDrg32GiBV1_1,
            SectorSize::GiB64 => RegisteredSealProof::StackedDrg64GiBV1_1,
        }
    }

    /// The sector size of a seal proof, if the mesh serves it.
    pub fn of_proof(proof: RegisteredSealProof) -> Option<SectorSize> {
        SectorSize::from_bytes(u64::from(proof.sector_size()))
    }
}

impl MinerId {
    /// The prover id of the miner, as lotus derives it: the actor id as an unsigned LEB128
    /// varint (the payload of its ID address), zero-padded to 32 bytes.
    pub fn prover_id(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut n = self.actor();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prover_id_is_the_leb128_actor_id() {
        let miner: MinerId = "f01000".parse().unwrap();
        let id = miner.prover_id();
        assert_eq!(&id[..3], &[0xe8, 0x07, 0x00]);
        assert!(id[2..].iter().all(|b| *b == 0));
        assert_eq!("f00".parse::<MinerId>().unwrap().prover_id(), [0u8; 32]);
    }

    #[test]
    fn every_size_has_a_proof_of_that_size() {
        for size in SectorSize::ALL {
            assert_eq!(SectorSize::of_proof(size.seal_proof()), Some(size));
        }
    }
}
