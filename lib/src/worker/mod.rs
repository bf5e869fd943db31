//! The stateless worker: takes a task whenever its needs (lotus's resource table) fit what
//! running tasks leave, from the highest-priority task stream it serves and the miner with the
//! lowest weighted share of the pool there; runs each in an attempt of its own, heartbeats into
//! the worker registry, and drains on shutdown.

mod artefacts;
mod attempt;
mod bells;
pub mod config;
pub mod holdings;
pub mod info;
pub mod metrics;
pub mod pick;
pub mod registry;
pub mod scratch;
mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::deferred;
use crate::broker::miners::Weights;
use crate::broker::workers::WorkerRecord;
use crate::broker::{Broker, topology};
use crate::model::{Need, SectorSize, WorkerId};
use crate::names;
use crate::phases::{self, Phase};
use crate::proofs::child::{ChildRunner, Pin};
use crate::proofs::job::{Job, JobFailure, JobOutput};
use crate::proofs::synthetic::Synthetic;
use crate::resources::{self, Claim, Ledger, Machine, Placement, Refusal, Table, Usage};
use crate::store::Store;
use crate::units::human_bytes;
use bells::{Bells, Polls, Rung};
use holdings::Holdings;
use registry::Registry;
use scratch::ScratchRoot;
use sources::{HeldSource, Source};

/// What runs a task's proof job.
#[derive(Debug, Clone)]
pub enum Executor {
    /// Real proofs, each in a child process (the default).
    Proofs(ChildRunner),
    /// SIMULATION: sleeps and fake outputs of the right shape; runs only synthetic sectors.
    Synthetic(Synthetic),
}

impl Executor {
    pub fn is_synthetic(&self) -> bool {
        matches!(self, Executor::Synthetic(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Executor::Proofs(_) => "proofs",
            Executor::Synthetic(_) => "synthetic",
        }
    }

    /// Runs a phase's job: in a proof child process (its files in `dir`), or simulated.
    async fn run(
        &self,
        job: &phases::Job,
        dir: &std::path::Path,
        pin: &Pin,
        abort: &CancellationToken,
    ) -> Result<phases::Output, JobFailure> {
        match self {
            Executor::Proofs(runner) => {
                match runner
                    .run(&Job::Phase(job.clone()), dir, pin, abort)
                    .await?
                {
                    JobOutput::Phase(output) => Ok(output),
                    other => Err(JobFailure::retryable(format!(
                        "the proof process answered a {} job with {other:?}",
                        job.phase()
                    ))),
                }
            }
            Executor::Synthetic(synthetic) => synthetic.run(job, abort).await,
        }
    }
}

/// Everything a worker needs besides its connections.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: WorkerId,
    pub phases: Vec<Phase>,
    pub sizes: Vec<SectorSize>,
    /// At most this many tasks at once; `None`: as many as fit by the resource table.
    pub slots: Option<u32>,
    /// Base directory for scratch space.
    pub scratch: PathBuf,
    pub executor: Executor,
    /// How often an idle worker looks for tasks when no bell woke it (redeliveries and delayed
    /// naks ring none), in a pool of up to 25 workers; a larger pool spreads its polls
    /// (see `bells::Polls`).
    pub poll_interval: Duration,
    /// First retry delay after a retryable failure; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Tries for publishing a result or dead letter before giving the task back.
    pub publish_attempts: u32,
    /// How often the registry record is written; `None`: a third of the registry's TTL (the
    /// `mesh-workers` bucket's max age, which `init` sets).
    pub heartbeat: Option<Duration>,
    /// The machine as detected, with what the operator declared in its place.
    pub machine: Machine,
    /// The GPUs were declared (`--gpus`), not detected.
    pub gpus_declared: bool,
    /// What each phase and size needs (lotus's table with the operator's overrides).
    pub table: Table,
    /// How long a running task waits out an unreachable store before giving the task back.
    pub store_patience: Duration,
    /// Scratch bytes this worker may fill; tasks are pulled only while their need fits in
    /// what running tasks leave (see [`Phase::scratch`]).
    pub scratch_limit: u64,
    /// Keep the data of sectors whose PreCommit1 runs here until their Finalize (and run their
    /// PreCommit2, Commit1 and Finalize here), rather than send it through the store.
    pub hold_sectors: bool,
    /// On a worker holding sectors, also send each held sector's PreCommit1 and PreCommit2
    /// data to the store (layers, trees, replica), so that the sector goes on from there,
    /// not from PreCommit1, if this worker is lost.
    pub back_up_held: bool,
    /// How long a drain waits for running tasks before it hands them back (as a second signal
    /// does); `None`: as long as they take.
    pub drain_timeout: Option<Duration>,
    /// Where the worker counts what it does (served when `mesh-worker run --metrics` registers
    /// it).
    pub metrics: metrics::Metrics,
}

