//! A network connection's protocol state ([`Conn`]), why it closes ([`Close`]), and its life
//! in the broker: accepted or dialled, closed by the peer or the broker, and finished — the
//! one place where a will is published or held back and the session detached.
//!
//! Part of [`Broker`]; no sockets, time passed in. An idle connection costs what [`Conn`]
//! holds: its rarely used parts are boxed in [`ConnExtra`].

use super::core::Broker;
use super::session::Expiry;
use super::timers::{id32, Timer};
use crate::protocol::{reason, Disconnect, Version, Will};
use bytes::{Buf, BytesMut};
use log::info;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub(super) fn publishes_will(self) -> bool {
        !matches!(self, Close::Disconnected | Close::Refused | Close::Shutdown)
    }
}

/// What drained output buffers kept as spares may hold in all, and how many there may be,
/// while the loop is busy: as many as one pass has connections with output, up to these
/// bounds. A busy pass allocated them anyway; keeping them for the next pass saves an
/// allocation and a free of a buffer larger than the allocator's fast bins per connection
/// per pass (glibc consolidates its fast bins for every such request). An idle loop gives
/// them back down to [`SPARE_IDLE_MAX`] / [`SPARES_IDLE`] ([`trim_spares`]).
const SPARE_MAX: usize = 1024 * 1024;
const SPARES: usize = 1024;
/// What the spares may hold once the loop has been idle for a poll timeout.
const SPARE_IDLE_MAX: usize = 64 * 1024;
const SPARES_IDLE: usize = 16;
/// Capacity of an output buffer made new (no spare left) for a stream of publishes and
/// acknowledgements: a pass that has output for more connections than there are spares would
/// otherwise grow each from nothing, a reallocation per doubling, for a batch of a few
/// kilobytes. A CONNACK or SUBACK alone gets a buffer of its size.
const FRESH_OUT: usize = 2048;

thread_local! {
    /// Drained output buffers, kept for the next connections that have something to send,
    /// with their total capacity. Idle connections hold no output buffer, so without them a
    /// busy loop allocates a buffer and grows it from nothing (a reallocation per doubling)
    /// for every batch it writes. Per broker thread, at most [`SPARE_MAX`] bytes in all.
    /// Boxed as `Conn::out` holds them: a buffer moves between the two without a new box.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<(Vec<Box<BytesMut>>, usize)> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

fn take_spare() -> Box<BytesMut> {
    SPARE
        .with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let (list, total) = &mut *s;
            let b = list.pop()?;
            *total = total.saturating_sub(b.capacity());
            Some(b)
        })
        .unwrap_or_default()
}

fn give_spare(mut b: Box<BytesMut>) {
    b.clear();
    // An emptied buffer's capacity counts from where its reading stopped: reclaimed (moved
    // to the front) when the whole allocation is over the limit, so that it is seen and
    // dropped; a smaller one is reclaimed by its next write.
    let _ = b.try_reclaim(SPARE_IDLE_MAX + 1);
    SPARE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            let (list, total) = &mut *s;
            if list.len() < SPARES
                && b.capacity() <= SPARE_IDLE_MAX
                && *total + b.capacity() <= SPARE_MAX
            {
                *total += b.capacity();
                list.push(b);
            }
        }
    });
}

/// Whether the spare output buffers hold more than an idle loop keeps.
pub(super) fn spares_over_idle() -> bool {
    SPARE.with(|s| {
        s.try_borrow()
            .is_ok_and(|s| s.0.len() > SPARES_IDLE || s.1 > SPARE_IDLE_MAX)
    })
}

/// The loop was idle for a whole poll timeout: spares beyond the idle bounds are freed.
pub(super) fn trim_spares() {
    SPARE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            let (list, total) = &mut *s;
            while list.len() > SPARES_IDLE || *total > SPARE_IDLE_MAX {
                match list.pop() {
                    Some(b) => *total = total.saturating_sub(b.capacity()),
                    None => break,
                }
            }
            list.shrink_to(SPARES_IDLE);
        }
    });
}

/// [`Conn::session_ix`] of a connection without a session.
const NO_SESSION: u32 = u32::MAX;

