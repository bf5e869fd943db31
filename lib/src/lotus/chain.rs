//! The calls the mesh makes to lotus: who the miner is, sector numbers reserved from it, the
//! chain's seal randomness for a ticket, and the import itself.

use std::collections::BTreeMap;

use serde_json::json;

use super::ApiInfo;
use super::rpc::{Api, Client, RpcError};
use super::wire::{BitField, Bytes, RemoteSectorMeta, TipSet, address_cbor};
use crate::model::{MinerId, SectorSize};

/// Lotus's seal-randomness lookback (`policy.SealRandomnessLookback`, chain finality): a ticket
/// is drawn this many epochs behind the head.
pub const SEAL_RANDOMNESS_LOOKBACK: i64 = 900;
/// How old a ticket may be when the sector is precommitted (`MaxPreCommitRandomnessLookback`:
/// a day of epochs plus finality).
pub const MAX_PRECOMMIT_RANDOMNESS_LOOKBACK: i64 = 2880 + SEAL_RANDOMNESS_LOOKBACK;
/// `crypto.DomainSeparationTag_SealRandomness`.
pub const DST_SEAL_RANDOMNESS: i64 = 5;
/// `crypto.DomainSeparationTag_InteractiveSealChallengeSeed`.
pub const DST_INTERACTIVE_SEAL_CHALLENGE_SEED: i64 = 6;

/// A sector's ticket as the chain gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub value: [u8; 32],
    pub epoch: i64,
}

impl Ticket {
    /// Whether a sector sealed with it can still be precommitted at chain height `head`.
    pub fn fresh_at(&self, head: i64) -> bool {
        head - self.epoch < MAX_PRECOMMIT_RANDOMNESS_LOOKBACK
    }
}

/// A lotus miner and the full node it follows.
#[derive(Clone)]
pub struct Lotus {
    miner: Client,
    node: Client,
}

impl Lotus {
    pub fn new(miner: ApiInfo, node: ApiInfo) -> Lotus {
        Lotus {
            miner: Client::new(Api::Miner, miner),
            node: Client::new(Api::FullNode, node),
        }
    }

    /// The miner's actor (`ActorAddress`), which must be an ID address.
    pub async fn actor(&self) -> Result<MinerId, RpcError> {
        let addr: String = self.miner.call("ActorAddress", "read", json!([])).await?;
        addr.parse().map_err(|e| RpcError::BadReply {
            api: Api::Miner,
            method: "ActorAddress".into(),
            reason: format!("{e}"),
        })
    }

    /// The miner's sector size (`ActorSectorSize`), as one the mesh seals.
    pub async fn sector_size(&self, miner: MinerId) -> Result<SectorSize, RpcError> {
        let bytes: u64 = self
            .miner
            .call("ActorSectorSize", "read", json!([miner.to_string()]))
            .await?;
        SectorSize::ALL
            .into_iter()
            .find(|s| s.bytes() == bytes)
            .ok_or_else(|| RpcError::BadReply {
                api: Api::Miner,
                method: "ActorSectorSize".into(),
                reason: format!("{bytes} bytes is not a sector size the mesh seals"),
            })
    }

    /// The full node's head (`ChainHead`).
    pub async fn head(&self) -> Result<TipSet, RpcError> {
        self.node.call("ChainHead", "read", json!([])).await
    }

    /// A ticket as lotus's own pipeline draws one (`getTicket`): seal randomness from the
    /// chain's tickets at the head minus the lookback, over the CBOR of the miner's address.
    pub async fn ticket(&self, miner: MinerId) -> Result<Ticket, RpcError> {
        let head = self.head().await?;
        let epoch = head.height - SEAL_RANDOMNESS_LOOKBACK;
        let value = self
            .randomness(miner, DST_SEAL_RANDOMNESS, epoch, &head)
            .await?;
        Ok(Ticket { value, epoch })
    }

    async fn randomness(
        &self,
        miner: MinerId,
        tag: i64,
        epoch: i64,
        at: &TipSet,
    ) -> Result<[u8; 32], RpcError> {
        let method = "StateGetRandomnessFromTickets";
        let entropy = Bytes(address_cbor(miner));
        let value: Bytes = self
            .node
            .call(method, "read", json!([tag, epoch, entropy, at.cids]))
            .await?;
        value.0.try_into().map_err(|v: Vec<u8>| RpcError::BadReply {
            api: Api::FullNode,
            method: method.into(),
            reason: format!("{} bytes of randomness, not 32", v.len()),
        })
    }

    /// Reserves `count` sector numbers under `name` (`SectorNumReserveCount`, admin): lotus
    /// hands out the lowest free ones and never gives them to its own sectors.
    pub async fn reserve(&self, name: &str, count: u64) -> Result<Vec<u64>, RpcError> {
        let numbers: BitField = self
            .miner
            .call("SectorNumReserveCount", "admin", json!([name, count]))
            .await?;
        Ok(numbers.0)
    }

    /// Every reservation by name (`SectorNumReservations`): a publisher that died between
    /// reserving and recording finds its numbers here.
    pub async fn reservations(&self) -> Result<BTreeMap<String, Vec<u64>>, RpcError> {
        let all: BTreeMap<String, BitField> = self
            .miner
            .call("SectorNumReservations", "read", json!([]))
            .await?;
        Ok(all.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    /// The permissions of the token the mesh holds for `api` (`AuthVerify` on its own token).
    pub async fn permissions(&self, api: Api) -> Result<Vec<String>, RpcError> {
        let client = match api {
            Api::Miner => &self.miner,
            Api::FullNode => &self.node,
        };
        let token = client.token().unwrap_or_default().to_string();
        client.call("AuthVerify", "read", json!([token])).await
    }

    /// Hands a sealed sector to the miner (`SectorReceive`, admin).
    pub async fn receive(&self, meta: &RemoteSectorMeta) -> Result<(), RpcError> {
        let _: Option<serde_json::Value> = self
            .miner
            .call("SectorReceive", "admin", json!([meta]))
            .await?;
        Ok(())
    }
}
