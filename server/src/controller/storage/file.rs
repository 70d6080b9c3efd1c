//! File-backed Raft log store (production), used on the controller's own
//! thread with plain `std::fs` (a few writes a second at most).
//!
//! Files in the store's directory:
//! - `raft.log`: header `magic u32, generation u64`, then frames
//!   `length u32, crc32c u32, entry` (`codec` encoding). Appends only; an
//!   entry whose index the log already holds replaces the suffix from there
//!   when replayed (a new leader's log wins). A torn or damaged tail (short
//!   frame, bad checksum) is cut off at open: it was never synced, so never
//!   acknowledged.
//! - `raft.state`: hard state and conf state, framed with a checksum, then
//!   the catching-up marker (`LogCore::catching_up`), present only while
//!   it is set: `1` (no target yet) or `2, term u64, commit u64`. A state
//!   file of an earlier version has none (not catching up), and an earlier
//!   version refuses a store that is catching up as corrupt rather than
//!   vote with it.
//! - `raft.snapshot`: snapshot metadata, the log generation it belongs to,
//!   and the image bytes, framed with a checksum.
//!
//! `raft.state` and `raft.snapshot` are replaced whole: written to a unique
//! temporary name, fsynced, renamed, then the directory fsynced. Installing
//! a leader's snapshot bumps the log generation: the snapshot is written
//! first with generation g+1, then a fresh `raft.log` of generation g+1; a
//! crash between the two leaves a log of generation g, whose entries predate
//! the snapshot and are ignored. Compaction writes the snapshot with the
//! current generation (older entries are skipped by index) and then rewrites
//! the log without them.
//!
//! The catching-up marker is written to `raft.state` (and synced) when it is
//! set or given a target, with the last synced hard state: on an empty log
//! before any entry, and a target before the entries that came with it.
//! Its clearing goes out with the next sync's state file, after the log's
//! fsync (and after an installed snapshot's files), so it is never durable
//! before the entries it vouches for.
//!
//! Errors from write or fsync are fatal (`StoreError::Io`) and poison the
//! store: fsync is never retried.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};

use super::{CatchUpTarget, LogCore, RaftLogStore, StoreError, storage_from_core};
use crate::controller::codec::{DecodeError, Reader, Writer};

const LOG_FILE: &str = "raft.log";
const STATE_FILE: &str = "raft.state";
const SNAPSHOT_FILE: &str = "raft.snapshot";
const LOG_MAGIC: u32 = u32::from_le_bytes(*b"SLRL");
const STATE_MAGIC: u32 = u32::from_le_bytes(*b"SLRS");
const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"SLRP");
const LOG_HEADER_SIZE: usize = 12;
const FRAME_HEADER_SIZE: usize = 8;

