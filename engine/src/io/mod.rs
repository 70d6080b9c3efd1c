//! The engine's only I/O seam.
//!
//! Everything the storage logic does to a disk, a directory or a clock goes
//! through [`Io`]. Two implementations exist:
//! - [`uring::UringIo`]: the real one. Segment files are opened with O_DIRECT
//!   and written, synced and read through io_uring (compio's driver).
//! - [`sim::SimIo`]: a deterministic simulated disk that keeps a live and a
//!   durable image of every file and can crash (dropping or tearing unsynced
//!   writes), fail fsyncs and writes, and run out of space. Tests drive the
//!   same engine code over it from a printed seed.
//!
//! All methods are called from one shard thread; futures need not be `Send`.
//! Errors are plain `std::io::Error`; a full disk is reported with
//! `raw_os_error() == Some(libc::ENOSPC)` (see [`is_storage_full`]).

pub mod aligned;
pub mod read_parts;
pub mod reclaim;
pub mod sim;
pub mod uring;

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

pub use aligned::AlignedBuf;

/// The I/O operations the engine needs. See the module docs.
///
/// Alignment contract for the O_DIRECT operations (`write_at`, `read_at`):
/// positions and lengths are multiples of [`crate::constants::PAGE_SIZE`] and
/// buffers start on a page boundary. Implementations assert it.
pub trait Io: Clone + 'static {
    /// An open segment file. Cloning shares the same open file.
    type File: Clone + 'static;

    /// Wall-clock milliseconds since the Unix epoch (record timestamps,
    /// segment.ms, retention.ms).
    fn now_ms(&self) -> i64;

    /// Resolve after `duration` (interval flush policy, background tasks).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;

    /// Create a directory and its parents. Not durable until `sync_dir` of
    /// the parent.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names (not paths) of the entries of a directory, in no order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Remove a file. Durable after `sync_dir` of its directory.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// [`Io::remove_file`] for a file that may be large (a segment): when
    /// Ok the name is gone (durable after `sync_dir`), but the real disk
    /// frees the extents later, in the background: with online discard
    /// (`-o discard`) the kernel trims what it frees before returning,
    /// about 0.3 s per GB measured here. The real disk renames the file to
    /// a `*.tmp` name, which recovery removes if a crash comes first. The
    /// default is `remove_file`.
    fn remove_large_file(&self, path: &Path) -> impl Future<Output = io::Result<()>> {
        std::future::ready(self.remove_file(path))
    }

    /// Rename `from` to `to` in the same directory, atomically replacing
    /// `to` if it exists (rename(2)). Open handles keep the file they
    /// opened. Durable after `sync_dir` of the directory; until then a crash
    /// may keep either name's old or new entry.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>>;

    /// fsync a directory: entries created, renamed or removed in it before
    /// the call are durable when it returns Ok.
    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>>;

    /// Open a segment file for O_DIRECT reads and writes, creating it (empty)
    /// when `create` is true and it does not exist. A created file's entry is
    /// durable only after `sync_dir` of its directory.
    fn open(&self, path: &Path, create: bool) -> impl Future<Output = io::Result<Self::File>>;

    /// Current length of the file (including preallocated space).
    fn file_len(&self, file: &Self::File) -> io::Result<u64>;

    /// The file's last modification, in wall-clock milliseconds: the age of
    /// a segment whose records carry no timestamp (Kafka's
    /// `LogSegment.largestTimestamp`). Without one, the time of asking: a
    /// later time keeps data longer, never shorter.
    fn modified_ms(&self, file: &Self::File) -> io::Result<i64> {
        let _ = file;
        Ok(self.now_ms())
    }

    /// Make sure the byte range `[0, len)` is allocated on the device; the
    /// file length becomes at least `len`, new bytes read as zeros. Fails
    /// with ENOSPC (and changes nothing) when the device is full. Durable
    /// after the next `sync_data`.
    fn allocate(&self, file: &Self::File, len: u64) -> impl Future<Output = io::Result<()>>;

    /// Set the file length, truncating or extending with zeros. Durable after
    /// the next `sync_data`.
    fn set_len(&self, file: &Self::File, len: u64) -> impl Future<Output = io::Result<()>>;

    /// Write all of `data` at `pos` (O_DIRECT; aligned, see the trait docs).
    /// Ok means the bytes are in the file's live image, not that they are
    /// durable.
    fn write_at(
        &self,
        file: &Self::File,
        pos: u64,
        data: Bytes,
    ) -> impl Future<Output = io::Result<()>>;

    /// Write all of `data` at `pos` (aligned, as [`Io::write_at`]) and
    /// return Ok only once it is durable, with what reading it back after a
    /// crash needs (the file's length and allocation): O_DIRECT with
    /// RWF_DSYNC, one operation instead of a write and an fdatasync
    /// (`SyncMode::WriteThrough`). Errors as for [`Io::sync_data`]: after
    /// one nothing about the file's unsynced state is known, never retry.
    /// The default is exactly that pair.
    fn write_durable_at(
        &self,
        file: &Self::File,
        pos: u64,
        data: Bytes,
    ) -> impl Future<Output = io::Result<()>> {
        async move {
            self.write_at(file, pos, data).await?;
            self.sync_data(file).await
        }
    }

    /// fdatasync: when Ok, every write and length change of this file that
    /// completed before the call is durable. After an error nothing about
    /// the unsynced state is known; the caller must never retry.
    fn sync_data(&self, file: &Self::File) -> impl Future<Output = io::Result<()>>;

    /// syncfs: when Ok, every write, length change and directory entry of
    /// the whole filesystem holding `file` that completed before the call
    /// is durable (one device cache flush for any number of files). Errors
    /// as for [`Io::sync_data`]: never retried.
    fn sync_filesystem(&self, file: &Self::File) -> impl Future<Output = io::Result<()>>;

    /// Read up to `len` bytes at `pos` into a fresh aligned buffer (O_DIRECT;
    /// aligned). The result is shorter than `len` only at end of file.
    fn read_at(
        &self,
        file: &Self::File,
        pos: u64,
        len: usize,
    ) -> impl Future<Output = io::Result<Bytes>>;

    /// [`Io::read_at`] for a reader that comes later (readahead.rs): the
    /// returned future may sit unpolled until then, so the read must make
    /// progress without it. By default it is the read itself, started by
    /// the caller's first poll; an implementation whose reads need polls to
    /// go on (the io_uring one issues parts within a per-thread bound,
    /// read_parts.rs) runs it as a task of its own.
    fn read_at_soon(
        &self,
        file: &Self::File,
        pos: u64,
        len: usize,
    ) -> futures_util::future::LocalBoxFuture<'static, io::Result<Bytes>> {
        let io = self.clone();
        let file = file.clone();
        Box::pin(async move { io.read_at(&file, pos, len).await })
    }

    /// Read a whole small file (index, checkpoint) through the page cache.
    /// `ErrorKind::NotFound` when it does not exist.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Replace a small file atomically and durably: write a temporary file,
    /// fsync it, rename it over `path`, fsync the directory. After a crash the
    /// file holds either the old or the new content, never a mix; when Ok it
    /// holds the new content durably.
    fn write_file_atomic(&self, path: &Path, data: Vec<u8>)
    -> impl Future<Output = io::Result<()>>;

    /// [`Io::write_file_atomic`] without the directory fsync: after a crash
    /// the file holds the old or the new content, never a mix; the new
    /// content is durable once a later [`Io::sync_dir`] of its directory
    /// returns Ok. For several files of one directory behind one sync (a
    /// log's close).
    fn replace_file(&self, path: &Path, data: Vec<u8>) -> impl Future<Output = io::Result<()>>;
}

/// True when the error means the device has no space left.
pub fn is_storage_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}
