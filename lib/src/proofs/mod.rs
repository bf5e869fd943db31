//! Running proofs: the job protocol that runs a phase's proof call (or verification, or parameter
//! generation) in a child process, the synthetic executor that simulates them, and the Groth
//! parameters.

pub mod child;
pub mod exec;
pub mod job;
pub mod params;
pub mod synthetic;

use crate::model::RegisteredSealProof;

/// The name of a proof type as `RegisteredSealProof` spells it, e.g. `StackedDrg2KiBV1_1`.
pub fn proof_name(proof: RegisteredSealProof) -> String {
    format!("{proof:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SectorSize;

    #[test]
    fn proofs_are_named_as_the_library_spells_them() {
        assert_eq!(
            proof_name(SectorSize::KiB2.seal_proof()),
            "StackedDrg2KiBV1_1"
        );
    }
}
