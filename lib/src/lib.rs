//! mesh: a NATS JetStream worker mesh for Filecoin sector sealing.
//!
//! Miners publish sealing tasks to JetStream work-queue streams; stateless workers pull what they
//! can run, move sector data through an object store and report durable results. The module map
//! and its layers: README, Architecture (checked by `layers`).

pub mod autoscaler;
pub mod broker;
pub mod config;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layers;
pub mod lotus;
pub mod metrics;
pub mod model;
pub mod names;
pub mod phases;
pub mod proofs;
pub mod publisher;
pub mod redact;
pub mod render;
pub mod resources;
pub mod sector;
pub mod store;
pub mod units;
pub mod worker;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