/// A worker's id unless the operator gives one: the host and a hash of the scratch path, so
/// that a restarted worker keeps its id, and with it the sectors it holds (`holdings`).
fn default_id(host: &str, scratch: &std::path::Path) -> WorkerId {
    use sha2::Digest;
    let path = std::path::absolute(scratch).unwrap_or_else(|_| scratch.to_path_buf());
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let mut host = resources::safe_name(host);
    host.truncate(48);
    WorkerId(format!("{host}-{}", &hex::encode(digest)[..8]))
}

/// One phase and size a worker serves, and whether its tasks can run here.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Serving {
    pub phase: Phase,
    pub size: SectorSize,
    pub need: Need,
    pub claim: Claim,
    /// Why its tasks never fit this worker, even idle; `None` when they do.
    #[serde(serialize_with = "refusal_text")]
    pub refusal: Option<Refusal>,
    /// How many fit at once on the idle worker; `None` for more than [`AT_ONCE_SHOWN`].
    pub at_once: Option<u32>,
    /// The threads its proof is capped to (rayon's and ec-gpu's pools), when it reserves fewer
    /// than the machine has; `None`: it may use every core.
    pub thread_cap: Option<u32>,
    /// Whether its proof is pinned to CPUs of its own (the worker knows its CPUs).
    pub pinned: bool,
}

/// The largest "at once" count [`WorkerConfig::plan`] counts up to.
pub const AT_ONCE_SHOWN: u32 = 1000;

fn refusal_text<S: serde::Serializer>(r: &Option<Refusal>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_some(&r.to_string()),
        None => s.serialize_none(),
    }
}

impl WorkerConfig {
    /// A config with the defaults for everything but identity and what to serve.
    pub fn new(executor: Executor, scratch: PathBuf) -> Self {
        let machine = resources::detect();
        let id = default_id(&machine.host, &scratch);
        WorkerConfig {
            id,
            phases: Phase::ALL.to_vec(),
            sizes: vec![SectorSize::KiB2],
            slots: None,
            scratch,
            executor,
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            publish_attempts: 20,
            heartbeat: None,
            machine,
            table: Table::lotus(),
            store_patience: Duration::from_secs(30 * 60),
            scratch_limit: u64::MAX,
            hold_sectors: true,
            back_up_held: false,
            gpus_declared: false,
            drain_timeout: None,
            metrics: metrics::Metrics::default(),
        }
    }

    /// A worker that runs real proofs in a build without GPU support proves on the CPU: the
    /// GPUs it found are left out of the resource checks (which would reserve a GPU and a few
    /// threads for a PreCommit2 or Commit2 that uses every core), with a warning to show.
    /// GPUs the operator declared (`--gpus N`) are kept as declared, with a warning too.
    pub fn prove_on_cpu(&mut self) -> Option<String> {
        if crate::proofs::GPU_BUILD || self.machine.gpus.is_empty() {
            return None;
        }
        if self.gpus_declared {
            return Some(format!(
                "this build has no GPU support (build with scripts/build-gpu.sh): PreCommit2 and \
                 Commit2 run on the CPU, yet each reserves one of the {} declared GPU(s) as if \
                 it ran there",
                self.machine.gpus.len()
            ));
        }
        self.machine.gpu_ids.clear();
        let gpus = std::mem::take(&mut self.machine.gpus);
        Some(format!(
            "this build has no GPU support (build with scripts/build-gpu.sh): PreCommit2 and \
             Commit2 run on the CPU and reserve CPU threads by the resource table; the {} GPU(s) \
             found ({}) are not used",
            gpus.len(),
            gpus.join(", ")
        ))
    }

