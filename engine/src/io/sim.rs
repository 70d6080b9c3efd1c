//! A deterministic simulated disk: the [`Io`] implementation of crash tests.
//!
//! [`SimIo`] owns a tree of directory entries and a set of files (inodes).
//! Every piece of state exists twice:
//! - the live image: what reads see now (file content and length, the
//!   entries of every directory);
//! - the durable image: what a power loss keeps for sure.
//!
//! `sync_data(file)` makes the file's content and length durable (it replays
//! the file's pending operations onto its durable image). `sync_dir(dir)` makes
//! the entries of `dir` durable: files and directories created or removed in
//! it. `write_file_atomic` is durable when it returns (content and entry).
//!
//! [`SimIo::crash`] returns a new instance: the disk after a power loss and a
//! reboot. Which unsynced state survives depends on the [`CrashMode`]; in the
//! default [`CrashMode::Torn`] model, chosen from the instance's seeded PRNG:
//! - every directory entry whose live state differs from its durable state
//!   (pending creation, removal or replacement) keeps its live state with
//!   probability 1/2, else reverts to its durable state; an entry whose
//!   parent directory does not survive is lost with it;
//! - every surviving file starts from its durable image, then its pending
//!   operations are replayed in order: each write sector by sector
//!   ([`SECTOR_SIZE`]), each sector landing independently with probability
//!   1/2, and each length change with probability 1/2. A sector is atomic: it
//!   holds either its old or its new content, never garbage. A sector landing
//!   beyond the end of the file extends the file up to its end.
//!
//! Faults: sync and write failures (EIO) and a space limit (ENOSPC) can be
//! set at any time; a failing call changes nothing. Time is virtual: `sleep`
//! advances the clock and resolves at once. Every future of this module
//! completes on its first poll.
//!
//! Invariants: same seed and same call sequence give the same result (all
//! maps are ordered, the only randomness is the seeded PRNG). Replaying all of
//! a file's pending operations onto its durable image gives its live image.
//!
//! Threading: single-threaded (`Rc`/`RefCell`), like the shard that uses it.
//! `SimIo` is a cheap handle; clones share the same disk.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::Io;
use crate::constants::{PAGE_SIZE, SECTOR_SIZE};

/// What a crash keeps of the state that was not made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrashMode {
    /// Random: each pending directory entry change, each pending length
    /// change and each sector of each pending write survives with
    /// probability 1/2 (see the module docs).
    #[default]
    Torn,
    /// Only durable state survives: every unsynced write, length change and
    /// entry change is lost.
    LoseUnsynced,
    /// Everything survives, as after a clean shutdown without syncs (the
    /// post-crash disk equals the live image).
    KeepUnsynced,
}

/// Counters of the calls made on one instance (reset by a crash).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// `sync_data` calls, failed ones included.
    pub sync_data_count: u64,
    /// `sync_dir` calls, failed ones included.
    pub sync_dir_count: u64,
    /// `sync_filesystem` calls, failed ones included.
    pub sync_filesystem_count: u64,
    /// `write_at` calls, failed ones included.
    pub write_at_count: u64,
    /// Bytes written by successful `write_at` calls.
    pub bytes_written: u64,
    /// `read_at` calls (segment reads from disk).
    pub read_at_count: u64,
}

/// The simulated disk. Cloning shares the same disk; [`SimIo::crash`] makes
/// an independent one.
#[derive(Clone)]
pub struct SimIo {
    disk: Rc<RefCell<Disk>>,
}

/// An open file of a [`SimIo`]. It stays usable after its entry is removed
/// (like an open file descriptor). A handle belongs to the instance that
/// opened it: passing it to another instance (for example the one returned by
/// `crash`) is a bug and panics.
#[derive(Clone)]
pub struct SimFile {
    disk: Rc<RefCell<Disk>>,
    inode: InodeId,
    path: PathBuf,
    /// Keeps the inode alive while open, even after its entry is removed.
    _open: Rc<OpenMarker>,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode.0)
            .finish()
    }
}

impl fmt::Debug for SimIo {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.disk.borrow();
        formatter
            .debug_struct("SimIo")
            .field("seed", &disk.seed)
            .field("now_ms", &disk.now_ms())
            .field("crash_mode", &disk.crash_mode)
            .field("entries", &disk.live.len())
            .finish()
    }
}

impl SimIo {
    /// The virtual clock's start: 2023-11-14, a plausible wall-clock time so
    /// that timestamps look real and never go below zero when tests subtract.
    pub const NOW_MS_START_DEFAULT: i64 = 1_700_000_000_000;

    /// An empty disk (only the roots `/` and `` exist) whose random choices
    /// derive from `seed`. Crash mode [`CrashMode::Torn`], no space limit, no
    /// faults, clock at [`Self::NOW_MS_START_DEFAULT`].
    pub fn new(seed: u64) -> SimIo {
        SimIo::from_disk(Disk {
            seed,
            random: SplitMix64::new(seed),
            now_us: Self::NOW_MS_START_DEFAULT * 1000,
            crash_mode: CrashMode::default(),
            space_limit_bytes: None,
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            inodes: BTreeMap::new(),
            inode_next: 0,
            faults: Faults::default(),
            stats: SimStats::default(),
        })
    }

    fn from_disk(disk: Disk) -> SimIo {
        SimIo {
            disk: Rc::new(RefCell::new(disk)),
        }
    }

    /// The seed this instance was created with (a crashed instance gets a
    /// seed derived from its parent's PRNG).
    pub fn seed(&self) -> u64 {
        self.disk.borrow().seed
    }

    /// The disk after a power loss and a reboot, as a new instance; see the
    /// module docs for what survives. Handles of this instance must not be
    /// used with the new one. This instance stays usable and unchanged
    /// (except that its PRNG advanced): crashing it again gives another
    /// possible outcome. The new instance keeps the clock, the crash mode and
    /// the space limit; faults and stats start afresh.
    pub fn crash(&self) -> SimIo {
        SimIo::from_disk(self.disk.borrow_mut().crash())
    }

    /// Choose what `crash` keeps of unsynced state.
    pub fn set_crash_mode(&self, crash_mode: CrashMode) {
        self.disk.borrow_mut().crash_mode = crash_mode;
    }

