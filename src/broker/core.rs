//! The broker's state ([`Broker`]), the limits and counters it runs with, who may connect
//! ([`Auth`]), the decoding of input into packets and their dispatch, and the one [`Effect`]
//! queue to the event loop. Each concern has its own file: `conn` (a connection's state and
//! end), `connect` (CONNECT and takeover), `publish` (PUBLISH and acknowledgements),
//! `subscribe`, `sessions` (the session table and a session's life), `timers`, `delivery`
//! (routing and the in-flight window), `bridge`.
//!
//! No sockets and no clock: bytes come in through [`Broker::input`] with the time they arrived,
//! packets go out as bytes appended to each connection's `out` buffer, and everything the
//! event loop must do about it (write, close, resume reading, read again, dial a bridge) is
//! one [`Effect`] queue. The loop asks [`Broker::poll_delay`] how long it may sleep: zero
//! while that queue holds anything, else until the earliest deadline. This is what makes the
//! session and routing logic testable without a network. Malformed input closes only the
//! connection it came on.

pub use super::conn::{fmt_addr, Close, Conn, ConnExtra};
use super::message::Message;
pub(super) use super::publish::sys_write_forbidden;
use super::retain::RetainStore;
use super::session::{Expiry, Session};
use super::sessions::SessionTable;
use super::slab::Slab;
use super::subs::Subscriber;
pub(super) use super::timers::{id32, timer_live, Timer, Timers};
use crate::auth::acl::{Access, Acl};
use crate::auth::password::PasswordFile;
use crate::config::{Config, ConfigError, ResourceBudget};
use crate::protocol::{
    decode, decode_publish, kind, reason, short_ack, short_ack_bytes, Ack, Connect, DecodeError,
    Disconnect, Packet, Properties,
};
use log::{info, log_enabled, Level};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Limits and switches the router applies, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_packet: usize,
    pub message_size_limit: usize,
    pub max_inflight: usize,
    /// `max_inflight_bytes`; 0: unlimited.
    pub max_inflight_bytes: usize,
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
    /// `clientid_prefixes`: the prefix every client id must have.
    pub clientid_prefixes: Option<String>,
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
    /// `memory_limit`: heap bytes above which new PUBLISHes are refused; 0: none.
    pub memory_limit: usize,
    /// Every client-growable resource after login, with its cap (0: none); `out_limit` is
    /// its `max_output_bytes`.
    pub budget: ResourceBudget,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        let max_packet = if c.max_packet_size == 0 {
            268_435_460
        } else {
            c.max_packet_size as usize
        };
        let out_limit = match usize::try_from(c.budget.max_output_bytes) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(n) => n,
        };
        Limits {
            max_packet,
            message_size_limit: c.message_size_limit as usize,
            max_inflight: if c.max_inflight_messages == 0 {
                usize::from(u16::MAX)
            } else {
                usize::from(c.max_inflight_messages)
            },
            max_inflight_bytes: usize::try_from(c.max_inflight_bytes).unwrap_or(usize::MAX),
            max_queued: c.max_queued_messages as usize,
            max_queued_bytes: c.max_queued_bytes as usize,
            max_keepalive: c.max_keepalive,
            max_topic_alias: c.max_topic_alias,
            retain_available: c.retain_available,
            queue_qos0: c.queue_qos0_messages,
            allow_zero_length_clientid: c.allow_zero_length_clientid,
            auto_id_prefix: c.auto_id_prefix.clone(),
            clientid_prefixes: c.clientid_prefixes.clone(),
            use_username_as_clientid: c.use_username_as_clientid,
            persistent_client_expiration: c.persistent_client_expiration,
            connection_messages: c.connection_messages,
            connect_timeout: Duration::from_secs(u64::from(c.connect_timeout.max(1))),
            out_high_water: (256 * 1024).min(out_limit / 2).max(1),
            out_limit,
            stall_timeout: Duration::from_secs(2),
            memory_limit: usize::try_from(c.memory_limit).unwrap_or(usize::MAX),
            budget: c.budget,
        }
    }

    /// Whether session `s` may put one more QoS 1/2 message in flight: below its window
    /// (`max_inflight_messages`, or the client's Receive Maximum) and, as in Mosquitto's
    /// `db__ready_for_flight`, below `max_inflight_bytes` of payload in flight (so the
    /// message that crosses the limit still goes). The bytes are summed over the window
    /// (at most `max_inflight_messages` entries) rather than kept in a counter every removal
    /// would have to maintain.
    pub(super) fn window_open(&self, s: &Session) -> bool {
        let f = s.flow();
        f.inflight.len() < s.window()
            && (self.max_inflight_bytes == 0
                || f.inflight
                    .iter()
                    .map(|i| i.d.msg.payload.len())
                    .sum::<usize>()
                    < self.max_inflight_bytes)
    }

    /// Whether `n` things already held reach `cap` (0: no cap).
    pub(super) fn at_cap(n: usize, cap: u64) -> bool {
        cap != 0 && n as u64 >= cap
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

/// What the broker asks of the event loop. One queue for all of them [STYLE 19a]: the loop
/// never sleeps while it is non-empty, so nothing the broker decided waits for a timer.
/// Connection and bridge ids are slab indices (below 2^32, as in timers): an effect takes
/// 8 bytes, and a connection storm queues one or two per client per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The connection has new output: write it.
    Write(u32),
    /// The connection is closing: write what it can, drop the socket, call [`Broker::finish`].
    Close(u32),
    /// The connection's reading was paused and may go on. Its bytes may already be in the
    /// kernel, so with edge-triggered readiness no new event would come: read it.
    Resume(u32),
    /// The connection used its read budget for a pass with input left ([`Broker::read_again`]).
    Read(u32),
    /// Open a connection for this bridge.
    Dial(u32),
    /// Check whether this bridge's first address answers again (`round_robin false`).
    ProbePrimary(u32),
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
/// These are the global ones; with `per_listener_settings` a listener with its own file has
/// its own [`Scope`], chosen by the listener a connection arrived on.
#[derive(Default)]
pub struct Auth {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
    /// Scope `n` (from 1) is `listeners[n - 1]`; `None` for a listener that uses the global
    /// files. Indexed like `Config::listeners`.
    listeners: Vec<Option<Scope>>,
}

/// One listener's password file and ACL: its own, or the global one it has none of.
#[derive(Default)]
pub struct Scope {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
}

/// The scope of connections and sessions that use the global files.
pub const GLOBAL_SCOPE: u8 = 0;

/// Listeners with their own files beyond this many are refused: a scope is 7 bits in a
/// connection ([`super::conn::Login`]).
pub const MAX_SCOPES: usize = 127;

impl Auth {
    pub fn load(cfg: &Config) -> Result<Auth, ConfigError> {
        let mut listeners = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let own =
                cfg.per_listener_settings && (l.password_file.is_some() || l.acl_file.is_some());
            if own && i >= MAX_SCOPES {
                return Err(ConfigError {
                    file: cfg
                        .source
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    line: 0,
                    message: format!(
                        "per_listener_settings: at most {MAX_SCOPES} listeners may have their \
                         own password_file or acl_file"
                    ),
                });
            }
            listeners.push(if own {
                let pw = l.password_file.as_ref().or(cfg.password_file.as_ref());
                let acl = l.acl_file.as_ref().or(cfg.acl_file.as_ref());
                Some(Scope {
                    passwords: pw.map(PasswordFile::load).transpose()?,
                    acl: acl.map(Acl::load).transpose()?,
                })
            } else {
                None
            });
        }
        Ok(Auth {
            passwords: cfg
                .password_file
                .as_ref()
                .map(PasswordFile::load)
                .transpose()?,
            acl: cfg.acl_file.as_ref().map(Acl::load).transpose()?,
            listeners,
        })
    }

    /// The scope of `Config::listeners[i]`: its own files, or the global ones.
    pub fn scope_of_listener(&self, i: usize) -> u8 {
        match self.listeners.get(i) {
            Some(Some(_)) => u8::try_from(i + 1).unwrap_or(GLOBAL_SCOPE),
            _ => GLOBAL_SCOPE,
        }
    }

    /// The password file and ACL of `scope`; the global ones for an unknown scope.
    fn files(&self, scope: u8) -> (Option<&PasswordFile>, Option<&Acl>) {
        let own = usize::from(scope)
            .checked_sub(1)
            .and_then(|i| self.listeners.get(i))
            .and_then(Option::as_ref);
        match own {
            Some(s) => (s.passwords.as_ref(), s.acl.as_ref()),
            None => (self.passwords.as_ref(), self.acl.as_ref()),
        }
    }

    /// The ACL of `scope`, if it has one.
    pub fn acl_of(&self, scope: u8) -> Option<&Acl> {
        self.files(scope).1
    }

    /// Whether no scope has an ACL: every check is then a yes.
    pub fn no_acl(&self) -> bool {
        self.acl.is_none() && self.listeners.iter().flatten().all(|s| s.acl.is_none())
    }

    /// The CONNECT decision. Mosquitto's rules: no user name needs anonymous access; a user
    /// name is checked against the password file when there is one, and otherwise needs
    /// anonymous access too (nobody can prove who they are).
    pub(super) fn authenticate(&self, conn: &Conn, c: &Connect) -> Result<(), u8> {
        if let Some(identity) = conn.tls_identity() {
            // use_identity_as_username: the certificate is the credential.
            return identity.as_ref().map(|_| ()).ok_or(reason::NOT_AUTHORIZED);
        }
        match (&c.username, self.files(conn.login.scope()).0) {
            (Some(u), Some(pw)) => {
                let given = c.password.as_deref().unwrap_or_default();
                if pw.check(u, given) {
                    Ok(())
                } else {
                    Err(reason::NOT_AUTHORIZED)
                }
            }
            _ if conn.login.anonymous() => Ok(()),
            _ => Err(reason::NOT_AUTHORIZED),
        }
    }

    /// May `client_id`/`username` do `access` on `topic` under `scope`'s ACL? Always yes
    /// without an ACL file.
    pub fn allowed(
        &self,
        scope: u8,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        self.acl_of(scope)
            .is_none_or(|a| a.allowed(client_id, username, topic, access))
    }
}

