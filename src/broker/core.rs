//! The broker's state and packet handlers: connections' protocol state, sessions, routing,
//! retained messages, wills, keepalive and timers.
//!
//! No sockets and no clock: bytes come in through [`Broker::input`] with the time they arrived,
//! packets go out as bytes appended to each connection's `out` buffer, and the event loop asks
//! [`Broker::next_deadline`] how long it may sleep. This is what makes the session and routing
//! logic testable without a network. Malformed input closes only the connection it came on.

use super::message::Message;
use super::retain::RetainStore;
use super::session::{Expiry, OutState, Pending, Session};
use super::slab::Slab;
use super::subs::{SubTree, Subscriber};
use crate::auth::acl::{Access, Acl};
use crate::auth::password::PasswordFile;
use crate::config::{Config, ConfigError};
use crate::protocol::{
    decode, reason, topic, Ack, ConnAck, Connect, DecodeError, Disconnect, Packet, Properties,
    Publish, QoS, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};
use bytes::{Buf, BytesMut};
use log::{debug, info};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits and switches the router applies, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_packet: usize,
    pub message_size_limit: usize,
    pub max_inflight: usize,
    /// 0: unlimited.
    pub max_queued: usize,
    /// 0: unlimited.
    pub max_queued_bytes: usize,
    pub max_keepalive: u16,
    /// Topic aliases a 5.0 client may set up towards the broker.
    pub max_topic_alias: u16,
    pub retain_available: bool,
    pub queue_qos0: bool,
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: String,
    pub use_username_as_clientid: bool,
    pub persistent_client_expiration: Option<Duration>,
    pub connection_messages: bool,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Output queued for one connection above which its publishers are paused.
    pub out_high_water: usize,
    /// Output queued for one connection above which QoS 0 messages to it are dropped.
    pub out_limit: usize,
    /// How long a congested subscriber may hold its publishers back before it counts as
    /// stalled and its messages are queued (and dropped at the limit) instead.
    pub stall_timeout: Duration,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        let max_packet = if c.max_packet_size == 0 {
            268_435_460
        } else {
            c.max_packet_size as usize
        };
        Limits {
            max_packet,
            message_size_limit: c.message_size_limit as usize,
            max_inflight: if c.max_inflight_messages == 0 {
                usize::from(u16::MAX)
            } else {
                usize::from(c.max_inflight_messages)
            },
            max_queued: c.max_queued_messages as usize,
            max_queued_bytes: c.max_queued_bytes as usize,
            max_keepalive: c.max_keepalive,
            max_topic_alias: c.max_topic_alias,
            retain_available: c.retain_available,
            queue_qos0: c.queue_qos0_messages,
            allow_zero_length_clientid: c.allow_zero_length_clientid,
            auto_id_prefix: c.auto_id_prefix.clone(),
            use_username_as_clientid: c.use_username_as_clientid,
            persistent_client_expiration: c.persistent_client_expiration,
            connection_messages: c.connection_messages,
            connect_timeout: Duration::from_secs(20),
            out_high_water: 256 * 1024,
            out_limit: 16 * 1024 * 1024,
            stall_timeout: Duration::from_secs(2),
        }
    }

    /// Queue length above which a connected subscriber holds back its publishers.
    pub(super) fn queue_high_water(&self) -> usize {
        if self.max_queued == 0 {
            1000
        } else {
            (self.max_queued / 2).max(1)
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&Config::default())
    }
}

/// Why a connection is being closed; decides whether its will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT (the will is discarded). [MQTT-3.14.4-3]
    Disconnected,
    /// The client sent DISCONNECT 0x04: publish the will anyway.
    DisconnectedWithWill,
    ProtocolError,
    KeepAlive,
    ConnectTimeout,
    PeerClosed,
    SocketError,
    TakenOver,
    /// Refused at CONNECT; no session was attached.
    Refused,
    /// Broker shutting down: no wills.
    Shutdown,
}

impl Close {
    fn publishes_will(self) -> bool {
        !matches!(self, Close::Disconnected | Close::Refused | Close::Shutdown)
    }
}

/// Protocol state of one network connection.
pub struct Conn {
    /// Encoded packets waiting for the socket. Boxed and dropped when drained: an idle
    /// connection pays a pointer.
    #[allow(clippy::box_collection)]
    out: Option<Box<BytesMut>>,
    /// The peer's address, 20 bytes where a `SocketAddr` takes 32; see [`Conn::peer`].
    peer_ip: IpAddr,
    peer_port: u16,
    /// The session's slab index (below 2^32) once CONNECT is accepted; see [`Conn::session`].
    session_ix: Option<u32>,
    pub client_id: Arc<str>,
    /// Shared with the session: one allocation, and cloned by reference count per PUBLISH.
    pub username: Option<Arc<str>>,
    pub last_rx: Instant,
    /// Boxed: most connections have none, and a will is large.
    pub will: Option<Box<Will>>,
    /// What few connections use, boxed so that the common one pays a pointer (see
    /// [`ConnExtra`]): memory per idle connection is what a router's RAM limits.
    pub extra: Option<Box<ConnExtra>>,
    /// Keep alive in seconds (0: none), after `max_keepalive`.
    pub keep_alive_secs: u16,
    pub port: u16,
    pub connected: bool,
    pub version: Version,
    pub close: Option<Close>,
    /// In the broker's dirty list (has new output to flush).
    dirty: bool,
    /// Reading paused: a subscriber this connection publishes to is not keeping up.
    pub paused: bool,
    pub anonymous_allowed: bool,
}

/// The parts of a connection's state that only some connections use.
#[derive(Default)]
pub struct ConnExtra {
    /// MQTT 5 Maximum Packet Size the client accepts, when it set one.
    pub max_packet_out: Option<usize>,
    /// Common name of the TLS client certificate, on listeners that use it as the username:
    /// `Some(None)` when such a listener saw no certificate.
    pub tls_identity: Option<Option<String>>,
    /// 5.0 topic aliases the client set up for its PUBLISHes (index = alias - 1).
    pub alias_in: Vec<Option<Arc<str>>>,
    /// 5.0 topic aliases the broker set up towards the client, and how many it may.
    pub alias_out: std::collections::HashMap<Arc<str>, u16>,
    pub alias_out_max: u16,
    /// Set on the outgoing connection of a bridge: its index, and its topic rewriting.
    pub bridge: Option<usize>,
    pub remap: Option<Rc<super::bridge::Remap>>,
}

