//! Logging setup shared by the binaries: human-readable lines on stderr, filtered by `RUST_LOG`
//! (default `info`), coloured only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`: `info`, with the chattiest dependencies at `warn`.
const DEFAULT_FILTER: &str = "info,async_nats=warn,aws_config=warn,storage_proofs_core=warn,\
                              storage_proofs_porep=warn,filecoin_proofs=warn";

/// Installs the global subscriber. `filter` is a `RUST_LOG`-style directive string, if any; one
/// that does not parse is an error that says what was wrong (silently logging at another level
/// would hide what the operator asked to see).
pub fn init(filter: Option<&str>) -> Result<(), String> {
    let filter = match filter {
        None => EnvFilter::new(DEFAULT_FILTER),
        Some(f) => EnvFilter::try_new(f).map_err(|e| {
            format!(
                "RUST_LOG={f} is not a log filter ({e}): use a level (error, warn, info, debug, \
                 trace) or directives such as RUST_LOG=info,mesh=debug, or unset it"
            )
        })?,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    Ok(())
}
