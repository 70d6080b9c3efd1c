//! sluice-server: the Sluice broker. See docs/ARCHITECTURE.md.
//!
//! | module | owns |
//! |---|---|
//! | `cli` | flags, environment, TOML config -> `BrokerConfig`; subcommand arguments |
//! | `admin` | admin subcommands, Kafka clients over the wire (`sluice topic|group|cluster|produce|consume`) |
//! | `broker` | startup of the shard threads, shutdown |
//! | `shard` | thread-per-core shards, cross-shard calls, partition replicas, topic lifecycle |
//! | `net` | listeners, connections, framing, TLS streams (`net/tls.rs`) |
//! | `auth` | SASL (PLAIN, SCRAM), salted credentials, TLS settings, principals |
//! | `protocol` | request decoding, response encoding, served API versions |
//! | `handlers` | one file per Kafka API |
//! | `group` | the group coordinator: consumer groups, committed offsets |
//! | `metadata` | topics, placement, topic configs, persistence |
//! | `metrics` | per-shard counters, the Prometheus text format, the admin HTTP port (`/metrics`, `/v1/status/live`, `/v1/status/ready`) |
//! | `console` | the read-only web console on the admin HTTP port: embedded page and assets, the JSON it polls (`/v1/cluster`, `/v1/topics`, `/v1/groups`, `/v1/counters`) |
//! | `alloc` | the process allocator (huge reservations lazily mapped; memory handed back after large removals) |

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

pub mod admin;
pub mod alloc;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod console;
pub mod controller;
pub mod datadir;
pub mod devcluster;
pub mod group;
pub mod handlers;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod protocol;
pub mod replication;
pub mod shard;
pub mod txn;
