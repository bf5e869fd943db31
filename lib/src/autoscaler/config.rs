//! The autoscaler's configuration file (TOML): where metrics are served and the groups it sizes
//! (NATS comes from `--nats`, as for the other binaries).
//!
//! ```toml
//! metrics = "127.0.0.1:9465"
//!
//! [[group]]
//! name = "pc1-cpu"
//! phases = ["pc1"]
//! sizes = ["32GiB"]
//! slots = 2
//! min = 0
//! max = 20
//! scale_down_window = "10m"
//! drain_timeout = "4h"
//! provider = { kind = "aws", asg = "mesh-worker-pc1-cpu", region = "us-east-1" }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::provider::ProviderConfig;
use crate::model::SectorSize;
use crate::phases::Phase;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// Where to serve Prometheus metrics (`/metrics`); none when left out.
    pub metrics: Option<SocketAddr>,
    /// How long a group's lease lasts unrenewed: any number of autoscalers may run with the
    /// same groups, one sizes each group, and a standby takes a group over within this time
    /// (plus a third of it) after its holder dies.
    #[serde(default = "fifteen_seconds", with = "humantime_serde")]
    pub lease: Duration,
    #[serde(rename = "group")]
    pub groups: Vec<GroupConfig>,
}

/// One group of identical instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique name: the metrics label, and the local provider's instance prefix.
    pub name: String,
    /// Phases its workers serve (`ap`, `pc1`, `pc2`, `c1`, `c2`, `fin`).
    #[serde(deserialize_with = "tokens")]
    pub phases: Vec<Phase>,
    /// Sector sizes its workers serve (`2KiB` … `64GiB`).
    #[serde(deserialize_with = "tokens")]
    pub sizes: Vec<SectorSize>,
    /// Tasks one instance runs at once: what the policy divides the work by.
    #[serde(default = "one")]
    pub slots: u32,
    #[serde(default)]
    pub min: u32,
    pub max: u32,
    /// How long a higher size must be recommended before the group grows (0: at once).
    #[serde(default, with = "humantime_serde")]
    pub scale_up_window: Duration,
    /// How long a lower size must be recommended throughout before the group shrinks.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub scale_down_window: Duration,
    /// How long a draining instance may take to finish its tasks before it is removed anyway
    /// (its tasks are then redelivered elsewhere).
    #[serde(default = "four_hours", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often the group is evaluated.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub poll_interval: Duration,
    pub provider: ProviderConfig,
}

fn one() -> u32 {
    1
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn four_hours() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn fifteen_seconds() -> Duration {
    Duration::from_secs(15)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

/// A list of tokens that parse as `T` (`["pc1", "c2"]`, `["32GiB"]`); an error names the bad one.
fn tokens<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    let words: Vec<String> = Vec::deserialize(d)?;
    words
        .iter()
        .map(|w| w.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl AutoscalerConfig {
    /// Reads and checks a config file; the error says what is wrong and where.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: AutoscalerConfig = toml::from_str(text).map_err(|e| {
            let mut message = crate::config::toml_error(text, &e);
            // humantime-serde says what it expected but not how to write it.
            if message.ends_with("expected a duration") {
                message.push_str(" such as \"30s\", \"10m\" or \"4h\"");
            }
            message
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("no [[group]]: name at least one group to size".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err(format!(
                "lease = \"{}\": a lease below 1s would be renewed too often; 15s is the default",
                humantime::format_duration(self.lease)
            ));
        }
        let mut names = BTreeSet::new();
        for g in &self.groups {
            let at = format!("group {:?}", g.name);
            if g.name.is_empty()
                || !g
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{at}: a name is letters, digits, '-' and '_' (it names instances and metrics)"
                ));
            }
            if !names.insert(&g.name) {
                return Err(format!("{at}: two groups have this name"));
            }
            if g.phases.is_empty() || g.sizes.is_empty() {
                return Err(format!("{at}: give the phases and sizes its workers serve"));
            }
            if g.slots == 0 {
                return Err(format!("{at}: slots must be 1 or more"));
            }
            if g.min > g.max {
                return Err(format!("{at}: min {} is above max {}", g.min, g.max));
            }
            if g.poll_interval < Duration::from_millis(100) {
                return Err(format!(
                    "{at}: poll_interval below 100ms would flood the server"
                ));
            }
        }
        Ok(())
    }
}

impl GroupConfig {
    /// The task streams (phase and size) its workers serve.
    pub fn streams(&self) -> impl Iterator<Item = (Phase, SectorSize)> + '_ {
        self.phases
            .iter()
            .flat_map(|&p| self.sizes.iter().map(move |&s| (p, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[group]]
        name = "pc1"
        phases = ["pc1"]
        sizes = ["2KiB"]
        max = 3
        scale_down_window = "30s"
        provider = { kind = "local", args = ["--executor", "synthetic"] }
    "#;

    #[test]
    fn a_minimal_group_gets_defaults() {
        let c = AutoscalerConfig::parse(GOOD).unwrap();
        let g = &c.groups[0];
        assert_eq!((g.min, g.max, g.slots), (0, 3, 1));
        assert_eq!(g.scale_up_window, Duration::ZERO);
        assert_eq!(g.scale_down_window, Duration::from_secs(30));
        assert_eq!(g.drain_timeout, Duration::from_secs(4 * 3600));
        assert_eq!(g.provider.kind(), "local");
        assert_eq!(c.lease, Duration::from_secs(15));
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |from: &str, to: &str, says: &str| {
            let e = AutoscalerConfig::parse(&GOOD.replace(from, to)).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        bad("max = 3", "max = 3\nmin = 4", "min 4 is above max 3");
        bad("\"pc1\"]", "\"pc9\"]", "pc9");
        bad("\"2KiB\"", "\"3KiB\"", "3KiB");
        bad(
            "\"30s\"",
            "\"soon\"",
            "string \"soon\", expected a duration such as \"30s\", \"10m\" or \"4h\"",
        );
        bad("kind = \"local\"", "kind = \"azure\"", "azure");
        bad("max = 3", "max = 3\nmaxx = 4", "maxx");
        bad("name = \"pc1\"", "name = \"pc 1\"", "a name is letters");
        bad(
            "[[group]]",
            "lease = \"100ms\"\n[[group]]",
            "a lease below 1s",
        );
    }
}
