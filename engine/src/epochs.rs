//! The leader-epoch cache of one partition log (Kafka KIP-101 / KIP-279):
//! for every leader epoch that appended to the log, the offset of its first
//! batch, and its checkpoint file `leader-epoch-checkpoint`.
//!
//! Owned by the log's `LogState` (log.rs), on the log's shard thread.
//!
//! Entries `(epoch, start offset)` strictly increase in both fields. An
//! append adds `(epoch, base offset)` for a batch whose epoch is above the
//! last entry's (the hot path compares two integers); `truncate_to` drops
//! entries at or past the new end; a log start moving forward drops entries
//! wholly before it and raises the first kept one's start to it (Kafka's
//! `truncateFromStart`). Compaction removes batches but never moves offsets,
//! so it leaves the cache alone: an entry may name an offset whose batch was
//! compacted away, and still says where the epoch began.
//!
//! File format (Kafka's, text): a line `0` (the version), a line with the
//! entry count, then one line `<epoch> <start offset>` per entry. Replaced
//! with `Io::write_file_atomic` (temporary file of its own, fsync, rename,
//! fsync of the directory).
//!
//! Durability rule: when the log reports a batch durable (`durable_end`
//! covers it and its append completion resolves), the checkpoint file on
//! disk holds an entry for the batch's epoch whose start is at or below the
//! batch's base offset. The flush writes the file (only when the entries
//! changed since the last write) before it writes the data it covers, and
//! `truncate_to` writes it before returning. Entries past the durable data
//! are harmless: open drops entries at or past the recovered log end. A
//! missing or damaged file (logged, never fatal), or one older than the
//! log's last batch, is replaced by a rebuild from the batch headers
//! ([`rebuild`]), which is also how logs written before this file existed
//! get one.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::constants::BATCH_HEADER_SIZE;
use crate::io::Io;
use crate::segment::buffer::{page_ceil, page_floor};
use crate::types::{LeaderEpoch, Offset};

/// Name of the checkpoint file in the log directory (Kafka's name).
pub const CHECKPOINT_FILE_NAME: &str = "leader-epoch-checkpoint";

/// The checkpoint file of the log in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE_NAME)
}

/// The only version of the file format (Kafka's).
const CHECKPOINT_VERSION: i64 = 0;

/// Bytes read at once while scanning consecutive batch headers.
const SCAN_WINDOW_BYTES: u64 = 64 << 10;

/// One entry: `epoch` appended its first batch at `start_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// The cache; see the module docs for its invariants.
#[derive(Clone, Debug, Default)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    /// Counts changes, so the flush can tell cheaply whether the file is
    /// stale.
    generation: u64,
}

impl LeaderEpochCache {
    /// A cache holding `entries`; `None` unless both fields strictly
    /// increase and none is negative.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Option<LeaderEpochCache> {
        let valid = entries
            .iter()
            .all(|entry| entry.epoch.0 >= 0 && entry.start_offset.value() >= 0)
            && entries.windows(2).all(|pair| {
                pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset
            });
        valid.then_some(LeaderEpochCache {
            entries,
            generation: 0,
        })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Changes so far (not persisted: a fresh cache starts at 0).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Note a batch of `epoch` starting at `start_offset`, appended after
    /// every batch the cache knows: a new entry when the epoch is above the
    /// latest. Callers refuse lower epochs before appending (asserted).
    /// Entries starting at or after `start_offset` are replaced (Kafka's
    /// `assign`: possible only when the log start was raised to the end).
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        if let Some(latest) = self.latest() {
            assert!(
                epoch >= latest.epoch,
                "leader epoch {} appended after epoch {}",
                epoch.0,
                latest.epoch.0
            );
            if epoch == latest.epoch {
                return;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|entry| entry.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.generation += 1;
    }

    /// The log end moved back to `end`: drop entries starting at or after it.
    pub fn truncate_to_end(&mut self, end: Offset) {
        let keep = self
            .entries
            .partition_point(|entry| entry.start_offset < end);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.generation += 1;
        }
    }

