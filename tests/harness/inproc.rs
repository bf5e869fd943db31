//! The in-process tier: a worker (`mesh::worker::run`) and a publisher (`mesh::publisher::seal`
//! on a `Driver`) run as tasks of the test's own runtime against the real nats-server and file
//! store of a [`Mesh`], configured with the library's types rather than flags. What they did is
//! read from what the mesh itself keeps (see [`crate::observe`]), not from log text.
//!
//! Faults that need a process (SIGKILL, SIGSTOP, a dying child) stay with the binaries
//! ([`Mesh::worker`], [`Mesh::seal`]).

use std::sync::Arc;
use std::time::Duration;

use mesh::model::{MinerId, SectorSize, WorkerId};
use mesh::proofs::child::ChildRunner;
use mesh::proofs::synthetic::Synthetic;
use mesh::publisher::randomness::OsRandomness;
use mesh::publisher::{Driver, PublisherConfig, SealRequest, SealSummary};
use mesh::resources::Machine;
use mesh::store::{Store, StoreConfig};
use mesh::worker::{Executor, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Mesh, bin, param_cache};

/// A worker running in the test's process.
pub struct InProcWorker {
    pub config: WorkerConfig,
    drain: CancellationToken,
    abort: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcWorker {
    /// Stops taking tasks, lets running ones finish and returns how the worker ended.
    pub async fn drain(mut self) -> anyhow::Result<()> {
        self.drain.cancel();
        self.join().await
    }

    /// How the worker ended, without asking it to (for one that refuses to start).
    pub async fn join(&mut self) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("joined once");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the worker ends within a minute")
            .expect("the worker task does not panic")
    }
}

impl Drop for InProcWorker {
    fn drop(&mut self) {
        self.abort.cancel();
        self.drain.cancel();
    }
}

/// A synthetic machine of `cpu_threads` and `memory` with no swap and `gpus` GPUs.
pub fn machine(host: &str, cpu_threads: u32, memory: u64, gpus: usize) -> Machine {
    Machine {
        host: host.to_string(),
        cpu_threads,
        memory_bytes: memory,
        swap_bytes: 0,
        gpus: (0..gpus).map(|i| format!("simulated GPU {i}")).collect(),
        cpu_ids: Vec::new(),
        gpu_ids: (0..gpus).map(|i| i.to_string()).collect(),
    }
}

impl Mesh {
    /// The mesh's store, opened in this process.
    pub fn open_store(&self) -> Store {
        Store::open(&StoreConfig {
            url: self.store.clone(),
            options: Vec::new(),
        })
        .expect("open the test store")
    }

    /// A worker config of id `id` with the synthetic executor (`durations` as
    /// `--synthetic-durations` takes them), this mesh's scratch, the detected machine and
    /// test-sized poll and heartbeat intervals; adjust it before [`Mesh::start_worker`].
    pub fn worker_config(&self, id: &str, durations: &str) -> WorkerConfig {
        let synthetic = Synthetic::parse(durations).expect("synthetic durations");
        let mut config = WorkerConfig::new(Executor::Synthetic(synthetic), self.scratch());
        config.id = WorkerId(id.to_string());
        config.poll_interval = Duration::from_millis(500);
        config.heartbeat = Some(Duration::from_secs(1));
        config
    }

    /// Starts `mesh::worker::run` with `config` as a task of this runtime.
    pub async fn start_worker(&self, config: WorkerConfig) -> InProcWorker {
        let broker = mesh::broker::Broker::connect(&self.url(), &config.id.0)
            .await
            .expect("connect the worker");
        let (drain, abort) = (CancellationToken::new(), CancellationToken::new());
        let handle = tokio::spawn(mesh::worker::run(
            config.clone(),
            broker,
            self.open_store(),
            drain.clone(),
            abort.clone(),
        ));
        InProcWorker {
            config,
            drain,
            abort,
            handle: Some(handle),
        }
    }

    /// Creates `count` synthetic sectors of `miner` and `size` and drives them to their end
    /// with `mesh::publisher::seal`, in this process.
    pub async fn seal_in_process(&self, miner: &str, size: SectorSize, count: u64) -> SealSummary {
        self.seal_with(
            miner,
            SealRequest {
                size,
                count,
                pieces: Vec::new(),
                synthetic: true,
                resume: false,
                out: None,
                until: None,
                status_every: Duration::from_secs(5),
            },
        )
        .await
    }

    /// Runs `mesh::publisher::seal` for `miner` with `request`, in this process; every sector
    /// must seal.
    pub async fn seal_with(&self, miner: &str, request: SealRequest) -> SealSummary {
        let miner: MinerId = miner.parse().expect("a miner id");
        let broker = mesh::broker::Broker::connect(&self.url(), "publisher")
            .await
            .expect("connect the publisher");
        let config = PublisherConfig {
            miner,
            runner: ChildRunner {
                program: bin("mesh-publisher"),
                param_cache: param_cache(),
                parent_cache: self.path("parents"),
            },
            max_attempts: 5,
            holder_grace: std::time::Duration::from_secs(1),
        };
        let driver = Driver::new(broker, self.open_store(), config, Arc::new(OsRandomness))
            .await
            .expect("start the publisher's driver");
        let summary = mesh::publisher::seal(&driver, &request, &CancellationToken::new())
            .await
            .expect("seal");
        assert!(
            summary.failed.is_empty(),
            "sectors failed: {:?}",
            summary.failed
        );
        summary
    }
}
