//! DescribeGroups (v0..=6): state, protocol and members of groups. The
//! protocol, and the members' metadata and assignments, are included only
//! when the group is Stable (Kafka's GroupMetadata.summary: they are in flux
//! otherwise). An unknown group is described as "Dead" (v6: with
//! GROUP_ID_NOT_FOUND).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group::{self, state::Group, state::GroupState};
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
            groups.get(&id).map(describe)
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

/// `group` as DescribeGroups shows it (Kafka's GroupMetadata.summary): the
/// protocol and the members' metadata and assignments only when Stable,
/// the protocol empty otherwise (the previous generation's, or none yet).
fn describe(group: &Group) -> DescribedGroup {
    let stable = group.state == GroupState::Stable;
    let mut described = DescribedGroup::default();
    described.group_state = StrBytes::from_static_str(group.state.name());
    described.protocol_type =
        StrBytes::from_string(group.protocol_type.clone().unwrap_or_default());
    if stable {
        described.protocol_data = StrBytes::from_string(group.protocol.clone().unwrap_or_default());
    }
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
    described
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::*;
    use crate::group::state::{GroupConfig, JoinRequest, Reply};

    /// Kafka's GroupMetadata.summary names the protocol only for a Stable
    /// group; a group rebalancing shows an empty one. Sluice showed the
    /// previous generation's protocol while the group rebalanced.
    #[test]
    fn the_protocol_is_shown_only_while_the_group_is_stable() {
        let config = GroupConfig {
            initial_rebalance_delay: Duration::from_millis(100),
            session_timeout_min_ms: 6000,
            session_timeout_max_ms: 1_800_000,
        };
        let join = |member_id: &str| JoinRequest {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), Bytes::from_static(b"subscription"))],
            require_known_member_id: false,
            supports_skip_assignment: true,
        };
        let start = Instant::now();
        let mut group = Group::new("g", 0, 0);
        let Reply::Wait(mut joined) = group.join(join(""), &config, start, 0) else {
            panic!("the first join waits for the window");
        };
        let later = start + config.initial_rebalance_delay;
        group.tick(&config, later, 1);
        let joined = joined.try_recv().unwrap().unwrap();
        let assignment = vec![(joined.member_id.clone(), Bytes::from_static(b"all"))];
        let (_synced, completed) = group
            .sync(1, &joined.member_id, None, assignment, later)
            .unwrap();
        assert!(completed);
        assert_eq!(&*describe(&group).protocol_data, "", "CompletingRebalance");
        group.finish_sync(1, None, &config, later, 1);
        let stable = describe(&group);
        assert_eq!(&*stable.group_state, "Stable");
        assert_eq!(&*stable.protocol_data, "range");
        assert_eq!(
            stable.members[0].member_assignment,
            Bytes::from_static(b"all")
        );
        // A second member joins: the group rebalances.
        let Reply::Wait(_newcomer) = group.join(join(""), &config, later, 2) else {
            panic!("a newcomer waits for the rebalance");
        };
        let rebalancing = describe(&group);
        assert_eq!(&*rebalancing.group_state, "PreparingRebalance");
        assert_eq!(&*rebalancing.protocol_type, "consumer");
        assert_eq!(&*rebalancing.protocol_data, "");
        assert!(rebalancing.members[0].member_metadata.is_empty());
    }
}
