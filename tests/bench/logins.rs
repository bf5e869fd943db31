//! Logins: what operator mode (a JWT credentials file per user, `init --operator`) costs beside
//! the passwords of `init --roles`, and beside no login at all, each on a fresh nats-server
//! running `nats/secure.conf` (without TLS) in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- logins
//!
//! For each way of logging in: [`CLIENTS`] connections made one after another as the worker
//! role, each to its first round trip (connect, then a flush), and the server's resident
//! memory with all of them open. Then what minting credentials costs the admin.
//!
//! Writes `bench/results/logins.md`.

use std::time::{Duration, Instant};

use mesh::broker::operator::{Operator, User};
use mesh::broker::{Broker, NatsConfig};
use mesh_tests::report::Report;
use mesh_tests::{NatsServer, SecureNats, percentile};

/// Connections made in each way.
const CLIENTS: usize = 500;
/// Credentials files minted to time it.
const MINTED: usize = 1_000;

/// The server's resident memory in KiB, from /proc/<pid>/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Connects [`CLIENTS`] times with `config`, one after another, keeping every connection:
/// each connection's time to its first round trip, and the server's memory growth per
/// connection in KiB.
async fn logins(config: &NatsConfig, server_pid: u32) -> (Vec<f64>, f64) {
    let before = rss_kib(server_pid);
    let mut open = Vec::with_capacity(CLIENTS);
    let mut times = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let started = Instant::now();
        let broker = Broker::connect_with(config, &format!("bench login {i}"))
            .await
            .unwrap_or_else(|e| panic!("login {i}: {e}"));
        broker.client().flush().await.expect("first round trip");
        times.push(ms(started.elapsed()));
        open.push(broker);
    }
    let after = rss_kib(server_pid);
    (
        times,
        (after.saturating_sub(before)) as f64 / CLIENTS as f64,
    )
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    println!("logins: {CLIENTS} connections each way (no login, password, operator JWT)…");
    let open = NatsServer::start();
    let none = logins(&NatsConfig::new(open.url()), open.pid()).await;
    drop(open);

    let secure = SecureNats::start(&["f01000"], false);
    let password = logins(&secure.config("worker"), secure.servers[0].pid()).await;
    drop(secure);

    let operator = SecureNats::start_operator(&["f01000"], &["w0"]);
    let jwt = logins(&operator.config("worker-w0"), operator.servers[0].pid()).await;
    drop(operator);

    let mut report = Report::new(
        "logins",
        "Logins: operator-mode credentials beside passwords and beside no login",
        &format!(
            "{CLIENTS} connections as the worker role, one after another and all kept open, on \
             a fresh nats-server each: with no login (an open server, the baseline), with the \
             `worker` password of `init --roles`, and with a `worker-<name>` credentials file \
             of `init --operator` (the server sends a nonce, the client signs it with the \
             user's nkey, the server checks the signature and the JWT's chain to the \
             operator). *Login* is from the start of the connect to the first round trip's \
             answer. *Server memory* is the growth of its resident set with all connections \
             open, per connection."
        ),
        &[
            "login",
            "p50 (ms)",
            "p99 (ms)",
            "mean (ms)",
            "× no login (p50)",
            "server memory per connection (KiB)",
        ],
    );
    let p50 = |times: &[f64]| percentile(&mut times.to_vec(), 50.0);
    let base = p50(&none.0);
    for (name, (times, kib)) in [
        ("none (open server)", &none),
        ("password (`init --roles`)", &password),
        ("operator JWT (`init --operator`)", &jwt),
    ] {
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        report.row(vec![
            name.to_string(),
            format!("{:.2}", p50(times)),
            format!("{:.2}", percentile(&mut times.clone(), 99.0)),
            format!("{mean:.2}"),
            format!("{:.2}", p50(times) / base.max(0.001)),
            format!("{kib:.0}"),
        ]);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let (keys, _) = Operator::open(dir.path(), true).expect("operator keys");
    let started = Instant::now();
    for i in 0..MINTED {
        let user = User::parse(&format!("worker-w{i}")).expect("a worker's user");
        keys.creds(&user, None).expect("mint credentials");
    }
    let minted = started.elapsed();
    report.note(format!(
        "Minting {MINTED} workers' credentials files (`Operator::creds`, what `mesh-publisher \
         creds` does per file): {:.0} ms, {:.2} ms each. No server change and no reload per \
         worker.",
        ms(minted),
        ms(minted) / MINTED as f64
    ));
    report.write();
}
