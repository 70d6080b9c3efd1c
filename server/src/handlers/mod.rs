//! Request handlers: one file per Kafka API. `handle` dispatches a decoded
//! request on the connection's shard and returns what to send back.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod authorize;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::rc::Rc;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::auth::authorizer::Access;
use crate::net::Connection;
use crate::protocol::{Request, ResponseFrame, encode_response};
use crate::shard::Shard;

/// The shard serving requests for `partition` here: this broker must lead
/// it and hold its replica. Otherwise NOT_LEADER_OR_FOLLOWER, so the client
/// refreshes its metadata and goes to the leader (also when the partition
/// has no leader: it retries until one is elected).
pub fn serving_shard(
    view: &crate::metadata::ClusterMetadata,
    partition: &crate::metadata::PartitionMetadata,
) -> Result<crate::shard::ShardId, kafka_protocol::error::ResponseError> {
    match (partition.leader, partition.local_shard) {
        (Some(leader), Some(shard)) if leader == view.node_id => Ok(crate::shard::ShardId(shard)),
        _ => Err(kafka_protocol::error::ResponseError::NotLeaderOrFollower),
    }
}

/// Kafka's check of a client's `current_leader_epoch` against the
/// partition's `leader_epoch` (Fetch, ListOffsets, OffsetForLeaderEpoch): a
/// negative epoch skips it; an older one is FENCED_LEADER_EPOCH (the
/// client's leader was replaced), a newer one UNKNOWN_LEADER_EPOCH (this
/// broker has not seen that election yet).
pub fn leader_epoch_error(
    partition_epoch: i32,
    requested: i32,
) -> Option<kafka_protocol::error::ResponseError> {
    use kafka_protocol::error::ResponseError;
    if requested < 0 || requested == partition_epoch {
        None
    } else if requested > partition_epoch {
        Some(ResponseError::UnknownLeaderEpoch)
    } else {
        Some(ResponseError::FencedLeaderEpoch)
    }
}

/// The replicas of `partition` whose broker is fenced or not registered
/// (Metadata's `offline_replicas`).
pub fn offline_replicas(
    view: &crate::metadata::ClusterMetadata,
    partition: &crate::metadata::PartitionMetadata,
) -> Vec<i32> {
    partition
        .replicas
        .iter()
        .copied()
        .filter(|id| view.brokers.get(id).is_none_or(|broker| !broker.is_live()))
        .collect()
}

/// Where a client should go for a partition this broker does not serve
/// (KIP-951): the leader's id and epoch (-1, -1 when there is none) and
/// the leader's endpoint on the client's listener when the leader is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub endpoint: Option<LeaderEndpoint>,
}

/// A leader as a client of one listener reaches it: a `node_endpoints`
/// entry of a Produce or Fetch response (KIP-951).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderEndpoint {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl LeaderHint {
    /// The hint for `partition` to a client connected on `listener`, as
    /// Kafka's `getCurrentLeader(tp, request.context.listenerName)`: the
    /// endpoint is the leader's on that listener (what Metadata answers
    /// that client, `ClusterMetadata::endpoint`), and there is none when
    /// the leader is fenced or unknown (`getAliveBrokerNode`). The first
    /// listener's endpoint would send a client of another listener (TLS,
    /// SASL, an external address) where it cannot connect.
    pub fn of(
        view: &crate::metadata::ClusterMetadata,
        partition: &crate::metadata::PartitionMetadata,
        listener: &str,
    ) -> LeaderHint {
        match partition.leader {
            Some(leader) => LeaderHint {
                leader_id: leader,
                leader_epoch: partition.leader_epoch,
                endpoint: view
                    .brokers
                    .get(&leader)
                    .filter(|broker| broker.is_live())
                    .map(|broker| {
                        let (host, port) = view.endpoint(broker, listener);
                        LeaderEndpoint {
                            id: broker.id,
                            host,
                            port,
                            rack: broker.rack.clone(),
                        }
                    }),
            },
            None => LeaderHint {
                leader_id: -1,
                leader_epoch: -1,
                endpoint: None,
            },
        }
    }
}

