//! SUBSCRIBE and UNSUBSCRIBE: the checks, the session table's update, SUBACK/UNSUBACK, and
//! the retained messages a new subscription brings.
//!
//! Part of [`Broker`]; no I/O, time passed in.

use super::core::{Broker, Limits};
use super::session::Pending;
use crate::auth::acl::Access;
use crate::protocol::{
    reason, topic, Packet, Properties, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};
use log::{debug, info};
use std::time::Instant;

impl Broker {
    pub(super) fn handle_subscribe(&mut self, id: usize, sub: Subscribe, now: Instant) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let version = self.conns.get(id).map_or(Version::V311, |c| c.version);
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut found = Vec::new();
        let mut to_send: Vec<Pending> = Vec::new();
        let mut refused = None;
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
            if let Some(cap) = self.over_budget(sid, filter, shared) {
                codes.push(if version.is_v5() {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::V3_SUBACK_FAILURE
                });
                refused = Some((refused.map_or(0, |r: (usize, _)| r.0) + 1, cap));
                continue;
            }
            let Some(existed) = self.table.subscribe(sid, filter, *opts, sub_id) else {
                return;
            };
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
                to_send.extend(found.drain(..).map(|m| {
                    let qos = m.qos.min(opts.qos);
                    // Retained messages go out with the retain flag set. [MQTT-3.3.1-8]
                    Pending::new(m, qos, true, sub_id.into_iter().collect(), None)
                }));
            }
        }
        if let Some((n, cap)) = refused {
            // One line per SUBSCRIBE, not per filter: a flood of filters is one line.
            info!(
                "Client {} from {}: {n} subscription(s) refused, {cap} reached.",
                self.display_of(id),
                self.peer_of(id)
            );
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

    /// Which cap of the resource budget a new subscription to `filter` would pass, if any:
    /// `max_subscriptions` for the session, `max_shared_groups` for a filter opening a new
    /// `$share` group. Updating a subscription the session holds is always allowed.
    fn over_budget(
        &self,
        sid: usize,
        filter: &str,
        shared: Option<(&str, &str)>,
    ) -> Option<String> {
        let s = self.table.get(sid)?;
        if s.subscription(filter).is_some() {
            return None;
        }
        let b = &self.limits.budget;
        if Limits::at_cap(s.subs().len(), u64::from(b.max_subscriptions)) {
            return Some(format!("max_subscriptions ({})", b.max_subscriptions));
        }
        let new_group = shared.is_some_and(|(g, f)| !self.table.has_shared_group(g, f));
        if new_group
            && Limits::at_cap(
                self.table.shared_group_count(),
                u64::from(b.max_shared_groups),
            )
        {
            return Some(format!("max_shared_groups ({})", b.max_shared_groups));
        }
        None
    }

    pub(super) fn handle_unsubscribe(&mut self, id: usize, u: Unsubscribe) {
        let Some(sid) = self.session_of(id) else {
            return;
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self.table.unsubscribe(sid, filter);
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
}
