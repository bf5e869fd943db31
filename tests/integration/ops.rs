//! The operator tools of `mesh-publisher` against real processes: `status`, `dlq list`,
//! `dlq retry`, `dlq drop` and `sectors --failed`, around a dead letter made by a corrupt piece.

use std::process::Command;
use std::time::Duration;

use async_nats::HeaderMap;
use mesh::model::SectorSize;
use mesh::names;
use mesh::phases::Phase;
use mesh_tests::{Mesh, NatsServer, Proc, bin, wait_for};
use serde_json::Value;

/// What one `mesh-publisher` command printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert!(self.ok, "{}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The single `error:` line of a failed run.
    fn error_line(&self) -> &str {
        assert!(!self.ok, "succeeded:\n{}", self.stdout);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", self.stderr);
        errors[0]
    }
}

/// Runs `mesh-publisher <args> --nats <url>` to completion.
fn publisher(url: &str, args: &[&str]) -> Run {
    let out = Command::new(bin("mesh-publisher"))
        .args(args)
        .args(["--nats", url])
        .env("RUST_LOG", "error")
        .output()
        .expect("run mesh-publisher");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `sectors --json` line of sector `n` of f01000.
fn sector(url: &str, n: u64) -> Option<Value> {
    let run = publisher(url, &["sectors", "--miner", "f01000", "--json"]);
    assert!(run.ok, "{}", run.stderr);
    run.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("sectors --json line"))
        .find(|v| v["sector"] == n)
}

