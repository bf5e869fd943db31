//! `mesh-publisher lotus pledge` and `lotus run`: committed-capacity sectors sealed for a lotus
//! miner. Numbers come from the miner's reservations (named `mesh-<miner>-<ms>`, so that a
//! publisher cut off between reserving and recording finds them again), tickets from the chain;
//! each sector runs AddPiece, PreCommit1 and PreCommit2 on the mesh, is handed to lotus with
//! `SectorReceive`, and then goes on as lotus calls the listener (`serve`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use super::super::Driver;
use super::serve::Urls;
use crate::lotus::Lotus;
use crate::lotus::rpc::RpcError;
use crate::lotus::wire::{
    Bytes, Cid, PieceInfo, RemoteSectorMeta, SectorId, SectorPiece, seal_proof_number,
};
use crate::model::{SectorNum, SectorSize, padded};
use crate::sector::{SectorRecord, SectorState};

/// What a pledge is asked for.
#[derive(Debug, Clone)]
pub struct PledgeConfig {
    /// The miner's sector size (lotus's `ActorSectorSize`).
    pub size: SectorSize,
    /// What lotus reaches the listener at.
    pub advertise: Url,
    /// How often waiting sectors are handed to lotus.
    pub poll: Duration,
}

pub struct Pledge {
    lotus: Lotus,
    driver: Arc<Driver>,
    config: PledgeConfig,
}

/// Where a lotus sector stands, for the pledge's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished on either side yet.
    Going,
    /// Lotus reported it done and successful.
    Done,
    /// Lotus reported it failed, or the mesh failed or stopped it: the reason.
    Failed(String),
}

/// Where `record` stands.
pub fn outcome(record: &SectorRecord) -> Outcome {
    if let Some(done) = record.lotus.as_ref().and_then(|l| l.done.as_ref()) {
        return if done.successful {
            Outcome::Done
        } else {
            Outcome::Failed(format!("lotus reports it {}", done.state))
        };
    }
    match &record.state {
        SectorState::Failed { phase, reason, .. } => {
            Outcome::Failed(format!("failed in {phase}: {reason}"))
        }
        SectorState::Stopped { after, .. } => Outcome::Failed(format!("stopped after {after}")),
        _ => Outcome::Going,
    }
}

impl Pledge {
    pub fn new(lotus: Lotus, driver: Arc<Driver>, config: PledgeConfig) -> Pledge {
        Pledge {
            lotus,
            driver,
            config,
        }
    }

    fn prefix(&self) -> String {
        format!("mesh-{}-", self.driver.miner())
    }