    /// Pins each proof that reserves fewer threads than the machine has to CPUs of its own
    /// (`--pin-cpus`), for a worker that has the machine (or a CPU set given to it) to itself:
    /// workers sharing CPUs would each pin theirs to the same ones.
    /// Not when the CPU count was declared (or a cgroup quota is below the affinity mask).
    pub fn pin_cpus(&mut self) {
        let detected = resources::cores::allowed();
        if detected.len() == self.machine.cpu_threads as usize {
            self.machine.cpu_ids = detected;
        }
    }

    pub fn retry_delay(&self, delivered: u32) -> Duration {
        let factor = 2u32.saturating_pow(delivered.saturating_sub(1).min(16));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }

    /// The empty ledger of this worker.
    pub fn ledger(&self) -> Ledger {
        Ledger::new(&self.machine, self.slots, self.scratch_limit)
    }

    /// Every phase and size this worker serves, highest lotus priority first, with what its
    /// tasks need here and whether they fit.
    pub fn plan(&self) -> Vec<Serving> {
        let empty = self.ledger();
        let mut out = Vec::new();
        for phase in Phase::by_priority() {
            if !self.phases.contains(&phase) {
                continue;
            }
            for &size in &self.sizes {
                let need = self.table.get(phase, size);
                let claim = Claim::new(&need, &self.machine, phase.scratch(size));
                let kind = (phase, size);
                let refusal = empty.ever_fits(kind, &claim).err();
                let mut ledger = empty.clone();
                let mut at_once = 0;
                while at_once <= AT_ONCE_SHOWN && ledger.check(kind, &claim).is_ok() {
                    ledger.take(kind, &claim);
                    at_once += 1;
                }
                let thread_cap = Pin {
                    threads: claim.threads,
                    machine_threads: self.machine.cpu_threads,
                    ..Pin::default()
                }
                .cap();
                out.push(Serving {
                    phase,
                    size,
                    need,
                    claim,
                    refusal,
                    at_once: (at_once <= AT_ONCE_SHOWN).then_some(at_once),
                    thread_cap,
                    pinned: thread_cap.is_some() && !self.machine.cpu_ids.is_empty(),
                });
            }
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("--phases is empty: name at least one of ap, pc1, pc2, c1, c2, fin".into());
        }
        if self.sizes.is_empty() {
            return Err("--sizes is empty: name at least one sector size, e.g. 2KiB".into());
        }
        if let Some(slots) = self.slots
            && !(1..=1024).contains(&slots)
        {
            return Err(format!("--slots {slots} is out of range: use 1 to 1024"));
        }
        fn first_repeat<T: PartialEq>(items: &[T]) -> Option<&T> {
            (1..items.len())
                .find(|&i| items[..i].contains(&items[i]))
                .map(|i| &items[i])
        }
        if let Some(phase) = first_repeat(&self.phases) {
            return Err(format!(
                "--phases names {phase} twice: name each phase once"
            ));
        }
        if let Some(size) = first_repeat(&self.sizes) {
            return Err(format!("--sizes names {size} twice: name each size once"));
        }
        let range = |flag: &str, value: Duration, min: Duration, max: Duration| {
            if (min..=max).contains(&value) {
                return Ok(());
            }
            let f = humantime::format_duration;
            Err(format!(
                "{flag} {} is out of range: use {} to {}",
                f(value),
                f(min),
                f(max)
            ))
        };
        // Below 100ms idle workers flood the server; above a minute redeliveries wait too long.
        let ms = Duration::from_millis;
        range("--poll-interval", self.poll_interval, ms(100), ms(60_000))?;
        range("--retry-delay", self.retry_base, ms(100), self.retry_max)?;
        let day = Duration::from_secs(24 * 3600);
        range("--store-patience", self.store_patience, Duration::ZERO, day)?;
        let smallest_need = self
            .phases
            .iter()
            .flat_map(|&p| self.sizes.iter().map(move |&s| p.scratch(s)))
            .min()
            .unwrap_or(0);
        if smallest_need > self.scratch_limit {
            return Err(format!(
                "the scratch limit ({}) fits no task this worker serves: the smallest need is {}; \
                 give it more scratch space (--scratch-limit, or free space under {})",
                human_bytes(self.scratch_limit),
                human_bytes(smallest_need),
                self.scratch.display()
            ));
        }
        let plan = self.plan();
        if plan.iter().all(|s| s.refusal.is_some()) {
            let why: Vec<String> = plan
                .iter()
                .map(|s| {
                    format!(
                        "{} {}: {}",
                        s.phase,
                        s.size,
                        s.refusal.as_ref().expect("all refused")
                    )
                })
                .collect();
            return Err(format!(
                "this worker can run none of the tasks it serves ({}); give it the resources \
                 (or declare them: --cpus, --memory, --gpus), change the resource table, or \
                 serve other phases or sizes (`mesh-worker info` shows the details)",
                why.join("; ")
            ));
        }
        Ok(())
    }
}

