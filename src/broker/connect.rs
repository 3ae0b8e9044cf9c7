//! CONNECT: who may connect, which session the connection gets, and the CONNACK.
//!
//! Every check that can refuse a connection runs before a session is touched, so a refused
//! CONNECT changes nothing. Takeover follows the specification: a clean start or a session
//! that ends with its connection (3.1.1 clean session, 5.0 expiry 0) is never resumed
//! [MQTT-3.1.2-4] [MQTT-3.1.2-6]; a resumed session gets a new attach epoch, so every timer
//! of the previous attachment is stale. Part of [`Broker`]; no I/O, time passed in.

use super::core::{fmt_addr, sys_write_forbidden, Broker, Close, Limits};
use super::session::{Expiry, OutState, Session};
use crate::auth::acl::Access;
use crate::protocol::{reason, topic, ConnAck, Connect, Packet, Properties, Version};
use log::info;
use std::sync::Arc;
use std::time::Instant;

impl Broker {
    fn next_client_id(&mut self) -> String {
        // An assigned id is the only credential of a persistent session: 128 bits from the
        // OS (ring's SystemRandom, getrandom). The seeded xorshift64* stays only as the
        // fallback should the OS refuse randomness.
        let mut r = [0u8; 16];
        let (a, b) =
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).is_ok() {
                let (hi, lo) = r.split_at(8);
                let word = |h: &[u8]| h.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
                (word(hi), word(lo))
            } else {
                let mut part = || {
                    let mut x = self.id_rng;
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    self.id_rng = x;
                    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
                };
                (part(), part())
            };
        format!(
            "{}{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            self.limits.auto_id_prefix,
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn refuse(&mut self, id: usize, v5_code: u8, version: Version) {
        let code = if version.is_v5() {
            v5_code
        } else {
            reason::connack_v5_to_v3(v5_code)
        };
        self.send_refusal(id, code);
        self.mark_closing(id, Close::Refused);
    }

    /// A CONNACK refusing the connection with `code` (already in the client's version).
    pub(super) fn send_refusal(&mut self, id: usize, code: u8) {
        self.send(
            id,
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: Properties::default(),
            }),
        );
    }

    pub(super) fn handle_connect(&mut self, id: usize, c: Connect, now: Instant) {
        let version = c.version;
        if let Some(conn) = self.conns.get_mut(id) {
            conn.version = version;
        }
        let mut client_id = c.client_id.clone();
        let mut assigned = false;
        if client_id.is_empty() {
            // [MQTT-3.1.3-8] a 3.1.1 client without an id must ask for a clean session.
            let allowed = self.limits.allow_zero_length_clientid
                && version != Version::V31
                && (c.clean_start || version.is_v5());
            if !allowed {
                info!("Client from {} refused: empty client id.", self.peer_of(id));
                return self.refuse(id, reason::CLIENT_IDENTIFIER_NOT_VALID, version);
            }
            client_id = self.next_client_id();
            assigned = true;
        }
        if version == Version::V31 && client_id.len() > 23 {
            info!(
                "Client from {} refused: client id longer than 23 characters.",
                self.peer_of(id)
            );
            return self.refuse(id, reason::CLIENT_IDENTIFIER_NOT_VALID, version);
        }
        // Mosquitto's clientid_prefixes: checked on the id the client ends up with, an
        // assigned one included, before the login.
        if let Some(prefix) = &self.limits.clientid_prefixes {
            if !client_id.starts_with(prefix.as_str()) {
                info!(
                    "Client {client_id} from {} refused: client id does not start with \
                     clientid_prefixes ({prefix}).",
                    self.peer_of(id)
                );
                return self.refuse(id, reason::NOT_AUTHORIZED, version);
            }
        }
        if c.properties.authentication_method.is_some() {
            // Enhanced authentication is not offered. [MQTT-4.12.0-1]
            info!(
                "Client {client_id} from {} refused: unsupported authentication method.",
                self.peer_of(id)
            );
            return self.refuse(id, reason::BAD_AUTHENTICATION_METHOD, version);
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.client_id = Arc::from(client_id.as_str());
        if let Some(w) = &c.will {
            if topic::too_deep(&w.topic) {
                info!(
                    "Client {client_id} refused: will topic deeper than {} levels.",
                    topic::MAX_LEVELS
                );
                return self.refuse(id, reason::TOPIC_NAME_INVALID, version);
            }
            if w.retain && !self.limits.retain_available {
                // [MQTT-3.2.2-13] refused, with 0x9A where the protocol can say it; 3.1.1
                // has no code for it and the connection is closed (as Mosquitto does).
                info!("Client {client_id} refused: retained will, but retain is not available.");
                if version.is_v5() {
                    self.send_refusal(id, reason::RETAIN_NOT_SUPPORTED);
                }
                return self.mark_closing(id, Close::Refused);
            }
            // A will is a PUBLISH made on the client's behalf: the same topics are closed
            // to it.
            if sys_write_forbidden(&w.topic) {
                info!("Client {client_id} refused: will topic in $SYS.");
                return self.refuse(id, reason::NOT_AUTHORIZED, version);
            }
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let mut verdict = self.auth.authenticate(conn, &c);
        if let (Ok(()), Some(w)) = (verdict, &c.will) {
            // A will the client could not publish itself is refused at CONNECT.
            let user = match conn.tls_identity() {
                Some(identity) => identity.as_deref(),
                None => c.username.as_deref(),
            };
            if !self.auth.allowed(
                conn.login.scope(),
                &client_id,
                user,
                &w.topic,
                Access::Write,
            ) {
                verdict = Err(reason::NOT_AUTHORIZED);
            }
        }
        if let Err(code) = verdict {
            if self.limits.connection_messages {
                // Mosquitto's words: the id is not taken before the login is accepted.
                info!("Client <unknown> disconnected, not authorised.");
            }
            return self.refuse(id, code, version);
        }
        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        let max_ka = self.limits.max_keepalive;
        if max_ka != 0 && version.is_v5() && (keep_alive > max_ka || keep_alive == 0) {
            keep_alive = max_ka;
            server_keep_alive = Some(keep_alive);
        } else if max_ka != 0 && !version.is_v5() && keep_alive > max_ka {
            // 3.1.1 cannot be told a shorter keep alive: refused, as Mosquitto 2.0.12 and
            // later do (identifier rejected). Keep alive 0 stays allowed [MQTT-3.1.2-10].
            info!(
                "Client {client_id} refused: keep alive {keep_alive} above max_keepalive {max_ka}."
            );
            return self.refuse(id, reason::CLIENT_IDENTIFIER_NOT_VALID, version);
        }

        let mut props = Properties::default();
        if version.is_v5() {
            // An id the login replaces (use_username_as_clientid) is not the client's.
            if assigned && !self.limits.use_username_as_clientid {
                props.assigned_client_identifier = Some(client_id.clone());
            }
            props.server_keep_alive = server_keep_alive;
            props.receive_maximum = u16::try_from(self.limits.max_inflight).ok();
            if self.limits.max_topic_alias > 0 {
                props.topic_alias_maximum = Some(self.limits.max_topic_alias);
            }
            if !self.limits.retain_available {
                props.retain_available = Some(0);
            }
            if self.limits.max_packet < 268_435_460 {
                props.maximum_packet_size = Some(self.limits.max_packet as u32);
            }
        }
        let connack = ConnAck {
            session_present: false,
            code: reason::SUCCESS,
            properties: props,
        };
        if let Some(max) = c.properties.maximum_packet_size {
            if Packet::ConnAck(connack.clone()).encoded_len(version) > max as usize {
                // [MQTT-3.1.2-24] nothing larger than the client takes may be sent, and a
                // refusal would be larger still: close (as Mosquitto does).
                info!(
                    "Client {client_id} refused: its maximum packet size is below the CONNACK's."
                );
                return self.mark_closing(id, Close::Refused);
            }
        }

        let key = match (self.limits.use_username_as_clientid, self.conns.get(id)) {
            (false, _) => Some(Arc::from(client_id.as_str())),
            (true, Some(conn)) => match conn.tls_identity() {
                Some(identity) => identity.as_deref().map(Arc::from),
                None => c.username.as_deref().map(Arc::from),
            },
            (true, None) => None,
        };
        if key.is_some_and(|k| !self.make_room_for_session(&k, now)) {
            info!(
                "Client {client_id} from {} refused: max_sessions ({}) reached, none offline.",
                self.peer_of(id),
                self.limits.budget.max_sessions
            );
            return self.refuse(id, reason::QUOTA_EXCEEDED, version);
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.keep_alive_secs = keep_alive;
        conn.username = match conn.tls_identity() {
            Some(identity) => identity.as_deref().map(Arc::from),
            None => c.username.as_deref().map(Arc::from),
        };
        if self.limits.use_username_as_clientid {
            // Mosquitto's use_username_as_clientid: the login names the session.
            match conn.username.clone() {
                Some(u) => conn.client_id = u,
                None => {
                    if self.limits.connection_messages {
                        info!("Client <unknown> disconnected, not authorised.");
                    }
                    return self.refuse(id, reason::NOT_AUTHORIZED, version);
                }
            }
        }
        conn.will = c.will.map(Box::new);
        // The client may offer up to 65,535 aliases; the broker keeps at most
        // max_outgoing_topic_alias topics for them (each holds a topic string).
        let alias_cap = self.limits.budget.max_outgoing_topic_alias;
        if let Some(max) = c.properties.topic_alias_maximum.map(|m| m.min(alias_cap)) {
            if max > 0 {
                conn.extra_mut().alias_out_max = max;
            }
        }
        if let Some(max) = c.properties.maximum_packet_size {
            conn.extra_mut().max_packet_out = Some(max as usize);
        }
        let window = usize::from(c.properties.receive_maximum.unwrap_or(u16::MAX))
            .min(self.limits.max_inflight);
        conn.connected = true;
        let peer = conn.peer();
        let username = conn.username.clone();
        let scope = conn.login.scope();
        let key: Arc<str> = conn.client_id.clone();

        // Session expiry: 3.1.1 clean session, or 5.0's property. [MQTT-3.1.2-23]
        let expiry = if version.is_v5() {
            match c.properties.session_expiry_interval.unwrap_or(0) {
                0 => Expiry::OnDisconnect,
                u32::MAX => Expiry::Never,
                n => Expiry::After(n),
            }
        } else if c.clean_start {
            Expiry::OnDisconnect
        } else {
            Expiry::Never
        };

        // Take over an existing session's connection. [MQTT-3.1.4-2] [MQTT-3.1.4-3]
        let mut session_present = false;
        if let Some(sid) = self.session_id(&key) {
            let epoch = self.serial();
            let old = self.table.detach(sid, epoch);
            // [MQTT-3.1.2-4] a clean start discards the session; [MQTT-3.1.2-6] one that
            // ends with its connection is never resumed, even by a takeover.
            let resume = !c.clean_start
                && self
                    .table
                    .get(sid)
                    .is_some_and(|s| s.expiry != Expiry::OnDisconnect);
            if let Some(old) = old {
                if self.limits.connection_messages {
                    info!("Client {key} already connected, closing old connection.");
                }
                if self.conns.get(old).is_some_and(|c| c.version.is_v5()) {
                    self.send_disconnect(old, reason::SESSION_TAKEN_OVER);
                }
                if !resume {
                    // The session ends with this takeover: the old connection's will goes
                    // when it closes, with no session to hold it back.
                    if let Some(oc) = self.conns.get_mut(old) {
                        oc.set_session(None);
                    }
                }
                self.mark_closing(old, Close::TakenOver);
            }
            if resume {
                session_present = true;
            } else {
                self.end_session(sid, now);
            }
        }
        let epoch = self.serial();
        let sid = self.session_for(Session::new(key.clone(), epoch, expiry));
        self.table.attach(sid, id, epoch);
        if let Some(s) = self.table.get_mut(sid) {
            s.set_window(window);
            s.username = username.clone();
            s.scope = scope;
            s.set_no_echo(c.bridge);
            // The client is back in time: its delayed will is cancelled. [MQTT-3.1.3-9]
            s.pending_will = None;
            s.expiry = expiry;
        }
        if session_present {
            self.drop_unreadable(sid);
        }
        if let Some(conn) = self.conns.get_mut(id) {
            conn.set_session(Some(sid));
        }
        self.touch(sid);
        self.stats.clients_total_connected += 1;
        self.stats.clients_maximum = self.stats.clients_maximum.max(self.connected_count());

        if self.limits.connection_messages {
            // The login's username, as Mosquitto logs `context->username`: the certificate's
            // identity on a listener that takes it from there.
            let user = self
                .conns
                .get(id)
                .and_then(|c| c.username.as_ref())
                .map(|u| format!(", u'{u}'"))
                .unwrap_or_default();
            info!(
                "New client connected from {} as {} (p{}, c{}, k{}{}).",
                fmt_addr(&peer),
                key,
                super::packet_log::protocol_number(version),
                u8::from(c.clean_start),
                c.keep_alive,
                user
            );
        }
        super::packet_log::will(self.conns.get(id).and_then(|c| c.will.as_deref()));
        // 3.1 has no session present flag: the byte is reserved there and stays 0.
        let flag = session_present && version != Version::V31;
        self.send(
            id,
            &Packet::ConnAck(ConnAck {
                session_present: flag,
                ..connack
            }),
        );
        self.arm_sweep(id);
        if session_present {
            self.resume_session(sid, now);
        }
    }

    /// Whether a session for `key` fits in `max_sessions`. At the cap, a new client id takes
    /// the place of the offline session that left longest ago, so offline sessions left by a
    /// flood of client ids cannot lock out a newcomer; only when every session is connected
    /// is the newcomer refused.
    fn make_room_for_session(&mut self, key: &str, now: Instant) -> bool {
        let cap = u64::from(self.limits.budget.max_sessions);
        if self.table.id_of(key).is_some() || !Limits::at_cap(self.table.len(), cap) {
            return true;
        }
        let victim = self
            .table
            .oldest_offline()
            .and_then(|sid| Some((sid, self.table.get(sid)?.client_id.clone())));
        let Some((sid, old)) = victim else {
            return false;
        };
        info!("Offline session of {old} discarded for {key}: max_sessions ({cap}) reached.");
        self.end_session(sid, now);
        true
    }

    /// A resumed session may now belong to another user: what it holds for the client that
    /// this user may not read is dropped (as Mosquitto's `connection_check_acl` does).
    /// Messages past PUBREC are left to complete: the client has them already.
    fn drop_unreadable(&mut self, sid: usize) {
        let Some(scope) = self.table.get(sid).map(|s| s.scope) else {
            return;
        };
        let Some(acl) = self.auth.acl_of(scope) else {
            return;
        };
        let Some(s) = self.table.get_mut(sid) else {
            return;
        };
        let (cid, user) = (s.client_id.clone(), s.username.clone());
        let may = |t: &str| acl.allowed(&cid, user.as_deref(), t, Access::Read);
        let f = s.flow_mut();
        let before = f.inflight.len() + f.queue.len();
        f.inflight
            .retain(|m| m.state == OutState::AwaitComp || may(&m.d.msg.topic));
        let mut kept = std::collections::VecDeque::new();
        while let Some(p) = f.pop_pending() {
            if may(&p.msg.topic) {
                kept.push_back(p);
            }
        }
        for p in kept {
            f.push_pending(p);
        }
        let dropped = before.saturating_sub(f.inflight.len() + f.queue.len());
        if dropped > 0 {
            self.stats.publish_dropped += dropped as u64;
            self.touch(sid);
        }
    }
}
