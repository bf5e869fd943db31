//! `mesh-publisher`: parses flags and hands over to `mesh::publisher`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh::broker::topology::Topology;
use mesh::model::{MinerId, SectorSize};
use mesh::phases::Phase;
use mesh::publisher::randomness::OsRandomness;
use mesh::publisher::{self, Driver, PublisherConfig, SealRequest, dlq};
use mesh::sector::SectorState;
use mesh_cli::{
    ExecArgs, MetricsArgs, MetricsServer, NatsArgs, ParamArgs, Shutdown, StoreArgs, whole_number,
};

#[derive(Parser)]
#[command(
    name = "mesh-publisher",
    version,
    about = "Miner side of the mesh: provisions JetStream, publishes sealing tasks, drives sectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: mesh_cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or update) the mesh's streams, consumers and buckets. Safe to run again.
    Init(InitArgs),
    /// Write a credentials file for one user of the roles of `init --roles --operator`
    /// (operator mode): admin, autoscaler, miner-<id>, worker-<name> or sys.
    Creds(CredsArgs),
    /// Create sectors and seal them; exits when every one is sealed (0) or failed (1).
    Seal(SealArgs),
    /// Drive every unfinished sector of a miner until SIGTERM.
    Run(MinerArgs),
    /// List a miner's sectors and their state.
    Sectors {
        #[command(flatten)]
        nats: NatsArgs,
        /// Miner actor id, e.g. f01000 (with --failed, every miner when left out).
        #[arg(long, env = "MESH_MINER", required_unless_present = "failed")]
        miner: Option<MinerId>,
        /// Only failed sectors, with the phase that failed and the whole reason.
        #[arg(long)]
        failed: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sectors of every miner by state, tasks waiting and running per stream, dead letters.
    Status {
        #[command(flatten)]
        nats: NatsArgs,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters (tasks that failed for good): list, retry after fixing the cause, drop.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Every live worker: host, what it serves, CPU, RAM and GPU in use, running tasks.
    Workers {
        #[command(flatten)]
        nats: NatsArgs,
        /// Print the registry records as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// The miners sharing the pool: weights, shares, tasks waiting and running.
    #[command(subcommand)]
    Miners(MinersCommand),
    /// Every task of an active sector, running (where, since when, which attempt) or queued,
    /// as `lotus-miner sealing jobs` shows them.
    Jobs {
        #[command(flatten)]
        nats: NatsArgs,
        /// Only this miner's (every miner's when left out).
        #[arg(long, env = "MESH_MINER")]
        miner: Option<MinerId>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain one worker by hand (it finishes its running tasks and takes no new ones), or
    /// resume it.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Give up on an active sector.
    #[command(subcommand)]
    Sector(SectorCommand),
    /// Print a mesh message or KV value as JSON: a stream's message (--stream S --seq N), a
    /// bucket's value (--bucket B --key K), or a body on stdin. Tasks, results, dead letters
    /// and sector records are MessagePack, which the `nats` CLI shows as bytes.
    Decode {
        #[command(flatten)]
        nats: NatsArgs,
        /// A stream, e.g. MESH_RESULT or MESH_DLQ (with --seq).
        #[arg(long, requires = "seq", conflicts_with = "bucket")]
        stream: Option<String>,
        /// The message's sequence in --stream.
        #[arg(long, requires = "stream")]
        seq: Option<u64>,
        /// A bucket, e.g. mesh-sectors (with --key).
        #[arg(long, requires = "entry")]
        bucket: Option<String>,
        /// The key in --bucket, e.g. f01000.1.
        #[arg(long = "key", id = "entry", requires = "bucket")]
        entry: Option<String>,
        /// What the body is: task, result, sector or json (default: what its stream or
        /// bucket holds; from stdin, the first that fits).
        #[arg(long = "as", value_name = "KIND")]
        kind: Option<publisher::decode::Kind>,
    },
    /// Objects in the store that no sector record refers to (of removed sectors, of attempts
    /// that lost a race, cut off by a crash): lists them; with --delete removes them.
    Gc {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// Only this miner's objects (every miner's when left out).
        #[arg(long, env = "MESH_MINER")]
        miner: Option<MinerId>,
        /// Leave objects written more recently than this (a sector being created, an upload
        /// under way).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Delete what is listed.
        #[arg(long)]
        delete: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove failed or stopped sectors: their records and every object they have in the store.
    Remove {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// Miner actor id, e.g. f01000.
        #[arg(long, env = "MESH_MINER")]
        miner: MinerId,
        /// Sector numbers.
        #[arg(required = true)]
        sectors: Vec<u64>,
    },
    /// Sealing for a lotus miner through lotus's sector import.
    #[command(subcommand)]
    Lotus(LotusCommand),
    /// Run one proof job (proof verification; not for people).
    #[command(hide = true)]
    Exec(ExecArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List every dead letter: its id, time, phase, size, miner, sector, attempts and reason.
    List {
        #[command(flatten)]
        nats: NatsArgs,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the failed phase of the letters' sectors again, then remove the letters. Fix the
    /// cause first (the reason says what failed).
    Retry {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        which: Letters,
    },
    /// Remove dead letters without retrying them.
    Drop {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        which: Letters,
    },
}

#[derive(Subcommand)]
enum LotusCommand {
    /// What the mesh sees of the miner and its full node: actor, sector size, each token's
    /// permissions, the chain head and the ticket a sector would get now. Exits 1 when the
    /// miner's token cannot reserve sector numbers and import sectors (admin).
    Check(LotusArgs),
    /// Reserve N sector numbers from the miner, seal N committed-capacity sectors with the
    /// chain's tickets, hand each to lotus after PreCommit2 (`SectorReceive`) and serve what
    /// lotus then asks for; exits 0 once lotus reported every sector done (also waits for the
    /// miner's unfinished lotus sectors).
    Pledge {
        #[command(flatten)]
        args: LotusSealArgs,
        /// How many sectors (at most 1000 per run); 0 resumes unfinished ones only.
        #[arg(long, value_parser = whole_number::<u64>("0 to 1000"))]
        count: u64,
    },
    /// Drive every unfinished lotus sector of the miner and serve lotus until SIGTERM.
    Run(LotusSealArgs),
}

/// What sealing for lotus needs: lotus, NATS, the store, and the listener lotus calls.
#[derive(clap::Args)]
struct LotusSealArgs {
    #[command(flatten)]
    lotus: LotusArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    params: ParamArgs,
    /// Where to listen for lotus's downloads and Commit1/Commit2/done calls.
    #[arg(long, env = "MESH_LOTUS_LISTEN", default_value = "127.0.0.1:2380")]
    listen: std::net::SocketAddr,
    /// The URL lotus reaches the listener at (default: http://LISTEN).
    #[arg(long, env = "MESH_LOTUS_ADVERTISE")]
    advertise: Option<url::Url>,
    #[command(flatten)]
    driving: DrivingArgs,
}

/// Where lotus's APIs are, in lotus's own form.
#[derive(clap::Args)]
struct LotusArgs {
    /// The miner's API: TOKEN:/ip4/HOST/tcp/PORT/http, as `lotus-miner auth api-info --perm
    /// admin` prints it.
    #[arg(
        long,
        env = "MINER_API_INFO",
        value_name = "API_INFO",
        hide_env_values = true
    )]
    miner_api: String,
    /// The full node's API, as `lotus auth api-info --perm read` prints it.
    #[arg(
        long,
        env = "FULLNODE_API_INFO",
        value_name = "API_INFO",
        hide_env_values = true
    )]
    node_api: String,
}

impl LotusArgs {
    /// Parsed here rather than by clap, whose error would repeat the string with its token.
    fn connect(self) -> anyhow::Result<mesh::lotus::Lotus> {
        let miner = self
            .miner_api
            .parse()
            .map_err(|e| anyhow::anyhow!("--miner-api (MINER_API_INFO): {e}"))?;
        let node = self
            .node_api
            .parse()
            .map_err(|e| anyhow::anyhow!("--node-api (FULLNODE_API_INFO): {e}"))?;
        Ok(mesh::lotus::Lotus::new(miner, node))
    }
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Stop worker ID taking tasks: its running tasks finish; it stays up, and no autoscaler
    /// lifts this mark. `mesh-publisher workers` shows it DRAINING.
    Drain {
        #[command(flatten)]
        nats: NatsArgs,
        /// The worker's id, as `mesh-publisher workers` shows it.
        id: String,
        /// Why, kept with the mark (`nats kv get mesh-drain ID`).
        #[arg(long, default_value = "drained by an operator")]
        reason: String,
    },
    /// Let worker ID take tasks again (lifts any drain mark, an autoscaler's too).
    Resume {
        #[command(flatten)]
        nats: NatsArgs,
        /// The worker's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum SectorCommand {
    /// Abort active sector SECTOR of MINER: it turns failed with the reason, its queued task
    /// is deleted, a running one stopped, and its objects are deleted from the store.
    Abort {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// Miner actor id, e.g. f01000.
        miner: MinerId,
        /// Sector number.
        sector: u64,
        /// Why, kept in the sector's failure.
        #[arg(long, default_value = "no reason given")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum MinersCommand {
    /// Every miner with its weight, its share of a busy pool, and its tasks waiting and running.
    List {
        #[command(flatten)]
        nats: NatsArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a miner's weight: with the pool busy, a miner of weight 2 gets twice the workers of
    /// a miner of weight 1. Workers follow the change at once.
    Weight {
        #[command(flatten)]
        nats: NatsArgs,
        /// Miner actor id, e.g. f01000.
        miner: MinerId,
        /// 1 to 1000 (every miner starts at 1).
        #[arg(value_parser = parse_weight)]
        weight: u32,
    },
}

fn parse_weight(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a weight: use a whole number from 1 to 1000"))?;
    mesh::broker::miners::check_weight(n)
}

/// Which dead letters: some ids, or `--all`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Letters {
    /// Dead letter ids: the first column of `mesh-publisher dlq list`.
    #[arg(value_name = "ID", value_parser = parse_letter_id)]
    ids: Vec<u64>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

fn parse_letter_id(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| {
        format!(
            "'{s}' is not a dead letter id: ids are the numbers in the first column of \
             `mesh-publisher dlq list`"
        )
    })
}

impl Letters {
    fn selection(self) -> dlq::Selection {
        if self.all {
            dlq::Selection::All
        } else {
            dlq::Selection::Ids(self.ids)
        }
    }
}

#[derive(clap::Args)]
struct InitArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Stream replicas: 1 on a single server, 3 or 5 in a cluster.
    #[arg(long, default_value_t = 1, value_parser = whole_number::<usize>("1, 3 or 5"))]
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
    /// Write the nats-server users and permissions of the mesh's roles (admin, worker,
    /// autoscaler and one user per --miners entry) into FILE, `-` for standard output, instead
    /// of creating anything on a server.
    #[arg(long, value_name = "FILE", requires = "miners")]
    roles: Option<PathBuf>,
    /// Miners sharing the mesh, comma-separated, e.g. f01000,f01001: with --roles, the miners
    /// to write users for; otherwise `init` makes their consumers (task and result), which a
    /// miner's role may not create. Run `init --miners` again when a miner joins.
    #[arg(long, value_delimiter = ',')]
    miners: Vec<MinerId>,
    /// With --roles, also declare the system account `SYS` with one user, `sys`
    /// (password from MESH_SYS_PASSWORD), for `nats server report` and cluster monitoring
    /// (deploy/nats/ uses it).
    #[arg(long, requires = "roles")]
    system_account: bool,
    /// With --roles, operator mode: write FILE to trust an operator whose keys DIR holds (made
    /// there on the first run, kept after), and write credentials files for admin, autoscaler,
    /// sys and each miner into DIR/creds. Each worker then gets a user of its own from
    /// `mesh-publisher creds`; no user needs a password in the server's environment. The
    /// system account is always there in this mode (--system-account is not needed).
    #[arg(long, value_name = "DIR", requires = "roles")]
    operator: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CredsArgs {
    /// The key directory of `init --roles FILE --operator DIR`.
    #[arg(long, value_name = "DIR", env = "MESH_OPERATOR_DIR")]
    operator: PathBuf,
    /// admin, autoscaler, miner-<id>, worker-<name> (e.g. worker-$(hostname)) or sys.
    #[arg(long)]
    user: String,
    /// Where to write the file (readable by its owner alone); `-` prints it.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// How long the credentials are valid, e.g. 90d; forever when left out.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<Duration>,
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
    #[command(flatten)]
    driving: DrivingArgs,
}

/// How a publisher drives its sectors.
#[derive(clap::Args)]
struct DrivingArgs {
    /// Deliveries after which a failing task is dead-lettered and its sector failed.
    #[arg(long, env = "MESH_MAX_ATTEMPTS", default_value_t = 5, value_parser = whole_number::<u32>("1 to 100"))]
    max_attempts: u32,
    /// How long the worker holding a sector's data (from PreCommit1 to Finalize) may be gone
    /// (no heartbeat, or draining) before the sector runs PreCommit1 again elsewhere.
    #[arg(long, env = "MESH_HOLDER_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    holder_grace: Duration,
    /// Publish even when every live worker reads only an older task message version (they
    /// leave such tasks for upgraded workers, at no attempt's cost; docs/upgrades.md).
    #[arg(long)]
    allow_newer: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(clap::Args)]
struct SealArgs {
    #[command(flatten)]
    miner: MinerArgs,
    /// Sector size: 2KiB, 8MiB, 512MiB, 32GiB or 64GiB.
    #[arg(long, default_value = "2KiB")]
    size: SectorSize,
    /// How many new sectors to create (at most 10000 per run).
    #[arg(long, default_value_t = 0, value_parser = whole_number::<u64>("0 to 10000"))]
    count: u64,
    /// A piece file to put in every new sector (repeatable); without any, sectors are
    /// committed-capacity (zeros).
    #[arg(long = "piece")]
    pieces: Vec<PathBuf>,
    /// SIMULATION: create synthetic sectors, run only by workers started with `--executor
    /// synthetic`; their proofs are fake and not verified. For chaos and load runs.
    #[arg(long)]
    synthetic: bool,
    /// Also continue every unfinished sector of the miner.
    #[arg(long)]
    resume: bool,
    /// Append one JSON line per sealed sector to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// How often to print progress.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    status_every: Duration,
    /// Stop each new sector after this phase (ap, pc1, pc2, c1 or c2) instead of sealing it,
    /// e.g. where Commit2's parameters are not at hand; such a sector is never sealed.
    #[arg(long, value_name = "PHASE")]
    until: Option<Phase>,
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
        Command::Init(args) => init(args).await,
        Command::Creds(args) => creds(args),
        Command::Seal(args) => seal(args).await,
        Command::Run(args) => {
            let shutdown = Shutdown::install();
            let driver = driver(&args).await?;
            let metrics = serve_metrics(&driver, &args.driving.metrics).await?;
            let ran = publisher::run(&driver, &shutdown.drain).await;
            stop_metrics(metrics).await;
            ran
        }
        Command::Sectors {
            nats,
            miner,
            failed,
            json,
        } => sectors(nats, miner, failed, json).await,
        Command::Status { nats, json } => status(nats, json).await,
        Command::Lotus(LotusCommand::Pledge { args, count }) => {
            if count > 1000 {
                anyhow::bail!("--count {count} is out of range: use 0 to 1000 per run");
            }
            lotus_seal(args, Some(count)).await
        }
        Command::Lotus(LotusCommand::Run(args)) => lotus_seal(args, None).await,
        Command::Lotus(LotusCommand::Check(args)) => {
            let check = publisher::lotus::Check::run(&args.connect()?).await?;
            println!("{check}");
            match check.problem() {
                None => Ok(()),
                Some(why) => Err(anyhow::anyhow!(
                    "the mesh cannot seal for this miner: {why}"
                )),
            }
        }
        Command::Gc {
            nats,
            store,
            miner,
            older_than,
            delete,
            json,
        } => gc(nats, store, miner, older_than, delete, json).await,
        Command::Remove {
            nats,
            store,
            miner,
            sectors,
        } => {
            let broker = nats.connect("mesh-publisher remove").await?;
            let store = store.open()?;
            let mut failed = 0;
            for sector in sectors {
                let key = mesh::names::sector_key(miner, mesh::model::SectorNum(sector));
                match publisher::gc::remove(&broker, &store, miner, mesh::model::SectorNum(sector))
                    .await
                {
                    Ok(r) => println!(
                        "sector {key} removed with {}",
                        publisher::gc::total(r.objects, r.bytes)
                    ),
                    Err(e) => {
                        eprintln!("sector {key} not removed: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} sector(s) not removed (see above)");
            }
            Ok(())
        }
        Command::Dlq(command) => dlq_command(command).await,
        Command::Workers { nats, json } => {
            let broker = nats.connect("mesh-publisher workers").await?;
            let workers = mesh::broker::workers::list(&broker).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&workers)?);
            } else {
                print!("{}", publisher::workers::render(&workers, mesh::now_ms()));
            }
            Ok(())
        }
        Command::Decode {
            nats,
            stream,
            seq,
            bucket,
            entry,
            kind,
        } => {
            use publisher::decode;
            let value = match (stream, seq, bucket, entry) {
                (Some(stream), Some(seq), _, _) => {
                    let broker = nats.connect("mesh-publisher decode").await?;
                    decode::from_stream(&broker, &stream, seq, kind).await?
                }
                (_, _, Some(bucket), Some(key)) => {
                    let broker = nats.connect("mesh-publisher decode").await?;
                    decode::from_bucket(&broker, &bucket, &key, kind).await?
                }
                _ => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                        .map_err(|e| anyhow::anyhow!("read the body from stdin: {e}"))?;
                    if bytes.is_empty() {
                        anyhow::bail!(
                            "nothing on stdin: pipe a body in, or pass --stream S --seq N or \
                             --bucket B --key K"
                        );
                    }
                    decode::from_bytes(&bytes, kind)?
                }
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Command::Jobs { nats, miner, json } => {
            let broker = nats.connect("mesh-publisher jobs").await?;
            let jobs = publisher::jobs::jobs(&broker, miner).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else if jobs.is_empty() {
                println!("no active sectors");
            } else {
                print!("{}", publisher::jobs::render(&jobs, mesh::now_ms()));
            }
            Ok(())
        }
        Command::Worker(WorkerCommand::Drain { nats, id, reason }) => {
            let broker = nats.connect("mesh-publisher worker drain").await?;
            println!(
                "{}",
                publisher::workers::drain(&broker, &id, &reason).await?
            );
            Ok(())
        }
        Command::Worker(WorkerCommand::Resume { nats, id }) => {
            let broker = nats.connect("mesh-publisher worker resume").await?;
            println!("{}", publisher::workers::resume(&broker, &id).await?);
            Ok(())
        }
        Command::Sector(SectorCommand::Abort {
            nats,
            store,
            miner,
            sector,
            reason,
        }) => {
            let broker = nats.connect("mesh-publisher sector abort").await?;
            let store = store.open()?;
            let sector = mesh::model::SectorNum(sector);
            let aborted = publisher::abort::abort(&broker, &store, miner, sector, &reason).await?;
            println!(
                "{miner}.{sector}: aborted in {}, failed with \"aborted by an operator: {reason}\"; \
                 {}; {} deleted",
                aborted.phase,
                if aborted.dropped {
                    "its task deleted from its stream (a worker running it stops within an ack \
                     wait)"
                } else {
                    "no task of it in its stream"
                },
                publisher::gc::total(aborted.removed.objects, aborted.removed.bytes)
            );
            Ok(())
        }
        Command::Miners(MinersCommand::List { nats, json }) => {
            let broker = nats.connect("mesh-publisher miners").await?;
            let rows = publisher::miners::rows(&broker).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", publisher::miners::render(&rows));
            }
            Ok(())
        }
        Command::Miners(MinersCommand::Weight {
            nats,
            miner,
            weight,
        }) => {
            let broker = nats.connect("mesh-publisher miners weight").await?;
            mesh::broker::miners::set_weight(&broker, miner, weight).await?;
            println!("{miner}: weight {weight}");
            Ok(())
        }
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
    if let (Some(file), Some(dir)) = (&args.roles, &args.operator) {
        return init_operator(file, dir, &args.miners);
    }
    if let Some(file) = args.roles {
        let text = mesh::broker::roles::server_config(&args.miners, args.system_account);
        if file.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(&file, text)
                .map_err(|e| anyhow::anyhow!("--roles {}: {e}", file.display()))?;
            eprintln!(
                "wrote the roles of admin, worker, autoscaler{} and {} miner(s) to {}; include \
                 it from the server's configuration and set each MESH_<USER>_PASSWORD in its \
                 environment",
                if args.system_account { ", sys" } else { "" },
                args.miners.len(),
                file.display()
            );
        }
        return Ok(());
    }
    if let Some(dir) = args.export {
        let files = topology
            .export(&dir)
            .map_err(|e| anyhow::anyhow!("--export {}: {e}", dir.display()))?;
        println!("wrote {} files to {}", files.len(), dir.display());
        return Ok(());
    }
    let broker = args.nats.connect("mesh-publisher init").await?;
    let made = topology.ensure(&broker, &args.miners).await?;
    for thing in &made {
        println!("ok  {thing}");
    }
    let moved = mesh::broker::miners::migrate_weights(&broker).await?;
    if moved > 0 {
        println!("ok  moved {moved} miner weight(s) to their weight.<miner> keys");
    }
    println!("topology ready on {}", broker.url());
    Ok(())
}

/// `init --roles FILE --operator DIR`: the server's trust in FILE, keys and the credentials of
/// every user but the workers in DIR.
fn init_operator(file: &Path, dir: &Path, miners: &[MinerId]) -> anyhow::Result<()> {
    use mesh::broker::operator::{Operator, User, write_secret};
    let (operator, made) = Operator::open(dir, true).map_err(anyhow::Error::msg)?;
    let text = operator.server_config(miners).map_err(anyhow::Error::msg)?;
    if file.as_os_str() == "-" {
        print!("{text}");
    } else {
        std::fs::write(file, text)
            .map_err(|e| anyhow::anyhow!("--roles {}: {e}", file.display()))?;
    }
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).map_err(|e| anyhow::anyhow!("{}: {e}", creds.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("{}: {e}", creds.display()))?;
    }
    let mut users = vec![
        "admin".to_string(),
        "autoscaler".into(),
        mesh::broker::roles::SYSTEM_USER.into(),
    ];
    users.extend(miners.iter().map(|m| format!("miner-{m}")));
    for name in &users {
        let user = User::parse(name).map_err(anyhow::Error::msg)?;
        let text = operator.creds(&user, None).map_err(anyhow::Error::msg)?;
        write_secret(&creds.join(format!("{name}.creds")), &text).map_err(anyhow::Error::msg)?;
    }
    eprintln!(
        "{} the operator's and accounts' keys in {}; wrote the server's trust to {} and the \
         credentials of {} to {}; give each worker its own with `mesh-publisher creds \
         --operator {} --user worker-<name> --out FILE`",
        if made { "made" } else { "kept" },
        dir.display(),
        if file.as_os_str() == "-" {
            "standard output".to_string()
        } else {
            file.display().to_string()
        },
        users.join(", "),
        creds.display(),
        dir.display()
    );
    Ok(())
}

/// `creds`: one user's credentials file, signed with the keys of an existing DIR.
fn creds(args: CredsArgs) -> anyhow::Result<()> {
    use mesh::broker::operator::{Operator, User, write_secret};
    let user = User::parse(&args.user).map_err(anyhow::Error::msg)?;
    let (operator, _) = Operator::open(&args.operator, false).map_err(anyhow::Error::msg)?;
    let expires = args.expires.map(|d| {
        (std::time::SystemTime::now() + d)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs())
    });
    let text = operator.creds(&user, expires).map_err(anyhow::Error::msg)?;
    if args.out.as_os_str() == "-" {
        print!("{text}");
    } else {
        write_secret(&args.out, &text).map_err(anyhow::Error::msg)?;
        eprintln!(
            "wrote the credentials of {} to {}: pass it as --nats-creds (MESH_NATS_CREDS)",
            user.name(),
            args.out.display()
        );
    }
    Ok(())
}

