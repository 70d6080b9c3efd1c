//! Measurement helpers shared by every workload: latency histograms and their
//! percentile summaries, CPU time of the process and of the calling thread,
//! and a description of the machine for reports.
//!
//! Latencies are HDR histograms in microseconds (3 significant digits);
//! reports quote percentiles and the maximum, never a mean alone.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Largest latency a histogram tells apart: one hour. Anything slower is
/// recorded as one hour (nothing in a benchmark run should come close).
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty latency histogram, in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

/// Record `elapsed` in microseconds (at least 1: the histogram's floor).
pub fn record_latency(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let microseconds = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(microseconds.max(1));
}

/// The percentiles a report quotes, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p99_9_us": self.p999_us,
            "max_us": self.max_us,
        })
    }

    /// `p50 1.234 ms  p99 ...` for tables.
    pub fn describe(self) -> String {
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
            milliseconds(self.p50_us),
            milliseconds(self.p99_us),
            milliseconds(self.p999_us),
            milliseconds(self.max_us),
            self.count
        )
    }
}

/// Microseconds shown as milliseconds with microsecond precision.
pub fn milliseconds(microseconds: u64) -> String {
    format!("{:.3} ms", microseconds as f64 / 1000.0)
}

/// Bytes per second as decimal megabytes (10^6 bytes) per second.
pub fn mb_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds == 0.0 {
        return 0.0;
    }
    bytes as f64 / seconds / 1e6
}

