//! Mosquitto's `-v` (log type debug) lines for packets, in its words, so that people who grep
//! a Mosquitto log find the same lines in rmqtt's: `Received SUBSCRIBE from id`, `Sending
//! PUBLISH to id (d0, q1, r0, m3, 'topic', ... (5 bytes))`, `No will message specified.`.
//!
//! The core calls [`received`] for each packet from a client and [`sending`] for each packet
//! it queues; both return at once unless debug logging is on, so the hot path pays one check.
//! Never panics.

use crate::protocol::{Packet, PublishView, Will};
use log::{debug, log_enabled, Level};

/// Mosquitto's internal protocol number, printed in the connect line as `p1`, `p2`, `p5`.
pub fn protocol_number(v: crate::protocol::Version) -> u8 {
    match v {
        crate::protocol::Version::V31 => 1,
        crate::protocol::Version::V311 => 2,
        crate::protocol::Version::V5 => 5,
    }
}

/// `Received ... from id`, as mosquitto's `handle__*` functions log it. CONNECT has its own
/// lines (the connect line and [`will`]), PUBLISH its line in the core; SUBSCRIBE and UNSUBSCRIBE add one line per filter
/// from the core, interleaved with the `subscribe` log type as Mosquitto does.
pub fn received(id: &str, p: &Packet) {
    if !log_enabled!(Level::Debug) {
        return;
    }
    match p {
        Packet::Connect(_) | Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) => {}
        // handle_publish logs it, with the topic an alias stands for.
        Packet::Publish(_) => {}
        Packet::PubAck(a) => debug!(
            "Received PUBACK from {id} (Mid: {}, RC:{})",
            a.pid, a.reason
        ),
        Packet::PubRec(a) => debug!("Received PUBREC from {id} (Mid: {})", a.pid),
        Packet::PubRel(a) => debug!("Received PUBREL from {id} (Mid: {})", a.pid),
        Packet::PubComp(a) => debug!(
            "Received PUBCOMP from {id} (Mid: {}, RC:{})",
            a.pid, a.reason
        ),
        Packet::Subscribe(_) => debug!("Received SUBSCRIBE from {id}"),
        Packet::Unsubscribe(_) => debug!("Received UNSUBSCRIBE from {id}"),
        Packet::PingReq => debug!("Received PINGREQ from {id}"),
        Packet::PingResp => debug!("Received PINGRESP from {id}"),
        Packet::Disconnect(_) => debug!("Received DISCONNECT from {id}"),
        Packet::Auth(_) => debug!("Received AUTH from {id}"),
    }
}

/// One filter of a SUBSCRIBE (`\tfilter (QoS n)`) or UNSUBSCRIBE (`\tfilter`).
pub fn filter(filter: &str, qos: Option<u8>) {
    match qos {
        Some(q) => debug!("\t{filter} (QoS {q})"),
        None => debug!("\t{filter}"),
    }
}

/// `Sending ... to id`, as mosquitto's `send__*` functions log it. `id` is the client id, or
/// the peer address before the connection is accepted (Mosquitto has no id yet then).
pub fn sending(id: &str, p: &Packet) {
    if !log_enabled!(Level::Debug) {
        return;
    }
    match p {
        Packet::ConnAck(a) => debug!(
            "Sending CONNACK to {id} ({}, {})",
            u8::from(a.session_present),
            a.code
        ),
        Packet::Publish(p) => debug!(
            "Sending PUBLISH to {id} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.pid,
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(a) => debug!("Sending PUBACK to {id} (m{}, rc{})", a.pid, a.reason),
        Packet::PubRec(a) => debug!("Sending PUBREC to {id} (m{}, rc{})", a.pid, a.reason),
        Packet::PubRel(a) => debug!("Sending PUBREL to {id} (m{})", a.pid),
        Packet::PubComp(a) => debug!("Sending PUBCOMP to {id} (m{})", a.pid),
        Packet::SubAck(_) => debug!("Sending SUBACK to {id}"),
        Packet::UnsubAck(_) => debug!("Sending UNSUBACK to {id}"),
        Packet::PingResp => debug!("Sending PINGRESP to {id}"),
        Packet::PingReq => debug!("Sending PINGREQ to {id}"),
        Packet::Disconnect(d) => debug!("Sending DISCONNECT to {id} (rc{})", d.reason),
        Packet::Connect(_) => debug!("Sending CONNECT to {id}"),
        Packet::Subscribe(_) => debug!("Sending SUBSCRIBE to {id}"),
        Packet::Unsubscribe(_) => debug!("Sending UNSUBSCRIBE to {id}"),
        Packet::Auth(_) => debug!("Sending AUTH to {id}"),
    }
}

/// A delivery to a subscriber, encoded straight from the shared message.
pub fn sending_publish(id: &str, p: &PublishView<'_>, topic: &str) {
    if log_enabled!(Level::Debug) {
        debug!(
            "Sending PUBLISH to {id} (d{}, q{}, r{}, m{}, '{topic}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.pid,
            p.payload.len()
        );
    }
}

/// The will lines that follow Mosquitto's connect line.
pub fn will(w: Option<&Will>) {
    if !log_enabled!(Level::Debug) {
        return;
    }
    match w {
        Some(w) => {
            debug!(
                "Will message specified ({} bytes) (r{}, q{}).",
                w.payload.len(),
                u8::from(w.retain),
                w.qos.as_u8()
            );
            debug!("\t{}", w.topic);
        }
        None => debug!("No will message specified."),
    }
}
