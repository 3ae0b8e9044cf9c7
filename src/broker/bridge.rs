//! Bridges: outgoing MQTT client connections to other brokers, run by the same event loop.
//!
//! Each bridge owns a local session subscribed to its `out` topics, so messages for the remote
//! side are queued (bounded by `max_queued_messages`, drops counted) and windowed exactly like
//! a persistent client's, and survive the remote being away. Once the remote answers CONNACK
//! that session is attached to the bridge connection: in-flight messages are re-sent with DUP,
//! the queue drains in order. The bridge subscribes remotely to its `in` topics; what the
//! remote sends is routed locally and never sent back over the same bridge.
//!
//! The broker decides when to connect; the event loop opens sockets
//! ([`Effect::Dial`]). Reconnects back off exponentially up to the cap.
//!
//! A reload ([`Broker::set_bridges`]) keeps unchanged bridges as they are, stops removed ones
//! and restarts changed ones. A stopped bridge stays in the list, marked, so that the indexes
//! connections and timers hold keep pointing at the right bridge.

use super::core::{id32, Broker, Close, Conn, Effect, Timer};
use super::session::{Expiry, Session};
use crate::config::{Bridge, BridgeTopic, Direction, StartType};
use crate::protocol::{
    ConnAck, Connect, Packet, Properties, Publish, QoS, SubOptions, Subscribe, Unsubscribe, Version,
};
use bytes::Bytes;
use log::{info, warn};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Topic rewriting of one bridge, shared with its connection.
#[derive(Debug)]
pub struct Remap {
    pub topics: Vec<BridgeTopic>,
    /// `bridge_outgoing_retain`: false clears the retain flag of what is sent.
    pub outgoing_retain: bool,
}

impl Remap {
    /// Local topic to remote topic, for messages going out.
    pub fn outgoing(&self, local: &str) -> Option<String> {
        self.topics
            .iter()
            .filter(|t| t.direction != Direction::In)
            .find(|t| crate::protocol::topic::matches(&t.local_filter(), local))
            .map(|t| {
                let rest = local.strip_prefix(t.local_prefix.as_str()).unwrap_or(local);
                format!("{}{rest}", t.remote_prefix)
            })
    }

    /// Remote topic to local topic, for messages coming in; `None` if no `in` rule covers it.
    pub fn incoming(&self, remote: &str) -> Option<String> {
        self.topics
            .iter()
            .filter(|t| t.direction != Direction::Out)
            .find(|t| crate::protocol::topic::matches(&t.remote_filter(), remote))
            .map(|t| {
                let rest = remote
                    .strip_prefix(t.remote_prefix.as_str())
                    .unwrap_or(remote);
                format!("{}{rest}", t.local_prefix)
            })
    }
}

pub struct BridgeState {
    pub cfg: Bridge,
    pub remap: Rc<Remap>,
    /// The local session holding what goes to the remote.
    pub session: usize,
    pub conn: Option<usize>,
    pub backoff: u32,
    next_address: usize,
    /// The address index the current (or last) connection was dialed to.
    current_address: usize,
    /// Whether a connect is already asked of the event loop or under way.
    pending: bool,
    started: bool,
    /// Removed by a reload: never connects again.
    stopped: bool,
    /// A restart timer is running: a lazy bridge waits for it instead of dialing as soon as
    /// the threshold is reached, so a remote that is down is not dialed once per message.
    waiting: bool,
    /// When a PUBLISH last crossed the connection, either way: a lazy bridge disconnects
    /// `idle_timeout` seconds after it.
    last_message: Instant,
    /// Renewed whenever the bridge's connection opens, connects or closes: its ping and
    /// restart timers carry it, so a chain from an earlier connection stops. [STYLE 19c]
    pub epoch: u32,
}

impl BridgeState {
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn notification_topic(&self) -> String {
        self.cfg
            .notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.cfg.name))
    }

    fn remote_client_id(&self) -> String {
        self.cfg
            .remote_clientid
            .clone()
            .unwrap_or_else(|| format!("rmqtt.{}", self.cfg.name))
    }
}

