//! `--log-format json` and the proof child's output in the worker's log.

use std::time::Duration;

use mesh_tests::Mesh;

/// Every line of a JSON log, parsed.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_task_span_and_the_proofs_own_progress() {
    let mesh = Mesh::start().await;
    let mut worker = mesh.worker("json", &["--log-format", "json"]);
    let mut seal = mesh.seal(
        "seal",
        &["--count", "1", "--until", "pc1", "--log-format", "json"],
    );
    let status = seal.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", seal.tail(20));
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(60)).await.success());

    let lines = json_lines(&worker.log_text());
    // The proof child's lines (PreCommit1's own log, read from its stderr) come in the task's
    // span, with the job named and the child's level and target kept in the message.
    let proof: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["job"] == "PreCommit1")
        .collect();
    assert!(!proof.is_empty(), "no proof output in the worker's log");
    for line in &proof {
        assert_eq!(line["span"]["phase"], "pc1", "{line}");
        assert_eq!(line["span"]["sector"], "1", "{line}");
        assert_eq!(line["span"]["miner"], "f01000", "{line}");
        assert_eq!(line["span"]["task"], "f01000.1.pc1.0", "{line}");
    }
    assert!(
        proof.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replicate_phase1"))),
        "{proof:?}"
    );
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "task started" && l["span"]["phase"] == "pc1")
        .expect("a `task started` event for PreCommit1");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["size"], "2KiB");

    // The publisher's log is JSON too; what it prints for people (stdout, in the same file
    // here) stays text, and no log line is text.
    let text = std::fs::read_to_string(mesh.log("seal")).unwrap();
    let (logs, printed): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with('{'));
    assert!(printed.iter().all(|l| !l.contains(" INFO ")), "{printed:?}");
    assert!(
        printed.iter().any(|l| l.contains("1 stopped as asked")),
        "{printed:?}"
    );
    let publisher = json_lines(&logs.join("\n"));
    assert!(
        publisher
            .iter()
            .any(|l| l["fields"]["message"] == "sealing"),
        "{publisher:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_json_logs_a_fatal_error_is_a_json_event() {
    let mesh = Mesh::start().await;
    let out = std::process::Command::new(mesh_tests::bin("mesh-publisher"))
        .args(["seal", "--nats", &mesh.url(), "--store", &mesh.store])
        .args(["--miner", "f01000", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = json_lines(&String::from_utf8_lossy(&out.stderr));
    let last = lines.last().expect("a line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(
        last["fields"]["error"],
        "nothing to do: pass --count N to create sectors, or --resume"
    );
}
