//! Broker sessions: when each broker last heartbeated the active
//! controller. Soft state, never logged (as KRaft): a new active controller
//! starts every registered broker's session afresh, so fencing after a
//! failover waits one more session timeout. Time is the caller's `now_ms`.

use std::collections::BTreeMap;

use super::image::MetadataImage;
use super::types::{BrokerEpoch, BrokerId};

/// Kafka's broker.session.timeout.ms default.
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 9000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    broker_epoch: BrokerEpoch,
    last_contact_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct BrokerSessions {
    sessions: BTreeMap<BrokerId, Session>,
}

impl BrokerSessions {
    pub fn new() -> BrokerSessions {
        BrokerSessions::default()
    }

    /// Every registered broker's session starts now (on becoming active).
    pub fn reset(&mut self, image: &MetadataImage, now_ms: u64) {
        self.sessions = image
            .brokers()
            .values()
            .map(|broker| {
                let session = Session {
                    broker_epoch: broker.broker_epoch,
                    last_contact_ms: now_ms,
                };
                (broker.broker_id, session)
            })
            .collect();
    }

    /// A heartbeat (or registration) from `broker_id` at `broker_epoch`.
    pub fn touch(&mut self, broker_id: BrokerId, broker_epoch: BrokerEpoch, now_ms: u64) {
        let session = Session {
            broker_epoch,
            last_contact_ms: now_ms,
        };
        self.sessions.insert(broker_id, session);
    }

    /// Unfenced brokers of the image whose session ran out: no heartbeat
    /// for their current epoch within `timeout_ms`. A broker the sessions
    /// do not know yet (registered through another controller) gets its
    /// session started now instead.
    pub fn expired(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Vec<BrokerId> {
        let mut expired = Vec::new();
        for broker in image.brokers().values().filter(|broker| !broker.fenced) {
            let session = self.sessions.entry(broker.broker_id).or_insert(Session {
                broker_epoch: broker.broker_epoch,
                last_contact_ms: now_ms,
            });
            if session.broker_epoch != broker.broker_epoch {
                *session = Session {
                    broker_epoch: broker.broker_epoch,
                    last_contact_ms: now_ms,
                };
            }
            if now_ms.saturating_sub(session.last_contact_ms) > timeout_ms {
                expired.push(broker.broker_id);
            }
        }
        self.sessions
            .retain(|broker_id, _| image.broker(*broker_id).is_some());
        expired
    }
}
