//! EC2 Auto Scaling group: grows it by raising desired capacity and shrinks it by terminating
//! named instances (lowering desired capacity with them), so the group never picks victims.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::error::DisplayErrorContext;
use aws_sdk_autoscaling::types::{AutoScalingGroup, LifecycleState};
use serde::Deserialize;
use tracing::{info, warn};

use super::{Instance, InstanceState, ProviderError};

/// Where the group lives. Credentials come from the standard AWS chain (environment, shared
/// config and credentials files, SSO, credential process, web identity, ECS, IMDS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The Auto Scaling group's name, e.g. `mesh-worker-pc1-cpu` (terraform's module output).
    pub asg: String,
    /// AWS region; the standard chain (AWS_REGION, profile) when left out.
    pub region: Option<String>,
    /// Named profile of the shared config files (`~/.aws/config`) to take credentials and
    /// region from; the standard chain's choice (AWS_PROFILE, else `default`) when left out.
    pub profile: Option<String>,
    /// API endpoint override, e.g. a moto server in tests.
    pub endpoint: Option<String>,
}

/// A stalled API call must not stall the autoscaler's loop: it fails and is retried next round.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Aws {
    client: Client,
    /// The mesh group this provider serves (for errors and logs).
    group: String,
    asg: String,
    region: String,
}

impl Aws {
    /// Opens the group with the standard credential and region chain.
    pub async fn open(config: &AwsConfig, group: &str) -> Result<Self, ProviderError> {
        Self::open_with(
            config,
            group,
            aws_config::defaults(BehaviorVersion::latest()),
        )
        .await
    }

    /// Opens the group from `base` with the config's region, profile and endpoint laid over it:
    /// [`Aws::open`] passes the standard chain, tests a loader with static credentials.
    pub async fn open_with(
        config: &AwsConfig,
        group: &str,
        base: ConfigLoader,
    ) -> Result<Self, ProviderError> {
        let mut loader = base.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region() else {
            return Err(ProviderError::new(
                group,
                "open the Auto Scaling group",
                format!(
                    "no AWS region for group {}: set `region` in the group's provider table \
                     (or AWS_REGION, or a region in the AWS profile)",
                    config.asg
                ),
            ));
        };
        let aws = Aws {
            client: Client::new(&sdk),
            group: group.to_string(),
            asg: config.asg.clone(),
            region: region.to_string(),
        };
        let found = aws.describe("open the Auto Scaling group").await?;
        info!(
            group,
            asg = aws.asg,
            region = aws.region,
            min_size = found.min_size(),
            max_size = found.max_size(),
            desired_capacity = found.desired_capacity(),
            "opened the auto scaling group"
        );
        Ok(aws)
    }

    pub async fn instances(&mut self) -> Result<Vec<Instance>, ProviderError> {
        let found = self.describe("list instances").await?;
        Ok(found
            .instances()
            .iter()
            .filter_map(|i| {
                let name = i.instance_id()?.to_string();
                let state = state(i.lifecycle_state(), i.health_status());
                if let Some(lifecycle) = i.lifecycle_state()
                    && !LifecycleState::values().contains(&lifecycle.as_str())
                {
                    warn!(
                        group = self.group,
                        instance = name,
                        %lifecycle,
                        "unknown lifecycle state, counted as starting"
                    );
                }
                Some(Instance { name, state })
            })
            .collect())
    }

