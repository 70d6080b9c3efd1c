//! DescribeGroups (v0..=6): state, protocol and members of groups. Member
//! metadata and assignments are included only when the group is Stable (as
//! Kafka: they are in flux otherwise). An unknown group is described as
//! "Dead" (v6: with GROUP_ID_NOT_FOUND).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group::{self, state::GroupState};
use crate::handlers::Reply;
use crate::shard::Shard;

/// Kafka's "operations not requested" marker.
const OPERATIONS_OMITTED: i32 = i32::MIN;
/// The ACL operations a group has (READ 3, DELETE 6, DESCRIBE 8), all
/// allowed: this broker has no authorization.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeGroupsRequest,
) -> anyhow::Result<Reply> {
    let operations = if request.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        OPERATIONS_OMITTED
    };
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let id = group_id.0.to_string();
        let outcome = group::on_coordinator(shard, &id.clone(), move |owner, _| async move {
            let groups = owner.groups.groups.borrow();
            let group = groups.get(&id)?;
            let stable = group.state == GroupState::Stable;
            let mut described = DescribedGroup::default();
            described.group_state = StrBytes::from_static_str(group.state.name());
            described.protocol_type =
                StrBytes::from_string(group.protocol_type.clone().unwrap_or_default());
            described.protocol_data =
                StrBytes::from_string(group.protocol.clone().unwrap_or_default());
            described.members = group
                .members
                .values()
                .map(|member| {
                    let mut out = DescribedGroupMember::default();
                    out.member_id = StrBytes::from_string(member.id.clone());
                    out.group_instance_id = member.instance_id.clone().map(StrBytes::from_string);
                    out.client_id = StrBytes::from_string(member.client_id.clone());
                    out.client_host = StrBytes::from_string(member.client_host.clone());
                    if stable {
                        out.member_metadata = group.member_metadata(member);
                        out.member_assignment = member.assignment.clone();
                    }
                    out
                })
                .collect();
            Some(described)
        })
        .await;
        let mut described = match outcome {
            Ok(Some(described)) => described,
            Ok(None) => {
                let mut dead = DescribedGroup::default();
                dead.group_state = StrBytes::from_static_str(GroupState::Dead.name());
                if version >= 6 {
                    dead.error_code = ResponseError::GroupIdNotFound.code();
                    dead.error_message = Some(StrBytes::from_static_str("group not found"));
                }
                dead
            }
            Err(error) => {
                let mut failed = DescribedGroup::default();
                failed.error_code = error.code();
                failed
            }
        };
        described.group_id = group_id;
        described.authorized_operations = operations;
        response.groups.push(described);
    }
    Ok(Reply::Body(Box::new(ResponseKind::DescribeGroups(
        response,
    ))))
}
