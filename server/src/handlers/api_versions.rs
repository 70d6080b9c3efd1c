//! ApiVersions: the versions of every API we serve (protocol/versions.rs).
//!
//! KIP-511: a client may send a newer ApiVersions than we know; the
//! connection layer then answers with a v0 response carrying
//! UNSUPPORTED_VERSION and our table ([`unsupported_version_response`]).
//! Tagged fields are left at their defaults, which kafka-protocol does not
//! write: old librdkafka (Debian's kcat, 2.0.2) fails on a v3 response that
//! carries default-valued tagged fields.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use crate::handlers::Reply;
use crate::protocol::{ResponseFrame, encode_response, versions};

fn table() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|(api_key, range)| {
            ApiVersion::default()
                .with_api_key(*api_key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub fn handle(_version: i16, _request: &ApiVersionsRequest) -> Reply {
    let response = ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(table());
    Reply::Body(Box::new(ResponseKind::ApiVersions(response)))
}

/// The v0 answer to an ApiVersions request of a version we do not know.
pub fn unsupported_version_response(correlation_id: i32) -> anyhow::Result<ResponseFrame> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table());
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}
