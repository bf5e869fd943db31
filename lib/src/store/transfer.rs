//! Moving files between local disk and the store: a file store's files are copied directly
//! through a few reused buffers; a remote store gets parts sized to the file ([`parts::plan`]),
//! several in flight, and is read in large ranged reads, several in flight. The sha256 of every
//! byte is computed on a thread of its own, beside the I/O instead of taking turns with it, and
//! a download's writeback starts as it lands.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinError;
use tokio_util::task::AbortOnDropHandle;

use super::parts::{self, Plan};
use super::{Store, StoreError, local};
use crate::model::ObjectRef;

/// Files up to this size are uploaded in one request (held in memory); larger ones stream in
/// parts, so no sector file of 8MiB or more is ever read whole into memory.
pub(super) const SINGLE_PUT_LIMIT: u64 = 4 << 20;
/// Bytes per read of a file going to a remote store and per ranged read from one: large enough
/// that the cost of each call (a syscall, a thread hop, a request) vanishes beside the transfer.
/// Not above [`parts::MIN_PART`], so one block completes at most one part.
pub(super) const BLOCK: usize = 8 << 20;
/// Ranged reads in flight per download from a remote store: one request at a time leaves the
/// link idle for a round trip per block.
const DOWNLOAD_CONCURRENCY: usize = 4;
/// Blocks queued for the hasher, so that a read seldom waits for the hash of the block before.
const HASH_QUEUE: usize = 4;
/// Buffers of a copy between local files, passed between the copying thread and the hasher and
/// reused: small enough to stay in the CPU's caches between the two. Here 1 MiB buffers copied
/// and hashed 512 MiB at 0.75-0.8 of `cp`'s speed, fresh 8 MiB blocks at 0.3, and a kernel copy
/// with the hasher reading each block back at 0.55-0.6.
const COPY_BUFFER: usize = 1 << 20;
const COPY_BUFFERS: usize = 4;