    /// Reserves `count` sector numbers and creates their sectors.
    pub async fn create(&self, count: u64) -> anyhow::Result<Vec<SectorNum>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let name = format!("{}{}", self.prefix(), crate::now_ms());
        let numbers = self.lotus.reserve(&name, count).await?;
        info!(reservation = %name, numbers = ?numbers, "sector numbers reserved");
        let mut made = Vec::new();
        for n in numbers {
            self.create_one(&name, n).await?;
            made.push(SectorNum(n));
        }
        Ok(made)
    }

    async fn create_one(&self, reservation: &str, number: u64) -> anyhow::Result<bool> {
        let ticket = self.lotus.ticket(self.driver.miner()).await?;
        self.driver
            .create_lotus_sector(self.config.size, SectorNum(number), ticket, reservation)
            .await
    }

    /// Creates the sectors of the mesh's reservations that have no record: a pledge cut off
    /// between reserving numbers and creating their sectors. Returns them.
    pub async fn adopt(&self) -> anyhow::Result<Vec<SectorNum>> {
        let mut adopted = Vec::new();
        for (name, numbers) in self.lotus.reservations().await? {
            if !name.starts_with(&self.prefix()) {
                continue;
            }
            for n in numbers {
                if self.driver.load(SectorNum(n)).await?.is_none()
                    && self.create_one(&name, n).await?
                {
                    warn!(reservation = %name, sector = n, "a reserved number had no sector; created it");
                    adopted.push(SectorNum(n));
                }
            }
        }
        Ok(adopted)
    }

    /// What lotus is told about a sector waiting after PreCommit2.
    pub fn meta(&self, record: &SectorRecord) -> anyhow::Result<RemoteSectorMeta> {
        let lotus = record.lotus.as_ref().context("not a lotus sector")?;
        let urls = Urls::new(
            &self.config.advertise,
            record.miner,
            record.sector,
            &lotus.secret,
        );
        let (Some(comm_d), Some(comm_r), Some(pc1)) = (
            record.data.comm_d,
            record.data.comm_r,
            record.data.pc1_output.as_ref(),
        ) else {
            anyhow::bail!(
                "sector {}.{} has no PreCommit2 output",
                record.miner,
                record.sector
            );
        };
        Ok(RemoteSectorMeta {
            state: "PreCommitting".into(),
            sector: SectorId {
                miner: record.miner.actor(),
                number: record.sector.0,
            },
            proof: seal_proof_number(record.size),
            pieces: record
                .data
                .piece_infos
                .iter()
                .map(|p| SectorPiece {
                    piece: PieceInfo {
                        size: padded(p.size),
                        piece_cid: Cid::comm_d(p.comm_p),
                    },
                    deal_info: None,
                })
                .collect(),
            ticket_value: Bytes(record.data.ticket.to_vec()),
            ticket_epoch: lotus.ticket_epoch,
            pre_commit1_out: Bytes(pc1.to_vec()),
            comm_d: Some(Cid::comm_d(comm_d)),
            comm_r: Some(Cid::comm_r(comm_r)),
            data_unsealed: Some(urls.unsealed),
            data_sealed: Some(urls.sealed),
            data_cache: Some(urls.cache),
            remote_commit1_endpoint: urls.commit1,
            remote_commit2_endpoint: urls.commit2,
            remote_sealing_done_endpoint: urls.done,
        })
    }

    /// Hands every sector waiting after PreCommit2 that lotus has not accepted yet to lotus.
    /// A sector lotus already has (a publisher restarted after `SectorReceive`) counts as
    /// received; any other refusal is logged and tried again on the next call.
    pub async fn import_waiting(&self) -> anyhow::Result<()> {
        for record in self.driver.sectors().await? {
            let Some(lotus) = &record.lotus else { continue };
            if lotus.received || !record.awaits_lotus() {
                continue;
            }
            let meta = self.meta(&record)?;
            match self.lotus.receive(&meta).await {
                Ok(()) => info!(sector = %record.sector, "lotus received the sector"),
                Err(RpcError::Server { message, .. }) if message.contains("already exists") => {
                    info!(sector = %record.sector, "lotus has the sector already");
                }
                Err(e) => {
                    warn!(sector = %record.sector, error = %e, "lotus did not receive the sector; trying again");
                    continue;
                }
            }
            self.driver
                .update(record.sector, |r| match r.lotus.as_mut() {
                    Some(l) if !l.received => {
                        l.received = true;
                        Ok(true)
                    }
                    _ => Ok(false),
                })
                .await?
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Hands sectors to lotus every poll until `cancel`, or until every sector of `wait_for`
    /// ended: then Ok with their outcomes.
    pub async fn drive(
        &self,
        wait_for: &BTreeSet<SectorNum>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Vec<(SectorNum, Outcome)>> {
        let mut tick = tokio::time::interval(self.config.poll);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return Ok(Vec::new()),
            }
            if let Err(e) = self.import_waiting().await {
                warn!(error = %format!("{e:#}"), "could not hand sectors to lotus; trying again");
                continue;
            }
            if wait_for.is_empty() {
                continue;
            }
            let mut outcomes = Vec::new();
            for &sector in wait_for {
                let Some((record, _)) = self.driver.load(sector).await? else {
                    outcomes.push((sector, Outcome::Failed("its record vanished".into())));
                    continue;
                };
                outcomes.push((sector, outcome(&record)));
            }
            if outcomes.iter().all(|(_, o)| *o != Outcome::Going) {
                return Ok(outcomes);
            }
        }
    }
}
