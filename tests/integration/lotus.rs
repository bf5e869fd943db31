//! The mesh against a lotus miner and full node: a fake (tests/fakes/lotus.py), because lotus
//! cannot be installed on a test machine. The fake follows lotus's wire format as lotus's source
//! defines it (JSON-RPC method names, positional parameters and permissions, go-bitfield and
//! go-cid JSON, `SectorReceive`'s checks, its downloads and Commit1/Commit2/done calls), written
//! apart from the mesh's own reading of it; it precommits nothing on a chain. Real 2KiB proofs:
//! the proofs lotus gets are verified here with the ticket and seed of the fake's chain.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh::lotus::rpc::RpcError;
use mesh::lotus::{ApiInfo, Lotus};
use mesh_tests::{Mesh, Proc, bin, free_port, lines, require_2kib_params, wait_for};
use serde_json::Value;

const ADMIN: &str = "admin-token";
const READ: &str = "read-token";

struct FakeLotus {
    port: u16,
    log: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl FakeLotus {
    async fn start() -> FakeLotus {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> FakeLotus {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("calls.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes/lotus.py");
        let port_arg = port.to_string();
        let log_arg = log.to_str().expect("utf-8 temp path").to_string();
        let admin = format!("--token={ADMIN}=read,write,sign,admin");
        let read = format!("--token={READ}=read");
        let data = dir.path().join("data");
        let data_arg = data.to_str().expect("utf-8 temp path").to_string();
        let mut args = vec![
            script.to_str().expect("utf-8 path"),
            "--data-dir",
            &data_arg,
            "--port",
            &port_arg,
            "--log",
            &log_arg,
            "--actor",
            "f01000",
            "--sector-size",
            "2048",
            "--height",
            "10000",
            &admin,
            &read,
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(
            Path::new("python3"),
            &args,
            &[],
            &dir.path().join("lotus.log"),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_for("the fake lotus to listen", Duration::from_secs(20), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
        FakeLotus {
            port,
            log,
            _proc: proc,
            _dir: dir,
        }
    }

    /// An API info string in lotus's form with `token`.
    fn info(&self, token: &str) -> String {
        format!("{token}:/ip4/127.0.0.1/tcp/{}/http", self.port)
    }

    fn lotus(&self, miner_token: &str, node_token: &str) -> Lotus {
        Lotus::new(
            self.info(miner_token).parse::<ApiInfo>().unwrap(),
            self.info(node_token).parse::<ApiInfo>().unwrap(),
        )
    }

    /// The fake's view of the sectors it received (`GET /debug/sectors`).
    async fn sectors(&self) -> serde_json::Map<String, Value> {
        let url = format!("http://127.0.0.1:{}/debug/sectors", self.port);
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    /// Waits until the fake holds `count` sectors all in `state`.
    async fn wait_state(&self, count: usize, state: &str, deadline: Duration) {
        wait_for(
            &format!("{count} sector(s) in lotus state {state}"),
            deadline,
            || async move {
                let sectors = self.sectors().await;
                for s in sectors.values() {
                    assert_ne!(s["state"], "Failed", "lotus failed a sector: {s}");
                }
                (sectors.len() == count && sectors.values().all(|s| s["state"] == state))
                    .then_some(())
            },
        )
        .await;
    }

    /// The calls the fake served, in order.
    fn calls(&self, method: &str) -> Vec<Value> {
        lines(&self.log)
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|c| c["method"] == format!("Filecoin.{method}"))
            .collect()
    }
}

/// `mesh-publisher lotus check` with the two API info strings; (success, stdout, stderr).
fn check(miner: &str, node: &str) -> (bool, String, String) {
    let out = Command::new(bin("mesh-publisher"))
        .args(["lotus", "check"])
        .env("MINER_API_INFO", miner)
        .env("FULLNODE_API_INFO", node)
        .env("RUST_LOG", "error")
        .output()
        .expect("run mesh-publisher");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_the_miner_the_tokens_and_the_ticket_the_chain_gives_now() {
    let lotus = FakeLotus::start().await;
    let (ok, out, err) = check(&lotus.info(ADMIN), &lotus.info(READ));
    assert!(ok, "{out}{err}");
    for needle in [
        "f01000 seals 2KiB sectors (lotus seal proof 5)",
        "miner API  token allows read, write, sign, admin",
        "node API   token allows read",
        "head at epoch 10000",
        "ticket of epoch 9100 (900 behind)",
        "ready      yes",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    // The ticket is seal randomness (tag 5) at head − 900, over the CBOR of f01000's address
    // (43 00 e8 07), from the head's tipset key: what lotus's getTicket asks for.
    let draws = lotus.calls("StateGetRandomnessFromTickets");
    assert_eq!(draws.len(), 1, "{draws:?}");
    let draw = &draws[0];
    let head = &lotus.calls("ChainHead")[0]["result"];
    assert_eq!(draw["api"], "v1");
    assert_eq!(draw["params"][0], 5);
    assert_eq!(draw["params"][1], 9100);
    assert_eq!(draw["params"][2], "QwDoBw==");
    assert_eq!(draw["params"][3], head["Cids"]);
    let ticket = base64_to_hex(draw["result"].as_str().unwrap());
    assert!(out.contains(&ticket), "ticket {ticket} not in:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_miner_token_bad_tokens_and_unreachable_apis_are_explained() {
    let lotus = FakeLotus::start().await;
    let (ok, out, err) = check(&lotus.info(READ), &lotus.info(READ));
    assert!(!ok, "{out}");
    assert!(out.contains("ready      no"), "{out}");
    assert!(
        err.contains(
            "the miner's token allows read; SectorNumReserveCount and SectorReceive need admin"
        ) && err.contains("lotus-miner auth api-info --perm admin"),
        "{err}"
    );

    let (ok, _, err) = check(&lotus.info("stolen"), &lotus.info(READ));
    assert!(!ok);
    assert!(
        err.contains("the lotus miner (MINER_API_INFO, --miner-api) refused the token (401)"),
        "{err}"
    );
    assert!(!err.contains("stolen"), "the token is shown: {err}");

    let closed = format!("{READ}:/ip4/127.0.0.1/tcp/{}/http", free_port());
    let (ok, _, err) = check(&lotus.info(ADMIN), &closed);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the lotus full node (FULLNODE_API_INFO, --node-api)"),
        "{err}"
    );

    let (ok, _, err) = check("secret:/ip4/127.0.0.1/tcp/x/http", &lotus.info(READ));
    assert!(!ok);
    assert!(
        err.contains("'x' is not a TCP port") && err.contains("TOKEN:/ip4/HOST/tcp/PORT/http"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the token is shown: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sector_numbers_are_reserved_by_name_and_found_again() {
    let fake = FakeLotus::start().await;
    let lotus = fake.lotus(ADMIN, READ);
    assert_eq!(lotus.reserve("mesh-a", 3).await.unwrap(), vec![0, 1, 2]);
    assert_eq!(lotus.reserve("mesh-b", 2).await.unwrap(), vec![3, 4]);
    let all = lotus.reservations().await.unwrap();
    assert_eq!(all.get("mesh-a"), Some(&vec![0, 1, 2]));
    assert_eq!(all.get("mesh-b"), Some(&vec![3, 4]));
    // The wire format: SectorNumReserveCount [name, count] on the miner's v0 API.
    let calls = fake.calls("SectorNumReserveCount");
    assert_eq!(calls[0]["api"], "v0");
    assert_eq!(calls[0]["params"], serde_json::json!(["mesh-a", 3]));
    assert_eq!(calls[1]["result"], serde_json::json!([3, 2]));
    // A name taken is lotus's error, passed on.
    let e = lotus.reserve("mesh-a", 1).await.unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    // Reserving needs admin.
    let reader = fake.lotus(READ, READ);
    match reader.reserve("mesh-c", 1).await.unwrap_err() {
        e @ RpcError::Permission { .. } => {
            let text = e.to_string();
            assert!(
                text.contains("needs the 'admin' permission")
                    && text.contains("lotus-miner auth api-info --perm admin"),
                "{text}"
            );
        }
        other => panic!("not a permission error: {other}"),
    }
}

fn base64_to_hex(text: &str) -> String {
    use base64::Engine;
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
}

/// `mesh-publisher lotus pledge --count N` against the fake and the mesh's file store.
fn pledge(mesh: &Mesh, lotus: &FakeLotus, name: &str, count: u64, port: u16) -> Proc {
    let count = count.to_string();
    lotus_publisher(mesh, lotus, name, &["pledge", "--count", &count], port)
}

/// `mesh-publisher lotus <command>` against the fake and the mesh's file store, its listener on
/// `port`.
fn lotus_publisher(
    mesh: &Mesh,
    lotus: &FakeLotus,
    name: &str,
    command: &[&str],
    port: u16,
) -> Proc {
    let url = mesh.url();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["lotus"];
    args.extend_from_slice(command);
    args.extend(["--nats", &url, "--store", &mesh.store, "--listen", &listen]);
    Proc::spawn(
        &bin("mesh-publisher"),
        &args,
        &[
            ("MINER_API_INFO", &lotus.info(ADMIN)),
            ("FULLNODE_API_INFO", &lotus.info(READ)),
        ],
        &mesh.log(name),
    )
}

/// Checks a sector lotus reports proving: its files as lotus keeps them, and a proof that
/// verifies with the ticket and seed lotus's chain gave (`verify_seal` straight from
/// filecoin-proofs-api, as lotus's `checkCommit` would).
fn check_proving(number: &str, sector: &Value) {
    use filecoin_proofs_api::{RegisteredSealProof, SectorId, seal};
    assert_eq!(sector["state"], "Proving", "{sector}");
    let files = sector["cache_files"].as_object().unwrap();
    for name in ["p_aux", "t_aux", "sc-02-data-tree-r-last.dat"] {
        assert!(
            files.contains_key(name),
            "{name} not in the cache lotus got: {sector}"
        );
    }
    assert_eq!(files.len(), 3, "the cache lotus got: {sector}");
    assert_eq!(sector["sealed_bytes"], 2048);
    assert_eq!(sector["unsealed_bytes"], 2048);
    let bytes = |key: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(
                sector[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{key}: {sector}")),
            )
            .unwrap()
    };
    let comm = |key: &str, codec| {
        let cid: mesh::lotus::wire::Cid = sector[key].as_str().unwrap().parse().unwrap();
        cid.commitment_of(codec).unwrap()
    };
    let miner: mesh::model::MinerId = "f01000".parse().unwrap();
    let ok = seal::verify_seal(
        RegisteredSealProof::StackedDrg2KiBV1_1,
        comm("comm_r", mesh::lotus::wire::FIL_COMMITMENT_SEALED),
        comm("comm_d", mesh::lotus::wire::FIL_COMMITMENT_UNSEALED),
        miner.prover_id(),
        SectorId::from(number.parse::<u64>().unwrap()),
        bytes("ticket").try_into().unwrap(),
        bytes("seed").try_into().unwrap(),
        &bytes("proof"),
    )
    .expect("verify_seal runs");
    assert!(
        ok,
        "sector {number}: the proof does not verify with lotus's ticket and seed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pledged_sectors_are_received_committed_and_done_and_their_proofs_verify() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let lotus = FakeLotus::start().await;
    let _worker = mesh.worker("w1", &[]);
    let mut publisher = pledge(&mesh, &lotus, "pledge", 2, free_port());
    let status = publisher.wait(Duration::from_secs(600)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    // The publisher ends on lotus's done call; the fake says Proving once that call returned.
    lotus
        .wait_state(2, "Proving", Duration::from_secs(30))
        .await;
    let sectors = lotus.sectors().await;
    assert_eq!(sectors.len(), 2, "{sectors:?}");
    for (number, sector) in &sectors {
        check_proving(number, sector);
        // Lotus's reservation gave the numbers: the first two free ones.
        assert!(["0", "1"].contains(&number.as_str()), "{number}");
    }
    assert_eq!(lotus.calls("SectorNumReserveCount").len(), 1);
    let text = publisher.log_text();
    assert!(
        text.contains("f01000.0: done") && text.contains("f01000.1: done"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_killed_between_receive_and_commit1_is_answered_by_lotus_run_which_adopts_orphaned_numbers()
 {
    require_2kib_params();
    let mesh = Mesh::start().await;
    // Lotus retries a failed Commit1 call (the fake every 0.5 s, 240 times).
    let lotus = FakeLotus::start_with(&["--retries", "240", "--retry-interval", "0.5"]).await;
    let _worker = mesh.worker("w1", &[]);
    let port = free_port();
    let mut first = pledge(&mesh, &lotus, "pledge-1", 1, port);
    wait_for(
        "lotus to receive the sector",
        Duration::from_secs(300),
        || async {
            let sectors = lotus.sectors().await;
            sectors
                .values()
                .any(|s| s["state"] != "Receiving")
                .then_some(())
        },
    )
    .await;
    first.kill();
    // A pledge killed between reserving its numbers and creating their sectors leaves a
    // reservation of the mesh's with no sector: `lotus run` must seal it, not lose it.
    let client = mesh::lotus::Lotus::new(
        lotus.info(ADMIN).parse().unwrap(),
        lotus.info(READ).parse().unwrap(),
    );
    assert_eq!(
        client.reserve("mesh-f01000-1", 1).await.unwrap(),
        vec![1],
        "the orphaned reservation"
    );

    let mut run = lotus_publisher(&mesh, &lotus, "run", &["run"], port);
    lotus
        .wait_state(2, "Proving", Duration::from_secs(600))
        .await;
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let status = run.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", run.tail(30));
    assert!(
        run.log_text()
            .contains("a reserved number had no sector; created it"),
        "{}",
        run.tail(30)
    );

    let sectors = lotus.sectors().await;
    assert_eq!(sectors.len(), 2, "no sector received twice: {sectors:?}");
    for (number, sector) in &sectors {
        check_proving(number, sector);
    }
    // No number lost or used twice: two reservations of one number each, two sectors.
    let reservations = client.reservations().await.unwrap();
    let mut numbers: Vec<u64> = reservations.values().flatten().copied().collect();
    numbers.sort();
    assert_eq!(numbers, vec![0, 1], "{reservations:?}");
    let listing = mesh.publisher(&["sectors", "--miner", "f01000"]);
    assert_eq!(
        listing.matches("lotus: done (Proving)").count(),
        2,
        "{listing}"
    );
    println!(
        "FIGURE lotus restart: Commit1 calls to sector 0 that failed while no publisher ran: {}",
        sectors["0"]["commit1_failures"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_refuses_wrong_secrets_and_sectors_that_are_not_ready() {
    let mesh = Mesh::start().await;
    let lotus = FakeLotus::start().await;
    let port = free_port();
    // No worker: the sector waits for AddPiece, so none of its files is in the store yet.
    let mut publisher = pledge(&mesh, &lotus, "pledge", 1, port);
    let broker = mesh.broker().await;
    let bucket = broker.bucket(mesh::names::SECTORS_BUCKET).await.unwrap();
    let key = mesh::names::sector_key("f01000".parse().unwrap(), mesh::model::SectorNum(0));
    let record: mesh::sector::SectorRecord =
        wait_for("the sector's record", Duration::from_secs(60), || async {
            let value = bucket.get(&key).await.ok().flatten()?;
            mesh::model::decode(&value).ok()
        })
        .await;
    let lotus_part = record.lotus.clone().expect("a lotus sector");
    assert_eq!(lotus_part.ticket_epoch, 9100);
    let secret = lotus_part.secret;
    wait_for("the listener", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/sectors");
    let get = |path: String, secret: Option<String>| {
        let mut request = client.get(format!("{base}/{path}"));
        if let Some(s) = secret {
            request = request.bearer_auth(s);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let right = Some(secret.clone());
    assert_eq!(get("f01000/0/sealed".into(), None).await.0, 401);
    assert_eq!(
        get("f01000/0/sealed".into(), Some("guess".into())).await.0,
        401
    );
    let (status, body) = get("f01000/0/sealed".into(), right.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("sector f01000.0 has no sealed in the store yet (it is in ap)"),
        "{body}"
    );
    let (status, body) = get("f01000/0/cache".into(), right.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(get("f01000/9/sealed".into(), right.clone()).await.0, 404);
    assert_eq!(get("f01001/0/sealed".into(), right.clone()).await.0, 404);
    assert_eq!(get("f01000/0/layers".into(), right.clone()).await.0, 404);

    let post = |path: &str, body: &str| {
        let request = client
            .post(format!("{base}/{path}"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let c1 = serde_json::json!({
        "Ticket": "AA==", "Seed": "AA==", "Unsealed": {"/": "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy"},
        "Sealed": {"/": "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy"}, "ProofType": 5
    })
    .to_string();
    assert_eq!(post("f01000/0/commit1", &c1).await.0, 401);
    assert_eq!(post("f01000/0/commit1?token=guess", &c1).await.0, 401);
    let (status, body) = post(&format!("f01000/0/commit1?token={secret}"), "{").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("RemoteCommit1Params body"), "{body}");
    let (status, body) = post(&format!("f01000/0/commit1?token={secret}"), &c1).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("the ticket is not the sector's"), "{body}");
    assert_eq!(post("f01000/0/done", "{}").await.0, 401);

    let listing = mesh.publisher(&["sectors", "--miner", "f01000"]);
    assert!(
        listing.contains("lotus: sealing (ticket of epoch 9100)"),
        "{listing}"
    );
    publisher.kill();
}
