//! LeaveGroup (v0..=5): members leave on purpose (v3+: several at once,
//! static members by group instance id); the group rebalances at once
//! instead of waiting for their sessions to expire.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group::{self, group_config, persist_if_dirty, wall_ms};
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .into_iter()
            .map(|member| {
                (
                    member.member_id.to_string(),
                    member.group_instance_id.map(|id| id.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let asked = leaving.clone();
    let outcome = group::on_coordinator(shard, &group_id.clone(), move |owner, _| async move {
        let config = group_config(&owner);
        let mut groups = owner.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(&group_id) else {
            return leaving
                .iter()
                .map(|_| Some(ResponseError::UnknownMemberId))
                .collect::<Vec<_>>();
        };
        let errors = leaving
            .iter()
            .map(|(member_id, instance_id)| {
                group.leave(
                    member_id,
                    instance_id.as_deref(),
                    &config,
                    Instant::now(),
                    wall_ms(),
                )
            })
            .collect();
        persist_if_dirty(&owner, group);
        errors
    })
    .await;
    let mut response = LeaveGroupResponse::default();
    match outcome {
        Err(error) => response.error_code = error.code(),
        Ok(errors) if version >= 3 => {
            response.members = asked
                .into_iter()
                .zip(errors)
                .map(|((member_id, instance_id), error)| {
                    let mut member = MemberResponse::default();
                    member.member_id = StrBytes::from_string(member_id);
                    member.group_instance_id = instance_id.map(StrBytes::from_string);
                    member.error_code = error.map_or(0, |error| error.code());
                    member
                })
                .collect();
        }
        Ok(errors) => {
            response.error_code = errors
                .first()
                .copied()
                .flatten()
                .map_or(0, |error| error.code());
        }
    }
    Ok(Reply::Body(Box::new(ResponseKind::LeaveGroup(response))))
}
