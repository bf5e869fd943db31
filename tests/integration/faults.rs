//! Faults the foundation must survive: a worker killed mid-task, a corrupt input object, and a
//! garbage task body. Each against real processes.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use mesh::model::SectorSize;
use mesh::names;
use mesh::phases::Phase;
use mesh_tests::observe;
use mesh_tests::{
    Mesh, lines, publish_result, require_2kib_params, result_ack_floor, verify_out_line, wait_for,
};
use nix::sys::signal::Signal;

/// The dead-letter stream's messages: (subject, reason, attempts).
async fn dead_letters(js: &jetstream::Context) -> Vec<(String, String, String)> {
    let mut stream = js.get_stream(names::DLQ_STREAM).await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let header = |name: &str| {
            msg.headers
                .get(name)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        out.push((
            msg.subject.to_string(),
            header(names::REASON_HEADER),
            header(names::ATTEMPTS_HEADER),
        ));
    }
    out
}

/// Waits for the first dead letter, then returns them all.
async fn wait_dead_letters(js: &jetstream::Context) -> Vec<(String, String, String)> {
    wait_for("the dead letter", Duration::from_secs(30), || async move {
        let dead = dead_letters(js).await;
        (!dead.is_empty()).then_some(dead)
    })
    .await
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Waits until stream `name` holds exactly `n` messages.
async fn wait_messages(js: &jetstream::Context, name: &str, n: u64, what: &str) {
    wait_for(what, Duration::from_secs(30), || async move {
        (stream_messages(js, name).await == n).then_some(())
    })
    .await;
}

/// Processes whose command line mentions `needle` (the killed worker's proof child).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_commit2_loses_nothing() {
    require_2kib_params();
    let mesh = Mesh::start().await;
    let out = mesh.path("sealed.jsonl");
    let mut publisher = mesh.seal(
        "publisher",
        &["--count", "1", "--out", &out.display().to_string()],
    );
    // Without holding: the sector must outlive its first worker, as it does through the store.
    let mut victim = mesh.worker(
        "victim",
        &["--phases", "ap,pc1,pc2,c1,c2,fin", "--no-holding"],
    );

    // Wait until the victim runs Commit2 (a ~70 s proof), then SIGKILL it.
    let broker = mesh.broker().await;
    wait_for("the victim to run c2", Duration::from_secs(120), || async {
        let taker = observe::taker(&broker, Phase::Commit2, 1).await;
        (taker.as_deref() == Some("victim")).then_some(())
    })
    .await;
    let child_marker = format!("{}/victim/", mesh.scratch().display());
    wait_for("the proof child to run", Duration::from_secs(30), || {
        let marker = child_marker.clone();
        async move { (!processes_with(&marker).is_empty()).then_some(()) }
    })
    .await;
    victim.kill();
    let killed = Instant::now();

    // The proof child notices its parent is gone and stops too.
    wait_for(
        "the orphaned proof child to exit",
        Duration::from_secs(10),
        || {
            let marker = child_marker.clone();
            async move { processes_with(&marker).is_empty().then_some(()) }
        },
    )
    .await;

    // Another worker takes the task over once the ack wait runs out.
    let _rescuer = mesh.worker("rescuer", &[]);
    let restarted = wait_for(
        "c2 to start on the rescuer",
        Duration::from_secs(60),
        || async {
            let taker = observe::taker(&broker, Phase::Commit2, 2).await;
            (taker.as_deref() == Some("rescuer")).then(|| killed.elapsed())
        },
    )
    .await;
    println!(
        "FIGURE kill-to-restart: c2 restarted on another worker {:.1} s after SIGKILL (ack wait 10 s)",
        restarted.as_secs_f64()
    );

    let status = publisher.wait(Duration::from_secs(400)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    let lines = lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(verify_out_line(&lines[0]), 1);
    let runs = observe::runs(&broker).await;
    let c2: Vec<_> = runs.iter().filter(|r| r.phase == Phase::Commit2).collect();
    assert!(
        c2.iter()
            .any(|r| r.done && r.worker == "rescuer" && r.attempt == 2),
        "{c2:?}"
    );
    assert!(dead_letters(broker.js()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_input_object_fails_once_onto_the_dlq() {
    let mesh = Mesh::start().await;
    let piece = mesh.path("piece.bin");
    std::fs::write(&piece, vec![42u8; 600]).unwrap();
    let mut publisher = mesh.seal(
        "publisher",
        &["--count", "1", "--piece", &piece.display().to_string()],
    );
    // No worker yet: the AddPiece task waits while its piece is corrupted in the store.
    let broker = mesh.broker().await;
    let stream = names::task_stream(Phase::AddPiece, SectorSize::KiB2);
    wait_messages(broker.js(), &stream, 1, "the AddPiece task").await;
    let object = mesh.store_dir().join("f01000/1/piece-0");
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let _worker = mesh.worker("w1", &[]);
    let status = publisher.wait(Duration::from_secs(60)).await;
    assert!(!status.success());
    let log = publisher.log_text();
    assert!(log.contains("is corrupt"), "{log}");
    assert!(log.contains("1 of 1 sectors failed"), "{log}");

    let dead = dead_letters(broker.js()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (subject, reason, attempts) = &dead[0];
    assert_eq!(subject, "mesh.dlq.ap.2kib.f01000");
    assert!(
        reason.contains("piece-0") && reason.contains("is corrupt"),
        "{reason}"
    );
    assert_eq!(
        attempts, "1",
        "failed on the first attempt, not after endless retries"
    );
    assert_eq!(stream_messages(broker.js(), &stream).await, 0);

    // The operator sees the failure and its reason.
    let listed = std::process::Command::new(mesh_tests::bin("mesh-publisher"))
        .args(["sectors", "--nats", &mesh.url(), "--miner", "f01000"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = listed.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("f01000.1 ") && line.contains("failed"),
        "{listed}"
    );
    assert!(line.contains("is corrupt"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_task_body_is_terminated_with_its_reason() {
    let mesh = Mesh::start().await;
    let mut worker = mesh.worker("w1", &[]);
    mesh.task_consumer(
        "f01000",
        mesh::phases::Phase::PreCommit1,
        mesh::model::TaskClass::Cc,
    )
    .await;
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let ack = js
        .publish("mesh.task.pc1.2kib.f01000.cc", "not a task".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "MESH_TASK_PC1_2KIB");

    let dead = wait_dead_letters(&js).await;
    let (subject, reason, _) = &dead[0];
    assert_eq!(subject, "mesh.dlq.pc1.2kib.unknown");
    assert!(reason.contains("undecodable task"), "{reason}");
    // Terminated: gone from the work queue, not redelivered.
    wait_messages(&js, "MESH_TASK_PC1_2KIB", 0, "the task stream to empty").await;
    assert_eq!(dead_letters(&js).await.len(), 1);
    // The worker is still alive and serving.
    assert!(worker.try_status().is_none(), "{}", worker.tail(20));
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).await.success());
}

/// A miner may publish only on its own task subjects; a body there that names another miner is
/// a forgery: dead-lettered as nobody's, and the named miner gets no result (which would fail
/// its sector).
#[tokio::test(flavor = "multi_thread")]
async fn a_task_forged_for_another_miner_is_dead_lettered_as_nobodys() {
    let mesh = Mesh::start().await;
    let mut worker = mesh.worker("w1", &["--executor", "synthetic"]);
    mesh.task_consumer("f01000", Phase::AddPiece, mesh::model::TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    // f01001's AddPiece, invalid besides (a 32GiB proof on the 2KiB stream), on f01000's subject.
    let mut forged =
        mesh_tests::synthetic_task("f01001".parse().unwrap(), 1, Phase::AddPiece, false, vec![]);
    forged.proof = SectorSize::GiB32.seal_proof();
    js.publish(
        "mesh.task.ap.2kib.f01000.cc",
        mesh::model::encode(&forged).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let dead = wait_dead_letters(&js).await;
    let (subject, reason, _) = &dead[0];
    assert_eq!(subject, "mesh.dlq.ap.2kib.unknown");
    assert!(
        reason.contains("names miner f01001 but came on mesh.task.ap.2kib.f01000.cc"),
        "{reason}"
    );
    wait_messages(&js, "MESH_TASK_AP_2KIB", 0, "the task stream to empty").await;
    assert_eq!(
        stream_messages(&js, "MESH_RESULT").await,
        0,
        "a result was published for the forged task"
    );
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_tasks_fail_their_sector_with_the_reason_on_the_first_delivery() {
    use mesh::model::{decode, encode};
    use mesh::sector::Task;
    let mesh = Mesh::start().await;
    let mut publisher = mesh.seal("publisher", &["--count", "2", "--synthetic"]);
    // No worker yet: both AddPiece tasks wait, and are swapped for poisoned copies.
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let stream_name = names::task_stream(Phase::AddPiece, SectorSize::KiB2);
    wait_messages(&js, &stream_name, 2, "both AddPiece tasks").await;
    let stream = js.get_stream(&stream_name).await.unwrap();
    for seq in [1, 2] {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let mut task: Task = decode(&msg.payload).unwrap();
        let body = if task.sector.0 == 1 {
            // A proof type of another sector size on the 2KiB stream.
            task.proof = SectorSize::GiB32.seal_proof();
            encode(&task)
        } else {
            // A proof type (sector size) no one knows: the body no longer decodes as a task.
            let mut body = msg.payload.to_vec();
            let (from, to) = (b"StackedDrg2KiBV1_1", b"StackedDrg2KiBV9_9");
            let at = body
                .windows(from.len())
                .position(|w| w == from)
                .expect("the proof type is in the body");
            body[at..at + to.len()].copy_from_slice(to);
            body
        };
        stream.delete_message(seq).await.unwrap();
        js.publish(msg.subject.clone(), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let _worker = mesh.worker("w1", &["--executor", "synthetic"]);
    let status = publisher.wait(Duration::from_secs(60)).await;
    assert!(!status.success(), "{}", publisher.tail(20));
    let mut dead = dead_letters(&js).await;
    dead.sort();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (subject, _, attempts) in &dead {
        assert_eq!(subject, "mesh.dlq.ap.2kib.f01000");
        assert_eq!(attempts, "1", "dead on the first delivery");
    }
    let reasons: Vec<&str> = dead.iter().map(|(_, r, _)| r.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("is for 32GiB sectors but the task is on the 2KiB stream")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("undecodable task") && r.contains("StackedDrg2KiBV9_9")),
        "{reasons:?}"
    );
    let failed = mesh.publisher(&["sectors", "--miner", "f01000", "--failed"]);
    assert!(failed.contains("32GiB sectors"), "{failed}");
    assert!(failed.contains("StackedDrg2KiBV9_9"), "{failed}");
    println!(
        "FIGURE poison: 2 poisoned tasks dead-lettered on their first delivery; sectors failed:\n{failed}"
    );
}

/// A task delivered again after its sector moved on (its ack lost in a broker failover, say) is
/// dropped by the worker that gets it: no run, no dead letter, gone from the work queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_sector_moved_on_is_dropped_not_dead_lettered() {
    let mesh = Mesh::start().await;
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let stream_name = names::task_stream(Phase::AddPiece, SectorSize::KiB2);
    wait_messages(&js, &stream_name, 1, "the AddPiece task").await;
    let stream = js.get_stream(&stream_name).await.unwrap();
    let old = stream.get_raw_message(1).await.unwrap();
    let mut worker = mesh.worker("w1", &["--executor", "synthetic"]);
    let status = publisher.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", publisher.tail(20));

    // The same task again, as a redelivery would bring it (no message id: not deduplicated).
    js.publish(old.subject.clone(), old.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for("the worker to drop it", Duration::from_secs(30), || {
        let dropped = worker.log_text().contains("task no longer needed");
        async move { dropped.then_some(()) }
    })
    .await;
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("task no longer needed"))
        .unwrap();
    assert!(line.contains("sector f01000.1 is sealed"), "{line}");
    wait_messages(&js, &stream_name, 0, "the task stream to empty").await;
    assert!(dead_letters(&js).await.is_empty());
    assert_eq!(log.matches("phase=ap attempt=1}: task started").count(), 1);
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).await.success());
}

/// A task body just under the server's `max_payload` (garbage a miner may publish on its own
/// subject) cannot be dead-lettered whole, with headers: the letter keeps its first bytes and
/// says so, on the first delivery, and the worker still stops at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_too_large_to_dead_letter_whole_is_cut_and_dead_lettered() {
    let mesh = Mesh::start().await;
    mesh.task_consumer("f01000", Phase::AddPiece, mesh::model::TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let max_payload = broker.client().server_info().max_payload;
    let garbage = vec![0xc1u8; max_payload - 512];
    js.publish("mesh.task.ap.2kib.f01000.cc", garbage.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut worker = mesh.worker("w1", &["--executor", "synthetic"]);
    let dead = wait_dead_letters(&js).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (subject, reason, attempts) = &dead[0];
    // Undecodable: nobody's (the body cannot say whose it is).
    assert_eq!(subject, "mesh.dlq.ap.2kib.unknown");
    assert!(reason.contains("undecodable task"), "{reason}");
    assert_eq!(attempts, "1", "dead-lettered on its first delivery");
    let letter = js
        .get_stream(names::DLQ_STREAM)
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert_eq!(letter.payload.len(), 4096);
    assert_eq!(letter.payload[..], garbage[..4096]);
    let truncated = letter
        .headers
        .get(names::TRUNCATED_HEADER)
        .map(|v| v.to_string())
        .unwrap();
    assert!(
        truncated.starts_with(&format!("{} sha256:", garbage.len())),
        "{truncated}"
    );
    wait_messages(
        &js,
        &names::task_stream(Phase::AddPiece, SectorSize::KiB2),
        0,
        "the task stream to empty",
    )
    .await;
    // `dlq list` says the body was cut.
    let list = mesh.publisher(&["dlq", "list", "--json"]);
    assert!(
        list.contains("is cut to its first 4096 bytes here"),
        "{list}"
    );
    // Nothing keeps the worker: SIGTERM ends it at once.
    let stopping = std::time::Instant::now();
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(10)).await.success());
    println!(
        "FIGURE oversized task: {} B body dead-lettered on delivery 1 as its first 4096 B; worker \
         stopped {:.2} s after SIGTERM",
        garbage.len(),
        stopping.elapsed().as_secs_f64()
    );
}

/// A task that decodes but whose id is as long as a message allows (a miner's forgery on its
/// own subject) is dead-lettered on its first delivery: its id goes into no header and no
/// result, either of which would be too large to publish and keep the task coming back.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_with_a_message_long_id_is_dead_lettered_on_its_first_delivery() {
    let mesh = Mesh::start().await;
    mesh.task_consumer("f01000", Phase::AddPiece, mesh::model::TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let js = broker.js().clone();
    let max_payload = broker.client().server_info().max_payload;
    let miner = "f01000".parse().unwrap();
    let mut task = mesh_tests::synthetic_task(miner, 1, Phase::AddPiece, false, Vec::new());
    task.id = mesh::sector::TaskId("f01000.1.ap.".repeat((max_payload - 4096) / 12));
    let body = mesh::model::encode(&task);
    assert!(body.len() > max_payload - 8192 && body.len() < max_payload);
    js.publish("mesh.task.ap.2kib.f01000.cc", body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut worker = mesh.worker("w1", &["--executor", "synthetic"]);
    let dead = wait_dead_letters(&js).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (subject, reason, attempts) = &dead[0];
    assert_eq!(subject, "mesh.dlq.ap.2kib.f01000");
    assert!(reason.contains("invalid task: task id"), "{reason}");
    assert_eq!(attempts, "1", "dead-lettered on its first delivery");
    wait_messages(
        &js,
        &names::task_stream(Phase::AddPiece, SectorSize::KiB2),
        0,
        "the task stream to empty",
    )
    .await;
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(10)).await.success());
}

/// A result written by a newer mesh (its message version above this one's) is neither applied
/// nor dropped: the publisher says so, leaves it unacknowledged for an upgraded publisher, and
/// its sector goes on as if it had not come.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_of_a_newer_version_is_left_for_a_newer_publisher() {
    use mesh::sector::{MESSAGE_VERSION, Outcome, TaskId, TaskResult, Timings};
    let mesh = Mesh::start().await;
    let mut publisher = mesh.seal("publisher", &["--count", "1", "--synthetic"]);
    wait_for("sector 1 to be pledged", Duration::from_secs(60), || {
        let listed = mesh.publisher(&["sectors", "--miner", "f01000", "--json"]);
        async move { (!listed.trim().is_empty()).then_some(()) }
    })
    .await;
    let miner: mesh::model::MinerId = "f01000".parse().unwrap();
    let sector = mesh::model::SectorNum(1);
    // A failure of the sector's first task: applied, it would fail the sector.
    let newer = TaskResult {
        version: MESSAGE_VERSION + 1,
        task: TaskId::new(miner, sector, Phase::AddPiece, 0),
        miner,
        sector,
        phase: Phase::AddPiece,
        attempt: 1,
        worker: mesh::model::WorkerId("from-the-future".into()),
        outcome: Outcome::Failed {
            reason: "written by a newer mesh".into(),
        },
        timings: Timings::default(),
        finished_ms: mesh::now_ms(),
    };
    let broker = mesh.broker().await;
    let sequence = publish_result(&broker, &newer).await;
    wait_for(
        "the publisher to refuse the newer result",
        Duration::from_secs(60),
        || {
            let log = publisher.log_text();
            async move {
                log.contains("a result of a newer message version than this publisher reads")
                    .then_some(())
            }
        },
    )
    .await;

    let _worker = mesh.worker("w1", &["--executor", "synthetic"]);
    let status = publisher.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", publisher.tail(20));
    let listed = mesh.publisher(&["sectors", "--miner", "f01000", "--json"]);
    assert!(listed.contains("\"sealed\""), "{listed}");
    let floor = result_ack_floor(&broker, miner).await;
    assert!(
        floor < sequence,
        "the newer result (sequence {sequence}) was acknowledged: ack floor {floor}"
    );
}
