//! The replication messages of the peer protocol (frame kinds 16..=19 in
//! `peer::kind`) and their encodings. Sans-I/O: bytes in, values out; a
//! malformed payload is a `DecodeError`, never a panic.
//!
//! Every leader-to-follower message starts with the same fields
//! ([`LeaderHeader`]); the follower answers each with a [`StateReply`]
//! tagged with the request's id. All integers little-endian
//! (`controller::codec`).
//!
//! | kind | payload after the leader header |
//! |---|---|
//! | `REPLICA_PUSH` | `start_offset i64`, then stored record batches, byte-identical (to the end of the payload; none: a heartbeat) |
//! | `REPLICA_PROBE` | nothing |
//! | `REPLICA_TRUNCATE` | `epoch i32` (-1: the leader has no epoch at or below the follower's), `end_offset i64` |
//!
//! Leader header: `request_id u64, topic_id uuid, partition i32, leader_id
//! i32, leader_epoch i32, high_watermark i64, log_start i64` (52 bytes).
//!
//! `REPLICA_STATE`: `request_id u64, topic_id uuid, partition i32, status
//! u8, follower_epoch i32, log_start i64, log_end i64, durable_end i64,
//! last_epoch i32` (-1: the follower's log holds no batch).

use bytes::Bytes;
use sluice_engine::{LeaderEpoch, Offset};
use uuid::Uuid;

use crate::controller::codec::{DecodeError, Reader, Writer};
use crate::peer::kind;

/// Size of [`LeaderHeader`] on the wire.
pub const LEADER_HEADER_SIZE: usize = 8 + 16 + 4 + 4 + 4 + 8 + 8;

/// The fields every leader-to-follower message starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderHeader {
    /// Unique per connection; the answer carries it back.
    pub request_id: u64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_id: i32,
    pub leader_epoch: LeaderEpoch,
    /// The leader's high watermark when the message left.
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// A leader-to-follower message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToFollower {
    /// Append `records` (whole batches, as the leader stored them) at
    /// `start_offset`, which must be the follower's log end. Empty: a
    /// heartbeat (the high watermark, and proof the leader lives).
    Push {
        header: LeaderHeader,
        start_offset: Offset,
        /// Whole batches, in order, in as many buffers as the log read
        /// returned (sent without copying; one buffer once decoded).
        records: Vec<Bytes>,
    },
    /// Report the log's state: the leader decides from it where to stream
    /// from, or what to truncate.
    Probe { header: LeaderHeader },
    /// Cut the log to where it agrees with the leader: the end of `epoch`
    /// on the leader is `end_offset` (KIP-279). `epoch` is `None` when the
    /// leader holds no epoch at or below the follower's last one.
    Truncate {
        header: LeaderHeader,
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
}

impl ToFollower {
    pub fn header(&self) -> &LeaderHeader {
        match self {
            ToFollower::Push { header, .. }
            | ToFollower::Probe { header }
            | ToFollower::Truncate { header, .. } => header,
        }
    }

    /// The frame kind and payload parts (the records are not copied).
    pub fn encode(&self) -> (u16, Vec<Bytes>) {
        let mut writer = Writer::new();
        write_header(&mut writer, self.header());
        match self {
            ToFollower::Push {
                start_offset,
                records,
                ..
            } => {
                writer.i64(start_offset.value());
                let mut parts = Vec::with_capacity(records.len() + 1);
                parts.push(Bytes::from(writer.into_bytes()));
                parts.extend(records.iter().filter(|part| !part.is_empty()).cloned());
                (kind::REPLICA_PUSH, parts)
            }
            ToFollower::Probe { .. } => {
                (kind::REPLICA_PROBE, vec![Bytes::from(writer.into_bytes())])
            }
            ToFollower::Truncate {
                epoch, end_offset, ..
            } => {
                writer.i32(epoch.map_or(-1, |epoch| epoch.0));
                writer.i64(end_offset.value());
                (
                    kind::REPLICA_TRUNCATE,
                    vec![Bytes::from(writer.into_bytes())],
                )
            }
        }
    }