impl Store {
    /// Uploads a local file under `key` and returns its `ObjectRef`. Into a file store the file
    /// is copied, hashed beside the copy, and renamed into place; to a remote store files above
    /// 4 MiB go up in parts sized to the file ([`parts::plan`]), several at once, and a failed
    /// upload is aborted. A file above 5 TiB is refused before anything is sent.
    pub async fn put_file(
        &self,
        name: &str,
        key: &str,
        file: &Path,
    ) -> Result<ObjectRef, StoreError> {
        let path = file.to_path_buf();
        let (src, len) = blocking(move || {
            let src = File::open(&path).map_err(|e| local(&path, e))?;
            let len = src.metadata().map_err(|e| local(&path, e))?.len();
            Ok::<_, StoreError>((src, len))
        })
        .await?;
        let plan = parts::plan(len).ok_or_else(|| StoreError::TooLarge {
            path: file.to_path_buf(),
            size: len,
        })?;
        let target = self.path(key);
        let (size, sha256) = if let Some(fs) = &self.local {
            self.put_local(fs, key, &target, file, src).await?
        } else if len <= SINGLE_PUT_LIMIT {
            let path = file.to_path_buf();
            let data = blocking(move || {
                let mut data = Vec::with_capacity(len as usize);
                (&src).read_to_end(&mut data).map_err(|e| local(&path, e))?;
                Ok::<_, StoreError>(data)
            })
            .await?;
            let sha256 = Sha256::digest(&data).into();
            let size = data.len() as u64;
            self.inner
                .put(&target, PutPayload::from(data))
                .await
                .map_err(|e| self.unavailable("upload", key, e))?;
            (size, sha256)
        } else {
            self.put_parts(key, &target, file, Arc::new(src), plan)
                .await?
        };
        Ok(ObjectRef {
            name: name.to_string(),
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// Into the file store: copies `src` to a staging file beside the object's (named as
    /// object_store names its own, `<file>#<n>`, which listings skip), then renames it into
    /// place, so that readers never see a part-written object. No fsync, as object_store's
    /// file store does none by default.
    async fn put_local(
        &self,
        fs: &LocalFileSystem,
        key: &str,
        target: &ObjectPath,
        file: &Path,
        src: File,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let dest = fs
            .path_to_filesystem(target)
            .map_err(|e| self.unavailable("upload", key, e))?;
        let file = file.to_path_buf();
        blocking(move || {
            let (staged, staged_path) = stage(&dest)?;
            let copied = copy_and_hash(&src, &file, Arc::new(staged), &staged_path, false)
                .and_then(|copied| {
                    std::fs::rename(&staged_path, &dest).map_err(|e| local(&dest, e))?;
                    Ok(copied)
                });
            if copied.is_err() {
                let _ = std::fs::remove_file(&staged_path);
            }
            copied
        })
        .await
    }

    /// Streams `src` up in parts of `plan.part_size`, `plan.concurrency` in flight, hashing on
    /// the side; returns the bytes sent and their sha256.
    async fn put_parts(
        &self,
        key: &str,
        target: &ObjectPath,
        file: &Path,
        src: Arc<File>,
        plan: Plan,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let upload = self
            .inner
            .put_multipart(target)
            .await
            .map_err(|e| self.unavailable("start upload of", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, plan.part_size as usize);
        let hash = SideHash::start();
        let mut size = 0u64;
        let sent = async {
            loop {
                let (src, path) = (src.clone(), file.to_path_buf());
                let block = blocking(move || read_block(&src).map_err(|e| local(&path, e))).await?;
                if block.is_empty() {
                    return Ok(());
                }
                size += block.len() as u64;
                hash.feed(block.clone()).await;
                writer
                    .wait_for_capacity(plan.concurrency)
                    .await
                    .map_err(|e| self.unavailable("upload", key, e))?;
                writer.put(block);
            }
        }
        .await;
        if let Err(e) = sent {
            // Best effort: a part-written upload left behind costs storage until it expires.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key, error = %abort, "abort failed upload");
            }
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.unavailable("finish upload of", key, e))?;
        Ok((size, hash.finish().await))
    }

    /// Downloads `key` to `dest` in large blocks, makes it durable (fsync) and returns its size
    /// and sha256. Writeback starts as blocks land, so the fsync at the end has little left.
    pub async fn get_file(&self, key: &str, dest: &Path) -> Result<(u64, [u8; 32]), StoreError> {
        let source = self.path(key);
        match &self.local {
            Some(fs) => self.get_local(fs, key, &source, dest).await,
            None => self.get_ranged(key, &source, dest).await,
        }
    }

    /// From the file store: copies the object's file, hashing beside the copy (object_store's
    /// own reader streams a file in 8 KiB chunks).
    async fn get_local(
        &self,
        fs: &LocalFileSystem,
        key: &str,
        source: &ObjectPath,
        dest: &Path,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let src_path = fs
            .path_to_filesystem(source)
            .map_err(|e| self.unavailable("download", key, e))?;
        let opened = {
            let src_path = src_path.clone();
            blocking(move || File::open(src_path)).await
        };
        let src = match opened {
            Ok(src) => src,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    store: self.name.clone(),
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(local(&src_path, e)),
        };
        let out = Arc::new(create(dest).await?);
        let dest = dest.to_path_buf();
        blocking(move || copy_and_hash(&src, &src_path, out, &dest, true)).await
    }

    /// From a remote store: ranged reads of one block each, several in flight (each a task of
    /// its own, so that they progress while a block is written), written in order.
    async fn get_ranged(
        &self,
        key: &str,
        source: &ObjectPath,
        dest: &Path,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let meta = self
            .inner
            .head(source)
            .await
            .map_err(|e| self.unavailable("download", key, e))?;
        let out = Arc::new(create(dest).await?);
        let flusher = Flusher::start(out.clone()).map_err(|e| local(dest, e))?;
        let hash = SideHash::start();
        let ranges = (0..meta.size)
            .step_by(BLOCK)
            .map(move |start| start..(start + BLOCK as u64).min(meta.size));
        let mut blocks = futures::stream::iter(ranges)
            .map(|range| {
                let (inner, source) = (self.inner.clone(), source.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    inner.get_range(&source, range).await
                }))
            })
            .buffered(DOWNLOAD_CONCURRENCY);
        let mut size = 0u64;
        while let Some(block) = blocks.next().await {
            let block = joined(block).map_err(|e| self.unavailable("download", key, e))?;
            size += block.len() as u64;
            hash.feed(block.clone()).await;
            let (out, path) = (out.clone(), dest.to_path_buf());
            blocking(move || (&*out).write_all(&block).map_err(|e| local(&path, e))).await?;
            flusher.written();
        }
        let path = dest.to_path_buf();
        blocking(move || {
            flusher.finish().map_err(|e| local(&path, e))?;
            out.sync_all().map_err(|e| local(&path, e))
        })
        .await?;
        Ok((size, hash.finish().await))
    }
}

/// Copies `src` into `dst` through a few small buffers, reused, while a second thread hashes
/// each buffer once it is written: the sha256 is of the bytes copied, computed beside the copy.
/// With `durable`, writeback runs beside the copy too and the copy ends with an fsync. Returns
/// the bytes copied and their sha256. It blocks. A file smaller than one buffer is copied in
/// one read and hashed in line: most of a task's outputs are small, and the buffers and the
/// hashing thread cost more than such a copy.
fn copy_and_hash(
    src: &File,
    src_path: &Path,
    dst: Arc<File>,
    dst_path: &Path,
    durable: bool,
) -> Result<(u64, [u8; 32]), StoreError> {
    let len = src.metadata().map_err(|e| local(src_path, e))?.len();
    if len < COPY_BUFFER as u64 {
        let mut bytes = Vec::with_capacity(len as usize + 1);
        (&*src)
            .read_to_end(&mut bytes)
            .map_err(|e| local(src_path, e))?;
        (&*dst).write_all(&bytes).map_err(|e| local(dst_path, e))?;
        if durable {
            dst.sync_all().map_err(|e| local(dst_path, e))?;
        }
        return Ok((bytes.len() as u64, Sha256::digest(&bytes).into()));
    }
    let flusher = match durable {
        true => Some(Flusher::start(dst.clone()).map_err(|e| local(dst_path, e))?),
        false => None,
    };
    let (size, sha256) = std::thread::scope(|scope| {
        let (filled, to_hash) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(COPY_BUFFERS);
        let (give_back, free) = std::sync::mpsc::sync_channel::<Vec<u8>>(COPY_BUFFERS);
        for _ in 0..COPY_BUFFERS {
            let _ = give_back.send(vec![0; COPY_BUFFER]);
        }
        let hasher = scope.spawn(move || {
            let mut sha = Sha256::new();
            for (buf, n) in to_hash {
                sha.update(&buf[..n]);
                let _ = give_back.send(buf);
            }
            <[u8; 32]>::from(sha.finalize())
        });
        let mut size = 0u64;
        let mut unflushed = 0;
        let copied = loop {
            // Fails only if the hasher died; joining it below reports why.
            let Ok(mut buf) = free.recv() else {
                break Ok(());
            };
            let n = match (&*src).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(local(src_path, e)),
            };
            if let Err(e) = (&*dst).write_all(&buf[..n]) {
                break Err(local(dst_path, e));
            }
            size += n as u64;
            if filled.send((buf, n)).is_err() {
                break Ok(());
            }
            unflushed += n;
            if let Some(flusher) = flusher.as_ref().filter(|_| unflushed >= BLOCK) {
                flusher.written();
                unflushed = 0;
            }
        };
        drop(filled);
        let sha256 = hasher
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        copied.map(|()| (size, sha256))
    })?;
    if let Some(flusher) = flusher {
        flusher.finish().map_err(|e| local(dst_path, e))?;
        dst.sync_all().map_err(|e| local(dst_path, e))?;
    }
    Ok((size, sha256))
}

