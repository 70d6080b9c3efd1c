//! Request handlers: one file per Kafka API. `handle` dispatches a decoded
//! request on the connection's shard and returns what to send back.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod fetch_session;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::rc::Rc;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::protocol::{Request, ResponseFrame, encode_response};
use crate::shard::Shard;

/// What a handler answers.
pub enum Reply {
    /// A response body, encoded by the caller.
    Body(Box<ResponseKind>),
    /// A frame the handler encoded itself (Fetch: zero-copy records).
    Frame(ResponseFrame),
    /// Nothing (Produce with acks=0).
    Nothing,
}

/// Handle one request. `Err` means the request cannot be answered (a bug or
/// an internal failure): the connection is closed.
pub async fn handle(shard: &Rc<Shard>, request: Request) -> anyhow::Result<Option<ResponseFrame>> {
    let Request {
        api_key,
        version,
        header,
        body,
    } = request;
    let reply = match body {
        RequestKind::ApiVersions(body) => api_versions::handle(version, &body),
        RequestKind::Metadata(body) => metadata::handle(shard, version, body).await?,
        RequestKind::Produce(body) => produce::handle(shard, version, body).await?,
        RequestKind::InitProducerId(body) => init_producer_id::handle(shard, version, &body),
        RequestKind::Fetch(body) => {
            fetch::handle(shard, version, header.correlation_id, body).await?
        }
        RequestKind::ListOffsets(body) => list_offsets::handle(shard, version, body).await?,
        RequestKind::CreateTopics(body) => create_topics::handle(shard, version, body).await?,
        RequestKind::DeleteTopics(body) => delete_topics::handle(shard, version, body).await?,
        RequestKind::CreatePartitions(body) => {
            create_partitions::handle(shard, version, body).await?
        }
        RequestKind::DescribeConfigs(body) => {
            describe_configs::handle(shard, version, body).await?
        }
        RequestKind::AlterConfigs(body) => alter_configs::handle(shard, version, body).await?,
        RequestKind::IncrementalAlterConfigs(body) => {
            incremental_alter_configs::handle(shard, version, body).await?
        }
        RequestKind::DeleteRecords(body) => delete_records::handle(shard, version, body).await?,
        RequestKind::DescribeCluster(body) => describe_cluster::handle(shard, version, &body),
        other => anyhow::bail!("no handler for {:?}", other),
    };
    match reply {
        Reply::Body(body) => Ok(Some(encode_response(
            api_key,
            version,
            header.correlation_id,
            &body,
        )?)),
        Reply::Frame(frame) => Ok(Some(frame)),
        Reply::Nothing => Ok(None),
    }
}
