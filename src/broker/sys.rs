//! The `$SYS` tree: Mosquitto's broker statistics topics, published retained every
//! `sys_interval` seconds, each only when its value changed.
//!
//! [`SysState::changed`] works on plain figures ([`Figures`]) and returns the topics and
//! values to publish, so it is tested without a broker; [`Broker::publish_sys`] gathers the
//! figures and publishes. The caller passes in the time and what only the event loop knows
//! (the process's resident memory, persistence counters).

use super::core::{Broker, Stats};
use crate::names::Names;
use std::time::Instant;

/// Exponentially damped per-minute rates, as Mosquitto's `load/...` topics.
#[derive(Default)]
struct Load {
    avg: [f64; 3],
    last: u64,
}

impl Load {
    fn update(&mut self, total: u64, interval: f64) {
        let delta = total.saturating_sub(self.last) as f64;
        self.last = total;
        let per_minute = if interval > 0.0 {
            delta * 60.0 / interval
        } else {
            0.0
        };
        for (avg, minutes) in self.avg.iter_mut().zip([1.0f64, 5.0, 15.0]) {
            let k = decay(interval / (minutes * 60.0));
            *avg = *avg * k + per_minute * (1.0 - k);
        }
    }
}

/// `e^-x` for `x ≥ 0` without the C maths library: `f64::exp` is the broker's only use of
/// `libm`, and linking it costs a shared library's pages in every process (about 320 KB of
/// resident memory on glibc). Halve `x` until it is below 1/256, sum the Taylor series to the
/// sixth power there, and square back; relative error under 1e-10 for any sys_interval.
fn decay(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x > 64.0 {
        return 0.0;
    }
    let mut y = x;
    let mut squarings = 0;
    while y > 1.0 / 256.0 {
        y /= 2.0;
        squarings += 1;
    }
    let t = -y;
    let mut r = 1.0
        + t * (1.0
            + t / 2.0 * (1.0 + t / 3.0 * (1.0 + t / 4.0 * (1.0 + t / 5.0 * (1.0 + t / 6.0)))));
    for _ in 0..squarings {
        r *= r;
    }
    r
}

#[derive(Default)]
pub struct SysState {
    /// Set by the first publication, which the event loop makes at start-up.
    started: Option<Instant>,
    last_run: Option<Instant>,
    published: Names<String>,
    /// One per entry of the `totals` table in [`SysState::values`], in its order.
    loads: [Load; 8],
}

/// Extra values from the event loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopFigures {
    pub heap_bytes: u64,
    pub persistence_writes: u64,
    pub persistence_bytes: u64,
}

/// What the `$SYS` values are made of: plain numbers, gathered by [`Broker::publish_sys`].
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub stats: Stats,
    pub connected: u64,
    pub sessions: u64,
    pub stored: u64,
    pub stored_bytes: u64,
    pub retained: u64,
    pub subscriptions: u64,
    pub from_loop: LoopFigures,
}

impl SysState {
    /// The `$SYS/broker/...` topics (without the prefix) whose value changed since the last
    /// call, with their new values; remembers them as published.
    pub fn changed(&mut self, f: &Figures, now: Instant) -> Vec<(String, String)> {
        let started = *self.started.get_or_insert(now);
        let st = &f.stats;
        let disconnected = f.sessions.saturating_sub(f.connected);
        let mut values: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("rmqtt version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime".into(),
                format!("{} seconds", now.duration_since(started).as_secs()),
            ),
            ("clients/connected".into(), f.connected.to_string()),
            ("clients/active".into(), f.connected.to_string()),
            ("clients/disconnected".into(), disconnected.to_string()),
            ("clients/inactive".into(), disconnected.to_string()),
            ("clients/total".into(), f.sessions.to_string()),
            ("clients/maximum".into(), st.clients_maximum.to_string()),
            ("clients/expired".into(), st.clients_expired.to_string()),
            ("messages/received".into(), st.messages_received.to_string()),
            ("messages/sent".into(), st.messages_sent.to_string()),
            ("messages/stored".into(), f.stored.to_string()),
            (
                "publish/messages/received".into(),
                st.publish_received.to_string(),
            ),
            ("publish/messages/sent".into(), st.publish_sent.to_string()),
            (
                "publish/messages/dropped".into(),
                st.publish_dropped.to_string(),
            ),
            ("bytes/received".into(), st.bytes_received.to_string()),
            ("bytes/sent".into(), st.bytes_sent.to_string()),
            ("retained messages/count".into(), f.retained.to_string()),
            ("subscriptions/count".into(), f.subscriptions.to_string()),
            ("store/messages/count".into(), f.stored.to_string()),
            ("store/messages/bytes".into(), f.stored_bytes.to_string()),
            ("heap/current".into(), f.from_loop.heap_bytes.to_string()),
            (
                "persistence/writes".into(),
                f.from_loop.persistence_writes.to_string(),
            ),
            (
                "persistence/bytes".into(),
                f.from_loop.persistence_bytes.to_string(),
            ),
        ];
        let interval = self
            .last_run
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let totals: [(&'static str, u64); 8] = [
            ("messages/received", st.messages_received),
            ("messages/sent", st.messages_sent),
            ("bytes/received", st.bytes_received),
            ("bytes/sent", st.bytes_sent),
            ("publish/received", st.publish_received),
            ("publish/sent", st.publish_sent),
            ("publish/dropped", st.publish_dropped),
            ("connections", st.clients_total_connected),
        ];
        for ((name, total), load) in totals.into_iter().zip(self.loads.iter_mut()) {
            if self.last_run.is_some() {
                load.update(total, interval);
            } else {
                load.last = total;
            }
            for (avg, span) in load.avg.iter().zip(["1min", "5min", "15min"]) {
                values.push((format!("load/{name}/{span}"), format!("{avg:.2}")));
            }
        }
        self.last_run = Some(now);
        values.retain(|(topic, value)| self.published.get(topic) != Some(value));
        for (topic, value) in &values {
            self.published.insert(topic, value.clone());
        }
        values
    }
}

