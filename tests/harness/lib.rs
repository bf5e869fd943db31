//! Test harness: real `nats-server` and SeaweedFS processes on free loopback ports, the mesh's
//! own binaries as child processes, and helpers to wait for conditions (by polling with a
//! deadline, never a fixed sleep) and to verify sealed sectors independently.

pub mod inproc;
pub mod observe;
pub mod procs;
pub mod report;
pub mod secure;
pub mod servers;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use procs::Proc;
pub use secure::{SecureNats, TestPki};
pub use servers::{NatsServer, Seaweed};

/// Path of one of the mesh's binaries, built beside the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// A port nothing listens on now, and that stays this caller's while its test runs, so that a
/// server killed and restarted on it finds it free. It lies below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 up by default), which client connections' local ports and
/// `bind(0)` come from, and it is reserved across the test processes that nextest runs side by
/// side: by a file named after it in [`PORTS_DIR`], which another test may reclaim only after
/// [`PORT_HELD`].
pub fn free_port() -> u16 {
    use rand::Rng;
    let dir = std::env::temp_dir().join(PORTS_DIR);
    std::fs::create_dir_all(&dir).expect("create the port reservations directory");
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(PORTS);
        let mark = dir.join(port.to_string());
        let stale = std::fs::metadata(&mark)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > PORT_HELD));
        if stale {
            let _ = std::fs::remove_file(&mark);
        }
        if std::fs::File::create_new(&mark).is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port in {PORTS:?} after 10,000 tries: remove {} if no tests run",
        dir.display()
    )
}

/// Where [`free_port`] reserves ports, under the temporary directory.
const PORTS_DIR: &str = "mesh-test-ports";
/// The ports [`free_port`] hands out: below the kernel's ephemeral range.
const PORTS: std::ops::Range<u16> = 20_000..32_768;
/// How long a reserved port stays reserved: longer than any test runs.
const PORT_HELD: Duration = Duration::from_secs(3_600);

/// Polls `check` every 100 ms until it yields a value; panics naming `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Groth parameter cache the tests use (the standard one, or FIL_PROOFS_PARAMETER_CACHE).
pub fn param_cache() -> PathBuf {
    std::env::var_os("FIL_PROOFS_PARAMETER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(mesh::proofs::params::DEFAULT_CACHE))
}

/// Panics with the fix when the 2KiB parameters are missing (tests that run Commit2 need them).
pub fn require_2kib_params() -> PathBuf {
    let cache = param_cache();
    let files = mesh::proofs::params::param_files(mesh::model::SectorSize::KiB2.seal_proof())
        .expect("parameter names");
    let missing = mesh::proofs::params::missing(&cache, files.all());
    assert!(
        missing.is_empty(),
        "2KiB parameters {missing:?} are not in {}: run `mesh-worker params generate --size \
         2KiB` once (about 17 minutes); .ci/run does it",
        cache.display()
    );
    cache
}

/// Checks one `--out` line with `verify_seal` straight from filecoin-proofs-api, as anyone
/// holding the same parameters would. Returns the sector number.
pub fn verify_out_line(line: &str) -> u64 {
    use filecoin_proofs_api::{RegisteredSealProof, SectorId, seal};
    let v: serde_json::Value = serde_json::from_str(line).expect("--out line is JSON");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "comm_d",
            "comm_r",
            "miner",
            "phases",
            "proof",
            "proof_type",
            "prover_id",
            "sector",
            "seed",
            "store_bytes",
            "ticket"
        ],
        "{line}"
    );
    let b32 = |k: &str| -> [u8; 32] {
        let s = v[k].as_str().unwrap_or_else(|| panic!("{k} is a string"));
        assert_eq!(s, s.to_lowercase(), "{k} is lowercase hex");
        hex::decode(s)
            .expect("hex")
            .try_into()
            .unwrap_or_else(|_| panic!("{k} is 32 bytes"))
    };
    let proof_type: RegisteredSealProof =
        serde_json::from_value(v["proof_type"].clone()).expect("proof_type names a proof");
    let sector = v["sector"].as_u64().expect("sector is a number");
    let proof = hex::decode(v["proof"].as_str().expect("proof")).expect("proof hex");
    let valid = seal::verify_seal(
        proof_type,
        b32("comm_r"),
        b32("comm_d"),
        b32("prover_id"),
        SectorId::from(sector),
        b32("ticket"),
        b32("seed"),
        &proof,
    )
    .expect("verify_seal runs");
    assert!(valid, "proof of sector {sector} does not verify");
    sector
}

