//! Command line, environment and TOML configuration of the broker.
//!
//! Precedence: CLI flag > environment variable (`SLUICE_*`) > TOML file
//! (`--config`) > default. clap handles flag and environment; the file fills
//! whatever neither gave. Every value is checked here, before the broker
//! touches anything: a bad one is a configuration error (exit code 2).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use tracing_subscriber::filter::LevelFilter;

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

// Parsed once per process: the size of the serve variant (every broker
// flag) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a broker (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Topics: create, list, describe, alter-config, add-partitions, delete.
    Topic(crate::admin::args::TopicArgs),
    /// Consumer groups: list, describe, delete, seek (like
    /// kafka-consumer-groups.sh).
    #[command(alias = "groups")]
    Group(crate::admin::args::GroupArgs),
    /// The cluster: brokers, controller, health.
    Cluster(crate::admin::args::ClusterArgs),
    /// Transactions: list, describe (like kafka-transactions.sh).
    #[command(alias = "txn")]
    Transactions(crate::admin::args::TransactionsArgs),
    /// SCRAM users: create, list, delete; bootstrap (offline, into a
    /// stopped node's data directory).
    User(crate::admin::user::UserArgs),
    /// ACL bindings: create, list, delete (like kafka-acls.sh).
    Acl(crate::admin::acl::AclArgs),
    /// Write stdin lines to a topic, one record per line.
    Produce(crate::admin::args::ProduceArgs),
    /// Print a topic's records to stdout, one per line.
    Consume(crate::admin::args::ConsumeArgs),
    /// Start a local cluster: one broker process per node on 127.0.0.1,
    /// stopped together by Ctrl-C.
    DevCluster(crate::devcluster::DevClusterArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// host:port to listen on for Kafka clients; a host name is resolved
    /// at start (its first IPv4 address, else its first address); only
    /// one process may listen on an address [default: 127.0.0.1:9092].
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<String>,
    /// host:port advertised to clients in metadata [default: --listen as
    /// written, e.g. localhost:9092].
    #[arg(long, env = "SLUICE_ADVERTISED")]
    pub advertised: Option<String>,
    /// Named listeners, Kafka's `listeners`: NAME://HOST:PORT,... (e.g.
    /// PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9094). A name's
    /// security protocol comes from --listener-security-protocol-map, else
    /// the name itself (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL). The
    /// first listener is the one other brokers' clients are sent to when a
    /// client's own listener is unknown. Instead of --listen.
    #[arg(long, env = "SLUICE_LISTENERS")]
    pub listeners: Option<String>,
    /// Kafka's `advertised.listeners`: NAME://HOST:PORT,... for the
    /// listeners whose advertised address is not the bound one. Metadata
    /// answers a client with every broker's endpoint of the listener the
    /// client connected on.
    #[arg(long, env = "SLUICE_ADVERTISED_LISTENERS")]
    pub advertised_listeners: Option<String>,
    /// Kafka's `listener.security.protocol.map`: NAME:PROTOCOL,...
    #[arg(long, env = "SLUICE_LISTENER_SECURITY_PROTOCOL_MAP")]
    pub listener_security_protocol_map: Option<String>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners.
    #[arg(long, env = "SLUICE_SSL_CERTIFICATE")]
    pub ssl_certificate: Option<PathBuf>,
    /// PEM private key of --ssl-certificate.
    #[arg(long, env = "SLUICE_SSL_KEY")]
    pub ssl_key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    #[arg(long, env = "SLUICE_SSL_CLIENT_CA")]
    pub ssl_client_ca: Option<PathBuf>,
    /// Kafka's ssl.client.auth for the SSL listeners: none, requested or
    /// required [default: required when --ssl-client-ca is given, else
    /// none]. SASL_SSL listeners never ask for client certificates.
    #[arg(long, env = "SLUICE_SSL_CLIENT_AUTH")]
    pub ssl_client_auth: Option<crate::auth::tls::ClientAuth>,
    /// SASL mechanisms of the SASL listeners, comma-separated [default:
    /// PLAIN,SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, env = "SLUICE_SASL_ENABLED_MECHANISMS")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// Data directory, created if missing; locked for this process only
    /// (file sluice.lock) [default: ./data].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned thread each) [default: all cores].
    #[arg(long, env = "SLUICE_CORES")]
    pub cores: Option<usize>,
    /// Broker node id [default: 0].
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Log level (error, warn, info, debug, trace, off) or RUST_LOG-style
    /// filter, e.g. sluice=debug,info [default: info].
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format on stderr [default: text].
    #[arg(long, env = "SLUICE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Create topics named in a Metadata request that allows it (as
    /// Kafka, Produce never creates them) [default: true].
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
    /// The controller's Raft voters, ID@HOST:PORT,... (each voter's node id
    /// and controller endpoint; every broker of a cluster gets the same
    /// list) [default: this node alone, no controller port].
    #[arg(long, env = "SLUICE_CONTROLLER_VOTERS")]
    pub controller_voters: Option<String>,
    /// host:port this node's controller endpoint listens on [default: its
    /// own entry in --controller-voters; brokers that are not voters need
    /// none].
    #[arg(long, env = "SLUICE_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// A broker that has not heartbeated the controller for this long is
    /// fenced (Kafka's broker.session.timeout.ms) [default: 9000].
    #[arg(long, env = "SLUICE_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// How often a broker heartbeats the controller (Kafka's
    /// broker.heartbeat.interval.ms) [default: 2000].
    #[arg(long, env = "SLUICE_BROKER_HEARTBEAT_INTERVAL_MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// How often the active controller moves leaderships back to preferred
    /// replicas (Kafka's leader.imbalance.check.interval.seconds, in ms; 0
    /// disables) [default: 300000].
    #[arg(long, env = "SLUICE_LEADER_IMBALANCE_CHECK_INTERVAL_MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// host:port the broker accepts replication connections on (leaders
    /// push to followers there) [default: --listen's host, a free port].
    #[arg(long, env = "SLUICE_REPLICATION_LISTEN")]
    pub replication_listen: Option<String>,
    /// host:port other brokers connect to for replication [default: the
    /// bound replication address].
    #[arg(long, env = "SLUICE_REPLICATION_ADVERTISED")]
    pub replication_advertised: Option<String>,
    /// A follower that has not caught up with its leader's log end for this
    /// long leaves the in-sync replica set (Kafka's
    /// replica.lag.time.max.ms) [default: 30000].
    #[arg(long, env = "SLUICE_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// The broker default of min.insync.replicas (a topic's config wins):
    /// acks=all writes need this many in-sync replicas [default: 1].
    #[arg(long, env = "SLUICE_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
    /// Replication factor of auto-created topics and of CreateTopics
    /// without one (Kafka's default.replication.factor) [default: 1].
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// Replication factor of `__consumer_offsets`, capped at the brokers
    /// alive when it is created (Kafka's
    /// offsets.topic.replication.factor) [default: 3].
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// A transactional id with no transaction in progress and no activity
    /// for this long is forgotten by its coordinator (Kafka's
    /// transactional.id.expiration.ms) [default: 604800000 = 7 days].
    #[arg(long, env = "SLUICE_TRANSACTIONAL_ID_EXPIRATION_MS")]
    pub transactional_id_expiration_ms: Option<u64>,
    /// The transaction protocol offered to clients: the transaction.version
    /// feature level in ApiVersions (Kafka's feature; 2 = KIP-890's
    /// protocol, which Kafka 4.x Java clients then use; 1 = the classic
    /// one). Set the same on every broker of a cluster [default: 2].
    #[arg(long, env = "SLUICE_TRANSACTION_VERSION", value_parser = clap::value_parser!(i16).range(1..=2))]
    pub transaction_version: Option<i16>,
    /// Partition leaders check with the transaction coordinator that a
    /// transactional batch's partition was added to its transaction before
    /// appending it (KIP-890 part 1; Kafka's
    /// transaction.partition.verification.enable) [default: true].
    #[arg(long, env = "SLUICE_TRANSACTION_PARTITION_VERIFICATION")]
    pub transaction_partition_verification: Option<bool>,
    /// For hosts whose cores other processes also use (containers, shared
    /// VMs, a laptop): shard threads are not pinned to cores, so the kernel
    /// can move a shard off a core that another process keeps busy
    /// (Redpanda's --overprovisioned). Leave it off on a dedicated host,
    /// where pinning keeps each shard's caches warm [default: false].
    #[arg(long, env = "SLUICE_OVERPROVISIONED", num_args = 0..=1, default_missing_value = "true")]
    pub overprovisioned: Option<bool>,
    /// After a read from disk, read the chunk that follows at once, for the
    /// reader's next fetch (catching-up consumers and followers)
    /// [default: true].
    #[arg(long, env = "SLUICE_READ_AHEAD")]
    pub read_ahead: Option<bool>,
    /// Bytes of flushed write chunks each shard keeps as the read cache of
    /// its partitions' recent data; past it the partitions least recently
    /// written or read give theirs back and are read from disk
    /// [default: 67108864].
    #[arg(long, env = "SLUICE_TAIL_CACHE_BYTES")]
    pub tail_cache_bytes: Option<usize>,
    /// Microseconds a fetch that waited for data (fewer than its
    /// min_bytes at first) waits after the first append wakes it, so that
    /// appends arriving meanwhile go out in the same answer: fewer fetch
    /// round trips for consumers that keep up, at this much added
    /// end-to-end latency; never past the fetch's max_wait_ms. 0 answers
    /// at each append, as Kafka does (Redpanda's
    /// fetch_reads_debounce_timeout, 1 ms there) [default: 300].
    #[arg(long, env = "SLUICE_FETCH_DEBOUNCE_US")]
    pub fetch_debounce_us: Option<u64>,
    /// Close a Kafka client connection that neither sent a request nor
    /// took any of its answer's bytes for this long (Kafka's
    /// connections.max.idle.ms). A client that stops reading its answers
    /// otherwise held their buffers (zero-copy fetch answers keep whole
    /// cache chunks alive) for as long as it stayed connected
    /// [default: 600000].
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// How a shard makes appended batches durable before acknowledging
    /// them: `write-through` (each write to a partition file is durable
    /// when it completes, O_DSYNC: one I/O per flush,
    /// docs/decisions/0016-write-through-flushes.md), `file` (a write then
    /// an fdatasync per written partition file) or `filesystem` (writes,
    /// then one syncfs per flush round for all the shard's partitions: one
    /// device flush instead of one per partition; it also writes back
    /// other programs' dirty files on the same filesystem, so give the
    /// data directory its own filesystem;
    /// docs/decisions/0010-one-sync-per-shard.md) [default: write-through].
    #[arg(long, env = "SLUICE_SYNC_MODE", value_enum)]
    pub sync_mode: Option<SyncModeArg>,
    /// host:port of the admin HTTP API: Prometheus metrics at /metrics,
    /// health at /v1/status/live and /v1/status/ready; `none` turns it off.
    /// Give every broker on a host its own [default: 127.0.0.1:9644].
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Kafka's authorizer.class.name: `standard` checks every request
    /// against the ACLs (StandardAuthorizer rules), `none` allows
    /// everything (docs/decisions/0011-acls.md) [default: none].
    #[arg(long, env = "SLUICE_AUTHORIZER", value_enum)]
    pub authorizer: Option<AuthorizerArg>,
    /// Kafka's super.users: principals allowed everything with
    /// `--authorizer standard`, e.g. `User:admin;User:ops`.
    #[arg(long, env = "SLUICE_SUPER_USERS")]
    pub super_users: Option<String>,
    /// Kafka's allow.everyone.if.no.acl.found: a resource no ACL applies
    /// to is open to everyone [default: false].
    #[arg(long, env = "SLUICE_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// A file holding the cluster's inter-broker secret (at least 32
    /// bytes, e.g. `openssl rand -hex 32`; the same file on every broker):
    /// controller and replication connections then authenticate both
    /// ends before any traffic (docs/decisions/0014-inter-broker-auth.md).
    #[arg(long, env = "SLUICE_INTER_BROKER_SECRET_FILE")]
    pub inter_broker_secret_file: Option<PathBuf>,
    /// Kafka's ssl.principal.mapping.rules: how a client certificate's
    /// subject becomes a principal, e.g.
    /// `RULE:^CN=(.*?),OU=apps,.*$/$1/L,DEFAULT` [default: DEFAULT, the
    /// whole subject].
    #[arg(long, env = "SLUICE_SSL_PRINCIPAL_MAPPING_RULES")]
    pub ssl_principal_mapping_rules: Option<String>,
    /// Kafka's inter.broker.listener.name: the listener (one of
    /// `--listeners`, the same name on every broker) this broker sends its
    /// Kafka requests to other brokers on (transaction markers, KIP-890
    /// partition additions), secured as that listener's protocol says
    /// [default: the first PLAINTEXT listener, else the first].
    #[arg(long, env = "SLUICE_INTER_BROKER_LISTENER_NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// Kafka's sasl.mechanism.inter.broker.protocol, for a SASL
    /// inter-broker listener [default: SCRAM-SHA-512].
    #[arg(long, env = "SLUICE_INTER_BROKER_SASL_MECHANISM", value_enum)]
    pub inter_broker_sasl_mechanism: Option<crate::admin::security::SaslMechanism>,
    /// The user this broker logs in as on a SASL inter-broker listener (a
    /// SCRAM user; make it a super user with `--super-users`).
    #[arg(long, env = "SLUICE_INTER_BROKER_SASL_USERNAME")]
    pub inter_broker_sasl_username: Option<String>,
    /// A file holding that user's password.
    #[arg(long, env = "SLUICE_INTER_BROKER_SASL_PASSWORD_FILE")]
    pub inter_broker_sasl_password_file: Option<PathBuf>,
    /// PEM CA certificates other brokers' certificates must chain to, for
    /// a TLS inter-broker listener [default: --ssl-client-ca]. On an SSL
    /// listener this broker presents its own --ssl-certificate.
    #[arg(long, env = "SLUICE_INTER_BROKER_SSL_CA")]
    pub inter_broker_ssl_ca: Option<PathBuf>,
}

