//! Every error a user can cause at start gives one line that names the problem and the fix.

use std::process::Command;
use std::time::Duration;

use mesh_tests::{Mesh, NatsServer, bin, free_port};

/// Runs a binary to completion; returns (success, stderr).
fn run(name: &str, args: &[&str]) -> (bool, String) {
    run_env(name, &[], args)
}

/// Runs a binary to completion with extra environment variables; returns (success, stderr).
fn run_env(name: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `error:` line of a failed run, checked to be one line holding every needle.
fn error_line(name: &str, args: &[&str], needles: &[&str]) -> String {
    env_error_line(name, &[], args, needles)
}

/// [`error_line`] with extra environment variables.
fn env_error_line(name: &str, env: &[(&str, &str)], args: &[&str], needles: &[&str]) -> String {
    let (ok, stderr) = run_env(name, env, args);
    assert!(!ok, "{name} {args:?} succeeded:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string();
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    println!("{}{name} {}\n    -> {line}", env.concat(), args.join(" "));
    line
}

#[test]
fn an_invalid_log_filter() {
    let bad = [("RUST_LOG", "mesh=loud")];
    for (name, args) in [
        ("mesh-worker", &["info"][..]),
        ("mesh-publisher", &["status"][..]),
        (
            "mesh-autoscaler",
            &["plan", "--config", "/nonexistent.toml"][..],
        ),
    ] {
        env_error_line(
            name,
            &bad,
            args,
            &[
                "RUST_LOG=mesh=loud is not a log filter",
                "RUST_LOG=info,mesh=debug",
            ],
        );
    }
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
}

/// A `--nats` value that is no NATS URL is refused before anything connects.
#[test]
fn bad_nats_urls() {
    for (url, needle) in [
        ("nats://127.0.0.1:notaport", "invalid port number"),
        ("http://127.0.0.1:4222", "invalid scheme"),
        ("garbage url", "is not a NATS server URL"),
        ("nats://", "names no host"),
        ("", "no server URL given"),
    ] {
        error_line(
            "mesh-publisher",
            &["init", "--nats", url],
            &["--nats", needle, "write nats://host:4222"],
        );
    }
    error_line(
        "mesh-worker",
        &[
            "run",
            "--store",
            "/tmp/x",
            "--nats",
            "nats://a:4222,ftp://b",
        ],
        &["'ftp://b' is not a NATS server URL", "comma-separated"],
    );
    env_error_line(
        "mesh-publisher",
        &[("MESH_NATS", "nats://a b")],
        &["status"],
        &["--nats", "'nats://a b'"],
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
    let seal = ["seal", "--store", "/tmp/x", "--miner", "f01000"];
    for (extra, needles) in [
        (
            &["--count", "99999999"][..],
            &["--count 99999999", "0 to 10000"][..],
        ),
        (&["--count", "many"], &["--count", "'many'", "0 to 10000"]),
        (
            &["--count", "1", "--max-attempts", "0"],
            &["--max-attempts 0", "1 to 100"],
        ),
        (
            &["--count", "1", "--max-attempts", "x"],
            &["--max-attempts", "'x'", "1 to 100"],
        ),
    ] {
        let mut args = seal.to_vec();
        args.extend(extra);
        error_line("mesh-publisher", &args, needles);
    }
    error_line(
        "mesh-publisher",
        &["init", "--replicas", "three", "--export", "/tmp/unused"],
        &["--replicas", "'three'", "1, 3 or 5"],
    );
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--slots", "lots"],
        &["--slots", "'lots'", "1 to 1024"],
    );
    env_error_line(
        "mesh-worker",
        &[("MESH_SLOTS", "0")],
        &["run", "--store", "/tmp/x"],
        &["--slots 0", "1 to 1024"],
    );
    // Process 1 is not the parent of a worker these tests start.
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--parent-pid", "1"],
        &[
            "--parent-pid 1",
            "this worker's parent is process",
            "leave it out",
        ],
    );
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--drain-timeout", "soon"],
        &["--drain-timeout", "'soon'"],
    );
}

