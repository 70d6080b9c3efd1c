//! The reclaimer: one background thread per process that frees large files
//! a step at a time ([`free_gradually`]).
//!
//! Why a thread of its own: on a filesystem mounted with online discard the
//! kernel trims what an unlink or truncate frees before it returns, which
//! takes about 0.3 s per GB here, and a device trimming gigabytes at once
//! holds every other write's cache flush behind it (a deleted 6 GB topic
//! stalled produce to another topic for 1-2 s; docs/benchmarks.md,
//! "Deleting a large topic beside a producer"). So large files are never
//! freed on a shard thread, and all of them are freed by one thread, in
//! small steps with pauses between. compio's blocking pool is not used
//! for it: its callers spin while its 256 threads are busy, and a deleted
//! 2,000-partition topic would occupy all of them.
//!
//! Jobs run in the order they were queued, and nobody waits for them: what
//! is queued was renamed first (a segment to a `*.tmp` name that recovery
//! removes, a partition directory to its `-delete` form that the startup
//! sweep removes), so its name is free at once and a stop or crash before
//! the job ends leaves nothing that is ever read again.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use futures_channel::oneshot;

use crate::constants::{FREE_STEP_BYTES, FREE_STEP_PAUSE};

enum Job {
    /// Free and unlink one file, then answer if asked.
    File(PathBuf, Option<oneshot::Sender<io::Result<()>>>),
    /// Free every file of a directory, then remove it.
    Dir(PathBuf),
}

/// The queue to the reclaimer thread, started on first use. `None` if the
/// thread could not be started: jobs then run on the caller.
static QUEUE: Mutex<Option<Option<Sender<Job>>>> = Mutex::new(None);

fn queue() -> Option<Sender<Job>> {
    let mut queue = QUEUE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    queue
        .get_or_insert_with(|| {
            let (sender, receiver) = channel::<Job>();
            let started = std::thread::Builder::new()
                .name("sluice-reclaim".into())
                .spawn(move || {
                    for job in receiver {
                        run(job);
                    }
                });
            match started {
                Ok(_) => Some(sender),
                Err(error) => {
                    tracing::warn!(%error, "no reclaimer thread: large files are freed by their callers");
                    None
                }
            }
        })
        .clone()
}

fn run(job: Job) {
    match job {
        Job::File(path, done) => {
            let removed = free_and_remove_file(&path);
            match done {
                Some(done) => {
                    let _ = done.send(removed);
                }
                None => {
                    if let Err(error) = removed
                        && error.kind() != io::ErrorKind::NotFound
                    {
                        tracing::warn!(path = %path.display(), %error, "could not remove a deleted segment; recovery will");
                    }
                }
            }
        }
        Job::Dir(dir) => {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|kind| kind.is_file())
                        && let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path())
                    {
                        // Best effort: the removal below frees the rest.
                        let _ = free_gradually(&file);
                    }
                }
            }
            match std::fs::remove_dir_all(&dir) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), %error, "could not remove a deleted partition's directory; the startup sweep will");
                }
                _ => {}
            }
        }
    }
}

fn free_and_remove_file(path: &Path) -> io::Result<()> {
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        // Best effort: the unlink frees whatever is left.
        let _ = free_gradually(&file);
    }
    std::fs::remove_file(path)
}

/// Free `path`'s extents gradually and unlink it, on the reclaimer thread,
/// without waiting. Only for a name nothing opens again (a renamed
/// segment): a read still in flight on it sees the file end early.
pub fn remove_file_in_background(path: &Path) {
    submit(Job::File(path.to_path_buf(), None));
}

/// [`remove_file_in_background`], resolving when the file is gone (tests).
pub fn remove_file(path: &Path) -> impl Future<Output = io::Result<()>> + use<> {
    let (done, answer) = oneshot::channel();
    submit(Job::File(path.to_path_buf(), Some(done)));
    async move {
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the reclaimer thread stopped")))
    }
}

/// Free every file of `dir` gradually and remove it, on the reclaimer
/// thread, without waiting. Only for a directory nobody reads or creates
/// again under this name (a partition directory renamed to `-delete`):
/// a read still in flight on one of its files sees the file end early.
pub fn remove_dir_in_background(dir: &Path) {
    submit(Job::Dir(dir.to_path_buf()));
}

/// Queue `job`, or run it here if there is no reclaimer thread.
fn submit(job: Job) {
    match queue() {
        Some(queue) => {
            if let Err(error) = queue.send(job) {
                run(error.0);
            }
        }
        None => run(job),
    }
}

/// Truncate `file` to nothing [`FREE_STEP_BYTES`] at a time, pausing
/// [`FREE_STEP_PAUSE`] after each step, so that a filesystem with online
/// discard trims it in small pieces. Blocking: reclaimer thread only.
fn free_gradually(file: &std::fs::File) -> io::Result<()> {
    let mut len = file.metadata()?.len();
    while len > FREE_STEP_BYTES {
        len -= FREE_STEP_BYTES;
        file.set_len(len)?;
        std::thread::sleep(FREE_STEP_PAUSE);
    }
    // The last step (or a small file) is left to the unlink or the
    // directory removal: no pause for it.
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_and_directories_are_removed() {
        let dir = std::env::temp_dir().join(format!("sluice-reclaim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("partition")).unwrap();
        let large = dir.join("large");
        let file = std::fs::File::create(&large).unwrap();
        file.set_len(3 * FREE_STEP_BYTES + 4096).unwrap();
        futures_executor_block_on(remove_file(&large)).unwrap();
        assert!(!large.exists());
        assert_eq!(
            futures_executor_block_on(remove_file(&large))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        std::fs::write(dir.join("partition/00000000000000000000.log"), b"x").unwrap();
        remove_dir_in_background(&dir.join("partition"));
        // Jobs run in order: once a later file job is answered, the
        // directory is gone.
        std::fs::write(dir.join("marker"), b"x").unwrap();
        futures_executor_block_on(remove_file(&dir.join("marker"))).unwrap();
        assert!(!dir.join("partition").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn futures_executor_block_on<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
                return value;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
