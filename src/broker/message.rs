//! An application message as the broker stores and forwards it: received once, shared by
//! reference among every queue, in-flight window and the retained store that holds it.

use crate::protocol::{Properties, QoS};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// QoS it was published with; each delivery uses the lower of this and the subscription's.
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties to forward, when there are any.
    pub properties: Option<Box<Properties>>,
    /// MQTT 5 message expiry: never delivered after this instant.
    pub expires: Option<Instant>,
}

impl Message {
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Bytes this message costs in memory, roughly, for queue limits and statistics.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
