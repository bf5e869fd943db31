//! Least privilege against a real nats-server running the roles `mesh-publisher init --roles`
//! writes: each role can do its job, the server refuses everything else (a refusal is told apart
//! from a failure by the server's own permissions violation), the mesh turns refusals into clear
//! messages, and the quick-start flow works over TLS with a CA generated here.
//! `--no-capture` prints the matrix of actions × roles.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use bytes::Bytes;
use futures::StreamExt;
use mesh::broker::Broker;
use mesh::broker::topology::{Topology, ensure_task_consumer};
use mesh::model::{SectorSize, TaskClass};
use mesh::phases::Phase;
use mesh_tests::{
    NatsServer, Proc, SecureNats, TestPki, bin, lines, require_2kib_params, verify_out_line,
    wait_for,
};

const ROLES: [&str; 5] = [
    "miner-f01000",
    "miner-f01001",
    "worker",
    "autoscaler",
    "admin",
];

type Op = Box<dyn Fn(Broker) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>>;

fn op<F, Fut>(f: F) -> Op
where
    F: Fn(Broker) -> Fut + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Box::new(move |b| Box::pin(f(b)))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn js_publish(b: &Broker, subject: &str, body: &'static [u8]) -> Result<(), String> {
    b.js()
        .publish(subject.to_string(), Bytes::from_static(body))
        .await
        .map_err(err)?
        .await
        .map_err(err)?;
    Ok(())
}

/// How many messages a stream holds (read as admin would: stream info).
async fn stream_messages(b: &Broker, stream: &str) -> Result<u64, String> {
    let mut stream = b.js().get_stream(stream).await.map_err(err)?;
    Ok(stream.info().await.map_err(err)?.state.messages)
}

/// One message from a pull consumer, if one comes within half a second.
async fn fetch_one(
    consumer: &async_nats::jetstream::consumer::Consumer<pull::Config>,
) -> Result<Option<async_nats::jetstream::Message>, String> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .map_err(err)?;
    batch.next().await.transpose().map_err(err)
}

/// Writes one key, as a role allowed only some keys of the bucket would (no stream info).
async fn kv_put(b: &Broker, bucket: &str, key: &str) -> Result<(), String> {
    b.keys(bucket)
        .await
        .map_err(err)?
        .put(key, Bytes::from_static(b"{}"))
        .await
        .map_err(err)?;
    Ok(())
}

/// Subscribing to `subject`; a refused subscription is answered only by the server's error.
fn listen(subject: &'static str) -> Op {
    op(move |b| async move {
        let _sub = b.client().subscribe(subject).await.map_err(err)?;
        b.client().flush().await.map_err(err)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    })
}

