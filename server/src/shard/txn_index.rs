//! The files a partition's transaction state (txn_state.rs) keeps next to
//! its segments, so that an open after a crash reads a snapshot, the
//! aborted-transaction indexes and only the log's tail, not the whole log
//! (Kafka's `.txnindex` files and producer snapshots; formats in
//! docs/internals/storage-format.md, "Transaction index and snapshots").
//!
//! - `<base>.txnindex`, one per segment holding abort markers: the aborted
//!   transactions (producer id, first offset, marker offset) whose marker
//!   lies in the segment, in marker order. Rewritten whole (temporary file,
//!   fsync, rename, directory fsync) when its entries changed; removed by
//!   the engine with its segment (retention, DeleteRecords, truncation).
//! - `<offset>.txnsnapshot`: the state as of `offset` (every batch below it
//!   fed): open transactions, ended ones not yet known stable, the leader
//!   epoch of the offset before it, and the segments whose index files it
//!   vouches for, with how many entries each held below `offset`.
//!
//! Invariants:
//! - a snapshot at `S` is written only once the log is durable up to `S`
//!   and every index file it vouches for is durable with every entry below
//!   `S` (they are written first); later index rewrites only add entries,
//!   drop entries of removed markers (compaction; durably before the
//!   pass removes any marker) or of markers below the log start
//!   (retention, DeleteRecords), or follow a truncation, which deletes the
//!   snapshots at or above the cut first. So a snapshot's count per
//!   segment bounds the file's entries below `S` from above, and a file
//!   gone since (every entry dropped) holds none;
//! - a snapshot is trusted only if its checksum and version are right, it
//!   lies within the log (`log start <= S <= log end`), and the leader
//!   epoch of offset `S - 1` in the log's leader-epoch cache is the one it
//!   recorded: two logs holding the same epoch at an offset hold the same
//!   batches up to it (the property replication's truncation relies on), so
//!   a log cut and regrown past `S` by another leader is caught even if the
//!   deletion of its snapshots was lost in a crash;
//! - index entries at or above the trusted snapshot's offset are ignored
//!   (they may describe a tail the crash lost); that tail is scanned again.
//!
//! Everything here but [`write_durably`] is free of I/O (encode, decode,
//! selection), for unit tests; the shard-side I/O is in txn_state.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_engine::{LeaderEpoch, Offset, segment};

use crate::controller::codec::{Reader, Writer};
use crate::shard::producer_state::ProducerId;
use crate::shard::txn_state::{AbortedTxn, EndedTxn};

const INDEX_MAGIC: &[u8; 4] = b"SLTI";
const INDEX_VERSION: u16 = 0;
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLTS";
/// Version 1 adds the idempotent producer table; version 0 (without it)
/// is still read.
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_SUFFIX: &str = ".txnsnapshot";
const INDEX_SUFFIX: &str = ".txnindex";

/// Snapshots kept per partition: the newest is used; older ones are a
/// fallback should the newest fail its checks.
pub const SNAPSHOTS_RETAINED: usize = 3;

/// Why an index or snapshot file is not trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnFileError {
    #[error("bad magic or checksum")]
    Checksum,
    #[error("unknown version {0}")]
    Version(u16),
    #[error("malformed content: {0}")]
    Malformed(&'static str),
}

/// `dir/<offset>.txnsnapshot`.
pub fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{}{SNAPSHOT_SUFFIX}", segment::file_stem(offset)))
}

/// The offset a snapshot file name carries (`None`: not a snapshot).
pub fn parse_snapshot_name(name: &str) -> Option<Offset> {
    parse_stem(name.strip_suffix(SNAPSHOT_SUFFIX)?)
}

/// The segment base an index file name carries (`None`: not an index).
pub fn parse_index_name(name: &str) -> Option<Offset> {
    parse_stem(name.strip_suffix(INDEX_SUFFIX)?)
}

fn parse_stem(stem: &str) -> Option<Offset> {
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse::<i64>().ok().map(Offset)
}

fn seal(magic: &[u8; 4], payload: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

fn unseal<'a>(magic: &[u8; 4], bytes: &'a [u8]) -> Result<&'a [u8], TxnFileError> {
    let (found, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(TxnFileError::Checksum)?;
    let (crc, payload) = rest
        .split_first_chunk::<4>()
        .ok_or(TxnFileError::Checksum)?;
    if found != magic || u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return Err(TxnFileError::Checksum);
    }
    Ok(payload)
}

