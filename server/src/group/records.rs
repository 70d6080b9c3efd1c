//! The records the group coordinator keeps in `__consumer_offsets`, in
//! Kafka's own layouts (so Kafka tooling that reads the topic understands
//! them): big-endian, strings with an i16 length, bytes with an i32 length,
//! -1 for null.
//!
//! | key version | key | value |
//! |---|---|---|
//! | 0, 1 | OffsetCommitKey: group, topic, partition | OffsetCommitValue v3: offset, leader epoch, metadata, commit time |
//! | 2 | GroupMetadataKey: group | GroupMetadataValue v3: protocol type, generation, protocol, leader, state time, members |
//!
//! A null value is a tombstone: the offset (or group) was deleted.
//! Compaction keeps the latest record per key, which is exactly the state.

use bytes::{BufMut, Bytes, BytesMut};

/// Offset commit key version written (Kafka writes 1; 0 reads the same).
const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A decoded key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown record version {0}")]
    UnknownVersion(i16),
    #[error("invalid UTF-8 in a string")]
    Utf8,
    #[error("negative length {0}")]
    NegativeLength(i32),
}

impl Key {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, group);
                put_string(&mut out, topic);
                out.put_i32(*partition);
            }
            Key::Group { group } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        out.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Key, RecordError> {
        let mut reader = Reader(bytes);
        match reader.i16()? {
            0 | 1 => Ok(Key::Offset {
                group: reader.string()?,
                topic: reader.string()?,
                partition: reader.i32()?,
            }),
            2 => Ok(Key::Group {
                group: reader.string()?,
            }),
            other => Err(RecordError::UnknownVersion(other)),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(OFFSET_VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_string(&mut out, &self.metadata);
        out.put_i64(self.commit_timestamp);
        out.freeze()
    }

    /// Versions 0..=3 (1 adds an expire timestamp, 3 the leader epoch and
    /// drops the expire timestamp).
    pub fn decode(bytes: &[u8]) -> Result<OffsetValue, RecordError> {
        let mut reader = Reader(bytes);
        let version = reader.i16()?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnknownVersion(version));
        }
        let offset = reader.i64()?;
        let leader_epoch = if version >= 3 { reader.i32()? } else { -1 };
        let metadata = reader.string()?;
        let commit_timestamp = reader.i64()?;
        if version == 1 {
            reader.i64()?; // expire timestamp, no longer used
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_nullable_string(&mut out, self.protocol.as_deref());
        put_nullable_string(&mut out, self.leader.as_deref());
        out.put_i64(self.state_timestamp);
        out.put_i32(i32::try_from(self.members.len()).unwrap_or(i32::MAX));
        for member in &self.members {
            put_string(&mut out, &member.member_id);
            put_nullable_string(&mut out, member.instance_id.as_deref());
            put_string(&mut out, &member.client_id);
            put_string(&mut out, &member.client_host);
            out.put_i32(member.rebalance_timeout_ms);
            out.put_i32(member.session_timeout_ms);
            put_bytes(&mut out, &member.subscription);
            put_bytes(&mut out, &member.assignment);
        }
        out.freeze()
    }

    /// Versions 0..=3 (1 adds the rebalance timeout, 2 the state time, 3
    /// the group instance id).
    pub fn decode(bytes: &[u8]) -> Result<GroupValue, RecordError> {
        let mut reader = Reader(bytes);
        let version = reader.i16()?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnknownVersion(version));
        }
        let protocol_type = reader.string()?;
        let generation = reader.i32()?;
        let protocol = reader.nullable_string()?;
        let leader = reader.nullable_string()?;
        let state_timestamp = if version >= 2 { reader.i64()? } else { -1 };
        let count = reader.i32()?;
        let count = usize::try_from(count).map_err(|_| RecordError::NegativeLength(count))?;
        let mut members = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let member_id = reader.string()?;
            let instance_id = if version >= 3 {
                reader.nullable_string()?
            } else {
                None
            };
            let client_id = reader.string()?;
            let client_host = reader.string()?;
            let rebalance_timeout_ms = if version >= 1 { reader.i32()? } else { -1 };
            let session_timeout_ms = reader.i32()?;
            members.push(MemberValue {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: reader.bytes()?,
                assignment: reader.bytes()?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

fn put_string(out: &mut BytesMut, value: &str) {
    let length = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.put_i16(length);
    out.put_slice(&value.as_bytes()[..length as usize]);
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
    out.put_slice(value);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < count {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let raw = self.take(length as usize)?;
        std::str::from_utf8(raw)
            .map(|text| Some(text.to_string()))
            .map_err(|_| RecordError::Utf8)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(length as usize)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [
            Key::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
            },
            Key::Group { group: "g".into() },
        ] {
            assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        }
    }

    #[test]
    fn offset_commit_key_matches_kafka_bytes() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        };
        assert_eq!(
            key.encode().as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]
        );
    }

    #[test]
    fn values_round_trip() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&offset.encode()).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&group.encode()).unwrap(), group);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Key::decode(&[]), Err(RecordError::Truncated));
        assert_eq!(Key::decode(&[0, 9]), Err(RecordError::UnknownVersion(9)));
        assert_eq!(
            OffsetValue::decode(&[0, 3, 0, 0]),
            Err(RecordError::Truncated)
        );
        assert_eq!(
            GroupValue::decode(&[0, 3, 0, 0, 0, 0, 0, 1, 255, 255, 255, 255]),
            Err(RecordError::Truncated)
        );
        let mut negative = BytesMut::new();
        negative.put_i16(3);
        put_string(&mut negative, "consumer");
        negative.put_i32(1);
        negative.put_i16(-1);
        negative.put_i16(-1);
        negative.put_i64(0);
        negative.put_i32(-5);
        assert_eq!(
            GroupValue::decode(&negative),
            Err(RecordError::NegativeLength(-5))
        );
    }
}