    /// Advance the virtual clock.
    pub fn advance_clock(&self, duration: Duration) {
        self.disk.borrow_mut().advance(duration);
    }

    /// Set the virtual clock (it may go backwards, as a wall clock can).
    pub fn set_now_ms(&self, now_ms: i64) {
        self.disk.borrow_mut().now_us = now_ms.saturating_mul(1000);
    }

    /// The `count`+1-th `sync_data` from now fails with EIO (once); `None`
    /// cancels.
    pub fn fail_sync_after(&self, count: Option<u64>) {
        self.disk.borrow_mut().faults.sync_countdown = count;
    }

    /// While true, every `sync_data` fails with EIO.
    pub fn fail_all_syncs(&self, fail: bool) {
        self.disk.borrow_mut().faults.sync_all = fail;
    }

    /// The `count`+1-th `write_at` from now fails with EIO (once) and writes
    /// nothing; `None` cancels.
    pub fn fail_write_after(&self, count: Option<u64>) {
        self.disk.borrow_mut().faults.write_countdown = count;
    }

    /// While true, every `write_at` fails with EIO and writes nothing.
    pub fn fail_all_writes(&self, fail: bool) {
        self.disk.borrow_mut().faults.write_all = fail;
    }

    /// Every `read_at` of the file opened at `path` fails with EIO (a bad
    /// stretch of disk under one file); `None` cancels.
    pub fn fail_reads_of(&self, path: Option<PathBuf>) {
        self.disk.borrow_mut().faults.read_path = path;
    }

    /// Every `remove_file` of `path` fails with ENOSPC and removes nothing
    /// (the real disk renames a large file before it frees it, and a
    /// directory that must grow for the new name fails so); `None` cancels.
    pub fn fail_removals_of(&self, path: Option<PathBuf>) {
        self.disk.borrow_mut().faults.remove_path = path;
    }

    /// Stop the disk after `count` more changing operations: from the
    /// `count`+1-th on, every operation that changes anything (`remove_file`,
    /// `rename`, `sync_dir`, `open` with create, `allocate`, `set_len`,
    /// `write_at`, `sync_data`, `write_file_atomic`) fails with EIO and
    /// changes nothing, until `None` or a crash. A crash afterwards is a
    /// power loss at exactly that point of the caller's protocol.
    pub fn halt_after(&self, count: Option<u64>) {
        let mut disk = self.disk.borrow_mut();
        disk.faults.halt_countdown = count;
        disk.faults.halted = false;
    }

    /// Limit the sum of the live lengths of the files that have a live entry.
    /// `allocate`, `set_len`, `write_at` and `write_file_atomic` that would
    /// go beyond it fail with ENOSPC and change nothing. Lowering the limit
    /// below the current usage removes nothing.
    pub fn set_space_limit(&self, limit_bytes: Option<u64>) {
        self.disk.borrow_mut().space_limit_bytes = limit_bytes;
    }

    /// The sum of the live lengths of the files that have a live entry.
    pub fn space_used_bytes(&self) -> u64 {
        self.disk.borrow().space_used_bytes()
    }

    /// Call counters of this instance.
    pub fn stats(&self) -> SimStats {
        self.disk.borrow().stats
    }

    /// Names of the live entries of `dir`, sorted; empty when `dir` does not
    /// exist.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        self.disk.borrow().names(dir)
    }

    /// Live length of the file at `path`, `None` when there is no such file.
    pub fn live_len(&self, path: &Path) -> Option<u64> {
        let disk = self.disk.borrow();
        let inode = disk.live_file(path).ok()?;
        Some(disk.inode(inode).live.len)
    }

    /// Durable length of the file the durable entry of `path` names (what
    /// [`CrashMode::LoseUnsynced`] would keep), `None` when there is none.
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let disk = self.disk.borrow();
        let inode = disk.durable_file(path)?;
        Some(disk.inode(inode).durable.len)
    }

    /// Durable content of the file the durable entry of `path` names.
    pub fn durable_content(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        let inode = disk.durable_file(path)?;
        Some(disk.inode(inode).durable.to_vec())
    }

    /// The number of the file `path` names now (an inode number): a file
    /// replaced (`write_file_atomic`, `replace_file`) gets a new one, so a
    /// test can tell whether something wrote it again.
    pub fn file_number(&self, path: &Path) -> io::Result<u64> {
        let disk = self.disk.borrow();
        disk.live_file(path).map(|inode| inode.0)
    }

    /// True when the file at `path` has writes or length changes that no
    /// `sync_data` has made durable yet.
    pub fn has_unsynced(&self, path: &Path) -> bool {
        let disk = self.disk.borrow();
        match disk.live_file(path) {
            Ok(inode) => !disk.inode(inode).pending.is_empty(),
            Err(_) => false,
        }
    }

    /// Flip every bit of the byte at `pos` of the file at `path`, in its live
    /// image, its durable image and any pending write covering it, so that the
    /// corruption survives any crash (to test checksum detection).
    ///
    /// Panics when there is no such file or `pos` is beyond its live length.
    pub fn corrupt_byte(&self, path: &Path, pos: u64) {
        let mut disk = self.disk.borrow_mut();
        let Ok(inode_id) = disk.live_file(path) else {
            panic!("corrupt_byte: no file at {}", path.display());
        };
        let inode = disk.inode_mut(inode_id);
        assert!(
            pos < inode.live.len,
            "corrupt_byte: {pos} beyond the end of {}",
            path.display()
        );
        inode.live.flip(pos);
        if pos < inode.durable.len {
            inode.durable.flip(pos);
        }
        for operation in &mut inode.pending {
            if let PendingOperation::Write {
                pos: write_pos,
                data,
            } = operation
            {
                let end = *write_pos + data.len() as u64;
                if (*write_pos..end).contains(&pos) {
                    let mut copy = data.to_vec();
                    copy[to_usize(pos - *write_pos)] ^= 0xFF;
                    *data = Bytes::from(copy);
                }
            }
        }
    }

    fn check_file(&self, file: &SimFile) {
        assert!(
            Rc::ptr_eq(&self.disk, &file.disk),
            "file handle {} used with another SimIo instance (opened before a crash?)",
            file.path.display()
        );
    }
}

impl Io for SimIo {
    type File = SimFile;

    fn now_ms(&self) -> i64 {
        self.disk.borrow().now_ms()
    }

