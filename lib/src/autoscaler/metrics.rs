//! What the autoscaler counts, served by `mesh-autoscaler run --metrics` under
//! `mesh_autoscaler_`: each group's desired, serving and draining instances, whether this
//! autoscaler sizes it, its decisions by reason, how long drains took and failed calls.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    group: String,
    reason: &'static str,
}

fn group(name: &str) -> GroupLabels {
    GroupLabels {
        group: name.to_string(),
    }
}

fn drain_histogram() -> Histogram {
    Histogram::new(crate::metrics::duration_buckets())
}

/// The autoscaler's metric families; cheap to clone, counting whether or not they are served.
#[derive(Clone, Debug)]
pub struct Metrics {
    desired: Family<GroupLabels, Gauge>,
    serving: Family<GroupLabels, Gauge>,
    draining: Family<GroupLabels, Gauge>,
    leader: Family<GroupLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    drains: Family<GroupLabels, Histogram, fn() -> Histogram>,
    errors: Family<GroupLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            desired: Family::default(),
            serving: Family::default(),
            draining: Family::default(),
            leader: Family::default(),
            decisions: Family::default(),
            drains: Family::new_with_constructor(drain_histogram),
            errors: Family::default(),
        }
    }
}

impl Metrics {
    /// Adds the families to `registry` (a daemon's, from `crate::metrics::registry`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("autoscaler");
        let instances = || Unit::Other("instances".to_string());
        r.register_with_unit(
            "group_desired",
            "Instances the group should serve with, after the stabilisation windows",
            instances(),
            self.desired.clone(),
        );
        r.register_with_unit(
            "group_serving",
            "Instances serving now (live, not draining)",
            instances(),
            self.serving.clone(),
        );
        r.register_with_unit(
            "group_draining",
            "Instances draining before removal",
            instances(),
            self.draining.clone(),
        );
        r.register(
            "group_leader",
            "1 when this autoscaler holds the group's lease and sizes it, 0 when it stands by",
            self.leader.clone(),
        );
        r.register(
            "decisions",
            "Evaluations by reason (scale_up, wake_from_zero, scale_down, drained, ...)",
            self.decisions.clone(),
        );
        r.register_with_unit(
            "drain_duration",
            "From drain mark to removal, per removed instance",
            Unit::Seconds,
            self.drains.clone(),
        );
        r.register(
            "provider_errors",
            "Failed provider or broker calls",
            self.errors.clone(),
        );
    }

    pub fn sizes(&self, name: &str, desired: u32, serving: u32, draining: u32) {
        let labels = group(name);
        // At zero from the first evaluation, so that a rule's `increase()` sees the first error
        // and a dashboard's quantile finds its series.
        let _ = self.errors.get_or_create(&labels);
        let _ = self.drains.get_or_create(&labels);
        self.desired.get_or_create(&labels).set(desired.into());
        self.serving.get_or_create(&labels).set(serving.into());
        self.draining.get_or_create(&labels).set(draining.into());
    }

    /// Whether this autoscaler holds the group's lease (sizes it) or stands by.
    pub fn leader(&self, name: &str, leader: bool) {
        self.leader.get_or_create(&group(name)).set(leader.into());
    }

    pub fn decision(&self, name: &str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                group: name.to_string(),
                reason,
            })
            .inc();
    }

    pub fn drained(&self, name: &str, seconds: f64) {
        self.drains.get_or_create(&group(name)).observe(seconds);
    }

    pub fn error(&self, name: &str) {
        self.errors.get_or_create(&group(name)).inc();
    }
}
