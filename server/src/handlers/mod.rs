//! Request handlers: one file per Kafka API. `handle` dispatches a decoded
//! request on the connection's shard and returns what to send back.

pub mod api_versions;
pub mod metadata;

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
