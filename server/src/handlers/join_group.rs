//! JoinGroup (v0..=9): enter a group and wait for the join window to close
//! (group/state.rs has the protocol). The request waits on the
//! coordinating shard; the connection is blocked meanwhile, as in Kafka.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group::state::{Group, JoinRequest, JoinResult, Reply as StateReply};
use crate::group::{self, group_config, persist_if_dirty, wall_ms};
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    header: &RequestHeader,
    peer: SocketAddr,
    request: JoinGroupRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let result = if group_id.is_empty() {
        JoinResult::error(ResponseError::InvalidGroupId, &member_id)
    } else {
        let fallback_member = member_id.clone();
        group::on_coordinator(
            shard,
            &group_id.clone(),
            move |owner, partition| async move {
                join_on_coordinator(&owner, partition, group_id, join).await
            },
        )
        .await
        .unwrap_or_else(|error| JoinResult::error(error, &fallback_member))
    };
    let mut response = JoinGroupResponse::default();
    response.error_code = result.error.map_or(0, |error| error.code());
    response.generation_id = result.generation;
    response.protocol_type = result.protocol_type.map(StrBytes::from_string);
    // Non-nullable before v7.
    response.protocol_name = match result.protocol {
        Some(protocol) => Some(StrBytes::from_string(protocol)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    response.leader = StrBytes::from_string(result.leader);
    response.skip_assignment = result.skip_assignment && version >= 9;
    response.member_id = StrBytes::from_string(result.member_id);
    response.members = result
        .members
        .into_iter()
        .map(|member| {
            let mut out = JoinGroupResponseMember::default();
            out.member_id = StrBytes::from_string(member.member_id);
            out.group_instance_id = member.instance_id.map(StrBytes::from_string);
            out.metadata = member.metadata;
            out
        })
        .collect();
    Ok(Reply::Body(Box::new(ResponseKind::JoinGroup(response))))
}

/// JoinGroup `join` of group `group_id` (offsets partition `partition`)
/// on its coordinating shard `owner`: the state machine's answer, waited
/// for when it is not immediate. A static member's replacement is answered
/// once its group record is durable ([`group::store_group`]).
pub(crate) async fn join_on_coordinator(
    owner: &Rc<Shard>,
    partition: i32,
    group_id: String,
    join: JoinRequest,
) -> JoinResult {
    let member_id = join.member_id.clone();
    let (reply, stored) = {
        let mut groups = owner.groups.groups.borrow_mut();
        let group = groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, partition, wall_ms()));
        let reply = group.join(join, &group_config(owner), Instant::now(), wall_ms());
        let stored = match &reply {
            StateReply::Store {
                member_id: new_id, ..
            } => {
                let new_id = new_id.clone();
                Some(group::store_group(owner, group, move |group, error| {
                    group.finish_static_replacement(&new_id, error, Instant::now());
                }))
            }
            StateReply::Now(_) | StateReply::Wait(_) => None,
        };
        persist_if_dirty(owner, group);
        (reply, stored)
    };
    if let Some(stored) = stored {
        stored.await;
    }
    match reply {
        StateReply::Now(result) => result,
        // The member was removed while waiting (left, fenced).
        StateReply::Wait(receiver) | StateReply::Store { receiver, .. } => receiver
            .await
            .unwrap_or_else(|_| JoinResult::error(ResponseError::UnknownMemberId, &member_id)),
    }
}
