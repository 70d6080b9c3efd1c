//! Broker workloads: the flags that describe one (OpenMessaging-Benchmark
//! style), named presets, validation into a [`Workload`], and the key
//! distributions producers draw from.
//!
//! Every workload flag is optional: an explicit flag wins over the preset's
//! value, which wins over the default. Validation turns bad combinations
//! into one clear message each (clap already refuses malformed values).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::stats::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientEngine {
    /// The bench's own async Kafka client (kafka-protocol + tokio).
    Native,
    /// librdkafka through the rdkafka crate.
    Rdkafka,
}

impl ClientEngine {
    pub fn name(self) -> &'static str {
        match self {
            ClientEngine::Native => "native",
            ClientEngine::Rdkafka => "rdkafka",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyDistribution {
    /// No key: the producer fills one partition's batch at a time (sticky).
    None,
    /// Keys drawn uniformly from `--key-count` keys.
    Random,
    /// Keys drawn with a strong bias to the first keys (index = n * u^4:
    /// the first 10% of the keys get about 56% of the records).
    Skewed,
}

impl KeyDistribution {
    /// The flag's spelling (`--keys none|random|skewed`).
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::None => "none",
            KeyDistribution::Random => "random",
            KeyDistribution::Skewed => "skewed",
        }
    }
}

/// A target rate: records per second, bytes per second, or as fast as the
/// broker acknowledges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Max,
    RecordsPerSec(f64),
    MegabytesPerSec(f64),
}

impl Rate {
    /// `max`, `50000` (records/s) or `50MB/s` / `50mb` (10^6 bytes of
    /// values per second).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let lower = text.to_ascii_lowercase();
        let (number, megabytes) = match lower
            .strip_suffix("mb/s")
            .or_else(|| lower.strip_suffix("mb"))
        {
            Some(number) => (number.trim(), true),
            None => (lower.strip_suffix("/s").unwrap_or(&lower).trim(), false),
        };
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid rate {text:?}: expected `max`, records per second (e.g. 50000) or MB/s (e.g. 50MB/s)")
        })?;
        if !value.is_finite() || value <= 0.0 {
            return Err(format!("invalid rate {text:?}: it must be positive"));
        }
        Ok(if megabytes {
            Rate::MegabytesPerSec(value)
        } else {
            Rate::RecordsPerSec(value)
        })
    }

    /// Records per second over all producers, for `record_size_bytes`.
    pub fn records_per_sec(self, record_size_bytes: usize) -> Option<f64> {
        match self {
            Rate::Max => None,
            Rate::RecordsPerSec(rate) => Some(rate),
            Rate::MegabytesPerSec(rate) => Some(rate * 1e6 / record_size_bytes as f64),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Rate::Max => "max".to_owned(),
            Rate::RecordsPerSec(rate) => format!("{rate} records/s"),
            Rate::MegabytesPerSec(rate) => format!("{rate} MB/s"),
        }
    }
}

/// Acknowledgement level, as producers name it.
pub fn parse_acks(text: &str) -> Result<i16, String> {
    match text.trim() {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => Err(format!("invalid acks {other:?}: expected all, -1, 1 or 0")),
    }
}