fn malformed<E>(what: &'static str) -> impl FnOnce(E) -> TxnFileError {
    move |_| TxnFileError::Malformed(what)
}

/// The index file of the segment at `base`: `entries` are its aborted
/// transactions in marker order, every marker at or above `base`.
pub fn encode_index(base: Offset, entries: &[AbortedTxn]) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u16(INDEX_VERSION);
    writer.i64(base.value());
    writer.count(entries.len());
    for entry in entries {
        assert!(entry.last_offset >= base && entry.first_offset <= entry.last_offset);
        writer.i64(entry.producer_id.0);
        writer.i64(entry.first_offset.value());
        writer.i64(entry.last_offset.value());
    }
    seal(INDEX_MAGIC, writer.into_bytes())
}

/// Decode the index file of the segment at `base`, checking its checksum,
/// version, base, and that markers are in order within the segment.
pub fn decode_index(base: Offset, bytes: &[u8]) -> Result<Vec<AbortedTxn>, TxnFileError> {
    let payload = unseal(INDEX_MAGIC, bytes)?;
    let mut reader = Reader::new(payload);
    let version = reader.u16().map_err(malformed("version"))?;
    if version != INDEX_VERSION {
        return Err(TxnFileError::Version(version));
    }
    if reader.i64().map_err(malformed("base"))? != base.value() {
        return Err(TxnFileError::Malformed("base differs from the file name"));
    }
    let count = reader.count(24).map_err(malformed("count"))?;
    let mut entries: Vec<AbortedTxn> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = AbortedTxn {
            producer_id: ProducerId(reader.i64().map_err(malformed("entry"))?),
            first_offset: Offset(reader.i64().map_err(malformed("entry"))?),
            last_offset: Offset(reader.i64().map_err(malformed("entry"))?),
        };
        let ordered = entries
            .last()
            .is_none_or(|previous| previous.last_offset < entry.last_offset);
        if entry.last_offset < base || entry.first_offset > entry.last_offset || !ordered {
            return Err(TxnFileError::Malformed("entry out of order or range"));
        }
        entries.push(entry);
    }
    reader.finish().map_err(malformed("trailing bytes"))?;
    Ok(entries)
}

/// The transaction state as of `end_offset`, without the aborted list
/// (which lives in the index files `covered` names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnSnapshot {
    pub end_offset: Offset,
    /// The partitionLeaderEpoch of the last batch below `end_offset`
    /// (`None` only when `end_offset` is 0).
    pub last_epoch: Option<LeaderEpoch>,
    pub open: BTreeMap<ProducerId, Offset>,
    pub unstable: Vec<EndedTxn>,
    /// (segment base, entries of its index below `end_offset`) for every
    /// segment below `end_offset` when the snapshot was written; a segment
    /// with entries has a durable index file holding at least those (fewer
    /// only once compaction removed markers).
    pub covered: Vec<(Offset, u32)>,
    /// The partition's idempotent producer table with every batch below
    /// `end_offset` fed (`ProducerStateTable::encode_persisted`, decoded by
    /// the open that trusts the snapshot); `None` in version 0 files, or
    /// when the table was not at `end_offset` when the state was captured.
    pub producers: Option<Vec<u8>>,
}

pub fn encode_snapshot(snapshot: &TxnSnapshot) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u16(SNAPSHOT_VERSION);
    writer.i64(snapshot.end_offset.value());
    writer.i32(snapshot.last_epoch.map_or(-1, |epoch| epoch.0));
    writer.count(snapshot.open.len());
    for (producer, first) in &snapshot.open {
        writer.i64(producer.0);
        writer.i64(first.value());
    }
    writer.count(snapshot.unstable.len());
    for ended in &snapshot.unstable {
        writer.i64(ended.producer_id.0);
        writer.i64(ended.first_offset.value());
        writer.i64(ended.marker_offset.value());
    }
    writer.count(snapshot.covered.len());
    for (base, count) in &snapshot.covered {
        writer.i64(base.value());
        writer.u32(*count);
    }
    writer.option(snapshot.producers.as_ref(), |writer, table| {
        writer.bytes(table);
    });
    seal(SNAPSHOT_MAGIC, writer.into_bytes())
}

