//! The publish path: routing a message to matching subscriptions (shared ones round robin),
//! the per-session in-flight window and queue, per-delivery MQTT 5 properties, and the
//! backpressure that holds publishers back instead of dropping QoS 1/2 messages.
//!
//! Part of [`Broker`]; time is passed in. Nothing here allocates per message per subscriber
//! beyond a shared reference to the message, except where a 5.0 subscriber needs properties of
//! its own (subscription identifiers, remaining expiry, topic alias).

use super::core::{Broker, Conn, Effect};
use super::message::Message;
use super::session::{Expiry, Inflight, OutState, Pending, Session};
use crate::auth::acl::Access;
use crate::protocol::{Ack, Packet, Properties, PublishView, QoS};
use log::warn;
use std::rc::Rc;
use std::time::Instant;

/// Encodes one delivery onto a connection's output. Returns false (nothing written) when the
/// packet would exceed the client's Maximum Packet Size: the message is then dropped for this
/// client. [MQTT-3.1.2-25]
fn encode_delivery(c: &mut Conn, d: &Pending, pid: u16, dup: bool, now: Instant) -> bool {
    // A bridge's outgoing connection carries remote topic names.
    let remapped = c.remap().and_then(|r| r.outgoing(&d.msg.topic));
    let mut topic: &str = remapped.as_deref().unwrap_or(&d.msg.topic);
    let mut own: Option<Properties> = None;
    let mut new_alias = None;
    if c.version.is_v5()
        && (!d.sub_ids().is_empty() || d.msg.expires.is_some() || c.alias_out_max() > 0)
    {
        let mut p = d.msg.properties.as_deref().cloned().unwrap_or_default();
        p.subscription_identifiers.clear();
        p.subscription_identifiers.extend_from_slice(d.sub_ids());
        if let Some(e) = d.msg.expires {
            // [MQTT-3.3.2-6] forward the remaining lifetime, rounded up.
            let left = e.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            p.message_expiry_interval = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
        }
        let max = c.alias_out_max();
        if max > 0 {
            let aliases = &c.extra_mut().alias_out;
            match aliases.get(&d.msg.topic) {
                Some(&a) => {
                    p.topic_alias = Some(a);
                    topic = "";
                }
                None if aliases.len() < usize::from(max) => {
                    // Recorded only once the packet is known to go out (below).
                    let a = aliases.len() as u16 + 1;
                    new_alias = Some(a);
                    p.topic_alias = Some(a);
                }
                None => {}
            }
        }
        own = Some(p);
    }
    let view = PublishView {
        dup,
        qos: d.qos,
        retain: d.retain && c.remap().is_none_or(|r| r.outgoing_retain),
        topic,
        pid,
        payload: &d.msg.payload,
        properties: own.as_ref().or(d.msg.properties.as_deref()),
    };
    if c.version.is_v5() && view.encoded_len(c.version) > c.max_packet_out() {
        return false;
    }
    super::packet_log::sending_publish(
        c.display_id(),
        &view,
        remapped.as_deref().unwrap_or(&d.msg.topic),
    );
    view.encode(c.version, c.out_batch());
    if let Some(a) = new_alias {
        c.extra_mut().alias_out.insert(d.msg.topic.clone(), a);
    }
    true
}

impl Broker {
    /// A persistent session gets its connection back: re-send the in-flight window with DUP
    /// set (PUBREL for those past PUBREC) [MQTT-4.4.0-1], then fill it from the queue.
    pub(super) fn resume_session(&mut self, sid: usize, now: Instant) {
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        let Some(cid) = s.conn() else {
            return;
        };
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        for f in &s.flow().inflight {
            match f.state {
                OutState::AwaitAck | OutState::AwaitRec => {
                    if encode_delivery(c, &f.d, f.pid, true, now) {
                        self.stats.publish_sent += 1;
                    }
                }
                OutState::AwaitComp => {
                    Packet::PubRel(Ack::new(f.pid)).encode(c.version, c.out_mut());
                }
            }
            self.stats.messages_sent += 1;
        }
        self.mark_dirty(cid);
        self.fill_window(sid, now);
    }

