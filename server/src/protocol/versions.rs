//! The API versions this broker serves: what kafka-protocol can decode,
//! narrowed to what the handlers implement. ApiVersions advertises exactly
//! this table; requests outside it are refused before decoding.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

const fn range(min: i16, max: i16) -> VersionRange {
    VersionRange { min, max }
}

/// Every API served, with its version range.
pub const SUPPORTED: &[(ApiKey, VersionRange)] = &[
    (ApiKey::ApiVersions, range(0, 4)),
    (ApiKey::Metadata, range(0, 12)),
];

pub fn supported(api_key: ApiKey) -> Option<VersionRange> {
    SUPPORTED
        .iter()
        .find(|(key, _)| *key == api_key)
        .map(|(_, range)| *range)
}
