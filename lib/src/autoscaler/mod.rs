//! The autoscaler: reads the backlog of every task stream and the live workers, decides each
//! group's size with a pure policy ([`policy::decide`]), drains the instances it removes, and
//! resizes the groups through their providers (local processes, EC2 Auto Scaling, GCE managed
//! instance groups).
//!
//! Every input comes from JetStream's API (stream and consumer info, answered by their leaders,
//! so a lagging follower cannot mislead it) and from the `mesh-workers` and `mesh-drain`
//! buckets. Its only own state is the stabilisation history, so a restarted autoscaler carries
//! on: drain marks live in the bucket, and a down window starts over. Autoscalers may run in
//! pairs (or more): a lease per group in `mesh-leases` lets one of them size it ([`lease`]).

pub mod config;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod provider;

use std::collections::BTreeMap;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::config::{AutoscalerConfig, GroupConfig};
use self::lease::{Change, Lease};
use self::metrics::Metrics;
use self::policy::{Backlog, Decision, GroupState, Member, Reason, WorkerView};
use self::provider::{Provider, WorkerSpec};
use crate::broker::drain::{self, DrainMark};
use crate::broker::keys::Keys;
use crate::broker::workers::{self, WorkerRecord};
use crate::broker::{Broker, consumers};
use crate::model::SectorSize;
use crate::names;
use crate::phases::Phase;

/// What waits and runs on every task stream, from its consumers (one per miner and class).
pub async fn backlog(broker: &Broker) -> anyhow::Result<BTreeMap<(Phase, SectorSize), Backlog>> {
    Ok(consumers::task_consumers(broker)
        .await?
        .into_iter()
        .map(|(phase, size, consumers)| {
            let b = Backlog {
                waiting: consumers.iter().map(|c| c.num_pending).sum(),
                running: consumers.iter().map(|c| c.num_ack_pending as u64).sum(),
            };
            ((phase, size), b)
        })
        .collect())
}

/// Everything one evaluation reads, once for all groups.
struct Reading {
    backlog: BTreeMap<(Phase, SectorSize), Backlog>,
    workers: BTreeMap<String, WorkerRecord>,
    marks: BTreeMap<String, DrainMark>,
}

async fn read(broker: &Broker) -> anyhow::Result<Reading> {
    Ok(Reading {
        backlog: backlog(broker).await?,
        workers: workers::list(broker)
            .await?
            .into_iter()
            .map(|r| (r.id.0.clone(), r))
            .collect(),
        marks: drain::marks(broker).await?,
    })
}

struct Group {
    config: GroupConfig,
    provider: Provider,
    state: GroupState,
    due: Instant,
    lease: Lease,
}

impl Group {
    /// Reads the provider and decides; changes nothing.
    async fn decide(
        &mut self,
        reading: &Reading,
        waiting: u64,
        now_ms: u64,
    ) -> anyhow::Result<(Decision, Vec<Member>)> {
        let instances = self.provider.instances().await?;
        let members: Vec<Member> = instances
            .into_iter()
            .map(|i| Member {
                worker: reading.workers.get(&i.name).map(|r| WorkerView {
                    busy: r.busy() as u32,
                    draining: r.draining,
                }),
                // Only this group's marks: an operator's drain is the operator's to lift.
                drain_since_ms: reading
                    .marks
                    .get(&i.name)
                    .filter(|m| m.group == self.config.name)
                    .map(|m| m.since_ms),
                name: i.name,
                state: i.state,
            })
            .collect();
        let (decision, state) =
            policy::decide(&self.config, &members, waiting, &self.state, now_ms);
        self.state = state;
        Ok((decision, members))
    }
}

async fn open_groups(config: &AutoscalerConfig, nats: &str) -> anyhow::Result<Vec<Group>> {
    let holder = lease::holder_id();
    let mut groups = Vec::new();
    for g in &config.groups {
        let spec = WorkerSpec {
            group: g.name.clone(),
            nats: nats.to_string(),
            phases: g.phases.clone(),
            sizes: g.sizes.clone(),
            slots: g.slots,
        };
        groups.push(Group {
            provider: Provider::open(&g.provider, &spec).await?,
            config: g.clone(),
            state: GroupState::default(),
            due: Instant::now(),
            lease: Lease::new(&g.name, &holder, config.lease),
        });
    }
    Ok(groups)
}

