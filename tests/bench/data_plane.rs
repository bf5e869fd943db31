//! Data plane: a 512 MiB file up to and down from the store (a file store and S3 on a real
//! SeaweedFS), beside `cp` of the same file on the same disk, in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- data_plane
//!
//! Upload is `Store::put_file` (into the file store a copy through a few reused buffers; to S3
//! parts sized to the file, several in flight; sha256 computed beside the copy); download is
//! `Store::get_object` (large blocks to disk, sha256 and size checked, fsynced), the calls a
//! worker makes for every input and output. Each figure is the median of three runs; each run's
//! `cp` is timed right before the store call it is compared with. Beside each, the CPU time the
//! mesh's process and the S3 server spent, and the speed of sha256 alone: where the time goes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh::model::ObjectRef;
use mesh::store::{Store, StoreConfig};
use mesh_tests::report::Report;
use mesh_tests::{Seaweed, s3_store};
use sha2::{Digest, Sha256};

const SIZE: u64 = 512 << 20;
const RUNS: usize = 3;
const KEY: &str = "bench/data-plane";

/// Writes `SIZE` bytes of xorshift output (incompressible, so no layer can shortcut it) and
/// fsyncs them, so that later timings do not pay for this file's writeback.
fn write_source(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the source file");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..SIZE / buf.len() as u64 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&buf).expect("write the source file");
    }
    file.sync_all().expect("fsync the source file");
}

/// `cp src dest`, then an fsync of the copy when `fsync` (to match a download, which fsyncs);
/// the copy is removed afterwards.
fn cp(src: &Path, dest: &Path, fsync: bool) -> Duration {
    let started = Instant::now();
    let status = Command::new("cp")
        .arg(src)
        .arg(dest)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp failed");
    if fsync {
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .expect("fsync the copy");
    }
    let took = started.elapsed();
    std::fs::remove_file(dest).expect("remove the copy");
    took
}