impl Broker {
    /// Sets up the configured bridges: their local sessions and subscriptions, and connects
    /// those that start automatically.
    pub fn add_bridges(&mut self, bridges: &[Bridge], now: Instant) {
        for cfg in bridges {
            if cfg.addresses.is_empty() {
                warn!("Bridge {} has no address; not started.", cfg.name);
                continue;
            }
            let remote_id = cfg
                .remote_clientid
                .clone()
                .unwrap_or_else(|| format!("rmqtt.{}", cfg.name));
            let local_id: Arc<str> = Arc::from(
                cfg.local_clientid
                    .clone()
                    .unwrap_or_else(|| format!("local.{remote_id}"))
                    .as_str(),
            );
            // A session restored from persistence keeps its queue.
            let epoch = self.serial();
            let sid = self.session_for(Session::new(local_id.clone(), epoch, Expiry::Never));
            // The configuration decides the subscriptions: those a restored session brought
            // leave the tree too, or a topic dropped from the configuration would still be
            // forwarded.
            self.table.unsubscribe_all(sid);
            if let Some(s) = self.table.get_mut(sid) {
                s.set_no_echo(true);
                s.set_window(self.limits.max_inflight);
            }
            for t in cfg.topics.iter().filter(|t| t.direction != Direction::In) {
                let filter = t.local_filter();
                // The retain flag crosses the bridge as published, as in Mosquitto
                // (`bridge_outgoing_retain false` clears it on the way out).
                let opts = SubOptions {
                    qos: QoS::from_u8(t.qos).unwrap_or_default(),
                    retain_as_published: true,
                    ..SubOptions::default()
                };
                self.table.subscribe(sid, &filter, opts, None);
            }
            let b = BridgeState {
                remap: Rc::new(Remap {
                    topics: cfg.topics.clone(),
                    outgoing_retain: cfg.outgoing_retain,
                }),
                cfg: cfg.clone(),
                session: sid,
                conn: None,
                backoff: cfg.restart_timeout.0.max(1),
                next_address: 0,
                current_address: 0,
                pending: false,
                started: false,
                stopped: false,
                waiting: false,
                last_message: now,
                epoch: self.serial(),
            };
            let notify = b.cfg.notifications.then(|| b.notification_topic());
            self.bridges.push(b);
            if let Some(t) = notify {
                self.publish_internal(&t, b"0"[..].into(), true, now);
            }
            let idx = self.bridges.len() - 1;
            if cfg.start_type != StartType::Lazy {
                self.request_bridge_connect(idx);
            }
        }
    }

    /// Applies a reloaded bridge list: bridges whose configuration is unchanged keep their
    /// connection and session; removed ones are stopped, changed ones stopped and started
    /// again, new ones started.
    pub fn set_bridges(&mut self, bridges: &[Bridge], now: Instant) {
        let running: Vec<usize> = (0..self.bridges.len())
            .filter(|&i| self.bridges.get(i).is_some_and(|b| !b.stopped))
            .collect();
        for idx in running {
            let keep = self
                .bridges
                .get(idx)
                .is_some_and(|b| bridges.contains(&b.cfg));
            if !keep {
                self.stop_bridge(idx, now);
            }
        }
        let added: Vec<Bridge> = bridges
            .iter()
            .filter(|c| !self.bridges.iter().any(|b| !b.stopped && b.cfg == **c))
            .cloned()
            .collect();
        for b in &added {
            info!("Starting bridge {}.", b.name);
        }
        self.add_bridges(&added, now);
    }

    /// Stops bridge `idx` for good: its connection is closed (as a network failure would,
    /// so the remote publishes the bridge's will), and its local session and the
    /// subscriptions that fed it are removed.
    fn stop_bridge(&mut self, idx: usize, now: Instant) {
        let Some(b) = self.bridges.get_mut(idx) else {
            return;
        };
        info!("Stopping bridge {}.", b.cfg.name);
        b.stopped = true;
        b.pending = false;
        let (conn, sid) = (b.conn.take(), b.session);
        let notify = b.cfg.notifications.then(|| b.notification_topic());
        if let Some(id) = conn {
            if let Some(c) = self.conns.get_mut(id) {
                // The session goes now; the closing connection must not find it (or a new
                // session in its slot) when it is finished.
                c.set_session(None);
                if let Some(e) = c.extra.as_mut() {
                    e.bridge = None;
                }
            }
            self.close_conn(id, Close::SocketError);
        }
        self.remove_session(sid);
        if let Some(t) = notify {
            self.publish_internal(&t, b"0"[..].into(), true, now);
        }
    }

    fn request_bridge_connect(&mut self, idx: usize) {
        if let Some(b) = self.bridges.get_mut(idx).filter(|b| !b.stopped) {
            if b.conn.is_none() && !b.pending {
                b.pending = true;
                self.push_effect(Effect::Dial(id32(idx)));
            }
        }
    }

    /// The address to try next for bridge `idx` (addresses are tried in turn).
    pub fn bridge_address(&mut self, idx: usize) -> Option<(String, u16)> {
        let b = self.bridges.get_mut(idx).filter(|b| !b.stopped)?;
        let n = b.cfg.addresses.len();
        b.current_address = b.next_address % n.max(1);
        let a = b.cfg.addresses.get(b.current_address).cloned();
        b.next_address = (b.current_address + 1) % n.max(1);
        a
    }