/// Nanoseconds from `origin` to `at` (0 if `at` is earlier).
#[inline(always)]
pub(super) fn since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// Protocol state of one network connection.
pub struct Conn {
    /// Encoded packets waiting for the socket. Boxed and dropped when drained: an idle
    /// connection pays a pointer.
    #[allow(clippy::box_collection)]
    pub(super) out: Option<Box<BytesMut>>,
    /// The peer's address, 20 bytes where a `SocketAddr` takes 32; see [`Conn::peer`].
    pub(super) peer_ip: IpAddr,
    pub(super) peer_port: u16,
    /// The session's slab index (below 2^32) once CONNECT is accepted, [`NO_SESSION`] before;
    /// see [`Conn::session`]. Four bytes where an `Option<u32>` takes eight.
    session_ix: u32,
    pub client_id: Arc<str>,
    /// Shared with the session: one allocation, and cloned by reference count per PUBLISH.
    pub username: Option<Arc<str>>,
    /// When the last packet came, in nanoseconds after the broker's origin (see
    /// [`Conn::last_rx`]): eight bytes where an `Instant` takes sixteen.
    last_rx_ns: u64,
    /// Boxed: most connections have none, and a will is large.
    pub will: Option<Box<Will>>,
    /// What few connections use, boxed so that the common one pays a pointer (see
    /// [`ConnExtra`]): memory per idle connection is what a router's RAM limits.
    pub extra: Option<Box<ConnExtra>>,
    /// Keep alive in seconds (0: none), after `max_keepalive`.
    pub keep_alive_secs: u16,
    pub connected: bool,
    pub version: Version,
    pub close: Option<Close>,
    /// In the broker's dirty list (has new output to flush).
    pub(super) dirty: bool,
    /// Reading paused: a subscriber this connection publishes to is not keeping up.
    pub paused: bool,
    /// The listener's rules for its CONNECT: auth scope and anonymous access.
    pub login: Login,
}

/// What the listener a connection came in on decides about its login: the auth scope (7 bits,
/// see [`super::core::Auth`]) and whether it may log in without credentials. One byte, so
/// that a `Conn` stays 96 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Login(u8);

impl Login {
    const ANONYMOUS: u8 = 0x80;

    pub fn new(scope: u8, anonymous: bool) -> Login {
        Login((scope & !Self::ANONYMOUS) | if anonymous { Self::ANONYMOUS } else { 0 })
    }

    pub fn scope(self) -> u8 {
        self.0 & !Self::ANONYMOUS
    }

    pub fn anonymous(self) -> bool {
        self.0 & Self::ANONYMOUS != 0
    }
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
    /// The output buffer, made when something is to be sent (the spare one if there is one).
    pub fn out_mut(&mut self) -> &mut BytesMut {
        self.out.get_or_insert_with(take_spare)
    }

    /// The output buffer for publishes and acknowledgements: like [`Conn::out_mut`], with
    /// room for a batch of them when it is made new.
    pub fn out_batch(&mut self) -> &mut BytesMut {
        let b = self.out.get_or_insert_with(take_spare);
        if b.capacity() == 0 {
            b.reserve(FRESH_OUT);
        }
        b
    }

    /// Encoded bytes not yet written to the socket.
    #[inline(always)]
    pub fn out(&self) -> &[u8] {
        self.out.as_deref().map_or(&[], |b| &b[..])
    }

    /// `n` bytes were written; the buffer goes when nothing is left (to the spare).
    pub fn out_consumed(&mut self, n: usize) {
        if let Some(b) = self.out.as_deref_mut() {
            b.advance(n.min(b.len()));
            if b.is_empty() {
                if let Some(b) = self.out.take() {
                    give_spare(b);
                }
            }
        }
    }