    /// The log start moved forward to `start`: drop entries wholly before
    /// it; the first kept entry starts at `start` at the earliest.
    pub fn truncate_to_start(&mut self, start: Offset) {
        let at_or_before = self
            .entries
            .partition_point(|entry| entry.start_offset <= start);
        let Some(first_kept) = at_or_before.checked_sub(1) else {
            return;
        };
        let mut changed = first_kept > 0;
        self.entries.drain(..first_kept);
        if self.entries[0].start_offset < start {
            self.entries[0].start_offset = start;
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
    }

    /// KIP-279's answer to OffsetForLeaderEpoch: for a `requested` epoch at
    /// or above the latest, (latest epoch, `log_end`); otherwise the largest
    /// cached epoch at or below `requested` and its end (the start of the
    /// next entry). `None` (Kafka's UNDEFINED_EPOCH and UNDEFINED_OFFSET)
    /// when the cache is empty or `requested` is below every cached epoch.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let latest = self.latest()?;
        if requested >= latest.epoch {
            return Some((latest.epoch, log_end));
        }
        let higher = self
            .entries
            .partition_point(|entry| entry.epoch <= requested);
        let floor = self.entries.get(higher.checked_sub(1)?)?;
        let next = self.entries.get(higher)?;
        Some((floor.epoch, next.start_offset))
    }

    /// Kafka's answer to a client's OffsetForLeaderEpoch
    /// (`LeaderEpochFileCache.endOffsetFor`): as [`Self::end_offset_for`],
    /// and for a `requested` epoch below every cached one, (`requested`, the
    /// first cached entry's start): the log holds nothing of that epoch, and
    /// nothing before that offset (its start moved past them). A consumer
    /// whose position is at or below that offset has lost nothing; an
    /// undefined answer would make it reset its position. `None` for a
    /// negative `requested` or an empty cache.
    ///
    /// A leader answers its followers' sync probes with this too
    /// (`replication::progress::sync_step`); a follower's own side of a
    /// truncation uses [`Self::end_offset_for`], where "below every cached
    /// epoch" means no epoch in common.
    pub fn end_offset_for_client(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested.0 < 0 {
            return None;
        }
        self.end_offset_for(requested, log_end)
            .or_else(|| Some((requested, self.entries.first()?.start_offset)))
    }

    /// The epoch of the batch holding `offset`: the last entry starting at
    /// or before it (`None` before the first entry).
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        let after = self
            .entries
            .partition_point(|entry| entry.start_offset <= offset);
        Some(self.entries.get(after.checked_sub(1)?)?.epoch)
    }

    /// The start offset of exactly `epoch`, if cached.
    pub fn start_offset_of(&self, epoch: LeaderEpoch) -> Option<Offset> {
        let at = self
            .entries
            .binary_search_by(|entry| entry.epoch.cmp(&epoch))
            .ok()?;
        Some(self.entries[at].start_offset)
    }

    /// The file's bytes (module docs).
    pub fn encode(&self) -> Vec<u8> {
        encode_entries(&self.entries)
    }
}

/// The file's bytes for `entries` (module docs).
pub fn encode_entries(entries: &[EpochEntry]) -> Vec<u8> {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for entry in entries {
        text.push_str(&format!(
            "{} {}\n",
            entry.epoch.0,
            entry.start_offset.value()
        ));
    }
    text.into_bytes()
}

/// Parse a checkpoint file; `Err` says what is wrong with it. Accepts what
/// Kafka writes (and a missing final newline); refuses anything else,
/// including entries that do not strictly increase.
pub fn decode(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let version = lines.next().ok_or("empty file")?;
    if version.trim().parse::<i64>() != Ok(CHECKPOINT_VERSION) {
        return Err(format!("unknown version line {version:?}"));
    }
    let count_line = lines.next().ok_or("no entry count")?;
    let count: usize = count_line
        .trim()
        .parse()
        .map_err(|_| format!("bad entry count {count_line:?}"))?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let line = lines.next().ok_or("fewer entries than counted")?;
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("bad entry line {line:?}"));
        };
        let epoch: i32 = epoch
            .parse()
            .map_err(|_| format!("bad epoch in {line:?}"))?;
        let start: i64 = start
            .parse()
            .map_err(|_| format!("bad start offset in {line:?}"))?;
        entries.push(EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(start),
        });
    }
    if lines.any(|line| !line.trim().is_empty()) {
        return Err("more entries than counted".to_string());
    }
    LeaderEpochCache::from_entries(entries)
        .ok_or_else(|| "entries do not strictly increase".to_string())
}

