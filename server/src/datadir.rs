//! The data directory: checked and locked before anything reads or writes
//! it.
//!
//! Invariant: at most one broker process uses a data directory. Two would
//! assign the same offsets to different records and overwrite each other's
//! files, losing acknowledged data without an error. [`DataDirLock::acquire`]
//! takes an exclusive `flock(2)` on `<data_dir>/sluice.lock` and holds it
//! for as long as the returned value lives (the broker keeps it until it
//! has stopped). The kernel releases the lock when the process dies, even by
//! SIGKILL, so no stale lock is left behind; the holder's pid is written
//! into the file only so that a refused process can name it.
//!
//! The lock also outlives the dead process's I/O. When a broker is killed,
//! writes it had submitted through io_uring may still be in flight after
//! the process is reaped (the kernel tears rings down asynchronously); a
//! successor that recovered the log in the meantime could see such a stale
//! write land on top of its own. So every shard registers the lock file in
//! its ring as a fixed file ([`DataDirLock::raw_fd`]): the kernel drops
//! that reference, and with the last one the lock, only when the ring is
//! freed, after all of its requests have completed. A successor that finds
//! the lock held by a process that no longer exists waits for it (up to
//! [`DEAD_HOLDER_WAIT`]) instead of failing.
//!
//! The directory also has an id ([`directory_id`], Kafka's `directory.id`,
//! KIP-858): a random UUID written into it on its first use, which the
//! broker registers with. A broker that comes back with another id than
//! before runs on a replaced or wiped disk, and the controller takes it out
//! of every ISR (docs/internals/replication.md, point 4).
//!
//! Runs once, on the main thread, before the shards start.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "sluice.lock";

/// Name of the file holding the data directory's id ([`directory_id`]).
pub const DIRECTORY_ID_FILE_NAME: &str = "directory.id";

/// How long [`DataDirLock::acquire`] waits for the lock of a holder that
/// no longer exists (its rings still finishing their I/O, see the module
/// docs) before giving up.
pub const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A wait for a dead holder's lock shorter than this is the normal end of
/// a stop (its rings are freed tens of milliseconds after it exits, so a
/// restart right after a stop waits that long) and is not warned about.
const DEAD_HOLDER_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// `f_type` of a tmpfs file system (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Why the data directory cannot be used. The messages name the directory
/// and say what is wrong; the underlying I/O error, if any, is the
/// `source` (shown after a colon by `{:#}`), never repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("data directory {path} is not writable (creating a file in it failed)")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another sluice process ({holder}); \
         two brokers on one data directory would lose acknowledged data"
    )]
    InUse { path: PathBuf, holder: Holder },
    #[error("cannot lock data directory {path} ({lock_file})")]
    Lock {
        path: PathBuf,
        lock_file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read or create the data directory's id ({file})")]
    DirectoryIdIo {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory's id file {file} does not hold a UUID ({text:?}); remove the file to \
         keep the directory's data as this broker's (it gets another id, as after an upgrade); \
         if the data is not to be trusted, empty the directory instead: the broker then starts \
         as on a new disk and leaves every ISR until it has caught up"
    )]
    InvalidDirectoryId { file: PathBuf, text: String },
}

/// The process holding a data directory's lock, as far as its lock file
/// says.
#[derive(Debug)]
pub struct Holder(Option<u32>);

impl Holder {
    pub fn pid(&self) -> Option<u32> {
        self.0
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(formatter, "pid {pid}"),
            // It has locked the file but not yet written its pid.
            None => write!(formatter, "pid not yet recorded"),
        }
    }
}

/// The exclusive lock on a data directory; released when dropped (or when
/// the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    /// Holds the `flock`; closing it (and every ring it is registered in)
    /// releases the lock.
    file: File,
}