/// What attempts share.
struct Ctx {
    /// The sectors this worker holds, and the sizes whose sectors it keeps after PreCommit1.
    holdings: Holdings,
    holds: BTreeSet<SectorSize>,
    /// What running tasks and held sectors claim, and a bell for when some is given back.
    ledger: Arc<Mutex<Ledger>>,
    room: Arc<Notify>,
    broker: Broker,
    store: Store,
    /// Sector state, read to skip tasks whose sector has moved on.
    sectors: async_nats::jetstream::kv::Store,
    /// Tasks left for another worker, counted so that they cost no attempt (`broker::deferred`).
    deferred: crate::broker::keys::Keys,
    config: WorkerConfig,
    registry: Registry,
    scratch: ScratchRoot,
    progress_every: Duration,
}

/// Cancels `drain` once this process's parent, `parent`, has exited (this process is then
/// adopted by another). A check each second, rather than a parent-death signal: Linux sends
/// that when the parent's forking thread exits, not the process.
pub fn drain_with_parent(parent: u32, drain: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = drain.cancelled() => return,
            }
            if std::os::unix::process::parent_id() != parent {
                warn!(parent, "the parent process is gone: draining");
                drain.cancel();
                return;
            }
        }
    });
}

/// Runs the worker until `drain` is cancelled (stop pulling, finish running tasks, return) or
/// `abort` is cancelled (kill running proofs and hand their tasks back at once).
pub async fn run(
    config: WorkerConfig,
    broker: Broker,
    store: Store,
    drain: CancellationToken,
    abort: CancellationToken,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    topology::check(&broker, &config.phases, &config.sizes).await?;
    store.check().await?;

    // Highest lotus priority first; then the sizes in the order given.
    let mut sources = Vec::new();
    let mut ack_wait = Duration::from_secs(30);
    for serving in config.plan() {
        let (phase, size) = (serving.phase, serving.size);
        if let Some(refusal) = &serving.refusal {
            warn!(%phase, %size, %refusal, "this worker will not take these tasks");
            continue;
        }
        let source = Source::open(&broker, phase, size, serving.claim).await?;
        if let Some(wait) = source.ack_wait() {
            ack_wait = ack_wait.min(wait);
        }
        sources.push(source);
    }
    let progress_every = (ack_wait / 4).max(Duration::from_millis(250));
    // The sizes whose sectors stay here after PreCommit1: those of which this worker runs
    // every phase that needs the sector's data. Their later phases then claim no new disk.
    let plan = config.plan();
    let runs = |phase: Phase, size: SectorSize| {
        plan.iter()
            .any(|s| (s.phase, s.size) == (phase, size) && s.refusal.is_none())
    };
    let holds: BTreeSet<SectorSize> = config
        .sizes
        .iter()
        .copied()
        .filter(|_| config.hold_sectors)
        .filter(|&size| Phase::ALL.iter().all(|&p| !p.held() || runs(p, size)))
        .collect();
    let held_claims: BTreeMap<(Phase, SectorSize), Claim> = plan
        .iter()
        .filter(|s| s.phase.held() && s.phase != Phase::PreCommit1)
        .map(|s| {
            let claim = Claim {
                scratch: phases::ATTEMPT_OVERHEAD,
                ..s.claim
            };
            ((s.phase, s.size), claim)
        })
        .collect();
    let mut held_source = if holds.is_empty() {
        None
    } else {
        Some(HeldSource::open(&broker, &config.id).await?)
    };

    let mut bells = Bells::open(
        broker.client().clone(),
        sources
            .iter()
            .map(|s| names::bell(s.phase, s.size))
            .collect(),
        held_source.as_ref().map(|_| &config.id),
    )
    .await?;
    let mut polls = Polls::new(config.poll_interval);

    let scratch = ScratchRoot::create(&config.scratch, &config.id.0, &config.machine.host)
        .map_err(|e| {
            anyhow::anyhow!(
                "--scratch {}: cannot set up this worker's directory there ({e}); pass a \
                 directory this user can write",
                config.scratch.display()
            )
        })?;
    let holdings = Holdings::open(scratch.path()).map_err(|e| {
        anyhow::anyhow!(
            "--scratch {}: cannot read the sectors this worker holds there ({e})",
            config.scratch.display()
        )
    })?;
    let registry = Registry::new(WorkerRecord {
        id: config.id.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        message_version: crate::sector::message_version(),
        machine: config.machine.clone(),
        phases: config.phases.clone(),
        sizes: config.sizes.clone(),
        slots: config.slots,
        executor: config.executor.name().to_string(),
        usage: Usage::default(),
        running: Vec::new(),
        draining: false,
        started_ms: crate::now_ms(),
        heartbeat_ms: 0,
    });
    let background = CancellationToken::new();
    let heartbeat = tokio::spawn(registry.clone().heartbeat(
        broker.bucket(names::WORKERS_BUCKET).await?,
        config.heartbeat,
        background.clone(),
    ));
    let weights = Weights::default();
    let follow = tokio::spawn(weights.clone().follow(
        broker.bucket(names::MINERS_BUCKET).await?,
        background.clone(),
    ));
    // The autoscaler's drain mark: held, the worker takes nothing until it is lifted.
    let drain_marks = broker.bucket(names::DRAIN_BUCKET).await?;
    let marked = matches!(drain_marks.get(&config.id.0).await, Ok(Some(_)));
    let (held_tx, mut held) = tokio::sync::watch::channel(marked);
    let follow_drain = tokio::spawn(crate::broker::drain::follow(
        drain_marks,
        config.id.0.clone(),
        held_tx,
        background.clone(),
    ));

    info!(
        worker = %config.id,
        phases = ?config.phases.iter().map(|p| p.token()).collect::<Vec<_>>(),
        sizes = ?config.sizes.iter().map(|s| s.label()).collect::<Vec<_>>(),
        cpus = config.machine.cpu_threads,
        memory = %human_bytes(config.machine.memory_bytes),
        gpus = config.machine.gpus.len(),
        slots = %config.slots.map_or("no limit".to_string(), |n| n.to_string()),
        scratch_limit = %human_bytes(config.scratch_limit),
        executor = %match &config.executor {
            Executor::Proofs(_) => "proofs".to_string(),
            Executor::Synthetic(s) => format!("SYNTHETIC (simulation: {})", s.describe()),
        },
        store = %store.name(),
        ?ack_wait,
        "worker started"
    );
    // What running tasks hold, and a bell for when some of it is given back.
    let ledger = Arc::new(Mutex::new(config.ledger()));
    ledger
        .lock()
        .expect("ledger lock")
        .keep(holdings.kept_bytes());
    config.metrics.watch(ledger.clone());
    config.metrics.serving(
        config
            .plan()
            .iter()
            .filter(|s| s.refusal.is_none())
            .map(|s| (s.phase, s.size)),
    );
    let room = Arc::new(Notify::new());
    let ctx = Arc::new(Ctx {
        holdings,
        holds,
        ledger: ledger.clone(),
        room: room.clone(),
        sectors: broker.bucket(names::SECTORS_BUCKET).await?,
        deferred: {
            // Opened with its info, so that a mesh whose `init` predates it is told to run it.
            broker.bucket(names::DEFERRED_BUCKET).await?;
            broker.keys(names::DEFERRED_BUCKET).await?
        },
        broker,
        store,
        config,
        registry: registry.clone(),
        scratch,
        progress_every,
    });
    let tracker = TaskTracker::new();
    let let_go = tokio::spawn(let_go_loop(ctx.clone(), background.clone()));

    // Each turn takes at most one task: from the highest-priority stream whose tasks fit what
    // running tasks leave, from the miner with the lowest weighted share there.
    let mut probe = true;
    // Sources not asked until then: the last task taken from each was newer than this worker.
    let mut paused: BTreeMap<usize, Instant> = BTreeMap::new();
    'pull: while !drain.is_cancelled() {
        if *held.borrow_and_update() {
            registry.set_draining(true);
            bells.hear(&[]).await;
            info!(
                running = tracker.len(),
                "drain mark set: no new tasks until it is lifted"
            );
            tokio::select! {
                _ = held.wait_for(|held| !held) => {}
                () = drain.cancelled() => break 'pull,
            }
            registry.set_draining(false);
            info!("drain mark lifted: taking tasks again");
            probe = true;
            continue 'pull;
        }
        // What fits now: the held sectors' tasks, and of the streams not paused those that fit
        // (`fitting`) and those that would run at once (`now`).
        paused.retain(|_, until| *until > Instant::now());
        let (held_fits, fitting, now): (bool, Vec<usize>, Vec<usize>) = {
            let ledger = ledger.lock().expect("ledger lock");
            let held_fits = held_claims
                .iter()
                .all(|(&kind, claim)| ledger.check(kind, claim).is_ok());
            let fitting: Vec<usize> = (0..sources.len())
                .filter(|i| !paused.contains_key(i))
                .filter(|&i| ledger.check(sources[i].kind(), &sources[i].claim).is_ok())
                .collect();
            let now = fitting
                .iter()
                .copied()
                .filter(|&i| ledger.runs_now(&sources[i].claim))
                .collect();
            (held_fits, fitting, now)
        };
        // The sectors held here go first: their data waits on this worker's disk. A held task
        // is fetched only when any of them fits (a nak would count as a delivery); while one
        // waits and none fits, no other task is taken.
        if let Some(held) = held_source.as_mut().filter(|_| !ctx.holdings.is_empty()) {
            if held_fits {
                if let Some((msg, phase, size)) = held.take().await {
                    let kind = (phase, size);
                    let Some(msg) = leave_newer(&ctx, &tracker, msg, kind) else {
                        continue 'pull;
                    };
                    let claim = held_claims.get(&kind).copied().unwrap_or_else(|| {
                        let need = ctx.config.table.get(phase, size);
                        Claim::new(&need, &ctx.config.machine, phases::ATTEMPT_OVERHEAD)
                    });
                    launch(&ctx, &tracker, &abort, msg, kind, claim);
                    continue 'pull;
                }
            } else if !fitting.is_empty() && held.waiting().await > 0 {
                // (While no other task fits either, the look below waits for room anyway: a
                // full worker does not ask the held consumer at every turn.)
                debug!("a held sector's task waits for room");
                bells.hear(&[]).await;
                tokio::select! {
                    () = room.notified() => {}
                    () = tokio::time::sleep(ctx.config.poll_interval) => {}
                    () = drain.cancelled() => break 'pull,
                }
                continue 'pull;
            }
        }
        // Tasks that would run at once are taken whenever one waits. GPU tasks that would wait
        // in the preparing window for a running one (a second Commit2 fetching its input while
        // the first proves) only when a poll finds them: an idle worker answers the bell
        // first and runs them now. Of the workers with room for a stream's tasks now, one
        // hears each of its bells.
        bells.hear(&now).await;
        if fitting.is_empty() {
            let unpaused = paused.values().min().copied();
            tokio::select! {
                () = room.notified() => continue 'pull,
                () = async {
                    match unpaused {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => continue 'pull,
                _ = held.changed() => continue 'pull,
                () = drain.cancelled() => break 'pull,
            }
        }
        // Bells rung before this look are answered by it.
        bells.clear();
        let mut taken = take(
            &mut sources,
            if probe { &fitting } else { &now },
            &weights,
            probe,
        )
        .await;
        probe = false;
        if taken.is_none() {
            let poll = polls.next(&ctx.broker).await;
            tokio::select! {
                rung = bells.rung() => {
                    // The held sectors' bell: their tasks are looked at first, above.
                    let Rung::Stream(i, named) = rung else { continue 'pull };
                    // A task of the stream that rang: one of a stream of higher priority
                    // that waited would have been taken by the look before, and one that came
                    // since rings its own bell. A bell that names the task's miner and class
                    // is answered by a fetch from that consumer alone (an idle worker's look
                    // found nothing waiting, so there is no share to weigh); failing that, by
                    // a look at the stream. The bell can ring a moment before the stream has
                    // stored the task.
                    if let Some((miner, class)) = named {
                        taken = sources[i].take_named(miner, class).await.map(|m| (m, i));
                    }
                    for delay_ms in [0, 10, 40, 150] {
                        if taken.is_some() {
                            break;
                        }
                        if delay_ms > 0 {
                            // A timer, even of zero, waits for the runtime's next tick (1 ms).
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        }
                        taken = take(&mut sources, &[i], &weights, false).await;
                    }
                }
                () = room.notified() => {}
                _ = held.changed() => {}
                () = tokio::time::sleep(poll) => probe = true,
                () = drain.cancelled() => break 'pull,
            }
        }
        let Some((taken, i)) = taken else {
            continue;
        };
        let Some(taken) = leave_newer(&ctx, &tracker, taken, sources[i].kind()) else {
            warn!(
                phase = %sources[i].phase,
                size = %sources[i].size,
                pause = ?deferred::DEFER_PAUSE,
                "not taking tasks of this phase and size for a while: the last one was newer \
                 than this worker reads (upgrade it)"
            );
            paused.insert(i, Instant::now() + deferred::DEFER_PAUSE);
            continue;
        };
        launch(
            &ctx,
            &tracker,
            &abort,
            taken,
            sources[i].kind(),
            sources[i].claim,
        );
    }

    registry.set_draining(true);
    // A draining worker takes nothing: its share of the bells goes to the others.
    bells.hear(&[]).await;
    drop(bells);
    let running = tracker.len();
    if running > 0 {
        info!(
            running,
            "draining: no new tasks; waiting for running tasks to finish"
        );
    }
    tracker.close();
    match ctx.config.drain_timeout {
        Some(limit) if running > 0 => {
            if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
                warn!(
                    running = tracker.len(),
                    drain_timeout = %humantime::format_duration(limit),
                    "the drain timeout passed: handing running tasks back"
                );
                abort.cancel();
                tracker.wait().await;
            }
        }
        _ => tracker.wait().await,
    }
    background.cancel();
    let _ = heartbeat.await;
    let _ = follow.await;
    let _ = follow_drain.await;
    let _ = let_go.await;
    ctx.scratch.remove();
    info!("worker stopped");
    Ok(())
}

/// A taken task's claim: preparing (memory, scratch and a slot held; threads and GPU in the
/// preparing window) until [`Claimed::start`], then running.
pub(crate) struct Claimed {
    kind: (Phase, SectorSize),
    claim: Claim,
    /// Where the task runs (its CPUs and GPUs), once it started.
    started: Mutex<Option<Placement>>,
}

impl Claimed {
    /// Waits until the task's threads and GPU are free on the machine and takes them: where
    /// it runs (the CPUs to pin its proof to, the GPUs it was given), or `None` when aborted
    /// first.
    async fn start(&self, ctx: &Ctx, abort: &CancellationToken) -> Option<Placement> {
        let mut logged = false;
        loop {
            let room = ctx.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(placement) = ctx.ledger.lock().expect("ledger lock").start(&self.claim) {
                *self.started.lock().expect("claim lock") = Some(placement.clone());
                return Some(placement);
            }
            if !logged {
                info!("inputs ready; waiting for threads or a GPU that running tasks hold");
                logged = true;
            }
            tokio::select! {
                () = room => {}
                () = abort.cancelled() => return None,
            }
        }
    }
}

/// CPUs as `0,1,5`, or `any` for an unpinned task.
fn cpu_list(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        return "any".into();
    }
    resources::cores::list(cpus)
}