/// What [`rebuild`] needs of one segment: its durable bytes and its sparse
/// index (positions of batch starts).
pub(crate) struct SegmentSource<F> {
    pub file: Option<F>,
    /// Bytes of valid batches in the file.
    pub size: u64,
    /// Byte positions of indexed batches, increasing.
    pub batch_positions: Vec<u64>,
}

/// Rebuild the cache from the batch headers of `segments` (oldest first).
///
/// Epochs never decrease along the log, so the scan bisects between the
/// sparse index's batch positions: where the epochs at both ends of a range
/// are equal, no batch inside can start a new epoch and the range is
/// skipped. Only where an epoch changes are consecutive headers read. The
/// cost is a few header reads per segment plus a short scan per epoch
/// change, whatever the segment size.
pub(crate) async fn rebuild<I: Io>(
    io: &I,
    segments: &[SegmentSource<I::File>],
) -> io::Result<LeaderEpochCache> {
    let mut cache = LeaderEpochCache::default();
    for segment in segments {
        let Some(file) = &segment.file else { continue };
        if segment.size == 0 {
            continue;
        }
        let mut reader = HeaderReader {
            io,
            file,
            size: segment.size,
            window: None,
        };
        let mut points: Vec<u64> = Vec::with_capacity(segment.batch_positions.len() + 1);
        points.push(0);
        points.extend(
            segment
                .batch_positions
                .iter()
                .copied()
                .filter(|&position| position > 0 && position < segment.size),
        );
        let mut epochs = Vec::with_capacity(points.len());
        let Some(first) = reader.header_at(0, 0).await? else {
            continue;
        };
        note(&mut cache, &first);
        epochs.push(Some(first.partition_leader_epoch()));
        epochs.resize(points.len(), None);
        // In-order depth-first bisection over `points`.
        let last = points.len() - 1;
        let mut stack = vec![(0usize, last)];
        while let Some((low, high)) = stack.pop() {
            let low_header = reader.header_at(points[low], 0).await?;
            let Some(low_header) = low_header else {
                break;
            };
            note(&mut cache, &low_header);
            if high <= low {
                continue;
            }
            let high_epoch = match epochs[high] {
                Some(epoch) => epoch,
                None => match reader.header_at(points[high], 0).await? {
                    Some(header) => {
                        epochs[high] = Some(header.partition_leader_epoch());
                        header.partition_leader_epoch()
                    }
                    None => break,
                },
            };
            if low_header.partition_leader_epoch() == high_epoch {
                continue;
            }
            if high == low + 1 {
                reader.scan(&mut cache, points[low], points[high]).await?;
                continue;
            }
            let middle = low + (high - low) / 2;
            stack.push((middle, high));
            stack.push((low, middle));
        }
        // After the last indexed batch: at most an index interval and a
        // batch.
        reader.scan(&mut cache, points[last], segment.size).await?;
    }
    Ok(cache)
}

fn note(cache: &mut LeaderEpochCache, header: &BatchHeader) {
    let epoch = header.partition_leader_epoch();
    if cache.latest_epoch().is_none_or(|latest| epoch > latest) {
        cache.assign(epoch, header.base_offset());
    }
}

/// Reads batch headers of one segment file, through a small window.
struct HeaderReader<'a, I: Io> {
    io: &'a I,
    file: &'a I::File,
    size: u64,
    window: Option<(u64, Bytes)>,
}