/// What a handler answers.
pub enum Reply {
    /// A response body, encoded by the caller.
    Body(Box<ResponseKind>),
    /// A frame the handler encoded itself (Fetch: zero-copy records).
    Frame(ResponseFrame),
    /// Nothing (Produce with acks=0).
    Nothing,
}

/// One request's authorization on `connection`: with the authorizer off,
/// one branch per check; on, the image's ACLs taken once for the whole
/// request (no lock per topic or record).
pub fn access<'a>(shard: &'a Shard, connection: &'a Connection) -> Access<'a> {
    match &shard.config.authorizer {
        None => Access::unrestricted(),
        Some(config) => Access::new(
            config,
            std::sync::Arc::clone(shard.metadata.controller().image().acls()),
            &connection.principal,
            connection.peer.ip(),
        ),
    }
}

/// Handle one request on `connection` (its peer, listener and
/// authenticated principal). `Err` means the request cannot be answered
/// (a bug or an internal failure): the connection is closed.
pub async fn handle(
    shard: &Rc<Shard>,
    request: Request,
    connection: &Connection,
) -> anyhow::Result<Option<ResponseFrame>> {
    let peer = connection.peer;
    let listener = connection.listener.as_ref();
    let access = &access(shard, connection);
    let Request {
        api_key,
        version,
        header,
        body,
    } = request;
    let broker_peer = (!shard.config.inter_broker.authenticated()).then(|| peer.ip());
    let (body, removed) = match authorize::before(access, version, body, broker_peer, || {
        shard.metadata.snapshot()
    }) {
        Ok(allowed) => allowed,
        Err(refusal) => {
            return Ok(Some(encode_response(
                api_key,
                version,
                header.correlation_id,
                &refusal,
            )?));
        }
    };
    let mut reply = match body {
        RequestKind::ApiVersions(body) => api_versions::handle(shard, version, &body),
        RequestKind::Metadata(body) => {
            metadata::handle(shard, version, body, listener, access).await?
        }
        RequestKind::Produce(body) => {
            produce::handle(shard, version, body, &connection.listener, access).await?
        }
        RequestKind::InitProducerId(body) => init_producer_id::handle(shard, version, &body).await,
        RequestKind::Fetch(body) => {
            fetch::handle(
                shard,
                version,
                header.correlation_id,
                body,
                listener,
                access,
            )
            .await?
        }
        RequestKind::ListOffsets(body) => {
            list_offsets::handle(shard, version, body, access).await?
        }
        RequestKind::OffsetForLeaderEpoch(body) => {
            offset_for_leader_epoch::handle(shard, version, body, access).await?
        }
        RequestKind::CreateTopics(body) => {
            create_topics::handle(shard, version, body, access).await?
        }
        RequestKind::DeleteTopics(body) => {
            delete_topics::handle(shard, version, body, access).await?
        }
        RequestKind::CreatePartitions(body) => {
            create_partitions::handle(shard, version, body, access).await?
        }
        RequestKind::DescribeConfigs(body) => {
            describe_configs::handle(shard, version, body, access).await?
        }
        RequestKind::AlterConfigs(body) => {
            alter_configs::handle(shard, version, body, access).await?
        }
        RequestKind::IncrementalAlterConfigs(body) => {
            incremental_alter_configs::handle(shard, version, body, access).await?
        }
        RequestKind::DeleteRecords(body) => {
            delete_records::handle(shard, version, body, access).await?
        }
        RequestKind::DescribeCluster(body) => {
            describe_cluster::handle(shard, version, &body, listener, access)
        }
        RequestKind::FindCoordinator(body) => {
            find_coordinator::handle(shard, version, body, listener).await?
        }
        RequestKind::DescribeUserScramCredentials(body) => {
            describe_user_scram_credentials::handle(shard, body)
        }
        RequestKind::AlterUserScramCredentials(body) => {
            alter_user_scram_credentials::handle(shard, body).await
        }
        RequestKind::CreateAcls(body) => create_acls::handle(shard, access, body).await,
        RequestKind::DescribeAcls(body) => describe_acls::handle(shard, access, body),
        RequestKind::DeleteAcls(body) => delete_acls::handle(shard, access, body).await,
        RequestKind::JoinGroup(body) => {
            join_group::handle(shard, version, &header, peer, body).await?
        }
        RequestKind::SyncGroup(body) => sync_group::handle(shard, version, body).await?,
        RequestKind::Heartbeat(body) => heartbeat::handle(shard, version, body).await?,
        RequestKind::LeaveGroup(body) => leave_group::handle(shard, version, body).await?,
        RequestKind::OffsetCommit(body) => offset_commit::handle(shard, version, body).await?,
        RequestKind::OffsetFetch(body) => offset_fetch::handle(shard, version, body).await?,
        RequestKind::OffsetDelete(body) => offset_delete::handle(shard, version, body).await?,
        RequestKind::ListGroups(body) => list_groups::handle(shard, version, body).await?,
        RequestKind::DescribeGroups(body) => describe_groups::handle(shard, version, body).await?,
        RequestKind::DeleteGroups(body) => delete_groups::handle(shard, version, body).await?,
        RequestKind::ConsumerGroupHeartbeat(_) => consumer_group_heartbeat::handle(),
        RequestKind::AddPartitionsToTxn(body) => {
            add_partitions_to_txn::handle(shard, version, body).await?
        }
        RequestKind::AddOffsetsToTxn(body) => {
            add_offsets_to_txn::handle(shard, version, body).await?
        }
        RequestKind::EndTxn(body) => end_txn::handle(shard, version, body).await?,
        RequestKind::TxnOffsetCommit(body) => {
            txn_offset_commit::handle(shard, version, body).await?
        }
        RequestKind::ElectLeaders(body) => {
            elect_leaders::handle(shard, version, body, access).await?
        }
        RequestKind::AlterPartitionReassignments(body) => {
            partition_reassignments::alter(shard, version, body, access).await?
        }
        RequestKind::ListPartitionReassignments(body) => {
            partition_reassignments::list(shard, body, access)
        }
        RequestKind::DescribeLogDirs(body) => {
            describe_log_dirs::handle(shard, version, body, access).await?
        }
        RequestKind::DescribeTopicPartitions(body) => {
            describe_topic_partitions::handle(shard, version, body, access)
        }
        RequestKind::DescribeProducers(body) => {
            describe_producers::handle(shard, version, body).await?
        }
        RequestKind::DescribeTransactions(body) => {
            describe_transactions::handle(shard, version, body).await?
        }
        RequestKind::ListTransactions(body) => {
            list_transactions::handle(shard, version, body).await?
        }
        RequestKind::WriteTxnMarkers(body) => {
            write_txn_markers::handle(shard, version, body).await?
        }
        other => anyhow::bail!("no handler for {:?}", other),
    };
    if let Reply::Body(body) = &mut reply {
        authorize::after(access, removed, body.as_mut());
    }
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;

    use super::*;
    use crate::metadata::{BrokerInfo, ClusterMetadata, PartitionMetadata};

    fn broker(id: i32, fenced: bool) -> BrokerInfo {
        BrokerInfo {
            id,
            host: format!("broker{id}"),
            port: 9090 + id,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        }
    }

    /// Brokers 1 (this one) and 2 live, 3 fenced.
    fn view() -> ClusterMetadata {
        ClusterMetadata {
            node_id: 1,
            brokers: [
                (1, broker(1, false)),
                (2, broker(2, false)),
                (3, broker(3, true)),
            ]
            .into(),
            ..ClusterMetadata::default()
        }
    }

    fn partition(leader: Option<i32>, local_shard: Option<usize>) -> PartitionMetadata {
        PartitionMetadata {
            replicas: vec![1, 2, 3, 4],
            isr: vec![1, 2],
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
            local_shard,
        }
    }

    #[test]
    fn leader_epochs_older_are_fenced_newer_unknown_and_negative_unchecked() {
        assert_eq!(leader_epoch_error(5, -1), None);
        assert_eq!(leader_epoch_error(5, 5), None);
        assert_eq!(
            leader_epoch_error(5, 4),
            Some(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            leader_epoch_error(5, 6),
            Some(ResponseError::UnknownLeaderEpoch)
        );
        assert_eq!(
            leader_epoch_error(0, 5),
            Some(ResponseError::UnknownLeaderEpoch)
        );
    }

    #[test]
    fn clients_get_the_endpoint_of_the_listener_they_came_in_on() {
        let mut view = view();
        view.listener_endpoints.insert(
            2,
            vec![
                ("PLAINTEXT".into(), "broker2".into(), 9092),
                ("SASL_SSL".into(), "public2".into(), 19094),
            ],
        );
        let broker = view.brokers[&2].clone();
        assert_eq!(
            view.endpoint(&broker, "SASL_SSL"),
            ("public2".to_string(), 19094)
        );
        assert_eq!(
            view.endpoint(&broker, "PLAINTEXT"),
            ("broker2".to_string(), 9092)
        );
        // A listener the broker does not have: its first endpoint.
        assert_eq!(
            view.endpoint(&broker, "SSL"),
            (broker.host.clone(), broker.port)
        );
    }

    #[test]
    fn replicas_on_fenced_or_unknown_brokers_are_offline() {
        assert_eq!(
            offline_replicas(&view(), &partition(Some(1), Some(0))),
            vec![3, 4]
        );
    }

    #[test]
    fn only_the_leader_holding_the_replica_serves() {
        let view = view();
        assert_eq!(
            serving_shard(&view, &partition(Some(1), Some(2))),
            Ok(crate::shard::ShardId(2))
        );
        assert_eq!(
            serving_shard(&view, &partition(Some(2), Some(2))),
            Err(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(
            serving_shard(&view, &partition(None, Some(2))),
            Err(ResponseError::NotLeaderOrFollower)
        );
    }

    #[test]
    fn the_leader_hint_names_the_leader_epoch_and_endpoint() {
        let view = view();
        let hint = LeaderHint::of(&view, &partition(Some(2), None), "PLAINTEXT");
        assert_eq!(
            hint,
            LeaderHint {
                leader_id: 2,
                leader_epoch: 5,
                endpoint: Some(LeaderEndpoint {
                    id: 2,
                    host: "broker2".to_string(),
                    port: 9092,
                    rack: None,
                }),
            }
        );
        let none = LeaderHint::of(&view, &partition(None, None), "PLAINTEXT");
        assert_eq!(
            (none.leader_id, none.leader_epoch, none.endpoint),
            (-1, -1, None)
        );
    }

    #[test]
    fn the_leader_hint_has_the_endpoint_of_the_clients_listener() {
        let mut view = view();
        view.listener_endpoints.insert(
            2,
            vec![
                ("PLAINTEXT".into(), "broker2".into(), 9092),
                ("SASL_SSL".into(), "public2".into(), 19094),
            ],
        );
        let endpoint = |listener: &str| {
            LeaderHint::of(&view, &partition(Some(2), None), listener)
                .endpoint
                .map(|endpoint| (endpoint.host, endpoint.port))
        };
        assert_eq!(endpoint("SASL_SSL"), Some(("public2".to_string(), 19094)));
        assert_eq!(endpoint("PLAINTEXT"), Some(("broker2".to_string(), 9092)));
        // A fenced leader has no endpoint (Kafka's getAliveBrokerNode),
        // only its id and epoch.
        let fenced = LeaderHint::of(&view, &partition(Some(3), None), "SASL_SSL");
        assert_eq!((fenced.leader_id, fenced.endpoint), (3, None));
    }
}
