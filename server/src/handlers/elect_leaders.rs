//! ElectLeaders (API 43, v0-2): `kafka-leader-election.sh` and
//! AdminClient.electLeaders.
//!
//! PREFERRED (0; v0 has no election type and means it): for each named
//! partition, or every partition when topics is null, the controller
//! moves leadership to the preferred replica (the first) when it is
//! active and in the ISR, through the same decision as its periodic
//! rebalance (`controller/quorum_controller.rs`,
//! leader.imbalance.check.interval.ms). This broker answers from its view,
//! as Kafka's controller does: UNKNOWN_TOPIC_OR_PARTITION, ELECTION_NOT_NEEDED
//! (the preferred replica leads already), PREFERRED_LEADER_NOT_AVAILABLE
//! (not in the ISR, or not active); the others are sent to the controller
//! and answered, once this broker has applied the change, by whether the
//! preferred replica now leads. When every partition is asked for, those
//! needing no election are left out of the response (as Kafka does).
//!
//! UNCLEAN (1): a partition with a leader is ELECTION_NOT_NEEDED; one
//! without, with a live replica, is sent to the controller
//! (`ElectUncleanLeaders`), which elects an active ISR member if any, else
//! the first active replica (its log becomes the partition's: records it
//! lacks are lost, which is what the operator asked for), whatever the
//! topic's unclean.leader.election.enable, as Kafka does; no live replica:
//! ELIGIBLE_LEADERS_NOT_AVAILABLE.
//!
//! Authorization (Kafka's rule): ALTER on the cluster; refused, every
//! named partition is CLUSTER_AUTHORIZATION_FAILED, as is the response.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::metadata::ClusterMetadata;
use crate::shard::Shard;

pub const PREFERRED: i8 = 0;
pub const UNCLEAN: i8 = 1;

/// One partition's outcome: `None` needs the controller.
type Outcome = Option<ResponseError>;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ElectLeadersRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let election_type = if version == 0 {
        PREFERRED
    } else {
        request.election_type
    };
    let all = request.topic_partitions.is_none();
    let view = shard.metadata.snapshot();
    let requested = requested(&view, request.topic_partitions);
    let response = if !access.allows_cluster(AclOperation::Alter) {
        let refused = ResponseError::ClusterAuthorizationFailed;
        respond(
            requested
                .into_iter()
                .map(|partition| (partition, Some(refused))),
            false,
        )
        .with_error_code(refused.code())
    } else {
        let decided: Vec<((String, i32), Outcome)> = requested
            .into_iter()
            .map(|partition| {
                let outcome = decide(&view, &partition, election_type);
                (partition, outcome)
            })
            .collect();
        let to_elect: Vec<(String, i32)> = decided
            .iter()
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(partition, _)| partition.clone())
            .collect();
        let mut failure = None;
        if !to_elect.is_empty() {
            let controller = shard.metadata.controller();
            let elected = if election_type == UNCLEAN {
                controller.elect_unclean_leaders(to_elect).await
            } else {
                controller.elect_preferred_leaders(to_elect).await
            };
            match elected {
                Ok(offset) => {
                    if let Err(error) = shard.metadata.wait_published(offset.0).await {
                        tracing::warn!(%error, "ElectLeaders: waiting for the election");
                        failure = Some(ResponseError::RequestTimedOut);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "ElectLeaders: the controller refused");
                    failure = Some(if error.is_retriable() {
                        ResponseError::NotController
                    } else {
                        ResponseError::UnknownServerError
                    });
                }
            }
        }
        let view = shard.metadata.snapshot();
        let answered = decided.into_iter().map(|(partition, outcome)| {
            let outcome = outcome.or(failure).or_else(|| {
                // Decided by the controller: elected if the preferred
                // replica (UNCLEAN: any replica) leads now.
                match decide(&view, &partition, election_type) {
                    Some(ResponseError::ElectionNotNeeded) => None,
                    Some(other) => Some(other),
                    None if election_type == UNCLEAN => {
                        Some(ResponseError::EligibleLeadersNotAvailable)
                    }
                    None => Some(ResponseError::PreferredLeaderNotAvailable),
                }
            });
            (partition, outcome)
        });
        respond(answered, all)
    };
    Ok(Reply::Body(Box::new(ResponseKind::ElectLeaders(response))))
}

/// The partitions asked for, in request order; every partition of the
/// view when `None`.
fn requested(
    view: &ClusterMetadata,
    topics: Option<Vec<kafka_protocol::messages::elect_leaders_request::TopicPartitions>>,
) -> Vec<(String, i32)> {
    match topics {
        None => view
            .topics
            .values()
            .flat_map(|topic| {
                (0..topic.partitions.len() as i32).map(|index| (topic.name.clone(), index))
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                topic
                    .partitions
                    .into_iter()
                    .map(move |index| (name.clone(), index))
            })
            .collect(),
    }
}