/// One evaluation of every group, as `mesh-autoscaler plan` prints it: changes nothing. The
/// windows start now, so a scale-down shows as held.
pub async fn plan(
    config: &AutoscalerConfig,
    broker: &Broker,
) -> anyhow::Result<Vec<(GroupConfig, Decision)>> {
    let mut groups = open_groups(config, broker.url()).await?;
    let reading = read(broker).await?;
    let shares = policy::share_waiting(&config.groups, &reading.backlog);
    let mut out = Vec::new();
    for (group, waiting) in groups.iter_mut().zip(shares) {
        let (decision, _) = group.decide(&reading, waiting, crate::now_ms()).await?;
        out.push((group.config.clone(), decision));
    }
    Ok(out)
}

/// Renders `plan`'s answer: a line per group and what it would do.
pub fn render_plan(plan: &[(GroupConfig, Decision)]) -> String {
    let mut out = String::new();
    for (g, d) in plan {
        let reasons: Vec<&str> = d.reasons.iter().map(|r| r.label()).collect();
        out.push_str(&format!(
            "{} ({}, {}..={}): serving {}, draining {}, needs {}, desired {} [{}]\n  {}\n",
            g.name,
            g.provider.kind(),
            g.min,
            g.max,
            d.active,
            d.draining,
            d.recommended,
            d.desired,
            reasons.join(", "),
            d.why
        ));
        if let Some(to) = d.grow_to {
            out.push_str(&format!("  would grow the group to {to} instances\n"));
        }
        for (what, names) in [("drain", &d.drain), ("lift the drain of", &d.undrain)] {
            if !names.is_empty() {
                out.push_str(&format!("  would {what} {}\n", names.join(", ")));
            }
        }
        for (name, why) in &d.remove {
            out.push_str(&format!("  would remove {name} ({})\n", why.label()));
        }
    }
    out
}

/// Runs until `stop`: evaluates each group every `poll_interval` and acts on it. Local
/// workers are stopped (drained, for at most the group's drain timeout or until `abort`) on the
/// way out; cloud instances stay as they are.
pub async fn run(
    config: AutoscalerConfig,
    broker: Broker,
    metrics: Metrics,
    stop: CancellationToken,
    abort: CancellationToken,
) -> anyhow::Result<()> {
    let bucket = broker.bucket(names::DRAIN_BUCKET).await?;
    // Opened with its info, so that a mesh whose `init` predates leases is told to run it.
    broker.bucket(names::LEASES_BUCKET).await?;
    let leases = broker.keys(names::LEASES_BUCKET).await?;
    let mut groups = open_groups(&config, broker.url()).await?;
    info!(
        groups = ?config.groups.iter().map(|g| format!("{} ({})", g.name, g.provider.kind())).collect::<Vec<_>>(),
        holder = %lease::holder_id(),
        "autoscaler started"
    );
    let mut renew = tokio::time::interval(config.lease / 3);
    while !stop.is_cancelled() {
        let next = groups
            .iter()
            .filter(|g| g.lease.active(Instant::now()))
            .map(|g| g.due)
            .min();
        tokio::select! {
            _ = renew.tick() => {
                for g in &mut groups {
                    check_lease(g, &leases, &metrics).await;
                }
                continue;
            }
            () = sleep_until(next) => {}
            () = stop.cancelled() => break,
        }
        let reading = match read(&broker).await {
            Ok(reading) => reading,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read the mesh; trying again");
                for g in &mut groups {
                    metrics.error(&g.config.name);
                    g.due = Instant::now() + g.config.poll_interval;
                }
                continue;
            }
        };
        let shares = policy::share_waiting(&config.groups, &reading.backlog);
        for (group, waiting) in groups.iter_mut().zip(shares) {
            if group.due > Instant::now() || !group.lease.active(Instant::now()) {
                continue;
            }
            group.due = Instant::now() + group.config.poll_interval;
            if let Err(e) = evaluate(group, &reading, waiting, &bucket, &metrics).await {
                metrics.error(&group.config.name);
                warn!(group = %group.config.name, error = %format!("{e:#}"), "evaluation failed; trying again");
            }
        }
    }
    // Standbys take the groups over at once, while the local workers here drain.
    for g in &mut groups {
        g.lease.release(&leases).await;
    }
    futures::future::join_all(
        groups
            .iter_mut()
            .map(|g| g.provider.shutdown(g.config.drain_timeout, &abort)),
    )
    .await;
    info!("autoscaler stopped");
    Ok(())
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Renews or takes a group's lease, and says when the group changes hands.
async fn check_lease(group: &mut Group, leases: &Keys, metrics: &Metrics) {
    let name = group.config.name.clone();
    match group.lease.check(leases).await {
        Ok(Change::None) => {}
        Ok(Change::Took { from }) => {
            // A fresh start: the group's windows and its next evaluation.
            group.state = GroupState::default();
            group.due = Instant::now();
            match from {
                Some(from) => {
                    warn!(group = %name, %from, "took the group over: its autoscaler stopped renewing its lease")
                }
                None => info!(group = %name, "sizing the group (lease taken)"),
            }
        }
        Ok(Change::Lost { to }) => warn!(
            group = %name,
            to = to.as_deref().unwrap_or("unknown"),
            "another autoscaler took the group's lease; standing by"
        ),
        Err(e) => {
            metrics.error(&name);
            warn!(group = %name, error = %e, "cannot renew or read the group's lease; trying again");
        }
    }
    metrics.leader(&name, group.lease.active(Instant::now()));
    if !group.lease.active(Instant::now())
        && let Some(holder) = group.lease.holder()
    {
        tracing::debug!(group = %name, %holder, "standing by");
    }
}