    async fn sleep(&self, duration: Duration) {
        self.disk.borrow_mut().advance(duration);
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let mut ancestors: Vec<&Path> = path.ancestors().filter(|dir| !is_root(dir)).collect();
        ancestors.reverse();
        // Check first so that a failure changes nothing.
        for dir in &ancestors {
            if let Some(Entry::File(_)) = disk.live.get(*dir) {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
        }
        for dir in ancestors {
            disk.live.entry(dir.to_path_buf()).or_insert(Entry::Dir);
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.borrow();
        disk.check_live_dir(path)?;
        Ok(disk.names(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        if disk.faults.remove_path.as_deref() == Some(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        disk.live_file(path)?;
        disk.live.remove(path);
        disk.collect_garbage();
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        let inode_id = disk.live_file(from)?;
        if let Some(Entry::Dir) = disk.live.get(to) {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        disk.check_live_parent(to)?;
        // Both entries change in the live image; a crash before `sync_dir`
        // picks each entry's old or new state independently (CrashMode::Torn),
        // which covers every outcome a real rename can leave and more.
        disk.live.remove(from);
        disk.live.insert(to.to_path_buf(), Entry::File(inode_id));
        disk.collect_garbage();
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.stats.sync_dir_count += 1;
        disk.faults.check_halt()?;
        disk.check_live_dir(path)?;
        let children: Vec<PathBuf> = disk
            .live
            .keys()
            .chain(disk.durable.keys())
            .filter(|child| child.parent() == Some(path))
            .cloned()
            .collect();
        for child in children {
            match disk.live.get(&child).copied() {
                Some(entry) => disk.durable.insert(child, entry),
                None => disk.durable.remove(&child),
            };
        }
        disk.collect_garbage();
        Ok(())
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut disk = self.disk.borrow_mut();
        let inode_id = match disk.live.get(path).copied() {
            Some(Entry::File(inode_id)) => inode_id,
            Some(Entry::Dir) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if is_root(path) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if !create => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
            None => {
                disk.faults.check_halt()?;
                disk.check_live_parent(path)?;
                let inode_id = disk.inode_create(Image::default());
                disk.live.insert(path.to_path_buf(), Entry::File(inode_id));
                inode_id
            }
        };
        let inode = disk.inode_mut(inode_id);
        let open = match inode.open.upgrade() {
            Some(open) => open,
            None => {
                let open = Rc::new(OpenMarker);
                inode.open = Rc::downgrade(&open);
                open
            }
        };
        Ok(SimFile {
            disk: Rc::clone(&self.disk),
            inode: inode_id,
            path: path.to_path_buf(),
            _open: open,
        })
    }

    fn file_len(&self, file: &SimFile) -> io::Result<u64> {
        self.check_file(file);
        Ok(self.disk.borrow().inode(file.inode).live.len)
    }

    async fn allocate(&self, file: &SimFile, len: u64) -> io::Result<()> {
        self.check_file(file);
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        let len_now = disk.inode(file.inode).live.len;
        if len <= len_now {
            return Ok(());
        }
        disk.check_space(file.inode, len)?;
        disk.inode_mut(file.inode).set_len(len);
        Ok(())
    }

    async fn set_len(&self, file: &SimFile, len: u64) -> io::Result<()> {
        self.check_file(file);
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        disk.check_space(file.inode, len)?;
        disk.inode_mut(file.inode).set_len(len);
        Ok(())
    }

    async fn write_at(&self, file: &SimFile, pos: u64, data: Bytes) -> io::Result<()> {
        self.check_file(file);
        assert!(
            pos.is_multiple_of(PAGE_SIZE as u64),
            "write_at: unaligned position {pos}"
        );
        assert!(
            data.len().is_multiple_of(PAGE_SIZE),
            "write_at: unaligned length {}",
            data.len()
        );
        let mut disk = self.disk.borrow_mut();
        disk.stats.write_at_count += 1;
        disk.faults.check_halt()?;
        if disk.faults.write_fails() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let len_now = disk.inode(file.inode).live.len;
        let end = pos + data.len() as u64;
        disk.check_space(file.inode, len_now.max(end))?;
        disk.stats.bytes_written += data.len() as u64;
        let inode = disk.inode_mut(file.inode);
        inode.live.write(pos, &data);
        // The device reads the buffer during the write, not at a later
        // sync: the writer may reuse the memory once the write completed
        // (the log appends into the tail page it just wrote).
        let data = Bytes::copy_from_slice(&data);
        inode.pending.push(PendingOperation::Write { pos, data });
        Ok(())
    }

    async fn sync_data(&self, file: &SimFile) -> io::Result<()> {
        self.check_file(file);
        let mut disk = self.disk.borrow_mut();
        disk.stats.sync_data_count += 1;
        disk.faults.check_halt()?;
        if disk.faults.sync_fails() {
            // Nothing about the unsynced state is known: it stays pending, so
            // a crash may keep any part of it.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let inode = disk.inode_mut(file.inode);
        inode.make_durable_up_to(inode.operations_pushed());
        assert_eq!(
            inode.durable.len, inode.live.len,
            "sync_data: durable image diverged"
        );
        Ok(())
    }

    async fn sync_filesystem(&self, file: &SimFile) -> io::Result<()> {
        self.check_file(file);
        // What the call covers is fixed when it starts: every completed
        // write, length change and directory entry of the whole disk, as
        // syncfs commits the whole filesystem. It then takes time (until
        // the next poll pass), during which other logs write and join a
        // later sync; what happens meanwhile is not made durable by this
        // one, and what another sync made durable meanwhile stays so.
        let (operations, live_at_start, durable_at_start) = {
            let mut disk = self.disk.borrow_mut();
            disk.stats.sync_filesystem_count += 1;
            disk.faults.check_halt()?;
            let operations: Vec<(InodeId, u64)> = disk
                .inodes
                .iter()
                .map(|(inode_id, inode)| (*inode_id, inode.operations_pushed()))
                .collect();
            (operations, disk.live.clone(), disk.durable.clone())
        };
        LaterPass(poll_pass()).await;
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        if disk.faults.sync_fails() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (inode_id, covered) in operations {
            if let Some(inode) = disk.inodes.get_mut(&inode_id) {
                inode.make_durable_up_to(covered);
            }
        }
        let paths: BTreeSet<PathBuf> = live_at_start
            .keys()
            .chain(durable_at_start.keys())
            .cloned()
            .collect();
        for path in paths {
            if disk.durable.get(&path) != durable_at_start.get(&path) {
                continue; // made durable meanwhile by a later call
            }
            match live_at_start.get(&path) {
                // A file removed and forgotten meanwhile has no inode left:
                // its entry is gone for good, as after a later unlink.
                Some(Entry::File(inode_id)) if !disk.inodes.contains_key(inode_id) => {
                    disk.durable.remove(&path)
                }
                Some(entry) => disk.durable.insert(path, *entry),
                None => disk.durable.remove(&path),
            };
        }
        disk.collect_garbage();
        Ok(())
    }

    async fn read_at(&self, file: &SimFile, pos: u64, len: usize) -> io::Result<Bytes> {
        self.check_file(file);
        assert!(
            pos.is_multiple_of(PAGE_SIZE as u64),
            "read_at: unaligned position {pos}"
        );
        assert!(
            len.is_multiple_of(PAGE_SIZE),
            "read_at: unaligned length {len}"
        );
        let mut disk = self.disk.borrow_mut();
        disk.stats.read_at_count += 1;
        if disk.faults.read_path.as_deref() == Some(file.path.as_path()) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(Bytes::from(
            disk.inode(file.inode).live.read(pos, len as u64),
        ))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.disk.borrow();
        let inode = disk.live_file(path)?;
        Ok(disk.inode(inode).live.to_vec())
    }

    async fn write_file_atomic(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        self.replace_file_entry(path, data, true)
    }

    async fn replace_file(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        self.replace_file_entry(path, data, false)
    }
}

impl SimIo {
    /// A new file's content (durable: the temporary was fsynced) renamed
    /// over `path`; the directory entry is durable at once if `entry_synced`,
    /// else at the directory's next `sync_dir`.
    fn replace_file_entry(&self, path: &Path, data: Vec<u8>, entry_synced: bool) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.faults.check_halt()?;
        match disk.live.get(path) {
            Some(Entry::Dir) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if is_root(path) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            _ => {}
        }
        disk.check_live_parent(path)?;
        // The temporary file exists next to the old one until the rename.
        if let Some(limit) = disk.space_limit_bytes
            && disk.space_used_bytes() + data.len() as u64 > limit
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inode_id = disk.inode_create(Image::from_vec(data));
        disk.live.insert(path.to_path_buf(), Entry::File(inode_id));
        if entry_synced {
            disk.durable
                .insert(path.to_path_buf(), Entry::File(inode_id));
        }
        disk.collect_garbage();
        Ok(())
    }
}

/// Shared by all handles of one open inode; the inode holds a `Weak` to it.
struct OpenMarker;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InodeId(u64);

thread_local! {
    /// Poll passes of the test executor (`testing::block_on`, a test's
    /// `poll_once`): calls that take time complete in a later pass than
    /// the one they started in, whoever polls them.
    static POLL_PASS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Start a new poll pass (called by the test executors once per pass).
pub fn next_poll_pass() {
    POLL_PASS.with(|pass| pass.set(pass.get() + 1));
}

fn poll_pass() -> u64 {
    POLL_PASS.with(std::cell::Cell::get)
}

/// Ready in a later poll pass than the one it was created in: a call that
/// takes time, during which the executor runs other tasks.
struct LaterPass(u64);

impl Future for LaterPass {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if poll_pass() > self.0 {
            return std::task::Poll::Ready(());
        }
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(InodeId),
}

#[derive(Default)]
struct Faults {
    halt_countdown: Option<u64>,
    halted: bool,
    sync_countdown: Option<u64>,
    sync_all: bool,
    write_countdown: Option<u64>,
    write_all: bool,
    read_path: Option<PathBuf>,
    remove_path: Option<PathBuf>,
}

impl Faults {
    /// EIO once the disk is halted (see `SimIo::halt_after`).
    fn check_halt(&mut self) -> io::Result<()> {
        if !self.halted && countdown_fires(&mut self.halt_countdown) {
            self.halted = true;
        }
        if self.halted {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn sync_fails(&mut self) -> bool {
        countdown_fires(&mut self.sync_countdown) || self.sync_all
    }

    fn write_fails(&mut self) -> bool {
        countdown_fires(&mut self.write_countdown) || self.write_all
    }
}

/// Counts one call down; true (once) when the countdown was at zero.
fn countdown_fires(countdown: &mut Option<u64>) -> bool {
    match *countdown {
        Some(0) => {
            *countdown = None;
            true
        }
        Some(count) => {
            *countdown = Some(count - 1);
            false
        }
        None => false,
    }
}

/// File content with a logical length. Bytes in `[data.len(), len)` read as
/// zeros and take no memory, so preallocation is free.
#[derive(Clone, Default)]
struct Image {
    len: u64,
    data: Vec<u8>,
}

impl Image {
    fn from_vec(data: Vec<u8>) -> Image {
        Image {
            len: data.len() as u64,
            data,
        }
    }

    fn set_len(&mut self, len: u64) {
        self.len = len;
        if self.data.len() as u64 > len {
            self.data.truncate(to_usize(len));
        }
    }

    fn write(&mut self, pos: u64, bytes: &[u8]) {
        let start = to_usize(pos);
        let end = start + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        self.len = self.len.max(end as u64);
    }

    /// Up to `len` bytes at `pos`, fewer only at the end.
    fn read(&self, pos: u64, len: u64) -> Vec<u8> {
        let end = pos.saturating_add(len).min(self.len);
        if pos >= end {
            return Vec::new();
        }
        let mut out = vec![0; to_usize(end - pos)];
        let stored_start = to_usize(pos).min(self.data.len());
        let stored_end = to_usize(end).min(self.data.len());
        out[..stored_end - stored_start].copy_from_slice(&self.data[stored_start..stored_end]);
        out
    }

    fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.len)
    }

    fn flip(&mut self, pos: u64) {
        assert!(pos < self.len);
        let index = to_usize(pos);
        if self.data.len() <= index {
            self.data.resize(index + 1, 0);
        }
        self.data[index] ^= 0xFF;
    }
}

enum PendingOperation {
    Write { pos: u64, data: Bytes },
    SetLen { len: u64 },
}

impl PendingOperation {
    fn apply(&self, image: &mut Image) {
        match self {
            PendingOperation::Write { pos, data } => image.write(*pos, data),
            PendingOperation::SetLen { len } => image.set_len(*len),
        }
    }

    /// Apply a random part: each sector of a write, or the length change,
    /// with probability 1/2.
    fn apply_torn(&self, image: &mut Image, random: &mut SplitMix64) {
        match self {
            PendingOperation::Write { pos, data } => {
                for (index, sector) in data.chunks(SECTOR_SIZE).enumerate() {
                    if random.coin() {
                        image.write(pos + (index * SECTOR_SIZE) as u64, sector);
                    }
                }
            }
            PendingOperation::SetLen { len } => {
                if random.coin() {
                    image.set_len(*len);
                }
            }
        }
    }
}

struct Inode {
    live: Image,
    durable: Image,
    /// Writes and length changes since the last successful `sync_data`, in
    /// order. Replaying them all onto `durable` gives `live`.
    pending: Vec<PendingOperation>,
    /// Operations applied to `durable` so far (by syncs).
    synced_operations: u64,
    open: Weak<OpenMarker>,
}

impl Inode {
    /// Operations ever recorded: applied ones plus pending ones.
    fn operations_pushed(&self) -> u64 {
        self.synced_operations + self.pending.len() as u64
    }

    /// Apply pending operations to the durable image, in order, until
    /// `covered` operations in all have been applied.
    fn make_durable_up_to(&mut self, covered: u64) {
        let count = covered.saturating_sub(self.synced_operations) as usize;
        let count = count.min(self.pending.len());
        for operation in self.pending.drain(..count) {
            operation.apply(&mut self.durable);
        }
        self.synced_operations += count as u64;
    }

    fn set_len(&mut self, len: u64) {
        self.live.set_len(len);
        self.pending.push(PendingOperation::SetLen { len });
    }
}

struct Disk {
    seed: u64,
    random: SplitMix64,
    now_us: i64,
    crash_mode: CrashMode,
    space_limit_bytes: Option<u64>,
    /// Entries as reads see them. The roots (`/` and the empty path) are
    /// implicit directories and never appear.
    live: BTreeMap<PathBuf, Entry>,
    /// Entries as a crash keeps them for sure.
    durable: BTreeMap<PathBuf, Entry>,
    /// Files named by a live or durable entry or held open.
    inodes: BTreeMap<InodeId, Inode>,
    inode_next: u64,
    faults: Faults,
    stats: SimStats,
}

impl Disk {
    fn now_ms(&self) -> i64 {
        self.now_us.div_euclid(1000)
    }

    fn advance(&mut self, duration: Duration) {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        self.now_us = self.now_us.saturating_add(micros);
    }

    fn inode(&self, inode_id: InodeId) -> &Inode {
        let Some(inode) = self.inodes.get(&inode_id) else {
            panic!("inode {inode_id:?} does not exist");
        };
        inode
    }

    fn inode_mut(&mut self, inode_id: InodeId) -> &mut Inode {
        let Some(inode) = self.inodes.get_mut(&inode_id) else {
            panic!("inode {inode_id:?} does not exist");
        };
        inode
    }

    /// A new inode whose content is durable (not its entry).
    fn inode_create(&mut self, image: Image) -> InodeId {
        let inode_id = InodeId(self.inode_next);
        self.inode_next += 1;
        let inode = Inode {
            live: image.clone(),
            durable: image,
            pending: Vec::new(),
            synced_operations: 0,
            open: Weak::new(),
        };
        self.inodes.insert(inode_id, inode);
        inode_id
    }

    /// Drop the inodes that no entry names and no handle holds open.
    fn collect_garbage(&mut self) {
        let named: BTreeSet<InodeId> = self
            .live
            .values()
            .chain(self.durable.values())
            .filter_map(|entry| match entry {
                Entry::File(inode_id) => Some(*inode_id),
                Entry::Dir => None,
            })
            .collect();
        self.inodes
            .retain(|inode_id, inode| inode.open.strong_count() > 0 || named.contains(inode_id));
    }

    fn live_file(&self, path: &Path) -> io::Result<InodeId> {
        match self.live.get(path) {
            Some(Entry::File(inode_id)) => Ok(*inode_id),
            Some(Entry::Dir) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if is_root(path) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn durable_file(&self, path: &Path) -> Option<InodeId> {
        match self.durable.get(path) {
            Some(Entry::File(inode_id)) => Some(*inode_id),
            _ => None,
        }
    }

    fn check_live_dir(&self, path: &Path) -> io::Result<()> {
        match self.live.get(path) {
            Some(Entry::Dir) => Ok(()),
            Some(Entry::File(_)) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            None if is_root(path) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn check_live_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) => self.check_live_dir(parent),
            None => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        }
    }

    fn names(&self, dir: &Path) -> Vec<String> {
        self.live
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    fn space_used_bytes(&self) -> u64 {
        self.live
            .values()
            .filter_map(|entry| match entry {
                Entry::File(inode_id) => Some(self.inode(*inode_id).live.len),
                Entry::Dir => None,
            })
            .sum()
    }

    /// ENOSPC when changing the live length of `inode_id` to `len` would go
    /// beyond the space limit. Shrinking and unnamed files always pass.
    fn check_space(&self, inode_id: InodeId, len: u64) -> io::Result<()> {
        let Some(limit) = self.space_limit_bytes else {
            return Ok(());
        };
        let len_now = self.inode(inode_id).live.len;
        let named = self
            .live
            .values()
            .any(|entry| *entry == Entry::File(inode_id));
        if !named || len <= len_now {
            return Ok(());
        }
        if self.space_used_bytes() + (len - len_now) > limit {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// The disk after a power loss; see the module docs.
    fn crash(&mut self) -> Disk {
        let crash_mode = self.crash_mode;
        let random = &mut self.random;

        // Entries: every path either state knows, in order.
        let mut paths: Vec<&PathBuf> = self.live.keys().chain(self.durable.keys()).collect();
        paths.sort();
        paths.dedup();
        let mut chosen: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        for path in paths {
            let live = self.live.get(path).copied();
            let durable = self.durable.get(path).copied();
            let entry = if live == durable {
                live
            } else {
                match crash_mode {
                    CrashMode::Torn => {
                        if random.coin() {
                            live
                        } else {
                            durable
                        }
                    }
                    CrashMode::LoseUnsynced => durable,
                    CrashMode::KeepUnsynced => live,
                }
            };
            if let Some(entry) = entry {
                chosen.insert(path.clone(), entry);
            }
        }
        // An entry survives only if every ancestor directory survives.
        let reachable: BTreeMap<PathBuf, Entry> = chosen
            .iter()
            .filter(|(path, _)| {
                path.ancestors()
                    .skip(1)
                    .filter(|dir| !is_root(dir))
                    .all(|dir| chosen.get(dir) == Some(&Entry::Dir))
            })
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();

        // Contents of the surviving files, in inode order.
        let mut inode_ids: Vec<InodeId> = reachable
            .values()
            .filter_map(|entry| match entry {
                Entry::File(inode_id) => Some(*inode_id),
                Entry::Dir => None,
            })
            .collect();
        inode_ids.sort();
        inode_ids.dedup();
        let mut inodes = BTreeMap::new();
        for inode_id in inode_ids {
            let Some(inode) = self.inodes.get(&inode_id) else {
                panic!("crash: entry names a missing inode {inode_id:?}");
            };
            let mut image = inode.durable.clone();
            for operation in &inode.pending {
                match crash_mode {
                    CrashMode::Torn => operation.apply_torn(&mut image, random),
                    CrashMode::LoseUnsynced => {}
                    CrashMode::KeepUnsynced => operation.apply(&mut image),
                }
            }
            inodes.insert(
                inode_id,
                Inode {
                    live: image.clone(),
                    durable: image,
                    pending: Vec::new(),
                    synced_operations: 0,
                    open: Weak::new(),
                },
            );
        }

        let seed = random.next_u64();
        Disk {
            seed,
            random: SplitMix64::new(seed),
            now_us: self.now_us,
            crash_mode,
            space_limit_bytes: self.space_limit_bytes,
            live: reachable.clone(),
            durable: reachable,
            inodes,
            inode_next: self.inode_next,
            faults: Faults::default(),
            stats: SimStats::default(),
        }
    }
}

/// The implicit root directories: `/` and the empty path (parent of relative
/// names).
fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or_else(|_| panic!("{value} does not fit in memory"))
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick
/// crash outcomes. Deterministic for a given seed on every platform.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// True with probability 1/2.
    fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::io::is_storage_full;

    /// Every future of the sim completes on its first poll.
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("a sim future was not ready on its first poll"),
        }
    }

    fn page(fill: u8) -> Bytes {
        Bytes::from(vec![fill; PAGE_SIZE])
    }

    /// A synced directory `/data` holding a synced empty file `/data/file`.
    fn disk_with_file(seed: u64) -> (SimIo, SimFile) {
        let io = SimIo::new(seed);
        io.create_dir_all(Path::new("/data")).unwrap();
        ready(io.sync_dir(Path::new("/"))).unwrap();
        let file = ready(io.open(Path::new("/data/file"), true)).unwrap();
        ready(io.sync_dir(Path::new("/data"))).unwrap();
        (io, file)
    }

    fn path() -> &'static Path {
        Path::new("/data/file")
    }

    #[test]
    fn sync_data_makes_writes_durable() {
        let (io, file) = disk_with_file(1);
        ready(io.write_at(&file, 0, page(7))).unwrap();
        assert!(io.has_unsynced(path()));
        assert_eq!(io.live_len(path()), Some(PAGE_SIZE as u64));
        assert_eq!(io.durable_len(path()), Some(0));
        ready(io.sync_data(&file)).unwrap();
        assert!(!io.has_unsynced(path()));
        assert_eq!(io.durable_len(path()), Some(PAGE_SIZE as u64));
        assert_eq!(io.durable_content(path()).unwrap(), vec![7; PAGE_SIZE]);
        assert_eq!(io.stats().sync_data_count, 1);
        assert_eq!(io.stats().write_at_count, 1);
        assert_eq!(io.stats().bytes_written, PAGE_SIZE as u64);
    }

    #[test]
    fn crash_after_sync_keeps_content() {
        for seed in 0..50 {
            let (io, file) = disk_with_file(seed);
            ready(io.allocate(&file, 16 * PAGE_SIZE as u64)).unwrap();
            ready(io.write_at(&file, 0, page(1))).unwrap();
            ready(io.write_at(&file, PAGE_SIZE as u64, page(2))).unwrap();
            ready(io.sync_data(&file)).unwrap();
            let rebooted = io.crash();
            let content = rebooted.read_file(path()).unwrap();
            assert_eq!(content.len(), 16 * PAGE_SIZE, "seed {seed}");
            assert_eq!(&content[..PAGE_SIZE], &page(1)[..], "seed {seed}");
            assert_eq!(
                &content[PAGE_SIZE..2 * PAGE_SIZE],
                &page(2)[..],
                "seed {seed}"
            );
            assert!(
                content[2 * PAGE_SIZE..].iter().all(|byte| *byte == 0),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn crash_tears_unsynced_writes_at_sector_granularity() {
        let sectors = 2 * PAGE_SIZE / SECTOR_SIZE;
        let mut seen_old = vec![false; sectors];
        let mut seen_new = vec![false; sectors];
        for seed in 0..200 {
            let (io, file) = disk_with_file(seed);
            ready(io.write_at(&file, 0, Bytes::from(vec![1; 2 * PAGE_SIZE]))).unwrap();
            ready(io.sync_data(&file)).unwrap();
            ready(io.write_at(&file, 0, Bytes::from(vec![2; 2 * PAGE_SIZE]))).unwrap();
            let content = io.crash().read_file(path()).unwrap();
            assert_eq!(content.len(), 2 * PAGE_SIZE, "seed {seed}");
            for (index, sector) in content.chunks(SECTOR_SIZE).enumerate() {
                let first = sector[0];
                assert!(
                    first == 1 || first == 2,
                    "seed {seed}: garbage in sector {index}"
                );
                assert!(
                    sector.iter().all(|byte| *byte == first),
                    "seed {seed}: torn sector"
                );
                seen_old[index] |= first == 1;
                seen_new[index] |= first == 2;
            }
        }
        assert!(
            seen_old.iter().all(|seen| *seen),
            "some sector always landed"
        );
        assert!(
            seen_new.iter().all(|seen| *seen),
            "some sector never landed"
        );
    }

    #[test]
    fn crash_can_drop_unsynced_appends() {
        let mut lengths = Vec::new();
        for seed in 0..100 {
            let (io, file) = disk_with_file(seed);
            ready(io.write_at(&file, 0, page(3))).unwrap();
            let rebooted = io.crash();
            let content = rebooted.read_file(path()).unwrap();
            assert!(content.len() <= PAGE_SIZE, "seed {seed}");
            assert!(content.len().is_multiple_of(SECTOR_SIZE), "seed {seed}");
            lengths.push(content.len());
        }
        assert!(
            lengths.iter().any(|len| *len < PAGE_SIZE),
            "no append was torn"
        );
        assert!(lengths.contains(&PAGE_SIZE), "no append landed whole");
    }

    #[test]
    fn crash_mode_lose_unsynced_keeps_only_durable_state() {
        let (io, file) = disk_with_file(5);
        io.set_crash_mode(CrashMode::LoseUnsynced);
        ready(io.write_at(&file, 0, page(1))).unwrap();
        ready(io.sync_data(&file)).unwrap();
        ready(io.write_at(&file, 0, page(2))).unwrap();
        ready(io.set_len(&file, 3 * PAGE_SIZE as u64)).unwrap();
        let unsynced = ready(io.open(Path::new("/data/new"), true)).unwrap();
        ready(io.write_at(&unsynced, 0, page(9))).unwrap();
        ready(io.sync_data(&unsynced)).unwrap();
        for _ in 0..10 {
            let rebooted = io.crash();
            assert_eq!(rebooted.read_file(path()).unwrap(), page(1).to_vec());
            assert_eq!(
                rebooted.file_names(Path::new("/data")),
                vec!["file".to_string()]
            );
        }
    }

    #[test]
    fn crash_mode_keep_unsynced_keeps_live_state() {
        let (io, file) = disk_with_file(6);
        io.set_crash_mode(CrashMode::KeepUnsynced);
        ready(io.write_at(&file, PAGE_SIZE as u64, page(4))).unwrap();
        ready(io.open(Path::new("/data/new"), true)).unwrap();
        let rebooted = io.crash();
        assert_eq!(
            rebooted.read_file(path()).unwrap(),
            io.read_file(path()).unwrap()
        );
        assert_eq!(rebooted.file_names(Path::new("/data")), vec!["file", "new"]);
        assert_eq!(
            rebooted.crash().read_file(path()).unwrap().len(),
            2 * PAGE_SIZE
        );
    }

    #[test]
    fn entries_are_durable_only_after_sync_dir() {
        let mut survived = 0;
        for seed in 0..100 {
            let (io, file) = disk_with_file(seed);
            let created = ready(io.open(Path::new("/data/created"), true)).unwrap();
            ready(io.sync_data(&created)).unwrap();
            io.remove_file(path()).unwrap();
            // The handle outlives the entry.
            ready(io.write_at(&file, 0, page(1))).unwrap();
            assert_eq!(io.file_names(Path::new("/data")), vec!["created"]);
            let names = io.crash().file_names(Path::new("/data"));
            assert!(names.len() <= 2, "seed {seed}");
            survived += usize::from(names.contains(&"created".to_string()));
            ready(io.sync_dir(Path::new("/data"))).unwrap();
            assert_eq!(io.crash().file_names(Path::new("/data")), vec!["created"]);
        }
        assert!(
            survived > 0 && survived < 100,
            "pending creations survived {survived}/100"
        );
    }

    #[test]
    fn unsynced_directory_loses_its_children() {
        let io = SimIo::new(3);
        io.set_crash_mode(CrashMode::LoseUnsynced);
        io.create_dir_all(Path::new("/data/topic")).unwrap();
        ready(io.sync_dir(Path::new("/data"))).unwrap();
        ready(io.write_file_atomic(Path::new("/data/topic/checkpoint"), vec![1, 2])).unwrap();
        let rebooted = io.crash();
        assert!(rebooted.file_names(Path::new("/")).is_empty());
        assert!(
            rebooted
                .read_file(Path::new("/data/topic/checkpoint"))
                .is_err()
        );
        ready(io.sync_dir(Path::new("/"))).unwrap();
        let rebooted = io.crash();
        assert_eq!(
            rebooted
                .read_file(Path::new("/data/topic/checkpoint"))
                .unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn rename_moves_the_entry_and_is_durable_after_sync_dir() {
        let io = SimIo::new(7);
        io.create_dir_all(Path::new("/d")).unwrap();
        ready(io.sync_dir(Path::new("/"))).unwrap();
        let from = Path::new("/d/a.cleaned");
        let to = Path::new("/d/a.log");
        let old = ready(io.open(to, true)).unwrap();
        ready(io.write_at(&old, 0, page(1))).unwrap();
        ready(io.sync_data(&old)).unwrap();
        let new = ready(io.open(from, true)).unwrap();
        ready(io.write_at(&new, 0, page(2))).unwrap();
        ready(io.sync_data(&new)).unwrap();
        ready(io.sync_dir(Path::new("/d"))).unwrap();
        ready(io.rename(from, to)).unwrap();
        assert_eq!(io.read_file(to).unwrap()[0], 2);
        assert!(io.read_file(from).is_err());
        // The old handle still reads the replaced file.
        assert_eq!(ready(io.read_at(&old, 0, PAGE_SIZE)).unwrap()[0], 1);
        io.set_crash_mode(CrashMode::LoseUnsynced);
        let lost = io.crash();
        assert_eq!(lost.read_file(to).unwrap()[0], 1, "rename not yet durable");
        ready(io.sync_dir(Path::new("/d"))).unwrap();
        let kept = io.crash();
        assert_eq!(kept.read_file(to).unwrap()[0], 2);
        assert!(kept.read_file(from).is_err());
    }

    #[test]
    fn write_file_atomic_is_durable_and_whole() {
        for seed in 0..20 {
            let (io, _) = disk_with_file(seed);
            let checkpoint = Path::new("/data/checkpoint");
            ready(io.write_file_atomic(checkpoint, vec![1; 1000])).unwrap();
            ready(io.write_file_atomic(checkpoint, vec![2; 10])).unwrap();
            assert_eq!(io.read_file(checkpoint).unwrap(), vec![2; 10]);
            assert_eq!(io.crash().read_file(checkpoint).unwrap(), vec![2; 10]);
        }
        let io = SimIo::new(0);
        let error = io.read_file(Path::new("/missing")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn no_space_changes_nothing() {
        let (io, file) = disk_with_file(2);
        io.set_space_limit(Some(2 * PAGE_SIZE as u64));
        ready(io.write_at(&file, 0, page(1))).unwrap();
        ready(io.write_at(&file, PAGE_SIZE as u64, page(2))).unwrap();
        let error = ready(io.write_at(&file, 2 * PAGE_SIZE as u64, page(3))).unwrap_err();
        assert!(is_storage_full(&error));
        let error = ready(io.allocate(&file, 3 * PAGE_SIZE as u64)).unwrap_err();
        assert!(is_storage_full(&error));
        let error = ready(io.set_len(&file, 3 * PAGE_SIZE as u64)).unwrap_err();
        assert!(is_storage_full(&error));
        let error = ready(io.write_file_atomic(Path::new("/data/index"), vec![0; 1])).unwrap_err();
        assert!(is_storage_full(&error));
        assert_eq!(io.file_len(&file).unwrap(), 2 * PAGE_SIZE as u64);
        assert_eq!(io.space_used_bytes(), 2 * PAGE_SIZE as u64);
        assert_eq!(io.file_names(Path::new("/data")), vec!["file"]);
        // Overwriting and shrinking need no space.
        ready(io.write_at(&file, 0, page(4))).unwrap();
        ready(io.set_len(&file, PAGE_SIZE as u64)).unwrap();
        ready(io.allocate(&file, 2 * PAGE_SIZE as u64)).unwrap();
        // Removing a file frees its space.
        io.remove_file(path()).unwrap();
        assert_eq!(io.space_used_bytes(), 0);
    }

    #[test]
    fn sync_failure_reports_eio_and_keeps_state_unsynced() {
        let (io, file) = disk_with_file(4);
        io.fail_sync_after(Some(1));
        ready(io.write_at(&file, 0, page(1))).unwrap();
        ready(io.sync_data(&file)).unwrap();
        ready(io.write_at(&file, 0, page(2))).unwrap();
        let error = ready(io.sync_data(&file)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert!(io.has_unsynced(path()));
        assert_eq!(io.durable_content(path()).unwrap(), page(1).to_vec());
        // The fault fires once.
        ready(io.sync_data(&file)).unwrap();
        io.fail_all_syncs(true);
        assert!(ready(io.sync_data(&file)).is_err());
        assert!(ready(io.sync_data(&file)).is_err());
        io.fail_all_syncs(false);
        ready(io.sync_data(&file)).unwrap();
        assert_eq!(io.stats().sync_data_count, 6);
    }

    #[test]
    fn write_failure_writes_nothing() {
        let (io, file) = disk_with_file(4);
        io.fail_write_after(Some(0));
        let error = ready(io.write_at(&file, 0, page(1))).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert_eq!(io.file_len(&file).unwrap(), 0);
        assert!(!io.has_unsynced(path()));
        ready(io.write_at(&file, 0, page(1))).unwrap();
        io.fail_all_writes(true);
        assert!(ready(io.write_at(&file, 0, page(2))).is_err());
        assert_eq!(io.read_file(path()).unwrap(), page(1).to_vec());
        assert_eq!(io.stats().bytes_written, PAGE_SIZE as u64);
    }

    #[test]
    fn reads_are_short_only_at_end_of_file() {
        let (io, file) = disk_with_file(8);
        ready(io.allocate(&file, 3 * PAGE_SIZE as u64)).unwrap();
        ready(io.write_at(&file, PAGE_SIZE as u64, page(5))).unwrap();
        let bytes = ready(io.read_at(&file, 0, 8 * PAGE_SIZE)).unwrap();
        assert_eq!(bytes.len(), 3 * PAGE_SIZE);
        assert!(bytes[..PAGE_SIZE].iter().all(|byte| *byte == 0));
        assert!(
            bytes[PAGE_SIZE..2 * PAGE_SIZE]
                .iter()
                .all(|byte| *byte == 5)
        );
        assert!(
            ready(io.read_at(&file, 4 * PAGE_SIZE as u64, PAGE_SIZE))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    #[should_panic(expected = "unaligned")]
    fn unaligned_write_panics() {
        let (io, file) = disk_with_file(9);
        let _ = ready(io.write_at(&file, 0, Bytes::from(vec![0; 100])));
    }

    #[test]
    #[should_panic(expected = "another SimIo instance")]
    fn handle_of_crashed_instance_panics() {
        let (io, file) = disk_with_file(10);
        let rebooted = io.crash();
        let _ = rebooted.file_len(&file);
    }

    #[test]
    fn corrupt_byte_survives_crash() {
        let (io, file) = disk_with_file(11);
        io.set_crash_mode(CrashMode::KeepUnsynced);
        ready(io.write_at(&file, 0, page(0))).unwrap();
        io.corrupt_byte(path(), 10);
        assert_eq!(io.read_file(path()).unwrap()[10], 0xFF);
        assert_eq!(io.crash().read_file(path()).unwrap()[10], 0xFF);
    }

    #[test]
    fn clock_is_virtual() {
        let io = SimIo::new(0);
        assert_eq!(io.now_ms(), SimIo::NOW_MS_START_DEFAULT);
        ready(io.sleep(Duration::from_millis(250)));
        assert_eq!(io.now_ms(), SimIo::NOW_MS_START_DEFAULT + 250);
        io.advance_clock(Duration::from_secs(1));
        io.set_now_ms(io.now_ms() + 1);
        assert_eq!(io.crash().now_ms(), SimIo::NOW_MS_START_DEFAULT + 1251);
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed: u64| {
            let (io, file) = disk_with_file(seed);
            for index in 0..8u64 {
                ready(io.write_at(&file, index * PAGE_SIZE as u64, page(index as u8 + 1))).unwrap();
            }
            ready(io.set_len(&file, 5 * PAGE_SIZE as u64)).unwrap();
            let rebooted = io.crash();
            (rebooted.seed(), rebooted.read_file(path()).unwrap())
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
