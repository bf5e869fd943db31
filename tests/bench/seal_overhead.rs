//! Seal overhead: one 2KiB sector through the mesh (real nats-server, one worker process, file
//! store) beside the same phases called directly in this process, in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench seal_overhead
//!
//! Prints per phase: the direct call, the mesh's wall time from the task being queued to its
//! result being accepted, the time the proof took inside the worker's child process, and the
//! overhead (mesh wall − direct).

use std::fs;
use std::time::{Duration, Instant};

use mesh::model::{MinerId, Phase, SectorSize};
use mesh::proofs::exec::run;
use mesh::proofs::job::{Job, JobOutput, PieceSource, SectorIdentity};
use mesh::proofs::{prover_id, seal_proof};
use mesh_tests::report::Report;
use mesh_tests::{Mesh, require_2kib_params};

fn direct() -> Vec<(Phase, Duration)> {
    let proof = seal_proof(SectorSize::KiB2);
    let miner: MinerId = "f01000".parse().unwrap();
    let id = SectorIdentity {
        proof,
        prover_id: prover_id(miner),
        sector: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("cache")).unwrap();
    let mut times = Vec::new();
    let mut timed = |phase: Phase, job: Job| -> JobOutput {
        let started = Instant::now();
        let out = run(job).unwrap_or_else(|e| panic!("{phase}: {e}"));
        times.push((phase, started.elapsed()));
        out
    };
    let JobOutput::AddPiece { piece_infos } = timed(
        Phase::AddPiece,
        Job::AddPiece {
            proof,
            pieces: vec![PieceSource {
                path: None,
                size: 2032,
            }],
            unsealed: d.join("unsealed"),
        },
    ) else {
        unreachable!()
    };
    let ticket = [1u8; 32];
    let JobOutput::PreCommit1 { pc1_output } = timed(
        Phase::PreCommit1,
        Job::PreCommit1 {
            id,
            ticket,
            piece_infos: piece_infos.clone(),
            cache: d.join("cache"),
            unsealed: d.join("unsealed"),
            sealed: d.join("sealed"),
        },
    ) else {
        unreachable!()
    };
    let JobOutput::PreCommit2 { comm_r, comm_d } = timed(
        Phase::PreCommit2,
        Job::PreCommit2 {
            pc1_output,
            cache: d.join("cache"),
            unsealed: d.join("unsealed"),
            sealed: d.join("sealed"),
        },
    ) else {
        unreachable!()
    };
    timed(
        Phase::Commit1,
        Job::Commit1 {
            id,
            ticket,
            seed: [2u8; 32],
            comm_r,
            comm_d,
            piece_infos,
            cache: d.join("cache"),
            sealed: d.join("sealed"),
            c1_output: d.join("c1.out"),
        },
    );
    timed(
        Phase::Commit2,
        Job::Commit2 {
            id,
            c1_output: d.join("c1.out"),
        },
    );
    timed(
        Phase::Finalize,
        Job::Finalize {
            cache: d.join("cache"),
        },
    );
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
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
