//! What the three binaries share and the library does not need: the flags for the connection,
//! the store and the parameters (with their `MESH_*` and standard environment variables), and
//! the process scaffolding: logging, runtime, signals, error reporting.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod telemetry;

pub use telemetry::{LogArgs, LogFormat};

use mesh::broker::{Broker, NatsConfig, Secret};
use mesh::proofs::child::ChildRunner;
use mesh::proofs::params;
use mesh::store::{Store, StoreConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL (several may be given, comma-separated, for a cluster).
    #[arg(
        long = "nats",
        env = "MESH_NATS",
        default_value = "nats://127.0.0.1:4222",
        value_parser = parse_nats_urls
    )]
    pub nats: String,
    /// NATS user name (the server's configuration gives each role one; see nats/auth.conf).
    #[arg(long = "nats-user", env = "MESH_NATS_USER")]
    pub user: Option<String>,
    /// NATS password of --nats-user.
    #[arg(
        long = "nats-password",
        env = "MESH_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,
    /// NATS authentication token.
    #[arg(long = "nats-token", env = "MESH_NATS_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// File holding the user's nkey seed (SU…).
    #[arg(long = "nats-nkey", env = "MESH_NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// NATS credentials file (JWT and seed) as `nsc generate creds` writes it.
    #[arg(long = "nats-creds", env = "MESH_NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (turns TLS on).
    #[arg(long = "nats-ca", env = "MESH_NATS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients.
    #[arg(long = "nats-cert", env = "MESH_NATS_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --nats-cert.
    #[arg(long = "nats-key", env = "MESH_NATS_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Start TLS before the server's greeting (servers configured with handshake_first).
    #[arg(long = "nats-tls-first", env = "MESH_NATS_TLS_FIRST")]
    pub tls_first: bool,
    /// Prefix of reply subjects [default: _INBOX.<user> with --nats-user, _INBOX.<name> with a
    /// --nats-creds file whose JWT has a name, else _INBOX].
    #[arg(long = "nats-inbox-prefix", env = "MESH_NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
}

/// Checks a `--nats` value: one or more comma-separated server URLs that the client accepts.
fn parse_nats_urls(s: &str) -> Result<String, String> {
    const ALLOWED: &str =
        "write nats://host:4222 (or tls://…), several comma-separated for a cluster";
    let servers: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(format!("no server URL given: {ALLOWED}"));
    }
    for server in servers {
        let addr: async_nats::ServerAddr = server
            .parse()
            .map_err(|e| format!("'{server}' is not a NATS server URL ({e}): {ALLOWED}"))?;
        if addr.host().is_empty() {
            return Err(format!("'{server}' names no host: {ALLOWED}"));
        }
    }
    Ok(s.to_string())
}

impl NatsArgs {
    pub fn config(&self) -> NatsConfig {
        NatsConfig {
            url: self.nats.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            nkey: self.nkey.clone(),
            creds: self.creds.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            tls_first: self.tls_first,
            inbox_prefix: self.inbox_prefix.clone(),
        }
    }

    pub async fn connect(&self, name: &str) -> anyhow::Result<Broker> {
        Ok(Broker::connect_with(&self.config(), name).await?)
    }
}

/// `--metrics`, on every daemon.
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /healthz
    /// (200 while connected to NATS, 503 with the reason otherwise).
    #[arg(long = "metrics", env = "MESH_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// Serves `registry` at `--metrics`, if given.
    pub async fn serve(
        &self,
        registry: mesh::metrics::Registry,
        broker: &Broker,
    ) -> anyhow::Result<Option<MetricsServer>> {
        match self.metrics {
            Some(addr) => serve_metrics(addr, "--metrics", registry, broker)
                .await
                .map(Some),
            None => Ok(None),
        }
    }
}

/// A running `/metrics` and `/healthz` server.
pub struct MetricsServer {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Stops serving once the daemon's work is done (it serves on while the daemon drains).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// Serves `registry` at `addr` (`flag` names where it was given, for a bind error), healthy
/// while `broker` is connected.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    flag: &str,
    registry: mesh::metrics::Registry,
    broker: &Broker,
) -> anyhow::Result<MetricsServer> {
    let stop = CancellationToken::new();
    let health = mesh::metrics::nats_health(broker.client().clone());
    let handle = mesh::metrics::serve(addr, flag, registry, health, stop.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    info!(%addr, "metrics at http://{addr}/metrics, health at http://{addr}/healthz");
    Ok(MetricsServer { stop, handle })
}

#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Object store for sector data: a directory (file:///var/tmp/mesh-store), s3://bucket[/prefix],
    /// gs://bucket or az://container.
    #[arg(long = "store", env = "MESH_STORE")]
    pub store: String,
    /// S3 endpoint for S3-compatible servers (MinIO, SeaweedFS, Ceph), e.g. http://127.0.0.1:8333.
    #[arg(long, env = "AWS_ENDPOINT_URL", value_parser = parse_endpoint)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id. Without one, credentials come from the standard AWS chain: a profile
    /// (AWS_PROFILE, ~/.aws/credentials, ~/.aws/config), web identity (EKS), an ECS task role or
    /// the EC2 instance role.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// S3 session token, for temporary keys.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// Any other object_store option as KEY=VALUE (repeatable), e.g. aws_session_token=….
    #[arg(long = "store-option", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!(
            "'{s}' has no KEY: write KEY=VALUE, e.g. aws_session_token=…"
        ));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "'{s}' is not an endpoint URL: write http://host:port or https://host"
        )),
    }
}

