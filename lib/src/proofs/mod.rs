//! Running proofs: the job protocol that runs a phase's proof call (or verification, or parameter
//! generation) in a child process, the synthetic executor that simulates them, and the Groth
//! parameters.

pub mod child;
pub mod exec;
pub mod job;
pub mod params;
pub mod synthetic;

use crate::model::RegisteredSealProof;

/// Whether this build has storage-proofs-porep's multicore SDR (the `multicore-sdr` feature,
/// on by default; it links hwloc). PreCommit1 uses it when `FIL_PROOFS_USE_MULTICORE_SDR=1`, as
/// in lotus, and the resource table then reserves its producers plus one thread.
pub const MULTICORE_SDR: bool = cfg!(feature = "multicore-sdr");

/// Whether this build proves on GPUs (the `cuda` or `opencl` feature). Without, the proofs run
/// PreCommit2 and Commit2 on the CPU, so a worker with GPUs it found reserves CPU threads for
/// them, not GPUs.
pub const GPU_BUILD: bool = cfg!(any(feature = "cuda", feature = "opencl"));

/// The GPU features this build has, for `mesh-worker info` and the start-up log.
pub fn gpu_features() -> Vec<&'static str> {
    [
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "opencl"), "opencl"),
        (cfg!(feature = "cuda-supraseal"), "cuda-supraseal"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

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
