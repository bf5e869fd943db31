//! A real 512MiB sector: AddPiece, PreCommit1, PreCommit2 and Commit1 with the real proofs
//! through the mesh (real nats-server, two worker processes, `seal --until c1`), on the file
//! store and then on S3 (SeaweedFS), beside the same phases called directly in this process, in
//! the same run. Commit2 is left out: its 512MiB parameters cannot be fetched here.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- real_size
//!
//! About 40 minutes on 2 cores. Besides the times, it reports the bytes each run moved through
//! the store, and what the store would carry for one 32GiB sector with and without locality,
//! scaled from the files the direct run left.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh::model::SectorSize;
use mesh::phases::Phase;
use mesh_tests::report::Report;
use mesh_tests::servers::Seaweed;
use mesh_tests::{Mesh, lines, s3_store};

const PHASES: [Phase; 4] = [
    Phase::AddPiece,
    Phase::PreCommit1,
    Phase::PreCommit2,
    Phase::Commit1,
];

/// The sizes of the files a sector directory holds after Commit1, by kind.
#[derive(Debug, Default)]
struct Files {
    unsealed: u64,
    sealed: u64,
    layers: Vec<u64>,
    tree_d: u64,
    tree_c: u64,
    tree_r_last: u64,
    small: u64,
}

fn files(dir: &Path) -> Files {
    let mut f = Files::default();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    f.unsealed = size(&dir.join("unsealed"));
    f.sealed = size(&dir.join("sealed"));
    for entry in std::fs::read_dir(dir.join("cache")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let len = entry.metadata().unwrap().len();
        if name.contains("layer") {
            f.layers.push(len);
        } else if name.contains("tree-d") {
            f.tree_d += len;
        } else if name.contains("tree-c") {
            f.tree_c += len;
        } else if name.contains("tree-r-last") {
            f.tree_r_last += len;
        } else {
            f.small += len;
        }
    }
    f
}

/// AddPiece to Commit1 of one committed-capacity 512MiB sector called directly, and the files
/// they left.
fn direct() -> (Vec<(Phase, Duration)>, Files) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let times = super::seal_overhead::direct_calls(SectorSize::MiB512, &PHASES, dir.path());
    for (phase, took) in &times {
        println!("  direct {phase}: {:.1} s", took.as_secs_f64());
    }
    (times, files(dir.path()))
}

/// The worker environment that lets each proof use every core, as the direct calls do.
fn every_core() -> Vec<(String, String)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ["AP", "PC1", "PC2"]
        .map(|phase| (format!("{phase}_512M_MAX_PARALLELISM"), cpus.to_string()))
        .to_vec()
}

/// One mesh run: per phase (wall ms, proof ms in the worker's child, worker), and the bytes the
/// sector read from and wrote to the store.
struct MeshRun {
    phases: BTreeMap<Phase, (u64, u64, String)>,
    read: u64,
    written: u64,
    total: Duration,
}

async fn through_mesh(mesh: &Mesh) -> MeshRun {
    mesh.publisher(&["init", "--sizes", "512MiB"]);
    let _w1 = mesh.worker("w1", &["--sizes", "512MiB"]);
    let _w2 = mesh.worker("w2", &["--sizes", "512MiB"]);
    let out = mesh.path("out.jsonl");
    let started = Instant::now();
    let mut publisher = mesh.seal_sized(
        "f01000",
        "publisher",
        "512MiB",
        &[
            "--count",
            "1",
            "--until",
            "c1",
            "--out",
            &out.display().to_string(),
        ],
    );
    let status = publisher.wait(Duration::from_secs(3600)).await;
    assert!(status.success(), "{}", publisher.tail(30));
    let total = started.elapsed();
    let line: serde_json::Value = serde_json::from_str(&lines(&out)[0]).unwrap();
    let broker = mesh.broker().await;
    let record = mesh::publisher::list_sectors(&broker, "f01000".parse().unwrap())
        .await
        .unwrap()
        .remove(0);
    let mut phases = BTreeMap::new();
    for run in &record.history {
        phases.insert(run.phase, (run.wall_ms, run.run_ms, run.worker.0.clone()));
    }
    MeshRun {
        phases,
        read: line["store_bytes"]["read"].as_u64().unwrap_or(0),
        written: line["store_bytes"]["written"].as_u64().unwrap_or(0),
        total,
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1u64 << 30) as f64)
}

