//! The integration tests, one module per area, in one test binary: linking the proofs stack is
//! most of a test build, so it is linked once.
//!
//! Run one area with `cargo nextest run -p mesh-tests -E 'test(/^placement::/)'`.

mod autoscaler;
mod autoscaler_aws;
mod autoscaler_gcp;
mod chaos;
mod dispatch;
mod errors;
mod faults;
mod gpu;
mod locality;
mod logs;
mod lotus;
mod metrics;
mod ops;
mod outages;
mod placement;
mod recovery;
mod s3;
mod seal;
mod security;
mod topology;
mod upgrade;