/// Makes temporary names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct FileRaftStore {
    directory: PathBuf,
    core: LogCore,
    log: File,
    generation: u64,
    /// Frames appended since the last sync.
    pending: Vec<u8>,
    /// A leader's snapshot was installed since the last sync.
    snapshot_installed: bool,
    /// What `raft.state` holds.
    durable_state: State,
    /// Set after a failed write or fsync: every later call fails.
    poisoned: bool,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl FileRaftStore {
    /// Opens the store in `directory`, creating it for a cluster of `voters`
    /// (raft ids) if it is new. Recovers a torn log tail.
    pub fn open(directory: &Path, voters: &[u64]) -> Result<FileRaftStore, StoreError> {
        crate::datadir::create_dir_all_durable(directory)
            .map_err(io_error(format!("create {}", directory.display())))?;
        let state = read_framed(&directory.join(STATE_FILE), STATE_MAGIC)?;
        let snapshot = read_framed(&directory.join(SNAPSHOT_FILE), SNAPSHOT_MAGIC)?;
        let mut core = LogCore::bootstrap(voters);
        let mut snapshot_generation = 0;
        if let Some(bytes) = &snapshot {
            let (decoded, generation) = decode_snapshot(bytes).map_err(corrupt("raft.snapshot"))?;
            core.apply_snapshot(&decoded)?;
            snapshot_generation = generation;
        }
        if let Some(bytes) = &state {
            let state = decode_state(bytes).map_err(corrupt("raft.state"))?;
            core.hard_state = state.hard_state;
            core.conf_state = state.conf_state;
            core.catching_up = state.catching_up;
        }
        // A crash after an installed snapshot was written but before the
        // state file: the snapshot is committed, and its term was reached
        // (with no vote recorded in it).
        let snapshot_metadata = core.snapshot.get_metadata().clone();
        core.hard_state.commit = core.hard_state.commit.max(snapshot_metadata.index);
        if core.hard_state.term < snapshot_metadata.term {
            core.hard_state.term = snapshot_metadata.term;
            core.hard_state.vote = 0;
        }
        if core.conf_state.voters != voters {
            return Err(StoreError::Corrupt(format!(
                "stored voters {:?} differ from the configured {:?} (membership changes are \
                 not supported yet)",
                core.conf_state.voters, voters
            )));
        }
        let log_path = directory.join(LOG_FILE);
        let generation = match recover_log(&log_path, &mut core, snapshot_generation)? {
            Some(generation) if generation == snapshot_generation => generation,
            // No log yet, or one that predates the installed snapshot (its
            // entries were skipped): start the snapshot's generation.
            _ => {
                write_log_file(directory, snapshot_generation, &core.entries)?;
                snapshot_generation
            }
        };
        if core.hard_state.commit > core.last_index() {
            return Err(StoreError::Corrupt(format!(
                "commit index {} beyond the log's end {}",
                core.hard_state.commit,
                core.last_index()
            )));
        }
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(io_error("open raft.log"))?;
        let mut store = FileRaftStore {
            directory: directory.to_path_buf(),
            durable_state: state_of(&core),
            core,
            log,
            generation,
            pending: Vec::new(),
            snapshot_installed: false,
            poisoned: false,
        };
        if state.is_none() {
            store.write_state()?;
        }
        Ok(store)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Stopped);
        }
        Ok(())
    }

    fn write_state(&mut self) -> Result<(), StoreError> {
        self.write_state_of(state_of(&self.core))
    }

    fn write_state_of(&mut self, state: State) -> Result<(), StoreError> {
        replace_file(
            &self.directory,
            STATE_FILE,
            &frame_file(STATE_MAGIC, &encode_state(&state)),
        )?;
        self.durable_state = state;
        Ok(())
    }

    fn write_snapshot(&self, generation: u64) -> Result<(), StoreError> {
        let bytes = encode_snapshot(&self.core.snapshot, generation);
        replace_file(
            &self.directory,
            SNAPSHOT_FILE,
            &frame_file(SNAPSHOT_MAGIC, &bytes),
        )
    }

    /// Writes the whole log (entries after the snapshot) as a new file.
    fn rewrite_log(&mut self, generation: u64) -> Result<(), StoreError> {
        write_log_file(&self.directory, generation, &self.core.entries)?;
        self.log = OpenOptions::new()
            .append(true)
            .open(self.directory.join(LOG_FILE))
            .map_err(io_error("reopen raft.log"))?;
        self.generation = generation;
        self.pending.clear();
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<(), StoreError> {
        if self.snapshot_installed {
            let generation = self.generation + 1;
            self.write_snapshot(generation)?;
            self.rewrite_log(generation)?;
            self.snapshot_installed = false;
        } else if !self.pending.is_empty() {
            self.log
                .write_all(&self.pending)
                .map_err(io_error("append to raft.log"))?;
            self.log.sync_data().map_err(io_error("fsync raft.log"))?;
            self.pending.clear();
        }
        // Last: a cleared catching-up marker must not be durable before the
        // entries written ahead of it.
        if self.durable_state != state_of(&self.core) {
            self.write_state()?;
        }
        Ok(())
    }

    fn poison_on_error<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

impl RaftLogStore for FileRaftStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.check()?;
        self.core.append(entries);
        for entry in entries {
            append_frame(&mut self.pending, entry);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StoreError> {
        self.check()?;
        self.core.hard_state = hard_state.clone();
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.check()?;
        self.core.apply_snapshot(snapshot)?;
        self.pending.clear();
        self.snapshot_installed = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.check()?;
        let result = self.sync_inner();
        self.poison_on_error(result)
    }

    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.check()?;
        assert!(
            self.pending.is_empty() && !self.snapshot_installed,
            "compact runs on a synced store"
        );
        self.core.compact(snapshot);
        let generation = self.generation;
        let result = self
            .write_snapshot(generation)
            .and_then(|()| self.rewrite_log(generation));
        self.poison_on_error(result)
    }

    fn mark_catching_up(&mut self, target: CatchUpTarget) -> Result<(), StoreError> {
        self.check()?;
        self.core.catching_up = Some(target);
        // The synced hard state: a commit index written but not synced may
        // lie past the durable log's end.
        let state = State {
            catching_up: Some(target),
            ..self.durable_state.clone()
        };
        let result = self.write_state_of(state);
        self.poison_on_error(result)
    }

    fn clear_catching_up(&mut self) {
        self.core.catching_up = None;
    }

    fn core(&self) -> &LogCore {
        &self.core
    }
}