/// Workload flags (all optional: see the module comment).
#[derive(Args, Clone, Debug, Default)]
pub struct WorkloadArgs {
    /// Named workload (see `sluice-bench presets`); explicit flags override it.
    #[arg(long)]
    pub preset: Option<String>,
    /// Number of topics [default: 1].
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic [default: 16].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Record value size in bytes (at least 8: values carry the send time) [default: 1024].
    #[arg(long)]
    pub record_size: Option<usize>,
    /// Producers per topic [default: 1].
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers per topic, each assigned a share of the partitions; 0 for none [default: 1].
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Target rate over all producers: `max`, records/s (`50000`) or `50MB/s` [default: max].
    #[arg(long, value_parser = Rate::parse)]
    pub rate: Option<Rate>,
    /// Measured seconds, after the warm-up [default: 10].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds: load runs but latencies are not recorded [default: 2].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// all (-1), 1 or 0 [default: all].
    #[arg(long, value_parser = parse_acks)]
    pub acks: Option<i16>,
    /// Key distribution [default: none].
    #[arg(long, value_enum)]
    pub keys: Option<KeyDistribution>,
    /// Distinct keys for `--keys random|skewed` [default: 10000].
    #[arg(long)]
    pub key_count: Option<u32>,
    /// Largest batch per partition in bytes (batch.size) [default: 131072].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// How long a batch may wait for more records, ms (linger.ms) [default: 0].
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// Produce requests in flight per connection [default: 5].
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Bytes a producer may buffer before it waits (buffer.memory) [default: 33554432].
    #[arg(long)]
    pub buffer_bytes: Option<usize>,
    /// Catch-up read: first produce this many bytes with no consumer, then
    /// measure consumers reading them from the start.
    #[arg(long)]
    pub backlog_bytes: Option<u64>,
    /// Client engine [default: native].
    #[arg(long, value_enum)]
    pub client: Option<ClientEngine>,
    /// Replication factor of the topics created [default: 1].
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Topic config for the topics created, KEY=VALUE (repeatable; added to
    /// the preset's).
    #[arg(long = "topic-config", value_parser = parse_topic_config)]
    pub topic_configs: Vec<(String, String)>,
}

fn parse_topic_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("invalid topic config {text:?}: expected KEY=VALUE")),
    }
}

/// A preset: a name, what it is for, and the flags it sets.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub set: fn(&mut WorkloadArgs),
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "16p-1k",
        description: "1 topic x 16 partitions x 1 KiB records, max rate, acks=all",
        set: |_| {},
    },
    Preset {
        name: "100p-1k",
        description: "1 topic x 100 partitions x 1 KiB records, max rate",
        set: |args| args.partitions = Some(100),
    },
    Preset {
        name: "1000p-1k",
        description: "1 topic x 1000 partitions x 1 KiB records, max rate, segment.bytes=16 MiB",
        set: |args| {
            args.partitions = Some(1000);
            // Sluice preallocates segment files in 64 MiB steps, capped at
            // segment.bytes: 1000 partitions x 64 MiB would need 64 GB of
            // disk before the first record; 16 MiB segments need 16 GB.
            args.topic_configs = vec![("segment.bytes".into(), "16777216".into())];
        },
    },
    Preset {
        name: "100b",
        description: "1 topic x 16 partitions x 100-byte records, max rate",
        set: |args| args.record_size = Some(100),
    },
    Preset {
        name: "50mb",
        description: "1 topic x 16 partitions x 1 KiB records at a fixed 50 MB/s",
        set: |args| args.rate = Some(Rate::MegabytesPerSec(50.0)),
    },
    Preset {
        name: "catchup",
        description: "produce a 2 GB backlog to 16 partitions, then measure a consumer reading it from the start",
        set: |args| {
            args.backlog_bytes = Some(2_000_000_000);
            args.duration = Some(0.0);
            args.warmup = Some(0.0);
        },
    },
    Preset {
        name: "smoke",
        description: "1 topic x 4 partitions x 256 B at 1000 records/s for 2 s (quick check)",
        set: |args| {
            args.partitions = Some(4);
            args.record_size = Some(256);
            args.rate = Some(Rate::RecordsPerSec(1000.0));
            args.duration = Some(2.0);
            args.warmup = Some(0.5);
        },
    },
];

pub fn preset(name: &str) -> anyhow::Result<&'static Preset> {
    PRESETS
        .iter()
        .find(|preset| preset.name == name)
        .with_context(|| {
            let names: Vec<&str> = PRESETS.iter().map(|preset| preset.name).collect();
            format!("unknown preset {name:?}; presets: {}", names.join(", "))
        })
}

