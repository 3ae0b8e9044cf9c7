//! PUBLISH and its acknowledgements from clients (and from a bridge's remote side), and the
//! messages the broker publishes itself (`$SYS`, wills): checks, retained store, routing, and
//! the QoS 1/2 flows of the outbound in-flight window.
//!
//! Part of [`Broker`]; no I/O, time passed in. A wrong acknowledgement or a rule broken by
//! the client closes only that connection.

use super::core::{Broker, Close, Conn};
use super::message::Message;
use super::session::OutState;
use crate::auth::acl::Access;
use crate::protocol::{kind, reason, topic, Ack, Packet, PublishView, QoS, Will};
use log::{debug, info};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Broker {
    /// A PUBLISH from connection `id`, borrowed from the read buffer (the hot path) or from a
    /// decoded [`crate::protocol::Publish`]: the message is built once, here, if accepted.
    /// `last` is the last accepted topic name ([`Broker::last_name`], lent by the caller).
    pub(super) fn handle_publish(
        &mut self,
        id: usize,
        p: PublishView<'_>,
        last: Option<&Arc<str>>,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        let sid = conn.session();
        let version = conn.version;
        self.stats.publish_received += 1;
        debug!(
            "Received PUBLISH from {} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            conn.client_id,
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.pid,
            p.topic,
            p.payload.len()
        );
        let bridge = conn.bridge();
        let from_bridge = bridge.is_some();
        if let Some(idx) = bridge {
            self.bridge_traffic(idx, now);
        }
        let props = p.properties.filter(|x| !x.is_empty());
        if !from_bridge && props.is_some_and(|x| !x.subscription_identifiers.is_empty()) {
            // [MQTT-3.3.4-6] only a server puts Subscription Identifiers in a PUBLISH.
            return self.protocol_violation(id, "subscription identifier in PUBLISH");
        }
        // A topic name that is the last accepted one passed every check already.
        let known = last.filter(|t| ***t == *p.topic).cloned();
        if known.is_none() && topic::too_deep(p.topic) {
            info!(
                "Client {} published to a topic deeper than {} levels.",
                self.display_of(id),
                topic::MAX_LEVELS
            );
            if version.is_v5() {
                self.send_disconnect(id, reason::TOPIC_NAME_INVALID);
            }
            return self.mark_closing(id, Close::ProtocolError);
        }
        // The topic when it is not the one on the wire (an alias's, a bridge's remapping).
        let mut named: Option<Arc<str>> = None;
        if let Some(alias) = props.and_then(|x| x.topic_alias) {
            // [MQTT-3.3.2-9] [MQTT-3.3.2-10] aliases within what the CONNACK granted.
            let max = self.limits.max_topic_alias;
            if alias == 0 || alias > max {
                info!(
                    "Client {} sent an invalid topic alias {alias}.",
                    self.display_of(id)
                );
                self.send_disconnect(id, reason::TOPIC_ALIAS_INVALID);
                return self.mark_closing(id, Close::ProtocolError);
            }
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            let slot = usize::from(alias - 1);
            let aliases = &mut conn.extra_mut().alias_in;
            if aliases.len() <= slot {
                aliases.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match aliases.get(slot).cloned().flatten() {
                    Some(t) => named = Some(t),
                    None => {
                        return self.protocol_violation(id, "topic alias not set up");
                    }
                }
            } else if let Some(e) = aliases.get_mut(slot) {
                let t: Arc<str> = Arc::from(p.topic);
                *e = Some(t.clone());
                named = Some(t);
            }
        }
        let topic: &str = named.as_deref().unwrap_or(p.topic);
        if version.is_v5()
            && p.qos == QoS::ExactlyOnce
            && sid.and_then(|s| self.table.get(s)).is_some_and(|s| {
                s.flow().inbound_qos2.len() >= self.limits.max_inflight
                    && !s.flow().inbound_qos2.contains(p.pid)
            })
        {
            // More unacknowledged QoS 2 than our Receive Maximum. [MQTT-3.3.4-9]
            info!(
                "Client {} exceeded the receive maximum.",
                self.display_of(id)
            );
            self.send_disconnect(id, reason::RECEIVE_MAXIMUM_EXCEEDED);
            return self.mark_closing(id, Close::ProtocolError);
        }
        let too_big =
            self.limits.message_size_limit != 0 && p.payload.len() > self.limits.message_size_limit;
        let retain_refused = p.retain && !self.limits.retain_available;
        let over_memory = !too_big && super::memory::over_limit(self.limits.memory_limit);
        // The retained store's caps: a 5.0 QoS 1/2 sender is told (0x97) and the message is
        // refused; a QoS 0 or 3.1.1 sender cannot be told, so its message is delivered and
        // not retained. Either way it is logged, once until the store has room again.
        let retain_full = p.retain
            && !p.payload.is_empty()
            && !self.retained.admits(
                topic,
                topic.len() + p.payload.len(),
                u64::from(self.limits.budget.max_retained_messages),
                self.limits.budget.max_retained_bytes,
            );
        let refuse_full = retain_full && version.is_v5() && p.qos != QoS::AtMostOnce;
        if retain_full {
            self.stats.publish_dropped += u64::from(refuse_full);
            if !self.retained_full {
                self.retained_full = true;
                info!(
                    "Retained message from {} on '{}' not stored: max_retained_messages ({}) or \
                     max_retained_bytes ({}) reached.",
                    self.display_of(id),
                    topic,
                    self.limits.budget.max_retained_messages,
                    self.limits.budget.max_retained_bytes
                );
            }
        } else if p.retain {
            self.retained_full = false;
        }
        if retain_refused && version.is_v5() {
            self.send_disconnect(id, reason::RETAIN_NOT_SUPPORTED);
            return self.mark_closing(id, Close::ProtocolError);
        }
        let remap = self.conns.get(id).and_then(|c| c.remap().cloned());
        let mut denied = false;
        if let Some(r) = remap {
            // From a bridge's remote side: rewrite into the local tree; the ACL is for clients.
            match r.incoming(topic) {
                Some(t) => named = Some(Arc::from(t.as_str())),
                None => {
                    denied = true;
                    let cid = self.conns.get(id).map_or("", |c| &*c.client_id);
                    debug!("Denied PUBLISH from {cid} to '{topic}' by the ACL.");
                }
            }
        } else if let Some(c) = self.conns.get(id) {
            let (cid, user) = (&c.client_id, c.username.as_deref());
            denied = !self
                .auth
                .allowed(c.login.scope(), cid, user, topic, Access::Write);
            if denied {
                debug!("Denied PUBLISH from {cid} to '{topic}' by the ACL.");
            }
        }
        let topic: &str = named.as_deref().unwrap_or(p.topic);
        // Clients may not write to the broker's own $SYS tree.
        let accepted = !too_big
            && !over_memory
            && !refuse_full
            && !sys_write_forbidden(topic)
            && !retain_refused
            && !denied;
        if over_memory {
            info!(
                "Refused PUBLISH from {}: memory_limit ({} bytes) reached.",
                self.conns.get(id).map(|c| c.display_id()).unwrap_or(""),
                self.limits.memory_limit
            );
            self.stats.publish_dropped += 1;
        }
        if too_big {
            info!(
                "Dropped too large PUBLISH from {} ({} bytes).",
                self.conns.get(id).map(|c| c.display_id()).unwrap_or(""),
                p.payload.len()
            );
            self.stats.publish_dropped += 1;
        }
        let mut ack_reason = if too_big {
            reason::PACKET_TOO_LARGE
        } else if over_memory || refuse_full {
            reason::QUOTA_EXCEEDED
        } else if denied {
            // 3.1.1 has no way to say no: the message is acknowledged and dropped.
            reason::NOT_AUTHORIZED
        } else {
            reason::SUCCESS
        };

        let duplicate_qos2 = p.qos == QoS::ExactlyOnce
            && sid
                .and_then(|s| self.table.get(s))
                .is_some_and(|s| s.flow().inbound_qos2.contains(p.pid));
        if accepted && !duplicate_qos2 {
            let expires = props
                .and_then(|x| x.message_expiry_interval)
                .map(|s| now + Duration::from_secs(u64::from(s)));
            let props = props.map(|x| {
                let mut props = x.clone();
                props.topic_alias = None;
                props.subscription_identifiers.clear();
                Box::new(props)
            });
            // Only a name that came in checked is taken as checked.
            let new_name = known.is_none() && named.is_none() && !from_bridge;
            let topic = match named.or(known) {
                Some(t) => t,
                None => self.table.topic_name(p.topic),
            };
            if new_name {
                self.last_name = Some(topic.clone());
            }
            let msg = self
                .pool
                .make(topic, p.payload, p.qos, p.retain, props, expires);
            if p.retain && !retain_full {
                self.set_retained(msg.clone());
            }
            if !self.route(&msg, sid, now) {
                ack_reason = reason::NO_MATCHING_SUBSCRIBERS;
            }
            // Delivered already to every subscriber that had room (QoS 0 above all).
            self.pool.give(msg);
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce if !version.is_v5() => self.send_short_ack(id, kind::PUBACK, p.pid),
            QoS::AtLeastOnce => {
                let mut ack = Ack::new(p.pid);
                ack.reason = ack_reason;
                self.send(id, &Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                if let Some(s) = sid.and_then(|s| self.table.get_mut(s)) {
                    // A PUBREC with a failure code ends the flow [MQTT-4.3.3-4]: the sender
                    // may reuse the id at once, so it is not kept.
                    let refused = version.is_v5() && ack_reason >= 0x80;
                    if !too_big && !refused && s.flow_mut().inbound_qos2.insert(p.pid) {
                        if let Some(sid) = sid {
                            self.touch(sid);
                        }
                    }
                }
                let mut ack = Ack::new(p.pid);
                // 0x10 "no matching subscribers" is optional: Mosquitto, which routes a QoS 2
                // message on PUBREL, never sends it in PUBREC, and neither do we.
                if version.is_v5() && ack_reason != reason::NO_MATCHING_SUBSCRIBERS {
                    ack.reason = ack_reason;
                }
                self.send(id, &Packet::PubRec(ack));
            }
        }
    }

    pub(super) fn handle_pubrel(&mut self, id: usize, pid: u16) {
        let sid = self.conns.get(id).and_then(Conn::session);
        let known = sid
            .and_then(|s| self.table.get_mut(s))
            .is_some_and(|s| s.release_qos2(pid));
        if let (true, Some(sid)) = (known, sid) {
            self.touch(sid);
        }
        let mut ack = Ack::new(pid);
        if !known && self.conns.get(id).is_some_and(|c| c.version.is_v5()) {
            ack.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.send(id, &Packet::PubComp(ack));
    }

    pub(super) fn handle_puback(&mut self, id: usize, pid: u16, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        match s.find_inflight(pid, OutState::AwaitAck) {
            Some(i) => {
                // In order, as clients acknowledge: the front, without shifting the rest.
                let inflight = &mut s.flow_mut().inflight;
                let done = if i == 0 {
                    inflight.pop_front()
                } else {
                    inflight.remove(i)
                };
                if let Some(f) = done {
                    self.pool.give(f.d.msg);
                }
                self.touch(sid);
                self.fill_window(sid, now);
            }
            None if s.flow().inflight.iter().any(|f| f.pid == pid) => {
                // A PUBACK for a QoS 2 message: Mosquitto closes on it, and so do we.
                self.protocol_violation(id, "PUBACK for a QoS 2 message")
            }
            None => debug!(
                "Received PUBACK from {} for unknown mid {pid}.",
                s.client_id
            ),
        }
    }

    pub(super) fn handle_pubrec(&mut self, id: usize, a: Ack, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        let Some(i) = s.find_inflight(a.pid, OutState::AwaitRec) else {
            // Already past PUBREC (a re-sent PUBREC): answer PUBREL again. [MQTT-4.3.3]
            if s.find_inflight(a.pid, OutState::AwaitComp).is_some() {
                self.send(id, &Packet::PubRel(Ack::new(a.pid)));
            } else if s.find_inflight(a.pid, OutState::AwaitAck).is_some() {
                self.protocol_violation(id, "PUBREC for a QoS 1 message");
            }
            return;
        };
        if a.reason >= 0x80 {
            // 5.0: the receiver refused the message; the flow ends here. [MQTT-4.3.3-4]
            s.flow_mut().inflight.remove(i);
            self.touch(sid);
            self.fill_window(sid, now);
            return;
        }
        if let Some(f) = s.flow_mut().inflight.get_mut(i) {
            f.state = OutState::AwaitComp;
        }
        self.touch(sid);
        self.send(id, &Packet::PubRel(Ack::new(a.pid)));
    }

    pub(super) fn handle_pubcomp(&mut self, id: usize, pid: u16, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        if let Some(i) = s.find_inflight(pid, OutState::AwaitComp) {
            if let Some(f) = s.flow_mut().inflight.remove(i) {
                self.pool.give(f.d.msg);
            }
            self.touch(sid);
            self.fill_window(sid, now);
        } else if s.flow().inflight.iter().any(|f| f.pid == pid) {
            // PUBCOMP before PUBREC, or for a QoS 1 message.
            self.protocol_violation(id, "PUBCOMP out of order");
        }
    }

    /// Publishes a message of the broker's own (`$SYS`, log lines) to subscribers.
    pub fn publish_internal(
        &mut self,
        topic: &str,
        payload: Box<[u8]>,
        retain: bool,
        now: Instant,
    ) {
        let msg = Rc::new(Message {
            topic: Arc::from(topic),
            payload,
            qos: QoS::AtMostOnce,
            retain,
            properties: None,
            expires: None,
        });
        if retain {
            self.retained.set(msg.clone());
        }
        self.route(&msg, None, now);
    }

    pub(super) fn publish_will(&mut self, will: Will, now: Instant) {
        let expires = will
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let mut props = will.properties;
        props.will_delay_interval = None;
        let msg = Rc::new(Message {
            topic: will.topic,
            payload: will.payload[..].into(),
            qos: will.qos,
            retain: will.retain,
            properties: if props.is_empty() {
                None
            } else {
                Some(Box::new(props))
            },
            expires,
        });
        if msg.retain && self.limits.retain_available {
            self.set_retained(msg.clone());
        }
        self.route(&msg, None, now);
    }
}

/// Clients may not write into the broker's `$SYS` tree, except for the bridge state topics
/// other brokers' bridges publish there (as Mosquitto allows).
pub(super) fn sys_write_forbidden(topic: &str) -> bool {
    // The first byte first: this runs for every message.
    topic.as_bytes().first() == Some(&b'$')
        && topic.starts_with("$SYS")
        && !topic::matches("$SYS/broker/connection/+/state", topic)
}
