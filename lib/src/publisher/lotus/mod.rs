//! Sealing for a lotus miner through lotus's sector import: `check` looks at the miner before
//! anything starts; `pledge` reserves sector numbers, seals committed-capacity sectors with the
//! chain's tickets and hands each to lotus after PreCommit2; `serve` is the HTTP listener lotus
//! calls back for the sector's files, Commit1, Commit2 and the end of sealing.

pub mod check;
pub mod pledge;
pub mod serve;

pub use check::Check;
pub use pledge::{Pledge, PledgeConfig};