impl Conn {
    /// The output buffer, made when something is to be sent.
    pub fn out_mut(&mut self) -> &mut BytesMut {
        self.out.get_or_insert_with(Default::default)
    }

    /// Encoded bytes not yet written to the socket.
    pub fn out(&self) -> &[u8] {
        self.out.as_deref().map_or(&[], |b| &b[..])
    }

    /// `n` bytes were written; the buffer goes when nothing is left.
    pub fn out_consumed(&mut self, n: usize) {
        if let Some(b) = self.out.as_deref_mut() {
            b.advance(n.min(b.len()));
            if b.is_empty() {
                self.out = None;
            }
        }
    }

    /// Drops what was not written (the connection failed).
    pub fn out_clear(&mut self) {
        self.out = None;
    }

    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer_ip, self.peer_port)
    }

    /// The session, once CONNECT is accepted.
    pub fn session(&self) -> Option<usize> {
        self.session_ix.map(|s| s as usize)
    }

    pub fn set_session(&mut self, session: Option<usize>) {
        self.session_ix = session.and_then(|s| u32::try_from(s).ok());
    }

    pub fn extra_mut(&mut self) -> &mut ConnExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(u64::from(self.keep_alive_secs))
    }

    /// When the connection is closed unless a packet comes first: `connect_timeout` after it
    /// opened while CONNECT (or a bridge's CONNACK) is awaited, then one and a half keep alives
    /// after the last packet [MQTT-3.1.2-24]. `None`: no deadline (closing, or keep alive 0).
    fn deadline(&self, connect_timeout: Duration) -> Option<Instant> {
        if self.close.is_some() {
            None
        } else if !self.connected {
            Some(self.last_rx + connect_timeout)
        } else if self.keep_alive_secs > 0 {
            let ka = self.keep_alive();
            Some(self.last_rx + ka + ka / 2)
        } else {
            None
        }
    }

    /// The bridge this outgoing connection belongs to.
    pub fn bridge(&self) -> Option<usize> {
        self.extra.as_ref().and_then(|e| e.bridge)
    }

    pub fn remap(&self) -> Option<&Rc<super::bridge::Remap>> {
        self.extra.as_ref().and_then(|e| e.remap.as_ref())
    }

    pub fn tls_identity(&self) -> Option<&Option<String>> {
        self.extra.as_ref().and_then(|e| e.tls_identity.as_ref())
    }

    pub fn alias_out_max(&self) -> u16 {
        self.extra.as_ref().map_or(0, |e| e.alias_out_max)
    }

    pub fn max_packet_out(&self) -> usize {
        self.extra
            .as_ref()
            .and_then(|e| e.max_packet_out)
            .unwrap_or(usize::MAX)
    }

    pub(super) fn display_id(&self) -> &str {
        if self.client_id.is_empty() {
            "<unknown>"
        } else {
            &self.client_id
        }
    }
}

/// Something due at a deadline. Ids are slab indices and serials (both below 2^32), so that
/// an entry stays small: a disconnected persistent session holds one for its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Time to reconnect a bridge.
    BridgeRestart {
        bridge: u32,
    },
    /// Time for a bridge connection's PINGREQ.
    BridgePing {
        conn: u32,
    },
    SessionExpiry {
        session: u32,
        serial: u32,
    },
    Stall {
        session: u32,
        serial: u32,
    },
    /// A 5.0 will held back by its Will Delay Interval.
    WillDelay {
        session: u32,
        serial: u32,
    },
}

/// Pending timers, earliest first.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub(super) fn push(&mut self, at: Instant, t: Timer) {
        self.heap.push(Reverse((at, t)));
    }

    /// When the earliest timer is due.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, t))| t)
    }
}

/// A slab index or serial as a timer holds it.
pub(super) fn id32(id: usize) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

/// Counters for logs and `$SYS`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub clients_total_connected: u64,
    pub clients_maximum: usize,
    pub clients_expired: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// Who may connect and what they may do: the password file and the ACL, both optional.
#[derive(Default)]
pub struct Auth {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
}

impl Auth {
    pub fn load(cfg: &Config) -> Result<Auth, ConfigError> {
        Ok(Auth {
            passwords: cfg
                .password_file
                .as_ref()
                .map(PasswordFile::load)
                .transpose()?,
            acl: cfg.acl_file.as_ref().map(Acl::load).transpose()?,
        })
    }

    /// The CONNECT decision. Mosquitto's rules: no user name needs anonymous access; a user
    /// name is checked against the password file when there is one, and otherwise needs
    /// anonymous access too (nobody can prove who they are).
    fn authenticate(&self, conn: &Conn, c: &Connect) -> Result<(), u8> {
        if let Some(identity) = conn.tls_identity() {
            // use_identity_as_username: the certificate is the credential.
            return identity.as_ref().map(|_| ()).ok_or(reason::NOT_AUTHORIZED);
        }
        match (&c.username, &self.passwords) {
            (Some(u), Some(pw)) => {
                let given = c.password.as_deref().unwrap_or_default();
                if pw.check(u, given) {
                    Ok(())
                } else {
                    Err(reason::NOT_AUTHORIZED)
                }
            }
            _ if conn.anonymous_allowed => Ok(()),
            _ => Err(reason::NOT_AUTHORIZED),
        }
    }

    /// May `client_id`/`username` do `access` on `topic`? Always yes without an ACL file.
    pub fn allowed(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.allowed(client_id, username, topic, access))
    }
}

/// A shared subscription group, `$share/{group}/{filter}`: each message to one member.
pub struct SharedGroup {
    /// `group/filter`.
    pub key: Rc<str>,
    pub filter: Box<str>,
    /// (session, options, subscription identifier)
    pub members: Vec<(usize, SubOptions, Option<u32>)>,
    /// Round-robin position.
    pub next: usize,
}

