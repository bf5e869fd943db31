//! The miner side: creates sectors, drives each through every phase from durable results, and
//! reports sealed sectors. `seal` waits for the sectors it is given; `run` drives forever.

pub mod abort;
pub mod decode;
pub mod dlq;
mod driver;
pub mod gc;
pub mod jobs;
pub mod lotus;
pub mod metrics;
pub mod miners;
pub mod output;
pub mod randomness;
pub mod status;
pub mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use driver::{Driver, HOLDER_GRACE, Handled, PublisherConfig, STOP_GRACE};
use output::SealedSector;

use crate::model::{SectorNum, SectorSize};
use crate::sector::{SectorRecord, SectorState};

/// What `mesh-publisher seal` was asked for.
#[derive(Debug, Clone)]
pub struct SealRequest {
    pub size: SectorSize,
    pub count: u64,
    pub pieces: Vec<PathBuf>,
    /// Create simulation sectors, for workers with the synthetic executor.
    pub synthetic: bool,
    /// Also wait for every unfinished sector of the miner.
    pub resume: bool,
    /// Appends one JSON line per sealed (or stopped) sector.
    pub out: Option<PathBuf>,
    /// Stop each new sector after this phase instead of sealing it.
    pub until: Option<crate::phases::Phase>,
    /// How often to print a status line.
    pub status_every: Duration,
}

/// How a `seal` ended.
#[derive(Debug, Default)]
pub struct SealSummary {
    pub sealed: Vec<SectorNum>,
    /// Stopped after the phase `--until` named.
    pub stopped: Vec<SectorNum>,
    pub failed: Vec<(SectorNum, String)>,
    pub dropped_late: u64,
    pub elapsed: Duration,
}

/// Why `seal` stopped before its sectors were done.
const INTERRUPTED: &str = "interrupted; the sectors' state is kept: run `mesh-publisher seal \
                           --resume` (or `mesh-publisher run`) to continue them";

/// Creates the requested sectors and drives them (and, with `resume`, every unfinished sector
/// of the miner) until each is sealed or failed.
pub async fn seal(
    driver: &Driver,
    request: &SealRequest,
    cancel: &CancellationToken,
) -> anyhow::Result<SealSummary> {
    let started = Instant::now();
    driver.check_size(request.size).await?;
    let mut out = match &request.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--out {}: cannot open it for writing", path.display()))?,
        ),
        None => None,
    };
    let mut states: BTreeMap<SectorNum, SectorRecord> = BTreeMap::new();
    if request.resume {
        for record in driver.resume().await? {
            info!(sector = %record.sector, state = %record.state.label(), "resuming sector");
            states.insert(record.sector, record);
        }
    }
    if request.count > 0 {
        for sector in driver
            .create_sectors(
                request.size,
                request.count,
                &request.pieces,
                request.synthetic,
                request.until,
            )
            .await?
        {
            if let Some((record, _)) = driver.load(sector).await? {
                states.insert(sector, record);
            }
        }
    }
    let targets: BTreeSet<SectorNum> = states.keys().copied().collect();
    if targets.is_empty() {
        info!("no sectors to seal");
        return Ok(SealSummary::default());
    }
    info!(sectors = targets.len(), "sealing");
    let mut reported = BTreeSet::new();
    let mut results = driver.results().await?;
    let mut reload = tokio::time::interval(Duration::from_secs(5));
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    let mut status = tokio::time::interval(request.status_every);
    status.tick().await;
    loop {
        for (sector, record) in &states {
            let done = matches!(
                record.state,
                SectorState::Sealed { .. } | SectorState::Stopped { .. }
            );
            if done && reported.insert(*sector) {
                report_sealed(record, out.as_mut())?;
            }
        }
        if states.values().all(|r| r.state.is_finished()) {
            break;
        }
        tokio::select! {
            next = results.next() => match next {
                Some(Ok(msg)) => match driver.handle_until(&msg, cancel).await {
                    Some(Ok(Handled::Advanced(record))) if targets.contains(&record.sector) => {
                        states.insert(record.sector, *record);
                    }
                    Some(Ok(_)) => {}
                    // Not acked: the result comes back after the ack wait.
                    Some(Err(e)) => {
                        warn!(error = %format!("{e:#}"), "result not handled; will retry")
                    }
                    None => anyhow::bail!(INTERRUPTED),
                },
                Some(Err(e)) => warn!(error = %e, "reading results"),
                None => results = reopen(driver, cancel).await?,
            },
            _ = reload.tick() => {
                if let Err(e) = driver.check_holders().await {
                    warn!(error = %format!("{e:#}"), "could not check the workers holding sectors");
                }
                // Another publisher of this miner may have moved a sector.
                match reload_targets(driver, &targets).await {
                    Ok(records) => states.extend(records),
                    Err(e) => warn!(error = %format!("{e:#}"), "could not reload sectors"),
                }
            }
            _ = sweep.tick() => {
                // A task that a failure left unpublished gets published.
                if let Err(e) = driver.resume().await {
                    warn!(error = %format!("{e:#}"), "could not resume sectors");
                }
            }
            _ = status.tick() => print_status(&states, started),
            () = cancel.cancelled() => anyhow::bail!(INTERRUPTED),
        }
    }
    let mut summary = SealSummary {
        elapsed: started.elapsed(),
        dropped_late: driver
            .stats
            .dropped_late
            .load(std::sync::atomic::Ordering::Relaxed),
        ..SealSummary::default()
    };
    for (sector, record) in states {
        match record.state {
            SectorState::Sealed { .. } => summary.sealed.push(sector),
            SectorState::Failed { reason, phase, .. } => {
                summary.failed.push((sector, format!("{phase}: {reason}")))
            }
            SectorState::Stopped { .. } => summary.stopped.push(sector),
            SectorState::Active { .. } => {}
        }
    }
    Ok(summary)
}

