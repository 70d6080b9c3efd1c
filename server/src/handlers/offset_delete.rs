//! OffsetDelete (v0): remove a group's committed offsets for some
//! partitions. Refused per partition (GROUP_SUBSCRIBED_TO_TOPIC) for topics
//! an active consumer group subscribes to, as Kafka does.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};

use crate::group::state::GroupState;
use crate::group::{self, offset_key};
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetDeleteRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let asked: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|topic| {
            (
                topic.name.0.to_string(),
                topic
                    .partitions
                    .iter()
                    .map(|partition| partition.partition_index)
                    .collect(),
            )
        })
        .collect();
    let outcome = group::on_coordinator(
        shard,
        &group_id.clone(),
        move |owner, partition| async move {
            delete_on_coordinator(&owner, partition, &group_id, asked).await
        },
    )
    .await
    .and_then(|result| result);
    let mut response = OffsetDeleteResponse::default();
    match outcome {
        Err(error) => response.error_code = error.code(),
        Ok(per_topic) => {
            response.topics = request
                .topics
                .into_iter()
                .zip(per_topic)
                .map(|(topic, errors)| {
                    let mut out = OffsetDeleteResponseTopic::default();
                    out.partitions = topic
                        .partitions
                        .iter()
                        .zip(errors)
                        .map(|(partition, error)| {
                            let mut result = OffsetDeleteResponsePartition::default();
                            result.partition_index = partition.partition_index;
                            result.error_code = error.map_or(0, |error| error.code());
                            result
                        })
                        .collect();
                    out.name = topic.name;
                    out
                })
                .collect();
        }
    }
    Ok(Reply::Body(Box::new(ResponseKind::OffsetDelete(response))))
}

pub(crate) async fn delete_on_coordinator(
    owner: &Rc<Shard>,
    partition: i32,
    group_id: &str,
    asked: Vec<(String, Vec<i32>)>,
) -> Result<Vec<Vec<Option<ResponseError>>>, ResponseError> {
    let mut tombstones = Vec::new();
    let mut errors = Vec::new();
    {
        let groups = owner.groups.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        let subscribed = match group.state {
            GroupState::Empty | GroupState::Dead => Vec::new(),
            _ => match group.subscribed_topics() {
                Some(topics) => topics,
                // Not a consumer group: its offsets cannot be deleted while
                // it has members.
                None => return Err(ResponseError::NonEmptyGroup),
            },
        };
        for (topic, partitions) in &asked {
            let in_use = subscribed.contains(topic);
            errors.push(
                partitions
                    .iter()
                    .map(|&index| {
                        if in_use {
                            return Some(ResponseError::GroupSubscribedToTopic);
                        }
                        if group.offsets.contains_key(&(topic.clone(), index)) {
                            tombstones.push((topic.clone(), index));
                        }
                        None
                    })
                    .collect(),
            );
        }
    }
    if tombstones.is_empty() {
        return Ok(errors);
    }
    let records: Vec<_> = tombstones
        .iter()
        .map(|(topic, index)| (offset_key(group_id, topic, *index), None))
        .collect();
    // One synchronous step: append the tombstones and remove the offsets
    // from memory (`Group::delete_offsets`), so that a commit appended
    // after them, completing before they are durable, stays applied.
    let (base, wait) = group::append_as_now(owner, partition, &records, None)?;
    if let Some(group) = owner.groups.groups.borrow_mut().get_mut(group_id) {
        group.delete_offsets(
            tombstones
                .into_iter()
                .enumerate()
                .map(|(index, key)| (key, group::record_offset(base, index))),
        );
    }
    wait.await?;
    Ok(errors)
}
