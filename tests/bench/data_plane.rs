//! Data plane: a 512 MiB file up to and down from the store (a file store and S3 on a real
//! SeaweedFS), beside `cp` of the same file on the same disk, in the same run.
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- data_plane
//!
//! Upload is `Store::put_file` (streamed, 8 MiB parts above 4 MiB, sha256 computed on the way);
//! download is `Store::get_object` (streamed to disk, sha256 and size checked, fsynced), the
//! calls a worker makes for every input and output. Each figure is the median of three runs;
//! each run's `cp` is timed right before the store call it is compared with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh::model::ObjectRef;
use mesh::store::{Store, StoreConfig};
use mesh_tests::report::Report;
use mesh_tests::{Seaweed, s3_store};

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

#[derive(Default)]
struct Timings {
    up: Vec<Duration>,
    cp_up: Vec<Duration>,
    down: Vec<Duration>,
    cp_down: Vec<Duration>,
}

/// `RUNS` times: cp, upload, cp + fsync, download; the object and the copies are removed as
/// it goes, so at most the source, the object and one copy exist at once.
async fn measure(store: &Store, dir: &Path, src: &Path) -> Timings {
    let mut t = Timings::default();
    let copy = dir.join("copy");
    for _ in 0..RUNS {
        let cp_src = src.to_path_buf();
        let cp_dest = copy.clone();
        t.cp_up
            .push(blocking(move || cp(&cp_src, &cp_dest, false)).await);

        let started = Instant::now();
        let object: ObjectRef = store
            .put_file("data", KEY, src)
            .await
            .expect("upload the file");
        t.up.push(started.elapsed());
        assert_eq!(object.size, SIZE, "uploaded size");

        let cp_src = src.to_path_buf();
        let cp_dest = copy.clone();
        t.cp_down
            .push(blocking(move || cp(&cp_src, &cp_dest, true)).await);

        let started = Instant::now();
        store
            .get_object(&object, &copy)
            .await
            .expect("download and check the file");
        t.down.push(started.elapsed());
        tokio::fs::remove_file(&copy)
            .await
            .expect("remove the download");
        store.delete(KEY).await.expect("delete the object");
    }
    t
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn rows(report: &mut Report, name: &str, t: Timings) {
    for (direction, store, cp) in [("upload", t.up, t.cp_up), ("download", t.down, t.cp_down)] {
        let (store, cp) = (mb_per_s(median(store)), mb_per_s(median(cp)));
        report.row(vec![
            name.to_string(),
            direction.to_string(),
            format!("{store:.0}"),
            format!("{cp:.0}"),
            format!("{:.2}", store / cp),
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
    let file = measure(&file_store, dir.path(), &src).await;

    println!("data plane: S3 on SeaweedFS…");
    let seaweed = Seaweed::start();
    let s3 = s3_store(&seaweed, "bench").await;
    let s3_times = measure(&s3, dir.path(), &src).await;
    drop(seaweed);

    let mut report = Report::new(
        "data_plane",
        "Data plane: a 512 MiB file through the store beside cp",
        &format!(
            "One {} MiB file of pseudo-random bytes, on the same filesystem as the file store's \
             directory and SeaweedFS's data (`weed mini` on loopback, one process). Upload: \
             `Store::put_file` (streamed in 8 MiB parts, sha256 computed on the way, no fsync, \
             like `cp`). Download: `Store::get_object` (streamed to disk, size and sha256 \
             checked as the mesh checks every download, then fsynced); its `cp` baseline is \
             `cp` plus an fsync of the copy. Median of {RUNS} runs each, each `cp` timed right \
             before the store call it is compared with; warm page cache. MB/s = 10⁶ bytes per \
             second; ratio = store ÷ cp.",
            SIZE >> 20
        ),
        &["store", "direction", "MB/s", "cp MB/s", "ratio"],
    );
    rows(&mut report, "file", file);
    rows(&mut report, "S3 (SeaweedFS)", s3_times);
    report.note(
        "Both directions pass every byte through sha256 (the upload records it, the download \
         checks it, as the mesh does for every object); `cp` does not.",
    );
    report.note(format!("Runtime {:.0} s.", started.elapsed().as_secs_f64()));
    report.write();
}
