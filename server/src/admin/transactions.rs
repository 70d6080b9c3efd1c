//! `sluice transactions list|describe` (alias `sluice txn`): what
//! kafka-transactions.sh `list` and `describe` do, over the Kafka protocol
//! against any broker.
//!
//! List: Metadata for the brokers -> ListTransactions on every broker (each
//! answers for the `__transaction_state` partitions it coordinates), merged
//! and sorted by transactional id, as Kafka's tool merges them.
//!
//! Describe: FindCoordinator with key type 1 (transaction) -> DescribeTransactions
//! on that coordinator, one id at a time; a coordinator that moved or is still
//! loading is looked up again, up to [`SETTLE_WAIT`].
//!
//! The gathering returns plain data; the rendering ([`render_listing`],
//! [`render_descriptions`]) is pure, so both are testable apart.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, FindCoordinatorRequest, ListTransactionsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::AdminError;
use super::args::{TransactionsArgs, TransactionsCommand};
use super::client::{ClientError, check_code};
use super::output::{Format, NONE, emit, emit_json, render_table};
use super::pool::{BrokerPool, SETTLE_RETRY_INTERVAL, SETTLE_WAIT};
use super::profile::{self, Target};

/// Versions this client speaks, per API (the broker's ranges narrow them).
/// ListTransactions v1 adds the duration filter, which we leave at -1.
const LIST_TRANSACTIONS_VERSIONS: RangeInclusive<i16> = 0..=1;
const DESCRIBE_TRANSACTIONS_VERSIONS: RangeInclusive<i16> = 0..=0;
/// key_type (transaction coordinators) needs v1.
const FIND_COORDINATOR_VERSIONS: RangeInclusive<i16> = 1..=4;
/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// One transaction as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
    /// The broker that listed it: its coordinator.
    pub coordinator: i32,
}

/// One partition of an ongoing transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TransactionPartition {
    pub topic: String,
    pub partition: i32,
}

/// Everything `describe` shows about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionDescription {
    pub transactional_id: String,
    /// The coordinator's node id.
    pub coordinator: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    /// Wall clock (ms since the epoch) the ongoing transaction began; `None`
    /// when there is none (-1 on the wire).
    pub start_time_ms: Option<i64>,
    /// Sorted by topic then partition; empty unless a transaction is open.
    pub partitions: Vec<TransactionPartition>,
}

/// Run `sluice transactions ...`.
pub fn run(args: TransactionsArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::target(&args.common).and_then(|bootstrap| match args.command {
        TransactionsCommand::List => {
            list_transactions(&bootstrap).and_then(|transactions| match format {
                Format::Table => emit(&render_listing(&transactions)),
                Format::Json => emit_json(&transactions),
            })
        }
        TransactionsCommand::Describe { transactional_ids } => {
            describe_command(&bootstrap, &transactional_ids, format)
        }
    });
    super::exit("transactions", result)
}

/// Every transaction of every broker in the cluster, sorted by id.
pub fn list_transactions(bootstrap: &Target) -> Result<Vec<TransactionListing>, AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let layout = pool.metadata(Some(&[]), false)?;
    let mut transactions = BTreeMap::new();
    for broker in &layout.brokers {
        let connection = pool.broker(broker.node_id)?;
        let request = ListTransactionsRequest::default().with_duration_filter(-1);
        let (response, _) = connection.call(&request, LIST_TRANSACTIONS_VERSIONS)?;
        check_code(response.error_code, || {
            format!("ListTransactions from broker {}", connection.address())
        })?;
        for listed in response.transaction_states {
            let transactional_id = listed.transactional_id.0.to_string();
            transactions.insert(
                transactional_id.clone(),
                TransactionListing {
                    transactional_id,
                    producer_id: listed.producer_id.0,
                    state: listed.transaction_state.to_string(),
                    coordinator: broker.node_id,
                },
            );
        }
    }
    Ok(transactions.into_values().collect())
}

