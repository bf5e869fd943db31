//! The GCP provider against a fake Compute Engine API (tests/fakes/gce_api.py): a fake, because
//! no real GCP API can run on a test machine. The fake keeps a managed instance group's state,
//! issues metadata-server tokens and checks them, so these tests cover the provider's requests,
//! paging, auth and error reporting, not Google's timing or its full behaviour.
//!
//! The provider takes its token from the fake's metadata endpoint: `MESH_GCP_ACCESS_TOKEN` must
//! not be set while these run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh::autoscaler::provider::gcp::{ACCESS_TOKEN_ENV, Gcp, GcpConfig};
use mesh::autoscaler::provider::{Instance, InstanceState};
use mesh_tests::{Proc, free_port, wait_for};
use serde_json::{Value, json};

const PROJECT: &str = "mesh-test";
const ZONE: &str = "us-central1-a";
const REGION: &str = "us-central1";
const GROUP: &str = "mesh-pc1-cpu";

struct FakeGce {
    port: u16,
    log: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl FakeGce {
    async fn start(args: &[&str]) -> FakeGce {
        assert!(
            std::env::var_os(ACCESS_TOKEN_ENV).is_none(),
            "unset {ACCESS_TOKEN_ENV}: these tests take tokens from the fake metadata server"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes/gce_api.py");
        let port_arg = port.to_string();
        let log_arg = log.to_str().expect("utf-8 temp path").to_string();
        let mut all = vec![
            script.to_str().expect("utf-8 path"),
            "--port",
            &port_arg,
            "--log",
            &log_arg,
        ];
        all.extend_from_slice(args);
        let proc = Proc::spawn(
            Path::new("python3"),
            &all,
            &[],
            &dir.path().join("gce_api.log"),
        );
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_for(
            "the fake gce api to listen",
            Duration::from_secs(20),
            || async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        FakeGce {
            port,
            log,
            _proc: proc,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn zonal(&self, group: &str) -> GcpConfig {
        GcpConfig {
            project: PROJECT.into(),
            zone: Some(ZONE.into()),
            region: None,
            group: group.into(),
            endpoint: Some(format!("{}/compute/v1", self.url())),
            metadata_endpoint: Some(self.url()),
        }
    }

    fn regional(&self, group: &str) -> GcpConfig {
        GcpConfig {
            zone: None,
            region: Some(REGION.into()),
            ..self.zonal(group)
        }
    }

    /// Every request the fake has had, oldest first.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .expect("read the fake's request log")
            .lines()
            .map(|line| serde_json::from_str(line).expect("request log line"))
            .collect()
    }

    /// The requests that change the group: (action, query, body).
    fn changes(&self) -> Vec<(String, Value, Value)> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == "POST")
            .filter_map(|r| {
                let action = r["path"].as_str()?.rsplit('/').next()?.to_string();
                (action != "listManagedInstances")
                    .then(|| (action, r["query"].clone(), r["body"].clone()))
            })
            .collect()
    }

    fn tokens_issued(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/token")))
            .count()
    }
}

fn names(instances: &[Instance]) -> Vec<String> {
    let mut names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_missing_group_is_a_clear_error() {
    let fake = FakeGce::start(&["--zonal", &format!("{PROJECT}/{ZONE}/{GROUP}")]).await;
    let err = Gcp::open(&fake.zonal("mesh-nope"), "pc1")
        .await
        .err()
        .expect("opening a group that does not exist fails")
        .to_string();
    println!("{err}");
    for part in [
        "pc1",
        "mesh-nope",
        PROJECT,
        ZONE,
        "does not exist",
        "404",
        "was not found",
        "terraform/modules/gcp-worker-group",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[tokio::test]
async fn grows_then_removes_exactly_the_named_instances() {
    let fake = FakeGce::start(&["--zonal", &format!("{PROJECT}/{ZONE}/{GROUP}")]).await;
    let mut gcp = Gcp::open(&fake.zonal(GROUP), "pc1").await.expect("open");
    assert!(gcp.instances().await.expect("list").is_empty());

    gcp.grow(3).await.expect("grow");
    let instances = gcp.instances().await.expect("list");
    assert_eq!(instances.len(), 3, "{instances:?}");
    for i in &instances {
        assert_eq!(i.state, InstanceState::Running, "{i:?}");
        assert!(i.name.starts_with(&format!("{GROUP}-")), "{i:?}");
    }

    let all = names(&instances);
    let (gone, kept) = (all[..2].to_vec(), all[2].clone());
    gcp.remove(&gone).await.expect("remove");
    assert_eq!(names(&gcp.instances().await.expect("list")), vec![kept]);

    let expected = vec![
        ("resize".to_string(), json!({"size": "3"}), Value::Null),
        (
            "deleteInstances".to_string(),
            json!({}),
            json!({
                "instances": gone.iter().map(|n| format!("zones/{ZONE}/instances/{n}")).collect::<Vec<_>>(),
                "skipInstancesOnValidationError": true,
            }),
        ),
    ];
    assert_eq!(fake.changes(), expected);
    let gets: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "GET" && !r["path"].as_str().unwrap_or("").ends_with("/token"))
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(
        gets,
        vec![json!(format!(
            "/compute/v1/projects/{PROJECT}/zones/{ZONE}/instanceGroupManagers/{GROUP}"
        ))]
    );
    assert_eq!(fake.tokens_issued(), 1, "the token is cached");
}

#[tokio::test]
async fn a_regional_group_is_listed_across_pages_and_shrunk_across_zones() {
    let fake = FakeGce::start(&[
        "--regional",
        &format!("{PROJECT}/{REGION}/{GROUP}"),
        "--page-size",
        "2",
    ])
    .await;
    let mut gcp = Gcp::open(&fake.regional(GROUP), "pc1").await.expect("open");
    gcp.grow(5).await.expect("grow");
    let all = names(&gcp.instances().await.expect("list"));
    assert_eq!(all.len(), 5, "all pages are read: {all:?}");
    let next_pages = fake
        .requests()
        .iter()
        .filter(|r| r["query"]["pageToken"].is_string())
        .count();
    assert_eq!(next_pages, 2, "5 instances in pages of 2");

    // The fake spreads instances over <region>-a and <region>-b and deletes only those named
    // with their own zone, which the provider learns from the group.
    let gone = vec![all[0].clone(), all[3].clone()];
    gcp.remove(&gone).await.expect("remove");
    let left = names(&gcp.instances().await.expect("list"));
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(gone.iter().all(|n| !left.contains(n)), "{left:?}");

    let (action, _, body) = fake.changes().pop().expect("a change");
    assert_eq!(action, "deleteInstances");
    let urls: Vec<&str> = body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(urls.len(), 2, "{body}");
    for (url, name) in urls.iter().zip(&gone) {
        assert!(
            url.starts_with(&format!("zones/{REGION}-"))
                && url.ends_with(&format!("/instances/{name}")),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_token_is_fetched_again_before_it_expires() {
    let fake = FakeGce::start(&[
        "--zonal",
        &format!("{PROJECT}/{ZONE}/{GROUP}"),
        "--token-lifetime",
        "2",
    ])
    .await;
    let gcp = Gcp::open(&fake.zonal(GROUP), "pc1").await.expect("open");
    // The fake rejects a token once its 2 s are up; the provider fetches a new one at half its
    // lifetime, so every call keeps working.
    let (gcp, fake) = (&tokio::sync::Mutex::new(gcp), &fake);
    wait_for("a second token", Duration::from_secs(10), || async move {
        let listed = gcp.lock().await.instances().await;
        listed.expect("list with a fresh token");
        (fake.tokens_issued() >= 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rejected_token_shows_googles_message() {
    // Tokens from another fake's metadata server are unknown to this one's API.
    let api = FakeGce::start(&["--zonal", &format!("{PROJECT}/{ZONE}/{GROUP}")]).await;
    let metadata = FakeGce::start(&[]).await;
    let config = GcpConfig {
        metadata_endpoint: Some(metadata.url()),
        ..api.zonal(GROUP)
    };
    let err = Gcp::open(&config, "pc1")
        .await
        .err()
        .expect("a 401")
        .to_string();
    println!("{err}");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("invalid authentication credentials"), "{err}");
}

#[tokio::test]
async fn no_token_source_is_a_clear_error() {
    let api = FakeGce::start(&["--zonal", &format!("{PROJECT}/{ZONE}/{GROUP}")]).await;
    let config = GcpConfig {
        metadata_endpoint: Some(format!("http://127.0.0.1:{}", free_port())),
        ..api.zonal(GROUP)
    };
    let err = Gcp::open(&config, "pc1")
        .await
        .err()
        .expect("no token")
        .to_string();
    println!("{err}");
    for part in [
        "no access token",
        ACCESS_TOKEN_ENV,
        "metadata server",
        "service account",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}
