//! Every error a user can cause at start gives one line that names the problem and the fix.

use std::process::Command;
use std::time::Duration;

use mesh_tests::{Mesh, NatsServer, bin, free_port};

/// Runs a binary to completion; returns (success, stderr).
fn run(name: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `error:` line of a failed run, checked to be one line holding every needle.
fn error_line(name: &str, args: &[&str], needles: &[&str]) -> String {
    let (ok, stderr) = run(name, args);
    assert!(!ok, "{name} {args:?} succeeded:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string();
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    println!("{name} {}\n    -> {line}", args.join(" "));
    line
}

#[test]
fn unreachable_broker() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().display().to_string();
    error_line(
        "mesh-worker",
        &["run", "--nats", &url, "--store", &store],
        &["cannot reach NATS at", &url, "--nats"],
    );
    error_line(
        "mesh-publisher",
        &["init", "--nats", &url],
        &["cannot reach NATS at", "nats-server -js"],
    );
    error_line(
        "mesh-publisher",
        &["init", "--nats", "nats://127.0.0.1:notaport"],
        &["cannot reach NATS at nats://127.0.0.1:notaport"],
    );
}

/// A cluster URL list works when one of its servers is down.
#[test]
fn a_list_of_servers_is_a_cluster() {
    let nats = NatsServer::start();
    let down = format!("nats://127.0.0.1:{}", free_port());
    let urls = format!("{down},{}", nats.url());
    let (ok, stderr) = run(
        "mesh-publisher",
        &["init", "--nats", &urls, "--sizes", "2KiB"],
    );
    assert!(ok, "{stderr}");
}

#[test]
fn missing_streams() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().display().to_string();
    error_line(
        "mesh-worker",
        &["run", "--nats", &nats.url(), "--store", &store],
        &["does not exist on the server", "mesh-publisher init"],
    );
    error_line(
        "mesh-publisher",
        &[
            "seal",
            "--nats",
            &nats.url(),
            "--store",
            &store,
            "--miner",
            "f01000",
            "--count",
            "1",
        ],
        &["does not exist on the server", "mesh-publisher init"],
    );
}

#[test]
fn bad_store_url() {
    let nats = NatsServer::start();
    error_line(
        "mesh-worker",
        &["run", "--nats", &nats.url(), "--store", "ftp://host/x"],
        &["bad store URL 'ftp://host/x'", "s3://"],
    );
    error_line(
        "mesh-worker",
        &[
            "run",
            "--nats",
            &nats.url(),
            "--store",
            "s3://b",
            "--store-option",
            "aws_endpiont=x",
        ],
        &["unknown store option 'aws_endpiont'"],
    );
}

#[test]
fn unknown_size_and_phase() {
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--sizes", "4KiB"],
        &["4KiB", "2KiB, 8MiB, 512MiB, 32GiB, 64GiB"],
    );
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--phases", "pc3"],
        &["pc3", "ap, pc1, pc2, c1, c2, fin"],
    );
    error_line(
        "mesh-publisher",
        &[
            "seal", "--store", "/tmp/x", "--miner", "f01000", "--size", "1TiB",
        ],
        &["1TiB", "2KiB"],
    );
}

#[test]
fn bad_miner_id() {
    error_line(
        "mesh-publisher",
        &[
            "seal", "--store", "/tmp/x", "--miner", "x01000", "--count", "1",
        ],
        &["bad miner id 'x01000'", "f01000"],
    );
}

#[test]
fn bad_numbers_and_pieces() {
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--slots", "0"],
        &["--slots 0", "1 to 1024"],
    );
    error_line(
        "mesh-publisher",
        &["init", "--replicas", "2", "--export", "/tmp/unused"],
        &["--replicas 2", "3 or 5"],
    );
    error_line(
        "mesh-publisher",
        &["seal", "--store", "/tmp/x", "--miner", "f01000"],
        &["nothing to do", "--count"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pieces_that_do_not_fit_or_do_not_exist() {
    let mesh = Mesh::start().await;
    let store = mesh.store_dir().display().to_string();
    let url = mesh.url();
    let big = mesh.path("big.bin");
    std::fs::write(&big, vec![1u8; 3000]).unwrap();
    let base = [
        "seal", "--nats", &url, "--store", &store, "--miner", "f01000", "--count", "1",
    ];
    let mut args = base.to_vec();
    args.extend(["--piece", big.to_str().unwrap()]);
    error_line("mesh-publisher", &args, &["do not fit in a 2KiB sector"]);
    let mut args = base.to_vec();
    args.extend(["--piece", "/nonexistent/piece"]);
    error_line(
        "mesh-publisher",
        &args,
        &["--piece /nonexistent/piece", "cannot read it"],
    );
}

/// A worker without parameters, and a store without them either, fails Commit2 at once with a
/// message that says how to get them; the publisher reports it as the sector's failure.
#[tokio::test(flavor = "multi_thread")]
async fn missing_parameters() {
    let mesh = Mesh::start().await;
    let empty_cache = mesh.path("no-params");
    let cache = empty_cache.display().to_string();
    let _worker = mesh.worker("w1", &["--param-cache", &cache]);
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--param-cache", &cache]);
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(!status.success());
    let log = publisher.log_text();
    let failure = log
        .lines()
        .find(|l| l.starts_with("failed f01000.1"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"));
    for needle in [
        "c2:",
        "mesh-worker params generate --size 2KiB",
        "params push",
        "lotus fetch-params",
    ] {
        assert!(failure.contains(needle), "{needle:?} not in: {failure}");
    }
    println!("missing parameters -> {failure}");
}