pub struct Broker {
    pub limits: Limits,
    pub auth: Auth,
    /// Counts changes to what persistence saves; the store compares it with what it saved.
    pub changes: u64,
    /// Wall-clock time of the current pass, in milliseconds since the Unix epoch: read by
    /// the server at the edge ([`Broker::set_wall`]), never here. Stamps the time a session
    /// goes offline, for persistence.
    pub(super) wall_ms: u64,
    pub conns: Slab<Conn>,
    /// Sessions, the client-id index, the subscription tree and the shared groups: one owner.
    pub(super) table: SessionTable,
    pub(super) retained: RetainStore,
    /// The retained store's caps were reached and that was logged; cleared when a retained
    /// message is stored again.
    pub(super) retained_full: bool,
    pub(super) timers: Timers,
    /// When connect timeouts and keep alives are next checked ([`Broker::sweep`]); `None`
    /// while no connection has a deadline.
    pub(super) sweep_at: Option<Instant>,
    /// What the event loop is to do next; see [`Effect`].
    pub(super) effects: Vec<Effect>,
    /// The latest time the broker was given: when queued effects count as due.
    pub(super) last_now: Option<Instant>,
    /// The first time the broker was given: connections keep their times relative to it.
    pub(super) origin: Option<Instant>,
    /// Sessions whose queue or output is above the high-water mark, with since when.
    pub(super) congested: Vec<(usize, Instant)>,
    /// Connections paused on behalf of congested sessions.
    pub(super) paused: Vec<usize>,
    /// Connection whose input is being handled: the one to pause on congestion.
    pub(super) current: Option<usize>,
    pub(super) scratch: Vec<Subscriber>,
    /// The topic of the last PUBLISH a client had accepted, after every check a topic name
    /// gets (UTF-8, no U+0000, no wildcard, not too deep): the same name again is not checked
    /// again, and the message shares this one.
    pub(super) last_name: Option<std::sync::Arc<str>>,
    pub(super) bridges: Vec<super::bridge::BridgeState>,
    pub(super) next_serial: u32,
    pub(super) id_rng: u64,
    pub stats: Stats,
    pub(super) sys: super::sys::SysState,
    /// What changed since the journal's last pass; `None` without a journal.
    pub(super) jlog: Option<Box<super::journal::Changes>>,
    /// Spent messages, reused by the next ones received.
    pub(super) pool: super::message::Pool,
}

