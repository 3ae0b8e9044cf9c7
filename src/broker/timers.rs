//! Timers: what is due when, and the pass that runs it. A [`Timer`] names what it times and
//! which attachment of it (an epoch); the heap is only an index, compacted of stale entries.
//! Keep alives and connect timeouts need no timer each: one sweep over the connections finds
//! the expired ones and the next deadline. [STYLE 17] [STYLE 19c]
//!
//! Part of [`Broker`]; time is passed in, and no timer fires before its deadline.

use super::bridge::BridgeState;
use super::core::{fmt_addr, Broker, Close};
use super::sessions::SessionTable;
use crate::protocol::reason;
use log::info;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Something due at a deadline: what it times, and which attachment of it (an epoch that
/// changes on every attach and detach) [STYLE 19c]. A timer whose epoch is no longer the
/// owner's is stale: it is ignored when it comes due, and dropped when the heap is compacted.
/// Ids are slab indices and epochs (both below 2^32), so that an entry stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Time to reconnect a bridge.
    BridgeRestart {
        bridge: u32,
        epoch: u32,
    },
    /// Time for a bridge connection's PINGREQ.
    BridgePing {
        bridge: u32,
        epoch: u32,
    },
    /// Time to see whether a bridge's first address answers again (`round_robin false`).
    BridgePrimary {
        bridge: u32,
        epoch: u32,
    },
    /// Time to see whether a lazy bridge has been idle for `idle_timeout`.
    BridgeIdle {
        bridge: u32,
        epoch: u32,
    },
    SessionExpiry {
        session: u32,
        epoch: u32,
    },
    Stall {
        session: u32,
        epoch: u32,
    },
    /// A 5.0 will held back by its Will Delay Interval.
    WillDelay {
        session: u32,
        epoch: u32,
    },
}

/// Pending timers, earliest first. Only an index: whether a timer still counts is decided by
/// its owner's epoch, so stale entries are dropped when the heap has doubled since it was
/// last compacted (amortised O(1) per push): a client cycling connect and disconnect does
/// not grow it.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Length after which the next push compacts.
    compact_at: usize,
}

impl Timers {
    /// Queues `t`; `live` tells the stale entries from the rest when it is time to compact.
    pub(super) fn push(&mut self, at: Instant, t: Timer, live: impl Fn(&Timer) -> bool) {
        if self.heap.len() >= self.compact_at.max(64) {
            let old = std::mem::take(&mut self.heap).into_vec();
            self.heap = old.into_iter().filter(|Reverse((_, t))| live(t)).collect();
            self.compact_at = self.heap.len() * 2;
        }
        self.heap.push(Reverse((at, t)));
    }

    /// Entries queued, stale ones included until the next compaction.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
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

/// Whether timer `t` still belongs to its owner's current epoch.
pub(super) fn timer_live(sessions: &SessionTable, bridges: &[BridgeState], t: &Timer) -> bool {
    match *t {
        Timer::SessionExpiry { session, epoch }
        | Timer::Stall { session, epoch }
        | Timer::WillDelay { session, epoch } => sessions
            .get(session as usize)
            .is_some_and(|s| s.epoch == epoch),
        Timer::BridgeRestart { bridge, epoch }
        | Timer::BridgePing { bridge, epoch }
        | Timer::BridgePrimary { bridge, epoch }
        | Timer::BridgeIdle { bridge, epoch } => bridges
            .get(bridge as usize)
            .is_some_and(|b| b.epoch == epoch),
    }
}

/// A slab index or epoch as a timer holds it.
pub(super) fn id32(id: usize) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

impl Broker {
    /// Connection `id` has a new deadline (it opened, or its keep alive started): the sweep
    /// runs by then.
    pub(super) fn arm_sweep(&mut self, id: usize) {
        let origin = self.origin;
        let at = self
            .conns
            .get(id)
            .zip(origin)
            .and_then(|(c, o)| c.deadline(o, self.limits.connect_timeout));
        if let Some(at) = at {
            self.sweep_at = Some(self.sweep_at.map_or(at, |t| t.min(at)));
        }
    }

    /// Connect timeouts and keep alives [MQTT-3.1.2-24], checked by one pass over the
    /// connections instead of a timer each: a connection holds no timer state. Each pass
    /// finds the earliest deadline and the next pass runs then (at most one a second);
    /// traffic only moves deadlines later, so the pass is never late.
    pub(super) fn sweep(&mut self, now: Instant) {
        let connect_timeout = self.limits.connect_timeout;
        let origin = self.origin(now);
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, c) in self.conns.iter() {
            let Some(deadline) = c.deadline(origin, connect_timeout) else {
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
        self.saw(now);
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
        if self.retained.purge(now) > 0 {
            self.changes += 1;
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::SessionExpiry { session, epoch } => {
                    let session = session as usize;
                    let Some(s) = self.table.get(session) else {
                        continue;
                    };
                    if s.epoch == epoch && s.conn().is_none() {
                        if self.limits.connection_messages {
                            info!("Expiring client {} due to timeout.", s.client_id);
                        }
                        self.stats.clients_expired += 1;
                        self.end_session(session, now);
                    }
                }
                Timer::Stall { session, epoch } => {
                    let session = session as usize;
                    if self.table.get(session).is_some_and(|s| s.epoch == epoch) {
                        self.stall_expired(session, now);
                    }
                }
                Timer::BridgeRestart { bridge, epoch } => {
                    self.bridge_restart_due(bridge as usize, epoch)
                }
                Timer::BridgePing { bridge, epoch } => {
                    self.bridge_ping(bridge as usize, epoch, now)
                }
                Timer::BridgePrimary { bridge, epoch } => {
                    self.bridge_primary_due(bridge as usize, epoch)
                }
                Timer::BridgeIdle { bridge, epoch } => {
                    self.bridge_idle_due(bridge as usize, epoch, now)
                }
                Timer::WillDelay { session, epoch } => {
                    let session = session as usize;
                    let will = self
                        .table
                        .get_mut(session)
                        .filter(|s| s.epoch == epoch && s.conn().is_none())
                        .and_then(|s| s.pending_will.take());
                    if let Some(w) = will {
                        self.publish_will(*w, now);
                    }
                }
            }
        }
    }
}
