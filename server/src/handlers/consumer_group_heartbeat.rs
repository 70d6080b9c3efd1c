//! ConsumerGroupHeartbeat (v0..=1, KIP-848): refused. Sluice serves the
//! classic group protocol only (JoinGroup/SyncGroup/Heartbeat).
//!
//! The API is advertised on purpose so that a consumer configured with
//! `group.protocol=consumer` fails at once with an error it reports:
//! librdkafka, when the broker does not list the API, declares the
//! coordinator dead and looks for another one forever
//! (`rd_kafka_ConsumerGroupHeartbeatRequest` -> `rd_kafka_cgrp_coord_dead`),
//! so the consumer silently gets nothing. Answered with UNSUPPORTED_VERSION,
//! librdkafka raises a fatal error (`rd_kafka_cgrp_handle_ConsumerGroupHeartbeat`)
//! and the Java consumer fails with "The cluster does not support the new
//! CONSUMER group protocol. Set group.protocol=classic ...". Clients using
//! the classic protocol never send this request.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ConsumerGroupHeartbeatResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;

/// What the refusal says; clients show it to the user.
pub const REFUSAL: &str = "this broker serves only the classic consumer group protocol \
     (KIP-848 is not supported): set group.protocol=classic";

pub fn handle() -> Reply {
    let response = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_error_message(Some(StrBytes::from_static_str(REFUSAL)))
        .with_member_epoch(-1);
    Reply::Body(Box::new(ResponseKind::ConsumerGroupHeartbeat(response)))
}
