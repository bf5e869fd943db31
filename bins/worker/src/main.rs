//! `mesh-worker`: parses flags and hands over to `mesh::worker`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh::model::{SectorSize, WorkerId};
use mesh::phases::Phase;
use mesh::proofs::params;
use mesh::proofs::synthetic::Synthetic;
use mesh::resources::{Declared, Table};
use mesh::worker::config::WorkerFile;
use mesh::worker::{self, Executor, WorkerConfig};
use mesh_cli::{ExecArgs, MetricsArgs, NatsArgs, ParamArgs, Shutdown, StoreArgs};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "mesh-worker",
    version,
    about = "Stateless Filecoin sealing worker: pulls tasks from NATS JetStream and runs them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: mesh_cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Pull and run sealing tasks until SIGTERM (drain) or a second signal (abort).
    Run(Box<RunArgs>),
    /// Print what this machine has, what the worker would serve and how many tasks of each
    /// kind fit at once (connects to nothing).
    Info {
        #[command(flatten)]
        serve: ServeArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage Groth parameters (the files Commit2 and proof verification need).
    Params {
        #[command(subcommand)]
        command: ParamsCommand,
    },
    /// Run one proof job (the worker's own child processes; not for people).
    #[command(hide = true)]
    Exec(ExecArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    params: ParamArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Worker id in the registry (default: <host>-<pid>): letters, digits, '-' and '_'.
    #[arg(long, env = "MESH_WORKER_ID", value_parser = parse_worker_id)]
    id: Option<WorkerId>,
    /// How often an idle worker looks for redelivered or delayed tasks, in a pool of up to 25
    /// workers; in a larger pool each polls less often, so the pool polls like 25 workers.
    #[arg(long, env = "MESH_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// First delay before a failed task is retried; it doubles per attempt up to 5 minutes.
    #[arg(long, env = "MESH_RETRY_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    retry_delay: Duration,
    /// What runs tasks: `proofs` (real sealing) or `synthetic`, a SIMULATION that sleeps per
    /// phase and writes fake outputs of the right shape; it runs only sectors made with
    /// `mesh-publisher seal --synthetic`. For chaos, load and scheduling runs.
    #[arg(long, env = "MESH_EXECUTOR", default_value = "proofs", value_parser = parse_executor)]
    executor: ExecutorKind,
    /// Phase durations of the synthetic executor, e.g. `pc1=3s,c2=500ms` (the rest keep the
    /// lotus 32GiB times scaled an hour to a second: ap=170ms,pc1=3.5s,pc2=500ms,c1=20ms,
    /// c2=500ms,fin=80ms).
    #[arg(long, env = "MESH_SYNTHETIC_DURATIONS", value_parser = Synthetic::parse)]
    synthetic_durations: Option<Synthetic>,
    /// How long a running task waits for an unreachable object store before it is handed back
    /// (which costs one attempt).
    #[arg(long, env = "MESH_STORE_PATIENCE", default_value = "30m", value_parser = humantime::parse_duration)]
    store_patience: Duration,
    /// On SIGTERM, wait at most this long for running tasks, then hand them back to the
    /// stream (as a second signal does) and exit; default: wait as long as they take. Set it
    /// below the kill grace of what stops the worker (systemd's TimeoutStopSec, a spot
    /// instance's notice).
    #[arg(long, env = "MESH_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Drain and exit when the process with this pid, this worker's parent, exits (the
    /// autoscaler's local provider sets it for its workers).
    #[arg(long, env = "MESH_PARENT_PID")]
    parent_pid: Option<u32>,
}

/// What a worker serves and with what: shared by `run` and `info`.
#[derive(clap::Args)]
struct ServeArgs {
    /// Phases to serve, comma-separated: ap, pc1, pc2, c1, c2, fin.
    #[arg(
        long,
        env = "MESH_PHASES",
        value_delimiter = ',',
        default_value = "ap,pc1,pc2,c1,c2,fin"
    )]
    phases: Vec<Phase>,
    /// Serve AddPiece (`--addpiece=false`: do not), as `lotus-worker run --addpiece`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    addpiece: Option<bool>,
    /// Serve PreCommit1 (`=false`: do not).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    precommit1: Option<bool>,
    /// Serve PreCommit2 (`=false`: do not).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    precommit2: Option<bool>,
    /// Serve Commit1 and Commit2 (`=false`: neither).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    commit: Option<bool>,
    /// Serve Finalize (`=false`: do not).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    finalize: Option<bool>,
    /// Sector sizes to serve, comma-separated: 2KiB, 8MiB, 512MiB, 32GiB, 64GiB. The default
    /// is the test size only: pass the sizes your miners seal (e.g. 32GiB).
    #[arg(
        long,
        env = "MESH_SIZES",
        value_delimiter = ',',
        default_value = "2KiB"
    )]
    sizes: Vec<SectorSize>,
    /// At most this many tasks at once (default: as many as fit by the resource table).
    #[arg(long, env = "MESH_SLOTS", value_parser = mesh_cli::whole_number::<u32>("1 to 1024"))]
    slots: Option<u32>,
    /// CPU threads to schedule on, instead of those detected.
    #[arg(long, env = "MESH_CPUS", value_parser = mesh_cli::whole_number::<u32>("1 to 4096"))]
    cpus: Option<u32>,
    /// Memory to schedule on, instead of what is detected, e.g. 256GiB.
    #[arg(long, env = "MESH_MEMORY", value_parser = mesh::units::parse_bytes)]
    memory: Option<u64>,
    /// Swap to schedule on, instead of what is detected.
    #[arg(long, env = "MESH_SWAP", value_parser = mesh::units::parse_bytes)]
    swap: Option<u64>,
    /// GPUs to schedule on, instead of those NVML finds (0: use none).
    #[arg(long, env = "MESH_GPUS", value_parser = mesh_cli::whole_number::<u32>("0 to 64"))]
    gpus: Option<u32>,
    /// TOML file with `[machine]` (cpus, memory, swap, gpus) and `[resources.<phase>.<size>]`
    /// overrides of the resource table; flags and environment variables win over it.
    #[arg(long, env = "MESH_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// Base directory for scratch space (one subdirectory per worker, one per attempt).
    #[arg(long, env = "MESH_SCRATCH", default_value = "/var/tmp/mesh-scratch")]
    scratch: PathBuf,
    /// Scratch bytes this worker may fill, e.g. 2TiB; it takes a task only while the task's
    /// need fits beside those running (default: the free space under --scratch at start).
    #[arg(long, env = "MESH_SCRATCH_LIMIT", value_parser = mesh::units::parse_bytes)]
    scratch_limit: Option<u64>,
    /// Send each sector's layers and trees through the store between phases instead of
    /// keeping them here from PreCommit1 to Finalize (any worker may then run the next phase).
    #[arg(long, env = "MESH_NO_HOLDING")]
    no_holding: bool,
    /// Also send the data of the sectors this worker holds to the store after PreCommit1
    /// (layers, tree D) and PreCommit2 (replica, trees C and R): if this worker is lost, its
    /// sectors go on from the store instead of running PreCommit1 again. Costs the store
    /// about 15 times the sector size per sector while it seals (off by default).
    #[arg(long, env = "MESH_BACK_UP_HELD", conflicts_with = "no_holding")]
    back_up_held: bool,
    /// Pin each proof that reserves fewer threads than the machine has to that many CPUs of its
    /// own (the proofs' thread pools then see only those). For a worker that has the machine, or
    /// the CPU set it was started with, to itself; not with --cpus declared.
    #[arg(long, env = "MESH_PIN_CPUS")]
    pin_cpus: bool,
}