/// A whole local mesh for one test: a nats-server (or a 3-node cluster) with the topology, a
/// store (a directory unless the test points `store` elsewhere), scratch.
pub struct Mesh {
    /// The server, or the cluster's nodes.
    pub servers: Vec<NatsServer>,
    pub dir: tempfile::TempDir,
    /// The store URL the mesh's processes get.
    pub store: String,
    /// Extra environment for the mesh's processes (e.g. S3 credentials).
    pub env: Vec<(String, String)>,
}

impl Mesh {
    /// Starts a server and runs `mesh-publisher init` against it.
    pub async fn start() -> Mesh {
        Self::init(vec![NatsServer::start()], 1).await
    }

    /// Starts the 3-node cluster of `nats/cluster/` and runs `init --replicas 3`.
    pub async fn start_cluster() -> Mesh {
        Self::init(NatsServer::cluster(), 3).await
    }

    async fn init(servers: Vec<NatsServer>, replicas: usize) -> Mesh {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store").display().to_string();
        let mesh = Mesh {
            servers,
            dir,
            store,
            env: Vec::new(),
        };
        // A new cluster needs a moment to elect its metadata leader: init until it works.
        let url = mesh.url();
        let replicas = replicas.to_string();
        let started = Instant::now();
        loop {
            let init = std::process::Command::new(bin("mesh-publisher"))
                .args([
                    "init",
                    "--nats",
                    &url,
                    "--sizes",
                    "2KiB",
                    "--replicas",
                    &replicas,
                ])
                .output()
                .expect("run mesh-publisher init");
            if init.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        mesh
    }

    /// The servers' URLs, comma-separated, as `--nats` takes them.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a `mesh-worker run` with id `id` against the file store, plus `extra` flags.
    pub fn worker(&self, id: &str, extra: &[&str]) -> Proc {
        let scratch = self.scratch().display().to_string();
        let url = self.url();
        let mut args = vec![
            "run",
            "--nats",
            &url,
            "--store",
            &self.store,
            "--scratch",
            &scratch,
            "--id",
            id,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(&bin("mesh-worker"), &args, &self.env_refs(), &self.log(id))
    }

    /// Starts `mesh-publisher seal` for miner f01000 against the file store, plus `extra`.
    pub fn seal(&self, name: &str, extra: &[&str]) -> Proc {
        self.seal_for("f01000", name, extra)
    }

    /// Starts `mesh-publisher seal` for `miner` (2KiB sectors), plus `extra`.
    pub fn seal_for(&self, miner: &str, name: &str, extra: &[&str]) -> Proc {
        self.seal_sized(miner, name, "2KiB", extra)
    }

    /// Starts `mesh-publisher seal` for `miner` with sectors of `size`, plus `extra`.
    pub fn seal_sized(&self, miner: &str, name: &str, size: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["--size", size, "--status-every", "5s"];
        args.extend_from_slice(extra);
        self.publisher_proc("seal", miner, name, &args)
    }

    /// Starts `mesh-publisher run` for `miner` against the file store, plus `extra`.
    pub fn run_publisher(&self, miner: &str, name: &str, extra: &[&str]) -> Proc {
        self.publisher_proc("run", miner, name, extra)
    }

    /// Starts `mesh-publisher <command>` for `miner` against the file store, logging to
    /// `<name>.log`, plus `extra`.
    fn publisher_proc(&self, command: &str, miner: &str, name: &str, extra: &[&str]) -> Proc {
        let url = self.url();
        let mut args = vec![
            command,
            "--nats",
            &url,
            "--store",
            &self.store,
            "--miner",
            miner,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(
            &bin("mesh-publisher"),
            &args,
            &self.env_refs(),
            &self.log(name),
        )
    }

    /// Runs a `mesh-publisher` command to its end (e.g. `sectors`), returning its stdout.
    pub fn publisher(&self, args: &[&str]) -> String {
        let url = self.url();
        let out = std::process::Command::new(bin("mesh-publisher"))
            .args(args)
            .args(["--nats", &url])
            .output()
            .expect("run mesh-publisher");
        assert!(
            out.status.success(),
            "mesh-publisher {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Makes sure of the consumer through which workers take `miner`'s 2KiB tasks of `phase`
    /// and `class` (a publisher makes it before its first task; tests that publish by hand call
    /// this).
    pub async fn task_consumer(
        &self,
        miner: &str,
        phase: mesh::phases::Phase,
        class: mesh::model::TaskClass,
    ) {
        mesh::broker::topology::ensure_task_consumer(
            &self.broker().await,
            phase,
            mesh::model::SectorSize::KiB2,
            miner.parse().expect("a miner id"),
            class,
        )
        .await
        .expect("create the task consumer");
    }

    pub async fn broker(&self) -> mesh::broker::Broker {
        mesh::broker::Broker::connect(&self.url(), "test")
            .await
            .expect("connect to the test server")
    }
}

/// The store at `s3://<bucket>/<prefix>` on `s3`, once the bucket accepts writes (the filer
/// takes a moment after the server listens, also after a restart).
pub async fn s3_store(s3: &Seaweed, prefix: &str) -> mesh::store::Store {
    let store = mesh::store::Store::open(&mesh::store::StoreConfig {
        url: format!("s3://{}/{prefix}", s3.bucket),
        options: vec![
            ("aws_endpoint".to_string(), s3.endpoint()),
            ("allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_access_key_id".to_string(), s3.access_key.clone()),
            ("aws_secret_access_key".to_string(), s3.secret_key.clone()),
        ],
    })
    .expect("open the S3 store");
    wait_for(
        "the S3 bucket to accept writes",
        Duration::from_secs(90),
        || {
            let store = store.clone();
            async move {
                store.put_bytes("probe", b"ok".to_vec()).await.ok()?;
                (store.get_bytes("probe").await.ok()?.as_ref() == b"ok").then_some(())
            }
        },
    )
    .await;
    store
}

/// Lines of a file, or none if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Milliseconds since the epoch of a log line's `2026-11-25T07:56:54.117297Z` prefix.
pub fn log_time_ms(line: &str) -> u64 {
    let t = &line[..line.find('Z').expect("a timestamp")];
    let (date, time) = t.split_once('T').expect("date and time");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let hms: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let secs = days as f64 * 86_400.0 + hms[0] * 3600.0 + hms[1] * 60.0 + hms[2];
    (secs * 1000.0).round() as u64
}

/// The value of `key=` in a log line (a tracing field, or one inside a span's `{…}`).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line
        .find(&format!(" {key}="))
        .or_else(|| line.find(&format!("{{{key}=")))?;
    let start = start + key.len() + 2;
    line[start..].split([' ', '}', ':', ',']).next()
}

/// The `p`th percentile (nearest rank) of `values`, which it sorts.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// A synthetic 2KiB task of `miner` made by hand (no publisher), failing for good on its first
/// delivery: for tests and benchmarks that publish tasks themselves.
pub fn synthetic_task(
    miner: mesh::model::MinerId,
    sector: u64,
    phase: mesh::phases::Phase,
    deals: bool,
    inputs: Vec<mesh::model::ObjectRef>,
) -> mesh::sector::Task {
    use mesh::model::{SectorNum, SectorSize};
    use mesh::phases::{Params, Phase, ap, c1, pc1, pc2};
    use mesh::sector::{MESSAGE_VERSION, Task, TaskId};
    let params = match phase {
        Phase::AddPiece => Params::AddPiece(ap::Params { pieces: Vec::new() }),
        Phase::PreCommit1 => Params::PreCommit1(pc1::Params {
            ticket: [1; 32],
            piece_infos: Vec::new(),
        }),
        Phase::PreCommit2 => Params::PreCommit2(pc2::Params {
            pc1_output: vec![1; 64].into(),
        }),
        Phase::Commit1 => Params::Commit1(c1::Params {
            ticket: [1; 32],
            seed: [2; 32],
            comm_r: [3; 32],
            comm_d: [4; 32],
            piece_infos: Vec::new(),
        }),
        Phase::Commit2 => Params::Commit2,
        Phase::Finalize => Params::Finalize,
    };
    Task {
        version: MESSAGE_VERSION,
        id: TaskId::new(miner, SectorNum(sector), phase, 0),
        miner,
        sector: SectorNum(sector),
        proof: SectorSize::KiB2.seal_proof(),
        phase,
        priority: phase.priority(),
        has_deals: deals,
        max_attempts: 1,
        inputs,
        params,
        holder: None,
        synthetic: true,
        back_up: false,
        created_ms: mesh::now_ms(),
    }
}

/// Publishes a result to the result stream, as a worker would; returns its stream sequence.
pub async fn publish_result(
    broker: &mesh::broker::Broker,
    result: &mesh::sector::TaskResult,
) -> u64 {
    broker
        .js()
        .publish(
            mesh::names::result_subject(result.miner, result.sector, result.phase),
            mesh::model::encode(result).into(),
        )
        .await
        .expect("publish a result")
        .await
        .expect("the result stream stores it")
        .sequence
}

/// What the server says of `miner`'s result consumer (ack floor, pending, redelivered).
pub async fn result_consumer_info(
    broker: &mesh::broker::Broker,
    miner: mesh::model::MinerId,
) -> async_nats::jetstream::consumer::Info {
    broker
        .js()
        .get_stream(mesh::names::RESULT_STREAM)
        .await
        .expect("the result stream")
        .consumer_info(mesh::names::result_consumer(miner))
        .await
        .expect("the miner's result consumer")
        .clone()
}

/// The result stream's ack floor for `miner`'s publishers: every result up to this sequence
/// was acknowledged.
pub async fn result_ack_floor(broker: &mesh::broker::Broker, miner: mesh::model::MinerId) -> u64 {
    result_consumer_info(broker, miner)
        .await
        .ack_floor
        .stream_sequence
}

/// Publishes a task made by [`synthetic_task`] to its 2KiB task stream, as a publisher would.
pub async fn publish_task(broker: &mesh::broker::Broker, task: &mesh::sector::Task) {
    let subject = mesh::names::task_subject(
        task.phase,
        mesh::model::SectorSize::KiB2,
        task.miner,
        task.class(),
    );
    broker
        .publish_durable(
            subject,
            &task.id.0,
            None,
            mesh::model::encode(task).into(),
            3,
        )
        .await
        .expect("publish a task");
    broker
        .client()
        .publish(
            mesh::names::bell(task.phase, mesh::model::SectorSize::KiB2),
            mesh::names::bell_body(task.miner, task.class()).into(),
        )
        .await
        .expect("ring the bell");
}

/// `GET http://127.0.0.1:<port><path>`: the status and body, or nothing while no server
/// answers there.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// A daemon's `/metrics` page, or nothing while it is not served.
pub async fn scrape(port: u16) -> Option<String> {
    match http_get(port, "/metrics").await? {
        (200, text) => Some(text),
        _ => None,
    }
}

/// The value of the sample of `name` (the full series name, e.g. `…_total`) whose labels
/// include every one of `labels`, from an exposition page.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}