/// What one 32GiB sector moves through the store (read, written) with and without locality,
/// from the file sizes of a 512MiB sector: every file grows with the sector (× 64), and a
/// 32GiB sector has 11 layers where a 512MiB one has 2. Without locality every phase downloads
/// what it reads and uploads what it writes (PreCommit2, Commit1 and Finalize each download the
/// cache); with it only the unsealed copy (AddPiece → PreCommit1), Commit1's output and, at
/// Finalize, the replica and the trimmed cache go through the store.
fn per_32gib(f: &Files) -> ((f64, f64), (f64, f64)) {
    let x = 64.0;
    let layer = f.layers.iter().copied().max().unwrap_or(0) as f64 * x;
    let layers = 11.0 * layer;
    let (unsealed, sealed) = (f.unsealed as f64 * x, f.sealed as f64 * x);
    let (tree_d, tree_c, tree_r) = (
        f.tree_d as f64 * x,
        f.tree_c as f64 * x,
        f.tree_r_last as f64 * x,
    );
    let small = f.small as f64;
    let pc1_cache = layers + tree_d;
    let full_cache = pc1_cache + tree_c + tree_r + small;
    let without = (
        // PC1 reads unsealed; PC2 unsealed and cache; C1 replica and cache; Finalize cache.
        unsealed + (unsealed + pc1_cache) + (sealed + full_cache) + full_cache,
        // AP unsealed; PC1 its cache; PC2 the replica and trees C and R.
        unsealed + pc1_cache + (sealed + tree_c + tree_r + small),
    );
    let with = (unsealed, unsealed + sealed + tree_r + small);
    (without, with)
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    mesh_tests::require_2kib_params();
    let started = Instant::now();
    // 512MiB's parent cache is about 0.9 GB; 2KiB's a few KB.
    let large_parent_cache = || {
        std::fs::read_dir(mesh::proofs::child::DEFAULT_PARENT_CACHE)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 100 << 20))
            })
            .unwrap_or(false)
    };
    let parents_before = large_parent_cache();
    // Built before anything is timed, so that no run pays for it.
    let built = Instant::now();
    mesh::proofs::params::build_parent_cache(SectorSize::MiB512.seal_proof())
        .expect("build the 512MiB parent cache");
    let parents_took = built.elapsed();
    assert!(
        large_parent_cache(),
        "no parent cache in {}",
        mesh::proofs::child::DEFAULT_PARENT_CACHE
    );

    println!("real size, one 512MiB sector to Commit1: through the mesh on the file store…");
    let mut mesh = Mesh::start().await;
    mesh.env = every_core();
    let file = through_mesh(&mesh).await;
    drop(mesh);
    println!("…through the mesh on S3 (SeaweedFS)…");
    let s3 = Seaweed::start();
    s3_store(&s3, "real").await;
    let mut mesh = Mesh::start().await;
    mesh.store = format!("s3://{}/real", s3.bucket);
    mesh.env = s3.env();
    mesh.env.extend(every_core());
    let on_s3 = through_mesh(&mesh).await;
    drop(mesh);
    drop(s3);
    println!("…and each phase called directly");
    let (direct, files) = direct();

    let mut report = Report::new(
        "real_size",
        "Real size: one 512MiB sector to Commit1 through the mesh beside direct calls",
        "One committed-capacity 512MiB sector, AddPiece, PreCommit1, PreCommit2 and Commit1 with \
         the real proofs (single-core SDR), `mesh-publisher seal --size 512MiB --until c1` with \
         two `mesh-worker` processes on this machine (real nats-server; the file store, then \
         SeaweedFS's S3), then the same phases called directly in the bench process, in the \
         same run. Commit2 is not run: its official 512MiB parameters cannot be fetched here. \
         *Mesh wall* is from the task being queued to its result being accepted (downloads, \
         the proof in a child process, uploads, the hand-offs); *proof* is the phase inside the \
         worker's child process.",
        &[
            "phase",
            "direct (s)",
            "file: mesh wall (s)",
            "file: proof (s)",
            "file / direct",
            "S3: mesh wall (s)",
            "S3 / direct",
            "worker (file, S3)",
        ],
    );
    let (mut d_sum, mut f_sum, mut s_sum) = (0.0, 0.0, 0.0);
    let secs = |ms: u64| ms as f64 / 1000.0;
    for (phase, took) in &direct {
        let d = took.as_secs_f64();
        let (fw, fp, fworker) = file.phases[phase].clone();
        let (sw, _, sworker) = on_s3.phases[phase].clone();
        d_sum += d;
        f_sum += secs(fw);
        s_sum += secs(sw);
        report.row(vec![
            phase.to_string(),
            format!("{d:.1}"),
            format!("{:.1}", secs(fw)),
            format!("{:.1}", secs(fp)),
            format!("{:.3}", secs(fw) / d),
            format!("{:.1}", secs(sw)),
            format!("{:.3}", secs(sw) / d),
            format!("{fworker}, {sworker}"),
        ]);
    }
    report.row(vec![
        "all".into(),
        format!("{d_sum:.1}"),
        format!("{f_sum:.1}"),
        String::new(),
        format!("{:.3}", f_sum / d_sum),
        format!("{s_sum:.1}"),
        format!("{:.3}", s_sum / d_sum),
        String::new(),
    ]);
    report.note(format!(
        "Publisher wall time, start to stopped after Commit1: file store {:.1} s, S3 {:.1} s.",
        file.total.as_secs_f64(),
        on_s3.total.as_secs_f64()
    ));
    report.note(format!(
        "Bytes through the store for this sector: file store {} GiB read, {} GiB written; S3 {} \
         GiB read, {} GiB written (the unsealed copy up at AddPiece and down at PreCommit1, \
         Commit1's output up; the cache stayed on the worker that ran PreCommit1).",
        gib(file.read as f64),
        gib(file.written as f64),
        gib(on_s3.read as f64),
        gib(on_s3.written as f64)
    ));
    let ((wr, ww), (lr, lw)) = per_32gib(&files);
    report.note(format!(
        "Per 32GiB sector, scaled from the direct run's files (layer {} GiB × 2 at 512MiB, tree D \
         {}, tree C {}, replica {}; × 64 and 11 layers at 32GiB): without locality the store \
         carries {} GiB read and {} GiB written from AddPiece to Finalize; with it {} GiB read \
         and {} GiB written (the unsealed copy, then the replica and the trimmed cache).",
        gib(files.layers.iter().copied().max().unwrap_or(0) as f64),
        gib(files.tree_d as f64),
        gib(files.tree_c as f64),
        gib(files.sealed as f64),
        gib(wr),
        gib(ww),
        gib(lr),
        gib(lw)
    ));
    report.note(format!(
        "The SDR parent cache of 512MiB {} before the run; it was built (or found) in {:.1} s \
         before anything was timed.",
        if parents_before {
            "existed"
        } else {
            "did not exist"
        },
        parents_took.as_secs_f64()
    ));
    report.note(
        "The workers ran with `AP_512M_MAX_PARALLELISM`, `PC1_512M_MAX_PARALLELISM` and \
         `PC2_512M_MAX_PARALLELISM` set to this machine's threads, so that each proof may use \
         every core as the direct call does: the table's rows (1 thread; 92% of 2 is 1) would \
         cap them to one core here and measure the cap, not the mesh.",
    );
    report.note(format!("Runtime {:.0} s.", started.elapsed().as_secs_f64()));
    report.write();
}
