//! The real [`Io`]: io_uring through compio's driver.
//!
//! Segment files are opened with O_DIRECT; their writes, reads and
//! fdatasyncs, directory fsyncs, opens and renames are io_uring submissions on
//! the calling shard's compio runtime, so the shard thread never waits for the
//! device on those paths. Every method must be called on a thread that runs a
//! compio runtime (the shard thread); futures are not `Send`.
//!
//! Blocking exceptions, accepted on purpose:
//! - `allocate` calls fallocate(2) synchronously: compio 0.19 has no fallocate
//!   op. It runs once per [`PREALLOCATE_STEP_BYTES`] of appends (tens of MiB),
//!   off the per-request path, and only reserves extents (no data is written).
//! - `file_len` (fstat), `create_dir_all`, `list_dir`, `remove_file` and
//!   `read_file` use std: they touch metadata or small files through the page
//!   cache, and run at open, roll, retention and recovery, not per request.
//!   The trait keeps them synchronous for that reason.
//!
//! The O_DIRECT alignment contract (see [`Io`]) is asserted: a misaligned
//! position, length or buffer is a bug in the caller, and the kernel would
//! only answer EINVAL.
//!
//! [`PREALLOCATE_STEP_BYTES`]: crate::constants::PREALLOCATE_STEP_BYTES

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use compio::buf::{IntoInner, IoBuf};
use compio::driver::DriverType;
use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAt};
use compio::runtime::Runtime;

use super::Io;
use super::read_parts;
use crate::constants::PAGE_SIZE;

/// The io_uring implementation of [`Io`]. Stateless and `Copy`: every clone
/// uses the compio runtime of the thread it is called on.
///
/// `allocate` (fallocate) and the small-file and directory-listing methods
/// block the shard thread briefly; see the module docs for why that is
/// accepted.
#[derive(Clone, Copy, Debug, Default)]
pub struct UringIo;

/// An open segment file (O_DIRECT, read-write). Cloning shares the same open
/// file description; the fd is closed when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct UringFile {
    file: File,
}

impl UringFile {
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl UringIo {
    /// A handle; cheap, holds no resources.
    pub fn new() -> Self {
        Self
    }

    /// The driver of the compio runtime running on this thread, or `None`
    /// outside a runtime. With the workspace's compio features (io-uring
    /// without polling) it can only be [`DriverType::IoUring`]: a kernel
    /// without io_uring makes `Runtime::new` fail instead of falling back.
    pub fn driver_type() -> Option<DriverType> {
        Runtime::try_with_current(|runtime| runtime.driver_type()).ok()
    }

    /// True when this thread runs a compio runtime driven by io_uring (not
    /// the polling fallback). Tests and benchmarks report it.
    pub fn driver_is_io_uring() -> bool {
        Self::driver_type().is_some_and(|driver| driver.is_iouring())
    }
}

/// An immutable [`Bytes`] as a compio write source. compio's own impl sits
/// behind its `bytes` feature, which the workspace only gets transitively
/// (compio-io's default features); this wrapper does not depend on that.
struct BytesBuf(Bytes);

impl IoBuf for BytesBuf {
    fn as_init(&self) -> &[u8] {
        &self.0
    }
}

/// An io_uring write with RWF_DSYNC (compio's `WriteAt` sets no flags):
/// it completes only once the bytes and the metadata needed to read them
/// are durable. On a written extent the kernel issues it from the shard
/// thread and, on a device with a volatile cache and no FUA, flushes the
/// cache from its completion worker, so the shard hands nothing to io-wq;
/// on an unwritten (fallocated) extent io_uring punts it to io-wq, which
/// writes, converts the extent and flushes in one go. Either way one
/// submission and one completion per write.
struct DurableWriteAt {
    /// Keeps the descriptor open until the operation completes (compio
    /// keeps the operation alive until then, even if the future is dropped).
    file: File,
    offset: u64,
    data: Bytes,
}

impl IntoInner for DurableWriteAt {
    type Inner = Bytes;

