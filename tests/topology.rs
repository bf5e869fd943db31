//! The files in `nats/` are what `nats stream add --config` and `nats consumer add --config`
//! send to the server: posting them to the JetStream API by hand gives a topology the mesh
//! accepts, and `mesh-publisher init` is idempotent on top of it.

use std::path::Path;
use std::process::Command;

use mesh::model::{Phase, SectorSize};
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
    let consumer = std::fs::read(dir.join("consumers/workers.json")).unwrap();
    let consumer: serde_json::Value = serde_json::from_slice(&consumer).unwrap();
    for size in SectorSize::ALL {
        for phase in Phase::ALL {
            let stream = mesh::names::task_stream(phase, size);
            let body = serde_json::json!({ "stream_name": stream, "config": consumer });
            let reply = client
                .request(
                    format!("$JS.API.CONSUMER.CREATE.{stream}.workers"),
                    serde_json::to_vec(&body).unwrap().into(),
                )
                .await
                .unwrap();
            let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert!(reply.get("error").is_none(), "{stream}: {reply}");
        }
    }
    assert_eq!(streams, 34);
    mesh::broker::topology::check(&broker, &Phase::ALL, &SectorSize::ALL)
        .await
        .unwrap();
    assert!(broker.bucket(mesh::names::SECTORS_BUCKET).await.is_ok());

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