/// Starts writeback of a file while it is being written: the kernel alone waits until dirty
/// pages reach a share of memory (a whole 512 MiB file can sit dirty), so an fsync at the end
/// would write everything after the copy instead of beside it. Each `sync_data` covers all
/// that was written before it, so there are as few as the disk needs.
struct Flusher {
    tx: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Flusher {
    fn start(file: Arc<File>) -> std::io::Result<Flusher> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mesh-flush".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Flusher { tx, thread })
    }

    /// Says that more has been written.
    fn written(&self) {
        // Sending fails only if the flusher stopped on an error; `finish` reports it.
        let _ = self.tx.send(());
    }

    /// Waits for the last writeback started (it blocks) and reports its error, if any.
    fn finish(self) -> std::io::Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Creates the staging file for an object at `dest` (and the directories above it).
fn stage(dest: &Path) -> Result<(File, PathBuf), StoreError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| local(parent, e))?;
    }
    for n in 1.. {
        let mut path = dest.as_os_str().to_owned();
        path.push(format!("#{n}"));
        let path = PathBuf::from(path);
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(local(&path, e)),
        }
    }
    unreachable!("an unbounded range")
}

/// sha256 on a blocking thread of its own, fed through a bounded queue of blocks (clones of the
/// buffers being copied, so nothing is copied twice): the copy and the hash run side by side on
/// two cores instead of taking turns on one.
struct SideHash {
    tx: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<[u8; 32]>,
}

impl SideHash {
    fn start() -> SideHash {
        let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(block) = rx.blocking_recv() {
                hasher.update(&block);
            }
            hasher.finalize().into()
        });
        SideHash { tx, task }
    }

    /// Queues a block, waiting while the queue is full.
    async fn feed(&self, block: Bytes) {
        // Sending fails only if the hasher died; `finish` reports that.
        let _ = self.tx.send(block).await;
    }

    /// The sha256 of every block fed, once the hasher has taken them all.
    async fn finish(self) -> [u8; 32] {
        drop(self.tx);
        joined(self.task.await)
    }
}