    fn into_inner(self) -> Bytes {
        self.data
    }
}

// SAFETY: the entry points at `data`'s bytes and `file`'s descriptor, both
// owned by the operation, which compio keeps at a stable address and alive
// until the kernel completes it.
unsafe impl compio::driver::OpCode for DurableWriteAt {
    type Control = ();

    fn create_entry(&mut self, _: &mut ()) -> compio::driver::OpEntry {
        io_uring::opcode::Write::new(
            io_uring::types::Fd(self.file.as_raw_fd()),
            self.data.as_ptr(),
            self.data.len().min(1 << 30) as u32,
        )
        .offset(self.offset)
        .rw_flags(libc::RWF_DSYNC)
        .build()
        .into()
    }
}

fn assert_aligned(pos: u64, len: usize) {
    assert!(
        pos.is_multiple_of(PAGE_SIZE as u64),
        "O_DIRECT position {pos} is not a multiple of {PAGE_SIZE}"
    );
    assert!(
        len.is_multiple_of(PAGE_SIZE),
        "O_DIRECT length {len} is not a multiple of {PAGE_SIZE}"
    );
}

/// Temporary files written so far by this process; numbers their names.
static TEMPORARY_FILE_COUNT: AtomicU64 = AtomicU64::new(0);

/// `<path>.<pid>-<n>.tmp`, next to `path`, unique per call: two writers
/// replacing the same file at once (e.g. two tasks writing one checkpoint)
/// each write and rename their own file, so neither renames or truncates
/// the other's. Recovery removes every `*.tmp` a crash left behind.
fn temporary_path(path: &Path) -> PathBuf {
    let number = TEMPORARY_FILE_COUNT.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{}-{number}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// The directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is an open descriptor owned by a live `File`, and `stat`
    // points to writable memory of the right type and size.
    let result = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled in the whole struct.
    Ok(unsafe { stat.assume_init() })
}

fn fstat_len(fd: RawFd) -> io::Result<u64> {
    u64::try_from(fstat(fd)?.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative file size"))
}

/// fallocate(fd, 0, 0, len), retried on EINTR.
fn fallocate(fd: RawFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocate length too large"))?;
    loop {
        // SAFETY: plain syscall on an open descriptor owned by a live `File`;
        // no memory is passed.
        let result = unsafe { libc::fallocate(fd, 0, 0, len) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

impl Io for UringIo {
    type File = UringFile;

    fn now_ms(&self) -> i64 {
        // A clock set before 1970 yields a negative value rather than a
        // panic; it is a misconfiguration, not a bug of ours.
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        compio::time::sleep(duration)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            // A name that is not UTF-8 cannot be one of ours; the lossy form
            // will not parse as a segment or index name and is ignored by
            // callers, rather than making the whole directory unreadable.
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn remove_large_file(&self, path: &Path) -> io::Result<()> {
        // The name goes now (a rename to a `*.tmp` name, which recovery
        // removes after a crash); the extents are freed by the reclaimer
        // thread, a step at a time (io/reclaim.rs), while the shard serves
        // its partitions and the caller goes on.
        let doomed = temporary_path(path);
        compio::fs::rename(path, &doomed).await?;
        super::reclaim::remove_file_in_background(&doomed);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        compio::fs::rename(from, to).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let directory = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .await?;
        directory.sync_all().await
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<UringFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .await?;
        Ok(UringFile { file })
    }

    fn file_len(&self, file: &UringFile) -> io::Result<u64> {
        fstat_len(file.raw_fd())
    }

    fn modified_ms(&self, file: &UringFile) -> io::Result<i64> {
        let stat = fstat(file.raw_fd())?;
        Ok(stat
            .st_mtime
            .saturating_mul(1000)
            .saturating_add(stat.st_mtime_nsec / 1_000_000))
    }

    async fn allocate(&self, file: &UringFile, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let len_before = fstat_len(file.raw_fd())?;
        match fallocate(file.raw_fd(), len) {
            Ok(()) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // The filesystem cannot reserve extents: extend the length
                // only. Space is then claimed by the writes themselves, so a
                // full device shows up as ENOSPC from `write_at` instead.
                if len_before < len {
                    file.file.set_len(len).await?;
                }
                Ok(())
            }
            Err(error) => {
                // fallocate may have extended the file part way before
                // running out of space; restore the length so that a failed
                // allocate changes nothing the caller can see. If that fails
                // too, the caller still gets the original error (ENOSPC
                // matters more); the extra length is zeros, which recovery
                // treats as the end of the log.
                let len_after = fstat_len(file.raw_fd());
                if matches!(len_after, Ok(len_after) if len_after > len_before)
                    && let Err(restore_error) = file.file.set_len(len_before).await
                {
                    tracing::warn!(
                        %error,
                        %restore_error,
                        len_before,
                        "failed allocate left the file longer"
                    );
                }
                Err(error)
            }
        }
    }

    async fn set_len(&self, file: &UringFile, len: u64) -> io::Result<()> {
        file.file.set_len(len).await
    }

    async fn write_at(&self, file: &UringFile, pos: u64, data: Bytes) -> io::Result<()> {
        assert_aligned(pos, data.len());
        assert!(
            data.is_empty() || (data.as_ptr() as usize).is_multiple_of(PAGE_SIZE),
            "O_DIRECT write buffer is not page aligned"
        );
        let mut handle = &file.file;
        let mut written = 0;
        while written < data.len() {
            let chunk = BytesBuf(Bytes::slice(&data, written..));
            let compio::BufResult(result, _) = handle.write_at(chunk, pos + written as u64).await;
            match result? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                count => written += count,
            }
        }
        Ok(())
    }

    async fn write_durable_at(&self, file: &UringFile, pos: u64, data: Bytes) -> io::Result<()> {
        assert_aligned(pos, data.len());
        assert!(
            data.is_empty() || (data.as_ptr() as usize).is_multiple_of(PAGE_SIZE),
            "O_DIRECT write buffer is not page aligned"
        );
        // Reads keep to their bound beside writes while it is in flight and
        // for WRITES_RECENT after it ended (read_parts.rs).
        let _writing = read_parts::DurableWrite::start();
        let mut written = 0;
        while written < data.len() {
            let op = DurableWriteAt {
                file: file.file.clone(),
                offset: pos + written as u64,
                data: Bytes::slice(&data, written..),
            };
            let compio::BufResult(result, _) = compio::runtime::submit(op).await;
            match result? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                count => written += count,
            }
        }
        Ok(())
    }

    async fn sync_data(&self, file: &UringFile) -> io::Result<()> {
        file.file.sync_data().await
    }

    async fn sync_filesystem(&self, file: &UringFile) -> io::Result<()> {
        // io_uring has no syncfs: it runs on compio's blocking pool, on a
        // duplicate of the descriptor so that closing the file meanwhile
        // cannot redirect the call. Since Linux 5.8 syncfs reports the
        // device flush's and the journal commit's errors (and writeback
        // errors of the filesystem); our writes' own errors came with
        // their completions.
        let duplicate = file.file.as_fd().try_clone_to_owned()?;
        compio::runtime::spawn_blocking(move || {
            // SAFETY: `duplicate` is an open descriptor owned by this closure.
            let result = unsafe { libc::syncfs(duplicate.as_raw_fd()) };
            if result == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the syncfs thread panicked")))
    }

    async fn read_at(&self, file: &UringFile, pos: u64, len: usize) -> io::Result<Bytes> {
        assert_aligned(pos, len);
        if len == 0 {
            return Ok(Bytes::new());
        }
        // Parts of at most READ_OP_BYTES_MAX in parallel, within the bound
        // on read parts in flight (read_parts.rs). A recycled
        // buffer may be larger than asked: only `len` is read.
        let (mut buffer, partial) = read_parts::read(&file.file, pos, len).await?;
        if !partial {
            return Ok(buffer.into_bytes());
        }
        while buffer.len() < len {
            let done = buffer.len();
            let target = buffer.slice(done..len);
            let compio::BufResult(result, target) =
                file.file.read_at(target, pos + done as u64).await;
            buffer = target.into_inner();
            let count = result?;
            assert!(buffer.len() == done + count);
            // O_DIRECT reads whole blocks: a read ending off a block boundary
            // (or returning nothing) has reached end of file. Reading on from
            // an unaligned position would fail with EINVAL.
            if count == 0 || !buffer.len().is_multiple_of(PAGE_SIZE) {
                break;
            }
        }
        Ok(buffer.into_bytes())
    }

    fn read_at_soon(
        &self,
        file: &UringFile,
        pos: u64,
        len: usize,
    ) -> futures_util::future::LocalBoxFuture<'static, io::Result<Bytes>> {
        // A task of its own: the parts of a read each wait for a slot of the
        // thread, and a part that completed holds its slot until its future
        // is polled. Left in a read-ahead slot unpolled, the parts would
        // keep the thread's slots and every other read would wait for them.
        let io = *self;
        let file = file.clone();
        let task = compio::runtime::spawn(async move { io.read_at(&file, pos, len).await });
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(error) => {
                    error.resume_unwind();
                    Err(io::Error::other("a read issued ahead was cancelled"))
                }
            }
        })
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    async fn write_file_atomic(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        self.replace_file(path, data).await?;
        self.sync_dir(parent_dir(path)).await
    }

    async fn replace_file(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        let temporary = temporary_path(path);
        let result = write_and_rename(&temporary, path, data).await;
        if result.is_err() {
            // Best effort: a name of our own, nobody else writes it; recovery
            // removes it anyway if this fails too.
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }
}

/// Write `data` to the new file `temporary`, fsync it, rename it to `path`.
async fn write_and_rename(temporary: &Path, path: &Path, data: Vec<u8>) -> io::Result<()> {
    {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temporary)
            .await?;
        let mut handle = &file;
        let mut written = 0;
        let mut data = data;
        while written < data.len() {
            let compio::BufResult(result, chunk) =
                handle.write_at(data.slice(written..), written as u64).await;
            data = chunk.into_inner();
            match result? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                count => written += count,
            }
        }
        file.sync_all().await?;
    }
    compio::fs::rename(temporary, path).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::constants::READ_OP_BYTES_MAX;
    use crate::io::AlignedBuf;

    /// Held by the tests that start a durable write's read bound
    /// (process-wide) and by the ones that check reads without it.
    static READ_BOUND: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn read_bound() -> std::sync::MutexGuard<'static, ()> {
        READ_BOUND
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh directory for one test, removed on drop. O_DIRECT does not work
    /// on tmpfs: set SLUICE_TEST_DIR to a directory on a real filesystem
    /// when the system temp dir is tmpfs.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let base = std::env::var_os("SLUICE_TEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let unique = format!(
                "sluice-uring-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(unique);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(test: impl Future<Output = ()>) {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            assert!(
                UringIo::driver_is_io_uring(),
                "compio is not running on io_uring"
            );
            test.await;
        });
    }

    fn pages(count: usize, seed: u8) -> Bytes {
        let mut buffer = AlignedBuf::with_capacity(count * PAGE_SIZE);
        for index in 0..count * PAGE_SIZE {
            buffer.extend_from_slice(&[seed.wrapping_add((index % 251) as u8)]);
        }
        buffer.into_bytes()
    }

    #[test]
    fn driver_is_reported_only_inside_a_runtime() {
        assert_eq!(UringIo::driver_type(), None);
        run(async {
            assert_eq!(UringIo::driver_type(), Some(DriverType::IoUring));
        });
    }

    #[test]
    fn written_pages_read_back_after_sync() {
        let dir = TestDir::new("write-read");
        run(async {
            let io = UringIo::new();
            let path = dir.0.join("00000000000000000000.log");
            let file = io.open(&path, true).await.unwrap();
            assert_eq!(io.file_len(&file).unwrap(), 0);
            // SAFETY: F_GETFL on an open descriptor; no memory is passed.
            let flags = unsafe { libc::fcntl(file.raw_fd(), libc::F_GETFL) };
            assert!(flags & libc::O_DIRECT != 0, "segment file is not O_DIRECT");

            let first = pages(2, 1);
            let second = pages(1, 9);
            io.write_at(&file, 0, first.clone()).await.unwrap();
            io.write_at(&file, 2 * PAGE_SIZE as u64, second.clone())
                .await
                .unwrap();
            io.sync_data(&file).await.unwrap();
            io.sync_dir(&dir.0).await.unwrap();
            assert_eq!(io.file_len(&file).unwrap(), 3 * PAGE_SIZE as u64);

            let read = io.read_at(&file, 0, 3 * PAGE_SIZE).await.unwrap();
            assert!((read.as_ptr() as usize).is_multiple_of(PAGE_SIZE));
            assert_eq!(&read[..2 * PAGE_SIZE], &first[..]);
            assert_eq!(&read[2 * PAGE_SIZE..], &second[..]);

            // A clone shares the open file; reopening sees the same bytes.
            let reopened = io.open(&path, false).await.unwrap();
            let middle = io
                .read_at(&reopened, PAGE_SIZE as u64, PAGE_SIZE)
                .await
                .unwrap();
            assert_eq!(&middle[..], &first[PAGE_SIZE..]);
            let clone = file.clone();
            drop(file);
            let last = io
                .read_at(&clone, 2 * PAGE_SIZE as u64, PAGE_SIZE)
                .await
                .unwrap();
            assert_eq!(&last[..], &second[..]);
        });
    }

    #[test]
    fn reads_are_short_only_at_end_of_file() {
        let dir = TestDir::new("short-read");
        run(async {
            let io = UringIo::new();
            let file = io.open(&dir.0.join("segment.log"), true).await.unwrap();
            io.write_at(&file, 0, pages(2, 3)).await.unwrap();
            let read = io.read_at(&file, 0, 4 * PAGE_SIZE).await.unwrap();
            assert_eq!(read.len(), 2 * PAGE_SIZE);
            let past_end = io
                .read_at(&file, 8 * PAGE_SIZE as u64, PAGE_SIZE)
                .await
                .unwrap();
            assert!(past_end.is_empty());

            // An unaligned end of file (set_len) ends the read mid-page.
            io.set_len(&file, PAGE_SIZE as u64 + 100).await.unwrap();
            let read = io.read_at(&file, 0, 2 * PAGE_SIZE).await.unwrap();
            assert_eq!(read.len(), PAGE_SIZE + 100);
        });
    }

    /// A segment file in `dir` holding `count` pages of `pages(count, seed)`.
    async fn written_file(dir: &TestDir, count: usize, seed: u8) -> (UringIo, UringFile, Bytes) {
        let io = UringIo::new();
        let file = io.open(&dir.0.join("segment.log"), true).await.unwrap();
        let written = pages(count, seed);
        io.write_at(&file, 0, written.clone()).await.unwrap();
        (io, file, written)
    }

    /// A read longer than READ_OP_BYTES_MAX is issued as parallel parts
    /// into one buffer: the bytes come back in order, whole, short only at
    /// the end of file, and no slot of the thread stays taken.
    #[test]
    fn long_reads_in_parallel_parts_return_the_file_in_order() {
        let dir = TestDir::new("parts");
        run(async {
            let (io, file, written) = written_file(&dir, 1000, 7).await;
            for (start_page, pages_wanted) in [(0, 1000), (3, 258), (1, 64), (900, 200), (0, 65)] {
                let pos = start_page * PAGE_SIZE;
                let reads: Vec<_> = (0..6)
                    .map(|_| io.read_at(&file, pos as u64, pages_wanted * PAGE_SIZE))
                    .collect();
                for read in futures_util::future::join_all(reads).await {
                    let read = read.unwrap();
                    let end = (pos + pages_wanted * PAGE_SIZE).min(written.len());
                    assert_eq!(read.len(), end - pos, "from page {start_page}");
                    assert!(read[..] == written[pos..end], "from page {start_page}");
                }
                assert_eq!(read_parts::parts_in_flight(), 0);
            }
        });
    }

    /// At most READ_PARTS_IN_FLIGHT parts of a thread's reads are in
    /// flight; while a producer writes (a durable write in flight or
    /// ended within WRITES_RECENT) one part of at most
    /// READ_PART_BYTES_BESIDE_WRITES in the whole process: a write waits
    /// behind every read byte in the device.
    #[test]
    fn reads_keep_fewer_and_shorter_parts_in_flight_while_a_producer_writes() {
        let _bound = read_bound();
        let dir = TestDir::new("beside");
        run(async {
            let (io, file, written) = written_file(&dir, 1024, 5).await;
            let read_all = || {
                futures_util::future::join_all(
                    (0..4_u64).map(|index| io.read_at(&file, index << 20, 1 << 20)),
                )
            };
            let check = |reads: Vec<io::Result<Bytes>>| {
                for (index, read) in reads.into_iter().enumerate() {
                    let start = index << 20;
                    assert!(read.unwrap()[..] == written[start..start + (1 << 20)]);
                }
            };
            // No other test of this binary writes durably meanwhile (the
            // ones that start the bound hold READ_BOUND): once the window of
            // the last write has passed, reads are not bounded by writes.
            compio::time::sleep(read_parts::WRITES_RECENT * 2).await;
            assert!(!read_parts::beside_writes());
            read_parts::take_parts_in_flight_max();
            read_parts::take_part_bytes_max();
            check(read_all().await);
            assert_eq!(
                read_parts::take_parts_in_flight_max(),
                read_parts::READ_PARTS_IN_FLIGHT
            );
            assert_eq!(read_parts::take_part_bytes_max(), READ_OP_BYTES_MAX);

            let writing = read_parts::DurableWrite::start();
            // Parts other tests of the binary issued before the write may
            // still be in flight; from here on every part is issued beside
            // the write.
            while read_parts::process_parts_in_flight() > 0 {
                compio::time::sleep(Duration::from_millis(1)).await;
            }
            read_parts::take_process_parts_in_flight_max();
            check(read_all().await);
            assert_eq!(
                read_parts::take_parts_in_flight_max(),
                read_parts::READ_PARTS_BESIDE_WRITES
            );
            assert_eq!(
                read_parts::take_process_parts_in_flight_max(),
                read_parts::READ_PARTS_BESIDE_WRITES
            );
            assert_eq!(
                read_parts::take_part_bytes_max(),
                read_parts::READ_PART_BYTES_BESIDE_WRITES
            );

            // The bound outlives the write by WRITES_RECENT, counted from
            // its end (the reads above may well have taken longer than the
            // window): a producer's next write is a fraction of a
            // millisecond away. Only a test thread descheduled for the
            // whole window may see it lifted.
            let ended = std::time::Instant::now();
            drop(writing);
            assert!(read_parts::beside_writes() || ended.elapsed() >= read_parts::WRITES_RECENT);
            compio::time::sleep(read_parts::WRITES_RECENT * 2).await;
            assert!(!read_parts::beside_writes());
            check(read_all().await);
            assert_eq!(
                read_parts::take_parts_in_flight_max(),
                read_parts::READ_PARTS_IN_FLIGHT
            );
            assert_eq!(read_parts::parts_in_flight(), 0);

            // A write in flight longer than the window still bounds the
            // reads as it completes. Until the eighteenth session the window
            // was counted from the write's start only, and the bound lifted
            // the moment such a write completed.
            let writing = read_parts::DurableWrite::start();
            compio::time::sleep(read_parts::WRITES_RECENT * 2).await;
            let ended = std::time::Instant::now();
            drop(writing);
            assert!(read_parts::beside_writes() || ended.elapsed() >= read_parts::WRITES_RECENT);
        });
    }

    /// Beside a producer's writes the bound holds over threads: two shard
    /// threads reading at once keep one part in flight between them.
    #[test]
    fn the_bound_beside_writes_holds_over_all_threads() {
        let _bound = read_bound();
        let dir = TestDir::new("beside-threads");
        let path = dir.0.join("segment.log");
        run(async {
            let (_, _, _) = written_file(&dir, 2048, 3).await;
        });
        let writing = read_parts::DurableWrite::start();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read_parts::process_parts_in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "another test's reads never completed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        read_parts::take_process_parts_in_flight_max();
        let readers: Vec<_> = (0..2_u64)
            .map(|thread| {
                let path = path.clone();
                std::thread::spawn(move || {
                    run(async move {
                        let io = UringIo::new();
                        let file = io.open(&path, false).await.unwrap();
                        let reads = (0..4_u64)
                            .map(|index| io.read_at(&file, (thread * 4 + index) << 20, 1 << 20));
                        for read in futures_util::future::join_all(reads).await {
                            assert_eq!(read.unwrap().len(), 1 << 20);
                        }
                    })
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(
            read_parts::take_process_parts_in_flight_max(),
            read_parts::READ_PARTS_BESIDE_WRITES
        );
        drop(writing);
    }

    /// A read issued ahead and left unpolled (a read-ahead slot nobody has
    /// taken yet) must not keep the thread's read slots from other reads:
    /// with its parts driven only by its own future, a completed part held
    /// its slot until that future was polled again, and the next read of
    /// the thread waited forever.
    #[test]
    fn reads_issued_ahead_and_not_polled_leave_the_slots_to_other_reads() {
        let dir = TestDir::new("ahead");
        run(async {
            let (io, file, written) = written_file(&dir, 2048, 9).await;
            let mut ahead = Vec::new();
            for index in 0..4_u64 {
                let mut read = io.read_at_soon(&file, index * (1 << 20), 1 << 20);
                // Polled once, as readahead.rs does, then left alone.
                let _ = futures_util::poll!(&mut read);
                ahead.push(read);
            }
            let read =
                compio::time::timeout(Duration::from_secs(10), io.read_at(&file, 0, 4 << 20))
                    .await
                    .expect("a read waited for slots held by reads nobody polls")
                    .unwrap();
            assert!(read[..] == written[..4 << 20]);
            for (index, read) in ahead.into_iter().enumerate() {
                let read = read.await.unwrap();
                let start = index << 20;
                assert!(read[..] == written[start..start + (1 << 20)]);
            }
            assert_eq!(read_parts::parts_in_flight(), 0);
        });
    }

    #[test]
    fn missing_file_is_not_found_unless_created() {
        let dir = TestDir::new("missing");
        run(async {
            let io = UringIo::new();
            let error = io.open(&dir.0.join("absent.log"), false).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn allocate_extends_and_set_len_truncates() {
        let dir = TestDir::new("allocate");
        run(async {
            let io = UringIo::new();
            let file = io.open(&dir.0.join("segment.log"), true).await.unwrap();
            io.write_at(&file, 0, pages(1, 5)).await.unwrap();

            io.allocate(&file, 16 * PAGE_SIZE as u64).await.unwrap();
            assert_eq!(io.file_len(&file).unwrap(), 16 * PAGE_SIZE as u64);
            // Allocation never shrinks the file.
            io.allocate(&file, 4 * PAGE_SIZE as u64).await.unwrap();
            assert_eq!(io.file_len(&file).unwrap(), 16 * PAGE_SIZE as u64);
            io.sync_data(&file).await.unwrap();

            let read = io.read_at(&file, 0, 2 * PAGE_SIZE).await.unwrap();
            assert_eq!(&read[..PAGE_SIZE], &pages(1, 5)[..]);
            assert!(read[PAGE_SIZE..].iter().all(|&byte| byte == 0));

            io.set_len(&file, PAGE_SIZE as u64).await.unwrap();
            assert_eq!(io.file_len(&file).unwrap(), PAGE_SIZE as u64);
        });
    }

    #[test]
    fn write_file_atomic_replaces_content() {
        let dir = TestDir::new("atomic");
        run(async {
            let io = UringIo::new();
            let path = dir.0.join("checkpoint");
            let error = io.read_file(&path).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound);

            io.write_file_atomic(&path, b"first version, longer".to_vec())
                .await
                .unwrap();
            assert_eq!(io.read_file(&path).unwrap(), b"first version, longer");
            io.write_file_atomic(&path, b"second".to_vec())
                .await
                .unwrap();
            assert_eq!(io.read_file(&path).unwrap(), b"second");
            io.write_file_atomic(&path, Vec::new()).await.unwrap();
            assert_eq!(io.read_file(&path).unwrap(), b"");

            let names = io.list_dir(&dir.0).unwrap();
            assert_eq!(
                names,
                vec!["checkpoint".to_owned()],
                "temporary file left behind"
            );
        });
    }

    /// Writers replacing one file at once (two tasks writing a partition's
    /// checkpoint) each use their own temporary file: every call succeeds
    /// and the file ends whole, holding one of the versions. With one shared
    /// `<path>.tmp`, the first rename moved the other writer's file away and
    /// its rename failed with ENOENT.
    #[test]
    fn concurrent_write_file_atomic_to_one_path_all_succeed() {
        let dir = TestDir::new("atomic-concurrent");
        run(async {
            let io = UringIo::new();
            let path = dir.0.join("checkpoint");
            let versions: Vec<Vec<u8>> = (0..8u8).map(|writer| vec![writer; 100]).collect();
            let writes = versions
                .iter()
                .map(|version| io.write_file_atomic(&path, version.clone()));
            let results = futures_util::future::join_all(writes).await;
            for (writer, result) in results.iter().enumerate() {
                assert!(result.is_ok(), "writer {writer} failed: {result:?}");
            }
            let content = io.read_file(&path).unwrap();
            assert!(
                versions.contains(&content),
                "the file holds a mix of versions: {content:?}"
            );
            assert_eq!(
                io.list_dir(&dir.0).unwrap(),
                vec!["checkpoint".to_owned()],
                "temporary file left behind"
            );
        });
    }

    #[test]
    fn list_dir_returns_names_and_remove_file_removes() {
        let dir = TestDir::new("list");
        run(async {
            let io = UringIo::new();
            let partition = dir.0.join("topic-0");
            io.create_dir_all(&partition).unwrap();
            io.sync_dir(&dir.0).await.unwrap();
            for name in ["00000000000000000000.log", "00000000000000000000.index"] {
                io.open(&partition.join(name), true).await.unwrap();
            }
            io.sync_dir(&partition).await.unwrap();

            let mut names = io.list_dir(&partition).unwrap();
            names.sort();
            assert_eq!(
                names,
                ["00000000000000000000.index", "00000000000000000000.log"]
            );

            io.remove_file(&partition.join("00000000000000000000.index"))
                .unwrap();
            io.sync_dir(&partition).await.unwrap();
            assert_eq!(
                io.list_dir(&partition).unwrap(),
                ["00000000000000000000.log"]
            );
            let error = io.list_dir(&dir.0.join("absent")).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn sleep_waits_and_clock_is_plausible() {
        run(async {
            let io = UringIo::new();
            let start = std::time::Instant::now();
            io.sleep(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            // After 2020-01-01.
            assert!(io.now_ms() > 1_577_836_800_000);
        });
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn misaligned_write_is_a_bug() {
        let dir = TestDir::new("misaligned");
        run(async {
            let io = UringIo::new();
            let file = io.open(&dir.0.join("segment.log"), true).await.unwrap();
            let _ = io.write_at(&file, 100, pages(1, 0)).await;
        });
    }
}
