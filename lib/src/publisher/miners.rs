//! `mesh-publisher miners`: the miners sharing the pool, their weights and share, and how many
//! of their tasks wait and run across every task stream; `miners weight` changes a weight.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::broker::{Broker, miners};
use crate::model::MinerId;
use crate::names;
use crate::render::table;

/// One miner as `miners list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinerRow {
    pub miner: String,
    pub weight: u32,
    /// Share of a fully contended pool, in percent of all registered weights.
    pub share_percent: f64,
    /// Tasks no worker has taken yet, over every task stream.
    pub waiting: u64,
    /// Tasks delivered to workers and not yet acknowledged.
    pub running: u64,
}

/// Every registered miner (and any with tasks but no registration, at weight 1).
pub async fn rows(broker: &Broker) -> anyhow::Result<Vec<MinerRow>> {
    let registered = miners::list(broker).await?;
    let mut load: BTreeMap<MinerId, (u64, u64)> = BTreeMap::new();
    for (_, _, consumers) in crate::broker::consumers::task_consumers(broker).await? {
        for info in consumers {
            if let Some((_, _, miner, _)) = names::parse_task_subject(&info.config.filter_subject) {
                let entry = load.entry(miner).or_default();
                entry.0 += info.num_pending;
                entry.1 += info.num_ack_pending as u64;
            }
        }
    }
    let mut weights: BTreeMap<MinerId, u32> =
        registered.iter().map(|(m, e)| (*m, e.weight)).collect();
    for miner in load.keys() {
        weights.entry(*miner).or_insert(1);
    }
    let total: u32 = weights.values().sum();
    Ok(weights
        .into_iter()
        .map(|(miner, weight)| {
            let (waiting, running) = load.get(&miner).copied().unwrap_or_default();
            MinerRow {
                miner: miner.to_string(),
                weight,
                share_percent: 100.0 * weight as f64 / total.max(1) as f64,
                waiting,
                running,
            }
        })
        .collect())
}

pub fn render(rows: &[MinerRow]) -> String {
    if rows.is_empty() {
        return "no miners yet (a miner registers when its `mesh-publisher seal` or `run` \
                starts)\n"
            .into();
    }
    let mut lines = vec![
        ["miner", "weight", "share", "waiting", "running"]
            .map(String::from)
            .to_vec(),
    ];
    for r in rows {
        lines.push(vec![
            r.miner.clone(),
            r.weight.to_string(),
            format!("{:.0}%", r.share_percent),
            r.waiting.to_string(),
            r.running.to_string(),
        ]);
    }
    table(&lines)
}
