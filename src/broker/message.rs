//! An application message as the broker stores and forwards it: received once, shared by
//! reference among every queue, in-flight window and the retained store that holds it.

use crate::protocol::{Properties, QoS};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Box<[u8]>,
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

/// Spent messages kept for the next ones while the loop is busy: at most this many, each
/// with a payload of at most [`POOL_PAYLOAD_MAX`] bytes, and at most [`POOL_BYTES`] of
/// payload in all. A pass that acknowledges a few thousand messages (a few hundred
/// subscribers' windows) before it reads the next ones needs that many. An idle loop
/// trims the pool to [`POOL_IDLE`] ([`Pool::trim`]).
const POOL_MAX: usize = 4096;
const POOL_PAYLOAD_MAX: usize = 1024;
const POOL_BYTES: usize = 256 * 1024;
const POOL_IDLE: usize = 64;

/// Messages nobody refers to any more, kept so that the next message received reuses the
/// allocation of one (and its payload buffer, when it has the same length) instead of
/// allocating two and freeing two per message: on the hot path the allocator's own caches
/// are too small for a window of messages freed in the order they were made. Bounded
/// ([`POOL_MAX`]); a message still shared, or with a large payload, is simply dropped.
#[derive(Default)]
pub struct Pool {
    free: Vec<Rc<Message>>,
    /// Payload bytes the kept messages hold.
    bytes: usize,
}

impl Pool {
    /// A new message with a copy of `payload`.
    pub fn make(
        &mut self,
        topic: Arc<str>,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Option<Box<Properties>>,
        expires: Option<Instant>,
    ) -> Rc<Message> {
        if let Some(mut rc) = self.free.pop() {
            if let Some(m) = Rc::get_mut(&mut rc) {
                self.bytes = self.bytes.saturating_sub(m.payload.len());
                m.payload = reuse(std::mem::take(&mut m.payload), payload);
                m.topic = topic;
                m.qos = qos;
                m.retain = retain;
                m.properties = properties;
                m.expires = expires;
                return rc;
            }
        }
        Rc::new(Message {
            topic,
            payload: Box::from(payload),
            qos,
            retain,
            properties,
            expires,
        })
    }

    /// Whether the pool holds more than it keeps when idle.
    pub fn over_idle(&self) -> bool {
        self.free.len() > POOL_IDLE
    }

    /// The loop is idle: the pool goes back to [`POOL_IDLE`] messages.
    pub fn trim(&mut self) {
        while self.free.len() > POOL_IDLE {
            if let Some(m) = self.free.pop() {
                self.bytes = self.bytes.saturating_sub(m.payload.len());
            }
        }
        self.free.shrink_to(POOL_IDLE);
    }

    /// A message the caller is done with: kept if nothing else refers to it.
    #[inline]
    pub fn give(&mut self, mut msg: Rc<Message>) {
        if self.free.len() >= POOL_MAX {
            return;
        }
        if let Some(m) = Rc::get_mut(&mut msg) {
            let n = m.payload.len();
            if n <= POOL_PAYLOAD_MAX && self.bytes + n <= POOL_BYTES {
                m.properties = None;
                self.bytes += n;
                self.free.push(msg);
            }
        }
    }
}

/// `payload` in `old`'s buffer when that is exactly as long, else in a new one.
fn reuse(mut old: Box<[u8]>, payload: &[u8]) -> Box<[u8]> {
    if old.len() == payload.len() {
        old.copy_from_slice(payload);
        return old;
    }
    Box::from(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_message_is_reused_with_its_payload_buffer() {
        let mut pool = Pool::default();
        let a = pool.make("a".into(), b"12345", QoS::AtLeastOnce, false, None, None);
        let buf = a.payload.as_ptr();
        pool.give(a);
        let b = pool.make("b".into(), b"abcde", QoS::AtMostOnce, true, None, None);
        assert_eq!(b.payload.as_ptr(), buf);
        assert_eq!(&b.payload[..], b"abcde");
        assert_eq!(&*b.topic, "b");
        assert!(b.retain);
        assert_eq!(b.qos, QoS::AtMostOnce);
        // A different length gets a buffer of its own.
        pool.give(b);
        let c = pool.make("c".into(), b"xy", QoS::AtMostOnce, false, None, None);
        assert_eq!(&c.payload[..], b"xy");
    }

    #[test]
    fn a_shared_message_is_not_taken() {
        let mut pool = Pool::default();
        let a = pool.make("a".into(), b"1", QoS::AtLeastOnce, false, None, None);
        let kept = a.clone();
        pool.give(a);
        let b = pool.make("b".into(), b"2", QoS::AtLeastOnce, false, None, None);
        assert_eq!(&kept.payload[..], b"1");
        assert_eq!(&*kept.topic, "a");
        assert_eq!(&b.payload[..], b"2");
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = Pool::default();
        for _ in 0..POOL_MAX * 2 {
            let m = Rc::new(Message {
                topic: "t".into(),
                payload: vec![0; 8].into(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
                expires: None,
            });
            pool.give(m);
        }
        assert_eq!(pool.free.len(), POOL_MAX);
        assert_eq!(pool.bytes, POOL_MAX * 8);
        let big = Rc::new(Message {
            topic: "t".into(),
            payload: vec![0; POOL_PAYLOAD_MAX + 1].into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            expires: None,
        });
        pool.free.clear();
        pool.bytes = 0;
        pool.give(big);
        assert!(pool.free.is_empty());
        // Bounded in bytes too.
        for _ in 0..POOL_MAX {
            let m = Rc::new(Message {
                topic: "t".into(),
                payload: vec![0; POOL_PAYLOAD_MAX].into(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
                expires: None,
            });
            pool.give(m);
        }
        assert!(pool.bytes <= POOL_BYTES);
        assert_eq!(pool.free.len(), POOL_BYTES / POOL_PAYLOAD_MAX);
        assert!(pool.over_idle());
        pool.trim();
        assert!(!pool.over_idle());
        assert_eq!(pool.bytes, POOL_IDLE * POOL_PAYLOAD_MAX);
    }
}