pub struct Broker {
    pub limits: Limits,
    pub auth: Auth,
    /// Counts changes to what persistence saves; the store compares it with what it saved.
    pub changes: u64,
    pub conns: Slab<Conn>,
    pub(super) sessions: Slab<Session>,
    by_client_id: std::collections::HashMap<Arc<str>, usize>,
    pub(super) subs: SubTree,
    pub(super) shared: Vec<SharedGroup>,
    retained: RetainStore,
    pub(super) timers: Timers,
    /// When connect timeouts and keep alives are next checked ([`Broker::sweep`]); `None`
    /// while no connection has a deadline.
    sweep_at: Option<Instant>,
    /// Connections with output to flush.
    dirty: Vec<usize>,
    /// Connections marked for closing, for the event loop's sweep.
    closing: Vec<usize>,
    /// Sessions whose queue or output is above the high-water mark, with since when.
    pub(super) congested: Vec<(usize, Instant)>,
    /// Connections paused on behalf of congested sessions.
    pub(super) paused: Vec<usize>,
    /// Connections the event loop should read again (pause lifted).
    pub(super) resumed: Vec<usize>,
    /// Connection whose input is being handled: the one to pause on congestion.
    pub(super) current: Option<usize>,
    pub(super) scratch: Vec<Subscriber>,
    pub(super) bridges: Vec<super::bridge::BridgeState>,
    pub(super) bridge_connects: Vec<usize>,
    next_serial: u32,
    id_rng: u64,
    pub stats: Stats,
    pub(super) sys: super::sys::SysState,
}

impl Broker {
    /// `seed` makes assigned client ids unpredictable; pass something from the clock and pid.
    pub fn new(limits: Limits, seed: u64) -> Broker {
        Broker {
            limits,
            auth: Auth::default(),
            changes: 0,
            conns: Slab::default(),
            sessions: Slab::default(),
            by_client_id: Default::default(),
            subs: SubTree::default(),
            shared: Vec::new(),
            retained: RetainStore::default(),
            timers: Timers::default(),
            sweep_at: None,
            dirty: Vec::new(),
            closing: Vec::new(),
            congested: Vec::new(),
            paused: Vec::new(),
            resumed: Vec::new(),
            current: None,
            scratch: Vec::new(),
            bridges: Vec::new(),
            bridge_connects: Vec::new(),
            next_serial: 1,
            id_rng: seed | 1,
            stats: Stats::default(),
            sys: super::sys::SysState::default(),
        }
    }

    pub(super) fn next_serial_pub(&mut self) -> u32 {
        self.serial()
    }

    pub(super) fn session_id(&self, client_id: &str) -> Option<usize> {
        self.by_client_id.get(client_id).copied()
    }

    pub(super) fn by_client_id_insert(&mut self, id: Arc<str>, sid: usize) {
        self.by_client_id.insert(id, sid);
    }

    pub(super) fn close_conn(&mut self, id: usize, why: Close) {
        self.mark_closing(id, why);
    }

    /// A serial for a new connection or session. Wraps after 2^32; a stale timer could then
    /// only be confused with a live one holding the same slot and the same serial.
    fn serial(&mut self) -> u32 {
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        self.next_serial
    }

    /// Notes a change to a session that persistence would save.
    pub(super) fn touch(&mut self, sid: usize) {
        if self
            .sessions
            .get(sid)
            .is_some_and(|s| s.expiry != Expiry::OnDisconnect)
        {
            self.changes += 1;
        }
    }

    /// Retained messages worth saving (the broker's own `$SYS` tree is rebuilt, not saved).
    pub fn retained_messages(&self) -> Vec<Rc<Message>> {
        let mut all = Vec::new();
        self.retained.all(&mut all);
        all.retain(|m| !m.topic.starts_with("$SYS"));
        all
    }

