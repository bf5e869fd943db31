//! The files in `nats/` are what `nats stream add --config` and `nats consumer add --config`
//! send to the server: posting them to the JetStream API by hand gives a topology the mesh
//! accepts, and `mesh-publisher init` is idempotent on top of it.

use std::path::Path;
use std::process::Command;

use mesh::model::SectorSize;
use mesh::phases::Phase;
use mesh_tests::{NatsServer, bin};

#[tokio::test(flavor = "multi_thread")]
async fn the_nats_files_create_a_topology_the_mesh_accepts() {
    let nats = NatsServer::start();
    let broker = mesh::broker::Broker::connect(&nats.url(), "test")
        .await
        .unwrap();
    let client = broker.client();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats");
    let mut streams = 0;
    for entry in std::fs::read_dir(dir.join("streams")).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let name = config["name"].as_str().unwrap();
        let reply = client
            .request(format!("$JS.API.STREAM.CREATE.{name}"), body.into())
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "{}: {reply}", path.display());
        streams += 1;
    }
    // The example consumer: what a publisher makes per miner and class on each task stream.
    let file = "consumers/MESH_TASK_PC1_2KIB.workers-f01000-cc.json";
    let consumer = std::fs::read(dir.join(file)).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&consumer).unwrap();
    let body = serde_json::json!({ "stream_name": "MESH_TASK_PC1_2KIB", "config": config });
    let reply = client
        .request(
            "$JS.API.CONSUMER.CREATE.MESH_TASK_PC1_2KIB.workers-f01000-cc",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply.get("error").is_none(), "{file}: {reply}");
    assert_eq!(streams, 39);
    mesh::broker::topology::check(&broker, &Phase::ALL, &SectorSize::ALL)
        .await
        .unwrap();
    assert!(broker.bucket(mesh::names::SECTORS_BUCKET).await.is_ok());
    // A publisher making sure of that consumer accepts the one made from the file.
    mesh::broker::topology::ensure_task_consumer(
        &broker,
        Phase::PreCommit1,
        SectorSize::KiB2,
        "f01000".parse().unwrap(),
        mesh::model::TaskClass::Cc,
    )
    .await
    .unwrap();

    // init on top of the hand-made topology changes nothing and succeeds, twice.
    for _ in 0..2 {
        let out = Command::new(bin("mesh-publisher"))
            .args(["init", "--nats", &nats.url()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every stream holds the limits the README's *Stream limits* table gives, as the server reports
/// them (what `nats stream info` shows): bytes, age, messages per subject, consumers, and how
/// long a consumer of the held stream or a bucket may stay unused.
#[tokio::test(flavor = "multi_thread")]
async fn every_stream_has_the_limits_the_readme_gives() {
    use mesh::broker::topology::{self as t, Topology};
    let nats = NatsServer::start();
    let broker = mesh::broker::Broker::connect(&nats.url(), "test")
        .await
        .unwrap();
    let topology = Topology {
        sizes: vec![SectorSize::KiB2],
        ..Topology::default()
    };
    topology.ensure(&broker, &[]).await.unwrap();
    let mut rows = vec![vec![
        "stream".to_string(),
        "max msg".into(),
        "max bytes".into(),
        "max age".into(),
        "per subject".into(),
        "consumers".into(),
        "consumer idle".into(),
    ]];
    for wanted in topology.streams() {
        let got = broker
            .stream(&wanted.name)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        let idle = got.consumer_limits.as_ref().map(|l| l.inactive_threshold);
        rows.push(vec![
            got.name.clone(),
            got.max_message_size.to_string(),
            got.max_bytes.to_string(),
            format!("{:?}", got.max_age),
            got.max_messages_per_subject.to_string(),
            got.max_consumers.to_string(),
            idle.map(|d| format!("{d:?}")).unwrap_or_default(),
        ]);
        let name = &got.name;
        assert_eq!(got.max_message_size, wanted.max_message_size, "{name}");
        assert_eq!(got.max_bytes, wanted.max_bytes, "{name}");
        assert_eq!(got.max_age, wanted.max_age, "{name}");
        assert_eq!(got.max_consumers, wanted.max_consumers, "{name}");
        assert_eq!(
            got.max_messages_per_subject, wanted.max_messages_per_subject,
            "{name}"
        );
        assert_eq!(
            got.discard_new_per_subject, wanted.discard_new_per_subject,
            "{name}"
        );
        assert_eq!(
            idle,
            wanted.consumer_limits.map(|l| l.inactive_threshold),
            "{name}"
        );
        // Chosen, not left open: a message size and a consumer count on every stream, bytes
        // on all but the sectors bucket (which must never refuse a sector's state).
        assert!(got.max_message_size > 0 && got.max_consumers > 0, "{name}");
        assert!(got.max_bytes > 0 || name == "KV_mesh-sectors", "{name}");
        if name.starts_with("MESH_TASK_") {
            assert_eq!(got.max_messages_per_subject, t::TASKS_PER_SUBJECT, "{name}");
            assert!(got.discard_new_per_subject, "{name}");
            assert_eq!(got.max_age, t::TASK_MAX_AGE, "{name}");
        }
        if name.starts_with("KV_") {
            assert_eq!(idle, Some(t::BUCKET_CONSUMER_IDLE), "{name}");
        }
    }
    println!("{}", mesh::render::table(&rows));
}

/// A consumer a client leaves on a bucket goes away once unused, whatever the client asked
/// for: the server gives it the bucket's idle limit, and refuses a longer one.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_left_on_a_bucket_cannot_outlive_the_idle_limit() {
    use async_nats::jetstream::consumer::pull;
    use mesh::broker::topology::{BUCKET_CONSUMER_IDLE, Topology};
    let nats = NatsServer::start();
    let broker = mesh::broker::Broker::connect(&nats.url(), "test")
        .await
        .unwrap();
    Topology {
        sizes: vec![SectorSize::KiB2],
        ..Topology::default()
    }
    .ensure(&broker, &[])
    .await
    .unwrap();
    let js = broker.js();
    let left = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("left-behind".into()),
                ..Default::default()
            },
            "KV_mesh-sectors",
        )
        .await
        .unwrap();
    assert_eq!(
        left.cached_info().config.inactive_threshold,
        BUCKET_CONSUMER_IDLE
    );
    let longer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("forever".into()),
                inactive_threshold: BUCKET_CONSUMER_IDLE * 2,
                ..Default::default()
            },
            "KV_mesh-sectors",
        )
        .await;
    assert!(longer.is_err(), "a longer idle time was accepted");
}