/// Wakes whatever waits for resources given back: tasks waiting to start, and the pull loop.
fn ring_room(ctx: &Ctx) {
    ctx.room.notify_waiters();
    ctx.room.notify_one();
}

/// Gives back `msg` when its task is for this worker; leaves it for a newer worker (not run,
/// no attempt counted: `broker::deferred`) when its message version is newer than this worker
/// reads.
fn leave_newer(
    ctx: &Arc<Ctx>,
    tracker: &TaskTracker,
    msg: async_nats::jetstream::Message,
    (phase, size): (Phase, SectorSize),
) -> Option<async_nats::jetstream::Message> {
    let Some(version) = crate::sector::newer_version(&msg.payload) else {
        return Some(msg);
    };
    ctx.config.metrics.handed_back(phase, size);
    let reason = format!(
        "message version {version} is newer than this worker reads ({})",
        crate::sector::message_version()
    );
    warn!(
        subject = %msg.subject,
        %reason,
        retry_in = ?deferred::DEFER_DELAY,
        "task left for an upgraded worker; it costs no attempt"
    );
    let ctx = ctx.clone();
    tracker.spawn(async move {
        deferred::leave(&ctx.deferred, &msg, &ctx.config.id, &reason).await;
    });
    None
}

/// Claims what a taken task needs and runs it in an attempt of its own, giving the claim back
/// when it ends.
fn launch(
    ctx: &Arc<Ctx>,
    tracker: &TaskTracker,
    abort: &CancellationToken,
    msg: async_nats::jetstream::Message,
    kind: (Phase, SectorSize),
    claim: Claim,
) {
    let usage = {
        let mut ledger = ctx.ledger.lock().expect("ledger lock");
        ledger.take(kind, &claim);
        ledger.usage()
    };
    ctx.registry.hold(usage);
    let ctx = ctx.clone();
    let abort = abort.clone();
    tracker.spawn(async move {
        let claimed = Claimed {
            kind,
            claim,
            started: Mutex::new(None),
        };
        attempt::run(ctx.clone(), msg, kind.0, kind.1, &claimed, abort).await;
        let started = claimed.started.lock().expect("claim lock").take();
        let usage = {
            let mut ledger = ctx.ledger.lock().expect("ledger lock");
            ledger.give_back(claimed.kind, &claimed.claim, started.as_ref());
            ledger.usage()
        };
        ctx.registry.set_usage(usage);
        ring_room(&ctx);
    });
}