/// The actions of the matrix, with the roles that may do them. Destructive ones come last.
fn actions() -> Vec<(&'static str, &'static [&'static str], Op)> {
    let f01000 = || "f01000".parse().unwrap();
    let f01001 = || "f01001".parse().unwrap();
    vec![
        (
            "read a task stream's info",
            &["worker", "autoscaler", "admin"],
            op(|b| async move {
                b.stream("MESH_TASK_PC1_2KIB").await.map_err(err)?;
                Ok(())
            }),
        ),
        (
            "list f01000's sector keys and results through stream info",
            &["worker", "admin"],
            op(|b| async move {
                for (stream, filter) in [
                    ("KV_mesh-sectors", "$KV.mesh-sectors.f01000.>"),
                    ("MESH_RESULT", "mesh.result.f01000.>"),
                ] {
                    let mut info = b
                        .js()
                        .get_stream_no_info(stream)
                        .await
                        .map_err(err)?
                        .info_with_subjects(filter)
                        .await
                        .map_err(err)?;
                    let subject = info.next().await.ok_or("no subjects listed")?;
                    subject.map_err(err)?;
                }
                Ok(())
            }),
        ),
        (
            "check that the topology exists",
            &[
                "miner-f01000",
                "miner-f01001",
                "worker",
                "autoscaler",
                "admin",
            ],
            op(|b| async move {
                mesh::broker::topology::check(&b, &[Phase::AddPiece], &[SectorSize::KiB2])
                    .await
                    .map_err(err)
            }),
        ),
        (
            "publish a task of f01000",
            &["miner-f01000", "admin"],
            op(|b| async move { js_publish(&b, "mesh.task.ap.2kib.f01000.cc", b"task").await }),
        ),
        (
            "publish a task of f01000 for the worker holding it",
            &["miner-f01000", "admin"],
            op(|b| async move { js_publish(&b, "mesh.held.w1.pc2.2kib.f01000", b"task").await }),
        ),
        (
            "publish a task of a class no consumer serves",
            &["admin"],
            op(|b| async move { js_publish(&b, "mesh.task.ap.2kib.f01000.zzz", b"task").await }),
        ),
        (
            "find f01001's task consumer",
            &["miner-f01001", "worker", "autoscaler", "admin"],
            op(move |b| async move {
                ensure_task_consumer(
                    &b,
                    Phase::AddPiece,
                    SectorSize::KiB2,
                    f01001(),
                    TaskClass::Cc,
                )
                .await
                .map_err(err)
            }),
        ),
        (
            "change f01001's task consumer",
            &["admin"],
            op(move |b| async move {
                let config = pull::Config {
                    max_ack_pending: 1,
                    ..Topology::default().task_consumer(
                        Phase::AddPiece,
                        SectorSize::KiB2,
                        f01001(),
                        TaskClass::Cc,
                    )
                };
                b.js()
                    .create_consumer_on_stream(config, "MESH_TASK_AP_2KIB")
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "create a consumer named like a worker's on MESH_RESULT",
            &["admin"],
            op(|b| async move {
                // The name and filter of f01000's task consumer, on another stream.
                let config = pull::Config {
                    durable_name: Some("workers-f01000-cc".into()),
                    filter_subject: "mesh.task.ap.2kib.f01000.cc".into(),
                    ..Default::default()
                };
                b.js()
                    .create_consumer_on_stream(config, "MESH_RESULT")
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "store messages in a task stream through a push consumer",
            &["admin"],
            op(|b| async move {
                // The server delivers a push consumer's messages only where someone listens
                // on that very subject; a task stream then stores them.
                let subject = "mesh.task.ap.2kib.f01001.cc";
                let _listen = b.client().subscribe(subject).await.map_err(err)?;
                b.client().flush().await.map_err(err)?;
                let before = stream_messages(&b, "MESH_TASK_AP_2KIB").await?;
                let config = async_nats::jetstream::consumer::push::Config {
                    deliver_subject: subject.into(),
                    filter_subject: "$KV.mesh-sectors.>".into(),
                    inactive_threshold: Duration::from_secs(5),
                    ..Default::default()
                };
                b.js()
                    .create_consumer_on_stream(config, "KV_mesh-sectors")
                    .await
                    .map_err(err)?;
                for _ in 0..50 {
                    if stream_messages(&b, "MESH_TASK_AP_2KIB").await? > before {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err("the task stream stored nothing".into())
            }),
        ),
        (
            "pull a task of f01000",
            &["worker", "admin"],
            op(|b| async move {
                let stream = b.stream("MESH_TASK_AP_2KIB").await.map_err(err)?;
                let consumer = stream
                    .get_consumer::<pull::Config>("workers-f01000-cc")
                    .await
                    .map_err(err)?;
                fetch_one(&consumer).await?;
                Ok(())
            }),
        ),
        (
            "publish a result of f01000",
            &["worker", "admin"],
            op(|b| async move { js_publish(&b, "mesh.result.f01000.1.ap", b"result").await }),
        ),
        (
            "read f01000's results",
            &["miner-f01000", "admin"],
            op(move |b| async move {
                let consumer = mesh::broker::topology::result_consumer(&b, f01000())
                    .await
                    .map_err(err)?;
                if let Some(msg) = fetch_one(&consumer).await? {
                    msg.ack_with(async_nats::jetstream::AckKind::Nak(None))
                        .await
                        .map_err(err)?;
                }
                Ok(())
            }),
        ),
        (
            "read a result by sequence",
            &["admin"],
            op(|b| async move {
                let stream = b.stream("MESH_RESULT").await.map_err(err)?;
                stream.get_raw_message(1).await.map_err(err)?;
                Ok(())
            }),
        ),
        (
            "read sector key f01000.1",
            &["miner-f01000", "worker", "admin"],
            op(|b| async move {
                b.keys("mesh-sectors")
                    .await
                    .map_err(err)?
                    .get("f01000.1")
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "write sector key f01000.1",
            &["miner-f01000", "admin"],
            op(|b| async move { kv_put(&b, "mesh-sectors", "f01000.1").await }),
        ),
        (
            "list f01000's sector keys",
            &["miner-f01000", "worker", "admin"],
            op(|b| async move {
                b.keys_under("mesh-sectors", "f01000.>")
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "list every sector key",
            &["worker", "admin"],
            op(|b| async move {
                let keys = b
                    .bucket("mesh-sectors")
                    .await
                    .map_err(err)?
                    .keys()
                    .await
                    .map_err(err)?;
                let _: Vec<String> = futures::TryStreamExt::try_collect(keys)
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "read the worker registry",
            &[
                "miner-f01000",
                "miner-f01001",
                "worker",
                "autoscaler",
                "admin",
            ],
            op(|b| async move {
                mesh::broker::workers::list(&b).await.map_err(err)?;
                Ok(())
            }),
        ),
        (
            "write a worker record",
            &["worker", "admin"],
            op(|b| async move { kv_put(&b, "mesh-workers", "w-test").await }),
        ),
        (
            "register miner f01000",
            &["miner-f01000", "admin"],
            op(|b| async move { kv_put(&b, "mesh-miners", "f01000").await }),
        ),
        (
            "set f01000's weight",
            &["admin"],
            op(|b| async move { kv_put(&b, "mesh-miners", "weight.f01000").await }),
        ),
        (
            "write a drain mark",
            &["autoscaler", "admin"],
            op(|b| async move { kv_put(&b, "mesh-drain", "w-test").await }),
        ),
        (
            "take a group's autoscaler lease",
            &["autoscaler", "admin"],
            op(|b| async move { kv_put(&b, "mesh-leases", "sim").await }),
        ),
        (
            "count a deferral of a task left for a newer worker",
            &["worker", "admin"],
            op(|b| async move { kv_put(&b, "mesh-deferred", "f01000.MESH_TASK_AP_2KIB.1").await }),
        ),
        (
            "listen to f01000's replies",
            &["miner-f01000", "admin"],
            listen("_INBOX.miner-f01000.>"),
        ),
        (
            "delete a task consumer",
            &["admin"],
            op(|b| async move {
                b.js()
                    .delete_consumer_from_stream("workers-f01001-cc", "MESH_TASK_AP_2KIB")
                    .await
                    .map_err(err)?;
                Ok(())
            }),
        ),
        (
            "delete a stream",
            &["admin"],
            op(|b| async move {
                b.js().delete_stream("MESH_DLQ").await.map_err(err)?;
                Ok(())
            }),
        ),
    ]
}

/// Runs `action` as the broker's user: `Ok(true)` done, `Ok(false)` refused by the server,
/// `Err` failed otherwise.
async fn attempt(broker: &Broker, action: &Op) -> Result<bool, String> {
    let mut refusals = broker.refusals();
    refusals.borrow_and_update();
    let run = action(broker.clone());
    tokio::select! {
        done = run => match done {
            Ok(()) => Ok(true),
            // The error may have raced the server's refusal.
            Err(e) => match refusals.has_changed() {
                Ok(true) => Ok(false),
                _ => Err(e),
            },
        },
        _ = refusals.changed() => Ok(false),
        _ = tokio::time::sleep(Duration::from_secs(20)) => Err("neither done nor refused in 20 s".into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_does_its_job_and_the_server_refuses_the_rest() {
    let nats = SecureNats::start(&["f01000", "f01001"], false);
    let mut bad = nats.config("worker");
    bad.password = Some(mesh::broker::Secret::new("wrong"));
    matrix(&nats, "worker", bad).await;
}

/// The same matrix in operator mode: every user logs in with the credentials file
/// `init --operator` or `creds` wrote, the worker as a user of its own (`worker-a`), and a
/// credentials file signed by another operator is refused.
#[tokio::test(flavor = "multi_thread")]
async fn each_role_does_its_job_and_the_server_refuses_the_rest_in_operator_mode() {
    let nats = SecureNats::start_operator(&["f01000", "f01001"], &["a"]);
    let stranger = tempfile::tempdir().unwrap();
    let (other, _) = mesh::broker::operator::Operator::open(stranger.path(), true).unwrap();
    let file = stranger.path().join("worker-a.creds");
    let user = mesh::broker::operator::User::parse("worker-a").unwrap();
    std::fs::write(&file, other.creds(&user, None).unwrap()).unwrap();
    let bad = mesh::broker::NatsConfig {
        creds: Some(file),
        ..mesh::broker::NatsConfig::new(nats.url())
    };
    matrix(&nats, "worker-a", bad).await;
}

/// Runs every action as every role (the worker logging in as `worker`), then an anonymous
/// login and `bad`, which must both be refused.
async fn matrix(nats: &SecureNats, worker: &str, bad: mesh::broker::NatsConfig) {
    let (ok, out, stderr) = nats.publisher(
        "admin",
        &["init", "--sizes", "2KiB", "--miners", "f01000,f01001"],
    );
    assert!(ok, "init as admin: {stderr}");
    // One line per miner for its consumers (6 phases × 2 classes at one size), not one per
    // consumer.
    for miner in ["f01000", "f01001"] {
        assert!(
            out.contains(&format!(
                "ok  consumers of {miner}: 12 task consumers (every phase, size and class) and \
                 MESH_RESULT/publisher-{miner}"
            )),
            "{out}"
        );
    }
    assert!(!out.contains("ok  consumer MESH"), "{out}");

    // What the actions work on: f01000's task consumer, a sector key, a result.
    let admin = nats.connect("admin").await;
    ensure_task_consumer(
        &admin,
        Phase::AddPiece,
        SectorSize::KiB2,
        "f01000".parse().unwrap(),
        TaskClass::Cc,
    )
    .await
    .unwrap();
    kv_put(&admin, "mesh-sectors", "f01000.1").await.unwrap();
    js_publish(&admin, "mesh.result.f01000.1.ap", b"result")
        .await
        .unwrap();

    let mut brokers = Vec::new();
    for role in ROLES {
        brokers.push(
            nats.connect(if role == "worker" { worker } else { role })
                .await,
        );
    }
    let mut rows = vec![{
        let mut header = vec!["action".to_string()];
        header.extend(ROLES.iter().map(|r| r.to_string()));
        header
    }];
    let mut wrong = Vec::new();
    // Another worker's replies: with passwords, every worker's are on the shared user's prefix.
    let mut actions = actions();
    let other_worker = match worker {
        "worker" => ("_INBOX.worker.>", &["worker", "admin"][..]),
        _ => ("_INBOX.worker-b.>", &["admin"][..]),
    };
    actions.insert(
        actions.len() - 2,
        (
            "listen to another worker's replies",
            other_worker.1,
            listen(other_worker.0),
        ),
    );
    for (name, allowed, action) in actions {
        let mut row = vec![name.to_string()];
        for (role, broker) in ROLES.iter().zip(&brokers) {
            let expected = allowed.contains(role);
            let cell = match attempt(broker, &action).await {
                Ok(true) => "allowed".to_string(),
                Ok(false) => "denied".to_string(),
                Err(e) => format!("FAILED ({e})"),
            };
            if cell != if expected { "allowed" } else { "denied" } {
                wrong.push(format!(
                    "{name} as {role}: {cell}, expected {}",
                    if expected { "allowed" } else { "denied" }
                ));
            }
            row.push(cell);
        }
        rows.push(row);
    }
    // No user at all, and a wrong password.
    let anonymous = Broker::connect(&nats.url(), "test anonymous").await;
    let wrong_password = Broker::connect_with(&bad, "test wrong password").await;
    let mut row = vec!["connect without a user / with a wrong password".to_string()];
    for result in [anonymous, wrong_password] {
        match result {
            Err(e @ mesh::broker::BrokerError::Refused { .. }) => {
                assert!(
                    !e.to_string().contains("wrong"),
                    "a password is printed: {e}"
                );
                row.push("denied".into());
            }
            Err(e) => wrong.push(format!("connect: {e}, expected a refusal")),
            Ok(_) => wrong.push("connect: allowed, expected a refusal".into()),
        }
    }
    rows.push(row);
    println!("{}", mesh::render::table(&rows));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Operator mode gives each worker a user and an inbox of its own: a worker cannot listen to
/// the replies another worker's requests get (the tasks it pulls), which the one `worker` user
/// of password mode allows. Two worker processes, each with its own credentials file (and the
/// inbox prefix read from it), seal a miner's synthetic sectors with no refusal.
#[tokio::test(flavor = "multi_thread")]
async fn each_worker_has_an_inbox_of_its_own_in_operator_mode() {
    let nats = SecureNats::start_operator(&["f01000"], &["a", "b"]);
    let (ok, _, stderr) =
        nats.publisher("admin", &["init", "--sizes", "2KiB", "--miners", "f01000"]);
    assert!(ok, "init as admin: {stderr}");

    let a = nats.connect("worker-a").await;
    // Its own inbox works: a JetStream request's reply reaches it.
    a.stream("MESH_TASK_PC1_2KIB")
        .await
        .expect("worker-a reads a task stream's info through its own inbox");
    for (subject, what) in [
        ("_INBOX.worker-b.>", "worker-b's replies"),
        ("_INBOX.>", "every inbox"),
        ("_INBOX.worker.>", "the shared worker prefix"),
    ] {
        assert_eq!(
            attempt(&a, &listen(subject)).await,
            Ok(false),
            "worker-a listening to {what} ({subject})"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let scratch = dir.path().join(format!("scratch-{name}"));
        workers.push(nats.spawn(
            &format!("worker-{name}"),
            &bin("mesh-worker"),
            &[
                "run",
                "--executor",
                "synthetic",
                "--store",
                &store,
                "--scratch",
                &scratch.display().to_string(),
                "--id",
                name,
                "--slots",
                "1",
            ],
            &dir.path().join(format!("worker-{name}.log")),
        ));
    }
    let mut seal = nats.spawn(
        "miner-f01000",
        &bin("mesh-publisher"),
        &[
            "seal",
            "--miner",
            "f01000",
            "--count",
            "4",
            "--synthetic",
            "--store",
            &store,
        ],
        &dir.path().join("seal.log"),
    );
    let status = seal.wait(Duration::from_secs(120)).await;
    let logs = || {
        workers
            .iter()
            .map(|w| w.tail(20))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        status.success(),
        "seal in operator mode failed:\n{}\nworkers:\n{}",
        seal.tail(30),
        logs()
    );
    for text in [seal.log_text()]
        .into_iter()
        .chain(workers.iter().map(Proc::log_text))
    {
        assert!(!text.contains("refused"), "{text}");
        assert!(!text.contains("ermission"), "{text}");
    }
    assert!(
        workers.iter().any(|w| w.log_text().contains("task done")),
        "{}",
        logs()
    );
}

#[test]
fn the_committed_roles_are_what_init_writes() {
    let out = std::process::Command::new(bin("mesh-publisher"))
        .args(["init", "--roles", "-", "--miners", "f01000,f01001"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/auth.conf");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(committed).unwrap(),
        "nats/auth.conf is stale: run mesh-publisher init --roles nats/auth.conf --miners \
         f01000,f01001"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_bad_credentials_are_explained() {
    let nats = SecureNats::start(&["f01000", "f01001"], true);
    let (ok, _, stderr) = nats.publisher(
        "admin",
        &["init", "--sizes", "2KiB", "--miners", "f01000,f01001"],
    );
    assert!(ok, "init as admin: {stderr}");
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());

    // `user` sealing one sector for f01000, which must fail: its stderr.
    let refused_seal = |user: &str| {
        let (ok, _, stderr) = nats.publisher(
            user,
            &[
                "seal", "--miner", "f01000", "--count", "1", "--store", &store,
            ],
        );
        assert!(!ok, "{user} sealed for f01000: {stderr}");
        stderr
    };

    // Miner f01001's user sealing for f01000: the server refuses, and the error says so.
    let stderr = refused_seal("miner-f01001");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("refused this user")
            && last.contains("Permissions Violation")
            && last.contains("f01000"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&nats.passwords["miner-f01001"]),
        "{stderr}"
    );
    println!("miner-f01001 sealing for f01000:\n  {last}");

    // A miner whose consumer `init --miners` did not make (here: removed) is told to run it.
    let admin = nats.connect("admin").await;
    admin
        .js()
        .delete_consumer_from_stream("workers-f01000-cc", "MESH_TASK_AP_2KIB")
        .await
        .unwrap();
    let stderr = refused_seal("miner-f01000");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains(
                "consumer workers-f01000-cc of MESH_TASK_AP_2KIB is missing and could not be \
                 made (miners may not create consumers: run `mesh-publisher init --miners \
                 f01000` as admin)"
            ),
        "{stderr}"
    );

    // No credentials, a wrong password, no CA: one line each, saying what to pass.
    let run = |env: Vec<(String, String)>| {
        let out = std::process::Command::new(bin("mesh-publisher"))
            .args(["status"])
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr).trim().to_string();
        println!("  {e}");
        e
    };
    let mut anonymous = nats.tls_env();
    anonymous.push(("MESH_NATS".into(), nats.url()));
    let e = run(anonymous.clone());
    assert!(
        e.contains("refused the connection") && e.contains("--nats-user"),
        "{e}"
    );

    let mut wrong = nats.env("admin");
    wrong.retain(|(k, _)| k != "MESH_NATS_PASSWORD");
    wrong.push(("MESH_NATS_PASSWORD".into(), "not-the-password".into()));
    let e = run(wrong);
    assert!(e.contains("refused the connection"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");

    let mut no_ca = nats.env("admin");
    no_ca.retain(|(k, _)| k != "MESH_NATS_CA");
    let e = run(no_ca);
    assert!(e.contains("TLS") && e.contains("--nats-ca"), "{e}");

    let mut half = nats.env("admin");
    half.retain(|(k, _)| k != "MESH_NATS_PASSWORD");
    let e = run(half);
    assert!(e.contains("--nats-user needs --nats-password"), "{e}");
}

/// The quick start's flow (init, an autoscaled local worker group, a miner sealing a real 2KiB
/// sector, proof verified, the group back to zero) with every process logged in as its role,
/// on a server that requires TLS and client certificates from a CA made by this test.
#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_runs_over_tls_with_every_role() {
    let params = require_2kib_params();
    let nats = SecureNats::start(&["f01000"], true);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let (ok, out, stderr) = nats.publisher(
        "admin",
        &["init", "--sizes", "2KiB", "--miners", "f01000,f01001"],
    );
    assert!(ok, "init as admin: {stderr}");
    assert!(out.contains("topology ready"), "{out}");

    // The autoscaler starts workers as the worker role: its own identity is not passed on.
    let worker_env: String = nats
        .env("worker")
        .iter()
        .filter(|(k, _)| k.starts_with("MESH_NATS_"))
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    let config = dir.path().join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[group]]
name = "local"
phases = ["ap", "pc1", "pc2", "c1", "c2", "fin"]
sizes = ["2KiB"]
slots = 1
min = 0
max = 1
scale_down_window = "2s"
drain_timeout = "1m"
poll_interval = "250ms"

[group.provider]
kind = "local"
worker = "{worker}"
args = ["--store", "{store}", "--scratch", "{scratch}", "--param-cache", "{params}"]
log_dir = "{logs}"

[group.provider.env]
{worker_env}"#,
            worker = bin("mesh-worker").display(),
            scratch = dir.path().join("scratch").display(),
            params = params.display(),
            logs = dir.path().join("workers").display(),
        ),
    )
    .unwrap();
    let autoscaler_log = dir.path().join("autoscaler.log");
    let _autoscaler = nats.spawn(
        "autoscaler",
        &bin("mesh-autoscaler"),
        &["run", "--config", &config.display().to_string()],
        &autoscaler_log,
    );

    let seal_log = dir.path().join("seal.log");
    let out = dir.path().join("sealed.jsonl");
    let mut seal = nats.spawn(
        "miner-f01000",
        &bin("mesh-publisher"),
        &[
            "seal",
            "--miner",
            "f01000",
            "--count",
            "1",
            "--store",
            &store,
            "--param-cache",
            &params.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &seal_log,
    );
    let status = seal.wait(Duration::from_secs(600)).await;
    assert!(
        status.success(),
        "seal over TLS failed:\n{}\nautoscaler:\n{}",
        seal.tail(30),
        lines(&autoscaler_log).join("\n")
    );
    let proofs: Vec<u64> = lines(&out).iter().map(|l| verify_out_line(l)).collect();
    assert_eq!(proofs, [1], "{}", seal.tail(30));

    // The miner reads its sectors; the autoscaler takes the idle group back to zero.
    let (ok, out, stderr) = nats.publisher("miner-f01000", &["sectors", "--miner", "f01000"]);
    assert!(ok && out.contains("sealed"), "{out}{stderr}");
    wait_for("the group back at zero", Duration::from_secs(60), || {
        let log = autoscaler_log.clone();
        async move {
            lines(&log)
                .iter()
                .any(|l| l.contains("removed") && l.contains("reason=drained"))
                .then_some(())
        }
    })
    .await;
    for log in [&seal_log, &autoscaler_log] {
        let text = lines(log).join("\n");
        assert!(!text.contains("refused this user"), "{text}");
    }
    let mut logs = 0;
    for entry in std::fs::read_dir(dir.path().join("workers")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("refused"), "{text}");
        assert!(text.contains("task done"), "{text}");
        logs += 1;
    }
    assert!(logs >= 1, "no worker ran");
}

/// The other ways to log in: an nkey seed file and a token (each on a server configured for it),
/// TLS with the handshake first, and a credentials file that is not one.
#[tokio::test(flavor = "multi_thread")]
async fn nkey_token_and_tls_first_logins_work_and_wrong_ones_are_refused() {
    let user = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let stranger_file = dir.path().join("stranger.nk");
    std::fs::write(&stranger_file, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let server = |auth: String| {
        NatsServer::configured(
            tempfile::tempdir().unwrap(),
            move |port, store| {
                format!(
                    "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{auth}\n",
                    store.display()
                )
            },
            Vec::new(),
        )
    };
    let nkey_server = server(format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let with_nkey = |path: &std::path::Path| mesh::broker::NatsConfig {
        nkey: Some(path.to_path_buf()),
        ..mesh::broker::NatsConfig::new(nkey_server.url())
    };
    Broker::connect_with(&with_nkey(&seed_file), "test nkey")
        .await
        .expect("log in with the nkey seed");
    let e = Broker::connect_with(&with_nkey(&stranger_file), "test nkey")
        .await
        .unwrap_err();
    assert!(
        matches!(e, mesh::broker::BrokerError::Refused { .. }),
        "{e}"
    );
    let not_a_seed = dir.path().join("junk.nk");
    std::fs::write(&not_a_seed, "hello").unwrap();
    let e = Broker::connect_with(&with_nkey(&not_a_seed), "test nkey")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no user nkey seed"), "{e}");

    let token_server = server("authorization { token: \"t0ken-for-test\" }".into());
    let with_token = |token: &str| mesh::broker::NatsConfig {
        token: Some(mesh::broker::Secret::new(token)),
        ..mesh::broker::NatsConfig::new(token_server.url())
    };
    Broker::connect_with(&with_token("t0ken-for-test"), "test token")
        .await
        .expect("log in with the token");
    let e = Broker::connect_with(&with_token("wrong-token"), "test token")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused the connection") && !e.contains("wrong-token"),
        "{e}"
    );

    // A server that wants the TLS handshake before its greeting (`handshake_first`).
    let pki = TestPki::generate(dir.path());
    let tls_first_server = server(format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", handshake_first: true }}",
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    let tls = |first: bool| mesh::broker::NatsConfig {
        ca: Some(pki.ca.clone()),
        tls_first: first,
        ..mesh::broker::NatsConfig::new(tls_first_server.url())
    };
    Broker::connect_with(&tls(true), "test tls first")
        .await
        .expect("connect with the TLS handshake first");
    assert!(
        Broker::connect_with(&tls(false), "test tls later")
            .await
            .is_err(),
        "a server with handshake_first lets in a client that waits for its greeting"
    );

    let creds = dir.path().join("user.creds");
    std::fs::write(&creds, "not a credentials file").unwrap();
    let e = Broker::connect_with(
        &mesh::broker::NatsConfig {
            creds: Some(creds),
            ..mesh::broker::NatsConfig::new(token_server.url())
        },
        "test creds",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--nats-creds") && e.contains("not a NATS credentials file"),
        "{e}"
    );
}

/// A miner registers itself but cannot raise its own share: workers read weights only from the
/// keys an operator writes (`miners weight`, as admin), and a weight a miner puts in its own
/// registration is ignored.
#[tokio::test(flavor = "multi_thread")]
async fn a_miner_cannot_set_its_own_weight() {
    let nats = SecureNats::start(&["f01000", "f01001"], false);
    let (ok, _, stderr) = nats.publisher(
        "admin",
        &["init", "--sizes", "2KiB", "--miners", "f01000,f01001"],
    );
    assert!(ok, "init as admin: {stderr}");
    let worker = nats.connect("worker").await;
    let weights = mesh::broker::miners::Weights::default();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        weights
            .clone()
            .follow(worker.bucket("mesh-miners").await.unwrap(), stop.clone()),
    );
    let f01000 = "f01000".parse().unwrap();

    // The miner writes weight 1000 into its own registration: allowed, and no weight.
    let miner = nats.connect("miner-f01000").await;
    miner
        .bucket("mesh-miners")
        .await
        .unwrap()
        .put(
            "f01000",
            Bytes::from_static(br#"{"weight":1000,"registered_ms":0}"#),
        )
        .await
        .unwrap();
    // The operator's weight is followed (which also shows the worker saw the miner's put first:
    // a watch delivers in order).
    let (ok, _, stderr) = nats.publisher("admin", &["miners", "weight", "f01001", "3"]);
    assert!(ok, "{stderr}");
    let f01001 = "f01001".parse().unwrap();
    wait_for(
        "the worker to follow the weight",
        Duration::from_secs(10),
        || {
            let w = weights.get(f01001);
            async move { (w == 3).then_some(()) }
        },
    )
    .await;
    assert_eq!(weights.get(f01000), 1, "a miner's own entry is no weight");
    let (ok, listed, stderr) = nats.publisher("admin", &["miners", "list", "--json"]);
    assert!(ok, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let weight = |m: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["miner"] == m)
            .map(|r| r["weight"].as_u64().unwrap())
    };
    assert_eq!(
        (weight("f01000"), weight("f01001")),
        (Some(1), Some(3)),
        "{listed}"
    );
    stop.cancel();
}

/// One miner's garbage under its own sector keys hides nothing of anyone else's: `status` and
/// `sectors` leave it out and say so.
#[tokio::test(flavor = "multi_thread")]
async fn a_miners_garbage_record_breaks_no_one_elses_view() {
    let nats = SecureNats::start(&["f01000", "f01001"], false);
    let (ok, _, stderr) = nats.publisher(
        "admin",
        &["init", "--sizes", "2KiB", "--miners", "f01000,f01001"],
    );
    assert!(ok, "init as admin: {stderr}");
    let admin = nats.connect("admin").await;
    let record = mesh::sector::SectorRecord::new(
        "f01000".parse().unwrap(),
        mesh::model::SectorNum(1),
        SectorSize::KiB2,
        SectorSize::KiB2.seal_proof(),
        Vec::new(),
        Vec::new(),
        [0; 32],
        0,
    );
    admin
        .bucket("mesh-sectors")
        .await
        .unwrap()
        .put("f01000.1", mesh::model::encode(&record).into())
        .await
        .unwrap();
    let miner = nats.connect("miner-f01001").await;
    miner
        .keys("mesh-sectors")
        .await
        .unwrap()
        .put("f01001.5", Bytes::from_static(b"\xc1garbage"))
        .await
        .unwrap();

    let (ok, status, stderr) = nats.publisher("admin", &["status"]);
    assert!(ok, "{stderr}");
    assert!(status.lines().any(|l| l.starts_with("f01000 ")), "{status}");
    assert!(
        status.contains("unreadable sector records: 1 (f01001.5)"),
        "{status}"
    );
    // The miner's own listing leaves its garbage out (and says so in the log).
    let (ok, listed, stderr) =
        nats.publisher("miner-f01001", &["sectors", "--miner", "f01001", "--json"]);
    assert!(ok, "{stderr}");
    assert_eq!(listed.lines().count(), 0, "{listed}");
    assert!(
        stderr.contains("sector record unreadable; left out"),
        "{stderr}"
    );
    // Every miner's failed sectors, as the operator lists them.
    let (ok, failed, stderr) = nats.publisher("admin", &["sectors", "--failed"]);
    assert!(ok, "{stderr}");
    assert!(!failed.contains("f01000.1"), "{failed}");
}

/// `deploy/nats/nats.conf` as an operator runs it: `nats-server -t` accepts each node's file
/// (checked while starting), the three nodes form a cluster over verified TLS routes with the
/// logins of `init --roles --system-account`, the admin creates replicated streams through it,
/// and the system account's user sees all three servers.
#[tokio::test(flavor = "multi_thread")]
async fn the_production_cluster_config_runs_tls_routes_logins_and_a_system_account() {
    let (nats, monitoring) = SecureNats::production_cluster(&["f01000"]);
    for port in &monitoring {
        let varz: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/varz"))
            .await
            .expect("the monitoring port answers")
            .json()
            .await
            .expect("varz is JSON");
        for (what, value) in [
            ("clients' TLS", &varz["tls_required"]),
            ("clients' certificates", &varz["tls_verify"]),
            ("routes' TLS", &varz["cluster"]["tls_required"]),
            ("routes' certificates", &varz["cluster"]["tls_verify"]),
            (
                "fsync per write",
                &varz["jetstream"]["config"]["sync_always"],
            ),
        ] {
            assert_eq!(value, &serde_json::json!(true), "{what}: {varz}");
        }
    }

    // The meta leader may take a moment after the routes come up.
    let init = [
        "init",
        "--replicas",
        "3",
        "--sizes",
        "2KiB",
        "--miners",
        "f01000",
    ];
    wait_for(
        "init --replicas 3 to pass through the cluster",
        Duration::from_secs(60),
        || async { nats.publisher("admin", &init).0.then_some(()) },
    )
    .await;
    let admin = nats.connect("admin").await;
    let mut result = admin.stream(mesh::names::RESULT_STREAM).await.unwrap();
    let cluster = result
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .expect("cluster info");
    assert!(cluster.leader.is_some(), "{cluster:?}");
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");

    let sys = nats
        .config(mesh::broker::roles::SYSTEM_USER)
        .options()
        .await
        .unwrap()
        .connect(
            nats.url()
                .split(',')
                .map(|url| url.parse::<async_nats::ServerAddr>().unwrap())
                .collect::<Vec<_>>(),
        )
        .await
        .expect("the system account's user logs in");
    let inbox = sys.new_inbox();
    let mut replies = sys.subscribe(inbox.clone()).await.unwrap();
    sys.publish_with_reply("$SYS.REQ.SERVER.PING", inbox, Bytes::new())
        .await
        .unwrap();
    let mut names = std::collections::BTreeSet::new();
    while names.len() < 3 {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .unwrap_or_else(|_| panic!("only {names:?} answered the system ping"))
            .expect("subscription open");
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        names.insert(reply["server"]["name"].as_str().unwrap().to_string());
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["nats-1", "nats-2", "nats-3"]
    );
}
