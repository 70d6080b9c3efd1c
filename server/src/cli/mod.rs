//! Command line, environment and TOML configuration of the broker.
//!
//! Precedence: CLI flag > environment variable (`SLUICE_*`) > TOML file
//! (`--config`) > default. clap handles flag and environment; the file fills
//! whatever neither gave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a Kafka-compatible streaming log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a broker (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Consumer groups of a running cluster (like kafka-consumer-groups.sh).
    Groups(GroupsArgs),
}

/// `sluice groups ...`: a Kafka client, not a broker.
#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(subcommand)]
    pub command: GroupsCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List every consumer group with its state.
    List(BootstrapArgs),
    /// Show a group's state, members, committed offsets, log ends and lag.
    Describe {
        /// The group id.
        group: String,
        #[command(flatten)]
        target: BootstrapArgs,
    },
}

/// Which broker an admin subcommand asks first.
#[derive(Args, Debug, Clone)]
pub struct BootstrapArgs {
    /// host:port of any broker of the cluster.
    #[arg(long, env = "SLUICE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for Kafka clients [default: 127.0.0.1:9092].
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// host:port advertised to clients in metadata [default: the listen address].
    #[arg(long, env = "SLUICE_ADVERTISED")]
    pub advertised: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned thread each) [default: all cores].
    #[arg(long, env = "SLUICE_CORES")]
    pub cores: Option<usize>,
    /// Broker node id [default: 0].
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Log filter, e.g. info, debug, sluice_server=trace [default: info].
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Create topics on first use by Metadata or Produce [default: true].
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic [default: 1].
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// Partitions of the internal `__consumer_offsets` topic, fixed when it
    /// is first created [default: 50].
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_PARTITIONS")]
    pub offsets_topic_partitions: Option<i32>,
    /// How long a new group's first join window stays open for more
    /// members (Kafka's group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Committed offsets of a group with no members expire this long after
    /// it became empty (Kafka's offsets.retention.minutes, in ms)
    /// [default: 604800000 = 7 days].
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MS")]
    pub offsets_retention_ms: Option<u64>,
    /// How often the log cleaner looks for compacted partitions to clean
    /// (Kafka's log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, env = "SLUICE_LOG_CLEANER_INTERVAL_MS")]
    pub log_cleaner_interval_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    advertised: Option<String>,
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    node_id: Option<i32>,
    log_level: Option<String>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    offsets_topic_partitions: Option<i32>,
    group_initial_rebalance_delay_ms: Option<u64>,
    offsets_retention_ms: Option<u64>,
    log_cleaner_interval_ms: Option<u64>,
}

/// The broker's resolved configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// (host, port) given to clients.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub node_id: i32,
    pub log_level: String,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Largest request frame accepted (Kafka's socket.request.max.bytes).
    pub request_bytes_max: usize,
    /// Partitions of `__consumer_offsets` when the broker creates it.
    pub offsets_topic_partitions: i32,
    pub group_initial_rebalance_delay_ms: u64,
    pub offsets_retention_ms: u64,
    pub log_cleaner_interval_ms: u64,
}

impl BrokerConfig {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<BrokerConfig> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let advertised = args
            .advertised
            .or(file.advertised)
            .unwrap_or_else(|| listen.to_string());
        let (advertised_host, advertised_port) = split_host_port(&advertised)?;
        let cores = args.cores.or(file.cores).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|count| count.get())
                .unwrap_or(1)
        });
        anyhow::ensure!(
            (1..=1024).contains(&cores),
            "--cores must be between 1 and 1024, got {cores}"
        );
        let default_partitions = args
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(1);
        anyhow::ensure!(
            default_partitions >= 1,
            "--default-partitions must be at least 1"
        );
        let offsets_topic_partitions = args
            .offsets_topic_partitions
            .or(file.offsets_topic_partitions)
            .unwrap_or(50);
        anyhow::ensure!(
            (1..=1000).contains(&offsets_topic_partitions),
            "--offsets-topic-partitions must be between 1 and 1000"
        );
        Ok(BrokerConfig {
            listen,
            advertised_host,
            advertised_port,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            cores,
            node_id: args.node_id.or(file.node_id).unwrap_or(0),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            auto_create_topics: args
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            default_partitions,
            request_bytes_max: 100 << 20,
            offsets_topic_partitions,
            group_initial_rebalance_delay_ms: args
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(3000),
            offsets_retention_ms: args
                .offsets_retention_ms
                .or(file.offsets_retention_ms)
                .unwrap_or(7 * 24 * 3600 * 1000),
            log_cleaner_interval_ms: args
                .log_cleaner_interval_ms
                .or(file.log_cleaner_interval_ms)
                .unwrap_or(15_000)
                .max(1),
        })
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn split_host_port(address: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("advertised address {address:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in advertised address {address:?}"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}
