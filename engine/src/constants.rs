//! Every limit and default of the engine, with the reason for its value.

/// O_DIRECT requires buffer address, file offset and length aligned to the
/// logical block size. 4 KiB covers every disk we target (512e and 4Kn) and is
/// the page size, so it is also the unit of the rewritten tail page.
pub const PAGE_SIZE: usize = 4096;

/// Unit of atomicity we assume of the disk: a sector write either lands whole
/// or not at all (see docs/internals/storage-format.md). The simulated disk
/// tears writes at this granularity.
pub const SECTOR_SIZE: usize = 512;

/// Kafka's default segment.bytes (1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;

/// Kafka's default segment.ms (7 days).
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Kafka's default index.interval.bytes: one sparse index entry per 4 KiB.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;

/// Kafka's default max.message.bytes (1 MiB + record batch overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: u32 = 1_048_588;

/// Largest preallocation step: segments grow by fallocate in steps that
/// double from [`PREALLOCATE_FIRST_BYTES`] up to this, so the filesystem
/// allocates extents rarely and fdatasync rarely has metadata to write,
/// while a quiet partition (1000 partitions, `__consumer_offsets`) reserves
/// only a little. Capped by the segment size.
pub const PREALLOCATE_STEP_BYTES: u64 = 64 << 20;

/// First preallocation of a segment file.
pub const PREALLOCATE_FIRST_BYTES: u64 = 1 << 20;

/// Largest in-memory write chunk. Appends are copied into aligned chunks; a
/// chunk is both the O_DIRECT write source and the read cache of the tail.
/// A segment's chunks start at 64 KiB and double up to this size, so an idle
/// partition holds 64 KiB while a busy one flushes in 1 MiB pieces.
pub const CHUNK_SIZE_BYTES: usize = 1 << 20;

/// Freed write chunks kept for reuse (process wide), so steady appends do not
/// map and unmap memory: enough for 64 busy partitions' 1 MiB chunks.
pub const CHUNK_POOL_BYTES_MAX: usize = 64 << 20;

/// Freed O_DIRECT read buffers kept for reuse (process wide). A catch-up
/// read allocates a buffer of about 1 MiB per partition fetch; fresh ones
/// were zero-filled, page-faulted in and unmapped after the send: 25-35 % of
/// the broker's CPU while reading a backlog (issue 11). 32 MiB holds the
/// buffers of a 16-partition fetch in flight on both shards twice over.
pub const READ_POOL_BYTES_MAX: usize = 32 << 20;

/// The largest O_DIRECT read issued as one operation: longer reads are
/// issued as parallel parts of at most this size (`UringIo::read_at`,
/// engine/src/io/read_parts.rs; smaller while a producer writes).
/// On this project's VM disk a catch-up's 1 MiB reads (258 pages with the
/// read-ahead's two extra pages: past the queue's 254 segments, so split)
/// gave less read bandwidth than 256 KiB reads and held a durable write
/// issued beside them 30-40 ms: fio, 16 files read beside 16 KiB O_DSYNC
/// writes at 50 MB/s, 1 MiB x 8 in flight 1.4-1.7 GB/s with writes p99
/// 71-104 ms, 256 KiB x 4-8 in flight 1.7-2.3 GB/s with writes p99 2-4 ms
/// (docs/benchmarks.md, "Catch-up reads beside a producer").
pub const READ_OP_BYTES_MAX: usize = 256 << 10;

/// Chunks a segment's write buffer keeps after a flush at most: the one it
/// writes into and one flushed chunk, so that a consumer just behind the
/// producer reads from memory across a chunk boundary. The flushed ones are
/// further bounded per shard by [`TAIL_CACHE_SHARD_BYTES_DEFAULT`].
pub const TAIL_CHUNKS_RETAINED: usize = 2;

/// Bytes of flushed chunks (the tail read cache) one shard may retain over
/// all its logs; past it the least recently appended-to or read logs give
/// theirs back (tail_cache.rs) and their recent data is read from disk.
/// Without this bound the cache grew with the partition count, hot or not:
/// at 10,000 partitions on 2 shards it held the broker above the 1 GiB of
/// issue 11. A log's last chunk counts too once wholly durable, so 64 MiB
/// keeps both 1 MiB chunks of 32 busy partitions per shard (the 16-partition
/// benchmark never reaches it) and adds at most 128 MiB on the 2-core
/// target. `sluice serve --tail-cache-bytes` sets it.
pub const TAIL_CACHE_SHARD_BYTES_DEFAULT: usize = 64 << 20;

/// Size of a record batch v2 header, up to and including the record count.
pub const BATCH_HEADER_SIZE: usize = 61;

/// Largest batch the engine accepts whatever the config says: a batch length
/// is an i32 on the wire, and index positions are u32.
pub const BATCH_SIZE_MAX: usize = 256 << 20;

/// A large file is freed this many bytes at a time (truncated down in
/// steps, [`FREE_STEP_PAUSE`] apart) before it is unlinked: on a filesystem
/// mounted with online discard the kernel trims what a truncate or unlink
/// frees before it returns, and a device trimming gigabytes at once makes
/// every other write's cache flush wait behind it. Measured here (ext4 -o
/// discard on virtio): removing 6 GB at once held another process's 4 KiB
/// write + fdatasync for up to 340 ms and stalled produce to another topic
/// for about 0.8 s; in 32 MiB steps 5 ms apart the worst was 8 ms, at
/// about 2.6 GB/s of removal, in the background.
pub const FREE_STEP_BYTES: u64 = 32 << 20;

/// The pause between two [`FREE_STEP_BYTES`] steps.
pub const FREE_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