async fn driver(args: &MinerArgs) -> anyhow::Result<Driver> {
    open_driver(
        &args.nats,
        &args.store,
        PublisherConfig {
            miner: args.miner,
            runner: args.params.runner()?,
            max_attempts: args.driving.max_attempts,
            holder_grace: args.driving.holder_grace,
        },
        args.driving.allow_newer,
    )
    .await
}

async fn open_driver(
    nats: &NatsArgs,
    store: &StoreArgs,
    config: PublisherConfig,
    allow_newer: bool,
) -> anyhow::Result<Driver> {
    if config.max_attempts == 0 || config.max_attempts > 100 {
        anyhow::bail!(
            "--max-attempts {} is out of range: use 1 to 100",
            config.max_attempts
        );
    }
    let store = store.open()?;
    let broker = nats
        .connect(&format!("mesh-publisher {}", config.miner))
        .await?;
    // Under the miner's own prefix: a bucket policy may fence a publisher to it.
    store.check_under(&format!("{}/", config.miner)).await?;
    publisher::workers::check_readers(&broker, allow_newer).await?;
    Driver::new(broker, store, config, Arc::new(OsRandomness)).await
}

/// Serves the driver's metrics at `--metrics`, if given, labelled with its miner.
async fn serve_metrics(
    driver: &Driver,
    args: &MetricsArgs,
) -> anyhow::Result<Option<MetricsServer>> {
    let miner = driver.miner().to_string();
    let mut registry = mesh::metrics::registry(&[("miner", &miner)]);
    driver.metrics.register(&mut registry);
    args.serve(registry, driver.broker()).await
}