storage_from_core!(FileRaftStore);

/// What `raft.state` records.
#[derive(Clone, Debug, PartialEq)]
struct State {
    hard_state: HardState,
    conf_state: ConfState,
    catching_up: Option<CatchUpTarget>,
}

fn state_of(core: &LogCore) -> State {
    State {
        hard_state: core.hard_state.clone(),
        conf_state: core.conf_state.clone(),
        catching_up: core.catching_up,
    }
}

const CATCHING_UP: u8 = 1;
const CATCHING_UP_TO: u8 = 2;

fn encode_state(state: &State) -> Vec<u8> {
    let mut writer = Writer::new();
    encode_hard_state(&mut writer, &state.hard_state);
    encode_conf_state(&mut writer, &state.conf_state);
    // Absent while not set: the file stays as earlier versions wrote it.
    match state.catching_up {
        None => {}
        Some(None) => writer.u8(CATCHING_UP),
        Some(Some((term, commit))) => {
            writer.u8(CATCHING_UP_TO);
            writer.u64(term);
            writer.u64(commit);
        }
    }
    writer.into_bytes()
}

fn corrupt(file: &'static str) -> impl FnOnce(DecodeError) -> StoreError {
    move |error| StoreError::Corrupt(format!("{file}: {error}"))
}

/// `magic u32, crc32c u32, length u32, payload`.
fn frame_file(magic: u32, payload: &[u8]) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u32(magic);
    writer.u32(crc32c::crc32c(payload));
    writer.bytes(payload);
    writer.into_bytes()
}

/// The payload of a file written by `frame_file`, or None if it is absent.
fn read_framed(path: &Path, magic: u32) -> Result<Option<Vec<u8>>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(format!("read {}", path.display()))(error)),
    };
    let mut reader = Reader::new(&bytes);
    let parse = |reader: &mut Reader<'_>| -> Result<(u32, u32, Vec<u8>), DecodeError> {
        let found = reader.u32()?;
        let checksum = reader.u32()?;
        let payload = reader.bytes()?.to_vec();
        reader.finish()?;
        Ok((found, checksum, payload))
    };
    let (found, checksum, payload) = parse(&mut reader)
        .map_err(|error| StoreError::Corrupt(format!("{}: {error}", path.display())))?;
    if found != magic || crc32c::crc32c(&payload) != checksum {
        // Replaced by rename after an fsync, so never torn: damage is real.
        return Err(StoreError::Corrupt(format!(
            "{}: bad magic or checksum",
            path.display()
        )));
    }
    Ok(Some(payload))
}