impl Broker {
    /// `seed` makes assigned client ids unpredictable; pass something from the clock and pid.
    pub fn new(limits: Limits, seed: u64) -> Broker {
        Broker {
            limits,
            auth: Auth::default(),
            changes: 0,
            wall_ms: 0,
            conns: Slab::default(),
            table: SessionTable::default(),
            retained: RetainStore::default(),
            retained_full: false,
            timers: Timers::default(),
            sweep_at: None,
            effects: Vec::new(),
            last_now: None,
            origin: None,
            congested: Vec::new(),
            paused: Vec::new(),
            current: None,
            scratch: Vec::new(),
            last_name: None,
            bridges: Vec::new(),
            next_serial: 1,
            id_rng: seed | 1,
            stats: Stats::default(),
            sys: super::sys::SysState::default(),
            jlog: None,
            pool: super::message::Pool::default(),
        }
    }

    pub(super) fn session_id(&self, client_id: &str) -> Option<usize> {
        self.table.id_of(client_id)
    }

    pub(super) fn close_conn(&mut self, id: usize, why: Close) {
        self.mark_closing(id, why);
    }

    /// A fresh epoch for a session or bridge. Wraps after 2^32; a stale timer could then
    /// only be confused with a live one holding the same slot and the same epoch.
    pub(super) fn serial(&mut self) -> u32 {
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        self.next_serial
    }

