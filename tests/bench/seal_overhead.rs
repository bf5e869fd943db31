//! Seal overhead: one 2KiB sector through the mesh (real nats-server, one worker process, file
//! store) beside the same phases called directly in this process, in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- seal_overhead
//!
//! Prints per phase: the direct call, the mesh's wall time from the task being queued to its
//! result being accepted, the time the proof took inside the worker's child process, and the
//! overhead (mesh wall − direct).

use std::path::Path;
use std::time::{Duration, Instant};

use mesh::model::{MinerId, ObjectRef, PieceSpec, SectorIdentity, SectorSize};
use mesh::phases::{self, Phase, SectorData};
use mesh::proofs::exec::run;
use mesh::proofs::job::{Job, JobOutput};
use mesh_tests::report::Report;
use mesh_tests::{Mesh, require_2kib_params};

/// The objects a phase left in `dir`, named as a result would name them.
fn written(phase: Phase, dir: &Path) -> Vec<ObjectRef> {
    let object = |name: String| ObjectRef {
        name,
        key: String::new(),
        size: 0,
        sha256: [0; 32],
    };
    let mut out = Vec::new();
    for artefact in phase.writes() {
        if artefact.is_dir() {
            for entry in std::fs::read_dir(artefact.path(dir)).unwrap() {
                let file = entry.unwrap().file_name();
                out.push(object(artefact.file(&file.to_string_lossy())));
            }
        } else {
            out.push(object(artefact.name().to_string()));
        }
    }
    out
}

/// The phases `which` of one committed-capacity sector of `size` called directly in this process, in
/// `dir`, each task built and each output absorbed as the mesh's sector record does; the time
/// each call took.
pub(crate) fn direct_calls(
    size: SectorSize,
    which: &[Phase],
    dir: &Path,
) -> Vec<(Phase, Duration)> {
    let miner: MinerId = "f01000".parse().unwrap();
    let id = SectorIdentity {
        proof: size.seal_proof(),
        prover_id: miner.prover_id(),
        sector: 1,
    };
    let pieces = vec![PieceSpec {
        object: None,
        size: size.unpadded_bytes(),
    }];
    let mut data = SectorData::new(pieces, Vec::new(), [1u8; 32]);
    let mut times = Vec::new();
    for &phase in which {
        let job = phases::Job {
            id,
            dir: dir.to_path_buf(),
            params: phase.params(&data).unwrap(),
        };
        let started = Instant::now();
        let out = run(Job::Phase(job)).unwrap_or_else(|e| panic!("{phase}: {e}"));
        times.push((phase, started.elapsed()));
        let JobOutput::Phase(output) = out else {
            unreachable!("{out:?}")
        };
        phase
            .absorb(
                &mut data,
                size,
                &mesh::model::WorkerId("direct".into()),
                &written(phase, dir),
                &output,
                &mut || [2u8; 32],
            )
            .unwrap_or_else(|e| panic!("{phase}: {e}"));
    }
    times
}

/// Every phase of one committed-capacity 2KiB sector called directly.
fn direct() -> Vec<(Phase, Duration)> {
    let dir = tempfile::tempdir().unwrap();
    direct_calls(SectorSize::KiB2, &Phase::ALL, dir.path())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    require_2kib_params();
    println!("seal overhead, one 2KiB sector: measuring direct calls (after a warm-up pass)…");
    direct();
    let direct = direct();

    println!("…and the same sector through the mesh (nats-server, 1 worker, file store)");
    let mesh = Mesh::start().await;
    let _worker = mesh.worker("bench", &[]);
    let started = Instant::now();
    let mut publisher = mesh.seal("publisher", &["--count", "1"]);
    let status = publisher.wait(Duration::from_secs(900)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    let total = started.elapsed();
    let broker = mesh.broker().await;
    let record = mesh::publisher::list_sectors(&broker, "f01000".parse().unwrap())
        .await
        .unwrap()
        .remove(0);

    let mut report = Report::new(
        "seal_overhead",
        "Seal overhead: one 2KiB sector through the mesh beside direct calls",
        "One committed-capacity 2KiB sector: each phase called directly in the bench process \
         (after a warm-up pass), then the same sector through the mesh (real nats-server, one \
         `mesh-worker` with the proofs executor, file store), in the same run. *Mesh wall* is \
         from the task being queued to its result being accepted; *proof in worker child* is \
         the phase inside the worker's child process; *added by the mesh* is mesh wall − direct.",
        &[
            "phase",
            "direct call (ms)",
            "mesh wall (ms)",
            "proof in worker child (ms)",
            "added by the mesh (ms)",
            "mesh / direct",
        ],
    );
    let (mut direct_sum, mut mesh_sum) = (0.0, 0.0);
    for (phase, took) in &direct {
        let run = record
            .history
            .iter()
            .find(|r| r.phase == *phase)
            .expect("phase in history");
        let (d, w) = (ms(*took), run.wall_ms as f64);
        direct_sum += d;
        mesh_sum += w;
        report.row(vec![
            phase.to_string(),
            format!("{d:.1}"),
            format!("{w:.0}"),
            run.run_ms.to_string(),
            format!("{:.0}", w - d),
            format!("{:.2}", w / d.max(0.001)),
        ]);
    }
    report.row(vec![
        "all".into(),
        format!("{direct_sum:.0}"),
        format!("{mesh_sum:.0}"),
        String::new(),
        format!("{:.0}", mesh_sum - direct_sum),
        format!("{:.2}", mesh_sum / direct_sum),
    ]);
    report.note(format!(
        "Publisher wall time, start to sealed and verified: {:.1} s.",
        total.as_secs_f64()
    ));
    report.write();
}