/// The machine, the resource table and miner weights: bad values name themselves and the fix,
/// and a worker that could run none of what it serves says so before it connects.
#[test]
fn bad_resources_and_weights() {
    fn info<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["info"];
        args.extend_from_slice(extra);
        args
    }
    error_line(
        "mesh-worker",
        &info(&["--cpus", "0"]),
        &["--cpus 0", "1 to 4096"],
    );
    env_error_line(
        "mesh-worker",
        &[("MESH_GPUS", "many")],
        &info(&[]),
        &["--gpus", "'many'", "0 to 64"],
    );
    error_line(
        "mesh-worker",
        &info(&["--memory", "lots"]),
        &["--memory", "\"lots\"", "500GiB"],
    );
    env_error_line(
        "mesh-worker",
        &[("PC1_32G_MAX_CONCURRENT", "lots")],
        &info(&[]),
        &["PC1_32G_MAX_CONCURRENT=lots", "whole number", "unset"],
    );
    env_error_line(
        "mesh-worker",
        &[("C2_2K_GPU_UTILIZATION", "-1")],
        &info(&[]),
        &[
            "C2_2K_GPU_UTILIZATION=-1",
            "out of range",
            "1.0 is one whole GPU",
        ],
    );
    error_line(
        "mesh-worker",
        &info(&["--config", "/nonexistent/worker.toml"]),
        &[
            "--config /nonexistent/worker.toml: cannot read it",
            "No such file",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    let path = file.display().to_string();
    for (text, needles) in [
        (
            "[machine]\ncpu = 4\n",
            &["line 2", "unknown field `cpu`", "`cpus`"][..],
        ),
        (
            "[resources.pc1.4KiB]\nmax_concurrent = 1\n",
            &["[resources.pc1.4KiB]", "bad sector size"],
        ),
        (
            "[resources.pc1.32GiB]\nmax_concurent = 1\n",
            &["line 2", "max_concurent"],
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let mut n = vec![path.as_str()];
        n.extend_from_slice(needles);
        error_line("mesh-worker", &info(&["--config", &path]), &n);
    }
    // Nothing it serves fits: refused with each reason, before connecting.
    error_line(
        "mesh-worker",
        &[
            "run",
            "--store",
            "/tmp/x",
            "--phases",
            "pc1",
            "--sizes",
            "32GiB",
            "--memory",
            "16GiB",
            "--scratch-limit",
            "1PiB",
        ],
        &[
            "can run none of the tasks it serves",
            "pc1 32GiB: it needs 56.0 GiB of memory (minimum + base), 16.0 GiB is free",
            "--memory",
        ],
    );
    error_line(
        "mesh-publisher",
        &["miners", "weight", "f01000", "0"],
        &["weight 0 is out of range", "1 to 1000"],
    );
    error_line(
        "mesh-publisher",
        &["miners", "weight", "f01000", "heavy"],
        &["'heavy' is not a weight", "1 to 1000"],
    );
}

/// Replicas a lone server cannot hold are refused with what to do instead.
#[test]
fn replicas_without_a_cluster() {
    let nats = NatsServer::start();
    error_line(
        "mesh-publisher",
        &[
            "init",
            "--nats",
            &nats.url(),
            "--replicas",
            "3",
            "--sizes",
            "2KiB",
        ],
        &[
            "--replicas 3",
            "not part of a JetStream cluster",
            "--replicas 1",
            "nats/cluster/",
        ],
    );
}

/// Durations outside what makes sense: a zero interval, a retry delay longer than the cap.
#[test]
fn bad_durations() {
    let export = ["init", "--export", "/tmp/unused"];
    for (value, needles) in [
        ("0s", &["--ack-wait 0s", "at least 2s"][..]),
        ("100y", &["--ack-wait 100years", "at most 1h"]),
        ("soon", &["--ack-wait", "'soon'"]),
    ] {
        let mut args = export.to_vec();
        args.extend(["--ack-wait", value]);
        error_line("mesh-publisher", &args, needles);
    }
    error_line(
        "mesh-publisher",
        &[
            "seal",
            "--store",
            "/tmp/x",
            "--miner",
            "f01000",
            "--count",
            "1",
            "--status-every",
            "0s",
        ],
        &["--status-every 0s", "1s or more"],
    );
    for (flag, value, allowed) in [
        ("--poll-interval", "0s", "100ms to 1m"),
        ("--poll-interval", "10h", "100ms to 1m"),
        ("--retry-delay", "0s", "100ms to 5m"),
        ("--retry-delay", "1h", "100ms to 5m"),
        ("--store-patience", "2days", "0s to 1day"),
    ] {
        error_line(
            "mesh-worker",
            &["run", "--store", "/tmp/x", flag, value],
            &[&format!("{flag} {value} is out of range"), allowed],
        );
    }
    env_error_line(
        "mesh-worker",
        &[("MESH_RETRY_DELAY", "0s")],
        &["run", "--store", "/tmp/x"],
        &["--retry-delay 0s", "100ms to 5m"],
    );
}

/// Lists that are empty or name something twice, and worker ids that are no key.
#[test]
fn bad_lists_and_ids() {
    let run = ["run", "--store", "/tmp/x"];
    for (flag, value, needles) in [
        ("--phases", "", &["--phases", "bad phase ''", "ap, pc1"][..]),
        ("--phases", "ap,pc1,ap", &["--phases names ap twice"]),
        ("--sizes", "2KiB,2KiB", &["--sizes names 2KiB twice"]),
        (
            "--id",
            "a b/c",
            &["--id", "'a b/c' is not a worker id", "'-' or '_'"],
        ),
        ("--id", "", &["--id", "'' is not a worker id"]),
    ] {
        let mut args = run.to_vec();
        args.extend([flag, value]);
        error_line("mesh-worker", &args, needles);
    }
    env_error_line(
        "mesh-worker",
        &[("MESH_WORKER_ID", "w.1")],
        &run,
        &["--id", "'w.1' is not a worker id"],
    );
    error_line(
        "mesh-publisher",
        &["init", "--sizes", "", "--export", "/tmp/unused"],
        &["--sizes", "bad sector size ''", "2KiB, 8MiB"],
    );
}

/// Store options that are not KEY=VALUE and S3 endpoints that are no URL.
#[test]
fn bad_store_options() {
    let run = ["run", "--store", "s3://bucket"];
    for (flag, value, needles) in [
        (
            "--store-option",
            "region",
            &["--store-option", "'region' is not KEY=VALUE"][..],
        ),
        (
            "--store-option",
            "=x",
            &["--store-option", "'=x' has no KEY"],
        ),
        (
            "--s3-endpoint",
            "localhost 8333",
            &["--s3-endpoint", "http://host:port"],
        ),
        (
            "--s3-endpoint",
            "ftp://x",
            &["--s3-endpoint", "'ftp://x' is not an endpoint URL"],
        ),
    ] {
        let mut args = run.to_vec();
        args.extend([flag, value]);
        error_line("mesh-worker", &args, needles);
    }
    error_line(
        "mesh-worker",
        &["run", "--store", "s3://b", "--store-option", "aws_regoin=x"],
        &["unknown store option 'aws_regoin'", "AmazonS3ConfigKey"],
    );
    error_line(
        "mesh-worker",
        &["run", "--store", "/tmp/x", "--store-option", "aws_region=x"],
        &["a file store takes no options, got 'aws_region'"],
    );
}

/// The executor, its simulated durations, and the scratch space it may use.
#[test]
fn bad_executor_and_scratch() {
    let run = ["run", "--store", "/tmp/x"];
    for (extra, needles) in [
        (
            &["--executor", "fast"][..],
            &[
                "--executor",
                "'fast'",
                "use proofs (real sealing) or synthetic",
            ][..],
        ),
        (
            &["--executor", "synthetic", "--synthetic-durations", "pc1:3s"],
            &["--synthetic-durations", "not PHASE=DURATION", "pc1=3s"],
        ),
        (
            &[
                "--executor",
                "synthetic",
                "--synthetic-durations",
                "pc1=2days",
            ],
            &["--synthetic-durations", "at most 24h"],
        ),
        (
            &["--synthetic-durations", "pc1=1s"],
            &["--synthetic-durations is set but --executor is proofs"],
        ),
        (
            &["--scratch-limit", "0"],
            &["scratch limit (0 B) fits no task", "--scratch-limit"],
        ),
        (
            &["--scratch-limit", "lots"],
            &["--scratch-limit", "unknown unit", "500GiB"],
        ),
        (
            &["--scratch", "/proc/no-such-dir"],
            &["--scratch /proc/no-such-dir: cannot create it"],
        ),
    ] {
        let mut args = run.to_vec();
        args.extend(extra);
        error_line("mesh-worker", &args, needles);
    }
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

/// The autoscaler's config file and broker: a missing file, a bad value, an unreachable server,
/// a server without the mesh's buckets, a local worker binary that does not exist.
#[test]
fn bad_autoscaler_configs() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = "[[group]]\nname = \"pc1\"\nphases = [\"pc1\"]\nsizes = [\"2KiB\"]\nmax = 2\n\
                provider = { kind = \"local\", worker = \"/nonexistent/mesh-worker\" }\n";
    let nats = NatsServer::start();
    let url = nats.url();
    error_line(
        "mesh-autoscaler",
        &["plan", "--nats", &url, "--config", "/nonexistent/a.toml"],
        &["--config /nonexistent/a.toml: cannot read it"],
    );
    let cases = [
        ("max = 2", "max = 2\nmin = 3", "min 3 is above max 2"),
        ("\"2KiB\"", "\"3KiB\"", "bad sector size '3KiB'"),
        (
            "max = 2",
            "max = 2\nscale_down_window = \"soon\"",
            "expected a duration",
        ),
        (
            "kind = \"local\"",
            "kind = \"azure\"",
            "unknown variant `azure`",
        ),
        ("max = 2", "max = 2\nslots = 0", "slots must be 1 or more"),
    ];
    for (i, (from, to, says)) in cases.into_iter().enumerate() {
        let path = config(&format!("bad-{i}.toml"), &good.replace(from, to));
        error_line(
            "mesh-autoscaler",
            &["plan", "--nats", &url, "--config", &path],
            &["--config", says],
        );
    }
    let path = config("good.toml", good);
    let down = format!("nats://127.0.0.1:{}", free_port());
    error_line(
        "mesh-autoscaler",
        &["run", "--nats", &down, "--config", &path],
        &["cannot reach NATS at", &down],
    );
    error_line(
        "mesh-autoscaler",
        &["run", "--nats", &url, "--config", &path],
        &["mesh-drain", "mesh-publisher init"],
    );
    let (ok, stderr) = run(
        "mesh-publisher",
        &["init", "--nats", &url, "--sizes", "2KiB"],
    );
    assert!(ok, "{stderr}");
    error_line(
        "mesh-autoscaler",
        &["run", "--nats", &url, "--config", &path],
        &["pc1: worker = \"/nonexistent/mesh-worker\"", "no such file"],
    );
}