impl StoreArgs {
    pub fn config(&self) -> StoreConfig {
        let mut options = Vec::new();
        let is_s3 = self.store.starts_with("s3");
        if is_s3 {
            if let Some(endpoint) = &self.s3_endpoint {
                options.push(("aws_endpoint".to_string(), endpoint.clone()));
                if endpoint.starts_with("http://") {
                    options.push(("allow_http".to_string(), "true".to_string()));
                }
            }
            // An empty variable (AWS_ACCESS_KEY_ID=) counts as unset, as the AWS tools read it.
            for (key, value) in [
                ("aws_region", &self.s3_region),
                ("aws_access_key_id", &self.s3_access_key_id),
                ("aws_secret_access_key", &self.s3_secret_access_key),
                ("aws_session_token", &self.s3_session_token),
            ] {
                if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                    options.push((key.to_string(), value.clone()));
                }
            }
        }
        options.extend(self.options.iter().cloned());
        StoreConfig {
            url: self.store.clone(),
            options,
        }
    }

    pub fn open(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.config())?)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ParamArgs {
    /// Directory holding Groth parameters.
    #[arg(long, env = "FIL_PROOFS_PARAMETER_CACHE", default_value = params::DEFAULT_CACHE)]
    pub param_cache: PathBuf,
    /// Directory for the SDR parent cache.
    #[arg(long, env = "FIL_PROOFS_PARENT_CACHE", default_value = mesh::proofs::child::DEFAULT_PARENT_CACHE)]
    pub parent_cache: PathBuf,
}

impl ParamArgs {
    /// Proof jobs run in children of this very binary (`<exe> exec`).
    pub fn runner(&self) -> anyhow::Result<ChildRunner> {
        let program = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find this program's path to run proofs: {e}"))?;
        Ok(ChildRunner {
            program,
            param_cache: self.param_cache.clone(),
            parent_cache: self.parent_cache.clone(),
        })
    }
}

/// The hidden `exec` subcommand both binaries have: runs one proof job in this process, as the
/// child of a worker or publisher (see `mesh::proofs::child`).
#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    #[arg(long)]
    pub job: PathBuf,
    #[arg(long)]
    pub outcome: PathBuf,
}

impl ExecArgs {
    /// Runs the job, synchronously and without a runtime, and reports its exit code.
    pub fn run(&self) -> ExitCode {
        telemetry::init_child();
        mesh::proofs::exec::main(&self.job, &self.outcome)
    }
}

/// Shutdown tokens: `drain` on the first SIGTERM/SIGINT, `abort` on the second.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
}

impl Shutdown {
    /// Installs the signal handlers (must run inside the runtime).
    pub fn install() -> Self {
        let shutdown = Shutdown::default();
        let s = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                warn!("cannot install signal handlers");
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            info!("shutting down: finishing running work (signal again to abort)");
            s.drain.cancel();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            warn!("aborting running work");
            s.abort.cancel();
        });
        shutdown
    }
}

/// Runs `main` on a multi-threaded runtime with logging set up as `log` says; prints an error
/// chain as one `error:` line (with JSON logs, as one JSON event) and exits 1.
pub fn run_main<F, Fut>(log: &LogArgs, main: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let format = log.log_format;
    if let Err(e) = telemetry::init(std::env::var("RUST_LOG").ok().as_deref(), format) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(main());
    // Stop what still runs (the NATS client logs its connection closing) before the error is
    // printed, so that the error is the last line a user sees.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if format == LogFormat::Json => {
            tracing::error!(error = %format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A value parser for a whole-number flag whose error says what is allowed; the range itself is
/// checked where the setting is validated.
pub fn whole_number<T: std::str::FromStr>(
    allowed: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        s.trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number: use {allowed}"))
    }
}

#[cfg(test)]
mod flag_tests {
    use super::{parse_endpoint, parse_nats_urls};

    #[test]
    fn nats_urls_accept_what_the_client_accepts() {
        for ok in [
            "nats://127.0.0.1:4222",
            "127.0.0.1:4222",
            "tls://nats1:4222, nats://nats2:4222,",
            "nats://user:pass@[::1]:4222",
        ] {
            assert_eq!(parse_nats_urls(ok).as_deref(), Ok(ok));
        }
        for bad in ["", " , ", "http://h:4222", "nats://", "nats://h:port"] {
            let e = parse_nats_urls(bad).unwrap_err();
            assert!(e.contains("nats://host:4222"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn endpoints_are_http_urls() {
        assert!(parse_endpoint("http://127.0.0.1:8333").is_ok());
        assert!(parse_endpoint("https://s3.example.com").is_ok());
        assert!(parse_endpoint("127.0.0.1:8333").is_err());
        assert!(parse_endpoint("s3://bucket").is_err());
    }
}