/// Writes `bytes` to `name` in `directory` atomically and durably.
fn replace_file(directory: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let temp_name = format!(
        "{name}.tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let temp_path = directory.join(&temp_name);
    let mut file = File::create(&temp_path).map_err(io_error(format!("create {temp_name}")))?;
    file.write_all(bytes)
        .map_err(io_error(format!("write {temp_name}")))?;
    file.sync_all()
        .map_err(io_error(format!("fsync {temp_name}")))?;
    drop(file);
    fs::rename(&temp_path, directory.join(name))
        .map_err(io_error(format!("rename {temp_name}")))?;
    sync_directory(directory)
}

fn sync_directory(directory: &Path) -> Result<(), StoreError> {
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(format!("fsync directory {}", directory.display())))
}

fn write_log_file(directory: &Path, generation: u64, entries: &[Entry]) -> Result<(), StoreError> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&LOG_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    for entry in entries {
        append_frame(&mut bytes, entry);
    }
    replace_file(directory, LOG_FILE, &bytes)
}

fn append_frame(buffer: &mut Vec<u8>, entry: &Entry) {
    let mut writer = Writer::new();
    encode_entry(&mut writer, entry);
    let payload = writer.into_bytes();
    buffer.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("entries stay below 4 GiB")
            .to_le_bytes(),
    );
    buffer.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    buffer.extend_from_slice(&payload);
}

/// Replays `raft.log` into `core`; cuts a torn tail. Returns the log's
/// generation, or None when there is no log file.
fn recover_log(
    path: &Path,
    core: &mut LogCore,
    snapshot_generation: u64,
) -> Result<Option<u64>, StoreError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("open raft.log")(error)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io_error("read raft.log"))?;
    if bytes.len() < LOG_HEADER_SIZE {
        // Written whole by rename, so a short header is damage, not a tear.
        return Err(StoreError::Corrupt("raft.log: short header".into()));
    }
    let mut reader = Reader::new(&bytes);
    let magic = reader.u32().map_err(corrupt("raft.log"))?;
    let generation = reader.u64().map_err(corrupt("raft.log"))?;
    if magic != LOG_MAGIC {
        return Err(StoreError::Corrupt("raft.log: bad magic".into()));
    }
    if generation > snapshot_generation {
        return Err(StoreError::Corrupt(format!(
            "raft.log generation {generation} is ahead of the snapshot's {snapshot_generation}"
        )));
    }
    // A log older than the snapshot predates the snapshot's installation.
    let stale = generation < snapshot_generation;
    let mut position = LOG_HEADER_SIZE;
    loop {
        let Some(entry) = read_frame(&bytes[position..]) else {
            break;
        };
        let (entry, size) = entry;
        position += size;
        if stale || entry.index <= core.snapshot_index() {
            continue;
        }
        if entry.index > core.last_index() + 1 {
            return Err(StoreError::Corrupt(format!(
                "raft.log: entry {} after {}",
                entry.index,
                core.last_index()
            )));
        }
        core.append(&[entry]);
    }
    if stale {
        return Ok(Some(generation));
    }
    if position < bytes.len() {
        tracing::warn!(
            kept = position,
            dropped = bytes.len() - position,
            "raft.log: cutting a torn tail"
        );
        file.set_len(position as u64)
            .map_err(io_error("truncate raft.log"))?;
        file.sync_all().map_err(io_error("fsync raft.log"))?;
    }
    Ok(Some(generation))
}

/// One frame at the start of `bytes` and its size, or None if it is torn
/// or damaged.
fn read_frame(bytes: &[u8]) -> Option<(Entry, usize)> {
    if bytes.len() < FRAME_HEADER_SIZE {
        return None;
    }
    let length = usize::try_from(u32::from_le_bytes(bytes[0..4].try_into().ok()?)).ok()?;
    let checksum = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    let payload = bytes.get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE.checked_add(length)?)?;
    if crc32c::crc32c(payload) != checksum {
        return None;
    }
    let mut reader = Reader::new(payload);
    let entry = decode_entry(&mut reader).ok()?;
    reader.finish().ok()?;
    Some((entry, FRAME_HEADER_SIZE + length))
}

pub(crate) fn encode_entry(writer: &mut Writer, entry: &Entry) {
    writer.u64(entry.index);
    writer.u64(entry.term);
    writer.u8(match entry.get_entry_type() {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    });
    writer.bytes(&entry.data);
    writer.bytes(&entry.context);
}

