//! What a broker run measures while it runs: a shared clock, latency
//! recorders and record counters that client threads update and the main
//! thread samples once per second.
//!
//! Client threads (native producer / consumer runtimes, rdkafka delivery
//! callbacks and consumer threads) record into [`Recorder`]s: counters are
//! atomics, histograms sit behind a mutex taken once per acknowledged
//! request or fetched response, not per record.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::measure;

/// One time base for every thread of a run: nanoseconds since the run
/// started, convertible to wall-clock nanoseconds for the timestamps that
/// travel inside record values.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_wall_ns: u64,
    /// Records due to be sent before this (ns since start) are warm-up: they
    /// are counted but not put in the latency histograms.
    pub measure_from_ns: u64,
}

impl Clock {
    pub fn start(warmup: Duration) -> Clock {
        let start_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, duration_ns);
        Clock {
            start: Instant::now(),
            start_wall_ns,
            measure_from_ns: duration_ns(warmup),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        duration_ns(self.start.elapsed())
    }

    /// Wall-clock nanoseconds of `ns` since the start.
    pub fn wall_ns(&self, ns: u64) -> u64 {
        self.start_wall_ns + ns
    }

    /// The inverse of [`Clock::wall_ns`] (0 for times before the start).
    pub fn since_start_ns(&self, wall_ns: u64) -> u64 {
        wall_ns.saturating_sub(self.start_wall_ns)
    }

    pub fn is_measured(&self, ns: u64) -> bool {
        ns >= self.measure_from_ns
    }
}

pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts and a latency histogram for one side of a run (producers or
/// consumers).
#[derive(Debug)]
pub struct Recorder {
    /// Records acknowledged (producers) or received (consumers), warm-up
    /// included.
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Records the broker refused (producers) or partition errors in fetch
    /// responses (consumers).
    pub errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    histograms: Mutex<Histograms>,
}

#[derive(Debug)]
struct Histograms {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            histograms: Mutex::new(Histograms {
                total: measure::latency_histogram(),
                interval: measure::latency_histogram(),
            }),
        }
    }

    pub fn count(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count `records` failed records and keep the first error message.
    pub fn error(&self, records: u64, message: impl FnOnce() -> String) {
        self.errors.fetch_add(records, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(message());
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }

    /// Record latencies in microseconds (one lock for all of them).
    pub fn record_latencies(&self, latencies_us: impl IntoIterator<Item = u64>) {
        let Ok(mut histograms) = self.histograms.lock() else {
            return;
        };
        for latency_us in latencies_us {
            let latency_us = latency_us.max(1);
            histograms.total.saturating_record(latency_us);
            histograms.interval.saturating_record(latency_us);
        }
    }

    /// The interval histogram since the previous call (then reset).
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut taken = measure::latency_histogram();
        if let Ok(mut histograms) = self.histograms.lock() {
            std::mem::swap(&mut taken, &mut histograms.interval);
        }
        taken
    }

    /// Every latency recorded in the measured window.
    pub fn total(&self) -> Histogram<u64> {
        match self.histograms.lock() {
            Ok(histograms) => histograms.total.clone(),
            Err(_) => measure::latency_histogram(),
        }
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl Counts {
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            records: self.records.saturating_sub(earlier.records),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// Percentiles every broker report quotes (microseconds).
pub const PERCENTILES: [(&str, f64); 6] = [
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A latency histogram reduced to what reports show.
#[derive(Clone, Debug, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    /// Values at [`PERCENTILES`], in the same order, microseconds.
    pub values_us: [u64; 6],
    pub max_us: u64,
    pub mean_us: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let mut values_us = [0; 6];
        if !histogram.is_empty() {
            for (value, (_, quantile)) in values_us.iter_mut().zip(PERCENTILES) {
                *value = histogram.value_at_quantile(quantile);
            }
        }
        Percentiles {
            count: histogram.len(),
            values_us,
            max_us: histogram.max(),
            mean_us: if histogram.is_empty() {
                0.0
            } else {
                histogram.mean()
            },
        }
    }

    pub fn value_us(&self, name: &str) -> Option<u64> {
        if name == "max" {
            return Some(self.max_us);
        }
        PERCENTILES
            .iter()
            .position(|(label, _)| *label == name)
            .map(|index| self.values_us[index])
    }

    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("count".into(), json!(self.count));
        for ((label, _), value) in PERCENTILES.iter().zip(self.values_us) {
            object.insert(format!("{}_us", label.replace('.', "_")), json!(value));
        }
        object.insert("max_us".into(), json!(self.max_us));
        object.insert("mean_us".into(), json!(measure::round(self.mean_us, 1)));
        Value::Object(object)
    }
}

/// One second of a run, as the progress line shows it and the throughput
/// plot draws it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the run started, at the end of the interval.
    pub at_secs: f64,
    pub produced: Counts,
    pub consumed: Counts,
    pub interval_secs: f64,
    pub publish_p99_us: Option<u64>,
    pub end_to_end_p99_us: Option<u64>,
}