    /// The first address of bridge `idx`, which `round_robin false` goes back to.
    pub fn bridge_primary(&self, idx: usize) -> Option<(String, u16)> {
        let b = self.bridges.get(idx).filter(|b| !b.stopped)?;
        b.cfg.addresses.first().cloned()
    }

    /// Connected to another address than the first, with `round_robin false`: every five
    /// seconds the first one is tried, as in Mosquitto's `bridge_check` (`primary_retry`).
    fn watch_primary(&mut self, idx: usize, secs: u64, now: Instant) {
        let Some(b) = self.bridges.get(idx) else {
            return;
        };
        if b.cfg.round_robin || b.current_address == 0 || b.conn.is_none() {
            return;
        }
        let epoch = b.epoch;
        self.push_timer(
            now + Duration::from_secs(secs),
            Timer::BridgePrimary {
                bridge: id32(idx),
                epoch,
            },
        );
    }

    pub(super) fn bridge_primary_due(&mut self, idx: usize, epoch: u32) {
        if self
            .bridges
            .get(idx)
            .is_some_and(|b| b.epoch == epoch && b.conn.is_some() && !b.stopped)
        {
            self.push_effect(Effect::ProbePrimary(id32(idx)));
        }
    }

    /// The outcome of a probe of bridge `idx`'s first address: `None` while the connect is
    /// under way (looked at again in a second), `Some(true)` once it answered: the bridge
    /// drops its connection, and the restart that follows dials the first address.
    pub fn bridge_primary_probed(&mut self, idx: usize, up: Option<bool>, now: Instant) {
        match up {
            None => self.watch_primary(idx, 1, now),
            Some(false) => self.watch_primary(idx, 5, now),
            Some(true) => {
                let Some(b) = self.bridges.get_mut(idx).filter(|b| !b.stopped) else {
                    return;
                };
                let Some(id) = b.conn else {
                    return;
                };
                b.next_address = 0;
                info!(
                    "Bridge {}: the first address answers again; reconnecting to it.",
                    b.cfg.name
                );
                self.close_conn(id, Close::SocketError);
            }
        }
    }

    pub fn bridge_config(&self, idx: usize) -> Option<&Bridge> {
        self.bridges.get(idx).map(|b| &b.cfg)
    }

    /// The connection attempt could not even start (no such host, no route...).
    pub fn bridge_failed(&mut self, idx: usize, why: &str, now: Instant) {
        if let Some(b) = self.bridges.get(idx) {
            warn!("Bridge {}: connection failed: {why}.", b.cfg.name);
        }
        self.schedule_restart(idx, now);
    }

    fn schedule_restart(&mut self, idx: usize, now: Instant) {
        let epoch = self.serial();
        let below_threshold = self.lazy_below_threshold(idx);
        let Some(b) = self.bridges.get_mut(idx) else {
            return;
        };
        b.pending = false;
        b.waiting = false;
        b.epoch = epoch;
        if b.stopped || (b.cfg.start_type == StartType::Once && b.started) {
            return;
        }
        // As in Mosquitto (`lazy_reconnect`), a lazy bridge connects again only once
        // `threshold` messages are queued: `bridge_check_lazy` dials then.
        if below_threshold {
            return;
        }
        b.waiting = true;
        let wait = b.backoff;
        b.backoff = (b.backoff.saturating_mul(2)).min(b.cfg.restart_timeout.1.max(1));
        self.push_timer(
            now + Duration::from_secs(u64::from(wait)),
            Timer::BridgeRestart {
                bridge: id32(idx),
                epoch,
            },
        );
    }

    pub(super) fn bridge_restart_due(&mut self, idx: usize, epoch: u32) {
        if let Some(b) = self.bridges.get_mut(idx).filter(|b| b.epoch == epoch) {
            b.waiting = false;
            self.request_bridge_connect(idx);
        }
    }

    /// Whether bridge `idx` starts lazily and has fewer than `threshold` messages queued.
    fn lazy_below_threshold(&self, idx: usize) -> bool {
        let Some(b) = self
            .bridges
            .get(idx)
            .filter(|b| b.cfg.start_type == StartType::Lazy)
        else {
            return false;
        };
        let queued = self
            .table
            .get(b.session)
            .map_or(0, |s| s.flow().queue.len());
        queued < b.cfg.threshold as usize
    }