/// How often a worker asks whether the sectors it holds are still its own.
const LET_GO_EVERY: Duration = Duration::from_secs(30);

/// Lets go of held sectors the mesh has moved on from (finished, or relocated to another
/// worker while this one was away): at start, then every [`LET_GO_EVERY`].
async fn let_go_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        for (miner, sector, held) in ctx.holdings.list() {
            let key = names::sector_key(miner, sector);
            let record = match ctx.sectors.get(&key).await {
                Ok(Some(entry)) => match crate::model::decode(&entry) {
                    Ok(record) => Some(record),
                    Err(_) => continue,
                },
                Ok(None) => None,
                Err(_) => continue,
            };
            if let Some(why) = holdings::stale(&ctx.config.id, &held, record.as_ref()) {
                info!(sector = %key, %why, "letting go of a held sector");
                let freed = ctx.holdings.free(miner, sector);
                let usage = {
                    let mut ledger = ctx.ledger.lock().expect("ledger lock");
                    ledger.unkeep(freed);
                    ledger.usage()
                };
                ctx.registry.set_usage(usage);
                ring_room(&ctx);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LET_GO_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Asks the fitting sources, in priority order, for one task each until one gives one. Their
/// streams are read all at once: a look costs one round trip to the server, not one per stream
/// (after a task ends, the look that follows is on the path from one task to the next).
async fn take(
    sources: &mut [Source],
    fitting: &[usize],
    weights: &Weights,
    probe: bool,
) -> Option<(async_nats::jetstream::Message, usize)> {
    let counted = {
        let sources = &*sources;
        futures::future::join_all(fitting.iter().map(|&i| sources[i].counts())).await
    };
    for (&i, counts) in fitting.iter().zip(counted) {
        if let Some(taken) = sources[i].take(counts, weights, probe).await {
            return Some((taken, i));
        }
    }
    None
}