impl ServeArgs {
    /// The worker config these flags describe, with the machine detected and the resource table
    /// overridden from the config file and the environment (lotus's variable names).
    fn config(self, executor: Executor) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig::new(executor, self.scratch);
        config.phases = self.phases;
        let lotus_flags = [
            ("addpiece", self.addpiece),
            ("precommit1", self.precommit1),
            ("precommit2", self.precommit2),
            ("commit", self.commit),
            ("finalize", self.finalize),
        ];
        for (flag, serve) in lotus_flags {
            let phases = Phase::ALL.into_iter().filter(|p| p.lotus_flag() == flag);
            match serve {
                Some(true) => {
                    for phase in phases {
                        if !config.phases.contains(&phase) {
                            config.phases.push(phase);
                        }
                    }
                }
                Some(false) => {
                    let off: Vec<Phase> = phases.collect();
                    config.phases.retain(|p| !off.contains(p));
                }
                None => {}
            }
        }
        config.sizes = self.sizes;
        config.slots = self.slots;
        let file = match &self.config {
            Some(path) => WorkerFile::load(path).map_err(anyhow::Error::msg)?,
            None => WorkerFile::default(),
        };
        let declared = Declared {
            cpus: self.cpus,
            memory: self.memory,
            swap: self.swap,
            gpus: self.gpus,
        }
        .or(file.machine.clone());
        declared.validate().map_err(anyhow::Error::msg)?;
        config.machine = declared.apply(config.machine);
        config.gpus_declared = declared.gpus.is_some();
        let mut table = Table::lotus();
        table
            .apply_file(&file.resources)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", file_name(&self.config)))?;
        table
            .apply_env(&|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?;
        config.table = table;
        config.hold_sectors = !self.no_holding;
        config.back_up_held = self.back_up_held;
        if self.pin_cpus {
            config.pin_cpus();
        }
        config.scratch_limit = self
            .scratch_limit
            .or_else(|| mesh::worker::scratch::free_space(&config.scratch))
            .unwrap_or(u64::MAX);
        Ok(config)
    }
}

