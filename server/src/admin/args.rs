//! Command line arguments of the admin subcommands (`sluice topic`,
//! `sluice group`, `sluice cluster`, `sluice produce`, `sluice consume`).
//! Parsing only: values are checked by clap's value parsers here, and the
//! broker is asked nothing until a subcommand runs.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::output::Format;
use super::security::{SaslMechanism, SecurityProtocol};

/// Where the admin subcommands connect and how they print; accepted
/// anywhere after the subcommand.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection and output")]
pub struct CommonArgs {
    /// host:port of any broker of the cluster (a comma-separated list: the
    /// first that answers) [default: the profile's `bootstrap`, else
    /// 127.0.0.1:9092].
    #[arg(long, env = "SLUICE_BOOTSTRAP", global = true)]
    pub bootstrap: Option<String>,
    /// Profile file, TOML with `bootstrap = "host:port"` [default:
    /// $XDG_CONFIG_HOME/sluice/profile.toml, else
    /// ~/.config/sluice/profile.toml, when it exists].
    #[arg(long, env = "SLUICE_PROFILE", global = true)]
    pub profile: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Kafka's security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or
    /// SASL_SSL [default: the profile's `security_protocol`, else
    /// PLAINTEXT].
    #[arg(long, env = "SLUICE_SECURITY_PROTOCOL", value_enum, global = true)]
    pub security_protocol: Option<SecurityProtocol>,
    /// Kafka's sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    /// [default: the profile's `sasl_mechanism`, else SCRAM-SHA-512].
    #[arg(long, env = "SLUICE_SASL_MECHANISM", value_enum, global = true)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user [default: the profile's `sasl_username`].
    #[arg(long, env = "SLUICE_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,
    /// The SASL password; prefer SLUICE_SASL_PASSWORD or the profile's
    /// `sasl_password` to keep it off the command line.
    #[arg(
        long,
        env = "SLUICE_SASL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub sasl_password: Option<String>,
    /// PEM CA certificates the broker's certificate must chain to (SSL,
    /// SASL_SSL) [default: the profile's `ssl_ca_location`].
    #[arg(long, env = "SLUICE_SSL_CA_LOCATION", global = true)]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate, for listeners that ask for one [default:
    /// the profile's `ssl_certificate_location`].
    #[arg(long, env = "SLUICE_SSL_CERTIFICATE_LOCATION", global = true)]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of --ssl-certificate-location [default: the
    /// profile's `ssl_key_location`].
    #[arg(long, env = "SLUICE_SSL_KEY_LOCATION", global = true)]
    pub ssl_key_location: Option<PathBuf>,
}

/// `sluice topic ...`
#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create one or more topics.
    Create(TopicCreateArgs),
    /// List the topics of the cluster.
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(long, short = 'i')]
        internal: bool,
    },
    /// Partitions (leader, replicas, ISR, log start and end) and configs of
    /// topics.
    Describe {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or delete topic configs (IncrementalAlterConfigs).
    AlterConfig(TopicAlterConfigArgs),
    /// Add partitions to topics.
    AddPartitions(TopicAddPartitionsArgs),
    /// Delete topics and their data.
    Delete {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Move partitions to other brokers or change their replication
    /// factor (AlterPartitionReassignments); the data is copied while the
    /// topic serves.
    Reassign(TopicReassignArgs),
    /// Reassignments in progress (ListPartitionReassignments).
    Reassignments {
        /// Topic names [default: every topic].
        topics: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["replicas", "replication_factor", "cancel"])))]
pub struct TopicReassignArgs {
    /// Topic name.
    pub topic: String,
    /// A partition to reassign (repeatable) [default: every partition].
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<i32>,
    /// The new replica list, broker ids, the preferred leader first
    /// (e.g. 2,3,4).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub replicas: Option<Vec<i32>>,
    /// The new replication factor: replicas are added on the brokers
    /// holding the fewest of the topic's replicas, or removed from the end
    /// of the list (never the leader).
    #[arg(long, short = 'r', value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    /// Cancel the reassignments in progress: back to the replicas before.
    #[arg(long)]
    pub cancel: bool,
    /// Wait until the data is moved (progress on a terminal).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct TopicCreateArgs {
    /// Topic names.
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// Partitions of each topic [default: the broker's num.partitions].
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// Replicas of each partition [default: the broker's
    /// default.replication.factor].
    #[arg(long, short = 'r', value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    /// A topic config, key=value (repeatable), e.g. -c retention.ms=60000.
    #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Ask the broker to validate only; nothing is created.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct TopicAlterConfigArgs {
    /// Topic name.
    pub topic: String,
    /// Set a config, key=value (repeatable).
    #[arg(long = "set", short = 's', value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Delete a config (back to the broker default) (repeatable).
    #[arg(long = "delete", short = 'd')]
    pub delete: Vec<String>,
    /// Ask the broker to validate only; nothing is changed.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct TopicAddPartitionsArgs {
    /// Topic names.
    #[arg(required = true)]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub count: PartitionCount,
}

