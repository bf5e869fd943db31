//! `mesh-publisher`: parses flags and hands over to `mesh::publisher`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh::broker::topology::Topology;
use mesh::cli::{ExecArgs, NatsArgs, ParamArgs, Shutdown, StoreArgs};
use mesh::model::{MinerId, SectorSize, SectorState};
use mesh::publisher::randomness::OsRandomness;
use mesh::publisher::{self, Driver, PublisherConfig, SealRequest};

#[derive(Parser)]
#[command(
    name = "mesh-publisher",
    version,
    about = "Miner side of the mesh: provisions JetStream, publishes sealing tasks, drives sectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or update) the mesh's streams, consumers and buckets. Safe to run again.
    Init(InitArgs),
    /// Create sectors and seal them; exits when every one is sealed (0) or failed (1).
    Seal(SealArgs),
    /// Drive every unfinished sector of a miner until SIGTERM.
    Run(MinerArgs),
    /// List a miner's sectors and their state.
    Sectors {
        #[command(flatten)]
        nats: NatsArgs,
        /// Miner actor id, e.g. f01000.
        #[arg(long, env = "MESH_MINER")]
        miner: MinerId,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run one proof job (proof verification; not for people).
    #[command(hide = true)]
    Exec(ExecArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Stream replicas: 1 on a single server, 3 or 5 in a cluster.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Sector sizes to create task streams for.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2KiB,8MiB,512MiB,32GiB,64GiB"
    )]
    sizes: Vec<SectorSize>,
    /// Redelivery time for a task whose worker stops sending progress acks.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
    /// Write the definitions as JSON files for `nats stream add --config` into DIR instead of
    /// creating them on a server.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MinerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    params: ParamArgs,
    /// Miner actor id, e.g. f01000.
    #[arg(long, env = "MESH_MINER")]
    miner: MinerId,
    /// Deliveries after which a failing task is dead-lettered and its sector failed.
    #[arg(long, env = "MESH_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
}

#[derive(clap::Args)]
struct SealArgs {
    #[command(flatten)]
    miner: MinerArgs,
    /// Sector size: 2KiB, 8MiB, 512MiB, 32GiB or 64GiB.
    #[arg(long, default_value = "2KiB")]
    size: SectorSize,
    /// How many new sectors to create.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// A piece file to put in every new sector (repeatable); without any, sectors are
    /// committed-capacity (zeros).
    #[arg(long = "piece")]
    pieces: Vec<PathBuf>,
    /// Also continue every unfinished sector of the miner.
    #[arg(long)]
    resume: bool,
    /// Append one JSON line per sealed sector to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// How often to print progress.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    status_every: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Exec(exec) = &cli.command {
        return exec.run();
    }
    mesh::cli::run_main(|| run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Exec(_) => unreachable!("handled before the runtime starts"),
        Command::Init(args) => init(args).await,
        Command::Seal(args) => seal(args).await,
        Command::Run(args) => {
            let shutdown = Shutdown::install();
            let driver = driver(&args).await?;
            publisher::run(&driver, &shutdown.drain).await
        }
        Command::Sectors { nats, miner, json } => sectors(nats, miner, json).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let topology = Topology {
        replicas: args.replicas,
        sizes: args.sizes,
        ack_wait: args.ack_wait,
        ..Topology::default()
    };
    topology.validate().map_err(anyhow::Error::msg)?;
    if let Some(dir) = args.export {
        let files = topology
            .export(&dir)
            .map_err(|e| anyhow::anyhow!("--export {}: {e}", dir.display()))?;
        println!("wrote {} files to {}", files.len(), dir.display());
        return Ok(());
    }
    let broker = args.nats.connect("mesh-publisher init").await?;
    let made = topology.ensure(&broker).await?;
    for thing in &made {
        println!("ok  {thing}");
    }
    println!(
        "topology ready on {} ({} objects)",
        broker.url(),
        made.len()
    );
    Ok(())
}

async fn driver(args: &MinerArgs) -> anyhow::Result<Driver> {
    if args.max_attempts == 0 || args.max_attempts > 100 {
        anyhow::bail!(
            "--max-attempts {} is out of range: use 1 to 100",
            args.max_attempts
        );
    }
    let store = args.store.open()?;
    let broker = args
        .nats
        .connect(&format!("mesh-publisher {}", args.miner))
        .await?;
    store.check().await?;
    let config = PublisherConfig {
        miner: args.miner,
        runner: args.params.runner()?,
        max_attempts: args.max_attempts,
    };
    Driver::new(broker, store, config, Arc::new(OsRandomness)).await
}

async fn seal(args: SealArgs) -> anyhow::Result<()> {
    if args.count == 0 && !args.resume {
        anyhow::bail!("nothing to do: pass --count N to create sectors, or --resume");
    }
    if !args.pieces.is_empty() && args.count == 0 {
        anyhow::bail!("--piece needs --count: pieces go into newly created sectors");
    }
    let shutdown = Shutdown::install();
    let driver = driver(&args.miner).await?;
    let request = SealRequest {
        size: args.size,
        count: args.count,
        pieces: args.pieces,
        resume: args.resume,
        out: args.out,
        status_every: args.status_every,
    };
    let summary = publisher::seal(&driver, &request, &shutdown.drain).await?;
    println!(
        "{} sealed, {} failed in {:.1}s ({} late results dropped)",
        summary.sealed.len(),
        summary.failed.len(),
        summary.elapsed.as_secs_f64(),
        summary.dropped_late
    );
    if !summary.failed.is_empty() {
        for (sector, reason) in &summary.failed {
            eprintln!("failed {}.{sector}: {reason}", driver.miner());
        }
        anyhow::bail!(
            "{} of {} sectors failed (see the reasons above and `mesh-publisher sectors`)",
            summary.failed.len(),
            summary.failed.len() + summary.sealed.len()
        );
    }
    Ok(())
}

async fn sectors(nats: NatsArgs, miner: MinerId, json: bool) -> anyhow::Result<()> {
    let broker = nats.connect("mesh-publisher sectors").await?;
    let records = publisher::list_sectors(&broker, miner).await?;
    for rec in records {
        let reason = match &rec.state {
            SectorState::Failed { reason, .. } => reason.clone(),
            _ => String::new(),
        };
        if json {
            let line = serde_json::json!({
                "miner": rec.miner.to_string(),
                "sector": rec.sector.0,
                "size": rec.size.label(),
                "state": rec.state.label(),
                "reason": reason,
                "phases_done": rec.history.len(),
            });
            println!("{line}");
        } else {
            println!(
                "{}.{:<8} {:<7} {:<7} {}",
                rec.miner,
                rec.sector,
                rec.size.label(),
                rec.state.label(),
                reason
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
