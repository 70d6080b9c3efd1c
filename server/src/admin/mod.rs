//! Admin subcommands of the `sluice` binary: Kafka *clients* (like Kafka's
//! kafka-*.sh tools and rpk) that talk to any Kafka broker over the wire
//! protocol. They run on the CLI's own thread, blocking, with no broker
//! state of their own.
//!
//! | module | owns |
//! |---|---|
//! | `args` | the subcommands' command line arguments |
//! | `profile` | the bootstrap and security settings: flag, environment, profile file, default |
//! | `client` | a blocking one-connection Kafka client (ApiVersions negotiation, framing, time limits) |
//! | `security` | TLS (rustls) and SASL (PLAIN, SCRAM) of the client's connections |
//! | `pool` | connections by broker id; leader, coordinator and any-broker routing |
//! | `output` | tables, JSON, progress on a terminal |
//! | `topic` | `sluice topic create/list/describe/alter-config/add-partitions/delete` |
//! | `reassign` | `sluice topic reassign/reassignments`: moving partitions between brokers |
//! | `group` | `sluice group list/describe/delete/seek` (alias `groups`) |
//! | `cluster` | `sluice cluster info/health/status` |
//! | `transactions` | `sluice transactions list/describe` (alias `txn`) |
//! | `produce` | `sluice produce TOPIC`: stdin lines -> records |
//! | `consume` | `sluice consume TOPIC`: records -> stdout lines |
//! | `user` | `sluice user create/list/delete/bootstrap`: SCRAM users |
//! | `acl` | `sluice acl create/list/delete`: ACL bindings (like kafka-acls.sh) |
//!
//! Exit codes: 0 success; 1 an operation failed (or `cluster health` or `cluster status` found
//! the cluster unhealthy); 2 invalid arguments.

pub mod acl;
pub mod args;
pub mod client;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod output;
pub mod pool;
pub mod produce;
pub mod profile;
pub mod reassign;
pub mod security;
pub mod topic;
pub mod transactions;
pub mod user;

use std::process::ExitCode;

use client::ClientError;

/// What can go wrong in an admin subcommand.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("topic {0:?} does not exist (UNKNOWN_TOPIC_OR_PARTITION)")]
    TopicNotFound(String),
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    PartitionNotFound {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error("partition {topic}-{partition} has no leader (LEADER_NOT_AVAILABLE)")]
    NoLeader { topic: String, partition: i32 },
    #[error("broker {0} is not in the cluster metadata")]
    UnknownBroker(i32),
    #[error("consumer group {0:?} does not exist (GROUP_ID_NOT_FOUND)")]
    GroupNotFound(String),
    #[error(
        "consumer group {group:?} has {members} active member(s) (state {state}): \
         stop its consumers first, their commits would overwrite the new offsets"
    )]
    GroupActive {
        group: String,
        members: usize,
        state: String,
    },
    #[error("transactional id {0:?} does not exist (TRANSACTIONAL_ID_NOT_FOUND)")]
    TransactionalIdNotFound(String),
    #[error(
        "no coordinator for group {group:?} within {:?}: {last}",
        pool::SETTLE_WAIT
    )]
    CoordinatorUnavailable { group: String, last: ClientError },
    #[error("cannot decode the assignment of member {member}: {reason}")]
    Assignment { member: String, reason: String },
    /// The user's arguments (or profile) are wrong: exit code 2.
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Some items failed; each was reported in the output already.
    #[error("{0}")]
    Failed(String),
    /// stdout was closed (`sluice consume | head`): stop quietly.
    #[error("stdout closed")]
    StdoutClosed,
}

/// The exit code of `result` for `sluice <command>`, the error written to
/// stderr.
pub fn exit(command: &str, result: Result<(), AdminError>) -> ExitCode {
    match result {
        Ok(()) | Err(AdminError::StdoutClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice {command}: {error}");
            if let AdminError::Client(ClientError::Connect { .. } | ClientError::Resolve { .. }) =
                &error
            {
                eprintln!(
                    "sluice {command}: the broker address comes from --bootstrap, \
                     SLUICE_BOOTSTRAP or `bootstrap` in the profile file \
                     (~/.config/sluice/profile.toml); default {}",
                    profile::DEFAULT_BOOTSTRAP
                );
            }
            match error {
                AdminError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
