//! Logging setup shared by the binaries: lines on stderr, filtered by `RUST_LOG` (default
//! `info`), as text for people (coloured only on a terminal) or JSON for log collectors; and the
//! plainer setup of a proof child, whose lines its worker reads and logs again.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`: `info`, with the chattiest dependencies at `warn`.
const DEFAULT_FILTER: &str = "info,async_nats=warn,aws_config=warn,storage_proofs_core=warn,\
                              storage_proofs_porep=warn,filecoin_proofs=warn";

/// A proof child's filter: the proofs' own progress (layers, trees, partitions) at `info`.
const CHILD_FILTER: &str = "info,bellperson=warn";

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for people: time, level, span fields, message, fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// and the task's span (`span`: task, miner, sector, phase, attempt) where there is one.
    Json,
}

/// `--log-format`, on every binary and subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "MESH_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// Parses a `RUST_LOG`-style directive string; one that does not parse is an error that says
/// what was wrong (silently logging at another level would hide what the operator asked to see).
fn filter(directives: Option<&str>, default: &str) -> Result<EnvFilter, String> {
    match directives {
        None => Ok(EnvFilter::new(default)),
        Some(f) => EnvFilter::try_new(f).map_err(|e| {
            format!(
                "RUST_LOG={f} is not a log filter ({e}): use a level (error, warn, info, debug, \
                 trace) or directives such as RUST_LOG=info,mesh=debug, or unset it"
            )
        }),
    }
}

/// Installs the global subscriber. `directives` is `RUST_LOG`, if set.
pub fn init(directives: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = filter(directives, DEFAULT_FILTER)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

/// A proof child's logging: the proofs' `log` records as plain lines on stderr, without time
/// or colour (its worker stamps and logs each line in the task's span). `MESH_PROOF_LOG`
/// overrides the filter; one that does not parse leaves the default.
pub fn init_child() {
    let directives = std::env::var("MESH_PROOF_LOG").ok();
    let filter = filter(directives.as_deref(), CHILD_FILTER)
        .unwrap_or_else(|_| EnvFilter::new(CHILD_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}