pub(crate) fn decode_entry(reader: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let mut entry = Entry::default();
    entry.index = reader.u64()?;
    entry.term = reader.u64()?;
    entry.set_entry_type(match reader.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => {
            return Err(DecodeError::Invalid {
                what: "entry type",
                value: i64::from(other),
            });
        }
    });
    entry.data = reader.bytes()?.to_vec().into();
    entry.context = reader.bytes()?.to_vec().into();
    Ok(entry)
}

fn encode_hard_state(writer: &mut Writer, hard_state: &HardState) {
    writer.u64(hard_state.term);
    writer.u64(hard_state.vote);
    writer.u64(hard_state.commit);
}

fn encode_u64_list(writer: &mut Writer, values: &[u64]) {
    writer.count(values.len());
    for value in values {
        writer.u64(*value);
    }
}

fn decode_u64_list(reader: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let count = reader.count(8)?;
    (0..count).map(|_| reader.u64()).collect()
}

fn encode_conf_state(writer: &mut Writer, conf_state: &ConfState) {
    encode_u64_list(writer, &conf_state.voters);
    encode_u64_list(writer, &conf_state.learners);
    encode_u64_list(writer, &conf_state.voters_outgoing);
    encode_u64_list(writer, &conf_state.learners_next);
    writer.bool(conf_state.auto_leave);
}

fn decode_conf_state(reader: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    let mut conf_state = ConfState::default();
    conf_state.voters = decode_u64_list(reader)?;
    conf_state.learners = decode_u64_list(reader)?;
    conf_state.voters_outgoing = decode_u64_list(reader)?;
    conf_state.learners_next = decode_u64_list(reader)?;
    conf_state.auto_leave = reader.bool()?;
    Ok(conf_state)
}

fn decode_state(bytes: &[u8]) -> Result<State, DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut hard_state = HardState::default();
    hard_state.term = reader.u64()?;
    hard_state.vote = reader.u64()?;
    hard_state.commit = reader.u64()?;
    let conf_state = decode_conf_state(&mut reader)?;
    let catching_up = match reader.remaining() {
        0 => None,
        _ => match reader.u8()? {
            CATCHING_UP => Some(None),
            CATCHING_UP_TO => Some(Some((reader.u64()?, reader.u64()?))),
            other => {
                return Err(DecodeError::Invalid {
                    what: "catching-up marker",
                    value: i64::from(other),
                });
            }
        },
    };
    reader.finish()?;
    Ok(State {
        hard_state,
        conf_state,
        catching_up,
    })
}

fn encode_snapshot(snapshot: &Snapshot, generation: u64) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u64(generation);
    writer.u64(snapshot.get_metadata().index);
    writer.u64(snapshot.get_metadata().term);
    encode_conf_state(&mut writer, snapshot.get_metadata().get_conf_state());
    writer.bytes(&snapshot.data);
    writer.into_bytes()
}

