//! The mesh against a lotus miner and full node: a fake (tests/fakes/lotus.py), because lotus
//! cannot be installed on a test machine. The fake follows lotus's JSON-RPC wire format (method
//! names, positional parameters, permissions, go-bitfield and go-cid JSON) as lotus's source
//! defines it, written apart from the mesh's own reading of it; it does not run lotus's sealing
//! pipeline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh::lotus::rpc::RpcError;
use mesh::lotus::{ApiInfo, Lotus};
use mesh_tests::{Proc, bin, free_port, lines, wait_for};
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
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("calls.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes/lotus.py");
        let port_arg = port.to_string();
        let log_arg = log.to_str().expect("utf-8 temp path").to_string();
        let admin = format!("--token={ADMIN}=read,write,sign,admin");
        let read = format!("--token={READ}=read");
        let proc = Proc::spawn(
            Path::new("python3"),
            &[
                script.to_str().expect("utf-8 path"),
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
            ],
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