    /// Drops what was not written (the connection failed).
    pub fn out_clear(&mut self) {
        if let Some(b) = self.out.take() {
            give_spare(b);
        }
    }

    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer_ip, self.peer_port)
    }

    /// The session, once CONNECT is accepted.
    pub fn session(&self) -> Option<usize> {
        (self.session_ix != NO_SESSION).then_some(self.session_ix as usize)
    }

    pub fn set_session(&mut self, session: Option<usize>) {
        self.session_ix = session
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(NO_SESSION);
    }

    /// When the last packet came; `origin` is the broker's ([`Broker::origin`]).
    pub(super) fn last_rx(&self, origin: Instant) -> Instant {
        origin
            .checked_add(Duration::from_nanos(self.last_rx_ns))
            .unwrap_or(origin)
    }

    /// A packet came at `at` (not before the last one: time only moves on).
    #[inline(always)]
    pub(super) fn saw_packet(&mut self, origin: Instant, at: Instant) {
        self.saw_packet_at(since(origin, at));
    }

    /// [`Conn::saw_packet`] with the time already counted from the origin ([`since`]):
    /// once per read, not per packet.
    #[inline(always)]
    pub(super) fn saw_packet_at(&mut self, ns: u64) {
        self.last_rx_ns = self.last_rx_ns.max(ns);
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
    pub(super) fn deadline(&self, origin: Instant, connect_timeout: Duration) -> Option<Instant> {
        if self.close.is_some() || self.paused {
            // Paused: the broker is not reading it, so its silence proves nothing.
            None
        } else if !self.connected {
            Some(self.last_rx(origin) + connect_timeout)
        } else if self.keep_alive_secs > 0 {
            let ka = self.keep_alive();
            Some(self.last_rx(origin) + ka + ka / 2)
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

impl Broker {
    /// A new network connection. Returns its id, which the event loop uses as its token.
    pub fn accept(
        &mut self,
        peer: SocketAddr,
        port: u16,
        anonymous_allowed: bool,
        now: Instant,
    ) -> usize {
        self.saw(now);
        if self.limits.connection_messages {
            info!("New connection from {} on port {}.", fmt_addr(&peer), port);
        }
        self.open_conn(peer, anonymous_allowed, now)
    }

    /// A connection's protocol state, for accepted and outgoing (bridge) connections alike.
    pub(super) fn open_conn(
        &mut self,
        peer: SocketAddr,
        anonymous_allowed: bool,
        now: Instant,
    ) -> usize {
        let origin = self.origin(now);
        let id = self.conns.insert(Conn {
            out: None,
            peer_ip: peer.ip(),
            peer_port: peer.port(),
            session_ix: NO_SESSION,
            connected: false,
            version: Version::V311,
            client_id: Arc::from(""),
            username: None,
            last_rx_ns: since(origin, now),
            will: None,
            extra: None,
            keep_alive_secs: 0,
            close: None,
            dirty: false,
            paused: false,
            login: Login::new(super::core::GLOBAL_SCOPE, anonymous_allowed),
        });
        self.arm_sweep(id);
        id
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
        let bridge = conn.bridge();
        // The session, and whether this connection still holds it: a takeover that resumed
        // it has attached the new connection already.
        let session = conn.session().map(|sid| {
            let attached = self.table.get(sid).is_some_and(|s| s.conn() == Some(id));
            (sid, attached)
        });
        let mut will = conn.will.filter(|_| why.publishes_will());
        let mut delayed = None;
        if let (Some(w), Some((sid, attached))) = (&will, session) {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            let keeps = self
                .table
                .get(sid)
                .is_some_and(|s| s.expiry != Expiry::OnDisconnect);
            if delay > 0 && !attached {
                // [MQTT-3.1.3-9] a new connection to the session came within the delay.
                will = None;
            } else if delay > 0 && keeps {
                // [MQTT-3.1.3-9] held back; cancelled if the client returns in time.
                delayed = will.take().map(|w| (sid, w, delay));
            }
        }
        // Detached first: a will the session itself subscribes to waits in it (if it is kept)
        // rather than going to the connection that is gone.
        if let Some((sid, true)) = session {
            self.detach_session(sid, now);
        }
        if let Some(w) = will {
            self.publish_will(*w, now);
        }
        if let Some((sid, w, delay)) = delayed {
            // The timer belongs to the epoch the detachment started.
            match self.table.get_mut(sid) {
                Some(s) => {
                    let epoch = s.epoch;
                    s.pending_will = Some(w);
                    self.push_timer(
                        now + Duration::from_secs(u64::from(delay)),
                        Timer::WillDelay {
                            session: id32(sid),
                            epoch,
                        },
                    );
                }
                None => self.publish_will(*w, now),
            }
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

    pub(super) fn handle_disconnect(&mut self, id: usize, d: Disconnect) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.version.is_v5() {
            if let (Some(sid), Some(e)) = (c.session(), d.properties.session_expiry_interval) {
                if let Some(s) = self.table.get_mut(sid) {
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
}
