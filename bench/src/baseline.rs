//! Raw-disk baselines that storage benchmarks are judged against, measured in
//! the benchmark's own data directory, plus the check every disk benchmark
//! runs first on that directory.
//!
//! - [`direct_write_bandwidth`]: sequential O_DIRECT writes through io_uring
//!   (compio), a fixed number in flight, into a file grown with fallocate in
//!   the same steps the engine grows its segments
//!   ([`PREALLOCATE_STEP_BYTES`]), ended by one fdatasync. This is what the
//!   engine's throughput is divided by.
//! - [`fdatasync_latency`]: one page written with O_DIRECT at increasing
//!   offsets, then fdatasync, in a loop. This is what group-commit latency is
//!   divided by.
//! - [`direct_read_bandwidth`]: sequential O_DIRECT reads of a file written
//!   for the purpose, a fixed number in flight. This is what catch-up reads
//!   (consumers reading old data from disk) are divided by.
//! - [`measure_raw_disk`]: both of the above, with /proc/diskstats counters,
//!   as a benchmark runs them (before and after its own load).
//! - [`prepare_data_dir`]: refuses tmpfs and ramfs (kernels since 6.6 accept
//!   O_DIRECT on tmpfs, so the filesystem type is checked, not only the
//!   open) and filesystems without O_DIRECT.
//!
//! Both measurements run on the calling thread's compio runtime (io_uring);
//! the only blocking call is fallocate, as in the engine.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use compio::BufResult;
use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAt};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sluice_engine::constants::{PAGE_SIZE, PREALLOCATE_STEP_BYTES};
use sluice_engine::io::AlignedBuf;

use crate::measure::{self, CpuTime, CpuUsage, DiskCounters, LatencySummary};

/// A benchmark data directory that passed [`prepare_data_dir`].
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    /// The benchmark created it (and removes it again when cleaning up, if
    /// it is empty by then).
    pub created: bool,
}

/// Create `dir` if needed and make sure it can hold O_DIRECT files on a real
/// disk: refuse tmpfs and ramfs (memory, not a disk; O_DIRECT is either
/// refused or meaningless there) and any filesystem that rejects O_DIRECT.
/// `flag` is the option that named `dir` (`--dir` for `engine` and
/// `baseline`, `--data-dir` for `--embedded`, `--baseline-dir`), so that
/// every refusal tells the user which flag to change.
pub fn prepare_data_dir(dir: &Path, flag: &str) -> anyhow::Result<DataDir> {
    if dir.exists() && !dir.is_dir() {
        bail!("{flag} {} exists and is not a directory", dir.display());
    }
    let created = !dir.exists();
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {flag} {}", dir.display()))?;
    let checked = check_direct_io(dir, flag);
    if let Err(error) = checked {
        if created {
            let _ = fs::remove_dir(dir);
        }
        return Err(error);
    }
    Ok(DataDir {
        path: dir.to_path_buf(),
        created,
    })
}

/// The refusal of a data directory on a memory filesystem.
fn memory_filesystem_refusal(flag: &str, dir: &Path, mount: &measure::Mount) -> String {
    format!(
        "{flag} {} is on {} (mounted at {}): the storage engine writes its segments with \
         O_DIRECT, which memory filesystems reject or ignore, and a benchmark there would not \
         measure a disk. Pass a directory on a real disk, e.g. {flag} ./target/bench-data",
        dir.display(),
        mount.filesystem_type,
        mount.mount_point
    )
}

fn check_direct_io(dir: &Path, flag: &str) -> anyhow::Result<()> {
    let mount = measure::mount_of(dir);
    if let Some(mount) = &mount
        && matches!(mount.filesystem_type.as_str(), "tmpfs" | "ramfs")
    {
        bail!(memory_filesystem_refusal(flag, dir, mount));
    }
    let probe = dir.join(format!(
        ".sluice-bench-direct-io-probe-{}",
        std::process::id()
    ));
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    match opened {
        Ok(_) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => bail!(
            "{flag} {} is on a filesystem ({}) that does not support O_DIRECT, which the storage \
             engine needs. Pass a directory on a real disk (ext4, xfs).",
            dir.display(),
            mount.map_or("unknown type".to_owned(), |mount| mount.filesystem_type)
        ),
        Err(error) => Err(error)
            .with_context(|| format!("cannot create an O_DIRECT file in {flag} {}", dir.display())),
    }
}

