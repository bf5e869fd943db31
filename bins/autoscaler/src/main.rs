//! `mesh-autoscaler`: parses flags and hands over to `mesh::autoscaler`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh::autoscaler::config::AutoscalerConfig;
use mesh::autoscaler::metrics::Metrics;
use mesh_cli::{NatsArgs, Shutdown};

#[derive(Parser)]
#[command(
    name = "mesh-autoscaler",
    version,
    about = "Resizes worker groups from the task streams' backlog, draining instances before removal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: mesh_cli::LogArgs,
}

#[derive(clap::Args)]
struct Common {
    #[command(flatten)]
    nats: NatsArgs,
    /// The groups to size (TOML; see the README's Autoscaling section).
    #[arg(long, env = "MESH_AUTOSCALER_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Size the groups until SIGTERM; local workers are drained and stopped on the way out.
    Run {
        #[command(flatten)]
        common: Common,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /healthz;
        /// overrides `metrics` in the config.
        #[arg(long, env = "MESH_METRICS", value_name = "HOST:PORT")]
        metrics: Option<SocketAddr>,
    },
    /// Evaluate every group once and print what it would do and why; changes nothing.
    Plan {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mesh_cli::run_main(&cli.log, || run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { common, metrics } => {
            let config = AutoscalerConfig::load(&common.config).map_err(anyhow::Error::msg)?;
            let broker = common.nats.connect("mesh-autoscaler").await?;
            let shutdown = Shutdown::install();
            let counts = Metrics::default();
            let server = match (metrics, config.metrics) {
                (Some(addr), _) => Some((addr, "--metrics")),
                (None, Some(addr)) => Some((addr, "metrics =")),
                (None, None) => None,
            };
            let server = match server {
                Some((addr, flag)) => {
                    let mut registry = mesh::metrics::registry(&[]);
                    counts.register(&mut registry);
                    Some(mesh_cli::serve_metrics(addr, flag, registry, &broker).await?)
                }
                None => None,
            };
            let ran = mesh::autoscaler::run(
                config,
                broker,
                counts,
                shutdown.drain.clone(),
                shutdown.abort.clone(),
            )
            .await;
            if let Some(server) = server {
                server.stop().await;
            }
            ran
        }
        Command::Plan { common } => {
            let config = AutoscalerConfig::load(&common.config).map_err(anyhow::Error::msg)?;
            let broker = common.nats.connect("mesh-autoscaler plan").await?;
            let plan = mesh::autoscaler::plan(&config, &broker).await?;
            print!("{}", mesh::autoscaler::render_plan(&plan));
            Ok(())
        }
    }
}