    /// Decode a frame of one of the three kinds. `payload` is shared by
    /// the records of a push (no copy).
    pub fn decode(frame_kind: u16, payload: Bytes) -> Result<ToFollower, DecodeError> {
        let mut reader = Reader::new(&payload);
        let header = read_header(&mut reader)?;
        match frame_kind {
            kind::REPLICA_PUSH => {
                let start_offset = Offset(reader.i64()?);
                let rest = payload.slice(reader.position()..);
                let records = if rest.is_empty() {
                    Vec::new()
                } else {
                    vec![rest]
                };
                Ok(ToFollower::Push {
                    header,
                    start_offset,
                    records,
                })
            }
            kind::REPLICA_PROBE => {
                reader.finish()?;
                Ok(ToFollower::Probe { header })
            }
            kind::REPLICA_TRUNCATE => {
                let epoch = reader.i32()?;
                let end_offset = Offset(reader.i64()?);
                reader.finish()?;
                Ok(ToFollower::Truncate {
                    header,
                    epoch: (epoch >= 0).then_some(LeaderEpoch(epoch)),
                    end_offset,
                })
            }
            other => Err(DecodeError::UnknownRecordType { record_type: other }),
        }
    }
}

/// How a follower took a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Done: appended and fsynced, truncated, or probed.
    Ok = 0,
    /// A push that does not start at the follower's log end: the leader
    /// must probe again.
    OutOfOrder = 1,
    /// The message's leader epoch is older than the follower's: a deposed
    /// leader.
    FencedLeaderEpoch = 2,
    /// The message's leader epoch is newer than the follower's metadata:
    /// retry shortly.
    UnknownLeaderEpoch = 3,
    /// This broker holds no open replica of the partition.
    NotReplica = 4,
    /// This broker's replica leads the partition.
    NotFollower = 5,
    /// The follower's storage failed (poisoned log, full disk).
    StorageError = 6,
    /// A truncation would cut below the follower's high watermark: a bug
    /// somewhere; refused, logged.
    TruncationRefused = 7,
    /// The leader's log starts past the follower's end: the follower
    /// cannot continue from its log.
    LogStartGap = 8,
}

impl ReplyStatus {
    fn from_u8(value: u8) -> Result<ReplyStatus, DecodeError> {
        Ok(match value {
            0 => ReplyStatus::Ok,
            1 => ReplyStatus::OutOfOrder,
            2 => ReplyStatus::FencedLeaderEpoch,
            3 => ReplyStatus::UnknownLeaderEpoch,
            4 => ReplyStatus::NotReplica,
            5 => ReplyStatus::NotFollower,
            6 => ReplyStatus::StorageError,
            7 => ReplyStatus::TruncationRefused,
            8 => ReplyStatus::LogStartGap,
            other => {
                return Err(DecodeError::Invalid {
                    what: "replication status",
                    value: i64::from(other),
                });
            }
        })
    }
}

/// A follower's log as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerLog {
    pub log_start: Offset,
    /// Appended (possibly not yet durable).
    pub log_end: Offset,
    /// Fsynced: what the leader may count.
    pub durable_end: Offset,
    /// The epoch of the log's last batch.
    pub last_epoch: Option<LeaderEpoch>,
}

/// The follower's answer to any leader message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateReply {
    pub request_id: u64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub status: ReplyStatus,
    /// The leader epoch the follower knows for the partition.
    pub follower_epoch: LeaderEpoch,
    pub log: FollowerLog,
}

impl StateReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u64(self.request_id);
        writer.uuid(self.topic_id);
        writer.i32(self.partition);
        writer.u8(self.status as u8);
        writer.i32(self.follower_epoch.0);
        writer.i64(self.log.log_start.value());
        writer.i64(self.log.log_end.value());
        writer.i64(self.log.durable_end.value());
        writer.i32(self.log.last_epoch.map_or(-1, |epoch| epoch.0));
        writer.into_bytes()
    }

    pub fn decode(payload: &[u8]) -> Result<StateReply, DecodeError> {
        let mut reader = Reader::new(payload);
        let request_id = reader.u64()?;
        let topic_id = reader.uuid()?;
        let partition = reader.i32()?;
        let status = ReplyStatus::from_u8(reader.u8()?)?;
        let follower_epoch = LeaderEpoch(reader.i32()?);
        let log_start = Offset(reader.i64()?);
        let log_end = Offset(reader.i64()?);
        let durable_end = Offset(reader.i64()?);
        let last_epoch = reader.i32()?;
        reader.finish()?;
        if log_start.value() < 0 || log_start > log_end {
            return Err(DecodeError::Invalid {
                what: "follower log start",
                value: log_start.value(),
            });
        }
        if durable_end > log_end {
            return Err(DecodeError::Invalid {
                what: "follower durable end",
                value: durable_end.value(),
            });
        }
        Ok(StateReply {
            request_id,
            topic_id,
            partition,
            status,
            follower_epoch,
            log: FollowerLog {
                log_start,
                log_end,
                durable_end,
                last_epoch: (last_epoch >= 0).then_some(LeaderEpoch(last_epoch)),
            },
        })
    }
}

