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
    // v12: transaction protocol v2 (KIP-890: partitions added by the leader).
    (ApiKey::Produce, range(3, 12)),
    (ApiKey::InitProducerId, range(0, 5)),
    (ApiKey::Fetch, range(4, 17)),
    (ApiKey::ListOffsets, range(1, 10)),
    // v0 and v1 left Kafka in 4.0 (KIP-896) and kafka-protocol cannot decode them.
    (ApiKey::OffsetForLeaderEpoch, range(2, 4)),
    (ApiKey::CreateTopics, range(2, 7)),
    (ApiKey::DeleteTopics, range(1, 6)),
    (ApiKey::CreatePartitions, range(0, 3)),
    (ApiKey::DescribeConfigs, range(1, 4)),
    (ApiKey::AlterConfigs, range(0, 2)),
    (ApiKey::IncrementalAlterConfigs, range(0, 1)),
    (ApiKey::DeleteRecords, range(0, 2)),
    (ApiKey::DescribeCluster, range(0, 2)),
    // kafka-leader-election.sh (PREFERRED; UNCLEAN is not done).
    (ApiKey::ElectLeaders, range(0, 2)),
    // kafka-reassign-partitions.sh (controller/reassignment.rs).
    (ApiKey::AlterPartitionReassignments, range(0, 1)),
    (ApiKey::ListPartitionReassignments, range(0, 0)),
    // kafka-log-dirs.sh, rpk cluster logdirs (v0 is not decodable).
    (ApiKey::DescribeLogDirs, range(1, 4)),
    // KIP-966: kafka-topics.sh --describe from Kafka 3.8.
    (ApiKey::DescribeTopicPartitions, range(0, 0)),
    (ApiKey::FindCoordinator, range(0, 6)),
    (ApiKey::JoinGroup, range(0, 9)),
    (ApiKey::SyncGroup, range(0, 5)),
    (ApiKey::Heartbeat, range(0, 4)),
    (ApiKey::LeaveGroup, range(0, 5)),
    (ApiKey::OffsetCommit, range(2, 9)),
    (ApiKey::OffsetFetch, range(1, 9)),
    (ApiKey::OffsetDelete, range(0, 0)),
    (ApiKey::ListGroups, range(0, 5)),
    (ApiKey::DescribeGroups, range(0, 6)),
    (ApiKey::DeleteGroups, range(0, 2)),
    // The transaction coordinator (txn/). AddPartitionsToTxn v4+ is the
    // broker-to-broker form (KIP-890 verification and implicit adds);
    // EndTxn v5 and TxnOffsetCommit v5 are transaction protocol v2.
    (ApiKey::AddPartitionsToTxn, range(0, 5)),
    (ApiKey::AddOffsetsToTxn, range(0, 4)),
    (ApiKey::EndTxn, range(0, 5)),
    (ApiKey::TxnOffsetCommit, range(0, 5)),
    (ApiKey::DescribeProducers, range(0, 0)),
    (ApiKey::DescribeTransactions, range(0, 0)),
    (ApiKey::ListTransactions, range(0, 1)),
    // Advertised only to refuse it clearly; see handlers/consumer_group_heartbeat.rs.
    (ApiKey::ConsumerGroupHeartbeat, range(0, 1)),
    // Sent by transaction coordinators to partition leaders (v0 is not decodable).
    (ApiKey::WriteTxnMarkers, range(1, 1)),
    // Authentication (auth/, net/sasl.rs): answered by the connection
    // loop, which holds the SASL state.
    (ApiKey::SaslHandshake, range(0, 1)),
    (ApiKey::SaslAuthenticate, range(0, 2)),
    (ApiKey::DescribeUserScramCredentials, range(0, 0)),
    (ApiKey::AlterUserScramCredentials, range(0, 0)),
    // ACLs (auth/acl.rs, handlers/*_acls.rs). Version 0 (Kafka < 2.0,
    // no pattern types) is not decodable by kafka-protocol; librdkafka
    // and kafka-python negotiate 1.
    (ApiKey::DescribeAcls, range(1, 3)),
    (ApiKey::CreateAcls, range(1, 3)),
    (ApiKey::DeleteAcls, range(1, 3)),
];

pub fn supported(api_key: ApiKey) -> Option<VersionRange> {
    SUPPORTED
        .iter()
        .find(|(key, _)| *key == api_key)
        .map(|(_, range)| *range)
}
