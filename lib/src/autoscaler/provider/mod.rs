//! Where instances come from: one interface over local processes, an EC2 Auto Scaling group and
//! a GCE managed instance group. The autoscaler only grows a group by size and shrinks it by
//! name: it never lets a provider choose which instance goes, because only the mesh knows which
//! ones are idle.

pub mod aws;
pub mod gcp;
pub mod local;

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// What a provider says about one of its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance's name, which is also its worker id in `mesh-workers` (local: `<group>-<n>`;
    /// AWS: the EC2 instance id; GCP: the instance name).
    pub name: String,
    pub state: InstanceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Asked for, booting: not yet able to take work.
    Starting,
    Running,
    /// On its way out (terminating, deleting, exited): no longer counts.
    Stopping,
}

#[derive(Debug, thiserror::Error)]
#[error("{group}: {what}: {message}")]
pub struct ProviderError {
    pub group: String,
    pub what: String,
    pub message: String,
}

impl ProviderError {
    pub fn new(group: &str, what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ProviderError {
            group: group.to_string(),
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// How a group's instances are made, from the `provider` table of a group in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    Local(local::LocalConfig),
    Aws(aws::AwsConfig),
    Gcp(gcp::GcpConfig),
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Local(_) => "local",
            ProviderConfig::Aws(_) => "aws",
            ProviderConfig::Gcp(_) => "gcp",
        }
    }
}

/// What a local group's workers are started with, from the group's config.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub group: String,
    /// The NATS URL(s) the autoscaler itself uses; local workers get the same.
    pub nats: String,
    pub phases: Vec<crate::phases::Phase>,
    pub sizes: Vec<crate::model::SectorSize>,
    pub slots: u32,
}

/// One group's provider.
pub enum Provider {
    Local(local::Local),
    Aws(aws::Aws),
    Gcp(gcp::Gcp),
}

impl Provider {
    pub async fn open(config: &ProviderConfig, spec: &WorkerSpec) -> Result<Self, ProviderError> {
        Ok(match config {
            ProviderConfig::Local(c) => Provider::Local(local::Local::new(c, spec)?),
            ProviderConfig::Aws(c) => Provider::Aws(aws::Aws::open(c, &spec.group).await?),
            ProviderConfig::Gcp(c) => Provider::Gcp(gcp::Gcp::open(c, &spec.group).await?),
        })
    }

    /// Every instance the group has, in any state.
    pub async fn instances(&mut self) -> Result<Vec<Instance>, ProviderError> {
        match self {
            Provider::Local(p) => p.instances().await,
            Provider::Aws(p) => p.instances().await,
            Provider::Gcp(p) => p.instances().await,
        }
    }

    /// Grows the group to `size` instances (counting those already there and not stopping).
    /// Only ever called with a size above the current one.
    pub async fn grow(&mut self, size: u32) -> Result<(), ProviderError> {
        match self {
            Provider::Local(p) => p.grow(size).await,
            Provider::Aws(p) => p.grow(size).await,
            Provider::Gcp(p) => p.grow(size).await,
        }
    }

    /// Removes exactly these instances and lowers the group's size by as many.
    pub async fn remove(&mut self, names: &[String]) -> Result<(), ProviderError> {
        match self {
            Provider::Local(p) => p.remove(names).await,
            Provider::Aws(p) => p.remove(names).await,
            Provider::Gcp(p) => p.remove(names).await,
        }
    }

    /// Stops whatever this process owns (local workers, waited for at most `grace` before they
    /// hand their tasks back, or until `abort`); cloud instances stay.
    pub async fn shutdown(&mut self, grace: Duration, abort: &CancellationToken) {
        if let Provider::Local(p) = self {
            p.shutdown(grace, abort).await;
        }
    }
}
