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
    assert_eq!(streams, 37);
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