impl<I: Io> HeaderReader<'_, I> {
    /// The header of the batch at `position`, reading `ahead` bytes past
    /// it when the window must be refilled; `None` past the valid bytes.
    async fn header_at(&mut self, position: u64, ahead: u64) -> io::Result<Option<BatchHeader>> {
        let end = position + BATCH_HEADER_SIZE as u64;
        if end > self.size {
            return Ok(None);
        }
        let covered = self
            .window
            .as_ref()
            .is_some_and(|(start, bytes)| position >= *start && end <= *start + bytes.len() as u64);
        if !covered {
            let read_start = page_floor(position);
            let read_end = page_ceil(end.max(position + ahead).min(self.size));
            let bytes = self
                .io
                .read_at(self.file, read_start, (read_end - read_start) as usize)
                .await?;
            self.window = Some((read_start, bytes));
        }
        let Some((start, bytes)) = &self.window else {
            return Ok(None);
        };
        let from = (position - start) as usize;
        if from + BATCH_HEADER_SIZE > bytes.len() {
            return Ok(None);
        }
        Ok(BatchHeader::parse(&bytes[from..]).ok())
    }

    /// Note every batch starting in `[from, to)`.
    async fn scan(&mut self, cache: &mut LeaderEpochCache, from: u64, to: u64) -> io::Result<()> {
        let mut position = from;
        while position < to {
            let Some(header) = self.header_at(position, SCAN_WINDOW_BYTES).await? else {
                break;
            };
            note(cache, &header);
            position += header.total_size() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: i32, start: i64) -> EpochEntry {
        EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(start),
        }
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|entry| (entry.epoch.0, entry.start_offset.value()))
            .collect()
    }

    /// Batches of epochs 0, 0, 1, 1, 3 at offsets 0, 10, 20, 30, 40.
    fn sample() -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for (epoch, start) in [(0, 0), (0, 10), (1, 20), (1, 30), (3, 40)] {
            if cache
                .latest_epoch()
                .is_none_or(|latest| LeaderEpoch(epoch) > latest)
            {
                cache.assign(LeaderEpoch(epoch), Offset(start));
            }
        }
        cache
    }

    #[test]
    fn appends_add_an_entry_per_new_epoch() {
        let cache = sample();
        assert_eq!(pairs(&cache), vec![(0, 0), (1, 20), (3, 40)]);
        assert_eq!(cache.generation(), 3);
        assert_eq!(cache.start_offset_of(LeaderEpoch(1)), Some(Offset(20)));
        assert_eq!(cache.start_offset_of(LeaderEpoch(2)), None);
    }

    #[test]
    fn end_offset_for_epoch_follows_kip_279() {
        let cache = sample();
        let end = Offset(50);
        let answer = |epoch: i32| {
            cache
                .end_offset_for(LeaderEpoch(epoch), end)
                .map(|(epoch, offset)| (epoch.0, offset.value()))
        };
        assert_eq!(answer(0), Some((0, 20)));
        assert_eq!(answer(1), Some((1, 40)));
        // Epoch 2 never appended: the end of the largest epoch below it.
        assert_eq!(answer(2), Some((1, 40)));
        assert_eq!(answer(3), Some((3, 50)));
        assert_eq!(answer(4), Some((3, 50)));
        assert_eq!(answer(-1), None);
        let mut later = LeaderEpochCache::default();
        later.assign(LeaderEpoch(5), Offset(7));
        assert_eq!(later.end_offset_for(LeaderEpoch(4), end), None);
        assert_eq!(
            LeaderEpochCache::default().end_offset_for(LeaderEpoch(0), end),
            None
        );
    }

    #[test]
    fn the_epoch_of_an_offset_is_the_last_entry_starting_at_or_before_it() {
        let cache = sample();
        let epoch_of = |offset: i64| cache.epoch_for_offset(Offset(offset)).map(|epoch| epoch.0);
        assert_eq!(epoch_of(0), Some(0));
        assert_eq!(epoch_of(19), Some(0));
        assert_eq!(epoch_of(20), Some(1));
        assert_eq!(epoch_of(39), Some(1));
        assert_eq!(epoch_of(40), Some(3));
        assert_eq!(epoch_of(1_000), Some(3));
        let mut later = LeaderEpochCache::default();
        later.assign(LeaderEpoch(5), Offset(7));
        assert_eq!(later.epoch_for_offset(Offset(6)), None);
        assert_eq!(
            LeaderEpochCache::default().epoch_for_offset(Offset(0)),
            None
        );
    }

    #[test]
    fn a_client_asking_for_an_epoch_below_every_cached_one_gets_the_first_start() {
        let mut cache = sample();
        cache.truncate_to_start(Offset(25));
        let end = Offset(50);
        let answer = |epoch: i32| {
            cache
                .end_offset_for_client(LeaderEpoch(epoch), end)
                .map(|(epoch, offset)| (epoch.0, offset.value()))
        };
        // Epoch 0 was cut from the start: the requested epoch, and where
        // the log now starts (Kafka's LeaderEpochFileCache.endOffsetFor).
        assert_eq!(answer(0), Some((0, 25)));
        // Everything else as replication's lookup answers.
        assert_eq!(answer(1), Some((1, 40)));
        assert_eq!(answer(2), Some((1, 40)));
        assert_eq!(answer(3), Some((3, 50)));
        assert_eq!(answer(7), Some((3, 50)));
        assert_eq!(answer(-1), None);
        assert_eq!(cache.end_offset_for(LeaderEpoch(0), end), None);
        assert_eq!(
            LeaderEpochCache::default().end_offset_for_client(LeaderEpoch(0), end),
            None
        );
    }

    #[test]
    fn truncation_from_the_end_drops_entries_at_or_after_the_new_end() {
        let mut cache = sample();
        cache.truncate_to_end(Offset(41));
        assert_eq!(pairs(&cache), vec![(0, 0), (1, 20), (3, 40)]);
        let generation = cache.generation();
        cache.truncate_to_end(Offset(40));
        assert_eq!(pairs(&cache), vec![(0, 0), (1, 20)]);
        assert!(cache.generation() > generation);
        cache.truncate_to_end(Offset(0));
        assert_eq!(pairs(&cache), vec![]);
    }

    #[test]
    fn truncation_from_the_start_keeps_the_epoch_holding_the_new_start() {
        let mut cache = sample();
        cache.truncate_to_start(Offset(0));
        assert_eq!(pairs(&cache), vec![(0, 0), (1, 20), (3, 40)]);
        cache.truncate_to_start(Offset(25));
        assert_eq!(pairs(&cache), vec![(1, 25), (3, 40)]);
        cache.truncate_to_start(Offset(40));
        assert_eq!(pairs(&cache), vec![(3, 40)]);
        cache.truncate_to_start(Offset(60));
        assert_eq!(pairs(&cache), vec![(3, 60)]);
        // A new epoch at the same offset (the log was emptied) replaces it.
        cache.assign(LeaderEpoch(4), Offset(60));
        assert_eq!(pairs(&cache), vec![(4, 60)]);
        let mut later = LeaderEpochCache::default();
        later.assign(LeaderEpoch(2), Offset(30));
        later.truncate_to_start(Offset(10));
        assert_eq!(pairs(&later), vec![(2, 30)]);
    }

    #[test]
    #[should_panic(expected = "appended after epoch")]
    fn a_lower_epoch_is_a_bug_of_the_caller() {
        let mut cache = sample();
        cache.assign(LeaderEpoch(2), Offset(60));
    }

    #[test]
    fn the_file_uses_kafkas_text_format_and_round_trips() {
        let cache = sample();
        assert_eq!(cache.encode(), b"0\n3\n0 0\n1 20\n3 40\n");
        let decoded = decode(&cache.encode()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(decoded.entries(), cache.entries());
        assert_eq!(decode(b"0\n0\n").map(|cache| cache.entries().len()), Ok(0));
        assert_eq!(
            decode(b"0\n1\n2 5").map(|cache| pairs(&cache)),
            Ok(vec![(2, 5)])
        );
    }

    #[test]
    fn damaged_files_are_refused() {
        let damaged: [&[u8]; 11] = [
            b"",
            b"1\n0\n",
            b"0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n1\n0\n",
            b"0\n1\n0 0 0\n",
            b"0\n1\nx 0\n",
            b"0\n2\n1 0\n1 5\n",
            b"0\n2\n0 5\n1 5\n",
            b"0\n1\n0 \xff\n",
        ];
        for bytes in damaged {
            assert!(decode(bytes).is_err(), "accepted {bytes:?}");
        }
        assert!(LeaderEpochCache::from_entries(vec![entry(-1, 0)]).is_none());
        assert!(LeaderEpochCache::from_entries(vec![entry(0, 0), entry(1, 1)]).is_some());
    }
}