/// Opens the results stream again after it ended, waiting out a broker that is down.
async fn reopen(
    driver: &Driver,
    cancel: &CancellationToken,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Stream> {
    let results = (|| driver.results())
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(15))
                .without_max_times(),
        )
        .notify(|e, retry_in| {
            warn!(error = %format!("{e:#}"), ?retry_in, "cannot read results; retrying")
        });
    match cancel.run_until_cancelled(results).await {
        Some(results) => results,
        None => anyhow::bail!("interrupted while waiting for the broker"),
    }
}

async fn reload_targets(
    driver: &Driver,
    targets: &BTreeSet<SectorNum>,
) -> anyhow::Result<Vec<(SectorNum, SectorRecord)>> {
    let mut out = Vec::new();
    for sector in targets {
        if let Some((record, _)) = driver.load(*sector).await? {
            out.push((*sector, record));
        }
    }
    Ok(out)
}

fn report_sealed(record: &SectorRecord, out: Option<&mut std::fs::File>) -> anyhow::Result<()> {
    if let SectorState::Stopped { after, .. } = record.state {
        println!(
            "stopped {}.{} after {after}, as asked (not sealed)",
            record.miner, record.sector
        );
        if let Some(out) = out {
            out.write_all(output::stopped_line(record, after).as_bytes())
                .and_then(|()| out.flush())
                .context("write --out")?;
        }
        return Ok(());
    }
    let Some(line) = SealedSector::from_record(record) else {
        warn!(sector = %record.sector, "sealed sector lacks its proof data");
        return Ok(());
    };
    println!(
        "sealed {}.{}: comm_r {} proof {}… ({})",
        line.miner,
        line.sector,
        line.comm_r,
        &line.proof[..16.min(line.proof.len())],
        if line.synthetic {
            "SYNTHETIC: a simulation, not a proof"
        } else {
            "verified"
        }
    );
    if let Some(out) = out {
        out.write_all(line.to_line().as_bytes())
            .and_then(|()| out.flush())
            .context("write --out")?;
    }
    Ok(())
}

fn print_status(states: &BTreeMap<SectorNum, SectorRecord>, started: Instant) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in states.values() {
        *counts.entry(record.state.label()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    info!(
        elapsed_s = started.elapsed().as_secs(),
        "progress: {} of {} sectors: {}",
        states.values().filter(|r| r.state.is_finished()).count(),
        states.len(),
        parts.join(", ")
    );
}

/// Drives every sector of the miner until cancelled: resumes unfinished ones, handles results
/// as they come, and re-publishes any task a crash left unpublished.
pub async fn run(driver: &Driver, cancel: &CancellationToken) -> anyhow::Result<()> {
    let unfinished = driver.resume().await?;
    info!(miner = %driver.miner(), unfinished = unfinished.len(), "publisher running");
    let mut results = driver.results().await?;
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    let mut holders = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = holders.tick() => {
                if let Err(e) = driver.check_holders().await {
                    warn!(error = %format!("{e:#}"), "could not check the workers holding sectors");
                }
            }
            next = results.next() => match next {
                Some(Ok(msg)) => match driver.handle_until(&msg, cancel).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(error = %format!("{e:#}"), "result not handled; will retry")
                    }
                    None => {
                        info!("publisher stopped");
                        return Ok(());
                    }
                },
                Some(Err(e)) => warn!(error = %e, "reading results"),
                None => results = reopen(driver, cancel).await?,
            },
            _ = sweep.tick() => {
                if let Err(e) = driver.resume().await {
                    warn!(error = %format!("{e:#}"), "could not resume sectors");
                }
            }
            () = cancel.cancelled() => {
                info!("publisher stopped");
                return Ok(());
            }
        }
    }
}

/// Every sector of a miner, read straight from the bucket (no result consumer needed).
pub async fn list_sectors(
    broker: &crate::broker::Broker,
    miner: crate::model::MinerId,
) -> anyhow::Result<Vec<SectorRecord>> {
    status::sectors(broker, Some(miner)).await
}