async fn stop_metrics(server: Option<MetricsServer>) {
    if let Some(server) = server {
        server.stop().await;
    }
}

/// `lotus pledge` (`count` new sectors, then waits for every unfinished lotus sector) and
/// `lotus run` (`None`: until SIGTERM).
async fn lotus_seal(args: LotusSealArgs, count: Option<u64>) -> anyhow::Result<()> {
    use mesh::publisher::lotus::{Check, Pledge, PledgeConfig, pledge::Outcome, serve};
    let shutdown = Shutdown::install();
    let lotus = args.lotus.connect()?;
    let check = Check::run(&lotus).await?;
    if let Some(why) = check.problem() {
        anyhow::bail!("the mesh cannot seal for this miner: {why}");
    }
    let config = PublisherConfig {
        miner: check.miner,
        runner: args.params.runner()?,
        max_attempts: args.driving.max_attempts,
        holder_grace: args.driving.holder_grace,
    };
    let driver =
        Arc::new(open_driver(&args.nats, &args.store, config, args.driving.allow_newer).await?);
    driver.check_size(check.size).await?;
    let metrics = serve_metrics(&driver, &args.driving.metrics).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "--listen {}: {e}; choose a free address lotus can reach",
                args.listen
            )
        })?;
    let advertise = match args.advertise {
        Some(url) => url,
        None => format!("http://{}", listener.local_addr()?).parse()?,
    };
    let pledge = Pledge::new(
        lotus,
        driver.clone(),
        PledgeConfig {
            size: check.size,
            advertise,
            poll: Duration::from_secs(2),
        },
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve::serve(driver.clone(), listener, stop.clone()));
    let driving = publisher::run(&driver, &stop);
    let inner = async {
        pledge.adopt().await?;
        let mut wait_for = std::collections::BTreeSet::new();
        if let Some(count) = count {
            wait_for.extend(pledge.create(count).await?);
            for record in driver.sectors().await? {
                if record.lotus.is_some()
                    && mesh::publisher::lotus::pledge::outcome(&record) == Outcome::Going
                {
                    wait_for.insert(record.sector);
                }
            }
            println!(
                "sealing {} sector(s) for {} ({}): {}",
                wait_for.len(),
                check.miner,
                check.size,
                wait_for
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        pledge.drive(&wait_for, &shutdown.drain).await
    };
    // Whatever ends the pledge (done, SIGTERM, an error) stops the driver and the listener.
    let work = async {
        let outcomes = inner.await;
        stop.cancel();
        outcomes
    };
    let (driven, outcomes) = tokio::join!(driving, work);
    let _ = server.await;
    stop_metrics(metrics).await;
    driven?;
    let outcomes = outcomes?;
    if count.is_none() {
        return Ok(());
    }
    if outcomes.is_empty() {
        anyhow::bail!(
            "stopped before lotus reported every sector done; `mesh-publisher lotus run` or \
             `lotus pledge --count 0` goes on with them"
        );
    }
    let mut failed = Vec::new();
    for (sector, outcome) in &outcomes {
        match outcome {
            Outcome::Done => println!("{}.{sector}: done", check.miner),
            Outcome::Failed(why) => {
                println!("{}.{sector}: {why}", check.miner);
                failed.push(format!("{sector} ({why})"));
            }
            Outcome::Going => {}
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} sector(s) not done: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

async fn seal(args: SealArgs) -> anyhow::Result<()> {
    if args.count == 0 && !args.resume {
        anyhow::bail!("nothing to do: pass --count N to create sectors, or --resume");
    }
    if !args.pieces.is_empty() && args.count == 0 {
        anyhow::bail!("--piece needs --count: pieces go into newly created sectors");
    }
    if args.count > 10_000 {
        anyhow::bail!(
            "--count {} is out of range: use 0 to 10000 per run",
            args.count
        );
    }
    if args.status_every < Duration::from_secs(1) {
        anyhow::bail!(
            "--status-every {} is too short: use 1s or more",
            humantime::format_duration(args.status_every)
        );
    }
    if args.until == Some(Phase::Finalize) {
        anyhow::bail!("--until fin is a whole seal: leave --until out");
    }
    if args.until.is_some() && args.count == 0 {
        anyhow::bail!("--until needs --count: it applies to newly created sectors");
    }
    let shutdown = Shutdown::install();
    let driver = driver(&args.miner).await?;
    let metrics = serve_metrics(&driver, &args.miner.driving.metrics).await?;
    let request = SealRequest {
        size: args.size,
        count: args.count,
        pieces: args.pieces,
        synthetic: args.synthetic,
        resume: args.resume,
        out: args.out,
        until: args.until,
        status_every: args.status_every,
    };
    let summary = publisher::seal(&driver, &request, &shutdown.drain).await;
    stop_metrics(metrics).await;
    let summary = summary?;
    let stopped = if summary.stopped.is_empty() {
        String::new()
    } else {
        format!(", {} stopped as asked", summary.stopped.len())
    };
    println!(
        "{} sealed{stopped}, {} failed in {:.1}s ({} late results dropped)",
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

async fn sectors(
    nats: NatsArgs,
    miner: Option<MinerId>,
    failed: bool,
    json: bool,
) -> anyhow::Result<()> {
    let broker = nats.connect("mesh-publisher sectors").await?;
    let mut records = publisher::status::sectors(&broker, miner).await?;
    if failed {
        records.retain(|r| matches!(r.state, SectorState::Failed { .. }));
        if !json {
            print!("{}", publisher::status::render_failed(&records));
            return Ok(());
        }
    }
    for rec in records {
        let (phase, reason) = match &rec.state {
            SectorState::Active { phase, .. } => (Some(phase.to_string()), String::new()),
            SectorState::Failed { phase, reason, .. } => (Some(phase.to_string()), reason.clone()),
            SectorState::Sealed { .. } => (None, String::new()),
            SectorState::Stopped { after, .. } => (Some(after.to_string()), String::new()),
        };
        if json {
            let (phases, store_bytes) = publisher::output::accounting(&rec);
            let line = serde_json::json!({
                "miner": rec.miner.to_string(),
                "sector": rec.sector.0,
                "size": rec.size.label(),
                "state": rec.state.label(),
                "phase": phase,
                "reason": reason,
                "phases_done": rec.history.len(),
                "holder": rec.data.holder.as_ref().map(|w| w.0.clone()),
                "phases": phases,
                "store_bytes": store_bytes,
                "lotus": rec.lotus.as_ref().map(|l| serde_json::json!({
                    "stage": rec.lotus_stage(),
                    "ticket_epoch": l.ticket_epoch,
                    "reservation": l.reservation,
                    "received": l.received,
                    "done": l.done.as_ref().map(|d| serde_json::json!({
                        "successful": d.successful,
                        "state": d.state,
                    })),
                })),
            });
            println!("{line}");
        } else {
            let lotus = rec
                .lotus_stage()
                .map_or(String::new(), |stage| format!("lotus: {stage} "));
            println!(
                "{}.{:<8} {:<7} {:<7} {lotus}{}",
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

async fn status(nats: NatsArgs, json: bool) -> anyhow::Result<()> {
    let broker = nats.connect("mesh-publisher status").await?;
    let status = publisher::status::status(&broker).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", publisher::status::render(&status));
    }
    Ok(())
}

async fn dlq_command(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { nats, json } => {
            let broker = nats.connect("mesh-publisher dlq list").await?;
            let letters = dlq::list(&broker).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                print!("{}", dlq::render(&letters));
            }
            Ok(())
        }
        DlqCommand::Retry { nats, store, which } => {
            let broker = nats.connect("mesh-publisher dlq retry").await?;
            let store = store.open()?;
            // Retrying only publishes tasks; this runner (for proof verification) never runs.
            let runner = ParamArgs {
                param_cache: mesh::proofs::params::DEFAULT_CACHE.into(),
                parent_cache: mesh::proofs::child::DEFAULT_PARENT_CACHE.into(),
            }
            .runner()?;
            let done = dlq::retry(&broker, &store, &runner, &which.selection()).await?;
            let mut miners = std::collections::BTreeSet::new();
            let mut refused = 0;
            for (id, outcome) in &done {
                println!("{}", outcome.describe(*id));
                match outcome {
                    dlq::Retry::Retried { miner, .. } => {
                        miners.insert(*miner);
                    }
                    dlq::Retry::Refused(_) => refused += 1,
                    dlq::Retry::Skipped(_) => {}
                }
            }
            for miner in miners {
                println!(
                    "a running `mesh-publisher seal` or `run` for {miner} drives its retried \
                     sectors on; if none runs, start `mesh-publisher run --miner {miner}`"
                );
            }
            if done.is_empty() {
                println!("no dead letters to retry");
            }
            if refused > 0 {
                anyhow::bail!(
                    "{refused} of {} dead letters could not be retried (see above)",
                    done.len()
                );
            }
            Ok(())
        }
        DlqCommand::Drop { nats, which } => {
            let broker = nats.connect("mesh-publisher dlq drop").await?;
            let removed = dlq::drop_letters(&broker, &which.selection()).await?;
            for id in &removed {
                println!("dead letter {id} removed");
            }
            if removed.is_empty() {
                println!("no dead letters to remove");
            }
            Ok(())
        }
    }
}

/// `gc`: lists (and with `delete` removes) the objects no sector record refers to.
async fn gc(
    nats: NatsArgs,
    store: StoreArgs,
    miner: Option<MinerId>,
    older_than: Duration,
    delete: bool,
    json: bool,
) -> anyhow::Result<()> {
    let broker = nats.connect("mesh-publisher gc").await?;
    let store = store.open()?;
    let garbage = publisher::gc::find(&broker, &store, miner, older_than).await?;
    let bytes = garbage.iter().map(|g| g.size).sum();
    if json {
        for g in &garbage {
            println!("{}", serde_json::to_string(g)?);
        }
    } else if !garbage.is_empty() {
        print!("{}", publisher::gc::render(&garbage));
    }
    let what = publisher::gc::total(garbage.len(), bytes);
    let age = humantime::format_duration(older_than);
    if garbage.is_empty() {
        eprintln!("no object older than {age} lacks a sector record referring to it");
    } else if delete {
        let removed = publisher::gc::delete(&store, &garbage).await?;
        eprintln!(
            "deleted {}",
            publisher::gc::total(removed.objects, removed.bytes)
        );
    } else {
        eprintln!("{what} no sector record refers to; run again with --delete to remove them");
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