impl DataDirLock {
    /// Create the data directory if needed, check that it is a writable
    /// directory, and lock it for this process. Warns when it is on tmpfs.
    ///
    /// `Ok` promises that no other process holds the directory's lock
    /// until the returned value is dropped. It does not promise anything
    /// about the directory's contents.
    pub fn acquire(path: &Path) -> Result<DataDirLock, DataDirError> {
        match std::fs::metadata(path) {
            Ok(metadata) if !metadata.is_dir() => {
                return Err(DataDirError::NotADirectory {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                create_dir_all_durable(path).map_err(|source| DataDirError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        let lock_path = path.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| classify_write_error(path, &lock_path, source))?;
        let started = std::time::Instant::now();
        let deadline = started + DEAD_HOLDER_WAIT;
        let mut warned = false;
        loop {
            // SAFETY: flock(2) on a file descriptor this function owns.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if result == 0 {
                break;
            }
            let source = std::io::Error::last_os_error();
            if source.kind() != ErrorKind::WouldBlock {
                return Err(DataDirError::Lock {
                    path: path.to_path_buf(),
                    lock_file: lock_path,
                    source,
                });
            }
            let holder = Holder(read_pid(&mut file));
            let dead = holder.pid().is_some_and(|pid| !process_exists(pid));
            if !dead || std::time::Instant::now() >= deadline {
                return Err(DataDirError::InUse {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            if !warned && started.elapsed() >= DEAD_HOLDER_QUIET {
                warned = true;
                tracing::warn!(
                    data_dir = %path.display(),
                    %holder,
                    "the data directory's previous broker has exited but its I/O is still \
                     finishing: waiting up to {DEAD_HOLDER_WAIT:?} for its lock"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // An existing lock file proves nothing about creating files (the
        // directory may have become read-only since): create one.
        check_writable(path)?;
        write_pid(&mut file).map_err(|source| classify_write_error(path, &lock_path, source))?;
        if on_tmpfs(path) {
            tracing::warn!(
                data_dir = %path.display(),
                "the data directory is on tmpfs (memory): acknowledged data will not survive \
                 a reboot; use a directory on a disk"
            );
        }
        Ok(DataDirLock { file })
    }

    /// The lock file's descriptor, for registering it in each shard's
    /// io_uring as a fixed file (see the module docs). Valid while `self`
    /// lives.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// The data directory's id: the UUID in `<path>/directory.id`, or, on the
/// directory's first use, a new random one written there durably (a
/// temporary file, fsynced, renamed into place, then the directory
/// fsynced), so that a crash leaves either no id or the whole one.
///
/// A directory that already holds files but no id was written by a
/// version without directory ids, or lost its id file: it gets one too,
/// marked `adopted`. The disk is not a new one: this start registers
/// without an id (as an earlier version does), which the controller
/// compares with nothing and which clears the id it had on record, so the
/// next start's id is compared with nothing either. Call with the
/// directory locked ([`DataDirLock::acquire`]).
pub fn directory_id(path: &Path) -> Result<DirectoryIdentity, DataDirError> {
    let file = path.join(DIRECTORY_ID_FILE_NAME);
    let io_error = |source| DataDirError::DirectoryIdIo {
        file: file.clone(),
        source,
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let id = uuid::Uuid::parse_str(text.trim()).map_err(|_| {
                DataDirError::InvalidDirectoryId {
                    file: file.clone(),
                    text,
                }
            })?;
            return Ok(DirectoryIdentity { id, adopted: false });
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(error)),
    }
    let temporary = path.join(format!("{DIRECTORY_ID_FILE_NAME}.tmp"));
    let earlier_data = std::fs::read_dir(path)
        .map_err(io_error)?
        .filter_map(Result::ok)
        .any(|entry| {
            let name = entry.file_name();
            name != LOCK_FILE_NAME && !name.to_string_lossy().starts_with(DIRECTORY_ID_FILE_NAME)
        });
    let id = uuid::Uuid::new_v4();
    let write = || -> std::io::Result<()> {
        let mut created = File::create(&temporary)?;
        created.write_all(format!("{id}\n").as_bytes())?;
        created.sync_all()?;
        std::fs::rename(&temporary, &file)?;
        File::open(path)?.sync_all()
    };
    write().map_err(io_error)?;
    if earlier_data {
        tracing::info!(
            data_dir = %path.display(),
            directory_id = %id,
            "the data directory holds data but no id (written by an earlier version, or its \
             id file was lost): created one, registered from the next start on"
        );
    } else {
        tracing::info!(
            data_dir = %path.display(),
            directory_id = %id,
            "new data directory: created its id"
        );
    }
    Ok(DirectoryIdentity {
        id,
        adopted: earlier_data,
    })
}

/// A data directory's id ([`directory_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryIdentity {
    pub id: uuid::Uuid,
    /// Created at this start for a directory that already held data: not
    /// registered until the next start.
    pub adopted: bool,
}

impl DirectoryIdentity {
    /// The id this start registers with.
    pub fn registered(&self) -> Option<uuid::Uuid> {
        (!self.adopted).then_some(self.id)
    }
}

/// Whether a process with this pid exists (it may be a zombie).
/// `create_dir_all`, then each directory it created made durable in its
/// parent (the parent's fsync), from the top: a directory whose entry a
/// power loss took loses everything written inside it however durably (a
/// controller voter's Raft state after its first vote, the data
/// directory's lock and first files).
pub fn create_dir_all_durable(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        at = dir.parent();
    }
    std::fs::create_dir_all(path)?;
    for dir in missing.iter().rev() {
        if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// "not writable" for the errors that mean so, else a locking failure.
fn classify_write_error(path: &Path, lock_path: &Path, source: std::io::Error) -> DataDirError {
    let read_only = source.kind() == ErrorKind::PermissionDenied
        || source.kind() == ErrorKind::ReadOnlyFilesystem
        || source.raw_os_error() == Some(libc::EPERM);
    if read_only {
        DataDirError::NotWritable {
            path: path.to_path_buf(),
            source,
        }
    } else {
        DataDirError::Lock {
            path: path.to_path_buf(),
            lock_file: lock_path.to_path_buf(),
            source,
        }
    }
}

/// Create, write and remove a file in `path`: mode bits alone do not say
/// whether this process can write (root ignores them; a read-only mount
/// or an immutable directory refuses root too).
fn check_writable(path: &Path) -> Result<(), DataDirError> {
    let probe = path.join(format!(".sluice-write-check-{}", std::process::id()));
    let outcome = File::create(&probe)
        .and_then(|mut file| file.write_all(b"sluice"))
        .and_then(|()| std::fs::remove_file(&probe));
    outcome.map_err(|source| {
        let _ = std::fs::remove_file(&probe);
        DataDirError::NotWritable {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn on_tmpfs(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all zeroes is a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a statfs we own.
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stats) };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs.
    let kind = stats.f_type as i64;
    result == 0 && kind == TMPFS_MAGIC
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-datadir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_on_one_directory_is_refused_and_names_the_holder() {
        let dir = scratch("second");
        let first = DataDirLock::acquire(&dir).unwrap();
        // flock locks belong to open file descriptions: a second open in
        // the same process conflicts just as another process would.
        let error = DataDirLock::acquire(&dir).unwrap_err();
        match &error {
            DataDirError::InUse { holder, .. } => {
                assert_eq!(holder.pid(), Some(std::process::id()))
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(error.to_string().contains(&dir.display().to_string()));
        drop(first);
        let again = DataDirLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The id is created once and read back at later starts; a directory
    /// of an earlier version (files, no id) gets one; a wiped directory
    /// gets another; a damaged id file is an error, not a new id.
    #[test]
    fn the_directory_id_is_created_once_and_kept() {
        let dir = scratch("directory-id");
        let lock = DataDirLock::acquire(&dir).unwrap();
        let first = directory_id(&dir).unwrap();
        assert!(!first.adopted, "a new directory's id is registered at once");
        assert_eq!(directory_id(&dir).unwrap(), first);
        let first = first.id;
        let text = std::fs::read_to_string(dir.join(DIRECTORY_ID_FILE_NAME)).unwrap();
        assert_eq!(text, format!("{first}\n"));
        assert!(!dir.join(format!("{DIRECTORY_ID_FILE_NAME}.tmp")).exists());
        drop(lock);

        // An earlier version's directory: data, no id.
        let upgraded = scratch("directory-id-upgraded");
        std::fs::create_dir_all(upgraded.join("orders-0")).unwrap();
        let lock = DataDirLock::acquire(&upgraded).unwrap();
        let adopted = directory_id(&upgraded).unwrap();
        assert_ne!(adopted.id, first);
        assert!(adopted.adopted);
        assert_eq!(
            adopted.registered(),
            None,
            "not registered at the first start"
        );
        let next_start = directory_id(&upgraded).unwrap();
        assert_eq!(next_start.id, adopted.id);
        assert_eq!(next_start.registered(), Some(adopted.id));
        drop(lock);

        // Data kept, id file lost (an operator removed it): adopted too,
        // never a replaced disk.
        std::fs::remove_file(upgraded.join(DIRECTORY_ID_FILE_NAME)).unwrap();
        let lock = DataDirLock::acquire(&upgraded).unwrap();
        let readopted = directory_id(&upgraded).unwrap();
        assert!(readopted.adopted);
        assert_eq!(readopted.registered(), None);
        drop(lock);

        // Wiped: another id.
        std::fs::remove_dir_all(&dir).unwrap();
        let lock = DataDirLock::acquire(&dir).unwrap();
        let again = directory_id(&dir).unwrap();
        assert_ne!(again.id, first);
        assert!(!again.adopted, "a wiped directory's new id is registered");

        std::fs::write(dir.join(DIRECTORY_ID_FILE_NAME), b"not a uuid\n").unwrap();
        let error = directory_id(&dir).unwrap_err();
        assert!(
            matches!(error, DataDirError::InvalidDirectoryId { .. }),
            "{error:?}"
        );
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&upgraded).unwrap();
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let dir = scratch("file");
        std::fs::write(&dir, b"").unwrap();
        let error = DataDirLock::acquire(&dir).unwrap_err();
        assert!(
            matches!(error, DataDirError::NotADirectory { .. }),
            "{error:?}"
        );
        // A file on the way: the kernel's reason (ENOTDIR) says which.
        let below = DataDirLock::acquire(&dir.join("below")).unwrap_err();
        assert!(matches!(below, DataDirError::Create { .. }), "{below:?}");
        std::fs::remove_file(&dir).unwrap();
    }
}