/// `--authorizer`.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerArg {
    None,
    Standard,
}

/// `--sync-mode`.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncModeArg {
    #[serde(rename = "write-through")]
    WriteThrough,
    File,
    Filesystem,
}

impl From<SyncModeArg> for sluice_engine::SyncMode {
    fn from(arg: SyncModeArg) -> sluice_engine::SyncMode {
        match arg {
            SyncModeArg::File => sluice_engine::SyncMode::PerFile,
            SyncModeArg::Filesystem => sluice_engine::SyncMode::Filesystem,
            SyncModeArg::WriteThrough => sluice_engine::SyncMode::WriteThrough,
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    listeners: Option<String>,
    advertised_listeners: Option<String>,
    listener_security_protocol_map: Option<String>,
    ssl_certificate: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
    ssl_client_ca: Option<PathBuf>,
    ssl_client_auth: Option<crate::auth::tls::ClientAuth>,
    sasl_enabled_mechanisms: Option<String>,
    advertised: Option<String>,
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    node_id: Option<i32>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    offsets_topic_partitions: Option<i32>,
    group_initial_rebalance_delay_ms: Option<u64>,
    offsets_retention_ms: Option<u64>,
    log_cleaner_interval_ms: Option<u64>,
    controller_voters: Option<String>,
    controller_listen: Option<String>,
    broker_session_timeout_ms: Option<u64>,
    broker_heartbeat_interval_ms: Option<u64>,
    leader_imbalance_check_interval_ms: Option<u64>,
    replication_listen: Option<String>,
    replication_advertised: Option<String>,
    replica_lag_time_max_ms: Option<u64>,
    min_insync_replicas: Option<i32>,
    default_replication_factor: Option<i16>,
    offsets_topic_replication_factor: Option<i16>,
    transactional_id_expiration_ms: Option<u64>,
    transaction_version: Option<i16>,
    transaction_partition_verification: Option<bool>,
    overprovisioned: Option<bool>,
    read_ahead: Option<bool>,
    tail_cache_bytes: Option<usize>,
    fetch_debounce_us: Option<u64>,
    connections_max_idle_ms: Option<u64>,
    sync_mode: Option<SyncModeArg>,
    admin_listen: Option<String>,
    authorizer: Option<AuthorizerArg>,
    super_users: Option<String>,
    allow_everyone_if_no_acl_found: Option<bool>,
    inter_broker_secret_file: Option<PathBuf>,
    ssl_principal_mapping_rules: Option<String>,
    inter_broker_listener_name: Option<String>,
    inter_broker_sasl_mechanism: Option<crate::admin::security::SaslMechanism>,
    inter_broker_sasl_username: Option<String>,
    inter_broker_sasl_password_file: Option<PathBuf>,
    inter_broker_ssl_ca: Option<PathBuf>,
}

/// How the broker's log lines are written to stderr.
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings of `sluice serve`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A checked `tracing_subscriber::EnvFilter` directive list.
    pub filter: String,
    pub format: LogFormat,
}

/// Everything `sluice serve` resolves from flags, environment and file.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub broker: BrokerConfig,
    pub logging: LogSettings,
}