fn file_name(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or(String::new(), |p| p.display().to_string())
}

/// A worker id is a key in the `mesh-workers` bucket and a directory name under `--scratch`.
fn parse_worker_id(s: &str) -> Result<WorkerId, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if s.is_empty() || s.len() > 64 || !s.chars().all(allowed) {
        return Err(format!(
            "'{s}' is not a worker id: use 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    Ok(WorkerId(s.to_string()))
}

#[derive(Clone, Copy)]
enum ExecutorKind {
    Proofs,
    Synthetic,
}

fn parse_executor(s: &str) -> Result<ExecutorKind, String> {
    match s {
        "proofs" => Ok(ExecutorKind::Proofs),
        "synthetic" => Ok(ExecutorKind::Synthetic),
        _ => Err(format!(
            "'{s}' is not an executor: use proofs (real sealing) or synthetic (a simulation)"
        )),
    }
}

#[derive(Subcommand)]
enum ParamsCommand {
    /// Generate INSECURE, test-only parameters for a small sector size (2KiB: about 17 minutes
    /// on 2 cores, 1.1 GB).
    Generate {
        /// Sector size to generate parameters for.
        #[arg(long)]
        size: SectorSize,
        #[command(flatten)]
        params: ParamArgs,
    },
    /// Upload parameters from the local cache to the store, for workers and publishers to pull.
    Push {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        params: ParamArgs,
        /// Sizes whose parameters to push (those of them present locally); like `run`, 2KiB
        /// unless MESH_SIZES or this says otherwise.
        #[arg(
            long,
            env = "MESH_SIZES",
            value_delimiter = ',',
            default_value = "2KiB"
        )]
        sizes: Vec<SectorSize>,
    },
    /// Download parameters the local cache lacks from the store.
    Pull {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        params: ParamArgs,
        /// Sizes whose parameters to pull; like `run`, 2KiB unless MESH_SIZES or this says
        /// otherwise, so that a worker's environment pulls what it serves.
        #[arg(
            long,
            env = "MESH_SIZES",
            value_delimiter = ',',
            default_value = "2KiB"
        )]
        sizes: Vec<SectorSize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Exec(exec) = &cli.command {
        return exec.run();
    }
    mesh_cli::run_main(&cli.log, || run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Exec(_) => unreachable!("handled before the runtime starts"),
        Command::Run(args) => run_worker(*args).await,
        Command::Info { serve, json } => {
            // The plan of a worker that runs the real proofs.
            let mut config = serve.config(Executor::Synthetic(Synthetic::default()))?;
            if let Some(warning) = config.prove_on_cpu() {
                eprintln!("note: {warning}");
            }
            config.validate().map_err(anyhow::Error::msg)?;
            print!("{}", mesh::worker::info::render(&config, json));
            Ok(())
        }
        Command::Params { command } => match command {
            ParamsCommand::Generate { size, params } => generate(size, &params).await,
            ParamsCommand::Push {
                store,
                params,
                sizes,
            } => {
                let store = store.open()?;
                let mut files = Vec::new();
                for size in sizes {
                    let names = params::param_files(size.seal_proof())?.names();
                    files.extend(
                        names
                            .into_iter()
                            .filter(|n| params.param_cache.join(n).is_file()),
                    );
                }
                if files.is_empty() {
                    anyhow::bail!(
                        "no parameter files for those sizes in {}: run `mesh-worker params \
                         generate --size 2KiB` (test sizes) or fetch the official ones first",
                        params.param_cache.display()
                    );
                }
                let pushed = params::push(&store, &params.param_cache, &files).await?;
                println!(
                    "{} file(s) in {} ({} uploaded)",
                    files.len(),
                    store.name(),
                    pushed.len()
                );
                Ok(())
            }
            ParamsCommand::Pull {
                store,
                params,
                sizes,
            } => {
                let store = store.open()?;
                for size in sizes {
                    let wanted = params::param_files(size.seal_proof())?.names();
                    let pulled = params::pull(&store, &params.param_cache, &wanted, size)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!(
                        "{size}: parameters in {} ({} pulled)",
                        params.param_cache.display(),
                        pulled.len()
                    );
                }
                Ok(())
            }
        },
    }
}