fn write_header(writer: &mut Writer, header: &LeaderHeader) {
    writer.u64(header.request_id);
    writer.uuid(header.topic_id);
    writer.i32(header.partition);
    writer.i32(header.leader_id);
    writer.i32(header.leader_epoch.0);
    writer.i64(header.high_watermark.value());
    writer.i64(header.log_start.value());
}

fn read_header(reader: &mut Reader<'_>) -> Result<LeaderHeader, DecodeError> {
    let header = LeaderHeader {
        request_id: reader.u64()?,
        topic_id: reader.uuid()?,
        partition: reader.i32()?,
        leader_id: reader.i32()?,
        leader_epoch: LeaderEpoch(reader.i32()?),
        high_watermark: Offset(reader.i64()?),
        log_start: Offset(reader.i64()?),
    };
    let checks = [
        ("partition", i64::from(header.partition)),
        ("leader epoch", i64::from(header.leader_epoch.0)),
        ("high watermark", header.high_watermark.value()),
        ("log start", header.log_start.value()),
    ];
    if let Some((what, value)) = checks.into_iter().find(|(_, value)| *value < 0) {
        return Err(DecodeError::Invalid { what, value });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn header() -> LeaderHeader {
        LeaderHeader {
            request_id: 7,
            topic_id: Uuid::from_u128(0x0102_0304),
            partition: 3,
            leader_id: 2,
            leader_epoch: LeaderEpoch(5),
            high_watermark: Offset(40),
            log_start: Offset(10),
        }
    }

    fn round_trip(message: &ToFollower) -> ToFollower {
        let (frame_kind, parts) = message.encode();
        let payload: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
        ToFollower::decode(frame_kind, Bytes::from(payload)).unwrap()
    }

    #[test]
    fn leader_messages_round_trip() {
        let messages = [
            ToFollower::Push {
                header: header(),
                start_offset: Offset(41),
                records: vec![Bytes::from_static(b"batches")],
            },
            ToFollower::Push {
                header: header(),
                start_offset: Offset(41),
                records: Vec::new(),
            },
            ToFollower::Probe { header: header() },
            ToFollower::Truncate {
                header: header(),
                epoch: Some(LeaderEpoch(4)),
                end_offset: Offset(33),
            },
            ToFollower::Truncate {
                header: header(),
                epoch: None,
                end_offset: Offset(-1),
            },
        ];
        for message in &messages {
            assert_eq!(&round_trip(message), message);
        }
        let (_, parts) = ToFollower::Probe { header: header() }.encode();
        assert_eq!(parts[0].len(), LEADER_HEADER_SIZE);
    }

    #[test]
    fn replies_round_trip() {
        let reply = StateReply {
            request_id: 9,
            topic_id: Uuid::from_u128(77),
            partition: 1,
            status: ReplyStatus::OutOfOrder,
            follower_epoch: LeaderEpoch(3),
            log: FollowerLog {
                log_start: Offset(0),
                log_end: Offset(100),
                durable_end: Offset(90),
                last_epoch: Some(LeaderEpoch(2)),
            },
        };
        assert_eq!(StateReply::decode(&reply.encode()).unwrap(), reply);
        let empty = StateReply {
            log: FollowerLog {
                last_epoch: None,
                ..reply.log
            },
            ..reply
        };
        assert_eq!(StateReply::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        let reply = StateReply {
            request_id: 1,
            topic_id: Uuid::from_u128(1),
            partition: 0,
            status: ReplyStatus::Ok,
            follower_epoch: LeaderEpoch(0),
            log: FollowerLog {
                log_start: Offset(0),
                log_end: Offset(1),
                durable_end: Offset(1),
                last_epoch: None,
            },
        }
        .encode();
        for cut in 0..reply.len() {
            assert!(StateReply::decode(&reply[..cut]).is_err());
        }
        let mut bad_status = reply.clone();
        bad_status[8 + 16 + 4] = 200;
        assert!(StateReply::decode(&bad_status).is_err());
        let (_, parts) = ToFollower::Truncate {
            header: header(),
            epoch: Some(LeaderEpoch(1)),
            end_offset: Offset(3),
        }
        .encode();
        let bytes = parts[0].clone();
        for cut in 0..bytes.len() {
            assert!(ToFollower::decode(kind::REPLICA_TRUNCATE, bytes.slice(..cut)).is_err());
        }
        assert!(ToFollower::decode(99, bytes).is_err());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            let size = (state % 80) as usize;
            let garbage: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = StateReply::decode(&garbage);
            for frame_kind in 16..=19 {
                let _ = ToFollower::decode(frame_kind, Bytes::from(garbage.clone()));
            }
        }
    }
}