impl ServeConfig {
    /// Resolve and check every setting; `Err` is a configuration error
    /// (unknown log level, unresolvable listen address, bad values).
    pub fn resolve(args: ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let format = args.log_format.or(file.log_format).unwrap_or_default();
        let broker = BrokerConfig::resolve_with(args, file)?;
        check_log_filter(&broker.log_level)?;
        Ok(ServeConfig {
            logging: LogSettings {
                filter: broker.log_level.clone(),
                format,
            },
            broker,
        })
    }
}

/// One client listener (Kafka's `listeners` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub protocol: crate::auth::SecurityProtocol,
    /// (host, port) given to clients for this listener.
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// The broker's resolved configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The first listener's address (`listeners[0]`).
    pub listen: SocketAddr,
    /// Every client listener; the first is `listen` / `advertised_*`.
    pub listeners: Vec<ListenerConfig>,
    /// TLS material of the SSL and SASL_SSL listeners.
    pub tls: Option<crate::auth::tls::TlsSettings>,
    /// SASL mechanisms of the SASL listeners.
    pub sasl_mechanisms: Vec<crate::auth::sasl::Mechanism>,
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
    /// The controller's voters: node id and controller endpoint (empty
    /// endpoint for a lone voter that needs no port).
    pub controller_voters: Vec<(i32, String)>,
    /// This node's controller endpoint, when it is a voter of several.
    pub controller_listen: Option<SocketAddr>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    /// 0: no preferred-leader rebalance.
    pub leader_imbalance_check_interval_ms: u64,
    /// Where replication connections are accepted.
    pub replication_listen: SocketAddr,
    /// What other brokers are told to connect to (`None`: the bound
    /// address).
    pub replication_advertised: Option<String>,
    pub replica_lag_time_max_ms: u64,
    pub min_insync_replicas: i32,
    pub default_replication_factor: i16,
    pub offsets_topic_replication_factor: i16,
    pub transactional_id_expiration_ms: u64,
    /// The transaction.version feature level advertised (1 or 2).
    pub transaction_version: i16,
    pub transaction_partition_verification: bool,
    /// Shard threads are not pinned to cores.
    pub overprovisioned: bool,
    /// Engine read-ahead for sequential readers.
    pub read_ahead: bool,
    /// Per-shard budget of the engine's tail read cache (tail_cache.rs).
    pub tail_cache_bytes: usize,
    /// How long a fetch woken by an append waits for more before reading
    /// (`--fetch-debounce-us`; handlers/fetch.rs).
    pub fetch_debounce: Duration,
    /// How long a client connection may stay without activity
    /// (`--connections-max-idle-ms`; net/mod.rs).
    pub connections_max_idle: Duration,
    /// fdatasync per partition file, or one syncfs per shard round.
    pub sync_mode: sluice_engine::SyncMode,
    /// The admin HTTP API's address (metrics, health); `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// `Some` with `--authorizer standard`: requests are checked against
    /// the ACLs. `None`: everything is allowed.
    pub authorizer: Option<crate::auth::authorizer::AuthorizerConfig>,
    /// `--inter-broker-secret-file`: peer connections authenticate.
    pub peer_secret: Option<crate::peer::auth::PeerSecret>,
    /// `--ssl-principal-mapping-rules`.
    pub ssl_principal_mapping: crate::auth::principal_mapping::PrincipalMapping,
    /// How this broker's Kafka requests reach other brokers.
    pub inter_broker: InterBrokerClient,
}

