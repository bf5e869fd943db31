//! `mesh-worker`: parses flags and hands over to `mesh::worker`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh::model::SectorSize;
use mesh::proofs::child::ChildRunner;
use mesh::proofs::{params, seal_proof};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "mesh-worker",
    version,
    about = "Stateless Filecoin sealing worker for the mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage Groth parameters (the files Commit2 and verification need).
    Params {
        #[command(subcommand)]
        command: ParamsCommand,
    },
    /// Run one proof job (used by the worker itself; not for people).
    #[command(hide = true)]
    Exec {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        outcome: PathBuf,
    },
}

#[derive(clap::Args)]
struct ParamCacheArgs {
    /// Directory holding Groth parameters.
    #[arg(long, env = "FIL_PROOFS_PARAMETER_CACHE", default_value = params::DEFAULT_CACHE)]
    param_cache: PathBuf,
}

#[derive(Subcommand)]
enum ParamsCommand {
    /// Generate INSECURE, test-only parameters for a small sector size (2KiB: ~17 min, 1.1 GB).
    Generate {
        /// Sector size to generate parameters for.
        #[arg(long)]
        size: SectorSize,
        #[command(flatten)]
        cache: ParamCacheArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Exec { job, outcome } = &cli.command {
        return mesh::proofs::exec::main(job, outcome);
    }
    mesh::telemetry::init(std::env::var("RUST_LOG").ok().as_deref());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    match command {
        Command::Exec { .. } => unreachable!("handled before the runtime starts"),
        Command::Params { command } => match command {
            ParamsCommand::Generate { size, cache } => {
                let proof = seal_proof(size);
                let files = params::param_files(proof)?;
                let missing = params::missing(&cache.param_cache, files.all());
                if missing.is_empty() {
                    println!(
                        "parameters for {size} already in {}",
                        cache.param_cache.display()
                    );
                    return Ok(());
                }
                eprintln!(
                    "WARNING: generating INSECURE random parameters for {size}. They are for \
                     tests only: proofs made with them verify only against these same files, \
                     never on chain."
                );
                let runner = ChildRunner {
                    program: std::env::current_exe().context("find the mesh-worker binary")?,
                    param_cache: cache.param_cache.clone(),
                    parent_cache: None,
                };
                let written =
                    params::generate_into(&runner, proof, &cache.param_cache, &cancel).await?;
                for name in written {
                    println!("{}", cache.param_cache.join(name).display());
                }
                Ok(())
            }
        },
    }
}