fn mb_per_s(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The time sha256 takes over `SIZE` bytes already in memory (a 1 MiB buffer, in the CPU's
/// caches, hashed over and over) on one core: the least any transfer that hashes every byte
/// on one core can take, however well it overlaps the hash with the copy.
fn sha256_in_memory() -> Duration {
    let buf = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut sha = Sha256::new();
    for _ in 0..SIZE / buf.len() as u64 {
        sha.update(std::hint::black_box(&buf));
    }
    std::hint::black_box(sha.finalize());
    started.elapsed()
}

/// CPU seconds (user + system, all threads) a process has used: this one, or `pid`.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let pid = pid.map_or("self".to_string(), |p| p.to_string());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may hold spaces) start at field 3; utime and stime are
    // fields 14 and 15, in clock ticks of 1/100 s (USER_HZ, fixed on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// One store call: its time, the CPU seconds of this process and of the server (if any).
#[derive(Clone, Copy)]
struct Call {
    took: Duration,
    cpu: f64,
    server_cpu: Option<f64>,
}

async fn timed<T>(server: Option<u32>, call: impl std::future::Future<Output = T>) -> (T, Call) {
    let (cpu, server_cpu) = (cpu_seconds(None), server.map(|p| cpu_seconds(Some(p))));
    let started = Instant::now();
    let out = call.await;
    let took = started.elapsed();
    let call = Call {
        took,
        cpu: cpu_seconds(None) - cpu,
        server_cpu: server
            .map(|p| cpu_seconds(Some(p)))
            .zip(server_cpu)
            .map(|(b, a)| b - a),
    };
    (out, call)
}

#[derive(Default)]
struct Timings {
    up: Vec<Call>,
    cp_up: Vec<Duration>,
    down: Vec<Call>,
    cp_down: Vec<Duration>,
    sha256: Vec<Duration>,
}

/// `RUNS` times: cp, upload, cp + fsync, download, sha256 in memory; the object and the copies are
/// removed as it goes, so at most the source, the object and one copy exist at once. `server`
/// is the store's server process, whose CPU time is read beside each call.
async fn measure(store: &Store, dir: &Path, src: &Path, server: Option<u32>) -> Timings {
    let mut t = Timings::default();
    let copy = dir.join("copy");
    for _ in 0..RUNS {
        let cp_src = src.to_path_buf();
        let cp_dest = copy.clone();
        t.cp_up
            .push(blocking(move || cp(&cp_src, &cp_dest, false)).await);

        let (object, call) = timed(server, store.put_file("data", KEY, src)).await;
        let object: ObjectRef = object.expect("upload the file");
        t.up.push(call);
        assert_eq!(object.size, SIZE, "uploaded size");

        let cp_src = src.to_path_buf();
        let cp_dest = copy.clone();
        t.cp_down
            .push(blocking(move || cp(&cp_src, &cp_dest, true)).await);

        let (got, call) = timed(server, store.get_object(&object, &copy)).await;
        got.expect("download and check the file");
        t.down.push(call);
        tokio::fs::remove_file(&copy)
            .await
            .expect("remove the download");
        store.delete(KEY).await.expect("delete the object");

        t.sha256.push(blocking(sha256_in_memory).await);
    }
    t
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn rows(report: &mut Report, name: &str, t: &Timings) {
    for (direction, calls, cp) in [
        ("upload", &t.up, &t.cp_up),
        ("download", &t.down, &t.cp_down),
    ] {
        let store = mb_per_s(median(calls.iter().map(|c| c.took).collect()));
        let cp = mb_per_s(median(cp.clone()));
        let cpu = median_f64(calls.iter().map(|c| c.cpu).collect());
        let server = calls
            .iter()
            .map(|c| c.server_cpu)
            .collect::<Option<Vec<f64>>>()
            .map_or("–".to_string(), |s| format!("{:.1}", median_f64(s)));
        report.row(vec![
            name.to_string(),
            direction.to_string(),
            format!("{store:.0}"),
            format!("{cp:.0}"),
            format!("{:.2}", store / cp),
            format!("{cpu:.1}"),
            server,
        ]);
    }
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let src: PathBuf = dir.path().join("source");
    println!(
        "data plane: writing a {} MiB source file in {}…",
        SIZE >> 20,
        dir.path().display()
    );
    let path = src.clone();
    blocking(move || write_source(&path)).await;

    println!("data plane: file store…");
    let store_dir = dir.path().join("store");
    let file_store = Store::open(&StoreConfig {
        url: format!("file://{}", store_dir.display()),
        options: Vec::new(),
    })
    .expect("open the file store");
    let file = measure(&file_store, dir.path(), &src, None).await;

    println!("data plane: S3 on SeaweedFS…");
    let seaweed = Seaweed::start();
    let s3 = s3_store(&seaweed, "bench").await;
    let s3_times = measure(&s3, dir.path(), &src, seaweed.pid()).await;
    drop(seaweed);

    let mut report = Report::new(
        "data_plane",
        "Data plane: a 512 MiB file through the store beside cp",
        &format!(
            "One {} MiB file of pseudo-random bytes, on the same filesystem as the file store's \
             directory and SeaweedFS's data (`weed mini` on loopback, one process). Upload: \
             `Store::put_file`: into the file store a copy through four reused 1 MiB \
             buffers to a staging file renamed into place; to S3 parts sized to the file \
             (8 MiB here), 8 in flight; sha256 computed beside the copy on another thread; no \
             fsync, like `cp`. Download: \
             `Store::get_object`: from the file store the same copy, from S3 ranged reads of \
             8 MiB, 4 in flight; size and sha256 checked as the mesh checks every download; \
             writeback started as blocks land, then fsynced; its `cp` baseline is `cp` plus an \
             fsync of the copy. Median of {RUNS} runs each, each `cp` timed right before the \
             store call it is compared with; warm page cache. MB/s = 10⁶ bytes per second; \
             ratio = store ÷ cp; CPU s = CPU seconds (user + system) per call of the mesh's \
             process and of the S3 server.",
            SIZE >> 20
        ),
        &[
            "store",
            "direction",
            "MB/s",
            "cp MB/s",
            "ratio",
            "mesh CPU s",
            "server CPU s",
        ],
    );
    rows(&mut report, "file", &file);
    rows(&mut report, "S3 (SeaweedFS)", &s3_times);
    let sha256 = mb_per_s(median(
        file.sha256
            .iter()
            .chain(&s3_times.sha256)
            .copied()
            .collect(),
    ));
    let cp_up = mb_per_s(median(
        file.cp_up.iter().chain(&s3_times.cp_up).copied().collect(),
    ));
    let s3_up_server = median_f64(s3_times.up.iter().filter_map(|c| c.server_cpu).collect());
    report.note(format!(
        "Both directions pass every byte through sha256 (the upload records it, the download \
         checks it, as the mesh does for every object); `cp` does not. sha256 over data already \
         in memory ran at {sha256:.0} MB/s on one core in the same run, {:.2} of the median `cp` \
         without fsync (all six): no transfer that hashes every byte on one core can pass that \
         ratio.",
        sha256 / cp_up
    ));
    report.note(format!(
        "SeaweedFS spent {s3_up_server:.1} CPU s on each upload: on 2 cores it could take at most \
         {:.0} MB/s ({:.2} of the same `cp`) were the mesh to use no CPU at all.",
        SIZE as f64 / 1e6 / (s3_up_server / 2.0),
        SIZE as f64 / 1e6 / (s3_up_server / 2.0) / cp_up
    ));
    report.note(format!("Runtime {:.0} s.", started.elapsed().as_secs_f64()));
    report.write();
}