/// Kafka's inter.broker.listener.name and the client settings for it.
#[derive(Debug, Clone, Default)]
pub struct InterBrokerClient {
    /// The listener name asked of other brokers' endpoints; `None`: the
    /// first PLAINTEXT listener of this broker's, else its first.
    pub listener_name: Option<String>,
    /// TLS and SASL settings of that listener's protocol (PLAINTEXT: the
    /// default, nothing).
    pub security: std::sync::Arc<crate::admin::security::ClientSecurity>,
}

impl InterBrokerClient {
    /// Brokers' Kafka requests carry a principal of their own (SASL, or
    /// the certificate on SSL): the registered-address grant is off.
    pub fn authenticated(&self) -> bool {
        use crate::admin::security::SecurityProtocol;
        match self.security.protocol {
            SecurityProtocol::Plaintext => false,
            SecurityProtocol::Ssl => self.security.tls.is_some(),
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => true,
        }
    }
}

impl BrokerConfig {
    /// A single node's settings with defaults (tests build brokers in
    /// process from this).
    pub fn single_node(data_dir: PathBuf, cores: usize) -> BrokerConfig {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            listeners: vec![ListenerConfig {
                name: "PLAINTEXT".to_string(),
                address: SocketAddr::from(([127, 0, 0, 1], 9092)),
                protocol: crate::auth::SecurityProtocol::Plaintext,
                advertised_host: "127.0.0.1".to_string(),
                advertised_port: 9092,
            }],
            tls: None,
            sasl_mechanisms: crate::auth::sasl::Mechanism::ALL.to_vec(),
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            data_dir,
            cores,
            node_id: 0,
            log_level: "info".to_string(),
            auto_create_topics: true,
            default_partitions: 1,
            request_bytes_max: 100 << 20,
            offsets_topic_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            log_cleaner_interval_ms: 15_000,
            controller_voters: vec![(0, String::new())],
            controller_listen: None,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            leader_imbalance_check_interval_ms: 300_000,
            replication_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            replication_advertised: None,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            transaction_version: 2,
            transaction_partition_verification: true,
            overprovisioned: false,
            read_ahead: true,
            tail_cache_bytes: sluice_engine::constants::TAIL_CACHE_SHARD_BYTES_DEFAULT,
            fetch_debounce: FETCH_DEBOUNCE_DEFAULT,
            connections_max_idle: CONNECTIONS_MAX_IDLE_DEFAULT,
            sync_mode: sluice_engine::SyncMode::WriteThrough,
            // In-process brokers share a host with others: no fixed port.
            admin_listen: None,
            authorizer: None,
            peer_secret: None,
            ssl_principal_mapping: Default::default(),
            inter_broker: InterBrokerClient::default(),
        }
    }
}

/// `--fetch-debounce-us`'s default. At 50 MB/s (the `50mb` preset, one
/// consumer keeping up) it cut fetch requests from ~11,300 to ~5,400 a
/// second and broker CPU by 15 %, for +0.1 ms end-to-end at the median
/// (docs/benchmarks.md, "Fetch debounce"); 1 ms cut CPU by 22 % but put
/// the end-to-end p99 at 1.4 ms, next to issue 11's 1.5 ms bound.
pub const FETCH_DEBOUNCE_DEFAULT: Duration = Duration::from_micros(300);

/// Kafka's connections.max.idle.ms default (10 minutes).
pub const CONNECTIONS_MAX_IDLE_DEFAULT: Duration = Duration::from_secs(600);

/// The admin API's default address (Redpanda's admin port).
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9644";

/// `--admin-listen HOST:PORT`, or `none` (also `off`, empty) for no admin
/// API.
fn parse_admin_listen(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let trimmed = text.trim();
    if trimmed.is_empty()
        || trimmed.eq_ignore_ascii_case("none")
        || trimmed.eq_ignore_ascii_case("off")
    {
        return Ok(None);
    }
    Ok(Some(resolve_listen(trimmed).with_context(|| {
        format!("--admin-listen {text:?} must be HOST:PORT or none")
    })?))
}

