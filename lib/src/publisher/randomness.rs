//! Where tickets and seeds come from. A miner on chain draws them from the beacon; the mesh takes
//! them from a [`Randomness`] so that a chain source can plug in. The default is random bytes.

use crate::model::{MinerId, SectorNum};

pub trait Randomness: Send + Sync {
    /// The sealing ticket, drawn when the sector is created.
    fn ticket(&self, miner: MinerId, sector: SectorNum) -> [u8; 32];
    /// The interactive seed, drawn when PreCommit2 is accepted.
    fn seed(&self, miner: MinerId, sector: SectorNum) -> [u8; 32];
}

/// Random tickets and seeds from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn ticket(&self, _: MinerId, _: SectorNum) -> [u8; 32] {
        rand::random()
    }

    fn seed(&self, _: MinerId, _: SectorNum) -> [u8; 32] {
        rand::random()
    }
}