/// Decode the snapshot file named by `offset` (checksum, version, name).
pub fn decode_snapshot(offset: Offset, bytes: &[u8]) -> Result<TxnSnapshot, TxnFileError> {
    let payload = unseal(SNAPSHOT_MAGIC, bytes)?;
    let mut reader = Reader::new(payload);
    let version = reader.u16().map_err(malformed("version"))?;
    if version > SNAPSHOT_VERSION {
        return Err(TxnFileError::Version(version));
    }
    let end_offset = Offset(reader.i64().map_err(malformed("end offset"))?);
    if end_offset != offset {
        return Err(TxnFileError::Malformed(
            "end offset differs from the file name",
        ));
    }
    let epoch = reader.i32().map_err(malformed("epoch"))?;
    let last_epoch = (epoch >= 0).then_some(LeaderEpoch(epoch));
    let mut open = BTreeMap::new();
    for _ in 0..reader.count(16).map_err(malformed("open count"))? {
        let producer = ProducerId(reader.i64().map_err(malformed("open"))?);
        let first = Offset(reader.i64().map_err(malformed("open"))?);
        if first >= end_offset {
            return Err(TxnFileError::Malformed("open transaction beyond the end"));
        }
        open.insert(producer, first);
    }
    let mut unstable = Vec::new();
    for _ in 0..reader.count(24).map_err(malformed("unstable count"))? {
        let ended = EndedTxn {
            producer_id: ProducerId(reader.i64().map_err(malformed("unstable"))?),
            first_offset: Offset(reader.i64().map_err(malformed("unstable"))?),
            marker_offset: Offset(reader.i64().map_err(malformed("unstable"))?),
        };
        if ended.marker_offset >= end_offset || ended.first_offset > ended.marker_offset {
            return Err(TxnFileError::Malformed("ended transaction beyond the end"));
        }
        unstable.push(ended);
    }
    let mut covered: Vec<(Offset, u32)> = Vec::new();
    for _ in 0..reader.count(12).map_err(malformed("covered count"))? {
        let base = Offset(reader.i64().map_err(malformed("covered"))?);
        let count = reader.u32().map_err(malformed("covered"))?;
        if covered
            .last()
            .is_some_and(|(previous, _)| *previous >= base)
            || base >= end_offset
        {
            return Err(TxnFileError::Malformed("covered segments out of order"));
        }
        covered.push((base, count));
    }
    let producers = if version == 0 {
        None
    } else {
        reader
            .option(|reader| reader.bytes().map(<[u8]>::to_vec))
            .map_err(malformed("producer table"))?
    };
    reader.finish().map_err(malformed("trailing bytes"))?;
    Ok(TxnSnapshot {
        end_offset,
        last_epoch,
        open,
        unstable,
        covered,
        producers,
    })
}

/// The snapshot offsets worth trying for a log spanning
/// `log_start..log_end`, newest first: within the log, and not at the log
/// start unless the log is empty there (no epoch to check it against).
pub fn snapshot_candidates(on_disk: &[Offset], log_start: Offset, log_end: Offset) -> Vec<Offset> {
    let mut candidates: Vec<Offset> = on_disk
        .iter()
        .copied()
        .filter(|&offset| offset >= log_start && offset <= log_end)
        .filter(|&offset| offset > log_start || offset == Offset::ZERO)
        .collect();
    candidates.sort_unstable_by(|left, right| right.cmp(left));
    candidates
}

/// The leader epoch of `offset` according to a leader-epoch cache's
/// `(epoch, start offset)` entries (oldest first): the last epoch starting
/// at or before it.
pub fn epoch_at(entries: &[(LeaderEpoch, Offset)], offset: Offset) -> Option<LeaderEpoch> {
    entries
        .iter()
        .rev()
        .find(|(_, start)| *start <= offset)
        .map(|(epoch, _)| *epoch)
}

/// Whether `snapshot` agrees with the log's leader-epoch cache (module
/// docs).
pub fn epoch_matches(snapshot: &TxnSnapshot, entries: &[(LeaderEpoch, Offset)]) -> bool {
    if snapshot.end_offset == Offset::ZERO {
        return true;
    }
    let before = Offset(snapshot.end_offset.value() - 1);
    snapshot.last_epoch.is_some() && epoch_at(entries, before) == snapshot.last_epoch
}

