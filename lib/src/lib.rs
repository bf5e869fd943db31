//! mesh: a NATS JetStream worker mesh for Filecoin sector sealing.
//!
//! Miners publish sealing tasks to JetStream work-queue streams; stateless workers pull what they
//! can run, move sector data through an object store and report durable results. See DESIGN.md.

pub mod model;
pub mod names;
pub mod proofs;
pub mod telemetry;
