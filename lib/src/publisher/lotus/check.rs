//! `mesh-publisher lotus check`: what the mesh sees of a lotus miner and its full node before it
//! seals for them: the miner's actor and sector size, each token's permissions, the chain head
//! and the ticket a sector would get now, and whether the miner's token can reserve sector
//! numbers and import sectors (both need admin).

use std::fmt;

use crate::lotus::chain::SEAL_RANDOMNESS_LOOKBACK;
use crate::lotus::rpc::{Api, RpcError};
use crate::lotus::wire::seal_proof_number;
use crate::lotus::{Lotus, Ticket};
use crate::model::{MinerId, SectorSize};

/// What `lotus check` found.
#[derive(Debug, Clone)]
pub struct Check {
    pub miner: MinerId,
    pub size: SectorSize,
    pub miner_perms: Vec<String>,
    pub node_perms: Vec<String>,
    pub head: i64,
    pub ticket: Ticket,
}

/// The calls the mesh makes on the miner that need admin.
const ADMIN_CALLS: &str = "SectorNumReserveCount and SectorReceive";

impl Check {
    /// Asks both APIs; the first refusal or unreachable API is the error.
    pub async fn run(lotus: &Lotus) -> Result<Check, RpcError> {
        let miner = lotus.actor().await?;
        let size = lotus.sector_size(miner).await?;
        let miner_perms = lotus.permissions(Api::Miner).await?;
        let node_perms = lotus.permissions(Api::FullNode).await?;
        let head = lotus.head().await?.height;
        let ticket = lotus.ticket(miner).await?;
        Ok(Check {
            miner,
            size,
            miner_perms,
            node_perms,
            head,
            ticket,
        })
    }

    /// Why the mesh could not seal for this miner, if it could not.
    pub fn problem(&self) -> Option<String> {
        if !self.miner_perms.iter().any(|p| p == "admin") {
            return Some(format!(
                "the miner's token allows {}; {ADMIN_CALLS} need admin: give the mesh the \
                 token `lotus-miner auth api-info --perm admin` prints",
                list(&self.miner_perms)
            ));
        }
        None
    }
}

fn list(perms: &[String]) -> String {
    if perms.is_empty() {
        "nothing".into()
    } else {
        perms.join(", ")
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "miner      {} seals {} sectors (lotus seal proof {})",
            self.miner,
            self.size,
            seal_proof_number(self.size)
        )?;
        writeln!(f, "miner API  token allows {}", list(&self.miner_perms))?;
        writeln!(f, "node API   token allows {}", list(&self.node_perms))?;
        writeln!(
            f,
            "chain      head at epoch {}; a sector started now gets the ticket of epoch {} ({} \
             behind): {}",
            self.head,
            self.ticket.epoch,
            SEAL_RANDOMNESS_LOOKBACK,
            hex::encode(self.ticket.value)
        )?;
        match self.problem() {
            None => write!(
                f,
                "ready      yes: the miner's token has admin ({ADMIN_CALLS})"
            ),
            Some(why) => write!(f, "ready      no: {why}"),
        }
    }
}