/// The `status --json` entry of a task stream.
fn stream_status(status: &Value, stream: &str) -> Value {
    status["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == stream)
        .unwrap_or_else(|| panic!("{stream} not in {status}"))
        .clone()
}

/// Starts sealing one sector of f01000 with a 600-byte piece and, while its AddPiece task waits
/// (no worker yet; `status` shows it), corrupts the piece in the store. Returns the publisher,
/// the piece's path in the store and its good bytes. A worker started next fails the sector.
async fn seal_with_a_corrupt_piece(mesh: &Mesh, url: &str) -> (Proc, std::path::PathBuf, Vec<u8>) {
    let piece = mesh.path("piece.bin");
    std::fs::write(&piece, vec![42u8; 600]).unwrap();
    let seal = mesh.seal(
        "publisher",
        &["--count", "1", "--piece", &piece.display().to_string()],
    );
    let ap_stream = names::task_stream(Phase::AddPiece, SectorSize::KiB2);
    wait_for("the AddPiece task to wait", Duration::from_secs(30), || {
        let status = publisher(url, &["status", "--json"]).json();
        let waiting = stream_status(&status, &ap_stream)["waiting"].as_u64();
        async move { (waiting == Some(1)).then_some(()) }
    })
    .await;
    let object = mesh.store_dir().join("f01000/1/piece-0");
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    std::fs::write(&object, bad).unwrap();
    (seal, object, good)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_shown_then_retried_once_its_cause_is_fixed() {
    let mesh = Mesh::start().await;
    let url = mesh.broker().await.url().to_string();
    let store = mesh.store_dir().display().to_string();
    let ap_stream = names::task_stream(Phase::AddPiece, SectorSize::KiB2);
    let (mut seal, object, good) = seal_with_a_corrupt_piece(&mesh, &url).await;
    let _worker = mesh.worker("w1", &[]);
    assert!(!seal.wait(Duration::from_secs(60)).await.success());

    // dlq list: the letter with its reason.
    let letters = publisher(&url, &["dlq", "list", "--json"]).json();
    let letters = letters.as_array().expect("a JSON array");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    let id = letter["id"].as_u64().expect("id");
    let reason = letter["reason"].as_str().expect("reason").to_string();
    assert!(
        reason.contains("piece-0") && reason.contains("is corrupt"),
        "{reason}"
    );
    assert_eq!(letter["phase"], "ap");
    assert_eq!(letter["size"], "2KiB");
    assert_eq!(letter["miner"], "f01000");
    assert_eq!(letter["sector"], 1);
    assert_eq!(letter["task"], "f01000.1.ap.0");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["stream"], ap_stream.as_str());
    let table = publisher(&url, &["dlq", "list"]);
    println!("$ mesh-publisher dlq list\n{}", table.stdout);
    assert!(table.ok, "{}", table.stderr);
    assert!(
        table.stdout.starts_with("id  time"),
        "a table:\n{}",
        table.stdout
    );
    let row = table.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&format!("{id} ")) && row.ends_with(&reason),
        "{row}"
    );

    // sectors --failed: the sector, the phase that failed and the whole reason.
    let failed = publisher(&url, &["sectors", "--failed"]);
    println!("$ mesh-publisher sectors --failed\n{}", failed.stdout);
    assert!(failed.ok, "{}", failed.stderr);
    let lines: Vec<&str> = failed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", failed.stdout);
    assert!(
        lines[1].starts_with("f01000.1  2KiB  ap  ") && lines[1].ends_with(&reason),
        "{}",
        failed.stdout
    );

    // status: one failed sector and one dead letter.
    let status = publisher(&url, &["status", "--json"]).json();
    assert_eq!(status["dead_letters"], 1, "{status}");
    let miners = status["sectors"].as_array().expect("sectors");
    assert_eq!(miners.len(), 1, "{status}");
    assert_eq!(miners[0]["miner"], "f01000");
    assert_eq!(miners[0]["failed"], 1);
    assert_eq!(miners[0]["total"], 1);
    assert_eq!(stream_status(&status, &ap_stream)["waiting"], 0);
    let table = publisher(&url, &["status"]);
    println!("$ mesh-publisher status\n{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("dead letters: 1 (see `mesh-publisher dlq list`)"),
        "{}",
        table.stdout
    );

    // Keep a copy of the letter to make a stale one later.
    let broker = mesh.broker().await;
    let dlq = broker.js().get_stream(names::DLQ_STREAM).await.unwrap();
    let raw = dlq.get_raw_message(id).await.unwrap();

    // Fix the cause, retry: the sector runs AddPiece again as a new task, the letter goes.
    std::fs::write(&object, &good).unwrap();
    let retry = publisher(&url, &["dlq", "retry", "--all", "--store", &store]);
    println!("$ mesh-publisher dlq retry --all\n{}", retry.stdout);
    assert!(retry.ok, "{}{}", retry.stdout, retry.stderr);
    assert!(
        retry.stdout.contains(&format!(
            "dead letter {id}: sector f01000.1 retried as task f01000.1.ap.1; letter removed"
        )),
        "{}",
        retry.stdout
    );
    assert!(
        retry
            .stdout
            .contains("start `mesh-publisher run --miner f01000`"),
        "{}",
        retry.stdout
    );
    let letters = publisher(&url, &["dlq", "list", "--json"]).json();
    assert_eq!(letters, Value::Array(vec![]));
    let failed = publisher(&url, &["sectors", "--failed", "--json"]);
    assert!(failed.ok && failed.stdout.is_empty(), "{}", failed.stdout);

    // A publisher drives the sector on, past the phase that failed.
    let _run = Proc::spawn(
        &bin("mesh-publisher"),
        &[
            "run", "--nats", &url, "--store", &store, "--miner", "f01000",
        ],
        &[],
        &mesh.log("run"),
    );
    let record = wait_for("the sector to pass pc1", Duration::from_secs(60), || {
        let record = sector(&url, 1).expect("sector 1 is listed");
        assert_ne!(record["state"], "failed", "{record}");
        async move { (record["phases_done"].as_u64() >= Some(2)).then_some(record) }
    })
    .await;
    println!("after the retry: {record}");

    // A stale copy of the letter (the sector is no longer failed) is left alone.
    let mut headers = HeaderMap::new();
    for name in [
        names::REASON_HEADER,
        names::ATTEMPTS_HEADER,
        names::SOURCE_STREAM_HEADER,
    ] {
        headers.insert(
            name,
            raw.headers.get(name).expect("header").to_string().as_str(),
        );
    }
    let stale = broker
        .js()
        .publish_with_headers(raw.subject.clone(), headers, raw.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let retry = publisher(
        &url,
        &["dlq", "retry", &stale.to_string(), "--store", &store],
    );
    assert!(retry.ok, "{}", retry.stderr);
    assert!(
        retry
            .stdout
            .starts_with(&format!("dead letter {stale}: skipped: f01000.1: sector ")),
        "{}",
        retry.stdout
    );
    assert!(retry.stdout.contains("letter kept"), "{}", retry.stdout);
    let letters = publisher(&url, &["dlq", "list", "--json"]).json();
    assert_eq!(letters[0]["id"], stale, "{letters}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_undecodable_letters_and_a_missing_topology_get_clear_answers() {
    let mesh = Mesh::start().await;
    let url = mesh.broker().await.url().to_string();
    let store = mesh.store_dir().display().to_string();
    let _worker = mesh.worker("w1", &[]);
    mesh.task_consumer(
        "f01000",
        mesh::phases::Phase::PreCommit1,
        mesh::model::TaskClass::Cc,
    )
    .await;
    let broker = mesh.broker().await;
    broker
        .js()
        .publish("mesh.task.pc1.2kib.f01000.cc", "not a task".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let letters = wait_for("the dead letter", Duration::from_secs(30), || {
        let letters = publisher(&url, &["dlq", "list", "--json"]).json();
        async move { (letters.as_array()?.len() == 1).then_some(letters) }
    })
    .await;
    let id = letters[0]["id"].as_u64().expect("id");
    assert_eq!(letters[0]["sector"], Value::Null);
    assert_eq!(letters[0]["miner"], Value::Null);
    assert_eq!(letters[0]["phase"], "pc1");
    let table = publisher(&url, &["dlq", "list"]).stdout;
    assert!(table.contains(" undecodable "), "{table}");

    // An undecodable letter cannot be retried; the answer says how to get rid of it.
    let retry = publisher(&url, &["dlq", "retry", &id.to_string(), "--store", &store]);
    assert!(
        retry.stdout.contains(&format!(
            "dead letter {id}: not retried: its body is not a task this version can decode; \
             remove it with `mesh-publisher dlq drop {id}`"
        )),
        "{}",
        retry.stdout
    );
    assert!(
        retry
            .error_line()
            .contains("1 of 1 dead letters could not be retried")
    );

    // Unknown ids are refused before anything is done.
    for command in [
        vec!["dlq", "retry", "999", &id.to_string(), "--store", &store],
        vec!["dlq", "drop", &id.to_string(), "999"],
    ] {
        let run = publisher(&url, &command);
        let line = run.error_line();
        assert!(
            line.contains("no dead letter with id 999 in MESH_DLQ")
                && line.contains("mesh-publisher dlq list"),
            "{line}"
        );
    }
    let run = publisher(&url, &["dlq", "drop"]);
    assert!(
        !run.ok && run.stderr.contains("<ID|--all>"),
        "{}",
        run.stderr
    );
    let run = publisher(&url, &["dlq", "drop", "x"]);
    assert!(
        !run.ok && run.stderr.contains("'x' is not a dead letter id"),
        "{}",
        run.stderr
    );

    // drop removes the letter.
    let dropped = publisher(&url, &["dlq", "drop", &id.to_string()]);
    assert!(dropped.ok, "{}", dropped.stderr);
    assert_eq!(dropped.stdout, format!("dead letter {id} removed\n"));
    let letters = publisher(&url, &["dlq", "list", "--json"]).json();
    assert_eq!(letters, Value::Array(vec![]));
    let status = publisher(&url, &["status", "--json"]).json();
    assert_eq!(status["dead_letters"], 0, "{status}");
    assert_eq!(status["sectors"], Value::Array(vec![]), "{status}");
    // init made the 2KiB streams only: the others are not listed.
    assert_eq!(status["streams"].as_array().map(Vec::len), Some(6));

    // Without `init`, every tool says to run it.
    let bare = NatsServer::start();
    for command in [
        vec!["status"],
        vec!["dlq", "list"],
        vec!["dlq", "drop", "--all"],
        vec!["sectors", "--failed"],
    ] {
        let run = publisher(&bare.url(), &command);
        let line = run.error_line();
        assert!(
            line.contains("does not exist on the server") && line.contains("mesh-publisher init"),
            "{command:?}: {line}"
        );
    }
}

/// Writes `bytes` at `key` in the file store.
fn plant(mesh: &Mesh, key: &str, bytes: &[u8]) {
    let path = mesh.store_dir().join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sector_is_removed_with_its_objects_and_gc_finds_what_no_record_refers_to() {
    let mesh = Mesh::start().await;
    let url = mesh.broker().await.url().to_string();
    let store = mesh.store_dir().display().to_string();
    let exists = |key: &str| mesh.store_dir().join(key).exists();

    // Sector 1 fails at AddPiece on a corrupt piece; an attempt that lost a race left an object.
    let (mut seal, _, _) = seal_with_a_corrupt_piece(&mesh, &url).await;
    plant(&mesh, "f01000/1/ap-7/unsealed", b"lost the race");
    let mut worker = mesh.worker("w1", &[]);
    assert!(!seal.wait(Duration::from_secs(60)).await.success());
    // Failing cleaned up what the record does not refer to, and kept the piece for a retry.
    assert!(!exists("f01000/1/ap-7/unsealed"));
    assert!(exists("f01000/1/piece-0"));

    // gc: an object of a sector without a record, one the failed sector does not refer to;
    // never the piece it refers to, nor what is not in the sector layout.
    plant(&mesh, "f01000/9/pc1-1/sc-02-data-layer-1.dat", &[1; 100]);
    plant(&mesh, "f01000/1/pc2-3/sealed", &[2; 10]);
    plant(&mesh, "params/v28-test.params", b"not a sector's");
    let recent = publisher(&url, &["gc", "--store", &store]);
    assert!(recent.ok && recent.stdout.is_empty(), "{}", recent.stderr);
    assert!(
        recent
            .stderr
            .contains("no object older than 1h lacks a sector record referring to it"),
        "{}",
        recent.stderr
    );
    let listed = publisher(&url, &["gc", "--store", &store, "--older-than", "0s"]);
    println!("$ mesh-publisher gc --older-than 0s\n{}", listed.stdout);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(listed.stdout.starts_with("object"), "{}", listed.stdout);
    assert!(
        listed
            .stderr
            .contains("2 objects, 110 B no sector record refers to; run again with --delete"),
        "{}",
        listed.stderr
    );
    let json = publisher(
        &url,
        &["gc", "--store", &store, "--older-than", "0s", "--json"],
    );
    let found: Vec<(String, String)> = json
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().into(),
                v["why"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "f01000/1/pc2-3/sealed".to_string(),
                "sector f01000.1 is failed and does not refer to it".to_string()
            ),
            (
                "f01000/9/pc1-1/sc-02-data-layer-1.dat".to_string(),
                "sector f01000.9 has no record".to_string()
            ),
        ]
    );
    let deleted = publisher(
        &url,
        &["gc", "--store", &store, "--older-than", "0s", "--delete"],
    );
    assert!(
        deleted.ok && deleted.stderr.contains("deleted 2 objects, 110 B"),
        "{}",
        deleted.stderr
    );
    assert!(!exists("f01000/1/pc2-3/sealed") && !exists("f01000/9/pc1-1/sc-02-data-layer-1.dat"));
    assert!(exists("f01000/1/piece-0") && exists("params/v28-test.params"));

    // remove: the failed sector's record and every object it has.
    let removed = publisher(
        &url,
        &["remove", "--store", &store, "--miner", "f01000", "1"],
    );
    assert!(removed.ok, "{}", removed.stderr);
    assert_eq!(
        removed.stdout.trim(),
        "sector f01000.1 removed with 1 object, 600 B"
    );
    assert!(!exists("f01000/1/piece-0"));
    assert_eq!(sector(&url, 1), None);
    let again = publisher(
        &url,
        &["remove", "--store", &store, "--miner", "f01000", "1"],
    );
    assert!(
        again
            .stderr
            .contains("sector f01000.1 not removed: sector f01000.1 has no record"),
        "{}",
        again.stderr
    );
    assert!(again.error_line().contains("1 sector(s) not removed"));

    // An active sector and a sealed one are refused, and keep their objects.
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).await.success());
    let mut active = mesh.seal("active", &["--count", "1"]);
    wait_for("sector 2 to exist", Duration::from_secs(30), || async {
        sector(&url, 2).map(|_| ())
    })
    .await;
    let refused = publisher(
        &url,
        &["remove", "--store", &store, "--miner", "f01000", "2"],
    );
    assert!(
        refused.stderr.contains(
            "sector f01000.2 is being sealed (it waits for ap): only failed or stopped sectors \
             are removed"
        ),
        "{}",
        refused.stderr
    );
    active.kill();
    let _synthetic = mesh.worker(
        "s1",
        &[
            "--executor",
            "synthetic",
            "--synthetic-durations",
            "ap=1ms,pc1=1ms,pc2=1ms,c1=1ms,c2=1ms,fin=1ms",
        ],
    );
    let mut sealed = mesh.seal("sealed", &["--count", "1", "--synthetic"]);
    assert!(sealed.wait(Duration::from_secs(60)).await.success());
    let refused = publisher(
        &url,
        &["remove", "--store", &store, "--miner", "f01000", "3"],
    );
    assert!(
        refused.stderr.contains(
            "sector f01000.3 is sealed: its replica and cache are what the miner proves with"
        ),
        "{}",
        refused.stderr
    );
    assert!(exists("f01000/3"));
}