    /// A PUBLISH crossed bridge `idx`'s connection: it is not idle.
    pub(super) fn bridge_traffic(&mut self, idx: usize, now: Instant) {
        if let Some(b) = self.bridges.get_mut(idx) {
            b.last_message = b.last_message.max(now);
        }
    }

    /// A lazy bridge's idle check: with no PUBLISH either way for `idle_timeout` seconds the
    /// connection is closed (as Mosquitto does, without DISCONNECT, so the remote publishes
    /// the bridge's will), else the check moves to `idle_timeout` after the last one.
    ///
    /// Mosquitto 2.0 counts any packet sent as traffic, its own PINGREQs included, so that
    /// with `keepalive_interval` below `idle_timeout` its lazy bridges never time out;
    /// here only messages count, which is what the option describes.
    pub(super) fn bridge_idle_due(&mut self, idx: usize, epoch: u32, now: Instant) {
        let Some(b) = self
            .bridges
            .get(idx)
            .filter(|b| b.epoch == epoch && !b.stopped)
        else {
            return;
        };
        let Some(id) = b.conn else {
            return;
        };
        let at = b.last_message + Duration::from_secs(u64::from(b.cfg.idle_timeout));
        if now < at {
            self.push_timer(
                at,
                Timer::BridgeIdle {
                    bridge: id32(idx),
                    epoch,
                },
            );
            return;
        }
        info!(
            "Bridge connection {} has exceeded idle timeout, disconnecting.",
            b.cfg.name
        );
        self.close_conn(id, Close::SocketError);
    }

