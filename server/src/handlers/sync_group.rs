//! SyncGroup (v0..=5): the leader hands out the assignment; every member
//! gets its own once the stable group is durable in `__consumer_offsets`.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::state::SyncResult;
use crate::group::{self, group_config, wall_ms};
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: SyncGroupRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let protocol_type = request.protocol_type.map(|kind| kind.to_string());
    let protocol_name = request.protocol_name.map(|name| name.to_string());
    let generation = request.generation_id;
    let assignments: Vec<(String, bytes::Bytes)> = request
        .assignments
        .into_iter()
        .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
        .collect();
    let result = group::on_coordinator(shard, &group_id.clone(), move |owner, _| async move {
        let config = group_config(&owner);
        let step = {
            let mut groups = owner.groups.groups.borrow_mut();
            let Some(group) = groups.get_mut(&group_id) else {
                return SyncResult::error(ResponseError::UnknownMemberId);
            };
            // v5: the member's view of the protocol must match the group's.
            let mismatch = |asked: &Option<String>, actual: &Option<String>| {
                asked.is_some() && actual.is_some() && asked != actual
            };
            if mismatch(&protocol_type, &group.protocol_type)
                || mismatch(&protocol_name, &group.protocol)
            {
                return SyncResult::error(ResponseError::InconsistentGroupProtocol);
            }
            match group.sync(
                generation,
                &member_id,
                instance_id.as_deref(),
                assignments,
                Instant::now(),
            ) {
                Err(result) => return result,
                Ok((receiver, completed)) => {
                    let generation = group.generation;
                    let stored = completed.then(|| {
                        group::store_group(&owner, group, move |group, error| {
                            group.finish_sync(
                                generation,
                                error,
                                &config,
                                Instant::now(),
                                wall_ms(),
                            );
                        })
                    });
                    (receiver, stored)
                }
            }
        };
        let (receiver, stored) = step;
        if let Some(stored) = stored {
            stored.await;
        }
        receiver
            .await
            .unwrap_or_else(|_| SyncResult::error(ResponseError::RebalanceInProgress))
    })
    .await
    .unwrap_or_else(SyncResult::error);
    let mut response = SyncGroupResponse::default();
    response.error_code = result.error.map_or(0, |error| error.code());
    if version >= 5 {
        response.protocol_type = result.protocol_type.map(StrBytes::from_string);
        response.protocol_name = result.protocol.map(StrBytes::from_string);
    }
    response.assignment = result.assignment;
    Ok(Reply::Body(Box::new(ResponseKind::SyncGroup(response))))
}
