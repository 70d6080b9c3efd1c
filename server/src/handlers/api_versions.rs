//! ApiVersions: the versions of every API we serve (protocol/versions.rs).
//!
//! KIP-511: a client may send a newer ApiVersions than we know; the
//! connection layer then answers with a v0 response carrying
//! UNSUPPORTED_VERSION and our table ([`unsupported_version_response`]).
//! Tagged fields are left at their defaults, which kafka-protocol does not
//! write: old librdkafka (Debian's kcat, 2.0.2) fails on a v3 response that
//! carries default-valued tagged fields.
//!
//! Features (v3+, tagged fields written only with values): the
//! `transaction.version` feature, supported 0..=2 and finalized at the
//! broker's `--transaction-version` (Kafka 4.x Java clients use transaction
//! protocol v2, KIP-890, only when it is finalized at 2; librdkafka and
//! kafka-python ignore it). As in Kafka, v3 answers omit supported features
//! whose minimum is 0 (older clients reject a minimum of 0). The finalized
//! features epoch is the time this broker process first answered (ms):
//! it grows across restarts, so clients take a changed level.

use kafka_protocol::error::ResponseError;
use std::rc::Rc;
use std::sync::OnceLock;

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::protocol::{ResponseFrame, encode_response, versions};
use crate::shard::Shard;

/// The feature that selects the transaction protocol (Kafka's name).
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";
/// The highest transaction.version this broker implements.
const TRANSACTION_VERSION_MAX: i16 = 2;

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

pub fn handle(shard: &Rc<Shard>, version: i16, _request: &ApiVersionsRequest) -> Reply {
    let mut response = ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(table());
    if version >= 3 {
        let level = shard.config.transaction_version;
        if version >= 4 {
            response.supported_features = vec![
                SupportedFeatureKey::default()
                    .with_name(StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE))
                    .with_min_version(0)
                    .with_max_version(TRANSACTION_VERSION_MAX),
            ];
        }
        response.finalized_features_epoch = features_epoch();
        response.finalized_features = vec![
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE))
                .with_min_version_level(level)
                .with_max_version_level(level),
        ];
    }
    Reply::Body(Box::new(ResponseKind::ApiVersions(response)))
}

/// See the module docs.
fn features_epoch() -> i64 {
    static EPOCH: OnceLock<i64> = OnceLock::new();
    *EPOCH.get_or_init(crate::group::wall_ms)
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
