//! The S3 path on a real S3 server (SeaweedFS): parameters pushed to and pulled from the bucket
//! by a worker that starts without them, and a sector with a piece sealed through the bucket.

use std::time::Duration;

use mesh_tests::{Mesh, Proc, Seaweed, bin, lines, require_2kib_params, s3_store, verify_out_line};

#[tokio::test(flavor = "multi_thread")]
async fn a_sector_seals_through_s3_with_parameters_pulled_from_it() {
    let params = require_2kib_params();
    let s3 = Seaweed::start();
    let url = format!("s3://{}/mesh-test", s3.bucket);
    let store = s3_store(&s3, "mesh-test").await;

    let mesh = Mesh::start().await;
    let env: Vec<(String, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cache = params.display().to_string();
    let mut push = Proc::spawn(
        &bin("mesh-worker"),
        &[
            "params",
            "push",
            "--store",
            &url,
            "--param-cache",
            &cache,
            "--sizes",
            "2KiB",
        ],
        &env,
        &mesh.log("push"),
    );
    assert!(
        push.wait(Duration::from_secs(300)).await.success(),
        "{}",
        push.tail(20)
    );

    // The worker starts with an empty parameter cache: it must pull them for Commit2.
    let worker_cache = mesh.path("worker-params").display().to_string();
    let scratch = mesh.scratch().display().to_string();
    let nats = mesh.url();
    let _worker = Proc::spawn(
        &bin("mesh-worker"),
        &[
            "run",
            "--nats",
            &nats,
            "--store",
            &url,
            "--scratch",
            &scratch,
            "--id",
            "s3w",
            "--param-cache",
            &worker_cache,
        ],
        &env,
        &mesh.log("worker"),
    );
    let piece = mesh.path("piece.txt");
    std::fs::write(&piece, "a small deal, sealed through S3\n".repeat(20)).unwrap();
    let out = mesh.path("sealed.jsonl");
    let mut publisher = Proc::spawn(
        &bin("mesh-publisher"),
        &[
            "seal",
            "--nats",
            &nats,
            "--store",
            &url,
            "--miner",
            "f01000",
            "--count",
            "1",
            "--piece",
            piece.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--param-cache",
            &cache,
        ],
        &env,
        &mesh.log("publisher"),
    );
    let status = publisher.wait(Duration::from_secs(600)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    let lines = lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(verify_out_line(&lines[0]), 1);

    let files =
        mesh::proofs::params::param_files(mesh::proofs::seal_proof(mesh::model::SectorSize::KiB2))
            .unwrap();
    assert!(
        mesh::proofs::params::missing(&mesh.path("worker-params"), files.all()).is_empty(),
        "the worker pulled the parameters"
    );
    // A sector with a deal keeps its unsealed copy; the bucket holds exactly what the record
    // refers to.
    let listed = store.list("f01000/1/").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.iter().any(|k| k.ends_with("/sealed")), "{names:?}");
    assert!(names.iter().any(|k| k.ends_with("/unsealed")), "{names:?}");
    assert!(!names.iter().any(|k| k.contains("layer")), "{names:?}");
}