    /// The event loop opened a socket for bridge `idx` (connecting in the background):
    /// returns the connection id and queues the CONNECT.
    pub fn bridge_open(&mut self, idx: usize, peer: SocketAddr, now: Instant) -> Option<usize> {
        let b = self.bridges.get_mut(idx).filter(|b| !b.stopped)?;
        b.started = true;
        let cfg = b.cfg.clone();
        let remap = b.remap.clone();
        let client_id = b.remote_client_id();
        let notify = b.cfg.notifications.then(|| b.notification_topic());
        let version = match cfg.protocol_level {
            3 => Version::V31,
            5 => Version::V5,
            _ => Version::V311,
        };
        let id = self.open_conn(peer, true, now);
        let epoch = self.serial();
        if let Some(b) = self.bridges.get_mut(idx) {
            b.conn = Some(id);
            b.pending = false;
            b.epoch = epoch;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.version = version;
            let e = c.extra_mut();
            e.bridge = Some(idx);
            e.remap = Some(remap);
            c.keep_alive_secs = cfg.keepalive;
            c.client_id = Arc::from(client_id.as_str());
        }
        // notifications_local_only: the remote hears nothing of the state, not even the will.
        let will =
            notify
                .filter(|_| !cfg.notifications_local_only)
                .map(|t| crate::protocol::Will {
                    topic: Arc::from(t.as_str()),
                    payload: Bytes::from_static(b"0"),
                    qos: QoS::AtLeastOnce,
                    retain: cfg.outgoing_retain,
                    properties: Properties::default(),
                });
        let mut props = Properties::default();
        if version.is_v5() && !cfg.cleansession {
            props.session_expiry_interval = Some(u32::MAX);
        }
        if cfg.max_packet_size > 0 && version.is_v5() {
            props.maximum_packet_size = Some(cfg.max_packet_size);
        }
        let connect = Connect {
            version,
            bridge: cfg.try_private && !version.is_v5(),
            clean_start: cfg.cleansession,
            keep_alive: cfg.keepalive,
            client_id,
            will,
            username: cfg.remote_username.clone(),
            password: cfg
                .remote_password
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_bytes())),
            properties: props,
        };
        info!(
            "Connecting bridge {} ({}:{})",
            cfg.name,
            peer.ip(),
            peer.port()
        );
        self.send(id, &Packet::Connect(Box::new(connect)));
        Some(id)
    }

    /// CONNACK from the remote side of a bridge.
    pub(super) fn bridge_connack(&mut self, id: usize, idx: usize, a: ConnAck, now: Instant) {
        let Some(b) = self.bridges.get(idx) else {
            return;
        };
        let name = b.cfg.name.clone();
        let sid = b.session;
        if a.code != 0 {
            warn!(
                "Bridge {name}: connection refused by the remote broker (code {}).",
                a.code
            );
            return self.close_conn(id, Close::Refused);
        }
        info!("Bridge {name} connected.");
        let cfg = b.cfg.clone();
        let notify = cfg.notifications.then(|| b.notification_topic());
        if let Some(b) = self.bridges.get_mut(idx) {
            b.backoff = cfg.restart_timeout.0.max(1);
        }
        let v5 = self.conns.get(id).is_some_and(|c| c.version.is_v5());
        let ka = self.conns.get(id).map(Conn::keep_alive).unwrap_or_default();
        if let Some(c) = self.conns.get_mut(id) {
            c.connected = true;
            c.set_session(Some(sid));
        }
        let epoch = self.serial();
        self.table.attach(sid, id, epoch);
        let ping_epoch = self.serial();
        if let Some(b) = self.bridges.get_mut(idx) {
            b.epoch = ping_epoch;
        }
        // Subscribe on the remote side to what flows in. In 5.0, no-local keeps our own
        // messages from coming back; in 3.1.1 try_private asks the remote for the same.
        let filters: Vec<(String, SubOptions)> = cfg
            .topics
            .iter()
            .filter(|t| t.direction != Direction::Out)
            .map(|t| {
                (
                    t.remote_filter(),
                    SubOptions {
                        qos: QoS::from_u8(t.qos).unwrap_or_default(),
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: 0,
                    },
                )
            })
            .collect();
        if !filters.is_empty() {
            self.send(
                id,
                &Packet::Subscribe(Subscribe {
                    pid: 1,
                    filters,
                    properties: Properties::default(),
                }),
            );
        }
        // As Mosquitto does: an `out` rule's remote topic is unsubscribed, so a rule changed
        // from `in` to `out` stops what the remote session still had subscribed.
        let out: Vec<String> = cfg
            .topics
            .iter()
            .filter(|t| cfg.attempt_unsubscribe && t.direction == Direction::Out)
            .map(|t| t.remote_filter())
            .collect();
        if !out.is_empty() {
            self.send(
                id,
                &Packet::Unsubscribe(Unsubscribe {
                    pid: 2,
                    filters: out,
                    properties: Properties::default(),
                }),
            );
        }
        if let Some(t) = &notify {
            self.publish_internal(t, b"1"[..].into(), true, now);
        }
        if let Some(t) = notify.filter(|_| !cfg.notifications_local_only) {
            let p = Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: cfg.outgoing_retain,
                topic: Arc::from(t.as_str()),
                pid: 0,
                payload: Bytes::from_static(b"1"),
                properties: Properties::default(),
            };
            self.send(id, &Packet::Publish(p));
        }
        if !ka.is_zero() {
            self.push_timer(
                now + ka,
                Timer::BridgePing {
                    bridge: id32(idx),
                    epoch: ping_epoch,
                },
            );
        }
        if cfg.start_type == StartType::Lazy {
            self.bridge_traffic(idx, now);
            self.push_timer(
                now + Duration::from_secs(u64::from(cfg.idle_timeout)),
                Timer::BridgeIdle {
                    bridge: id32(idx),
                    epoch: ping_epoch,
                },
            );
        }
        self.watch_primary(idx, 5, now);
        self.resume_session(sid, now);
    }

    /// Keeps a bridge connection alive from the client side: one chain of pings per
    /// connection, since a timer from an earlier connection carries an older epoch.
    pub(super) fn bridge_ping(&mut self, idx: usize, epoch: u32, now: Instant) {
        let Some(b) = self.bridges.get(idx).filter(|b| b.epoch == epoch) else {
            return;
        };
        let Some(id) = b.conn else {
            return;
        };
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if c.close.is_some() || c.keep_alive_secs == 0 {
            return;
        }
        let ka = c.keep_alive();
        self.send(id, &Packet::PingReq);
        self.push_timer(
            now + ka,
            Timer::BridgePing {
                bridge: id32(idx),
                epoch,
            },
        );
    }

    /// A bridge connection is gone: the session keeps the queue; reconnect later.
    pub(super) fn bridge_closed(&mut self, idx: usize, now: Instant) {
        let Some(b) = self.bridges.get_mut(idx) else {
            return;
        };
        b.conn = None;
        let name = b.cfg.name.clone();
        let notify = b.cfg.notifications.then(|| b.notification_topic());
        info!("Bridge {name} disconnected.");
        if let Some(t) = notify {
            self.publish_internal(&t, b"0"[..].into(), true, now);
        }
        self.schedule_restart(idx, now);
    }

    /// Lazy bridges connect once enough is queued for them.
    pub(super) fn bridge_check_lazy(&mut self, sid: usize) {
        let Some(idx) = self
            .bridges
            .iter()
            .position(|b| b.session == sid && !b.stopped && b.cfg.start_type == StartType::Lazy)
        else {
            return;
        };
        let waiting = self.bridges.get(idx).is_some_and(|b| b.waiting);
        if !waiting && !self.lazy_below_threshold(idx) {
            self.request_bridge_connect(idx);
        }
    }
}