async fn run_worker(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::install();
    if let Some(parent) = args.parent_pid {
        let actual = std::os::unix::process::parent_id();
        if actual != parent {
            anyhow::bail!(
                "--parent-pid {parent}: this worker's parent is process {actual} (the one given \
                 may have exited already): give the pid of the process that starts the worker, \
                 or leave it out"
            );
        }
        worker::drain_with_parent(parent, shutdown.drain.clone());
    }
    let executor = match (args.executor, args.synthetic_durations) {
        (ExecutorKind::Proofs, None) => Executor::Proofs(args.params.runner()?),
        (ExecutorKind::Proofs, Some(_)) => anyhow::bail!(
            "--synthetic-durations is set but --executor is proofs: add --executor synthetic \
             (a simulation) or drop the durations"
        ),
        (ExecutorKind::Synthetic, durations) => Executor::Synthetic(durations.unwrap_or_default()),
    };
    let mut config = args.serve.config(executor)?;
    config.poll_interval = args.poll_interval;
    config.retry_base = args.retry_delay;
    config.store_patience = args.store_patience;
    config.drain_timeout = args.drain_timeout;
    if let Some(id) = args.id {
        config.id = id;
    }
    if !config.executor.is_synthetic()
        && let Some(warning) = config.prove_on_cpu()
    {
        tracing::warn!("{warning}");
    }
    config.validate().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.scratch)
        .with_context(|| format!("--scratch {}: cannot create it", config.scratch.display()))?;
    let store = args.store.open()?;
    let broker = args
        .nats
        .connect(&format!("mesh-worker {}", config.id))
        .await?;
    let mut registry = mesh::metrics::registry(&[("worker", &config.id.0)]);
    config.metrics.register(&mut registry);
    let server = args.metrics.serve(registry, &broker).await?;
    let ran = worker::run(config, broker, store, shutdown.drain, shutdown.abort).await;
    if let Some(server) = server {
        server.stop().await;
    }
    ran
}

async fn generate(size: SectorSize, params: &ParamArgs) -> anyhow::Result<()> {
    let proof = size.seal_proof();
    if matches!(size, SectorSize::GiB32 | SectorSize::GiB64) {
        anyhow::bail!(
            "generating {size} parameters would take days and hundreds of GB: fetch the \
             official ones (e.g. `lotus fetch-params {size}`) into {}",
            params.param_cache.display()
        );
    }
    let files = params::param_files(proof)?;
    if params::missing(&params.param_cache, files.all()).is_empty() {
        println!(
            "parameters for {size} already in {}",
            params.param_cache.display()
        );
        return Ok(());
    }
    eprintln!(
        "WARNING: generating INSECURE random parameters for {size}. They are for tests only: \
         proofs made with them verify only against these same files, never on chain."
    );
    let runner = params.runner().context("find the mesh-worker binary")?;
    let cancel = CancellationToken::new();
    let shutdown = Shutdown::install();
    let written = tokio::select! {
        written = params::generate_into(&runner, proof, &params.param_cache, &cancel) => written?,
        () = shutdown.drain.cancelled() => anyhow::bail!("interrupted; nothing was written"),
    };
    for name in written {
        println!("{}", params.param_cache.join(name).display());
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
