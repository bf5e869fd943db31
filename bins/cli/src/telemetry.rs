//! Logging setup shared by the binaries: human-readable lines on stderr, filtered by `RUST_LOG`
//! (default `info`), coloured only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `filter` is a `RUST_LOG`-style directive string, if any.
pub fn init(filter: Option<&str>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,async_nats=warn,aws_config=warn,storage_proofs_core=warn,storage_proofs_porep=warn,filecoin_proofs=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