    /// Moves queued messages into the in-flight window while it has room.
    pub(super) fn fill_window(&mut self, sid: usize, now: Instant) {
        loop {
            let Some(s) = self.table.get_mut(sid) else {
                return;
            };
            let Some(cid) = s.conn() else {
                return;
            };
            let Some(front) = s.flow().queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && !self.limits.window_open(s) {
                break;
            }
            let Some(p) = s.pop_pending() else {
                break;
            };
            if p.msg.is_expired(now) {
                continue;
            }
            self.transmit(sid, cid, p, now);
        }
        self.check_congestion(sid, now);
    }

    /// Sends one message now on a connected session: QoS 0 straight out, QoS 1/2 into the
    /// in-flight window (the caller has checked there is room).
    fn transmit(&mut self, sid: usize, cid: usize, d: Pending, now: Instant) {
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        let pid = if d.qos == QoS::AtMostOnce {
            0
        } else {
            let Some(pid) = s.alloc_pid() else {
                self.stats.publish_dropped += 1;
                return;
            };
            pid
        };
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        if !encode_delivery(c, &d, pid, false, now) {
            self.stats.publish_dropped += 1;
            return;
        }
        self.stats.messages_sent += 1;
        self.stats.publish_sent += 1;
        let bridge = c.bridge();
        if d.qos != QoS::AtMostOnce {
            let state = if d.qos == QoS::AtLeastOnce {
                OutState::AwaitAck
            } else {
                OutState::AwaitRec
            };
            s.flow_mut().push_sent(Inflight { pid, d, state });
            self.touch(sid);
        }
        if let Some(idx) = bridge {
            self.bridge_traffic(idx, now);
        }
        self.mark_dirty(cid);
    }

    /// Delivers to session `sid`: now if it can, else into its queue (bounded).
    pub(super) fn deliver(&mut self, sid: usize, mut d: Pending, now: Instant) {
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        if d.qos != QoS::AtMostOnce || self.limits.queue_qos0 {
            if let Some(j) = self
                .jlog
                .as_mut()
                .filter(|_| s.expiry != Expiry::OnDisconnect)
            {
                d.jid = j.next_jid();
            }
        }
        // A connection already gone counts as none: the message waits in the session.
        match s.conn().filter(|c| self.conns.get(*c).is_some()) {
            Some(cid) => {
                let out_len = self.conns.get(cid).map_or(0, |c| c.out().len());
                if d.qos == QoS::AtMostOnce {
                    if out_len >= self.limits.out_limit {
                        // max_output_bytes: QoS 0 is dropped, logged once per episode.
                        return self.drop_message(sid);
                    }
                    if let Some(f) = s.flow_opt_mut().filter(|f| f.dropping) {
                        f.dropping = false;
                    }
                    self.transmit(sid, cid, d, now);
                } else if s.flow().queue.is_empty() && self.limits.window_open(s) {
                    self.transmit(sid, cid, d, now);
                } else if !self.queue_full(sid) {
                    if let Some(s) = self.table.get_mut(sid) {
                        s.push_pending(d);
                    }
                    self.touch(sid);
                } else {
                    self.drop_message(sid);
                }
                self.check_congestion(sid, now);
            }
            None => {
                if d.qos == QoS::AtMostOnce && !self.limits.queue_qos0 {
                    return;
                }
                if self.queue_full(sid) {
                    self.drop_message(sid);
                    return;
                }
                if let Some(s) = self.table.get_mut(sid) {
                    s.push_pending(d);
                }
                self.touch(sid);
                if !self.bridges.is_empty() {
                    self.bridge_check_lazy(sid);
                }
            }
        }
    }

    fn queue_full(&self, sid: usize) -> bool {
        let Some(s) = self.table.get(sid) else {
            return true;
        };
        let f = s.flow();
        (self.limits.max_queued != 0 && f.queue.len() >= self.limits.max_queued)
            || (self.limits.max_queued_bytes != 0 && f.queued_bytes >= self.limits.max_queued_bytes)
    }

    fn drop_message(&mut self, sid: usize) {
        self.stats.publish_dropped += 1;
        // Once per episode, at notice, as Mosquitto logs it.
        if let Some(s) = self.table.get_mut(sid) {
            if !s.flow().dropping {
                s.flow_mut().dropping = true;
                log::info!(
                    "Outgoing messages are being dropped for client {}.",
                    s.client_id
                );
            }
        }
    }

