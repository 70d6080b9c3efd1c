//! InitProducerId (v0..=5): producer ids for idempotent producers.
//!
//! Without a transactional id Kafka always hands out a fresh producer id
//! with epoch 0, whatever producer id and epoch the request carries
//! (KIP-360 fields, v3+): a non-transactional id has no owner the broker
//! could check, so bumping the epoch of a client-named id would let one
//! client fence another. Sluice does the same. Idempotent clients bump
//! their epoch locally instead (librdkafka, Java), which the partitions
//! accept (shard/producer_state.rs).
//!
//! Ids are unique across restarts: they come from blocks of
//! [`PRODUCER_ID_BLOCK_SIZE`] whose end is written to
//! `<data_dir>/producer-id-block` (atomically, fsynced) before any id of the
//! block is handed out, so a crash skips at most the rest of a block. The
//! allocator is process-wide behind a mutex (keyed by data directory, so
//! brokers started in one process for tests stay apart); InitProducerId is
//! rare, and the file write, once per block, blocks the calling shard for
//! one fsync.
//!
//! Transactions are not supported. A transactional id is refused with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED: of the codes a Kafka broker can
//! answer here, it is the one both librdkafka (rd_kafka_idemp_check_error)
//! and the Java client treat as fatal at once, so init_transactions() fails
//! immediately instead of retrying until its timeout (COORDINATOR_NOT_AVAILABLE
//! and NOT_COORDINATOR send them looking for another coordinator;
//! UNSUPPORTED_VERSION makes librdkafka retry until the timeout). Read it as
//! "this broker authorizes no transactional ids". Produce requests carrying
//! a transactional id get the same code.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock, PoisonError};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ResponseKind};

use crate::handlers::Reply;
use crate::shard::Shard;

/// The answer to anything transactional (InitProducerId and Produce with a
/// transactional id); see the module docs for why this code.
pub const TRANSACTIONS_UNSUPPORTED: ResponseError =
    ResponseError::TransactionalIdAuthorizationFailed;

/// Producer ids reserved per write of the block file.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The file holding the start of the next unreserved block, in decimal.
const BLOCK_FILE: &str = "producer-id-block";

pub fn handle(shard: &Rc<Shard>, _version: i16, request: &InitProducerIdRequest) -> Reply {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    let response = if let Some(transactional_id) = &request.transactional_id {
        tracing::info!(
            transactional_id = %transactional_id.0.as_str(),
            "refusing InitProducerId: transactions are not supported"
        );
        refused(TRANSACTIONS_UNSUPPORTED)
    } else {
        match allocate_producer_id(&shard.config.data_dir) {
            Ok(producer_id) => InitProducerIdResponse::default()
                .with_producer_id(producer_id.into())
                .with_producer_epoch(0),
            Err(error) => {
                tracing::error!(%error, "could not allocate a producer id");
                // Retriable for both librdkafka and the Java client.
                refused(ResponseError::KafkaStorageError)
            }
        }
    };
    Reply::Body(Box::new(ResponseKind::InitProducerId(response)))
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds {content:?}, not a producer id")]
    Corrupt { path: PathBuf, content: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("producer ids are exhausted")]
    Exhausted,
}

/// The reserved, not yet handed out ids of one data directory:
/// `next..end`.
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

static BLOCKS: OnceLock<Mutex<HashMap<PathBuf, ProducerIdBlock>>> = OnceLock::new();

/// A producer id never handed out before by a broker on `data_dir`.
pub fn allocate_producer_id(data_dir: &Path) -> Result<i64, ProducerIdError> {
    let blocks = BLOCKS.get_or_init(Mutex::default);
    // A panic while holding the lock leaves the map consistent: a block is
    // replaced only after its file write succeeded.
    let mut blocks = blocks.lock().unwrap_or_else(PoisonError::into_inner);
    let block = blocks
        .entry(data_dir.to_path_buf())
        .or_insert(ProducerIdBlock { next: 0, end: 0 });
    if block.next >= block.end {
        let start = read_block_start(data_dir)?;
        let end = start
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or(ProducerIdError::Exhausted)?;
        write_block_start(data_dir, end)?;
        *block = ProducerIdBlock { next: start, end };
    }
    let producer_id = block.next;
    block.next += 1;
    Ok(producer_id)
}

fn read_block_start(data_dir: &Path) -> Result<i64, ProducerIdError> {
    let path = data_dir.join(BLOCK_FILE);
    let content = match fs::read_to_string(&path) {
        Ok(content) => content,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(ProducerIdError::Read { path, source }),
    };
    match content.trim().parse::<i64>() {
        Ok(start) if start >= 0 => Ok(start),
        _ => Err(ProducerIdError::Corrupt { path, content }),
    }
}

/// Replace the block file with `start`, durably: temporary file, fsync,
/// rename, fsync of the directory.
fn write_block_start(data_dir: &Path, start: i64) -> Result<(), ProducerIdError> {
    let path = data_dir.join(BLOCK_FILE);
    let temporary = data_dir.join(format!("{BLOCK_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(format!("{start}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(data_dir)?.sync_all()
    };
    write().map_err(|source| ProducerIdError::Write { path, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temporary_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-producer-id-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn forget(data_dir: &Path) {
        // Simulate a restart: drop the in-memory block.
        BLOCKS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap()
            .remove(data_dir);
    }

    #[test]
    fn ids_are_consecutive_within_a_block_and_unique_across_restarts() {
        let dir = temporary_dir("restart");
        let first: Vec<i64> = (0..3)
            .map(|_| allocate_producer_id(&dir).unwrap())
            .collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(
            fs::read_to_string(dir.join(BLOCK_FILE)).unwrap().trim(),
            PRODUCER_ID_BLOCK_SIZE.to_string()
        );
        forget(&dir);
        let after_restart = allocate_producer_id(&dir).unwrap();
        assert_eq!(after_restart, PRODUCER_ID_BLOCK_SIZE);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_block_is_reserved_when_one_runs_out() {
        let dir = temporary_dir("blocks");
        let ids: Vec<i64> = (0..PRODUCER_ID_BLOCK_SIZE + 2)
            .map(|_| allocate_producer_id(&dir).unwrap())
            .collect();
        let expected: Vec<i64> = (0..PRODUCER_ID_BLOCK_SIZE + 2).collect();
        assert_eq!(ids, expected);
        assert_eq!(
            fs::read_to_string(dir.join(BLOCK_FILE)).unwrap().trim(),
            (2 * PRODUCER_ID_BLOCK_SIZE).to_string()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_block_file_is_an_error_not_a_reuse() {
        let dir = temporary_dir("corrupt");
        fs::write(dir.join(BLOCK_FILE), "garbage").unwrap();
        assert!(matches!(
            allocate_producer_id(&dir),
            Err(ProducerIdError::Corrupt { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