/// The next block of `file`: [`BLOCK`] bytes, fewer at its end, none past it. It blocks.
fn read_block(file: &File) -> std::io::Result<Bytes> {
    let mut block = Vec::with_capacity(BLOCK);
    file.take(BLOCK as u64).read_to_end(&mut block)?;
    Ok(block.into())
}

/// Creates (or truncates) `dest` and the directories above it.
async fn create(dest: &Path) -> Result<File, StoreError> {
    let dest: PathBuf = dest.to_path_buf();
    blocking(move || {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| local(parent, e))?;
        }
        File::create(&dest).map_err(|e| local(&dest, e))
    })
    .await
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    joined(tokio::task::spawn_blocking(f).await)
}

/// A task's output; its panic goes on in the caller. A task is cancelled only when the runtime
/// shuts down, which ends the caller too.
fn joined<T>(result: Result<T, JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("store transfer task: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::ops::Range;
    use std::os::unix::fs::FileExt;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjectPath;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutResult, UploadPart,
    };

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A store that passes everything to another and records the size of each part uploaded;
    /// from part `refuse_from` on (counting from 1) it refuses them.
    #[derive(Debug)]
    struct Recorder {
        inner: Arc<dyn ObjectStore>,
        parts: Arc<Mutex<Vec<usize>>>,
        refuse_from: usize,
    }

    impl fmt::Display for Recorder {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Recorder({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for Recorder {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            Ok(Box::new(RecordedUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                parts: self.parts.clone(),
                refuse_from: self.refuse_from,
            }))
        }

        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        async fn get_ranges(
            &self,
            location: &ObjectPath,
            ranges: &[Range<u64>],
        ) -> object_store::Result<Vec<Bytes>> {
            self.inner.get_ranges(location, ranges).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[derive(Debug)]
    struct RecordedUpload {
        inner: Box<dyn MultipartUpload>,
        parts: Arc<Mutex<Vec<usize>>>,
        refuse_from: usize,
    }

    #[async_trait]
    impl MultipartUpload for RecordedUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            let mut parts = self.parts.lock().unwrap();
            parts.push(data.content_length());
            if parts.len() >= self.refuse_from {
                return Box::pin(async {
                    Err(object_store::Error::Generic {
                        store: "Recorder",
                        source: "part refused".into(),
                    })
                });
            }
            self.inner.put_part(data)
        }

        async fn complete(&mut self) -> object_store::Result<PutResult> {
            self.inner.complete().await
        }

        async fn abort(&mut self) -> object_store::Result<()> {
            self.inner.abort().await
        }
    }

    /// Object_store's file store in `dir/store`, taken as a remote store is (uploads in parts,
    /// downloads in ranges), with its parts recorded; and the store itself.
    fn recorded_file_store(
        dir: &Path,
        refuse_from: usize,
    ) -> (Store, Arc<Mutex<Vec<usize>>>, Arc<LocalFileSystem>) {
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let fs = Arc::new(LocalFileSystem::new_with_prefix(dir.join("store")).unwrap());
        let parts = Arc::new(Mutex::new(Vec::new()));
        let store = Store {
            inner: Arc::new(Recorder {
                inner: fs.clone(),
                parts: parts.clone(),
                refuse_from,
            }),
            prefix: ObjectPath::default(),
            name: "recorded file store".into(),
            credentials: "none",
            local: None,
        };
        (store, parts, fs)
    }

    /// A sparse file of `len` bytes (no disk blocks but those of `data`, written at `at`).
    fn sparse(path: &Path, len: u64, at: u64, data: &[u8]) {
        let file = File::create(path).unwrap();
        file.set_len(len).unwrap();
        file.write_all_at(data, at).unwrap();
    }

    /// What it checks: that `put_file` cuts a file of 80 GiB + 1 byte (a real sparse file) into
    /// 9 MiB parts, the size [`parts::plan`] gives so that it needs 9,103 parts, within S3's
    /// 10,000 (8 MiB parts would need 10,241). The parts go the way they go to S3, GCS or Azure,
    /// into object_store's file store (the mesh's own file store copies whole files, no parts).
    /// It does not send 80 GiB (a minute of hashing zeros): the store refuses the third part,
    /// which also checks that the failed upload is aborted and leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sparse_file_past_80gib_goes_up_in_parts_that_stay_within_10000() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = (80 << 30) + 1;
        let src = dir.path().join("big");
        sparse(&src, len, len - 1, b"!");
        let plan = parts::plan(len).unwrap();
        assert_eq!((plan.part_size, plan.parts), (9 * MIB, 9103));
        assert!(len.div_ceil(8 * MIB) > parts::MAX_PARTS);

        let (store, parts, _) = recorded_file_store(dir.path(), 3);
        let err = store
            .put_file("big", "f01000/1/big", &src)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }) && err.to_string().contains("refused"),
            "{err}"
        );
        let parts = parts.lock().unwrap().clone();
        assert!(parts.len() >= 3, "{parts:?}");
        assert!(
            parts.iter().all(|&p| p as u64 == plan.part_size),
            "{parts:?}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("store/f01000/1"))
            .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "the aborted upload left {left:?}");
    }

    /// A smaller sparse file goes up whole in the planned parts (8 MiB, the minimum, at this
    /// size) and comes back byte for byte, in ranges and by the file store's own copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_in_planned_parts_round_trips() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 20 * MIB + 3;
        let src = dir.path().join("sealed");
        sparse(&src, len, 12 * MIB - 2, b"mesh");
        let (store, parts, fs) = recorded_file_store(dir.path(), usize::MAX);
        let object = store
            .put_file("sealed", "f01000/1/sealed", &src)
            .await
            .unwrap();
        assert_eq!(parts::plan(len).unwrap().part_size, 8 * MIB);
        assert_eq!(
            *parts.lock().unwrap(),
            [8 * MIB as usize, 8 * MIB as usize, 4 * MIB as usize + 3]
        );
        let data = std::fs::read(&src).unwrap();
        assert_eq!(object.size, len);
        assert_eq!(object.sha256, <[u8; 32]>::from(Sha256::digest(&data)));

        let dest = dir.path().join("out/ranged");
        store.get_object(&object, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
        let copied = Store {
            local: Some(fs),
            ..store.clone()
        };
        let dest = dir.path().join("out/copied");
        copied.get_object(&object, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
    }

    #[tokio::test]
    async fn a_file_past_5tib_is_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let src = dir.path().join("huge");
        sparse(&src, parts::MAX_OBJECT + 1, 0, b"x");
        let (store, parts, fs) = recorded_file_store(dir.path(), usize::MAX);
        let err = store.put_file("huge", "huge", &src).await.unwrap_err();
        assert!(err.is_permanent());
        let shown = err.to_string();
        assert!(
            shown.contains("5.0 TiB") && shown.contains("split it into files of at most 5 TiB"),
            "{shown}"
        );
        assert!(parts.lock().unwrap().is_empty());
        let copied = Store {
            local: Some(fs),
            ..store.clone()
        };
        let err = copied.put_file("huge", "huge", &src).await.unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        assert!(
            std::fs::read_dir(dir.path().join("store"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// A remote store is read in ranges, several blocks and a short last one; a missing object
    /// and a changed one are told apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_store_is_read_in_ranges_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            inner: Arc::new(InMemory::new()),
            prefix: ObjectPath::from("mesh"),
            name: "memory".into(),
            credentials: "none",
            local: None,
        };
        let data: Vec<u8> = (0..2 * BLOCK + 12345).map(|i| (i % 253) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let object = store
            .put_file("tree-d", "f01000/1/tree-d", &src)
            .await
            .unwrap();
        let dest = dir.path().join("a/b/dest");
        store.get_object(&object, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);

        let err = store.get_file("f01000/1/nope", &dest).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        store.put_bytes(&object.key, vec![7; 100]).await.unwrap();
        let err = store.get_object(&object, &dest).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { got_size: 100, .. }),
            "{err}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn a_copy_is_hashed_alike_below_at_and_above_one_buffer() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 2048, COPY_BUFFER - 1, COPY_BUFFER, 3 * COPY_BUFFER + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (src_path, dst_path) = (dir.path().join("src"), dir.path().join("dst"));
            std::fs::write(&src_path, &data).unwrap();
            let src = File::open(&src_path).unwrap();
            for durable in [false, true] {
                let dst = Arc::new(File::create(&dst_path).unwrap());
                let (size, sha256) =
                    copy_and_hash(&src, &src_path, dst, &dst_path, durable).unwrap();
                assert_eq!(size, len as u64, "{len} bytes");
                assert_eq!(
                    sha256,
                    <[u8; 32]>::from(Sha256::digest(&data)),
                    "{len} bytes"
                );
                assert_eq!(std::fs::read(&dst_path).unwrap(), data, "{len} bytes");
                std::io::Seek::rewind(&mut &src).unwrap();
            }
        }
    }
}