    /// Backpressure: while a connected subscriber's queue or output is above its high-water
    /// mark, the connection feeding it stops being read (TCP flow control does the rest), so
    /// acknowledged QoS 1/2 messages are not dropped. Lifted when it drains, or after
    /// `stall_timeout` for a subscriber that stopped reading.
    pub(super) fn check_congestion(&mut self, sid: usize, now: Instant) {
        let Some(s) = self.table.get(sid) else {
            return;
        };
        let out = s
            .conn()
            .and_then(|c| self.conns.get(c))
            .map_or(0, |c| c.out().len());
        let hw = self.limits.queue_high_water();
        let queued = s.flow().queue.len();
        let over = s.conn().is_some() && (queued >= hw || out >= self.limits.out_high_water);
        if !over && self.congested.is_empty() && !s.stalled() {
            // The common case on every delivery: no pressure, nothing to lift.
            return;
        }
        let under = queued <= hw / 2 && out < self.limits.out_high_water / 2;
        if s.stalled() {
            // A subscriber that stopped reading does not get to hold publishers back again
            // until it has caught up.
            if under || s.conn().is_none() {
                if let Some(s) = self.table.get_mut(sid) {
                    s.set_stalled(false);
                }
            }
            return;
        }
        let pos = self.congested.iter().position(|(c, _)| *c == sid);
        match pos {
            None if over => {
                self.congested.push((sid, now));
                let epoch = s.epoch;
                self.push_timer(
                    now + self.limits.stall_timeout,
                    super::core::Timer::Stall {
                        session: super::core::id32(sid),
                        epoch,
                    },
                );
                self.pause_current(sid);
            }
            Some(_) if over => self.pause_current(sid),
            Some(p) if under || s.conn().is_none() => {
                self.congested.swap_remove(p);
                self.resume_if_clear();
            }
            _ => {}
        }
    }

    /// Pauses the connection whose input is being handled, unless it is the congested
    /// subscriber itself (its acknowledgements must keep flowing).
    fn pause_current(&mut self, congested_sid: usize) {
        let Some(cur) = self.current else {
            return;
        };
        let Some(c) = self.conns.get_mut(cur) else {
            return;
        };
        if c.session() == Some(congested_sid) || c.paused {
            return;
        }
        c.paused = true;
        self.paused.push(cur);
    }

    pub(super) fn resume_if_clear(&mut self) {
        if !self.congested.is_empty() {
            return;
        }
        let now = self.last_now;
        let origin = self.origin;
        for id in std::mem::take(&mut self.paused) {
            if let Some(c) = self.conns.get_mut(id) {
                c.paused = false;
                // The pause was the broker's doing: the keep alive counts from its end.
                if let (Some(now), Some(origin)) = (now, origin) {
                    c.saw_packet(origin, now);
                }
                self.push_effect(Effect::Resume(super::core::id32(id)));
                self.arm_sweep(id);
            }
        }
    }

    /// Gives up on a subscriber that has held its publishers back for `stall_timeout`.
    pub(super) fn stall_expired(&mut self, sid: usize, now: Instant) {
        let Some(pos) = self.congested.iter().position(|(s, _)| *s == sid) else {
            return;
        };
        let since = self.congested.get(pos).map_or(now, |(_, t)| *t);
        if now.duration_since(since) < self.limits.stall_timeout {
            return;
        }
        if let Some(s) = self.table.get(sid) {
            warn!(
                "Client {} is not reading its messages; no longer holding back publishers.",
                s.client_id
            );
        }
        self.congested.remove(pos);
        if let Some(s) = self.table.get_mut(sid) {
            s.set_stalled(true);
        }
        self.resume_if_clear();
    }

