//! ListGroups (v0..=5): the groups this broker coordinates (those of the
//! `__consumer_offsets` partitions it leads, as Kafka: a client asks every
//! broker and merges), from every shard, filtered by state (v4+) and type
//! (v5+, all groups here are "classic").

use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::join_all;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group;
use crate::handlers::Reply;
use crate::shard::{Shard, ShardId};

/// The group type of the classic protocol (KIP-848 names it so).
const CLASSIC: &str = "classic";

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: ListGroupsRequest,
) -> anyhow::Result<Reply> {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|state| state.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|kind| kind.to_lowercase())
        .collect();
    let coordinated = Arc::new(group::coordinated_partitions(&shard.metadata.snapshot()));
    let per_shard = join_all((0..shard.shards.count()).map(|index| {
        let coordinated = Arc::clone(&coordinated);
        shard.shards.call(ShardId(index), move |owner| async move {
            owner
                .groups
                .groups
                .borrow()
                .values()
                .filter(|group| coordinated.contains(&group.partition))
                .map(|group| {
                    (
                        group.id.clone(),
                        group.protocol_type.clone().unwrap_or_default(),
                        group.state.name(),
                    )
                })
                .collect::<Vec<_>>()
        })
    }))
    .await;
    let mut response = ListGroupsResponse::default();
    for listed in per_shard {
        let listed = listed?;
        for (id, protocol_type, state) in listed {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|kind| kind == CLASSIC) {
                continue;
            }
            let mut group = ListedGroup::default();
            group.group_id = GroupId(StrBytes::from_string(id));
            group.protocol_type = StrBytes::from_string(protocol_type);
            group.group_state = StrBytes::from_static_str(state);
            group.group_type = StrBytes::from_static_str(CLASSIC);
            response.groups.push(group);
        }
    }
    response
        .groups
        .sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    Ok(Reply::Body(Box::new(ResponseKind::ListGroups(response))))
}