/// A validated workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub preset: Option<String>,
    pub topics: u32,
    pub partitions: u32,
    pub record_size_bytes: usize,
    pub producers_per_topic: u32,
    pub consumers_per_topic: u32,
    pub rate: Rate,
    pub duration: Duration,
    pub warmup: Duration,
    pub acks: i16,
    pub keys: KeyDistribution,
    pub key_count: u32,
    pub batch_size_bytes: usize,
    pub linger: Duration,
    pub in_flight_max: u32,
    pub buffer_bytes_max: usize,
    pub backlog_bytes: Option<u64>,
    pub client: ClientEngine,
    pub replication_factor: i16,
    pub topic_configs: Vec<(String, String)>,
}

/// Largest record value accepted (the broker's default max.message.bytes
/// is about 1 MiB; more only makes sense with broker changes).
const RECORD_SIZE_MAX: usize = 16 << 20;
const PARTITIONS_MAX: u32 = 100_000;

fn seconds(name: &str, value: f64, allow_zero: bool) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        bail!(
            "--{name} must be a {} number of seconds, got {value}",
            if allow_zero {
                "non-negative"
            } else {
                "positive"
            }
        );
    }
    Ok(Duration::from_secs_f64(value))
}

impl WorkloadArgs {
    /// Apply the preset, the defaults and the checks.
    pub fn resolve(&self) -> anyhow::Result<Workload> {
        let mut args = WorkloadArgs::default();
        if let Some(name) = &self.preset {
            (preset(name)?.set)(&mut args);
        }
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                self.$field.or(args.$field).unwrap_or($default)
            };
        }
        let backlog_bytes = self.backlog_bytes.or(args.backlog_bytes);
        let workload = Workload {
            preset: self.preset.clone(),
            topics: pick!(topics, 1),
            partitions: pick!(partitions, 16),
            record_size_bytes: pick!(record_size, 1024),
            producers_per_topic: pick!(producers, 1),
            consumers_per_topic: pick!(consumers, 1),
            rate: pick!(rate, Rate::Max),
            duration: seconds("duration", pick!(duration, 10.0), backlog_bytes.is_some())?,
            warmup: seconds("warmup", pick!(warmup, 2.0), true)?,
            acks: pick!(acks, -1),
            keys: pick!(keys, KeyDistribution::None),
            key_count: pick!(key_count, 10_000),
            batch_size_bytes: pick!(batch_size, 128 << 10),
            linger: {
                let linger_ms = pick!(linger_ms, 0.0);
                if !linger_ms.is_finite() || linger_ms < 0.0 {
                    bail!("--linger-ms must be a non-negative number, got {linger_ms}");
                }
                Duration::from_secs_f64(linger_ms / 1000.0)
            },
            in_flight_max: pick!(max_in_flight, 5),
            buffer_bytes_max: pick!(buffer_bytes, 32 << 20),
            backlog_bytes,
            client: pick!(client, ClientEngine::Native),
            replication_factor: pick!(replication_factor, 1),
            topic_configs: {
                // A flag replaces the preset's value for the same key.
                let mut configs = args.topic_configs.clone();
                for (key, value) in &self.topic_configs {
                    configs.retain(|(known, _)| known != key);
                    configs.push((key.clone(), value.clone()));
                }
                configs
            },
        };
        workload.check()?;
        Ok(workload)
    }
}