    /// Sets the group's desired capacity to `size`, which must not exceed its max_size.
    pub async fn grow(&mut self, size: u32) -> Result<(), ProviderError> {
        let what = "grow";
        let found = self.describe(what).await?;
        let max_size = found.max_size().unwrap_or(i32::MAX);
        let desired = match i32::try_from(size) {
            Ok(desired) if desired <= max_size => desired,
            _ => {
                return Err(ProviderError::new(
                    &self.group,
                    what,
                    format!(
                        "size {size} exceeds max_size {max_size} of Auto Scaling group {}: \
                         lower this group's autoscaler max to at most {max_size}, or raise \
                         max_size in terraform",
                        self.asg
                    ),
                ));
            }
        };
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(&self.asg)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.api_error(what, e))?;
        info!(
            group = self.group,
            asg = self.asg,
            from = found.desired_capacity(),
            to = desired,
            "raised desired capacity"
        );
        Ok(())
    }

    /// Terminates these instances, lowering desired capacity by one for each. An instance that
    /// is already gone or leaving is skipped; the others are still tried when one fails.
    pub async fn remove(&mut self, names: &[String]) -> Result<(), ProviderError> {
        let what = "remove instances";
        if names.is_empty() {
            return Ok(());
        }
        let found = self.describe(what).await?;
        let doomed = self.still_here(&found, names);
        let (min_size, desired) = (
            found.min_size().unwrap_or(0),
            found.desired_capacity().unwrap_or(0),
        );
        if desired - (doomed.len() as i32) < min_size {
            return Err(ProviderError::new(
                &self.group,
                what,
                format!(
                    "removing {} instances would take desired capacity {desired} below \
                     min_size {min_size} of Auto Scaling group {}: lower min_size in terraform \
                     or raise this group's autoscaler min to at least {min_size}",
                    doomed.len(),
                    self.asg
                ),
            ));
        }

        let mut failed = Vec::new();
        for name in doomed {
            let result = self
                .client
                .terminate_instance_in_auto_scaling_group()
                .instance_id(name)
                .should_decrement_desired_capacity(true)
                .send()
                .await;
            match result {
                Ok(_) => info!(
                    group = self.group,
                    asg = self.asg,
                    instance = name,
                    "terminating instance, desired capacity lowered"
                ),
                // It may have left between the look and the call: that is not a failure.
                Err(e) if self.gone(name).await => warn!(
                    group = self.group,
                    instance = name,
                    error = %DisplayErrorContext(&e),
                    "instance left the group while being removed"
                ),
                Err(e) => failed.push(format!("{name}: {}", DisplayErrorContext(&e))),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::new(
                &self.group,
                what,
                format!("terminate {}", failed.join("; ")),
            ))
        }
    }

    /// The named instances still in the group and not already leaving it; warns about the rest.
    fn still_here<'a>(&self, found: &AutoScalingGroup, names: &'a [String]) -> Vec<&'a String> {
        let lifecycles: HashMap<&str, Option<&LifecycleState>> = found
            .instances()
            .iter()
            .filter_map(|i| Some((i.instance_id()?, i.lifecycle_state())))
            .collect();
        names
            .iter()
            .filter(|name| match lifecycles.get(name.as_str()) {
                None => {
                    warn!(
                        group = self.group,
                        instance = %name,
                        "instance to remove is not in the group"
                    );
                    false
                }
                Some(Some(lifecycle)) if leaving(lifecycle) => {
                    warn!(
                        group = self.group,
                        instance = %name,
                        %lifecycle,
                        "instance to remove is already leaving"
                    );
                    false
                }
                Some(_) => true,
            })
            .collect()
    }

    /// Whether `name` has left the group or is on its way out; false if that cannot be told.
    async fn gone(&self, name: &str) -> bool {
        let Ok(found) = self.describe("look up instance").await else {
            return false;
        };
        match found
            .instances()
            .iter()
            .find(|i| i.instance_id() == Some(name))
        {
            None => true,
            Some(i) => i.lifecycle_state().is_some_and(leaving),
        }
    }

    /// The group, or an error that says how to make it exist.
    async fn describe(&self, what: &str) -> Result<AutoScalingGroup, ProviderError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.asg)
            .send()
            .await
            .map_err(|e| self.api_error(what, e))?;
        out.auto_scaling_groups
            .unwrap_or_default()
            .into_iter()
            .find(|g| g.auto_scaling_group_name() == Some(self.asg.as_str()))
            .ok_or_else(|| {
                ProviderError::new(
                    &self.group,
                    what,
                    format!(
                        "no Auto Scaling group named {} in region {}: create it with \
                         terraform/modules/aws-worker-group, or fix `asg` (or `region`) in the \
                         group's provider table",
                        self.asg, self.region
                    ),
                )
            })
    }

    /// An SDK error with its whole chain (code, message, cause), not just "service error".
    fn api_error(&self, what: &str, e: impl std::error::Error) -> ProviderError {
        ProviderError::new(
            &self.group,
            what,
            format_args!(
                "Auto Scaling group {} in {}: {}",
                self.asg,
                self.region,
                DisplayErrorContext(e)
            ),
        )
    }
}