/// `jobs --json` as (sector, phase token, state, worker) for each job.
fn jobs(url: &str) -> Vec<(u64, Phase, String, Option<String>)> {
    let run = publisher(url, &["jobs", "--json"]);
    let jobs = run.json();
    jobs.as_array()
        .expect("a JSON array")
        .iter()
        .map(|j| {
            (
                j["sector"].as_u64().expect("a sector number"),
                serde_json::from_value(j["phase"].clone()).expect("a phase"),
                j["state"].as_str().expect("a state").to_string(),
                j["worker"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Waits until `jobs` shows what `want` accepts, and returns it.
async fn wait_jobs(
    url: &str,
    what: &str,
    want: impl Fn(&[(u64, Phase, String, Option<String>)]) -> bool,
) -> Vec<(u64, Phase, String, Option<String>)> {
    let want = &want;
    wait_for(what, Duration::from_secs(60), || async move {
        let jobs = jobs(url);
        want(&jobs).then_some(jobs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_show_where_tasks_run_and_a_worker_drained_by_hand_finishes_its_task_then_waits() {
    let mesh = Mesh::start().await;
    let url = mesh.url();
    // One task at a time, PreCommit1 long enough to be seen running.
    let flags = [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        "pc1=4s",
        "--slots",
        "1",
    ];
    let w1 = mesh.worker("w1", &flags);
    let mut seal = mesh.seal("seal", &["--count", "2", "--synthetic"]);
    let seen = wait_jobs(
        &url,
        "one PreCommit1 running on w1, the other sector queued",
        |j| {
            j.len() == 2
                && j[0].1 == Phase::PreCommit1
                && j[0].2 == "running"
                && j[0].3.as_deref() == Some("w1")
                && j[1].2 == "queued"
                && j[1].3.is_none()
        },
    )
    .await;
    let running = seen[0].0;
    let table = publisher(&url, &["jobs"]);
    assert!(table.ok, "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in [
        "miner", "sector", "phase", "size", "state", "worker", "attempt", "age",
    ] {
        assert!(header.contains(column), "{}", table.stdout);
    }
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("pc1") && l.contains("running") && l.contains("w1")),
        "{}",
        table.stdout
    );

    // Drained while its PreCommit1 runs: that task finishes, nothing else starts.
    let drain = publisher(&url, &["worker", "drain", "w1", "--reason", "new disks"]);
    assert!(drain.ok, "{}", drain.stderr);
    assert!(
        drain.stdout.contains("finishes its 1 running task(s)"),
        "{}",
        drain.stdout
    );
    let started = |w: &Proc| w.log_text().matches("task started").count();
    wait_for("w1 to log its drain", Duration::from_secs(30), || async {
        w1.log_text().contains("drain mark set").then_some(())
    })
    .await;
    let before = started(&w1);
    let idle = wait_jobs(
        &url,
        "the running PreCommit1 to finish, nothing running",
        |j| {
            j.iter().all(|(_, _, state, _)| state == "queued")
                && j.iter()
                    .any(|(s, p, _, _)| *s == running && *p == Phase::PreCommit2)
        },
    )
    .await;
    assert_eq!(idle.len(), 2, "{idle:?}");
    assert_eq!(started(&w1), before, "w1 started a task while drained");
    let workers = publisher(&url, &["workers"]);
    assert!(workers.stdout.contains("DRAINING"), "{}", workers.stdout);
    let mark = mesh.broker().await;
    let bucket = mark.bucket(names::DRAIN_BUCKET).await.unwrap();
    let entry = bucket.get("w1").await.unwrap().expect("w1's mark");
    let entry: Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(entry["reason"], "new disks");

    // Resumed, it takes the rest and both sectors seal.
    let resume = publisher(&url, &["worker", "resume", "w1"]);
    assert!(resume.ok, "{}", resume.stderr);
    assert_eq!(resume.stdout.trim(), "worker w1 takes tasks again");
    let status = seal.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", seal.tail(20));
    let empty = publisher(&url, &["jobs"]);
    assert_eq!(empty.stdout.trim(), "no active sectors");

    // Neither command guesses at a worker that is not there.
    let unknown = publisher(&url, &["worker", "drain", "w9"]);
    assert!(
        unknown.error_line().contains("no live worker w9"),
        "{}",
        unknown.stderr
    );
    let not_drained = publisher(&url, &["worker", "resume", "w1"]);
    assert!(
        not_drained
            .error_line()
            .contains("worker w1 is not drained by a mark"),
        "{}",
        not_drained.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_sector_fails_with_its_reason_its_task_is_dropped_or_stopped_and_its_objects_go()
{
    let mesh = Mesh::start().await;
    let url = mesh.url();
    let store = mesh.store.clone();
    // Workers of AddPiece and PreCommit1 only: both sectors wait in PreCommit2's stream.
    let _early = mesh.worker("early", &["--executor", "synthetic", "--phases", "ap,pc1"]);
    let mut seal = mesh.seal("seal", &["--count", "2", "--synthetic"]);
    wait_jobs(&url, "both sectors queued for PreCommit2", |j| {
        j.len() == 2
            && j.iter()
                .all(|(_, p, state, _)| *p == Phase::PreCommit2 && state == "queued")
    })
    .await;

    // Sector 1, queued: its task leaves the stream.
    let abort = |sector: &str| {
        publisher(
            &url,
            &[
                "sector", "abort", "f01000", sector, "--reason", "bad disk", "--store", &store,
            ],
        )
    };
    let first = abort("1");
    assert!(first.ok, "{}", first.stderr);
    assert!(
        first.stdout.starts_with(
            "f01000.1: aborted in pc2, failed with \"aborted by an operator: bad disk\"; \
             its task deleted from its stream (a worker running it stops within an ack wait); "
        ),
        "{}",
        first.stdout
    );
    let broker = mesh.broker().await;
    let pc2 = names::task_stream(Phase::PreCommit2, SectorSize::KiB2);
    let messages = |broker: mesh::broker::Broker| {
        let pc2 = pc2.clone();
        async move {
            let mut stream = broker.stream(&pc2).await.unwrap();
            stream.info().await.unwrap().state.messages
        }
    };
    assert_eq!(messages(broker.clone()).await, 1, "sector 2's task only");

    // Sector 2, mid-PreCommit2 on a worker: the worker stops it.
    let late = mesh.worker(
        "late",
        &[
            "--executor",
            "synthetic",
            "--phases",
            "pc2,c1,c2,fin",
            "--synthetic-durations",
            "pc2=10m",
        ],
    );
    wait_jobs(&url, "sector 2's PreCommit2 running on late", |j| {
        j.len() == 1 && j[0].0 == 2 && j[0].2 == "running" && j[0].3.as_deref() == Some("late")
    })
    .await;
    let second = abort("2");
    assert!(second.ok, "{}", second.stderr);
    assert!(
        second.stdout.contains("its task deleted from its stream"),
        "{}",
        second.stdout
    );
    wait_for(
        "late to stop the aborted task",
        Duration::from_secs(60),
        || async {
            late.log_text()
                .contains("the sector moved on; task stopped and dropped")
                .then_some(())
        },
    )
    .await;
    assert_eq!(messages(broker.clone()).await, 0);

    // The seal sees both fail with the reason; nothing of them is left in the store.
    let status = seal.wait(Duration::from_secs(60)).await;
    assert!(!status.success());
    for n in [1, 2] {
        let record = sector(&url, n).expect("the sector's record");
        assert_eq!(record["state"], "failed", "{record}");
        let reason = record["reason"].as_str().unwrap_or_default();
        assert_eq!(reason, "aborted by an operator: bad disk", "{record}");
        let left = mesh.store_dir().join(format!("f01000/{n}"));
        let files = std::fs::read_dir(&left).map_or(0, |d| d.count());
        assert_eq!(files, 0, "{} still holds objects", left.display());
    }
    assert!(
        abort("2")
            .error_line()
            .contains("sector f01000.2 is not being sealed (it is failed)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_say_what_they_are_in_headers_and_decode_prints_any_of_them_as_json() {
    let mesh = Mesh::start().await;
    let url = mesh.url();
    // AddPiece only: the sector's PreCommit1 task waits in its stream.
    let _worker = mesh.worker("w1", &["--executor", "synthetic", "--phases", "ap"]);
    let _seal = mesh.seal("seal", &["--count", "1", "--synthetic"]);
    wait_jobs(&url, "the PreCommit1 task queued", |j| {
        j.len() == 1 && j[0].1 == Phase::PreCommit1 && j[0].2 == "queued"
    })
    .await;
    let broker = mesh.broker().await;
    let pc1 = names::task_stream(Phase::PreCommit1, SectorSize::KiB2);
    let mut stream = broker.stream(&pc1).await.unwrap();
    let seq = stream.info().await.unwrap().state.last_sequence;
    let task = stream.get_raw_message(seq).await.unwrap();
    let header = |name: &str| {
        task.headers
            .get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| panic!("no {name} in {:?}", task.headers))
    };
    assert_eq!(header("Mesh-Miner"), "f01000");
    assert_eq!(header("Mesh-Sector"), "1");
    assert_eq!(header("Mesh-Phase"), "pc1");
    assert_eq!(header("Mesh-Size"), "2KiB");
    assert_eq!(header("Mesh-Task"), "f01000.1.pc1.0");

    // The same message, decoded from its stream, from stdin, and its sector from the bucket.
    let seq = seq.to_string();
    let from_stream = publisher(&url, &["decode", "--stream", &pc1, "--seq", &seq]).json();
    assert_eq!(from_stream["kind"], "task");
    assert_eq!(from_stream["body"]["id"], "f01000.1.pc1.0");
    assert_eq!(from_stream["headers"]["Mesh-Phase"][0], "pc1");
    let mut piped = std::process::Command::new(bin("mesh-publisher"))
        .arg("decode")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), &task.payload).unwrap();
    let out = piped.wait_with_output().unwrap();
    let from_stdin: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin["body"], from_stream["body"]);
    let record = publisher(
        &url,
        &["decode", "--bucket", "mesh-sectors", "--key", "f01000.1"],
    )
    .json();
    assert_eq!(record["kind"], "sector");
    assert!(record["value"]["state"]["Active"].is_object(), "{record}");
    let worker = publisher(&url, &["decode", "--bucket", "mesh-workers", "--key", "w1"]).json();
    assert_eq!(worker["kind"], "json");
    assert_eq!(worker["value"]["id"], "w1");

    // AddPiece's result: its headers say whose, which attempt, by whom and how it ended.
    let mut results = broker.stream(names::RESULT_STREAM).await.unwrap();
    let last = results.info().await.unwrap().state.last_sequence;
    let decoded = publisher(
        &url,
        &[
            "decode",
            "--stream",
            names::RESULT_STREAM,
            "--seq",
            &last.to_string(),
        ],
    )
    .json();
    assert_eq!(decoded["kind"], "result");
    for (name, value) in [
        ("Mesh-Miner", "f01000"),
        ("Mesh-Phase", "ap"),
        ("Mesh-Attempt", "1"),
        ("Mesh-Worker", "w1"),
        ("Mesh-Outcome", "done"),
    ] {
        assert_eq!(decoded["headers"][name][0], value, "{decoded}");
    }

    // What cannot be decoded says so.
    let missing = publisher(
        &url,
        &["decode", "--bucket", "mesh-sectors", "--key", "f01000.9"],
    );
    assert!(
        missing
            .error_line()
            .contains("mesh-sectors has no key f01000.9"),
        "{}",
        missing.stderr
    );
    let empty = publisher(&url, &["decode"]);
    assert!(
        empty.error_line().contains("nothing on stdin"),
        "{}",
        empty.stderr
    );
}

/// The units and environment files of `deploy/systemd` name only what the daemons read: each
/// unit's `ExecStart` is a command the binary has, every `MESH_*` variable its environment
/// file or `Environment=` lines set is one that command lists in its `--help`, and `nats.env`
/// sets every variable that `deploy/nats/nats.conf` and the `auth.conf` of
/// `init --roles --system-account` refer to. A renamed flag cannot leave the units behind.
#[test]
fn deploy_units_set_only_variables_their_daemons_read() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
    };
    let assignments = |text: &str, prefix: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter_map(|line| {
                line.split_once('=')
                    .map(|(name, _)| name.trim().to_string())
            })
            .filter(|name| name.starts_with("MESH_"))
            .collect()
    };
    for (unit, env_file) in [
        ("systemd/mesh-worker.service", "systemd/worker.env"),
        ("systemd/mesh-publisher@.service", "systemd/publisher.env"),
        ("systemd/mesh-autoscaler.service", "systemd/autoscaler.env"),
    ] {
        let unit_text = read(unit);
        let exec = unit_text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap().rsplit('/').next().unwrap();
        let args: Vec<&str> = words.collect();
        let out = Command::new(bin(program))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{unit}: `{exec} --help` failed");
        let help = String::from_utf8_lossy(&out.stdout);
        let mut names = assignments(&read(env_file), "");
        names.extend(assignments(&unit_text, "Environment="));
        assert!(!names.is_empty(), "{env_file} sets no MESH_* variable");
        for name in names {
            assert!(
                help.contains(&format!("[env: {name}="))
                    || help.contains(&format!("[env: {name}]")),
                "{env_file} or {unit} sets {name}, which `{exec}` does not read"
            );
        }
    }

    let out = Command::new(bin("mesh-publisher"))
        .args([
            "init",
            "--roles",
            "-",
            "--system-account",
            "--miners",
            "f01000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let configs = format!(
        "{}{}",
        read("nats/nats.conf"),
        String::from_utf8_lossy(&out.stdout)
    );
    let set = assignments(&read("systemd/nats.env"), "");
    let referred: std::collections::BTreeSet<&str> = configs
        .split('$')
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
        })
        .filter(|name| name.starts_with("MESH_"))
        .collect();
    assert!(referred.contains("MESH_SYS_PASSWORD"), "{referred:?}");
    for name in referred {
        assert!(
            set.iter().any(|s| s == name),
            "systemd/nats.env lacks {name}"
        );
    }
}