impl Workload {
    fn check(&self) -> anyhow::Result<()> {
        if self.topics == 0 || self.topics > 10_000 {
            bail!("--topics must be between 1 and 10000, got {}", self.topics);
        }
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            bail!(
                "--partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                self.partitions
            );
        }
        if self.record_size_bytes < crate::kafka::records::TIMESTAMP_SIZE
            || self.record_size_bytes > RECORD_SIZE_MAX
        {
            bail!(
                "--record-size must be between {} bytes (each value starts with its 8-byte send \
                 time) and {RECORD_SIZE_MAX}, got {}",
                crate::kafka::records::TIMESTAMP_SIZE,
                self.record_size_bytes
            );
        }
        if self.producers_per_topic == 0 {
            bail!("--producers must be at least 1");
        }
        if self.consumers_per_topic > self.partitions {
            bail!(
                "--consumers ({}) exceeds --partitions ({}): consumers are assigned partitions \
                 manually and the extra ones would have none",
                self.consumers_per_topic,
                self.partitions
            );
        }
        if self.backlog_bytes.is_some() && self.consumers_per_topic == 0 {
            bail!("--backlog-bytes measures consumers: it needs --consumers of at least 1");
        }
        if self.backlog_bytes == Some(0) {
            bail!("--backlog-bytes must be positive");
        }
        if self.key_count == 0 {
            bail!("--key-count must be at least 1");
        }
        let smallest_batch = self.record_size_bytes + 100;
        if self.batch_size_bytes < smallest_batch {
            bail!(
                "--batch-size ({}) must hold at least one record ({smallest_batch} bytes with \
                 headers)",
                self.batch_size_bytes
            );
        }
        if self.in_flight_max == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        if self.buffer_bytes_max < self.batch_size_bytes {
            bail!(
                "--buffer-bytes ({}) must be at least --batch-size ({})",
                self.buffer_bytes_max,
                self.batch_size_bytes
            );
        }
        if self.replication_factor < 1 {
            bail!("--replication-factor must be at least 1");
        }
        Ok(())
    }

    /// Records per second of each producer (None = max rate).
    pub fn rate_per_producer(&self) -> Option<f64> {
        let producers = f64::from(self.topics * self.producers_per_topic);
        self.rate
            .records_per_sec(self.record_size_bytes)
            .map(|rate| rate / producers)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} topic(s) x {} partitions x {} B records, {} producer(s) and {} consumer(s) per \
             topic, rate {}, acks {}, keys {}, batch {} B, linger {} ms, {} in flight, \
             client {}{}, warm-up {} s, duration {} s",
            self.topics,
            self.partitions,
            self.record_size_bytes,
            self.producers_per_topic,
            self.consumers_per_topic,
            self.rate.describe(),
            acks_name(self.acks),
            self.keys.name(),
            self.batch_size_bytes,
            self.linger.as_secs_f64() * 1000.0,
            self.in_flight_max,
            self.client.name(),
            self.backlog_bytes
                .map(|bytes| format!(", catch-up read of a {:.2} GB backlog", bytes as f64 / 1e9))
                .unwrap_or_default(),
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64(),
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "preset": self.preset,
            "topics": self.topics,
            "partitions": self.partitions,
            "record_size_bytes": self.record_size_bytes,
            "producers_per_topic": self.producers_per_topic,
            "consumers_per_topic": self.consumers_per_topic,
            "rate": self.rate.describe(),
            "rate_records_per_sec": self.rate.records_per_sec(self.record_size_bytes),
            "duration_secs": self.duration.as_secs_f64(),
            "warmup_secs": self.warmup.as_secs_f64(),
            "acks": acks_name(self.acks),
            "keys": self.keys.name(),
            "key_count": self.key_count,
            "batch_size_bytes": self.batch_size_bytes,
            "linger_ms": self.linger.as_secs_f64() * 1000.0,
            "max_in_flight": self.in_flight_max,
            "buffer_bytes": self.buffer_bytes_max,
            "backlog_bytes": self.backlog_bytes,
            "client": self.client.name(),
            "replication_factor": self.replication_factor,
            "topic_configs": self.topic_configs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        })
    }
}

pub fn acks_name(acks: i16) -> &'static str {
    match acks {
        -1 => "all",
        1 => "1",
        _ => "0",
    }
}

/// The keys a producer draws from, with the hash that picks their
/// partition (FNV-1a: any stable hash will do for load; it is not Kafka's
/// murmur2, so keyed records land on other partitions than a Java client
/// would put them).
#[derive(Debug)]
pub struct Keys {
    pub distribution: KeyDistribution,
    keys: Vec<(Vec<u8>, u64)>,
}