/// `--controller-voters ID@HOST:PORT,...`
fn parse_voters(text: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let mut voters = Vec::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, endpoint) = entry
            .split_once('@')
            .with_context(|| format!("--controller-voters entry {entry:?} must be ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .with_context(|| format!("--controller-voters entry {entry:?}: bad node id {id:?}"))?;
        anyhow::ensure!(
            id >= 0,
            "--controller-voters entry {entry:?}: node ids are >= 0"
        );
        let (_, port) = endpoint
            .rsplit_once(':')
            .with_context(|| format!("--controller-voters entry {entry:?} must be ID@HOST:PORT"))?;
        port.parse::<u16>()
            .with_context(|| format!("--controller-voters entry {entry:?}: bad port {port:?}"))?;
        anyhow::ensure!(
            voters.iter().all(|(other, _)| *other != id),
            "--controller-voters names node {id} twice"
        );
        voters.push((id, endpoint.to_string()));
    }
    anyhow::ensure!(!voters.is_empty(), "--controller-voters is empty");
    Ok(voters)
}

/// The settings [`inter_broker_client`] reads.
struct InterBrokerArgs {
    listener_name: Option<String>,
    sasl_mechanism: crate::admin::security::SaslMechanism,
    sasl_username: Option<String>,
    sasl_password_file: Option<PathBuf>,
    ssl_ca: Option<PathBuf>,
    ssl_certificate: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
}