/// What this broker's view says of electing `partition`: `None` when an
/// election is needed and possible (PREFERRED: ask the controller).
pub fn decide(view: &ClusterMetadata, partition: &(String, i32), election_type: i8) -> Outcome {
    let (name, index) = partition;
    let Some(state) = view
        .topics
        .get(name)
        .and_then(|topic| topic.partitions.get(usize::try_from(*index).ok()?))
    else {
        return Some(ResponseError::UnknownTopicOrPartition);
    };
    match election_type {
        PREFERRED => {
            let Some(preferred) = state.replicas.first().copied() else {
                return Some(ResponseError::PreferredLeaderNotAvailable);
            };
            if state.leader == Some(preferred) {
                Some(ResponseError::ElectionNotNeeded)
            } else if !state.isr.contains(&preferred)
                || view
                    .brokers
                    .get(&preferred)
                    .is_none_or(|broker| !broker.is_live())
            {
                Some(ResponseError::PreferredLeaderNotAvailable)
            } else {
                None
            }
        }
        UNCLEAN if state.leader.is_some() => Some(ResponseError::ElectionNotNeeded),
        UNCLEAN => {
            let live = |replica: &i32| {
                view.brokers
                    .get(replica)
                    .is_some_and(|broker| broker.is_live())
            };
            if state.replicas.iter().any(live) {
                None
            } else {
                Some(ResponseError::EligibleLeadersNotAvailable)
            }
        }
        _ => Some(ResponseError::InvalidRequest),
    }
}

/// The response: results by topic, in the order topics first appear.
/// With `all`, partitions that needed no election are left out.
fn respond(
    answered: impl IntoIterator<Item = ((String, i32), Outcome)>,
    all: bool,
) -> ElectLeadersResponse {
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, index), outcome) in answered {
        if all && outcome == Some(ResponseError::ElectionNotNeeded) {
            continue;
        }
        let partition = PartitionResult::default()
            .with_partition_id(index)
            .with_error_code(outcome.map_or(0, |error| error.code()))
            .with_error_message(outcome.map(|error| StrBytes::from_string(error.to_string())));
        match results
            .iter_mut()
            .find(|result| result.topic.0.as_str() == topic)
        {
            Some(result) => result.partition_result.push(partition),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        topic,
                    )))
                    .with_partition_result(vec![partition]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metadata::{BrokerInfo, PartitionMetadata, TopicMetadata};

    /// Brokers 1 and 2 live, 3 fenced; topic t: p0 led by its preferred
    /// 1, p1 led by 2 with preferred 1 in the ISR, p2 preferred 1 out of
    /// the ISR, p3 preferred 3 (fenced) in the ISR, p4 leaderless.
    fn view() -> ClusterMetadata {
        let broker = |id: i32, fenced: bool| BrokerInfo {
            id,
            host: format!("broker{id}"),
            port: 9090 + id,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        };
        let partition =
            |replicas: Vec<i32>, isr: Vec<i32>, leader: Option<i32>| PartitionMetadata {
                replicas,
                isr,
                leader,
                leader_epoch: 1,
                partition_epoch: 1,
                local_shard: None,
            };
        ClusterMetadata {
            node_id: 1,
            brokers: [
                (1, broker(1, false)),
                (2, broker(2, false)),
                (3, broker(3, true)),
            ]
            .into(),
            topics: [(
                "t".to_string(),
                TopicMetadata {
                    name: "t".into(),
                    id: uuid::Uuid::from_u128(1),
                    partitions: vec![
                        partition(vec![1, 2], vec![1, 2], Some(1)),
                        partition(vec![1, 2], vec![1, 2], Some(2)),
                        partition(vec![1, 2], vec![2], Some(2)),
                        partition(vec![3, 2], vec![3, 2], Some(2)),
                        partition(vec![1, 2], vec![], None),
                    ],
                    configs: Default::default(),
                },
            )]
            .into(),
            ..ClusterMetadata::default()
        }
    }

    #[test]
    fn preferred_elections_are_decided_as_kafka_answers_them() {
        let view = view();
        let decide = |partition: i32| decide(&view, &("t".to_string(), partition), PREFERRED);
        assert_eq!(decide(0), Some(ResponseError::ElectionNotNeeded));
        assert_eq!(decide(1), None);
        assert_eq!(decide(2), Some(ResponseError::PreferredLeaderNotAvailable));
        assert_eq!(decide(3), Some(ResponseError::PreferredLeaderNotAvailable));
        assert_eq!(decide(4), Some(ResponseError::PreferredLeaderNotAvailable));
        assert_eq!(decide(5), Some(ResponseError::UnknownTopicOrPartition));
        assert_eq!(
            super::decide(&view, &("u".to_string(), 0), PREFERRED),
            Some(ResponseError::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn unclean_elections_go_to_the_controller_for_leaderless_partitions_with_a_live_replica() {
        let mut view = view();
        let decide = |view: &ClusterMetadata, partition: i32| {
            decide(view, &("t".to_string(), partition), UNCLEAN)
        };
        assert_eq!(decide(&view, 0), Some(ResponseError::ElectionNotNeeded));
        assert_eq!(decide(&view, 4), None);
        // Every replica of the leaderless partition down: nobody to elect.
        for id in [1, 2] {
            view.brokers.get_mut(&id).unwrap().fenced = true;
        }
        assert_eq!(
            decide(&view, 4),
            Some(ResponseError::EligibleLeadersNotAvailable)
        );
    }

    #[test]
    fn every_partition_leaves_out_those_needing_no_election() {
        let answered = || {
            vec![
                (("t".to_string(), 0), Some(ResponseError::ElectionNotNeeded)),
                (("t".to_string(), 1), None),
            ]
        };
        let all = respond(answered(), true);
        assert_eq!(all.replica_election_results.len(), 1);
        assert_eq!(all.replica_election_results[0].partition_result.len(), 1);
        let named = respond(answered(), false);
        let partitions = &named.replica_election_results[0].partition_result;
        assert_eq!(
            partitions
                .iter()
                .map(|p| (p.partition_id, p.error_code))
                .collect::<Vec<_>>(),
            vec![(0, ResponseError::ElectionNotNeeded.code()), (1, 0)]
        );
    }
}