impl Keys {
    pub fn new(distribution: KeyDistribution, count: u32) -> Keys {
        let keys = match distribution {
            KeyDistribution::None => Vec::new(),
            _ => (0..count)
                .map(|index| {
                    let key = format!("key-{index:08}").into_bytes();
                    let hash = fnv1a(&key);
                    (key, hash)
                })
                .collect(),
        };
        Keys { distribution, keys }
    }

    /// The next key and its partition hash, or `None` for unkeyed records.
    pub fn choose(&self, random: &mut SplitMix64) -> Option<(&[u8], u64)> {
        if self.keys.is_empty() {
            return None;
        }
        let count = self.keys.len();
        let index = match self.distribution {
            KeyDistribution::None => return None,
            KeyDistribution::Random => (random.next_u64() % count as u64) as usize,
            KeyDistribution::Skewed => {
                let uniform = random.next_f64();
                ((uniform.powi(4) * count as f64) as usize).min(count - 1)
            }
        };
        self.keys
            .get(index)
            .map(|(key, hash)| (key.as_slice(), *hash))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> WorkloadArgs {
        WorkloadArgs::default()
    }

    #[test]
    fn defaults_are_the_16_partition_1_kib_workload() {
        let workload = args().resolve().expect("defaults are valid");
        assert_eq!(workload.partitions, 16);
        assert_eq!(workload.record_size_bytes, 1024);
        assert_eq!(workload.rate, Rate::Max);
        assert_eq!(workload.acks, -1);
        assert_eq!(workload.client, ClientEngine::Native);
    }

    /// The report quotes key distributions as the flag spells them, so that
    /// a line of it can be pasted back as `--keys VALUE`.
    #[test]
    fn key_distributions_are_named_as_the_flag_spells_them() {
        for keys in KeyDistribution::value_variants() {
            let spelling = keys.to_possible_value().expect("a flag value");
            assert_eq!(keys.name(), spelling.get_name());
        }
        let workload = args().resolve().expect("defaults are valid");
        let described = workload.describe();
        assert!(described.contains("keys none,"), "{described}");
        assert_eq!(workload.to_json()["keys"], "none");
        let skewed = WorkloadArgs {
            keys: Some(KeyDistribution::Skewed),
            ..args()
        };
        let described = skewed.resolve().expect("valid").describe();
        assert!(described.contains("keys skewed,"), "{described}");
    }

    #[test]
    fn presets_set_their_values_and_flags_override_them() {
        let mut with_preset = args();
        with_preset.preset = Some("1000p-1k".into());
        assert_eq!(with_preset.resolve().expect("valid").partitions, 1000);
        with_preset.partitions = Some(500);
        assert_eq!(with_preset.resolve().expect("valid").partitions, 500);

        let mut small = args();
        small.preset = Some("100b".into());
        assert_eq!(small.resolve().expect("valid").record_size_bytes, 100);

        let mut fixed = args();
        fixed.preset = Some("50mb".into());
        let workload = fixed.resolve().expect("valid");
        let rate = workload.rate_per_producer().expect("a fixed rate");
        assert!((rate - 50e6 / 1024.0).abs() < 1e-6);
    }

    #[test]
    fn every_preset_is_valid() {
        for preset in PRESETS {
            let mut with_preset = args();
            with_preset.preset = Some(preset.name.into());
            with_preset
                .resolve()
                .unwrap_or_else(|error| panic!("preset {}: {error:#}", preset.name));
        }
    }

    #[test]
    fn an_unknown_preset_lists_the_known_ones() {
        let mut unknown = args();
        unknown.preset = Some("nope".into());
        let message = format!("{:#}", unknown.resolve().expect_err("unknown preset"));
        assert!(message.contains("unknown preset \"nope\""), "{message}");
        assert!(message.contains("16p-1k"), "{message}");
    }

    #[test]
    fn bad_combinations_are_refused_with_the_flag_named() {
        let cases: Vec<(WorkloadArgs, &str)> = vec![
            (
                WorkloadArgs {
                    partitions: Some(0),
                    ..args()
                },
                "--partitions",
            ),
            (
                WorkloadArgs {
                    record_size: Some(4),
                    ..args()
                },
                "--record-size",
            ),
            (
                WorkloadArgs {
                    producers: Some(0),
                    ..args()
                },
                "--producers",
            ),
            (
                WorkloadArgs {
                    partitions: Some(2),
                    consumers: Some(3),
                    ..args()
                },
                "--consumers (3) exceeds --partitions (2)",
            ),
            (
                WorkloadArgs {
                    duration: Some(0.0),
                    ..args()
                },
                "--duration",
            ),
            (
                WorkloadArgs {
                    duration: Some(f64::NAN),
                    ..args()
                },
                "--duration",
            ),
            (
                WorkloadArgs {
                    warmup: Some(-1.0),
                    ..args()
                },
                "--warmup",
            ),
            (
                WorkloadArgs {
                    batch_size: Some(512),
                    ..args()
                },
                "--batch-size",
            ),
            (
                WorkloadArgs {
                    max_in_flight: Some(0),
                    ..args()
                },
                "--max-in-flight",
            ),
            (
                WorkloadArgs {
                    linger_ms: Some(-1.0),
                    ..args()
                },
                "--linger-ms",
            ),
            (
                WorkloadArgs {
                    key_count: Some(0),
                    ..args()
                },
                "--key-count",
            ),
            (
                WorkloadArgs {
                    backlog_bytes: Some(1000),
                    consumers: Some(0),
                    ..args()
                },
                "--backlog-bytes",
            ),
        ];
        for (case, expected) in cases {
            let message = format!("{:#}", case.resolve().expect_err(expected));
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    #[test]
    fn rates_parse_in_three_forms() {
        assert_eq!(Rate::parse("max"), Ok(Rate::Max));
        assert_eq!(Rate::parse("50000"), Ok(Rate::RecordsPerSec(50_000.0)));
        assert_eq!(Rate::parse("50MB/s"), Ok(Rate::MegabytesPerSec(50.0)));
        assert_eq!(Rate::parse("2.5mb"), Ok(Rate::MegabytesPerSec(2.5)));
        assert!(
            Rate::parse("fast")
                .expect_err("invalid")
                .contains("expected `max`")
        );
        assert!(
            Rate::parse("-3")
                .expect_err("negative")
                .contains("positive")
        );
        assert!(Rate::parse("0").is_err());
    }

    #[test]
    fn topic_configs_parse_and_add_to_the_preset() {
        assert_eq!(
            parse_topic_config("retention.ms = 1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert!(parse_topic_config("nokey").is_err());
        assert!(parse_topic_config("=1").is_err());
        let mut with_preset = args();
        with_preset.preset = Some("1000p-1k".into());
        with_preset.topic_configs = vec![("segment.bytes".into(), "33554432".into())];
        let workload = with_preset.resolve().expect("valid");
        assert_eq!(
            workload.topic_configs,
            vec![("segment.bytes".to_owned(), "33554432".to_owned())]
        );
    }

    #[test]
    fn acks_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("1"), Ok(1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn key_distributions_behave_as_described() {
        let mut random = SplitMix64::new(7);
        assert!(
            Keys::new(KeyDistribution::None, 100)
                .choose(&mut random)
                .is_none()
        );
        let uniform = Keys::new(KeyDistribution::Random, 100);
        let skewed = Keys::new(KeyDistribution::Skewed, 100);
        let share_of_first_tenth = |keys: &Keys, random: &mut SplitMix64| {
            let hits = (0..10_000)
                .filter(|_| {
                    let (key, _) = keys.choose(random).expect("a key");
                    key < b"key-00000010".as_slice()
                })
                .count();
            hits as f64 / 10_000.0
        };
        let uniform_share = share_of_first_tenth(&uniform, &mut random);
        let skewed_share = share_of_first_tenth(&skewed, &mut random);
        assert!((0.07..0.13).contains(&uniform_share), "{uniform_share}");
        assert!((0.5..0.62).contains(&skewed_share), "{skewed_share}");
    }
}