impl Sample {
    pub fn produced_mb_per_sec(&self) -> f64 {
        self.produced.bytes as f64 / self.interval_secs.max(f64::MIN_POSITIVE) / 1e6
    }

    pub fn consumed_mb_per_sec(&self) -> f64 {
        self.consumed.bytes as f64 / self.interval_secs.max(f64::MIN_POSITIVE) / 1e6
    }

    pub fn progress_line(&self, phase: &str) -> String {
        let rate = |count: u64| count as f64 / self.interval_secs.max(f64::MIN_POSITIVE);
        let p99 = |value: Option<u64>| value.map_or("-".to_owned(), measure::milliseconds);
        format!(
            "[{:>5.1}s {phase}] produce {:>9.0} rec/s {:>7.1} MB/s p99 {:>10} | consume {:>9.0} rec/s {:>7.1} MB/s e2e p99 {:>10} | errors {}",
            self.at_secs,
            rate(self.produced.records),
            self.produced_mb_per_sec(),
            p99(self.publish_p99_us),
            rate(self.consumed.records),
            self.consumed_mb_per_sec(),
            p99(self.end_to_end_p99_us),
            self.produced.errors + self.consumed.errors,
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "at_secs": measure::round(self.at_secs, 3),
            "produced_records": self.produced.records,
            "produced_bytes": self.produced.bytes,
            "produced_mb_per_sec": measure::round(self.produced_mb_per_sec(), 2),
            "consumed_records": self.consumed.records,
            "consumed_bytes": self.consumed.bytes,
            "consumed_mb_per_sec": measure::round(self.consumed_mb_per_sec(), 2),
            "publish_p99_us": self.publish_p99_us,
            "end_to_end_p99_us": self.end_to_end_p99_us,
        })
    }
}

/// Deterministic, fast pseudo-random numbers (SplitMix64) for keys; the
/// workload does not need cryptographic or even high-quality randomness.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_quoted_in_order() {
        let recorder = Recorder::new();
        // Below 2048 the histogram (3 significant digits) is exact.
        recorder.record_latencies(1..=1000);
        let percentiles = Percentiles::of(&recorder.total());
        assert_eq!(percentiles.count, 1000);
        assert_eq!(percentiles.value_us("p50"), Some(500));
        assert_eq!(percentiles.value_us("p99"), Some(990));
        assert_eq!(percentiles.value_us("p99.9"), Some(999));
        let ordered = percentiles
            .values_us
            .windows(2)
            .all(|pair| pair[0] <= pair[1]);
        assert!(ordered);
        assert_eq!(percentiles.max_us, 1000);
        // The interval histogram is reset by taking it; the total is not.
        assert_eq!(recorder.take_interval().len(), 1000);
        assert_eq!(recorder.take_interval().len(), 0);
        assert_eq!(recorder.total().len(), 1000);
    }

    #[test]
    fn the_clock_round_trips_wall_time() {
        let clock = Clock::start(Duration::from_secs(1));
        let now = clock.now_ns();
        assert_eq!(clock.since_start_ns(clock.wall_ns(now)), now);
        assert!(!clock.is_measured(now.min(999_999_999)));
        assert!(clock.is_measured(1_000_000_000));
    }
}