async fn evaluate(
    group: &mut Group,
    reading: &Reading,
    waiting: u64,
    bucket: &async_nats::jetstream::kv::Store,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let now = crate::now_ms();
    let name = group.config.name.clone();
    let (d, members) = group.decide(reading, waiting, now).await?;
    for reason in &d.reasons {
        metrics.decision(&name, reason.label());
    }
    if d.changes_anything() {
        let reasons: Vec<&str> = d.reasons.iter().map(|r| r.label()).collect();
        info!(group = %name, reasons = %reasons.join(","), "{}", d.why);
    }
    for worker in &d.undrain {
        drain::unmark(bucket, worker).await?;
        info!(group = %name, %worker, "drain lifted: demand came back");
    }
    for worker in &d.drain {
        let busy = members
            .iter()
            .find(|m| &m.name == worker)
            .and_then(|m| m.worker)
            .map_or(0, |w| w.busy);
        drain::mark(
            bucket,
            worker,
            &DrainMark {
                group: name.clone(),
                since_ms: now,
                reason: None,
            },
        )
        .await?;
        info!(group = %name, %worker, busy, "draining");
    }
    if !d.remove.is_empty() {
        let names: Vec<String> = d.remove.iter().map(|(n, _)| n.clone()).collect();
        group.provider.remove(&names).await?;
        for (worker, why) in &d.remove {
            let member = members.iter().find(|m| &m.name == worker);
            let since = member.and_then(|m| m.drain_since_ms).unwrap_or(now);
            let busy = member.and_then(|m| m.worker).map_or(0, |w| w.busy);
            let seconds = now.saturating_sub(since) as f64 / 1000.0;
            metrics.drained(&name, seconds);
            info!(group = %name, %worker, busy, drained_s = seconds, reason = %why.label(), "removed");
            if *why == Reason::DrainTimeout {
                warn!(group = %name, %worker, busy, "drain timeout: removed with tasks still running; they are redelivered elsewhere");
            }
            drain::unmark(bucket, worker).await?;
        }
    }
    if let Some(to) = d.grow_to {
        group.provider.grow(to).await?;
        info!(group = %name, size = to, "grew the group");
    }
    // Marks of this group's instances that no longer exist.
    for (worker, mark) in &reading.marks {
        if mark.group == name
            && !members
                .iter()
                .any(|m| &m.name == worker && m.state != provider::InstanceState::Stopping)
            && !d.drain.contains(worker)
        {
            drain::unmark(bucket, worker).await?;
        }
    }
    let active = d.active + d.undrain.len() as u32 - d.drain.len() as u32;
    let draining =
        d.draining + d.drain.len() as u32 - d.undrain.len() as u32 - d.remove.len() as u32;
    metrics.sizes(&name, d.desired, active, draining);
    Ok(())
}
