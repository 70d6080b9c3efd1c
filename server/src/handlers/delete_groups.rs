//! DeleteGroups (v0..=2): delete empty groups with their committed offsets
//! (tombstones in `__consumer_offsets`, so the deletion survives restarts
//! and compaction removes the records). A group with members is refused
//! with NON_EMPTY_GROUP; an unknown one with GROUP_ID_NOT_FOUND. While its
//! tombstones are written the group is Dead (requests about it get
//! COORDINATOR_NOT_AVAILABLE, retriable), as in Kafka.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};

use crate::group::state::GroupState;
use crate::group::{self, group_tombstone, offset_key, wall_ms};
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteGroupsRequest,
) -> anyhow::Result<Reply> {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let id = group_id.0.to_string();
        let error = group::on_coordinator(shard, &id.clone(), move |owner, partition| async move {
            delete_on_coordinator(&owner, partition, &id).await
        })
        .await
        .unwrap_or_else(Some);
        let mut result = DeletableGroupResult::default();
        result.group_id = group_id;
        result.error_code = error.map_or(0, |error| error.code());
        response.results.push(result);
    }
    Ok(Reply::Body(Box::new(ResponseKind::DeleteGroups(response))))
}

pub(crate) async fn delete_on_coordinator(
    owner: &Rc<Shard>,
    partition: i32,
    group_id: &str,
) -> Option<ResponseError> {
    let records = {
        let mut groups = owner.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        // Sessions that ended by now count as ended, as in Kafka, whose
        // timers fire at the deadline (ours run every tick).
        group.tick(
            &group::group_config(owner),
            std::time::Instant::now(),
            wall_ms(),
        );
        group::persist_if_dirty(owner, group);
        match group.state {
            // A commit being written would outlive the deletion.
            GroupState::Empty if group.commits_in_flight > 0 => {
                return Some(ResponseError::NonEmptyGroup);
            }
            GroupState::Empty => {}
            GroupState::Dead => return Some(ResponseError::GroupIdNotFound),
            _ => return Some(ResponseError::NonEmptyGroup),
        }
        let mut records: Vec<_> = group
            .offsets
            .keys()
            .map(|(topic, index)| (offset_key(group_id, topic, *index), None))
            .collect();
        records.push(group_tombstone(group_id));
        records
    };
    // One synchronous step: append the tombstones and mark the group Dead
    // (Kafka marks it before appending). Until the tombstones are durable
    // and the group is removed, requests about it get
    // COORDINATOR_NOT_AVAILABLE (retriable); a commit let through then was
    // appended after the tombstones, answered success, and was missing in
    // memory once the group was removed, but came back at the next load.
    let (_, wait) = match group::append_as_now(owner, partition, &records, None) {
        Ok(appended) => appended,
        Err(error) => return Some(error),
    };
    let incarnation = {
        let mut groups = owner.groups.groups.borrow_mut();
        let group = groups
            .get_mut(group_id)
            .expect("no await since the group was found");
        group.mark_dead(wall_ms());
        group.incarnation()
    };
    let written = wait.await;
    // Removed even if the write failed, as Kafka does: the tombstones may
    // still become committed, and a group created again starts empty.
    let mut groups = owner.groups.groups.borrow_mut();
    if groups
        .get(group_id)
        .is_some_and(|group| group.incarnation() == incarnation)
    {
        groups.remove(group_id);
    }
    written.err()
}