/// Both baselines, with what reached the device during each.
#[derive(Clone, Debug)]
pub struct RawDisk {
    pub sync_latency: SyncLatency,
    pub sync_device: Option<DiskCounters>,
    pub bandwidth: Bandwidth,
    pub bandwidth_device: Option<DiskCounters>,
}

/// Measure [`fdatasync_latency`] (first, on a quiet device) then
/// [`direct_write_bandwidth`], each for `config.duration`, in files under
/// `dir` that are removed afterwards unless `keep`. `device` names the
/// directory's block device in /proc/diskstats (see
/// [`measure::device_name`]); progress goes to stderr, tagged `label`.
pub async fn measure_raw_disk(
    dir: &Path,
    label: &str,
    config: BandwidthConfig,
    device: Option<&str>,
    keep: bool,
) -> anyhow::Result<RawDisk> {
    eprintln!(
        "baseline ({label}): 4 KiB O_DIRECT write + fdatasync, {} s",
        config.duration.as_secs()
    );
    let sync_path = dir.join(format!("baseline-fdatasync-{label}.data"));
    let counters = device.and_then(DiskCounters::read);
    let sync_latency = fdatasync_latency(&sync_path, config.duration).await?;
    let sync_device = counters_since(device, counters);
    remove_unless_kept(&sync_path, keep)?;
    eprintln!(
        "  fdatasync {}",
        LatencySummary::of(&sync_latency.sync).describe()
    );

    eprintln!(
        "baseline ({label}): O_DIRECT sequential writes, {} x {} KiB in flight, {} s",
        config.writes_in_flight,
        config.write_size_bytes / 1024,
        config.duration.as_secs()
    );
    let bandwidth_path = dir.join(format!("baseline-write-{label}.data"));
    let counters = device.and_then(DiskCounters::read);
    let bandwidth = direct_write_bandwidth(&bandwidth_path, config).await?;
    let bandwidth_device = counters_since(device, counters);
    remove_unless_kept(&bandwidth_path, keep)?;
    eprintln!("  {:.1} MB/s", bandwidth.mb_per_sec());
    Ok(RawDisk {
        sync_latency,
        sync_device,
        bandwidth,
        bandwidth_device,
    })
}