/// How many partitions `add-partitions` adds: exactly one of the two.
#[derive(Args, Debug, Clone, Copy)]
#[group(required = true, multiple = false)]
pub struct PartitionCount {
    /// Partitions to add to each topic.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(i32).range(1..))]
    pub num: Option<i32>,
    /// Partition count each topic grows to.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub total: Option<i32>,
}

/// `sluice group ...` (also `sluice groups ...`)
#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List every consumer group with its state.
    List,
    /// Show a group's state, members, committed offsets, log ends and lag.
    Describe {
        /// The group id.
        group: String,
    },
    /// Delete groups with no members, and their committed offsets.
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset a group's committed offsets (the group must have no members).
    Seek(GroupSeekArgs),
}

#[derive(Args, Debug)]
pub struct GroupSeekArgs {
    /// The group id.
    pub group: String,
    /// Topic to reset, every partition of it (repeatable) [default: every
    /// topic the group has committed offsets for].
    #[arg(long = "topic", short = 't')]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub to: SeekTo,
    /// Show the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where `group seek` moves each partition's committed offset.
#[derive(Args, Debug, Clone, Copy)]
#[group(required = true, multiple = false)]
pub struct SeekTo {
    /// To the log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    pub to_latest: bool,
    /// To the first record with a timestamp at or after this (ms since the
    /// epoch); the log end if there is none.
    #[arg(long, value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// To this offset, clamped to the partition's log start and end.
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// By N from the committed offset (negative: back), clamped to the log
    /// start and end.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
}

/// `sluice transactions ...` (also `sluice txn ...`)
#[derive(Args, Debug)]
pub struct TransactionsArgs {
    #[command(subcommand)]
    pub command: TransactionsCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum TransactionsCommand {
    /// List every transactional id the cluster's coordinators know, with
    /// its producer id and state.
    List,
    /// Show transactional ids' producer id and epoch, state, timeout, and
    /// the partitions of the open transaction.
    Describe {
        /// Transactional ids.
        #[arg(required = true)]
        transactional_ids: Vec<String>,
    },
}

/// `sluice cluster ...`
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers.
    Info,
    /// Whether every partition has a leader (exit code 1 otherwise).
    Health,
    /// Every broker (address, rack, active controller, fenced), the
    /// partitions each leads and the replicas it holds, partitions without
    /// a leader (exit code 1 when there is any).
    Status,
}

/// `acks` of `sluice produce`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Every in-sync replica has the records (acks=-1).
    #[default]
    All,
    /// The leader has the records (acks=1).
    #[value(name = "1")]
    Leader,
    /// No answer at all (acks=0): errors go unnoticed.
    #[value(name = "0")]
    None,
}

/// `sluice produce TOPIC`
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Split each line at the first SEPARATOR into key and value (a line
    /// without it is an error).
    #[arg(long, short = 'K', value_name = "SEPARATOR")]
    pub key_separator: Option<String>,
    /// A header on every record, key=value (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition [default: keyed records by the
    /// Java client's murmur2 hash of the key, others round-robin].
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Acknowledgement the broker waits for: all, 1 or 0.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// How long a line waits for more lines to batch with.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `sluice consume TOPIC`
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Where to start: earliest, latest or an offset [default: the group's
    /// committed offsets with --group, else earliest; a partition without a
    /// commit starts here].
    #[arg(long, short = 'o', value_parser = parse_start_offset, conflicts_with = "timestamp")]
    pub offset: Option<StartOffset>,
    /// Start at the first record with a timestamp at or after this (ms
    /// since the epoch).
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Read from and commit to this consumer group's offsets. The group is
    /// not joined: every selected partition is read, so do not run this
    /// beside live members of the same group.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Read only this partition (repeatable) [default: all].
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Vec<i32>,
    /// Stop at the end of every partition instead of waiting for more.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// How each record is printed with the table format: %v value, %k key,
    /// %t topic, %p partition, %o offset, %T timestamp (ms), %h headers
    /// (k=v,...), \n newline, \t tab, %% percent.
    #[arg(long, short = 'f', default_value = "%v\\n", value_name = "TEMPLATE")]
    pub record_format: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where `consume` starts in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    At(i64),
}

/// `key=value` -> (key, value); the value may contain `=`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

fn parse_start_offset(text: &str) -> Result<StartOffset, String> {
    match text {
        "earliest" | "beginning" | "start" => Ok(StartOffset::Earliest),
        "latest" | "end" => Ok(StartOffset::Latest),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(StartOffset::At(offset)),
            _ => Err(format!(
                "{text:?} is not earliest, latest or an offset (a number >= 0)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("cleanup.policy=compact"),
            Ok(("cleanup.policy".into(), "compact".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn start_offsets_are_words_or_numbers() {
        assert_eq!(parse_start_offset("earliest"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start_offset("latest"), Ok(StartOffset::Latest));
        assert_eq!(parse_start_offset("42"), Ok(StartOffset::At(42)));
        assert!(parse_start_offset("-1").is_err());
        assert!(parse_start_offset("soon").is_err());
    }
}