/// The base of the segment holding `offset`, given the bases in order.
pub fn segment_of(bases: &[Offset], offset: Offset) -> Option<Offset> {
    let count = bases.partition_point(|base| *base <= offset);
    bases.get(count.checked_sub(1)?).copied()
}

/// The entries of `aborted` (in marker order) whose marker lies in the
/// segment at `bases[index]`.
pub fn entries_of_segment<'a>(
    aborted: &'a [AbortedTxn],
    bases: &[Offset],
    index: usize,
) -> &'a [AbortedTxn] {
    let start = aborted.partition_point(|entry| entry.last_offset < bases[index]);
    let end = match bases.get(index + 1) {
        Some(next) => aborted.partition_point(|entry| entry.last_offset < *next),
        None => aborted.len(),
    };
    &aborted[start..end.max(start)]
}

/// Write `data` to `path` durably with the standard library (temporary
/// `.tmp` file, fsync, rename, directory fsync), for the clean-stop path,
/// which runs after the shard's I/O is done with the log.
pub fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn aborted(producer: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: ProducerId(producer),
            first_offset: Offset(first),
            last_offset: Offset(last),
        }
    }

    #[test]
    fn an_index_round_trips_and_a_damaged_one_is_refused() {
        let entries = vec![aborted(7, 90, 100), aborted(8, 101, 105)];
        let bytes = encode_index(Offset(100), &entries);
        assert_eq!(decode_index(Offset(100), &bytes).unwrap(), entries);
        assert_eq!(
            decode_index(Offset(100), &encode_index(Offset(100), &[])).unwrap(),
            vec![]
        );
        // Named for another segment: refused.
        assert!(decode_index(Offset(90), &bytes).is_err());
        // Any flipped bit: refused.
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert!(
                decode_index(Offset(100), &damaged).is_err(),
                "byte {position}"
            );
        }
        // Cut short: refused.
        for length in 0..bytes.len() {
            assert!(decode_index(Offset(100), &bytes[..length]).is_err());
        }
    }

    #[test]
    fn entries_out_of_order_or_below_the_segment_are_refused() {
        let mut writer = Writer::new();
        writer.u16(INDEX_VERSION);
        writer.i64(100);
        writer.count(2);
        for (producer, first, last) in [(7, 90, 105), (8, 101, 102)] {
            writer.i64(producer);
            writer.i64(first);
            writer.i64(last);
        }
        let bytes = seal(INDEX_MAGIC, writer.into_bytes());
        assert_eq!(
            decode_index(Offset(100), &bytes),
            Err(TxnFileError::Malformed("entry out of order or range"))
        );
    }

    #[test]
    fn a_snapshot_round_trips_and_checks_its_name() {
        let snapshot = TxnSnapshot {
            end_offset: Offset(200),
            last_epoch: Some(LeaderEpoch(3)),
            open: BTreeMap::from([(ProducerId(9), Offset(150))]),
            unstable: vec![EndedTxn {
                producer_id: ProducerId(7),
                first_offset: Offset(120),
                marker_offset: Offset(190),
            }],
            covered: vec![(Offset(0), 0), (Offset(100), 2)],
            producers: Some(vec![1, 2, 3]),
        };
        let bytes = encode_snapshot(&snapshot);
        assert_eq!(decode_snapshot(Offset(200), &bytes).unwrap(), snapshot);
        assert!(decode_snapshot(Offset(100), &bytes).is_err());
        let mut damaged = bytes.clone();
        damaged[12] ^= 1;
        assert_eq!(
            decode_snapshot(Offset(200), &damaged),
            Err(TxnFileError::Checksum)
        );
        let without = TxnSnapshot {
            producers: None,
            ..snapshot
        };
        let bytes = encode_snapshot(&without);
        assert_eq!(decode_snapshot(Offset(200), &bytes).unwrap(), without);
    }

    /// Version 0 files (before the producer table) are still read, as
    /// snapshots without a producer table; a newer version is refused.
    #[test]
    fn a_version_0_snapshot_is_read_without_a_producer_table() {
        let mut writer = Writer::new();
        writer.u16(0);
        writer.i64(200);
        writer.i32(3);
        writer.count(1);
        writer.i64(9);
        writer.i64(150);
        writer.count(0);
        writer.count(1);
        writer.i64(0);
        writer.u32(0);
        let bytes = seal(SNAPSHOT_MAGIC, writer.into_bytes());
        let snapshot = decode_snapshot(Offset(200), &bytes).unwrap();
        assert_eq!(
            snapshot.open,
            BTreeMap::from([(ProducerId(9), Offset(150))])
        );
        assert_eq!(snapshot.covered, vec![(Offset(0), 0)]);
        assert_eq!(snapshot.producers, None);

        let mut writer = Writer::new();
        writer.u16(SNAPSHOT_VERSION + 1);
        writer.i64(200);
        let bytes = seal(SNAPSHOT_MAGIC, writer.into_bytes());
        assert_eq!(
            decode_snapshot(Offset(200), &bytes),
            Err(TxnFileError::Version(SNAPSHOT_VERSION + 1))
        );
    }

    #[test]
    fn names_parse_back() {
        let dir = Path::new("/data/topic-0");
        let path = snapshot_path(dir, Offset(42));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.txnsnapshot");
        assert_eq!(parse_snapshot_name(name), Some(Offset(42)));
        assert_eq!(
            parse_index_name("00000000000000000042.txnindex"),
            Some(Offset(42))
        );
        assert_eq!(parse_index_name("00000000000000000042.index"), None);
        assert_eq!(parse_snapshot_name("42.txnsnapshot"), None);
        assert_eq!(
            parse_snapshot_name("00000000000000000042.txnsnapshot.tmp"),
            None
        );
    }

    #[test]
    fn the_newest_snapshot_within_the_log_is_tried_first() {
        let on_disk = [Offset(100), Offset(300), Offset(200), Offset(50)];
        assert_eq!(
            snapshot_candidates(&on_disk, Offset(60), Offset(250)),
            vec![Offset(200), Offset(100)],
            "beyond the log end (a lost tail) or below its start: not tried"
        );
        assert_eq!(
            snapshot_candidates(&on_disk, Offset(100), Offset(400)),
            vec![Offset(300), Offset(200)],
            "at the log start: no epoch to check it against"
        );
        assert_eq!(
            snapshot_candidates(&[Offset(0)], Offset(0), Offset(0)),
            vec![Offset(0)]
        );
    }

    #[test]
    fn a_snapshot_is_trusted_only_with_the_logs_epoch_before_it() {
        let entries = [(LeaderEpoch(1), Offset(0)), (LeaderEpoch(4), Offset(150))];
        let mut snapshot = TxnSnapshot {
            end_offset: Offset(150),
            last_epoch: Some(LeaderEpoch(1)),
            open: BTreeMap::new(),
            unstable: Vec::new(),
            covered: Vec::new(),
            producers: None,
        };
        assert!(epoch_matches(&snapshot, &entries));
        // The log was cut below 150 and regrown by epoch 4's leader.
        snapshot.end_offset = Offset(160);
        assert!(!epoch_matches(&snapshot, &entries));
        snapshot.last_epoch = Some(LeaderEpoch(4));
        assert!(epoch_matches(&snapshot, &entries));
        snapshot.last_epoch = None;
        assert!(!epoch_matches(&snapshot, &entries));
        assert_eq!(epoch_at(&entries, Offset(149)), Some(LeaderEpoch(1)));
        assert_eq!(epoch_at(&[(LeaderEpoch(2), Offset(10))], Offset(9)), None);
    }

    #[test]
    fn entries_are_split_by_segment() {
        let bases = [Offset(0), Offset(100), Offset(200)];
        let entries = [
            aborted(1, 0, 5),
            aborted(2, 50, 100),
            aborted(3, 150, 199),
            aborted(4, 201, 210),
        ];
        assert_eq!(entries_of_segment(&entries, &bases, 0), &entries[..1]);
        assert_eq!(entries_of_segment(&entries, &bases, 1), &entries[1..3]);
        assert_eq!(entries_of_segment(&entries, &bases, 2), &entries[3..]);
        assert_eq!(segment_of(&bases, Offset(99)), Some(Offset(0)));
        assert_eq!(segment_of(&bases, Offset(250)), Some(Offset(200)));
        assert_eq!(segment_of(&[Offset(10)], Offset(5)), None);
    }
}