/// CPU time consumed so far, split into user and system time.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    /// Every thread of the process, including io_uring's kernel workers
    /// (io-wq threads belong to the process).
    pub process_user: Duration,
    pub process_system: Duration,
    /// The calling thread only (the shard thread running the workload).
    pub thread_user: Duration,
    pub thread_system: Duration,
    /// Page faults of the process served without I/O: mostly first touches
    /// of freshly mapped memory.
    pub minor_faults: u64,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        let process = resource_usage(libc::RUSAGE_SELF);
        let thread = resource_usage(libc::RUSAGE_THREAD);
        CpuTime {
            process_user: process.user,
            process_system: process.system,
            thread_user: thread.user,
            thread_system: thread.system,
            minor_faults: process.minor_faults,
        }
    }

    /// CPU use between `earlier` and now-`self` over `wall` time.
    pub fn since(self, earlier: CpuTime, wall: Duration) -> CpuUsage {
        let share = |later: Duration, before: Duration| {
            let seconds = wall.as_secs_f64();
            if seconds == 0.0 {
                return 0.0;
            }
            later.saturating_sub(before).as_secs_f64() / seconds * 100.0
        };
        CpuUsage {
            process_user_percent: share(self.process_user, earlier.process_user),
            process_system_percent: share(self.process_system, earlier.process_system),
            thread_user_percent: share(self.thread_user, earlier.thread_user),
            thread_system_percent: share(self.thread_system, earlier.thread_system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

/// CPU use over an interval, in percent of one core (a 2-core machine tops
/// out at 200% for the process, 100% for a thread).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUsage {
    pub process_user_percent: f64,
    pub process_system_percent: f64,
    pub thread_user_percent: f64,
    pub thread_system_percent: f64,
    pub minor_faults: u64,
}

impl CpuUsage {
    pub fn process_percent(self) -> f64 {
        self.process_user_percent + self.process_system_percent
    }

    pub fn thread_percent(self) -> f64 {
        self.thread_user_percent + self.thread_system_percent
    }

    pub fn describe(self) -> String {
        format!(
            "process {:.0}% (user {:.0}%, system {:.0}%), shard thread {:.0}% (user {:.0}%, system {:.0}%), {} minor faults",
            self.process_percent(),
            self.process_user_percent,
            self.process_system_percent,
            self.thread_percent(),
            self.thread_user_percent,
            self.thread_system_percent,
            self.minor_faults
        )
    }

    /// The process alone (for broker runs, where no shard thread exists).
    pub fn describe_process(self) -> String {
        format!(
            "process {:.0}% of one core (user {:.0}%, system {:.0}%)",
            self.process_percent(),
            self.process_user_percent,
            self.process_system_percent,
        )
    }

    pub fn to_json(self) -> Value {
        json!({
            "process_user_percent": round(self.process_user_percent, 1),
            "process_system_percent": round(self.process_system_percent, 1),
            "thread_user_percent": round(self.thread_user_percent, 1),
            "thread_system_percent": round(self.thread_system_percent, 1),
            "minor_faults": self.minor_faults,
        })
    }
}

struct ResourceUsage {
    user: Duration,
    system: Duration,
    minor_faults: u64,
}

/// getrusage of `who` (RUSAGE_SELF or RUSAGE_THREAD). Zeros if the call
/// fails, which it cannot for these two arguments.
fn resource_usage(who: libc::c_int) -> ResourceUsage {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` that outlives the call.
    let result = unsafe { libc::getrusage(who, &mut usage) };
    if result != 0 {
        return ResourceUsage {
            user: Duration::ZERO,
            system: Duration::ZERO,
            minor_faults: 0,
        };
    }
    ResourceUsage {
        user: time_value(usage.ru_utime),
        system: time_value(usage.ru_stime),
        minor_faults: u64::try_from(usage.ru_minflt).unwrap_or(0),
    }
}

fn time_value(value: libc::timeval) -> Duration {
    let seconds = u64::try_from(value.tv_sec).unwrap_or(0);
    let microseconds = u64::try_from(value.tv_usec).unwrap_or(0);
    Duration::from_secs(seconds) + Duration::from_micros(microseconds)
}

/// Round for JSON output (keeps reports readable; the raw counts are there
/// for anyone who needs more digits).
pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// Counters of one block device from /proc/diskstats (see the kernel's
/// Documentation/admin-guide/iostats.rst), to tell what reached the device:
/// how many writes and cache flushes, and how busy it was.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskCounters {
    pub writes: u64,
    pub sectors_written: u64,
    /// Milliseconds during which the device had I/O in flight.
    pub busy_ms: u64,
    pub flushes: u64,
}

impl DiskCounters {
    /// The counters of `device` (a name as in /proc/diskstats, e.g. "vda"),
    /// or `None` when it is not listed.
    pub fn read(device: &str) -> Option<DiskCounters> {
        let diskstats = std::fs::read_to_string("/proc/diskstats").ok()?;
        diskstats.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2) != Some(&device) {
                return None;
            }
            let field = |index: usize| -> u64 {
                fields
                    .get(index)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            Some(DiskCounters {
                writes: field(7),
                sectors_written: field(9),
                busy_ms: field(12),
                flushes: field(18),
            })
        })
    }

    pub fn since(self, earlier: DiskCounters) -> DiskCounters {
        DiskCounters {
            writes: self.writes.saturating_sub(earlier.writes),
            sectors_written: self.sectors_written.saturating_sub(earlier.sectors_written),
            busy_ms: self.busy_ms.saturating_sub(earlier.busy_ms),
            flushes: self.flushes.saturating_sub(earlier.flushes),
        }
    }

    /// Device activity over `wall`: writes/s, MB/s, flushes/s, busy %.
    pub fn describe(self, wall: Duration) -> String {
        let seconds = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        format!(
            "{:.0} writes/s, {:.1} MB/s, {:.0} flushes/s, busy {:.0}%",
            self.writes as f64 / seconds,
            mb_per_sec(self.sectors_written * 512, wall),
            self.flushes as f64 / seconds,
            self.busy_ms as f64 / 10.0 / seconds
        )
    }

    pub fn to_json(self, wall: Duration) -> Value {
        let seconds = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        json!({
            "writes": self.writes,
            "bytes_written": self.sectors_written * 512,
            "flushes": self.flushes,
            "busy_ms": self.busy_ms,
            "writes_per_sec": round(self.writes as f64 / seconds, 1),
            "flushes_per_sec": round(self.flushes as f64 / seconds, 1),
            "busy_percent": round(self.busy_ms as f64 / 10.0 / seconds, 1),
        })
    }
}

/// The /proc/diskstats name of the device behind `mount` ("/dev/vda" ->
/// "vda"), if it is a block device.
pub fn device_name(mount: &Mount) -> Option<String> {
    let name = mount.source.strip_prefix("/dev/")?;
    let resolved = std::fs::canonicalize(&mount.source).ok();
    let name = resolved
        .as_ref()
        .and_then(|path| path.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or(name);
    Some(name.to_owned())
}

/// What a report says about the machine and the data directory's disk.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: Option<u64>,
    pub kernel: String,
    /// Filesystem type and device of the data directory, from mountinfo.
    pub filesystem: Option<Mount>,
}

#[derive(Clone, Debug)]
pub struct Mount {
    pub mount_point: String,
    pub filesystem_type: String,
    pub source: String,
}

impl Machine {
    pub fn describe(data_dir: &Path) -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |count| count.get()),
            memory_bytes: memory_total_bytes(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|release| release.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            filesystem: mount_of(data_dir),
        }
    }

    pub fn summary(&self) -> String {
        let memory = self
            .memory_bytes
            .map_or("unknown memory".to_owned(), |bytes| {
                format!("{:.1} GiB memory", bytes as f64 / f64::from(1 << 30))
            });
        format!("{} CPUs, {memory}, kernel {}", self.cpus, self.kernel)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "kernel": self.kernel,
            "filesystem": self.filesystem.as_ref().map(|mount| json!({
                "type": mount.filesystem_type,
                "source": mount.source,
                "mount_point": mount.mount_point,
            })),
        })
    }
}

fn memory_total_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}

/// The mount holding `path`: the longest mount point that prefixes its
/// canonical form (the last one listed wins, as for stacked mounts).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - type source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|field| *field == "-") else {
            continue;
        };
        let (Some(mount_point), Some(filesystem_type), Some(source)) = (
            fields.get(4),
            fields.get(separator + 1),
            fields.get(separator + 2),
        ) else {
            continue;
        };
        let mount_point = unescape_mount_field(mount_point);
        if !canonical.starts_with(&mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|best| mount_point.len() >= best.mount_point.len());
        if longer {
            best = Some(Mount {
                mount_point,
                filesystem_type: (*filesystem_type).to_owned(),
                source: unescape_mount_field(source),
            });
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && let Some(octal) = bytes.get(index + 1..index + 4)
            && let Ok(text) = std::str::from_utf8(octal)
            && let Ok(value) = u8::from_str_radix(text, 8)
        {
            out.push(value);
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(
            unescape_mount_field(r"/mnt/with\040space"),
            "/mnt/with space"
        );
        assert_eq!(unescape_mount_field("/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn summary_quotes_percentiles() {
        let mut histogram = latency_histogram();
        for microseconds in 1..=1000 {
            record_latency(&mut histogram, Duration::from_micros(microseconds));
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.max_us, 1000);
    }

    #[test]
    fn the_root_mount_is_found() {
        let mount = mount_of(Path::new("/")).map(|mount| mount.mount_point);
        assert_eq!(mount.as_deref(), Some("/"));
    }
}
