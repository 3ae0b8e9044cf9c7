//! The `$SYS` tree: Mosquitto's broker statistics topics, published retained every
//! `sys_interval` seconds, each only when its value changed.
//!
//! Part of [`Broker`]. The caller passes in the time and what only the event loop knows (the
//! process's resident memory, persistence counters).

use super::core::Broker;
use bytes::Bytes;
use std::collections::HashMap;
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
            let k = (-interval / (minutes * 60.0)).exp();
            *avg = *avg * k + per_minute * (1.0 - k);
        }
    }
}

#[derive(Default)]
pub struct SysState {
    /// Set by the first publication, which the event loop makes at start-up.
    started: Option<Instant>,
    last_run: Option<Instant>,
    published: HashMap<String, String>,
    loads: HashMap<&'static str, Load>,
}

/// Extra values from the event loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopFigures {
    pub heap_bytes: u64,
    pub persistence_writes: u64,
    pub persistence_bytes: u64,
}

impl Broker {
    /// Publishes every `$SYS` value that changed since the last call.
    pub fn publish_sys(&mut self, now: Instant, figures: LoopFigures) {
        let started = *self.sys.started.get_or_insert(now);
        let st = &self.stats;
        let connected = self.conns.iter().filter(|(_, c)| c.connected).count() as u64;
        let sessions = self.session_count() as u64;
        let disconnected = sessions.saturating_sub(connected);
        let (stored, stored_bytes) = self.stored();
        let mut values: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("rmqtt version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime".into(),
                format!("{} seconds", now.duration_since(started).as_secs()),
            ),
            ("clients/connected".into(), connected.to_string()),
            ("clients/active".into(), connected.to_string()),
            ("clients/disconnected".into(), disconnected.to_string()),
            ("clients/inactive".into(), disconnected.to_string()),
            ("clients/total".into(), sessions.to_string()),
            ("clients/maximum".into(), st.clients_maximum.to_string()),
            ("clients/expired".into(), st.clients_expired.to_string()),
            ("messages/received".into(), st.messages_received.to_string()),
            ("messages/sent".into(), st.messages_sent.to_string()),
            ("messages/stored".into(), stored.to_string()),
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
            (
                "retained messages/count".into(),
                self.retained_count().to_string(),
            ),
            (
                "subscriptions/count".into(),
                self.subscription_count().to_string(),
            ),
            ("store/messages/count".into(), stored.to_string()),
            ("store/messages/bytes".into(), stored_bytes.to_string()),
            ("heap/current".into(), figures.heap_bytes.to_string()),
            (
                "persistence/writes".into(),
                figures.persistence_writes.to_string(),
            ),
            (
                "persistence/bytes".into(),
                figures.persistence_bytes.to_string(),
            ),
        ];
        let interval = self
            .sys
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
        for (name, total) in totals {
            let load = self.sys.loads.entry(name).or_default();
            if self.sys.last_run.is_some() {
                load.update(total, interval);
            } else {
                load.last = total;
            }
            for (avg, span) in load.avg.iter().zip(["1min", "5min", "15min"]) {
                values.push((format!("load/{name}/{span}"), format!("{avg:.2}")));
            }
        }
        self.sys.last_run = Some(now);
        for (topic, value) in values {
            if self.sys.published.get(&topic) == Some(&value) {
                continue;
            }
            self.publish_internal(
                &format!("$SYS/broker/{topic}"),
                Bytes::from(value.clone().into_bytes()),
                true,
                now,
            );
            self.sys.published.insert(topic, value);
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