impl RawDisk {
    /// Report lines, each indented by `indent`.
    pub fn render(&self, indent: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let bandwidth = &self.bandwidth;
        let _ = writeln!(
            out,
            "{indent}sequential write  {:.1} MB/s ({} x {} KiB in flight, {:.1} GB in {:.2} s \
             incl. final fdatasync {})",
            bandwidth.mb_per_sec(),
            bandwidth.config.writes_in_flight,
            bandwidth.config.write_size_bytes / 1024,
            bandwidth.bytes as f64 / 1e9,
            bandwidth.elapsed().as_secs_f64(),
            measure::milliseconds(duration_us(bandwidth.sync_elapsed)),
        );
        let _ = writeln!(out, "{indent}  CPU {}", bandwidth.cpu.describe());
        if let Some(device) = self.bandwidth_device {
            let _ = writeln!(
                out,
                "{indent}  device {}",
                device.describe(bandwidth.elapsed())
            );
        }
        let _ = writeln!(
            out,
            "{indent}fdatasync         {}",
            LatencySummary::of(&self.sync_latency.sync).describe()
        );
        let _ = writeln!(
            out,
            "{indent}write + fdatasync {}",
            LatencySummary::of(&self.sync_latency.write_and_sync).describe()
        );
        if let Some(device) = self.sync_device {
            let _ = writeln!(
                out,
                "{indent}  device {}",
                device.describe(self.sync_latency.elapsed)
            );
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let bandwidth = &self.bandwidth;
        json!({
            "direct_write": {
                "write_size_bytes": bandwidth.config.write_size_bytes,
                "writes_in_flight": bandwidth.config.writes_in_flight,
                "bytes": bandwidth.bytes,
                "writes": bandwidth.writes,
                "write_secs": measure::round(bandwidth.write_elapsed.as_secs_f64(), 3),
                "final_fdatasync_us": duration_us(bandwidth.sync_elapsed),
                "mb_per_sec": measure::round(bandwidth.mb_per_sec(), 1),
                "cpu": bandwidth.cpu.to_json(),
                "device": self.bandwidth_device.map(|device| device.to_json(bandwidth.elapsed())),
            },
            "fdatasync_latency": LatencySummary::of(&self.sync_latency.sync).to_json(),
            "write_and_fdatasync_latency":
                LatencySummary::of(&self.sync_latency.write_and_sync).to_json(),
            "fdatasync_device": self
                .sync_device
                .map(|device| device.to_json(self.sync_latency.elapsed)),
        })
    }
}

fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Device counters since `before` (`None` when the device is unknown).
pub fn counters_since(device: Option<&str>, before: Option<DiskCounters>) -> Option<DiskCounters> {
    Some(DiskCounters::read(device?)?.since(before?))
}

fn remove_unless_kept(path: &Path, keep: bool) -> anyhow::Result<()> {
    if keep {
        return Ok(());
    }
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// Parameters of [`direct_write_bandwidth`].
#[derive(Clone, Copy, Debug)]
pub struct BandwidthConfig {
    /// Size of each write (a multiple of [`PAGE_SIZE`]).
    pub write_size_bytes: usize,
    /// Writes kept in flight at once.
    pub writes_in_flight: usize,
    /// How long to keep issuing writes (the final fdatasync comes after).
    pub duration: Duration,
}

/// Result of [`direct_write_bandwidth`].
#[derive(Clone, Copy, Debug)]
pub struct Bandwidth {
    pub config: BandwidthConfig,
    pub bytes: u64,
    pub writes: u64,
    /// From the first write issued to the last write completed.
    pub write_elapsed: Duration,
    /// The final fdatasync.
    pub sync_elapsed: Duration,
    pub cpu: CpuUsage,
}

impl Bandwidth {
    /// Everything, writes and the final fdatasync.
    pub fn elapsed(&self) -> Duration {
        self.write_elapsed + self.sync_elapsed
    }

    /// Durable bandwidth: bytes over writes plus the final fdatasync.
    pub fn mb_per_sec(&self) -> f64 {
        measure::mb_per_sec(self.bytes, self.elapsed())
    }
}

/// Sequential O_DIRECT writes of `config.write_size_bytes` with
/// `config.writes_in_flight` in flight for `config.duration`, into a new file
/// at `path`, then one fdatasync. The file is left in place.
pub async fn direct_write_bandwidth(
    path: &Path,
    config: BandwidthConfig,
) -> anyhow::Result<Bandwidth> {
    assert!(config.write_size_bytes.is_multiple_of(PAGE_SIZE) && config.write_size_bytes > 0);
    assert!(config.writes_in_flight > 0);
    let file = open_direct(path).await?;
    let mut allocation = Allocation::default();
    let mut idle: Vec<AlignedBuf> = (0..config.writes_in_flight)
        .map(|index| filled_buffer(config.write_size_bytes, index))
        .collect();
    let mut in_flight = FuturesUnordered::new();
    let mut position = 0_u64;
    let mut bytes = 0_u64;
    let mut writes = 0_u64;
    let cpu_start = CpuTime::now();
    let started = Instant::now();
    let deadline = started + config.duration;
    loop {
        while Instant::now() < deadline {
            let Some(buffer) = idle.pop() else { break };
            let end = position + buffer.len() as u64;
            allocation
                .cover(&file, end)
                .with_context(|| format!("fallocate {}", path.display()))?;
            in_flight.push(write_all_at(&file, position, buffer));
            position = end;
        }
        let Some(written) = in_flight.next().await else {
            break;
        };
        let buffer = written.with_context(|| format!("O_DIRECT write to {}", path.display()))?;
        bytes += buffer.len() as u64;
        writes += 1;
        idle.push(buffer);
    }
    let write_elapsed = started.elapsed();
    drop(in_flight);
    let sync_started = Instant::now();
    file.sync_data()
        .await
        .with_context(|| format!("fdatasync {}", path.display()))?;
    let sync_elapsed = sync_started.elapsed();
    let cpu = CpuTime::now().since(cpu_start, started.elapsed());
    file.close()
        .await
        .with_context(|| format!("close {}", path.display()))?;
    Ok(Bandwidth {
        config,
        bytes,
        writes,
        write_elapsed,
        sync_elapsed,
        cpu,
    })
}

/// Result of [`fdatasync_latency`].
#[derive(Clone, Debug)]
pub struct SyncLatency {
    /// fdatasync alone, microseconds.
    pub sync: Histogram<u64>,
    /// The page write and the fdatasync after it, microseconds.
    pub write_and_sync: Histogram<u64>,
    pub elapsed: Duration,
}

/// For `duration`: write one page with O_DIRECT after the previous one, then
/// fdatasync; time both. The file is preallocated like the engine's segments,
/// so each fdatasync also commits the conversion of the written range from
/// unwritten to written extents, as the engine's do.
pub async fn fdatasync_latency(path: &Path, duration: Duration) -> anyhow::Result<SyncLatency> {
    let file = open_direct(path).await?;
    let mut allocation = Allocation::default();
    let mut buffer = filled_buffer(PAGE_SIZE, 0);
    let mut sync = measure::latency_histogram();
    let mut write_and_sync = measure::latency_histogram();
    let mut position = 0_u64;
    let started = Instant::now();
    let deadline = started + duration;
    while Instant::now() < deadline {
        let end = position + buffer.len() as u64;
        allocation
            .cover(&file, end)
            .with_context(|| format!("fallocate {}", path.display()))?;
        let started = Instant::now();
        buffer = write_all_at(&file, position, buffer)
            .await
            .with_context(|| format!("O_DIRECT write to {}", path.display()))?;
        let sync_started = Instant::now();
        file.sync_data()
            .await
            .with_context(|| format!("fdatasync {}", path.display()))?;
        let finished = Instant::now();
        measure::record_latency(&mut sync, finished - sync_started);
        measure::record_latency(&mut write_and_sync, finished - started);
        position = end;
    }
    file.close()
        .await
        .with_context(|| format!("close {}", path.display()))?;
    Ok(SyncLatency {
        sync,
        write_and_sync,
        elapsed: started.elapsed(),
    })
}

/// Result of [`direct_read_bandwidth`].
#[derive(Clone, Copy, Debug)]
pub struct ReadBandwidth {
    pub read_size_bytes: usize,
    pub reads_in_flight: usize,
    pub file_bytes: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl ReadBandwidth {
    pub fn mb_per_sec(self) -> f64 {
        measure::mb_per_sec(self.bytes, self.elapsed)
    }

    pub fn to_json(self) -> Value {
        json!({
            "read_size_bytes": self.read_size_bytes,
            "reads_in_flight": self.reads_in_flight,
            "file_bytes": self.file_bytes,
            "bytes": self.bytes,
            "secs": measure::round(self.elapsed.as_secs_f64(), 3),
            "mb_per_sec": measure::round(self.mb_per_sec(), 1),
        })
    }
}

/// Write a `file_bytes` file at `path` (O_DIRECT, then fdatasync), then
/// read it sequentially with O_DIRECT, `reads_in_flight` reads of
/// `read_size_bytes` at a time, from the start, wrapping around, for
/// `duration`. The file is removed afterwards. O_DIRECT bypasses the page
/// cache; a cache below the guest (a VM host's) may still serve reads.
pub async fn direct_read_bandwidth(
    path: &Path,
    file_bytes: u64,
    read_size_bytes: usize,
    reads_in_flight: usize,
    duration: Duration,
) -> anyhow::Result<ReadBandwidth> {
    assert!(read_size_bytes.is_multiple_of(PAGE_SIZE) && read_size_bytes > 0);
    assert!(reads_in_flight > 0);
    let file_bytes =
        file_bytes.max(read_size_bytes as u64) / read_size_bytes as u64 * read_size_bytes as u64;
    let file = open_direct(path).await?;
    let mut allocation = Allocation::default();
    let mut idle: Vec<AlignedBuf> = (0..reads_in_flight)
        .map(|index| filled_buffer(read_size_bytes, index))
        .collect();
    let mut in_flight = FuturesUnordered::new();
    let mut position = 0_u64;
    while position < file_bytes || !in_flight.is_empty() {
        while position < file_bytes {
            let Some(buffer) = idle.pop() else { break };
            let end = position + buffer.len() as u64;
            allocation
                .cover(&file, end)
                .with_context(|| format!("fallocate {}", path.display()))?;
            in_flight.push(write_all_at(&file, position, buffer));
            position = end;
        }
        if let Some(written) = in_flight.next().await {
            idle.push(written.with_context(|| format!("O_DIRECT write to {}", path.display()))?);
        }
    }
    drop(in_flight);
    file.sync_data()
        .await
        .with_context(|| format!("fdatasync {}", path.display()))?;

    let mut reads = FuturesUnordered::new();
    let mut position = 0_u64;
    let mut bytes = 0_u64;
    let started = Instant::now();
    let deadline = started + duration;
    loop {
        while Instant::now() < deadline {
            let Some(mut buffer) = idle.pop() else { break };
            buffer.truncate(0);
            reads.push(read_at(&file, position, buffer));
            position = (position + read_size_bytes as u64) % file_bytes;
        }
        let Some(read) = reads.next().await else {
            break;
        };
        let buffer = read.with_context(|| format!("O_DIRECT read from {}", path.display()))?;
        bytes += buffer.len() as u64;
        idle.push(buffer);
    }
    let elapsed = started.elapsed();
    drop(reads);
    file.close()
        .await
        .with_context(|| format!("close {}", path.display()))?;
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(ReadBandwidth {
        read_size_bytes,
        reads_in_flight,
        file_bytes,
        bytes,
        elapsed,
    })
}

async fn read_at(file: &File, position: u64, buffer: AlignedBuf) -> io::Result<AlignedBuf> {
    let BufResult(result, buffer) = file.read_at(buffer, position).await;
    result?;
    Ok(buffer)
}

async fn open_direct(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .await
        .with_context(|| format!("open {} with O_DIRECT", path.display()))
}

/// A page-aligned buffer of `size_bytes` holding a pattern that differs per
/// `seed` (so no layer below can deduplicate or compress zeros away).
fn filled_buffer(size_bytes: usize, seed: usize) -> AlignedBuf {
    let mut buffer = AlignedBuf::with_capacity(size_bytes);
    let pattern: Vec<u8> = (0..size_bytes)
        .map(|index| (index.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect();
    buffer.extend_from_slice(&pattern);
    buffer
}

/// Write all of `buffer` at `position` and hand the buffer back. O_DIRECT
/// writes to a regular file are not short unless the device is full, so a
/// short write is reported as an error rather than continued.
async fn write_all_at(file: &File, position: u64, buffer: AlignedBuf) -> io::Result<AlignedBuf> {
    let length = buffer.len();
    let mut handle = file;
    let BufResult(result, buffer) = handle.write_at(buffer, position).await;
    let written = result?;
    if written != length {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short O_DIRECT write: {written} of {length} bytes at {position}"),
        ));
    }
    Ok(buffer)
}

/// How far a file has been preallocated; grows it in engine-sized steps.
#[derive(Debug, Default)]
struct Allocation {
    allocated_bytes: u64,
}

impl Allocation {
    /// Make sure `[0, end)` is allocated, growing by
    /// [`PREALLOCATE_STEP_BYTES`] at a time.
    fn cover(&mut self, file: &File, end: u64) -> io::Result<()> {
        if end <= self.allocated_bytes {
            return Ok(());
        }
        let target = end.max(self.allocated_bytes + PREALLOCATE_STEP_BYTES);
        fallocate(file, target)?;
        self.allocated_bytes = target;
        Ok(())
    }
}

/// fallocate(fd, 0, 0, length), retried on EINTR. Blocking, like the
/// engine's (compio 0.19 has no fallocate operation).
fn fallocate(file: &File, length: u64) -> io::Result<()> {
    let length = libc::off_t::try_from(length)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocation too large"))?;
    loop {
        // SAFETY: a plain syscall on a descriptor owned by `file`, which is
        // open for the duration of the call; no memory is passed.
        let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mode names its own flag: `--dir` (engine, baseline),
    /// `--data-dir` (the embedded broker), `--baseline-dir`.
    #[test]
    fn the_tmpfs_refusal_names_the_flag_of_the_mode() {
        let mount = measure::Mount {
            mount_point: "/dev/shm".into(),
            filesystem_type: "tmpfs".into(),
            source: "tmpfs".into(),
        };
        for flag in ["--dir", "--data-dir", "--baseline-dir"] {
            let message = memory_filesystem_refusal(flag, Path::new("/dev/shm/x"), &mount);
            assert!(
                message.starts_with(&format!("{flag} /dev/shm/x is on tmpfs")),
                "{message}"
            );
            assert!(
                message.ends_with(&format!("e.g. {flag} ./target/bench-data")),
                "{message}"
            );
        }
    }

    /// The real check on a real tmpfs, where the machine has one.
    #[test]
    fn a_data_dir_on_tmpfs_is_refused_with_its_flag() {
        let shm = Path::new("/dev/shm");
        let on_tmpfs = measure::mount_of(shm).is_some_and(|mount| mount.filesystem_type == "tmpfs");
        if !on_tmpfs {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        }
        let dir = shm.join(format!("sluice-bench-tmpfs-test-{}", std::process::id()));
        let error = prepare_data_dir(&dir, "--data-dir").expect_err("tmpfs is refused");
        let message = format!("{error:#}");
        assert!(
            message.starts_with(&format!("--data-dir {} is on tmpfs", dir.display())),
            "{message}"
        );
        assert!(!message.contains("--dir "), "{message}");
        assert!(!dir.exists(), "the refused directory it created is removed");
    }
}