    /// The wall-clock time of this pass, in milliseconds since the Unix epoch.
    pub fn set_wall(&mut self, wall_ms: u64) {
        self.wall_ms = wall_ms;
    }

    /// Whether memory kept from a busy spell (spare output buffers, spent messages) is
    /// more than an idle broker keeps.
    pub(super) fn holds_busy_spares(&self) -> bool {
        super::conn::spares_over_idle() || self.pool.over_idle()
    }

    /// The loop is idle: spare output buffers and spent messages go back to what an idle
    /// broker keeps.
    pub(super) fn trim_busy_spares(&mut self) {
        super::conn::trim_spares();
        self.pool.trim();
    }

    /// Notes a change to a session that persistence would save.
    pub(super) fn touch(&mut self, sid: usize) {
        if self
            .table
            .get(sid)
            .is_some_and(|s| s.expiry != Expiry::OnDisconnect)
        {
            self.changes += 1;
        }
        if let Some(j) = &mut self.jlog {
            j.dirty.push(sid);
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
        self.table.iter().map(|(_, s)| s)
    }

    pub fn session_count(&self) -> usize {
        self.table.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.table.subscription_count()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.count()
    }

    /// Handles every complete packet at the front of `buf`; returns how many bytes were used.
    /// Stops early when the connection is closing or paused, leaving the rest for later.
    pub fn input(&mut self, id: usize, buf: &[u8], now: Instant) -> usize {
        self.saw(now);
        let origin = self.origin(now);
        let now_ns = super::conn::since(origin, now);
        let mut used = 0;
        self.current = Some(id);
        while let Some(conn) = self.conns.get_mut(id) {
            if conn.close.is_some() || conn.paused {
                break;
            }
            let rest = buf.get(used..).unwrap_or_default();
            if conn.connected && !log_enabled!(Level::Debug) {
                // The hot path (see `fast_packet`); the debug log wants every packet's line.
                match self.fast_packet(id, rest, now, now_ns) {
                    Ok(Some(n)) => {
                        used += n;
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.protocol_error(id, &e);
                        break;
                    }
                }
            }
            let Some(conn) = self.conns.get_mut(id) else {
                break;
            };
            match decode(rest, conn.version, self.limits.max_packet) {
                Ok(None) => break,
                Ok(Some((packet, n))) => {
                    used += n;
                    conn.saw_packet_at(now_ns);
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

    /// A connected client's PUBLISH or short acknowledgement at the front of `buf`, handled
    /// without building a [`Packet`]: what `handle_packet` (and `handle_bridge_packet`) would
    /// do with it, minus the moves of a several-hundred-byte value. `Ok(Some(n))`: `n` bytes
    /// were used; `Ok(None)`: not one of those (or not complete), `decode` takes it.
    fn fast_packet(
        &mut self,
        id: usize,
        buf: &[u8],
        now: Instant,
        now_ns: u64,
    ) -> Result<Option<usize>, DecodeError> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(None);
        };
        if let Some((kind, pid)) = short_ack(buf).filter(|_| self.limits.max_packet >= 4) {
            conn.saw_packet_at(now_ns);
            self.stats.messages_received += 1;
            match kind {
                kind::PUBACK => self.handle_puback(id, pid, now),
                kind::PUBREC => self.handle_pubrec(id, Ack::new(pid), now),
                kind::PUBREL => self.handle_pubrel(id, pid),
                _ => self.handle_pubcomp(id, pid, now),
            }
            return Ok(Some(4));
        }
        // Lent out for the packet (the view may borrow it) and put back unless a new name
        // took its place: no reference count goes up and down for it per message.
        let last = self.last_name.take();
        let got = match decode_publish(buf, conn.version, self.limits.max_packet, last.as_deref()) {
            Ok(Some((p, n))) => {
                conn.saw_packet_at(now_ns);
                self.stats.messages_received += 1;
                self.handle_publish(id, p, last.as_ref(), now);
                Ok(Some(n))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        if self.last_name.is_none() {
            self.last_name = last;
        }
        got
    }

    /// The TLS client certificate's identity, for `use_identity_as_username` listeners.
    pub fn set_tls_identity(&mut self, id: usize, identity: Option<String>) {
        if let Some(c) = self.conns.get_mut(id) {
            c.extra_mut().tls_identity = Some(identity);
        }
    }

    /// Output for `id` was written to the socket, as much as it took: lift congestion if it
    /// was the cause. What is left in `out` waits for writability.
    pub fn flushed(&mut self, id: usize, now: Instant) {
        self.saw(now);
        if let Some(sid) = self.conns.get(id).and_then(Conn::session) {
            self.check_congestion(sid, now);
        }
    }

    /// Connection `id` stopped reading with input left (its read budget for this pass was
    /// used): it is read again next pass, without waiting for an event that will not come.
    pub fn read_again(&mut self, id: usize) {
        if self.conns.get(id).is_some_and(|c| c.close.is_none()) {
            self.effects.push(Effect::Read(id32(id)));
        }
    }

    /// Moves everything queued for the event loop since the last call into `into` (emptied
    /// first), in the order it was queued; what handling these produces is queued for the
    /// next pass. The two buffers trade places, so a busy loop allocates nothing here (and a
    /// connection storm leaves no trail of grown and freed queues in the heap).
    pub fn take_effects(&mut self, into: &mut Vec<Effect>) {
        into.clear();
        std::mem::swap(&mut self.effects, into);
        self.written(into);
    }

    /// Moves the `Write`s and `Close`s queued since the last call into `into` (emptied
    /// first), leaving the rest queued in order.
    pub fn take_output(&mut self, into: &mut Vec<Effect>) {
        into.clear();
        self.effects.retain(|e| match *e {
            Effect::Write(_) | Effect::Close(_) => {
                into.push(*e);
                false
            }
            Effect::Resume(_) | Effect::Read(_) | Effect::Dial(_) | Effect::ProbePrimary(_) => true,
        });
        self.written(into);
    }

    /// The `Write`s among `taken` left the queue: new output queues them again.
    fn written(&mut self, taken: &[Effect]) {
        for e in taken {
            if let Effect::Write(id) = *e {
                if let Some(c) = self.conns.get_mut(id as usize) {
                    c.dirty = false;
                }
            }
        }
    }

    /// Whether the event loop has something to do before it may sleep.
    pub fn has_work(&self) -> bool {
        !self.effects.is_empty()
    }

    pub(super) fn push_effect(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// The origin of connections' times: the first time the broker was given.
    pub(super) fn origin(&mut self, now: Instant) -> Instant {
        *self.origin.get_or_insert(now)
    }

    /// Notes the time of a call, for [`Broker::next_deadline`].
    pub(super) fn saw(&mut self, now: Instant) {
        self.origin(now);
        if self.last_now.is_none_or(|t| t < now) {
            self.last_now = Some(now);
        }
    }

    /// The earliest instant anything is due; `None` when nothing is. While effects are queued
    /// that is already past: the latest time the broker was given.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = [
            self.timers.next(),
            self.sweep_at,
            self.retained.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min();
        match self.last_now {
            Some(t) if self.has_work() => Some(timers.map_or(t, |d| d.min(t))),
            _ => timers,
        }
    }

    /// How long the event loop may sleep at `now`: zero while effects are queued, else until
    /// the earliest deadline; `None`: until an event. [smoltcp `poll_delay`]
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        if self.has_work() {
            return Some(Duration::ZERO);
        }
        self.next_deadline()
            .map(|d| d.saturating_duration_since(now))
    }

    pub(super) fn mark_closing(&mut self, id: usize, why: Close) {
        if let Some(c) = self.conns.get_mut(id) {
            if c.close.is_none() {
                c.close = Some(why);
                self.effects.push(Effect::Close(id32(id)));
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.effects.push(Effect::Write(id32(id)));
            }
        }
    }

    /// Encodes `p` onto `id`'s output.
    pub fn send(&mut self, id: usize, p: &Packet) {
        if let Some(c) = self.conns.get_mut(id) {
            if c.connected {
                super::packet_log::sending(c.display_id(), p);
            } else {
                super::packet_log::sending(&c.peer().ip().to_string(), p);
            }
            p.encode(c.version, c.out_mut());
            self.stats.messages_sent += 1;
            self.mark_dirty(id);
        }
    }

    /// Queues a 3.1/3.1.1 PUBACK, PUBREC, PUBREL or PUBCOMP (`kind::PUBACK`...) of `pid`:
    /// what `send` queues for `Ack::new(pid)` in one, without building the packet.
    pub(super) fn send_short_ack(&mut self, id: usize, k: u8, pid: u16) {
        if log_enabled!(Level::Debug) {
            // The packet log's line.
            let ack = Ack::new(pid);
            let p = match k {
                kind::PUBACK => Packet::PubAck(ack),
                kind::PUBREC => Packet::PubRec(ack),
                kind::PUBREL => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            };
            return self.send(id, &p);
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.out_batch().extend_from_slice(&short_ack_bytes(k, pid));
            self.stats.messages_sent += 1;
            self.mark_dirty(id);
        }
    }

    pub(super) fn send_disconnect(&mut self, id: usize, code: u8) {
        self.send(
            id,
            &Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            }),
        );
    }

    /// One function maps every decode error to the protocol's answer. [MQTT-4.8.0-1]
    pub(super) fn protocol_error(&mut self, id: usize, e: &DecodeError) {
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

    pub(super) fn protocol_violation(&mut self, id: usize, what: &'static str) {
        self.protocol_error(id, &DecodeError::Protocol(what));
    }

    pub(super) fn handle_packet(&mut self, id: usize, p: Packet, now: Instant) {
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
            Packet::Publish(p) => self.handle_publish(id, p.view(), None, now),
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
    pub(super) fn handle_bridge_packet(
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
            Packet::Publish(p) => self.handle_publish(id, p.view(), None, now),
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

    /// After a reload: each session takes the new auth scope of the listener it last used
    /// (`moved`: old, new); one whose listener is gone falls back to the global files.
    pub(super) fn rescope(&mut self, moved: &[(u8, u8)]) {
        for sid in self.table.ids() {
            if let Some(s) = self.table.get_mut(sid).filter(|s| s.scope != GLOBAL_SCOPE) {
                s.scope = moved
                    .iter()
                    .find(|(old, _)| *old == s.scope)
                    .map_or(GLOBAL_SCOPE, |&(_, new)| new);
            }
        }
    }

    /// The ACL decision for a session (connected or not).
    pub(super) fn session_may(&self, sid: usize, topic: &str, access: Access) -> bool {
        if self.auth.no_acl() {
            return true;
        }
        // The local side of one of this broker's bridges: the ACL does not apply to it, as
        // in Mosquitto (`mosquitto_acl_check_default` returns success for a bridge context).
        if self
            .bridges
            .iter()
            .any(|b| b.session == sid && !b.is_stopped())
        {
            return true;
        }
        self.table.get(sid).is_some_and(|s| {
            self.auth
                .allowed(s.scope, &s.client_id, s.username.as_deref(), topic, access)
        })
    }

    pub(super) fn display_of(&self, id: usize) -> String {
        self.conns
            .get(id)
            .map(|c| c.display_id().to_owned())
            .unwrap_or_default()
    }

    pub(super) fn connected_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.connected).count()
    }

    pub(super) fn peer_of(&self, id: usize) -> String {
        self.conns
            .get(id)
            .map(|c| fmt_addr(&c.peer()))
            .unwrap_or_default()
    }

    #[inline(always)]
    pub(super) fn session_of(&self, id: usize) -> Option<usize> {
        self.conns.get(id).and_then(Conn::session)
    }
}