/// `--inter-broker-listener-name` and its client settings: the listener
/// must be one of this broker's, and its protocol's settings present.
fn inter_broker_client(
    listeners: &[ListenerConfig],
    args: InterBrokerArgs,
) -> anyhow::Result<InterBrokerClient> {
    use crate::admin::security::{ClientSecurity, SecurityProtocol as Client, TlsFiles};
    use crate::auth::SecurityProtocol as Server;
    let Some(name) = args.listener_name else {
        anyhow::ensure!(
            args.sasl_username.is_none() && args.sasl_password_file.is_none(),
            "--inter-broker-sasl-username/--inter-broker-sasl-password-file need \
             --inter-broker-listener-name"
        );
        return Ok(InterBrokerClient::default());
    };
    let listener = listeners
        .iter()
        .find(|listener| listener.name == name)
        .with_context(|| {
            format!(
                "--inter-broker-listener-name {name} is not one of --listeners ({})",
                listeners
                    .iter()
                    .map(|listener| listener.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let protocol = match listener.protocol {
        Server::Plaintext => Client::Plaintext,
        Server::Ssl => Client::Ssl,
        Server::SaslPlaintext => Client::SaslPlaintext,
        Server::SaslSsl => Client::SaslSsl,
    };
    let password = if protocol.sasl() {
        anyhow::ensure!(
            args.sasl_username.is_some(),
            "--inter-broker-listener-name {name} is {}: give --inter-broker-sasl-username",
            protocol.name()
        );
        let path = args.sasl_password_file.with_context(|| {
            format!(
                "--inter-broker-listener-name {name} is {}: give \
                 --inter-broker-sasl-password-file",
                protocol.name()
            )
        })?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--inter-broker-sasl-password-file {}", path.display()))?;
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    } else {
        None
    };
    let files = if protocol.tls() {
        let ca = args.ssl_ca.with_context(|| {
            format!(
                "--inter-broker-listener-name {name} uses TLS: give --inter-broker-ssl-ca (the CA \
                 other brokers' certificates chain to) or --ssl-client-ca"
            )
        })?;
        // On SSL the broker's own certificate is its identity; on
        // SASL_SSL the SASL user is.
        let client_certificate = protocol == Client::Ssl;
        TlsFiles {
            ca: Some(ca),
            certificate: args.ssl_certificate.filter(|_| client_certificate),
            key: args.ssl_key.filter(|_| client_certificate),
        }
    } else {
        TlsFiles::default()
    };
    let security = ClientSecurity::new(
        protocol,
        args.sasl_mechanism,
        args.sasl_username,
        password,
        &files,
    )
    .map_err(|error| anyhow::anyhow!("--inter-broker-listener-name {name}: {error}"))?;
    Ok(InterBrokerClient {
        listener_name: Some(name),
        security: std::sync::Arc::new(security),
    })
}

impl BrokerConfig {
    /// [`ServeConfig::resolve`] without the logging settings.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<BrokerConfig> {
        Ok(ServeConfig::resolve(args)?.broker)
    }

    fn resolve_with(args: ServeArgs, file: FileConfig) -> anyhow::Result<BrokerConfig> {
        let listen_given = args.listen.or(file.listen);
        let listeners_given = args.listeners.or(file.listeners);
        let advertised_given = args.advertised.or(file.advertised);
        let listeners = match listeners_given {
            Some(text) => {
                // --listen (with --advertised) given too: a PLAINTEXT
                // listener first, then the named ones.
                let text = match &listen_given {
                    Some(listen) => format!("PLAINTEXT://{listen},{text}"),
                    None => text,
                };
                let advertised_listeners = args.advertised_listeners.or(file.advertised_listeners);
                let advertised_listeners = match (&listen_given, advertised_given) {
                    (Some(_), Some(advertised)) => Some(match advertised_listeners {
                        Some(more) => format!("PLAINTEXT://{advertised},{more}"),
                        None => format!("PLAINTEXT://{advertised}"),
                    }),
                    (None, Some(_)) => {
                        anyhow::bail!("--advertised goes with --listen; use --advertised-listeners")
                    }
                    (_, None) => advertised_listeners,
                };
                parse_listeners(
                    &text,
                    advertised_listeners.as_deref(),
                    args.listener_security_protocol_map
                        .or(file.listener_security_protocol_map)
                        .as_deref(),
                )?
            }
            None => {
                let listen_text = listen_given.unwrap_or_else(|| "127.0.0.1:9092".to_string());
                let listen = resolve_listen(&listen_text)?;
                // Clients get the address as the operator wrote it: a host
                // name stays a name (clients resolve it themselves), an IP
                // stays an IP.
                let advertised = advertised_given.unwrap_or(listen_text);
                let (advertised_host, advertised_port) = split_host_port(&advertised)?;
                vec![ListenerConfig {
                    name: "PLAINTEXT".to_string(),
                    address: listen,
                    protocol: crate::auth::SecurityProtocol::Plaintext,
                    advertised_host,
                    advertised_port,
                }]
            }
        };
        let listen = listeners[0].address;
        let advertised_host = listeners[0].advertised_host.clone();
        let advertised_port = listeners[0].advertised_port;
        let tls = match (
            args.ssl_certificate.or(file.ssl_certificate),
            args.ssl_key.or(file.ssl_key),
        ) {
            (Some(certificate), Some(key)) => {
                let client_ca = args.ssl_client_ca.or(file.ssl_client_ca);
                let client_auth = args.ssl_client_auth.or(file.ssl_client_auth).unwrap_or(
                    if client_ca.is_some() {
                        crate::auth::tls::ClientAuth::Required
                    } else {
                        crate::auth::tls::ClientAuth::None
                    },
                );
                Some(crate::auth::tls::TlsSettings {
                    certificate,
                    key,
                    client_ca,
                    client_auth,
                })
            }
            (None, None) => None,
            _ => anyhow::bail!("--ssl-certificate and --ssl-key go together"),
        };
        anyhow::ensure!(
            tls.is_some()
                || !listeners
                    .iter()
                    .any(|listener| listener.protocol.uses_tls()),
            "an SSL or SASL_SSL listener needs --ssl-certificate and --ssl-key"
        );
        let sasl_mechanisms = match args
            .sasl_enabled_mechanisms
            .or(file.sasl_enabled_mechanisms)
        {
            Some(text) => text
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(|name| {
                    crate::auth::sasl::Mechanism::from_name(name).with_context(|| {
                        format!(
                            "--sasl-enabled-mechanisms: unknown mechanism {name:?} (PLAIN, \
                             SCRAM-SHA-256, SCRAM-SHA-512)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => crate::auth::sasl::Mechanism::ALL.to_vec(),
        };
        anyhow::ensure!(
            !sasl_mechanisms.is_empty(),
            "--sasl-enabled-mechanisms is empty"
        );
        let super_users = match args.super_users.or(file.super_users) {
            Some(text) => crate::auth::authorizer::AuthorizerConfig::parse_super_users(&text)
                .map_err(|error| anyhow::anyhow!("--super-users: {error}"))?,
            None => Vec::new(),
        };
        let allow_everyone_if_no_acl_found = args
            .allow_everyone_if_no_acl_found
            .or(file.allow_everyone_if_no_acl_found)
            .unwrap_or(false);
        let authorizer = match args.authorizer.or(file.authorizer) {
            Some(AuthorizerArg::Standard) => Some(crate::auth::authorizer::AuthorizerConfig {
                super_users,
                allow_everyone_if_no_acl_found,
            }),
            Some(AuthorizerArg::None) | None => None,
        };
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
        let node_id = args.node_id.or(file.node_id).unwrap_or(0);
        anyhow::ensure!(node_id >= 0, "--node-id must be >= 0, got {node_id}");
        let controller_voters = match args.controller_voters.or(file.controller_voters) {
            Some(text) => parse_voters(&text)?,
            None => vec![(node_id, String::new())],
        };
        let own_endpoint = controller_voters
            .iter()
            .find(|(id, _)| *id == node_id)
            .map(|(_, endpoint)| endpoint.clone())
            .filter(|endpoint| !endpoint.is_empty());
        let controller_listen = match args.controller_listen.or(file.controller_listen) {
            Some(text) => Some(resolve_listen(&text).context("--controller-listen")?),
            None if controller_voters.len() > 1 => match own_endpoint {
                Some(endpoint) => Some(resolve_listen(&endpoint).context("--controller-voters")?),
                None => None,
            },
            None => None,
        };
        let replication_listen = match args.replication_listen.or(file.replication_listen) {
            Some(text) => resolve_listen(&text).context("--replication-listen")?,
            None => SocketAddr::new(listen.ip(), 0),
        };
        let replication_advertised = args.replication_advertised.or(file.replication_advertised);
        if let Some(text) = &replication_advertised {
            split_host_port(text).context("--replication-advertised")?;
        }
        let min_insync_replicas = args
            .min_insync_replicas
            .or(file.min_insync_replicas)
            .unwrap_or(1);
        anyhow::ensure!(
            min_insync_replicas >= 1,
            "--min-insync-replicas must be at least 1, got {min_insync_replicas}"
        );
        let default_replication_factor = args
            .default_replication_factor
            .or(file.default_replication_factor)
            .unwrap_or(1);
        anyhow::ensure!(
            default_replication_factor >= 1,
            "--default-replication-factor must be at least 1, got {default_replication_factor}"
        );
        let offsets_topic_replication_factor = args
            .offsets_topic_replication_factor
            .or(file.offsets_topic_replication_factor)
            .unwrap_or(3);
        anyhow::ensure!(
            offsets_topic_replication_factor >= 1,
            "--offsets-topic-replication-factor must be at least 1, got \
             {offsets_topic_replication_factor}"
        );
        let transaction_version = args
            .transaction_version
            .or(file.transaction_version)
            .unwrap_or(2);
        anyhow::ensure!(
            (1..=2).contains(&transaction_version),
            "--transaction-version must be 1 or 2, got {transaction_version}"
        );
        Ok(BrokerConfig {
            transactional_id_expiration_ms: args
                .transactional_id_expiration_ms
                .or(file.transactional_id_expiration_ms)
                .unwrap_or(7 * 24 * 3600 * 1000)
                .max(1),
            transaction_version,
            transaction_partition_verification: args
                .transaction_partition_verification
                .or(file.transaction_partition_verification)
                .unwrap_or(true),
            overprovisioned: args
                .overprovisioned
                .or(file.overprovisioned)
                .unwrap_or(false),
            read_ahead: args.read_ahead.or(file.read_ahead).unwrap_or(true),
            tail_cache_bytes: args
                .tail_cache_bytes
                .or(file.tail_cache_bytes)
                .unwrap_or(sluice_engine::constants::TAIL_CACHE_SHARD_BYTES_DEFAULT),
            fetch_debounce: args
                .fetch_debounce_us
                .or(file.fetch_debounce_us)
                .map_or(FETCH_DEBOUNCE_DEFAULT, Duration::from_micros),
            connections_max_idle: args
                .connections_max_idle_ms
                .or(file.connections_max_idle_ms)
                .filter(|ms| *ms > 0)
                .map_or(CONNECTIONS_MAX_IDLE_DEFAULT, Duration::from_millis),
            sync_mode: args
                .sync_mode
                .or(file.sync_mode)
                .map_or(sluice_engine::SyncMode::WriteThrough, Into::into),
            admin_listen: parse_admin_listen(
                &args
                    .admin_listen
                    .or(file.admin_listen)
                    .unwrap_or_else(|| ADMIN_LISTEN_DEFAULT.to_string()),
            )?,
            inter_broker: inter_broker_client(
                &listeners,
                InterBrokerArgs {
                    listener_name: args
                        .inter_broker_listener_name
                        .or(file.inter_broker_listener_name),
                    sasl_mechanism: args
                        .inter_broker_sasl_mechanism
                        .or(file.inter_broker_sasl_mechanism)
                        .unwrap_or_default(),
                    sasl_username: args
                        .inter_broker_sasl_username
                        .or(file.inter_broker_sasl_username),
                    sasl_password_file: args
                        .inter_broker_sasl_password_file
                        .or(file.inter_broker_sasl_password_file),
                    ssl_ca: args
                        .inter_broker_ssl_ca
                        .or(file.inter_broker_ssl_ca)
                        .or_else(|| tls.as_ref().and_then(|tls| tls.client_ca.clone())),
                    ssl_certificate: tls.as_ref().map(|tls| tls.certificate.clone()),
                    ssl_key: tls.as_ref().map(|tls| tls.key.clone()),
                },
            )?,
            authorizer,
            ssl_principal_mapping: match args
                .ssl_principal_mapping_rules
                .or(file.ssl_principal_mapping_rules)
            {
                Some(text) => crate::auth::principal_mapping::PrincipalMapping::parse(&text)?,
                None => Default::default(),
            },
            peer_secret: match args
                .inter_broker_secret_file
                .or(file.inter_broker_secret_file)
            {
                Some(path) => Some(
                    crate::peer::auth::PeerSecret::load(&path)
                        .map_err(|error| anyhow::anyhow!("--inter-broker-secret-file: {error}"))?,
                ),
                None => None,
            },
            replication_listen,
            replication_advertised,
            replica_lag_time_max_ms: args
                .replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms)
                .unwrap_or(30_000)
                .max(10),
            min_insync_replicas,
            default_replication_factor,
            offsets_topic_replication_factor,
            controller_voters,
            controller_listen,
            broker_session_timeout_ms: args
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms)
                .unwrap_or(9000)
                .max(100),
            broker_heartbeat_interval_ms: args
                .broker_heartbeat_interval_ms
                .or(file.broker_heartbeat_interval_ms)
                .unwrap_or(2000)
                .max(10),
            leader_imbalance_check_interval_ms: args
                .leader_imbalance_check_interval_ms
                .or(file.leader_imbalance_check_interval_ms)
                .unwrap_or(300_000),
            listen,
            listeners,
            tls,
            sasl_mechanisms,
            advertised_host,
            advertised_port,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            cores,
            node_id,
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

/// `--listeners NAME://HOST:PORT,...` with the advertised addresses and
/// the protocol map.
fn parse_listeners(
    text: &str,
    advertised: Option<&str>,
    protocol_map: Option<&str>,
) -> anyhow::Result<Vec<ListenerConfig>> {
    fn entries(flag: &str, text: &str) -> anyhow::Result<Vec<(String, String)>> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (name, address) = entry
                    .split_once("://")
                    .with_context(|| format!("{flag} entry {entry:?} must be NAME://HOST:PORT"))?;
                anyhow::ensure!(
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "{flag} entry {entry:?}: bad listener name {name:?}"
                );
                Ok((name.to_ascii_uppercase(), address.to_string()))
            })
            .collect()
    }
    let mut protocols = std::collections::HashMap::new();
    for entry in protocol_map
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (name, protocol) = entry.split_once(':').with_context(|| {
            format!("--listener-security-protocol-map entry {entry:?} must be NAME:PROTOCOL")
        })?;
        let protocol = crate::auth::SecurityProtocol::parse(protocol).with_context(|| {
            format!(
                "--listener-security-protocol-map entry {entry:?}: unknown protocol \
                 (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
            )
        })?;
        protocols.insert(name.to_ascii_uppercase(), protocol);
    }
    let advertised: std::collections::HashMap<String, String> = match advertised {
        Some(text) => entries("--advertised-listeners", text)?
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for (name, address_text) in entries("--listeners", text)? {
        anyhow::ensure!(
            listeners.iter().all(|listener| listener.name != name),
            "--listeners names {name} twice"
        );
        anyhow::ensure!(
            name != crate::metadata::REPLICATION_LISTENER,
            "--listeners: the name {name} is reserved for replication"
        );
        let protocol = match protocols.get(&name) {
            Some(protocol) => *protocol,
            None => crate::auth::SecurityProtocol::parse(&name).with_context(|| {
                format!(
                    "--listeners: no security protocol for listener {name}: name it PLAINTEXT, \
                     SSL, SASL_PLAINTEXT or SASL_SSL, or map it with \
                     --listener-security-protocol-map"
                )
            })?,
        };
        let address = resolve_listen(&address_text).with_context(|| format!("listener {name}"))?;
        let advertised_text = advertised.get(&name).unwrap_or(&address_text);
        let (advertised_host, advertised_port) = split_host_port(advertised_text)?;
        anyhow::ensure!(
            listeners
                .iter()
                .all(|listener| listener.address.port() != address.port() || address.port() == 0),
            "--listeners: listeners {name} and another share port {}",
            address.port()
        );
        listeners.push(ListenerConfig {
            name,
            address,
            protocol,
            advertised_host,
            advertised_port,
        });
    }
    anyhow::ensure!(!listeners.is_empty(), "--listeners is empty");
    for name in advertised.keys() {
        anyhow::ensure!(
            listeners.iter().any(|listener| &listener.name == name),
            "--advertised-listeners names {name}, which --listeners does not"
        );
    }
    Ok(listeners)
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// `--listen`: an IP socket address, or host:port with a host name
/// resolved now (the first IPv4 address, else the first one, as Kafka binds
/// a listener's host name).
fn resolve_listen(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("--listen {text:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--listen {text:?}: bad port {port:?}"))?;
    let host = host.trim_matches(['[', ']']);
    anyhow::ensure!(!host.is_empty(), "--listen {text:?} must be host:port");
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("--listen {text:?}: cannot resolve host name {host:?}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .with_context(|| format!("--listen {text:?}: host name {host:?} has no address"))
}

/// Refuse a log filter that would silently log nothing useful: every
/// comma-separated directive must be a level (`info`) or `target=level`
/// (`sluice=debug`); a bare word that is not a level (`verbose`) would
/// otherwise be read as a target name and enable nothing.
fn check_log_filter(filter: &str) -> anyhow::Result<()> {
    const LEVELS: &str = "error, warn, info, debug, trace or off";
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .collect();
    anyhow::ensure!(
        !directives.is_empty(),
        "--log-level is empty: use {LEVELS}, or a filter such as sluice=debug,info"
    );
    for directive in directives {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            None => directive,
        };
        anyhow::ensure!(
            level.parse::<LevelFilter>().is_ok(),
            "unknown log level {level:?} in --log-level {filter:?}: use {LEVELS}, \
             or a filter such as sluice=debug,info"
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .with_context(|| format!("bad --log-level filter {filter:?}"))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn resolve(args: ServeArgs) -> anyhow::Result<ServeConfig> {
        ServeConfig::resolve(args)
    }

    #[test]
    fn the_admin_port_is_on_by_default_and_none_turns_it_off() {
        assert_eq!(
            parse_admin_listen(ADMIN_LISTEN_DEFAULT).unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9644)))
        );
        for off in ["none", "NONE", "off", ""] {
            assert_eq!(parse_admin_listen(off).unwrap(), None, "{off:?}");
        }
        let error = format!("{:#}", parse_admin_listen("9644").unwrap_err());
        assert!(error.contains("--admin-listen"), "{error}");
        // From the TOML file, unless the flag says otherwise.
        let dir = std::env::temp_dir().join(format!("sluice-cli-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sluice.toml");
        std::fs::write(&file, "admin_listen = \"127.0.0.1:19644\"\n").unwrap();
        let from_file = resolve(ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(
            from_file.broker.admin_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 19644)))
        );
        let from_flag = resolve(ServeArgs {
            config: Some(file),
            admin_listen: Some("none".to_string()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(from_flag.broker.admin_listen, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fetch_debounce_comes_from_the_flag_then_the_file_then_the_default() {
        let dir = std::env::temp_dir().join(format!("sluice-cli-debounce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let defaults = resolve(ServeArgs::default()).unwrap();
        assert_eq!(defaults.broker.fetch_debounce, FETCH_DEBOUNCE_DEFAULT);
        let file = dir.join("sluice.toml");
        std::fs::write(&file, "fetch_debounce_us = 0\n").unwrap();
        let from_file = resolve(ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(from_file.broker.fetch_debounce, Duration::ZERO);
        let from_flag = resolve(ServeArgs {
            config: Some(file),
            fetch_debounce_us: Some(1500),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(from_flag.broker.fetch_debounce, Duration::from_micros(1500));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_levels_and_filters_are_accepted() {
        for filter in [
            "info",
            "DEBUG",
            "off",
            "sluice=debug,info",
            "sluice_server::net=trace",
        ] {
            check_log_filter(filter).unwrap_or_else(|error| panic!("{filter}: {error:#}"));
        }
    }

    #[test]
    fn a_word_that_is_not_a_level_is_refused() {
        for (filter, level) in [
            ("verbose", "verbose"),
            ("sluice=loud,info", "loud"),
            (",", ""),
        ] {
            let error = format!("{:#}", check_log_filter(filter).unwrap_err());
            assert!(
                error.contains(&format!("{level:?}")) || error.contains("empty"),
                "{filter}: {error}"
            );
        }
    }

    #[test]
    fn the_log_format_comes_from_the_flag_before_the_file() {
        let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sluice.toml");
        std::fs::write(
            &file,
            "log_format = \"json\"\nlisten = \"localhost:9093\"\n",
        )
        .unwrap();
        let from_file = resolve(ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(from_file.logging.format, LogFormat::Json);
        assert_eq!(from_file.broker.listen.port(), 9093);
        assert_eq!(from_file.broker.advertised_host, "localhost");
        let from_flag = resolve(ServeArgs {
            config: Some(file),
            log_format: Some(LogFormat::Text),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(from_flag.logging.format, LogFormat::Text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn named_listeners_get_their_protocols_and_advertised_addresses() {
        let listeners = parse_listeners(
            "PLAINTEXT://127.0.0.1:9092, sasl_ssl://127.0.0.1:9094,INTERNAL://127.0.0.1:9095",
            Some("SASL_SSL://broker.example:19094"),
            Some("INTERNAL:SSL"),
        )
        .unwrap();
        let summary: Vec<(&str, crate::auth::SecurityProtocol, &str, i32)> = listeners
            .iter()
            .map(|listener| {
                (
                    listener.name.as_str(),
                    listener.protocol,
                    listener.advertised_host.as_str(),
                    listener.advertised_port,
                )
            })
            .collect();
        use crate::auth::SecurityProtocol::*;
        assert_eq!(
            summary,
            [
                ("PLAINTEXT", Plaintext, "127.0.0.1", 9092),
                ("SASL_SSL", SaslSsl, "broker.example", 19094),
                ("INTERNAL", Ssl, "127.0.0.1", 9095),
            ]
        );
        for (listeners, advertised, map) in [
            ("CLIENT://127.0.0.1:1", None, None),
            (
                "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2",
                None,
                None,
            ),
            ("PLAINTEXT://127.0.0.1:1", Some("SSL://x:1"), None),
            ("PLAINTEXT://127.0.0.1:1", None, Some("PLAINTEXT:TLS")),
            ("127.0.0.1:1", None, None),
        ] {
            assert!(
                parse_listeners(listeners, advertised, map).is_err(),
                "{listeners}"
            );
        }
    }

    #[test]
    fn an_ssl_listener_needs_a_certificate_and_listen_keeps_one_plaintext_listener() {
        let error = resolve(ServeArgs {
            listeners: Some("SSL://127.0.0.1:9093".to_string()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("--ssl-certificate"),
            "{error:#}"
        );
        let config = resolve(ServeArgs::default()).unwrap();
        assert_eq!(config.broker.listeners.len(), 1);
        assert_eq!(config.broker.listeners[0].name, "PLAINTEXT");
        assert_eq!(config.broker.listeners[0].address, config.broker.listen);
    }

    #[test]
    fn an_ip_listen_address_is_advertised_as_is() {
        let config = resolve(ServeArgs {
            listen: Some("[::1]:9094".to_string()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(
            config.broker.listen,
            "[::1]:9094".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.broker.advertised_host, "::1");
        assert_eq!(config.broker.advertised_port, 9094);
        assert!(
            resolve(ServeArgs {
                listen: Some("localhost".to_string()),
                ..ServeArgs::default()
            })
            .is_err()
        );
    }
}
