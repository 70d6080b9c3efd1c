//! Heartbeat (v0..=4): keeps a member's session alive and tells it when the
//! group is rebalancing.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, ResponseKind};

use crate::group;
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: HeartbeatRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let generation = request.generation_id;
    let error = group::on_coordinator(shard, &group_id.clone(), move |owner, _| async move {
        match owner.groups.groups.borrow_mut().get_mut(&group_id) {
            Some(group) => group.heartbeat(
                generation,
                &member_id,
                instance_id.as_deref(),
                Instant::now(),
            ),
            None => Some(ResponseError::UnknownMemberId),
        }
    })
    .await
    .unwrap_or_else(Some);
    let mut response = HeartbeatResponse::default();
    response.error_code = error.map_or(0, |error| error.code());
    Ok(Reply::Body(Box::new(ResponseKind::Heartbeat(response))))
}