/// The transaction coordinator of `transactional_id` (FindCoordinator key
/// type 1), asked of the bootstrap broker; retried while it is not
/// available yet, up to [`SETTLE_WAIT`].
fn find_transaction_coordinator(
    pool: &mut BrokerPool,
    transactional_id: &str,
    deadline: Instant,
) -> Result<i32, AdminError> {
    let connection = pool.any();
    let version = connection.negotiate(ApiKey::FindCoordinator, FIND_COORDINATOR_VERSIONS)?;
    let key = StrBytes::from_string(transactional_id.to_string());
    let mut request = FindCoordinatorRequest::default().with_key_type(KEY_TYPE_TRANSACTION);
    if version >= 4 {
        request.coordinator_keys = vec![key];
    } else {
        request.key = key;
    }
    let what = || format!("FindCoordinator (transaction) {transactional_id:?}");
    loop {
        let response = connection.send(&request, version)?;
        let (code, node_id) = if version >= 4 {
            let coordinator =
                response
                    .coordinators
                    .into_iter()
                    .next()
                    .ok_or_else(|| ClientError::Kafka {
                        what: format!("{} answered no coordinator", what()),
                        code: ResponseError::UnknownServerError.code(),
                    })?;
            (coordinator.error_code, coordinator.node_id.0)
        } else {
            (response.error_code, response.node_id.0)
        };
        let retriable = code.err().is_some_and(|kafka| kafka.is_retriable());
        match check_code(code, what) {
            Ok(()) => return Ok(node_id),
            Err(_) if retriable && Instant::now() < deadline => {
                std::thread::sleep(SETTLE_RETRY_INTERVAL);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Describe one transactional id on its coordinator. `Ok(None)` when the
/// coordinator does not know it (TRANSACTIONAL_ID_NOT_FOUND).
pub fn describe_transaction(
    pool: &mut BrokerPool,
    transactional_id: &str,
) -> Result<Option<TransactionDescription>, AdminError> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let coordinator = find_transaction_coordinator(pool, transactional_id, deadline)?;
        let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
            StrBytes::from_string(transactional_id.to_string()).into(),
        ]);
        let (response, _) = pool
            .broker(coordinator)?
            .call(&request, DESCRIBE_TRANSACTIONS_VERSIONS)?;
        let state = response
            .transaction_states
            .into_iter()
            .find(|state| state.transactional_id.0.as_str() == transactional_id)
            .ok_or_else(|| ClientError::Kafka {
                what: format!("DescribeTransactions {transactional_id:?} answered no transaction"),
                code: ResponseError::UnknownServerError.code(),
            })?;
        match state.error_code.err() {
            None => {}
            Some(ResponseError::TransactionalIdNotFound) => return Ok(None),
            Some(
                ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress,
            ) if Instant::now() < deadline => {
                std::thread::sleep(SETTLE_RETRY_INTERVAL);
                continue;
            }
            Some(_) => {
                check_code(state.error_code, || {
                    format!("DescribeTransactions {transactional_id:?}")
                })?;
            }
        }
        let mut partitions: Vec<TransactionPartition> = state
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| TransactionPartition {
                        topic: topic.topic.0.to_string(),
                        partition: *partition,
                    })
            })
            .collect();
        partitions.sort();
        return Ok(Some(TransactionDescription {
            transactional_id: transactional_id.to_string(),
            coordinator,
            producer_id: state.producer_id.0,
            producer_epoch: state.producer_epoch,
            state: state.transaction_state.to_string(),
            timeout_ms: state.transaction_timeout_ms,
            start_time_ms: (state.transaction_start_time_ms >= 0)
                .then_some(state.transaction_start_time_ms),
            partitions,
        }));
    }
}