fn decode_snapshot(bytes: &[u8]) -> Result<(Snapshot, u64), DecodeError> {
    let mut reader = Reader::new(bytes);
    let generation = reader.u64()?;
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = reader.u64()?;
    snapshot.mut_metadata().term = reader.u64()?;
    let conf_state = decode_conf_state(&mut reader)?;
    snapshot.mut_metadata().set_conf_state(conf_state);
    snapshot.data = reader.bytes()?.to_vec().into();
    reader.finish()?;
    Ok((snapshot, generation))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.index = index;
        entry.term = term;
        entry.data = format!("entry {index} term {term}").into_bytes().into();
        entry
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-raft-store-{name}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        let mut state = HardState::default();
        state.term = term;
        state.vote = vote;
        state.commit = commit;
        state
    }

    #[test]
    fn a_restart_finds_what_was_synced() {
        let dir = temp_dir("restart");
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        store.set_hard_state(&hard_state(1, 2, 2)).unwrap();
        store.sync().unwrap();
        // A new leader replaces the tail.
        store.append(&[entry(3, 2), entry(4, 2)]).unwrap();
        store.set_hard_state(&hard_state(2, 3, 4)).unwrap();
        store.sync().unwrap();
        // Not synced: lost at the restart.
        store.append(&[entry(5, 2)]).unwrap();
        let before = store.core().clone();
        drop(store);
        let store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(store.last_index().unwrap(), 4);
        assert_eq!(store.term(3).unwrap(), 2);
        assert_eq!(store.core().entries[..], before.entries[..4]);
        assert_eq!(store.core().hard_state, hard_state(2, 3, 4));
        assert_eq!(
            store.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_length() {
        let dir = temp_dir("torn");
        let mut store = FileRaftStore::open(&dir, &[1]).unwrap();
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.sync().unwrap();
        store.append(&[entry(3, 1)]).unwrap();
        store.sync().unwrap();
        drop(store);
        let log_path = dir.join(LOG_FILE);
        let full = fs::read(&log_path).unwrap();
        let third_frame_start = full.len() - {
            let mut buffer = Vec::new();
            append_frame(&mut buffer, &entry(3, 1));
            buffer.len()
        };
        for cut in third_frame_start..full.len() {
            fs::write(&log_path, &full[..cut]).unwrap();
            let store = FileRaftStore::open(&dir, &[1]).unwrap();
            assert_eq!(store.last_index().unwrap(), 2, "cut at {cut}");
            drop(store);
            assert_eq!(fs::read(&log_path).unwrap().len(), third_frame_start);
        }
        // A damaged byte in the last frame is a tear too.
        let mut damaged = full.clone();
        *damaged.last_mut().unwrap() ^= 0xff;
        fs::write(&log_path, &damaged).unwrap();
        let mut store = FileRaftStore::open(&dir, &[1]).unwrap();
        assert_eq!(store.last_index().unwrap(), 2);
        // And the log goes on after the cut.
        store.append(&[entry(3, 2)]).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = FileRaftStore::open(&dir, &[1]).unwrap();
        assert_eq!(store.term(3).unwrap(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_and_installed_snapshots_survive_restarts() {
        let dir = temp_dir("snapshot");
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        store
            .append(&(1..=5).map(|index| entry(index, 1)).collect::<Vec<_>>())
            .unwrap();
        store.set_hard_state(&hard_state(1, 1, 5)).unwrap();
        store.sync().unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 1;
        snapshot
            .mut_metadata()
            .set_conf_state(store.core().conf_state.clone());
        snapshot.data = b"image at 3".to_vec().into();
        store.compact(snapshot.clone()).unwrap();
        drop(store);
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(store.first_index().unwrap(), 4);
        assert_eq!(store.last_index().unwrap(), 5);
        assert_eq!(store.snapshot(0, 0).unwrap(), snapshot);

        // A leader's snapshot far ahead replaces the whole log.
        let mut installed = Snapshot::default();
        installed.mut_metadata().index = 9;
        installed.mut_metadata().term = 3;
        installed
            .mut_metadata()
            .set_conf_state(store.core().conf_state.clone());
        installed.data = b"image at 9".to_vec().into();
        store.apply_snapshot(&installed).unwrap();
        store.sync().unwrap();
        store.append(&[entry(10, 3)]).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(store.first_index().unwrap(), 10);
        assert_eq!(store.last_index().unwrap(), 10);
        assert_eq!(store.snapshot(0, 0).unwrap().data, installed.data);
        assert_eq!(store.core().hard_state.commit, 9);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_between_an_installed_snapshot_and_the_new_log_ignores_the_old_log() {
        let dir = temp_dir("stale-log");
        let mut store = FileRaftStore::open(&dir, &[1]).unwrap();
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.sync().unwrap();
        let mut installed = Snapshot::default();
        installed.mut_metadata().index = 1;
        installed.mut_metadata().term = 2;
        installed
            .mut_metadata()
            .set_conf_state(store.core().conf_state.clone());
        store.apply_snapshot(&installed).unwrap();
        // The snapshot file of the next generation is written, the log not.
        store.write_snapshot(store.generation + 1).unwrap();
        drop(store);
        let store = FileRaftStore::open(&dir, &[1]).unwrap();
        assert_eq!(store.first_index().unwrap(), 2);
        assert_eq!(
            store.last_index().unwrap(),
            1,
            "entry 2 predates the snapshot"
        );
        assert_eq!(
            store.core().hard_state.commit,
            1,
            "the snapshot is committed"
        );
        assert_eq!(store.core().hard_state.term, 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_catching_up_marker_survives_reopens_until_a_synced_clear() {
        let dir = temp_dir("catching-up");
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(store.core().catching_up, None);
        store.mark_catching_up(None).unwrap();
        // Durable on return: no sync.
        drop(store);
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(
            store.core().catching_up,
            Some(None),
            "the marker survives a reopen"
        );
        // A leader's first append: its target is durable on its own, the
        // entries and hard state written after it are not.
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.set_hard_state(&hard_state(1, 0, 2)).unwrap();
        store.mark_catching_up(Some((1, 3))).unwrap();
        drop(store);
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(store.core().catching_up, Some(Some((1, 3))));
        assert_eq!(store.last_index().unwrap(), 0);
        assert_eq!(store.core().hard_state, HardState::default());
        // Part of the log arrives and is synced; the voter has not caught
        // up yet.
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.set_hard_state(&hard_state(1, 0, 2)).unwrap();
        store.sync().unwrap();
        drop(store);
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(
            store.core().catching_up,
            Some(Some((1, 3))),
            "entries do not clear it"
        );
        assert_eq!(store.last_index().unwrap(), 2);
        // Caught up, cleared, and the process dies before the sync.
        store.append(&[entry(3, 1)]).unwrap();
        store.clear_catching_up();
        assert_eq!(store.core().catching_up, None);
        drop(store);
        let mut store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(
            store.core().catching_up,
            Some(Some((1, 3))),
            "a crash before the clear's sync keeps it"
        );
        assert_eq!(store.last_index().unwrap(), 2);
        // The clear goes out with the sync, after the entries.
        store.append(&[entry(3, 1)]).unwrap();
        store.clear_catching_up();
        store.sync().unwrap();
        drop(store);
        let store = FileRaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(
            store.core().catching_up,
            None,
            "the synced clear survives a reopen"
        );
        assert_eq!(store.last_index().unwrap(), 3);
        assert_eq!(store.core().hard_state, hard_state(1, 0, 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_without_the_marker_reads_as_caught_up_and_a_bad_marker_is_refused() {
        let dir = temp_dir("marker-format");
        let mut store = FileRaftStore::open(&dir, &[1]).unwrap();
        store.set_hard_state(&hard_state(4, 1, 0)).unwrap();
        store.sync().unwrap();
        drop(store);
        // As an earlier version wrote it: hard state and conf state only.
        let mut writer = Writer::new();
        encode_hard_state(&mut writer, &hard_state(4, 1, 0));
        let mut conf_state = ConfState::default();
        conf_state.voters = vec![1];
        encode_conf_state(&mut writer, &conf_state);
        let payload = writer.into_bytes();
        assert_eq!(
            fs::read(dir.join(STATE_FILE)).unwrap(),
            frame_file(STATE_MAGIC, &payload),
            "a store not catching up writes the earlier format"
        );
        let store = FileRaftStore::open(&dir, &[1]).unwrap();
        assert_eq!(store.core().catching_up, None);
        drop(store);
        let mut damaged = payload.clone();
        damaged.push(3);
        fs::write(dir.join(STATE_FILE), frame_file(STATE_MAGIC, &damaged)).unwrap();
        assert!(matches!(
            FileRaftStore::open(&dir, &[1]),
            Err(StoreError::Corrupt(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_voters_are_refused() {
        let dir = temp_dir("voters");
        drop(FileRaftStore::open(&dir, &[1, 2, 3]).unwrap());
        assert!(matches!(
            FileRaftStore::open(&dir, &[1]),
            Err(StoreError::Corrupt(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