/// How the group's lifecycle states count for the autoscaler (`Starting` and `Running` count
/// toward the group's size, `Stopping` does not):
/// - Pending, Pending:Wait, Pending:Proceed: Starting (launched, booting or held by a launch
///   hook).
/// - InService: Running; Stopping if health checks call it Unhealthy, since the group is about
///   to replace it on its own.
/// - ReplacingRootVolume*, RootVolumeReplaced: Starting (out of service for a root volume
///   replacement, coming back).
/// - Terminating* (Terminating:Wait is the drain hook), Terminated, Detaching, Detached:
///   Stopping.
/// - EnteringStandby, Standby, Quarantined (unused by AWS): Stopping; out of service and not
///   counted in desired capacity.
/// - Warmed:*: Stopping. Warm-pool instances are not counted in desired capacity (and
///   DescribeAutoScalingGroups does not normally list them): counting them would keep the
///   autoscaler from raising desired capacity, which is what moves them into service.
/// - A state this SDK does not know: Starting, so an unknown state never causes a launch.
fn state(lifecycle: Option<&LifecycleState>, health: Option<&str>) -> InstanceState {
    use LifecycleState as L;
    let Some(lifecycle) = lifecycle else {
        return InstanceState::Starting;
    };
    match lifecycle {
        L::InService if health.is_some_and(|h| h.eq_ignore_ascii_case("unhealthy")) => {
            InstanceState::Stopping
        }
        L::InService => InstanceState::Running,
        L::Pending
        | L::PendingWait
        | L::PendingProceed
        | L::ReplacingRootVolume
        | L::ReplacingRootVolumeWait
        | L::ReplacingRootVolumeProceed
        | L::RootVolumeReplaced => InstanceState::Starting,
        l if leaving(l) => InstanceState::Stopping,
        L::EnteringStandby | L::Standby | L::Quarantined => InstanceState::Stopping,
        l if l.as_str().starts_with("Warmed:") => InstanceState::Stopping,
        _ => InstanceState::Starting,
    }
}

/// Whether an instance in this state is on its way out of the group (terminating or detaching):
/// removing it again is a no-op, not an error.
fn leaving(lifecycle: &LifecycleState) -> bool {
    use LifecycleState as L;
    matches!(
        lifecycle,
        L::Terminating
            | L::TerminatingWait
            | L::TerminatingProceed
            | L::TerminatingRetained
            | L::Terminated
            | L::Detaching
            | L::Detached
            | L::WarmedTerminating
            | L::WarmedTerminatingWait
            | L::WarmedTerminatingProceed
            | L::WarmedTerminatingRetained
            | L::WarmedTerminated
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_map_to_what_counts() {
        let cases = [
            ("Pending", None, InstanceState::Starting),
            ("Pending:Wait", None, InstanceState::Starting),
            ("InService", Some("Healthy"), InstanceState::Running),
            ("InService", Some("Unhealthy"), InstanceState::Stopping),
            ("Terminating:Wait", Some("Healthy"), InstanceState::Stopping),
            ("Terminated", None, InstanceState::Stopping),
            ("Detaching", None, InstanceState::Stopping),
            ("Standby", None, InstanceState::Stopping),
            ("Warmed:Stopped", None, InstanceState::Stopping),
            ("Warmed:Pending", None, InstanceState::Stopping),
            ("ReplacingRootVolume", None, InstanceState::Starting),
            ("SomethingNew", None, InstanceState::Starting),
        ];
        for (lifecycle, health, want) in cases {
            let lifecycle = LifecycleState::from(lifecycle);
            assert_eq!(state(Some(&lifecycle), health), want, "{lifecycle}");
        }
        assert_eq!(state(None, None), InstanceState::Starting);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = toml::from_str::<AwsConfig>("asg = \"g\"\nregion_name = \"x\"").unwrap_err();
        assert!(err.to_string().contains("region_name"), "{err}");
    }
}