    pub fn sessions_iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().map(|(_, s)| s)
    }

    /// Puts a loaded snapshot into an empty broker: sessions come back disconnected, with
    /// their expiry counting from now.
    pub fn restore(&mut self, img: super::persist::Image, now: Instant) {
        for m in img.retained {
            self.retained.set(m);
        }
        for mut s in img.sessions {
            if self.by_client_id.contains_key(&s.client_id) {
                continue;
            }
            s.serial = self.serial();
            s.set_conn(None);
            s.set_window(self.limits.max_inflight);
            let key = s.client_id.clone();
            let subs = s.subs.clone();
            let expiry = s.expiry;
            let serial = s.serial;
            let sid = self.sessions.insert(s);
            self.by_client_id.insert(key, sid);
            for (filter, opts, id) in subs {
                let id = id.map(NonZeroU32::get);
                match topic::parse_shared(&filter) {
                    Some(Ok((group, f))) => self.shared_subscribe(group, f, sid, opts, id),
                    _ => {
                        self.subs.subscribe(
                            &filter,
                            Subscriber {
                                session: sid,
                                opts,
                                id,
                            },
                        );
                    }
                }
            }
            let after = match (expiry, self.limits.persistent_client_expiration) {
                (Expiry::After(n), _) => Some(Duration::from_secs(u64::from(n))),
                (Expiry::Never, d) => d,
                (Expiry::OnDisconnect, _) => Some(Duration::ZERO),
            };
            if let Some(d) = after {
                self.push_timer(
                    now + d,
                    Timer::SessionExpiry {
                        session: id32(sid),
                        serial,
                    },
                );
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.count()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.count()
    }

    /// A new network connection. Returns its id, which the event loop uses as its token.
    pub fn accept(
        &mut self,
        peer: SocketAddr,
        port: u16,
        anonymous_allowed: bool,
        now: Instant,
    ) -> usize {
        if self.limits.connection_messages {
            info!("New connection from {} on port {}.", fmt_addr(&peer), port);
        }
        self.open_conn(peer, port, anonymous_allowed, now)
    }

    /// A connection's protocol state, for accepted and outgoing (bridge) connections alike.
    pub(super) fn open_conn(
        &mut self,
        peer: SocketAddr,
        port: u16,
        anonymous_allowed: bool,
        now: Instant,
    ) -> usize {
        let id = self.conns.insert(Conn {
            out: None,
            peer_ip: peer.ip(),
            peer_port: peer.port(),
            port,
            session_ix: None,
            connected: false,
            version: Version::V311,
            client_id: Arc::from(""),
            username: None,
            last_rx: now,
            will: None,
            extra: None,
            keep_alive_secs: 0,
            close: None,
            dirty: false,
            paused: false,
            anonymous_allowed,
        });
        self.arm_sweep(id);
        id
    }

    /// Handles every complete packet at the front of `buf`; returns how many bytes were used.
    /// Stops early when the connection is closing or paused, leaving the rest for later.
    pub fn input(&mut self, id: usize, buf: &[u8], now: Instant) -> usize {
        let mut used = 0;
        self.current = Some(id);
        while let Some(conn) = self.conns.get_mut(id) {
            if conn.close.is_some() || conn.paused {
                break;
            }
            let rest = buf.get(used..).unwrap_or_default();
            match decode(rest, conn.version, self.limits.max_packet) {
                Ok(None) => break,
                Ok(Some((packet, n))) => {
                    used += n;
                    conn.last_rx = now;
                    self.stats.messages_received += 1;
                    self.handle_packet(id, packet, now);
                }
                Err(e) => {
                    self.protocol_error(id, &e);
                    break;
                }
            }
        }
        self.current = None;
        used
    }

    /// The TLS client certificate's identity, for `use_identity_as_username` listeners.
    pub fn set_tls_identity(&mut self, id: usize, identity: Option<String>) {
        if let Some(c) = self.conns.get_mut(id) {
            c.extra_mut().tls_identity = Some(identity);
        }
    }

    /// The peer closed the connection, or the socket failed.
    pub fn peer_closed(&mut self, id: usize, error: bool) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        if conn.close.is_some() {
            return;
        }
        if self.limits.connection_messages {
            if error {
                info!(
                    "Socket error on client {}, disconnecting.",
                    conn.display_id()
                );
            } else if conn.connected {
                info!("Client {} closed its connection.", conn.display_id());
            }
        }
        self.mark_closing(
            id,
            if error {
                Close::SocketError
            } else {
                Close::PeerClosed
            },
        );
    }

    /// Output for `id` was written to the socket: lift congestion if it was the cause.
    pub fn flushed(&mut self, id: usize, now: Instant) {
        if let Some(sid) = self.conns.get(id).and_then(Conn::session) {
            self.check_congestion(sid, now);
        }
    }

    /// Connections with new output since the last call.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let ids = std::mem::take(&mut self.dirty);
        for &id in &ids {
            if let Some(c) = self.conns.get_mut(id) {
                c.dirty = false;
            }
        }
        ids
    }

    /// Connections marked for closing since the last call. The event loop flushes what it can,
    /// drops the socket and calls [`Broker::finish`].
    pub fn take_closing(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.closing)
    }

    /// Connections whose reading was paused and may go on now.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resumed)
    }

    /// Forgets a closed connection: publishes its will if the way it closed calls for one,
    /// and detaches or removes its session.
    pub fn finish(&mut self, id: usize, now: Instant) {
        let Some(conn) = self.conns.remove(id) else {
            return;
        };
        let why = conn.close.unwrap_or(Close::SocketError);
        if conn.connected && why != Close::Disconnected && self.limits.connection_messages {
            match why {
                Close::KeepAlive | Close::PeerClosed | Close::SocketError | Close::TakenOver => {}
                _ => info!("Client {} disconnected.", conn.display_id()),
            }
        }
        let (bridge, session) = (conn.bridge(), conn.session());
        let mut will = conn.will.filter(|_| why.publishes_will());
        if let (Some(w), Some(sid)) = (&will, session) {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            let keeps = self
                .sessions
                .get(sid)
                .is_some_and(|s| s.expiry != Expiry::OnDisconnect);
            if delay > 0 && keeps {
                // [MQTT-3.1.3-9] held back; cancelled if the client returns in time.
                if let Some(s) = self.sessions.get_mut(sid) {
                    let serial = s.serial;
                    s.pending_will = will.take();
                    self.push_timer(
                        now + Duration::from_secs(u64::from(delay)),
                        Timer::WillDelay {
                            session: id32(sid),
                            serial,
                        },
                    );
                }
            }
        }
        if let Some(w) = will {
            self.publish_will(*w, now);
        }
        if let Some(sid) = session {
            self.detach_session(sid, now);
        }
        if let Some(idx) = bridge {
            self.bridge_closed(idx, now);
        }
    }

    /// Closes every connection for shutdown: 5.0 clients are told why; no wills are sent.
    pub fn shutdown(&mut self) {
        for id in self.conns.ids() {
            if let Some(c) = self.conns.get(id) {
                if c.connected && c.version.is_v5() {
                    self.send_disconnect(id, reason::SERVER_SHUTTING_DOWN);
                }
            }
            self.mark_closing(id, Close::Shutdown);
        }
    }

    /// The earliest instant anything is due; `None` when nothing is.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.timers.next(), self.sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Connection `id` has a new deadline (it opened, or its keep alive started): the sweep
    /// runs by then.
    fn arm_sweep(&mut self, id: usize) {
        let at = self
            .conns
            .get(id)
            .and_then(|c| c.deadline(self.limits.connect_timeout));
        if let Some(at) = at {
            self.sweep_at = Some(self.sweep_at.map_or(at, |t| t.min(at)));
        }
    }

    /// Connect timeouts and keep alives [MQTT-3.1.2-24], checked by one pass over the
    /// connections instead of a timer each: a connection holds no timer state. Each pass
    /// finds the earliest deadline and the next pass runs then (at most one a second);
    /// traffic only moves deadlines later, so the pass is never late.
    fn sweep(&mut self, now: Instant) {
        let connect_timeout = self.limits.connect_timeout;
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, c) in self.conns.iter() {
            let Some(deadline) = c.deadline(connect_timeout) else {
                continue;
            };
            if now >= deadline {
                expired.push(id);
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        self.sweep_at = next.map(|n| n.max(now + Duration::from_secs(1)));
        for id in expired {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            if !c.connected {
                if self.limits.connection_messages {
                    info!(
                        "Client {} did not send CONNECT in time, disconnecting.",
                        fmt_addr(&c.peer())
                    );
                }
                self.mark_closing(id, Close::ConnectTimeout);
                continue;
            }
            if self.limits.connection_messages {
                info!(
                    "Client {} has exceeded timeout, disconnecting.",
                    c.display_id()
                );
            }
            if c.version.is_v5() {
                self.send_disconnect(id, reason::KEEP_ALIVE_TIMEOUT);
            }
            self.mark_closing(id, Close::KeepAlive);
        }
    }

    /// Runs every timer due at `now`.
    pub fn poll(&mut self, now: Instant) {
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::SessionExpiry { session, serial } => {
                    let session = session as usize;
                    let Some(s) = self.sessions.get(session) else {
                        continue;
                    };
                    if s.serial == serial && s.conn().is_none() {
                        if self.limits.connection_messages {
                            info!("Expiring client {} due to timeout.", s.client_id);
                        }
                        self.stats.clients_expired += 1;
                        // [MQTT-3.1.3-9] a delayed will goes out when the session ends.
                        if let Some(w) = self
                            .sessions
                            .get_mut(session)
                            .and_then(|s| s.pending_will.take())
                        {
                            self.publish_will(*w, now);
                        }
                        self.remove_session(session);
                    }
                }
                Timer::Stall { session, serial } => {
                    let session = session as usize;
                    if self
                        .sessions
                        .get(session)
                        .is_some_and(|s| s.serial == serial)
                    {
                        self.stall_expired(session, now);
                    }
                }
                Timer::BridgeRestart { bridge } => self.bridge_restart_due(bridge as usize),
                Timer::BridgePing { conn } => self.bridge_ping(conn as usize, now),
                Timer::WillDelay { session, serial } => {
                    let session = session as usize;
                    let will = self
                        .sessions
                        .get_mut(session)
                        .filter(|s| s.serial == serial && s.conn().is_none())
                        .and_then(|s| s.pending_will.take());
                    if let Some(w) = will {
                        self.publish_will(*w, now);
                    }
                }
            }
        }
    }

    fn mark_closing(&mut self, id: usize, why: Close) {
        if let Some(c) = self.conns.get_mut(id) {
            if c.close.is_none() {
                c.close = Some(why);
                self.closing.push(id);
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Encodes `p` onto `id`'s output.
    pub fn send(&mut self, id: usize, p: &Packet) {
        if let Some(c) = self.conns.get_mut(id) {
            if c.connected {
                super::packet_log::sending(c.display_id(), p);
            } else {
                super::packet_log::sending(&c.peer_ip.to_string(), p);
            }
            p.encode(c.version, c.out_mut());
            self.stats.messages_sent += 1;
            self.mark_dirty(id);
        }
    }

    fn send_disconnect(&mut self, id: usize, code: u8) {
        self.send(
            id,
            &Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            }),
        );
    }

    /// One function maps every decode error to the protocol's answer. [MQTT-4.8.0-1]
    fn protocol_error(&mut self, id: usize, e: &DecodeError) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let connected = c.connected;
        let v5 = c.version.is_v5();
        info!(
            "Client {} from {} disconnected due to protocol error: {}.",
            c.display_id(),
            fmt_addr(&c.peer()),
            e
        );
        if connected && v5 {
            self.send_disconnect(id, e.reason_code());
        } else if !connected {
            if let Some(code) = e.connack_v3() {
                self.send_refusal(id, code);
            }
        }
        self.mark_closing(id, Close::ProtocolError);
    }

    fn protocol_violation(&mut self, id: usize, what: &'static str) {
        self.protocol_error(id, &DecodeError::Protocol(what));
    }

    fn handle_packet(&mut self, id: usize, p: Packet, now: Instant) {
        let connected = self.conns.get(id).is_some_and(|c| c.connected);
        if let Some(idx) = self.conns.get(id).and_then(Conn::bridge) {
            return self.handle_bridge_packet(id, idx, connected, p, now);
        }
        if connected {
            if let Some(c) = self.conns.get(id) {
                super::packet_log::received(c.display_id(), &p);
            }
        }
        match p {
            Packet::Connect(c) if !connected => self.handle_connect(id, *c, now),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
            Packet::Connect(_) => self.protocol_violation(id, "second CONNECT"),
            // [MQTT-3.1.0-1] the first packet must be CONNECT.
            _ if !connected => self.protocol_violation(id, "first packet is not CONNECT"),
            Packet::Publish(p) => self.handle_publish(id, p, now),
            Packet::PubAck(a) => self.handle_puback(id, a.pid, now),
            Packet::PubRec(a) => self.handle_pubrec(id, a, now),
            Packet::PubRel(a) => self.handle_pubrel(id, a.pid),
            Packet::PubComp(a) => self.handle_pubcomp(id, a.pid, now),
            Packet::Subscribe(s) => self.handle_subscribe(id, s, now),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(id, u),
            Packet::PingReq => self.send(id, &Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(id, d),
            Packet::Auth(_) => self.protocol_violation(id, "AUTH without authentication method"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_violation(id, "server-to-client packet")
            }
        }
    }

    /// Packets on a bridge's outgoing connection, where the broker is the client.
    fn handle_bridge_packet(
        &mut self,
        id: usize,
        idx: usize,
        connected: bool,
        p: Packet,
        now: Instant,
    ) {
        match p {
            Packet::ConnAck(a) if !connected => {
                self.bridge_connack(id, idx, a, now);
                self.arm_sweep(id);
            }
            _ if !connected => self.protocol_violation(id, "bridge: expected CONNACK"),
            Packet::Publish(p) => self.handle_publish(id, p, now),
            Packet::PubAck(a) => self.handle_puback(id, a.pid, now),
            Packet::PubRec(a) => self.handle_pubrec(id, a, now),
            Packet::PubRel(a) => self.handle_pubrel(id, a.pid),
            Packet::PubComp(a) => self.handle_pubcomp(id, a.pid, now),
            Packet::SubAck(s) => {
                if s.codes.iter().any(|&c| c >= 0x80) {
                    info!(
                        "Bridge {}: the remote broker refused a subscription.",
                        self.display_of(id)
                    );
                }
            }
            Packet::UnsubAck(_) | Packet::PingResp => {}
            Packet::Disconnect(_) => self.mark_closing(id, Close::PeerClosed),
            _ => self.protocol_violation(id, "bridge: unexpected packet from the remote broker"),
        }
    }

    fn next_client_id(&mut self) -> String {
        // xorshift64*: ids only need to be unlikely to collide, not secret.
        let mut part = || {
            let mut x = self.id_rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.id_rng = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let (a, b) = (part(), part());
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
    fn send_refusal(&mut self, id: usize, code: u8) {
        self.send(
            id,
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: Properties::default(),
            }),
        );
    }

    fn handle_connect(&mut self, id: usize, c: Connect, now: Instant) {
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
        if c.will.as_ref().is_some_and(|w| topic::too_deep(&w.topic)) {
            info!(
                "Client {client_id} refused: will topic deeper than {} levels.",
                topic::MAX_LEVELS
            );
            return self.refuse(id, reason::TOPIC_NAME_INVALID, version);
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
            if !self.auth.allowed(&client_id, user, &w.topic, Access::Write) {
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
        if self.limits.max_keepalive != 0
            && (keep_alive > self.limits.max_keepalive || keep_alive == 0)
            && version.is_v5()
        {
            keep_alive = self.limits.max_keepalive;
            server_keep_alive = Some(keep_alive);
        }
        conn.keep_alive_secs = keep_alive;
        conn.username = match conn.tls_identity() {
            Some(identity) => identity.as_deref().map(Arc::from),
            None => c.username.as_deref().map(Arc::from),
        };
        if self.limits.use_username_as_clientid {
            // Mosquitto's use_username_as_clientid: the login names the session.
            match conn.username.clone() {
                Some(u) => {
                    conn.client_id = u;
                    assigned = false;
                }
                None => {
                    if self.limits.connection_messages {
                        info!("Client <unknown> disconnected, not authorised.");
                    }
                    return self.refuse(id, reason::NOT_AUTHORIZED, version);
                }
            }
        }
        conn.will = c.will.map(Box::new);
        if let Some(max) = c.properties.topic_alias_maximum.filter(|&m| m > 0) {
            conn.extra_mut().alias_out_max = max;
        }
        if let Some(max) = c.properties.maximum_packet_size {
            conn.extra_mut().max_packet_out = Some(max as usize);
        }
        let window = usize::from(c.properties.receive_maximum.unwrap_or(u16::MAX))
            .min(self.limits.max_inflight);
        conn.connected = true;
        let peer = conn.peer();
        let username = conn.username.clone();
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

        // Take over an existing session's connection. [MQTT-3.1.4-2]
        let mut session_present = false;
        if let Some(&sid) = self.by_client_id.get(&key) {
            if let Some(old) = self.sessions.get_mut(sid).and_then(Session::take_conn) {
                if self.limits.connection_messages {
                    info!("Client {key} already connected, closing old connection.");
                }
                if self.conns.get(old).is_some_and(|c| c.version.is_v5()) {
                    self.send_disconnect(old, reason::SESSION_TAKEN_OVER);
                }
                if let Some(oc) = self.conns.get_mut(old) {
                    oc.set_session(None);
                }
                self.mark_closing(old, Close::TakenOver);
            }
            if c.clean_start {
                self.remove_session(sid);
            } else {
                session_present = true;
            }
        }
        let sid = match self.by_client_id.get(&key) {
            Some(&sid) => sid,
            None => {
                let serial = self.serial();
                let sid = self
                    .sessions
                    .insert(Session::new(key.clone(), serial, expiry));
                self.by_client_id.insert(key.clone(), sid);
                sid
            }
        };
        if let Some(s) = self.sessions.get_mut(sid) {
            s.set_conn(Some(id));
            s.set_window(window);
            s.username = username.clone();
            s.no_echo = c.bridge;
            // The client is back in time: its delayed will is cancelled. [MQTT-3.1.3-9]
            s.pending_will = None;
            s.expiry = expiry;
        }
        if let Some(conn) = self.conns.get_mut(id) {
            conn.set_session(Some(sid));
        }
        self.touch(sid);
        self.stats.clients_total_connected += 1;
        self.stats.clients_maximum = self.stats.clients_maximum.max(self.connected_count());

        if self.limits.connection_messages {
            let user = c
                .username
                .as_ref()
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

        let mut props = Properties::default();
        if version.is_v5() {
            if assigned {
                props.assigned_client_identifier = Some(client_id);
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
        self.send(
            id,
            &Packet::ConnAck(ConnAck {
                session_present,
                code: reason::SUCCESS,
                properties: props,
            }),
        );
        self.arm_sweep(id);
        if session_present {
            self.resume_session(sid, now);
        }
    }

    /// The ACL decision for a session (connected or not).
    pub(super) fn session_may(&self, sid: usize, topic: &str, access: Access) -> bool {
        if self.auth.acl.is_none() {
            return true;
        }
        self.sessions.get(sid).is_some_and(|s| {
            self.auth
                .allowed(&s.client_id, s.username.as_deref(), topic, access)
        })
    }

    fn display_of(&self, id: usize) -> String {
        self.conns
            .get(id)
            .map(|c| c.display_id().to_owned())
            .unwrap_or_default()
    }

    fn connected_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.connected).count()
    }

    fn peer_of(&self, id: usize) -> String {
        self.conns
            .get(id)
            .map(|c| fmt_addr(&c.peer()))
            .unwrap_or_default()
    }

    fn handle_publish(&mut self, id: usize, p: Publish, now: Instant) {
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
        let mut p = p;
        if topic::too_deep(&p.topic) {
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
        if let Some(alias) = p.properties.topic_alias {
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
                    Some(t) => p.topic = t,
                    None => {
                        return self.protocol_violation(id, "topic alias not set up");
                    }
                }
            } else if let Some(e) = aliases.get_mut(slot) {
                *e = Some(p.topic.clone());
            }
        }
        if version.is_v5()
            && p.qos == QoS::ExactlyOnce
            && sid.and_then(|s| self.sessions.get(s)).is_some_and(|s| {
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
        if retain_refused && version.is_v5() {
            self.send_disconnect(id, reason::RETAIN_NOT_SUPPORTED);
            return self.mark_closing(id, Close::ProtocolError);
        }
        let (cid, user) = self
            .conns
            .get(id)
            .map(|c| (c.client_id.clone(), c.username.clone()))
            .unwrap_or_default();
        let remap = self.conns.get(id).and_then(|c| c.remap().cloned());
        let mut denied = false;
        if let Some(r) = remap {
            // From a bridge's remote side: rewrite into the local tree; the ACL is for clients.
            match r.incoming(&p.topic) {
                Some(t) => p.topic = Arc::from(t.as_str()),
                None => denied = true,
            }
        } else {
            denied = !self
                .auth
                .allowed(&cid, user.as_deref(), &p.topic, Access::Write);
        }
        if denied {
            debug!("Denied PUBLISH from {cid} to '{}' by the ACL.", p.topic);
        }
        // Clients may not write to the broker's own $SYS tree.
        let accepted = !too_big && !sys_write_forbidden(&p.topic) && !retain_refused && !denied;
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
        } else if denied {
            // 3.1.1 has no way to say no: the message is acknowledged and dropped.
            reason::NOT_AUTHORIZED
        } else {
            reason::SUCCESS
        };

        let duplicate_qos2 = p.qos == QoS::ExactlyOnce
            && sid
                .and_then(|s| self.sessions.get(s))
                .is_some_and(|s| s.flow().inbound_qos2.contains(p.pid));
        if accepted && !duplicate_qos2 {
            let expires = p
                .properties
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s)));
            let props = if p.properties.is_empty() {
                None
            } else {
                let mut props = p.properties.clone();
                props.topic_alias = None;
                props.subscription_identifiers.clear();
                Some(Box::new(props))
            };
            let msg = Rc::new(Message {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: p.qos,
                retain: p.retain,
                properties: props,
                expires,
            });
            if p.retain {
                self.retained.set(msg.clone());
                self.changes += 1;
            }
            if self.route(&msg, sid, now) == 0 {
                ack_reason = reason::NO_MATCHING_SUBSCRIBERS;
            }
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let mut ack = Ack::new(p.pid);
                if version.is_v5() {
                    ack.reason = ack_reason;
                }
                self.send(id, &Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                if let Some(s) = sid.and_then(|s| self.sessions.get_mut(s)) {
                    if !too_big && s.flow_mut().inbound_qos2.insert(p.pid) {
                        if let Some(sid) = sid {
                            self.touch(sid);
                        }
                    }
                }
                let mut ack = Ack::new(p.pid);
                if version.is_v5() {
                    ack.reason = ack_reason;
                }
                self.send(id, &Packet::PubRec(ack));
            }
        }
    }

    fn handle_pubrel(&mut self, id: usize, pid: u16) {
        let sid = self.conns.get(id).and_then(Conn::session);
        let known = sid
            .and_then(|s| self.sessions.get_mut(s))
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

    fn session_of(&self, id: usize) -> Option<usize> {
        self.conns.get(id).and_then(Conn::session)
    }

    fn handle_puback(&mut self, id: usize, pid: u16, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        match s.find_inflight(pid, OutState::AwaitAck) {
            Some(i) => {
                s.flow_mut().inflight.remove(i);
                self.touch(sid);
                self.fill_window(sid, now);
            }
            None => debug!(
                "Received PUBACK from {} for unknown mid {pid}.",
                s.client_id
            ),
        }
    }

    fn handle_pubrec(&mut self, id: usize, a: Ack, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(i) = s.find_inflight(a.pid, OutState::AwaitRec) else {
            // Already past PUBREC (a re-sent PUBREC): answer PUBREL again. [MQTT-4.3.3]
            if s.find_inflight(a.pid, OutState::AwaitComp).is_some() {
                self.send(id, &Packet::PubRel(Ack::new(a.pid)));
            }
            return;
        };
        if a.reason >= 0x80 {
            // 5.0: the receiver refused the message; the flow ends here. [MQTT-4.3.3-4]
            s.flow_mut().inflight.remove(i);
            self.fill_window(sid, now);
            return;
        }
        if let Some(f) = s.flow_mut().inflight.get_mut(i) {
            f.state = OutState::AwaitComp;
        }
        self.touch(sid);
        self.send(id, &Packet::PubRel(Ack::new(a.pid)));
    }

    fn handle_pubcomp(&mut self, id: usize, pid: u16, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(i) = s.find_inflight(pid, OutState::AwaitComp) {
            s.flow_mut().inflight.remove(i);
            self.touch(sid);
            self.fill_window(sid, now);
        }
    }

    fn handle_subscribe(&mut self, id: usize, sub: Subscribe, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let version = self.conns.get(id).map_or(Version::V311, |c| c.version);
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut found = Vec::new();
        let mut to_send: Vec<Pending> = Vec::new();
        for (filter, opts) in &sub.filters {
            let shared = match topic::parse_shared(filter) {
                Some(Ok(gf)) => Some(gf),
                Some(Err(())) => {
                    codes.push(reason::TOPIC_FILTER_INVALID);
                    continue;
                }
                None => None,
            };
            if topic::too_deep(filter) {
                codes.push(if version.is_v5() {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::V3_SUBACK_FAILURE
                });
                continue;
            }
            let plain = shared.map_or(filter.as_str(), |(_, f)| f);
            if !self.session_may(sid, plain, Access::Subscribe) {
                codes.push(if version.is_v5() {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::V3_SUBACK_FAILURE
                });
                continue;
            }
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let existed = match s.subscription(filter) {
                Some(i) => {
                    if let Some(e) = s.subs.get_mut(i) {
                        e.1 = *opts;
                        e.2 = sub_id.and_then(NonZeroU32::new);
                    }
                    true
                }
                None => {
                    s.add_sub(filter, *opts, sub_id);
                    false
                }
            };
            match shared {
                Some((group, f)) => self.shared_subscribe(group, f, sid, *opts, sub_id),
                None => {
                    self.subs.subscribe(
                        filter,
                        Subscriber {
                            session: sid,
                            opts: *opts,
                            id: sub_id,
                        },
                    );
                }
            }
            if let Some(c) = self.conns.get(id) {
                super::packet_log::filter(filter, Some(opts.qos.as_u8()));
                debug!(target: "subscribe", "{} {} {}", c.client_id, opts.qos.as_u8(), filter);
            }
            codes.push(opts.qos.as_u8());
            // [MQTT-3.3.1-9] retained messages on subscribe, per retain handling (5.0);
            // never for shared subscriptions. [MQTT-3.8.4-? shared]
            let send_retained = shared.is_none()
                && match opts.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
            if send_retained {
                found.clear();
                self.retained.matches(filter, &mut found);
                found.retain(|m| self.session_may(sid, &m.topic, Access::Read));
                to_send.extend(found.drain(..).map(|m| Pending {
                    qos: m.qos.min(opts.qos),
                    msg: m,
                    // Retained messages go out with the retain flag set. [MQTT-3.3.1-8]
                    retain: true,
                    sub_ids: sub_id.into_iter().collect(),
                    share: None,
                }));
            }
        }
        self.touch(sid);
        self.send(
            id,
            &Packet::SubAck(SubAck {
                pid: sub.pid,
                codes,
                properties: Properties::default(),
            }),
        );
        for d in to_send {
            if !d.msg.is_expired(now) {
                self.deliver(sid, d, now);
            }
        }
    }

    fn handle_unsubscribe(&mut self, id: usize, u: Unsubscribe) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let existed = match s.subscription(filter) {
                Some(i) => {
                    s.subs.swap_remove(i);
                    true
                }
                None => false,
            };
            match topic::parse_shared(filter) {
                Some(Ok((group, f))) => {
                    self.shared_unsubscribe(group, f, sid);
                }
                _ => {
                    self.subs.unsubscribe(filter, sid);
                }
            }
            if let Some(c) = self.conns.get(id) {
                super::packet_log::filter(filter, None);
                debug!(target: "unsubscribe", "{} {}", c.client_id, filter);
            }
            codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.touch(sid);
        self.send(
            id,
            &Packet::UnsubAck(UnsubAck {
                pid: u.pid,
                codes,
                properties: Properties::default(),
            }),
        );
    }

    fn handle_disconnect(&mut self, id: usize, d: Disconnect) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.version.is_v5() {
            if let (Some(sid), Some(e)) = (c.session(), d.properties.session_expiry_interval) {
                if let Some(s) = self.sessions.get_mut(sid) {
                    // [MQTT-3.14.2-2] a session that had expiry 0 may not be given one now.
                    if s.expiry == Expiry::OnDisconnect && e != 0 {
                        return self.protocol_violation(id, "session expiry set on DISCONNECT");
                    }
                    s.expiry = match e {
                        0 => Expiry::OnDisconnect,
                        u32::MAX => Expiry::Never,
                        n => Expiry::After(n),
                    };
                }
            }
        }
        if self.limits.connection_messages {
            if let Some(c) = self.conns.get(id) {
                info!("Client {} disconnected.", c.display_id());
            }
        }
        let why = if d.reason == reason::DISCONNECT_WITH_WILL {
            Close::DisconnectedWithWill
        } else {
            Close::Disconnected
        };
        self.mark_closing(id, why);
    }

    /// Publishes a message of the broker's own (`$SYS`, log lines) to subscribers.
    pub fn publish_internal(
        &mut self,
        topic: &str,
        payload: bytes::Bytes,
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

    fn publish_will(&mut self, will: Will, now: Instant) {
        let expires = will
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let mut props = will.properties;
        props.will_delay_interval = None;
        let msg = Rc::new(Message {
            topic: will.topic,
            payload: will.payload,
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
            self.retained.set(msg.clone());
            self.changes += 1;
        }
        self.route(&msg, None, now);
    }

    /// The connection of session `sid` is gone: keep the session or remove it.
    fn detach_session(&mut self, sid: usize, now: Instant) {
        if let Some(s) = self.sessions.get_mut(sid) {
            s.set_conn(None);
        }
        self.redistribute(sid, now);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.set_conn(None);
        let expiry = match (s.expiry, self.limits.persistent_client_expiration) {
            (Expiry::Never, Some(d)) => Some(d),
            (Expiry::Never, None) => None,
            (Expiry::After(n), _) => Some(Duration::from_secs(u64::from(n))),
            (Expiry::OnDisconnect, _) => Some(Duration::ZERO),
        };
        let serial = s.serial;
        match expiry {
            Some(d) if d.is_zero() => self.remove_session(sid),
            Some(d) => self.push_timer(
                now + d,
                Timer::SessionExpiry {
                    session: id32(sid),
                    serial,
                },
            ),
            None => {}
        }
        if let Some(p) = self.congested.iter().position(|(c, _)| *c == sid) {
            self.congested.swap_remove(p);
            self.resume_if_clear();
        }
    }

    pub(super) fn remove_session(&mut self, sid: usize) {
        self.touch(sid);
        let Some(s) = self.sessions.remove(sid) else {
            return;
        };
        for (filter, _, _) in &s.subs {
            match topic::parse_shared(filter) {
                Some(Ok((group, f))) => {
                    self.shared_unsubscribe(group, f, sid);
                }
                _ => {
                    self.subs.unsubscribe(filter, sid);
                }
            }
        }
        if self.by_client_id.get(&s.client_id) == Some(&sid) {
            self.by_client_id.remove(&s.client_id);
        }
        if let Some(p) = self.congested.iter().position(|(c, _)| *c == sid) {
            self.congested.swap_remove(p);
            self.resume_if_clear();
        }
    }
}

/// Clients may not write into the broker's `$SYS` tree, except for the bridge state topics
/// other brokers' bridges publish there (as Mosquitto allows).
fn sys_write_forbidden(topic: &str) -> bool {
    topic.starts_with("$SYS") && !topic::matches("$SYS/broker/connection/+/state", topic)
}

/// Formats a peer address the way Mosquitto logs it: `127.0.0.1:53211`, IPv4-mapped IPv6
/// addresses shown as IPv4.
pub fn fmt_addr(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{}:{}", v4, v6.port()),
            None => format!("{}:{}", v6.ip(), v6.port()),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}