/// `sluice transactions describe ID...`: the ids found are printed; each
/// unknown one is an error (exit code 1), named on stderr.
fn describe_command(
    bootstrap: &Target,
    transactional_ids: &[String],
    format: Format,
) -> Result<(), AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for transactional_id in transactional_ids {
        match describe_transaction(&mut pool, transactional_id)? {
            Some(description) => found.push(description),
            None => missing.push(transactional_id.clone()),
        }
    }
    if !found.is_empty() {
        match format {
            Format::Table => emit(&render_descriptions(&found, now_ms()))?,
            Format::Json => emit_json(&found)?,
        }
    }
    match missing.as_slice() {
        [] => Ok(()),
        [only] => Err(AdminError::TransactionalIdNotFound(only.clone())),
        _ => {
            for transactional_id in &missing {
                eprintln!(
                    "sluice transactions: {}",
                    AdminError::TransactionalIdNotFound(transactional_id.clone())
                );
            }
            Err(AdminError::Failed(format!(
                "{} of {} transactional ids do not exist",
                missing.len(),
                transactional_ids.len()
            )))
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// The `list` table.
pub fn render_listing(transactions: &[TransactionListing]) -> String {
    let rows: Vec<Vec<String>> = transactions
        .iter()
        .map(|transaction| {
            vec![
                transaction.transactional_id.clone(),
                transaction.coordinator.to_string(),
                transaction.producer_id.to_string(),
                transaction.state.clone(),
            ]
        })
        .collect();
    render_table(
        &["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"],
        &rows,
    )
}

/// The `describe` table, one row per id; `now_ms` gives the duration of
/// ongoing transactions.
pub fn render_descriptions(descriptions: &[TransactionDescription], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = descriptions
        .iter()
        .map(|description| {
            let partitions = if description.partitions.is_empty() {
                NONE.to_string()
            } else {
                description
                    .partitions
                    .iter()
                    .map(|partition| format!("{}-{}", partition.topic, partition.partition))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let (start, duration) = match description.start_time_ms {
                Some(start) => (
                    start.to_string(),
                    format_duration(now_ms.saturating_sub(start)),
                ),
                None => (NONE.to_string(), NONE.to_string()),
            };
            vec![
                description.transactional_id.clone(),
                description.coordinator.to_string(),
                description.producer_id.to_string(),
                description.producer_epoch.to_string(),
                description.state.clone(),
                description.timeout_ms.to_string(),
                start,
                duration,
                partitions,
            ]
        })
        .collect();
    render_table(
        &[
            "TRANSACTIONAL-ID",
            "COORDINATOR",
            "PRODUCER-ID",
            "EPOCH",
            "STATE",
            "TIMEOUT-MS",
            "START-MS",
            "DURATION",
            "PARTITIONS",
        ],
        &rows,
    )
}

/// `1.234s` (a clock skewed behind the broker's shows 0s).
fn format_duration(ms: i64) -> String {
    format!(
        "{:.3}s",
        Duration::from_millis(u64::try_from(ms).unwrap_or(0)).as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_has_one_row_per_transaction() {
        let text = render_listing(&[TransactionListing {
            transactional_id: "orders".into(),
            producer_id: 7,
            state: "Ongoing".into(),
            coordinator: 1,
        }]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TRANSACTIONAL-ID"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["orders", "1", "7", "Ongoing"]
        );
    }

    #[test]
    fn description_joins_partitions_and_shows_the_duration() {
        let description = TransactionDescription {
            transactional_id: "orders".into(),
            coordinator: 1,
            producer_id: 7,
            producer_epoch: 2,
            state: "Ongoing".into(),
            timeout_ms: 60_000,
            start_time_ms: Some(1_000),
            partitions: vec![
                TransactionPartition {
                    topic: "a".into(),
                    partition: 0,
                },
                TransactionPartition {
                    topic: "a".into(),
                    partition: 3,
                },
            ],
        };
        let text = render_descriptions(std::slice::from_ref(&description), 2_500);
        let row: Vec<&str> = text
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            [
                "orders", "1", "7", "2", "Ongoing", "60000", "1000", "1.500s", "a-0,a-3"
            ]
        );
        let idle = TransactionDescription {
            start_time_ms: None,
            partitions: Vec::new(),
            state: "CompleteCommit".into(),
            ..description
        };
        let text = render_descriptions(&[idle], 2_500);
        let row: Vec<&str> = text
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(row[4..], ["CompleteCommit", "60000", "-", "-", "-"]);
    }
}