impl Broker {
    /// Publishes every `$SYS` value that changed since the last call.
    pub fn publish_sys(&mut self, now: Instant, from_loop: LoopFigures) {
        let (stored, stored_bytes) = self.stored();
        let figures = Figures {
            stats: self.stats.clone(),
            connected: self.conns.iter().filter(|(_, c)| c.connected).count() as u64,
            sessions: self.session_count() as u64,
            stored,
            stored_bytes,
            retained: self.retained_count() as u64,
            subscriptions: self.subscription_count() as u64,
            from_loop,
        };
        for (topic, value) in self.sys.changed(&figures, now) {
            self.publish_internal(
                &format!("$SYS/broker/{topic}"),
                value.into_bytes().into(),
                true,
                now,
            );
        }
    }

    /// Messages held in sessions (queued and in flight) and retained, and their bytes.
    fn stored(&self) -> (u64, u64) {
        let mut n = self.retained_count() as u64;
        let mut bytes = 0u64;
        for s in self.sessions_iter() {
            let f = s.flow();
            n += (f.queue.len() + f.inflight.len()) as u64;
            bytes += f.queued_bytes as u64
                + f.inflight
                    .iter()
                    .map(|f| f.d.msg.size() as u64)
                    .sum::<u64>();
        }
        (n, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Plain figures in, changed values out: a value is published once until it changes.
    #[test]
    fn only_changed_values_come_out() {
        let mut st = SysState::default();
        let t0 = Instant::now();
        let mut f = Figures {
            connected: 2,
            sessions: 3,
            ..Figures::default()
        };
        let first = st.changed(&f, t0);
        let get = |v: &[(String, String)], k: &str| {
            v.iter().find(|(t, _)| t == k).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&first, "clients/disconnected").as_deref(), Some("1"));
        assert_eq!(get(&first, "uptime").as_deref(), Some("0 seconds"));
        f.connected = 3;
        let next = st.changed(&f, t0 + Duration::from_secs(10));
        assert_eq!(get(&next, "clients/connected").as_deref(), Some("3"));
        assert_eq!(get(&next, "clients/total"), None, "unchanged");
        assert_eq!(get(&next, "uptime").as_deref(), Some("10 seconds"));
    }

    /// The hand-written decay agrees with the C library's `exp` over the range sys_interval
    /// can give (1 s to a day, over 1, 5 and 15 minutes) and beyond.
    #[test]
    fn decay_agrees_with_exp() {
        assert_eq!(decay(0.0), 1.0);
        assert_eq!(decay(-1.0), 1.0);
        assert_eq!(decay(f64::NAN), 1.0);
        assert_eq!(decay(1e9), 0.0);
        let mut x: f64 = 1e-6;
        while x < 60.0 {
            let want = (-x).exp();
            let got = decay(x);
            assert!(
                ((got - want) / want).abs() < 1e-10,
                "x {x}: {got} vs {want}"
            );
            x *= 1.07;
        }
    }
}