    /// Routes a message to every matching subscription: once per session at the highest
    /// granted QoS of its matching filters [MQTT-3.3.5-1], and to one member of each matching
    /// shared subscription group. Returns whether any subscription matched, whether or not
    /// it took the message (no-local, ACL): what PUBACK's 0x10 "no matching subscribers"
    /// means to Mosquitto.
    pub(super) fn route(&mut self, msg: &Rc<Message>, origin: Option<usize>, now: Instant) -> bool {
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        self.table.matches(&msg.topic, &mut matched);
        let any = !matched.is_empty();
        if matched.len() > 1 {
            crate::sort::sort_by_key(&mut matched, |s| s.session);
        }
        // [MQTT-3.8.3-3] a no-local subscription does not match its own session's messages:
        // it takes no part in the QoS, retain-as-published or identifiers of the delivery.
        if let Some(o) = origin {
            matched.retain(|m| m.session != o || !m.opts.no_local);
        }
        let mut i = 0;
        while let Some(first) = matched.get(i).copied() {
            let mut best = first;
            let mut rap = first.opts.retain_as_published;
            let mut sub_ids: Vec<u32> = match first.id {
                Some(i) => vec![i],
                None => Vec::new(),
            };
            let mut j = i + 1;
            while let Some(next) = matched.get(j).copied() {
                if next.session != first.session {
                    break;
                }
                if next.opts.qos > best.opts.qos {
                    best = next;
                }
                rap |= next.opts.retain_as_published;
                sub_ids.extend(next.id);
                j += 1;
            }
            i = j;
            // Never echo a bridge's own messages back to it.
            if Some(best.session) == origin
                && self.table.get(best.session).is_some_and(|s| s.no_echo())
            {
                continue;
            }
            if !self.session_may(best.session, &msg.topic, Access::Read) {
                continue;
            }
            let d = Pending::new(
                msg.clone(),
                msg.qos.min(best.opts.qos),
                rap && msg.retain,
                sub_ids,
                None,
            );
            self.deliver(best.session, d, now);
        }
        self.scratch = matched;
        if self.table.has_shared() {
            return self.route_shared(msg, None, now) > 0 || any;
        }
        any
    }

    /// One member of each shared group whose filter matches: the next connected member in
    /// round-robin order (or, if none is connected, the next one's session queue).
    fn route_shared(&mut self, msg: &Rc<Message>, only: Option<&Rc<str>>, now: Instant) -> usize {
        let auth = &self.auth;
        // Only members that may read the message take part: one that may not would swallow
        // it.
        let may = |s: &Session| {
            auth.allowed(
                s.scope,
                &s.client_id,
                s.username.as_deref(),
                &msg.topic,
                Access::Read,
            )
        };
        let picks = self.table.pick_shared(&msg.topic, only, None, &may);
        let n = picks.len();
        for ((sid, opts, id), key) in picks {
            let d = Pending::new(
                msg.clone(),
                msg.qos.min(opts.qos),
                opts.retain_as_published && msg.retain,
                id.into_iter().collect(),
                Some(key),
            );
            self.deliver(sid, d, now);
        }
        n
    }

    /// A member of shared groups lost its connection: messages it had not acknowledged go to
    /// another connected member of the same group, if there is one. [MQTT-4.8.2]
    pub(super) fn redistribute(&mut self, sid: usize, now: Instant) {
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        if !s.flow().inflight.iter().any(|f| f.d.share().is_some())
            && !s.flow().queue.iter().any(|p| p.share().is_some())
        {
            return;
        }
        let mut moved = Vec::new();
        self.touch(sid);
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        // PUBREC already received: the member has the message; it stays.
        s.flow_mut().inflight.retain(|f| {
            if f.d.share().is_some() && f.state != OutState::AwaitComp {
                moved.push(f.d.clone());
                false
            } else {
                true
            }
        });
        let mut kept = std::collections::VecDeque::new();
        while let Some(p) = s.pop_pending() {
            if p.share().is_some() {
                moved.push(p);
            } else {
                kept.push_back(p);
            }
        }
        for p in kept {
            s.push_pending(p);
        }
        for d in moved {
            let Some(key) = d.share().cloned() else {
                continue;
            };
            let auth = &self.auth;
            let may = |s: &Session| {
                auth.allowed(
                    s.scope,
                    &s.client_id,
                    s.username.as_deref(),
                    &d.msg.topic,
                    Access::Read,
                )
            };
            let target = self
                .table
                .pick_shared(&d.msg.topic, Some(&key), Some(sid), &may)
                .pop();
            match target {
                Some(((other, _, _), _)) => self.deliver(other, d, now),
                // Nobody else to take it: keep it for this member's return.
                None => {
                    if let Some(s) = self.table.get_mut(sid) {
                        s.push_pending(d);
                    }
                }
            }
        }
    }

    /// Timers are pushed from several modules; one helper keeps the heap private.
    pub(super) fn push_timer(&mut self, at: Instant, t: super::core::Timer) {
        let (sessions, bridges) = (&self.table, &self.bridges);
        self.timers
            .push(at, t, |t| super::core::timer_live(sessions, bridges, t));
    }
}
