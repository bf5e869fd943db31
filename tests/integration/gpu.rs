//! GPUs, one per task. No GPU can run here, so a worker declares two (`--gpus 2`) in a build
//! without GPU support: the proofs run on the CPU, but the worker hands out its GPUs exactly as
//! a CUDA build does, and each proof process reports the `CUDA_VISIBLE_DEVICES` it was given.
//! Real proofs at 2KiB through a real nats-server.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_tests::{Mesh, require_2kib_params, wait_for};

/// The `gpus=…` value of a log line, without quotes.
fn gpus_field(line: &str) -> Option<String> {
    let rest = &line[line.find("gpus=")? + "gpus=".len()..];
    let value: String = rest
        .trim_start_matches(['"', '\\'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ','))
        .collect();
    (!value.is_empty()).then_some(value)
}

/// A worker with two GPUs runs two Commit2 at once, each proof process seeing only its own GPU
/// (device 0 and device 1). Were they run one after the other, both would be given device 0,
/// the lowest of equally free GPUs.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_two_gpus_runs_two_commit2_each_on_its_own() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let _early = mesh.worker("early", &["--no-holding", "--phases", "ap,pc1,pc2,c1,fin"]);
    let gpu = mesh.worker("gpu", &["--no-holding", "--phases", "c2", "--gpus", "2"]);
    let _sealing = mesh.seal("publisher", &["--count", "2"]);

    let children = wait_for(
        "both Commit2 proof processes to report their GPU",
        Duration::from_secs(120),
        || async {
            let seen: BTreeSet<String> = gpu
                .log_text()
                .lines()
                .filter(|line| line.contains("this proof process sees only these GPUs"))
                .filter_map(gpus_field)
                .collect();
            (seen.len() == 2).then_some(seen)
        },
    )
    .await;
    let log = gpu.log_text();
    assert_eq!(children.into_iter().collect::<Vec<_>>(), ["0", "1"]);
    let started: BTreeSet<String> = log
        .lines()
        .filter(|line| line.contains("task started"))
        .filter_map(gpus_field)
        .collect();
    assert_eq!(started.into_iter().collect::<Vec<_>>(), ["0", "1"], "{log}");
    assert!(
        log.contains("this build has no GPU support")
            && log.contains("reserves one of the 2 declared GPU(s)"),
        "{log}"
    );
}
