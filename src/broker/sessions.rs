//! The session table: the one owner of the indexes that must agree [STYLE 19b]. Sessions,
//! the client-id index, the subscription tree and the shared subscription groups change only
//! through its methods (insert, attach, detach, subscribe, unsubscribe, remove), so a session
//! is in the index exactly while it exists, and in the tree and its groups exactly for the
//! filters it lists.
//!
//! The broker's side of a session's life is here too: restored from a snapshot, detached when
//! its connection finishes (kept with an expiry timer, or ended), ended with its held-back
//! will.
//!
//! Attach and detach take the epoch the caller drew for the new attachment; timers carry it
//! (see `core::Timer`), so a timer of an earlier attachment is recognised as stale.
//! No I/O, no clock; never panics.

use super::core::Broker;
use super::session::{Expiry, Session};
use super::slab::Slab;
use super::subs::{SubTree, Subscriber};
use super::timers::{id32, Timer};
use crate::protocol::{topic, SubOptions};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A member picked for a message: (session, options, subscription identifier).
pub type Member = (usize, SubOptions, Option<u32>);

#[derive(Default)]
pub struct SessionTable {
    sessions: Slab<Session>,
    by_client_id: HashMap<Arc<str>, usize>,
    tree: SubTree,
    /// The shared groups, by slot; `shared_by_key` finds one by `group/filter`, and
    /// `shared_tree` holds each group's filter with the slot in place of a session, so a
    /// publish finds the groups it matches by walking the tree, not by testing every group.
    shared: Slab<SharedGroup>,
    shared_by_key: HashMap<Rc<str>, usize>,
    shared_tree: SubTree,
    /// Sessions with a connection; the rest of `len` are offline.
    attached: usize,
    /// The topic routed last and the subscriptions it matched in `tree`, until the tree
    /// changes (`index` and `unindex` forget it): publishers repeat their topics, and a
    /// repeated one costs neither a walk of the tree nor an allocation of its name.
    last: Option<(Arc<str>, Vec<Subscriber>)>,
}

/// Matches kept for the last topic at most; a topic with more is walked every time.
const LAST_MAX: usize = 64;

impl SessionTable {
    /// Inlined, as [`Slab::get`] is: several look-ups per message (see slab.rs).
    #[inline(always)]
    pub fn get(&self, sid: usize) -> Option<&Session> {
        self.sessions.get(sid)
    }

    /// The session's own state (its flow, window, will...). Its subscriptions, connection and
    /// epoch change only through the table's methods.
    #[inline(always)]
    pub fn get_mut(&mut self, sid: usize) -> Option<&mut Session> {
        self.sessions.get_mut(sid)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.sessions.iter()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions without a connection.
    pub fn offline(&self) -> usize {
        self.sessions.len().saturating_sub(self.attached)
    }

    /// The offline session that left longest ago: the lowest epoch, since epochs are drawn
    /// in order on every attach and detach. O(sessions); only called at a cap.
    pub fn oldest_offline(&self) -> Option<usize> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.conn().is_none())
            .min_by_key(|(_, s)| s.epoch)
            .map(|(sid, _)| sid)
    }

    pub fn ids(&self) -> Vec<usize> {
        self.sessions.ids()
    }

    pub fn id_of(&self, client_id: &str) -> Option<usize> {
        self.by_client_id.get(client_id).copied()
    }

    /// Adds a session under its client id, with the subscriptions it lists (a restored one
    /// brings some). `None` if the id is taken.
    pub fn insert(&mut self, s: Session) -> Option<usize> {
        if self.by_client_id.contains_key(&s.client_id) {
            return None;
        }
        let key = s.client_id.clone();
        let subs: Vec<_> = s.subs().to_vec();
        let sid = self.sessions.insert(s);
        self.by_client_id.insert(key, sid);
        for (filter, opts, id) in subs {
            self.index(sid, &filter, opts, id.map(NonZeroU32::get));
        }
        Some(sid)
    }

    /// Removes a session and every trace of it in the index, the tree and the groups.
    pub fn remove(&mut self, sid: usize) -> Option<Session> {
        self.unsubscribe_all(sid);
        let s = self.sessions.remove(sid)?;
        if s.conn().is_some() {
            self.attached = self.attached.saturating_sub(1);
        }
        if self.by_client_id.get(&s.client_id) == Some(&sid) {
            self.by_client_id.remove(&s.client_id);
        }
        Some(s)
    }

    /// Connection `conn` now holds the session, in attachment `epoch`.
    pub fn attach(&mut self, sid: usize, conn: usize, epoch: u32) {
        if let Some(s) = self.sessions.get_mut(sid) {
            if s.conn().is_none() {
                self.attached += 1;
            }
            s.set_conn(Some(conn));
            s.epoch = epoch;
        }
    }

    /// The session has no connection from now on, in the detached `epoch`; returns the
    /// connection it had.
    pub fn detach(&mut self, sid: usize, epoch: u32) -> Option<usize> {
        let s = self.sessions.get_mut(sid)?;
        s.epoch = epoch;
        let conn = s.take_conn();
        if conn.is_some() {
            self.attached = self.attached.saturating_sub(1);
        }
        conn
    }

    /// Adds or updates a subscription; `Some(existed)`, or `None` without such a session.
    pub fn subscribe(
        &mut self,
        sid: usize,
        filter: &str,
        opts: SubOptions,
        id: Option<u32>,
    ) -> Option<bool> {
        let s = self.sessions.get_mut(sid)?;
        let existed = s.set_sub(filter, opts, id);
        self.index(sid, filter, opts, id);
        Some(existed)
    }

    /// Removes a subscription; whether it existed.
    pub fn unsubscribe(&mut self, sid: usize, filter: &str) -> bool {
        let existed = self
            .sessions
            .get_mut(sid)
            .is_some_and(|s| s.remove_sub(filter));
        self.unindex(sid, filter);
        existed
    }

    /// Removes every subscription of the session.
    pub fn unsubscribe_all(&mut self, sid: usize) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        for (filter, _, _) in s.take_subs() {
            self.unindex(sid, &filter);
        }
    }

    /// Subscriptions in the tree (shared groups not counted).
    pub fn subscription_count(&self) -> usize {
        self.tree.count()
    }

    /// Every non-shared subscription matching `topic`, appended to `out`.
    pub fn matches(&mut self, topic: &Arc<str>, out: &mut Vec<Subscriber>) {
        if let Some((t, subs)) = &self.last {
            if Arc::ptr_eq(t, topic) || **t == **topic {
                out.extend_from_slice(subs);
                return;
            }
        }
        let start = out.len();
        self.tree.matches(topic, out);
        let found = out.get(start..).unwrap_or_default();
        if found.len() > LAST_MAX {
            self.last = None;
            return;
        }
        let (t, subs) = self.last.get_or_insert_with(|| (topic.clone(), Vec::new()));
        t.clone_from(topic);
        subs.clear();
        subs.extend_from_slice(found);
    }

    /// `topic` as a shared name: the last routed topic's when it is the same, else a new one.
    pub fn topic_name(&self, topic: &str) -> Arc<str> {
        match &self.last {
            Some((t, _)) if **t == *topic => t.clone(),
            _ => Arc::from(topic),
        }
    }

    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// How many shared groups exist.
    pub fn shared_group_count(&self) -> usize {
        self.shared.len()
    }

    /// Whether the `$share/{group}/{filter}` group exists.
    pub fn has_shared_group(&self, group: &str, filter: &str) -> bool {
        self.shared_by_key
            .contains_key(format!("{group}/{filter}").as_str())
    }

    /// For each shared group whose filter matches `topic` (only the group `only`, if given),
    /// the next member in round-robin order that `may` have it, connected members first.
    pub fn pick_shared(
        &mut self,
        topic: &str,
        only: Option<&Rc<str>>,
        exclude: Option<usize>,
        may: &dyn Fn(&Session) -> bool,
    ) -> Vec<(Member, Rc<str>)> {
        let mut slots = Vec::new();
        match only {
            Some(k) => slots.extend(self.shared_by_key.get(k).copied()),
            None => {
                let mut found = Vec::new();
                self.shared_tree.matches(topic, &mut found);
                slots.extend(found.iter().map(|s| s.session));
            }
        }
        let mut picks = Vec::new();
        for slot in slots {
            let Some(g) = self.shared.get_mut(slot) else {
                continue;
            };
            if only.is_some() && !topic::matches(&g.filter, topic) {
                continue;
            }
            if let Some(m) = pick_member(g, &self.sessions, exclude, may) {
                picks.push((m, g.key.clone()));
            }
        }
        picks
    }

    fn index(&mut self, sid: usize, filter: &str, opts: SubOptions, id: Option<u32>) {
        self.last = None;
        match topic::parse_shared(filter) {
            Some(Ok((group, f))) => self.shared_subscribe(group, f, sid, opts, id),
            Some(Err(())) => {}
            None => {
                self.tree.subscribe(
                    filter,
                    Subscriber {
                        session: sid,
                        opts,
                        id,
                    },
                );
            }
        }
    }

    fn unindex(&mut self, sid: usize, filter: &str) {
        self.last = None;
        match topic::parse_shared(filter) {
            Some(Ok((group, f))) => self.shared_unsubscribe(group, f, sid),
            Some(Err(())) => {}
            None => {
                self.tree.unsubscribe(filter, sid);
            }
        }
    }

    /// Adds `sid` to the shared group of `$share/{group}/{filter}` (or updates its options).
    fn shared_subscribe(
        &mut self,
        group: &str,
        filter: &str,
        sid: usize,
        opts: SubOptions,
        id: Option<u32>,
    ) {
        let key: Rc<str> = Rc::from(format!("{group}/{filter}"));
        let slot = match self.shared_by_key.get(&key) {
            Some(&slot) => slot,
            None => {
                let slot = self.shared.insert(SharedGroup {
                    key: key.clone(),
                    filter: Box::from(filter),
                    members: Vec::new(),
                    next: 0,
                });
                self.shared_by_key.insert(key, slot);
                self.shared_tree.subscribe(
                    filter,
                    Subscriber {
                        session: slot,
                        opts: SubOptions::default(),
                        id: None,
                    },
                );
                slot
            }
        };
        let Some(g) = self.shared.get_mut(slot) else {
            return;
        };
        match g.members.iter_mut().find(|m| m.0 == sid) {
            Some(m) => *m = (sid, opts, id),
            None => g.members.push((sid, opts, id)),
        }
    }

    fn shared_unsubscribe(&mut self, group: &str, filter: &str, sid: usize) {
        let key = format!("{group}/{filter}");
        let Some(&slot) = self.shared_by_key.get(key.as_str()) else {
            return;
        };
        let Some(g) = self.shared.get_mut(slot) else {
            return;
        };
        g.members.retain(|m| m.0 != sid);
        if g.members.is_empty() {
            self.shared.remove(slot);
            self.shared_by_key.remove(key.as_str());
            self.shared_tree.unsubscribe(filter, slot);
        }
    }
}

/// The next member of `g` in round-robin order that `may` have the message, preferring
/// connected sessions and never `exclude`.
fn pick_member(
    g: &mut SharedGroup,
    sessions: &Slab<Session>,
    exclude: Option<usize>,
    may: &dyn Fn(&Session) -> bool,
) -> Option<Member> {
    let n = g.members.len();
    if n == 0 {
        return None;
    }
    let mut fallback = None;
    for k in 0..n {
        let i = (g.next + k) % n;
        let Some(&m) = g.members.get(i) else {
            continue;
        };
        let Some(s) = sessions.get(m.0) else {
            continue;
        };
        if Some(m.0) == exclude || !may(s) {
            continue;
        }
        if s.conn().is_some() {
            g.next = (i + 1) % n;
            return Some(m);
        }
        if fallback.is_none() {
            fallback = Some((i, m));
        }
    }
    let (i, m) = fallback?;
    g.next = (i + 1) % n;
    Some(m)
}

/// What is left of an offline session's expiry `after` (`None`: never expires) when it went
/// offline at wall-clock `offline_at` and it is `wall` now (both in milliseconds since the
/// Unix epoch; `offline_at` 0: not known, the whole expiry is left), and how long it has
/// been offline. A clock that went back counts as no time offline.
pub(super) fn expiry_left(
    after: Option<Duration>,
    offline_at: u64,
    wall: u64,
) -> (Option<Duration>, Duration) {
    let away = if offline_at == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(wall.saturating_sub(offline_at))
    };
    (after.map(|d| d.saturating_sub(away)), away)
}

/// Sessions as the broker runs them: restored, detached, ended.
impl Broker {
    /// Puts a loaded snapshot into an empty broker: sessions come back disconnected. One
    /// that went offline at a known wall-clock time keeps the expiry it had left at
    /// [`Broker::set_wall`]'s time; one whose expiry ran out while the broker was down is
    /// not restored (logged). One that was connected (its disconnect time is not known)
    /// counts its expiry from now. Returns how many sessions were dropped as expired.
    pub fn restore(&mut self, img: super::persist::Image, now: Instant) -> usize {
        for m in img.retained {
            self.retained.set(m);
        }
        let wall = self.wall_ms;
        let mut expired = 0;
        for mut s in img.sessions {
            let after = match (s.expiry, self.limits.persistent_client_expiration) {
                (Expiry::After(n), _) => Some(Duration::from_secs(u64::from(n))),
                (Expiry::Never, d) => d,
                (Expiry::OnDisconnect, _) => Some(Duration::ZERO),
            };
            s.set_conn(None);
            let (left, away) = expiry_left(after, s.offline_at(), wall);
            if left.is_some_and(|d| d.is_zero()) {
                log::info!(
                    "Session of {} expired while the broker was down (offline for {} s); not restored.",
                    s.client_id,
                    away.as_secs()
                );
                expired += 1;
                continue;
            }
            if s.offline_at() == 0 || s.offline_at() > wall {
                s.set_offline_at(wall);
            }
            s.epoch = self.serial();
            s.set_window(self.limits.max_inflight);
            let epoch = s.epoch;
            // A client id saved twice keeps its first session.
            let Some(sid) = self.table.insert(s) else {
                continue;
            };
            if let Some(d) = left {
                self.push_timer(
                    now + d,
                    Timer::SessionExpiry {
                        session: id32(sid),
                        epoch,
                    },
                );
            }
        }
        expired
    }

    /// The connection of session `sid` is gone: keep the session or remove it. Either way
    /// a new epoch starts, so no timer of the attachment that ended fires.
    pub(super) fn detach_session(&mut self, sid: usize, now: Instant) {
        let epoch = self.serial();
        self.table.detach(sid, epoch);
        if let Some(s) = self.table.get_mut(sid) {
            s.set_offline_at(self.wall_ms);
        }
        self.touch(sid);
        self.redistribute(sid, now);
        let Some(s) = self.table.get(sid) else {
            return;
        };
        let expiry = match (s.expiry, self.limits.persistent_client_expiration) {
            (Expiry::Never, Some(d)) => Some(d),
            (Expiry::Never, None) => None,
            (Expiry::After(n), _) => Some(Duration::from_secs(u64::from(n))),
            (Expiry::OnDisconnect, _) => Some(Duration::ZERO),
        };
        let epoch = s.epoch;
        let keep = !matches!(expiry, Some(d) if d.is_zero());
        match expiry {
            Some(d) if d.is_zero() => self.end_session(sid, now),
            Some(d) => self.push_timer(
                now + d,
                Timer::SessionExpiry {
                    session: id32(sid),
                    epoch,
                },
            ),
            None => {}
        }
        if let Some(p) = self.congested.iter().position(|(c, _)| *c == sid) {
            self.congested.swap_remove(p);
            self.resume_if_clear();
        }
        let cap = u64::from(self.limits.budget.max_offline_sessions);
        if keep && super::core::Limits::at_cap(self.table.offline().saturating_sub(1), cap) {
            if let Some(old) = self.table.oldest_offline() {
                let id = self.table.get(old).map(|s| s.client_id.clone());
                log::info!(
                    "Offline session of {} discarded: max_offline_sessions ({cap}) reached.",
                    id.as_deref().unwrap_or("")
                );
                self.end_session(old, now);
            }
        }
    }

    /// A session ends (expired, discarded by a clean start, or gone with its connection):
    /// a will it was holding back goes out now [MQTT-3.1.3-9], then it is removed.
    pub(super) fn end_session(&mut self, sid: usize, now: Instant) {
        if let Some(w) = self.table.get_mut(sid).and_then(|s| s.pending_will.take()) {
            self.publish_will(*w, now);
        }
        self.remove_session(sid);
    }

    /// The session of `s`'s client id: `s`, entered now, unless the id has one already.
    pub(super) fn session_for(&mut self, s: Session) -> usize {
        let key = s.client_id.clone();
        match self.table.insert(s) {
            Some(sid) => sid,
            // Taken: the table holds a session under this id.
            None => self.session_id(&key).unwrap_or(usize::MAX),
        }
    }

    pub(super) fn remove_session(&mut self, sid: usize) {
        self.touch(sid);
        let Some(s) = self.table.remove(sid) else {
            return;
        };
        if let Some(j) = &mut self.jlog {
            j.removed.push(s.client_id);
        }
        if let Some(p) = self.congested.iter().position(|(c, _)| *c == sid) {
            self.congested.swap_remove(p);
            self.resume_if_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::session::Expiry;
    use crate::protocol::QoS;

    fn opts() -> SubOptions {
        SubOptions {
            qos: QoS::AtLeastOnce,
            ..SubOptions::default()
        }
    }

    /// Whatever is done through the table, the index, the tree and the groups agree with the
    /// sessions' own lists.
    #[test]
    fn indexes_follow_the_sessions() {
        let mut t = SessionTable::default();
        let a = t
            .insert(Session::new("a".into(), 1, Expiry::Never))
            .unwrap();
        assert!(t
            .insert(Session::new("a".into(), 2, Expiry::Never))
            .is_none());
        let b = t
            .insert(Session::new("b".into(), 3, Expiry::Never))
            .unwrap();
        assert_eq!(t.subscribe(a, "x/#", opts(), None), Some(false));
        assert_eq!(t.subscribe(a, "x/#", opts(), Some(4)), Some(true));
        assert_eq!(t.subscribe(b, "x/+", opts(), None), Some(false));
        t.subscribe(a, "$share/g/y", opts(), None);
        t.subscribe(b, "$share/g/y", opts(), None);
        assert_eq!(t.subscription_count(), 2);
        let x1: Arc<str> = "x/1".into();
        let matching = |t: &mut SessionTable, topic: &Arc<str>| {
            let mut out = Vec::new();
            t.matches(topic, &mut out);
            out.iter().map(|s| s.session).collect::<Vec<_>>()
        };
        assert_eq!(matching(&mut t, &x1).len(), 2);
        assert_eq!(
            matching(&mut t, &"x/1".into()).len(),
            2,
            "the same topic again"
        );
        assert!(Arc::ptr_eq(&t.topic_name("x/1"), &x1), "its name is shared");
        assert!(!Arc::ptr_eq(&t.topic_name("x/2"), &x1));
        let yes = |_: &Session| true;
        assert_eq!(t.pick_shared("y", None, None, &yes).len(), 1);
        assert!(t.unsubscribe(b, "x/+"));
        assert!(!t.unsubscribe(b, "x/+"));
        // What the last topic matched is forgotten whenever the tree changes.
        assert_eq!(matching(&mut t, &x1), vec![a]);
        t.subscribe(b, "x/1", opts(), None);
        assert_eq!(matching(&mut t, &x1).len(), 2);
        assert!(t.unsubscribe(b, "x/1"));
        assert_eq!(matching(&mut t, &x1), vec![a]);
        t.remove(a);
        assert_eq!(matching(&mut t, &x1), Vec::<usize>::new());
        assert_eq!(t.id_of("a"), None);
        assert_eq!(t.subscription_count(), 0);
        let picks = t.pick_shared("y", None, None, &yes);
        assert_eq!(picks.first().map(|p| p.0 .0), Some(b), "a left the group");
        t.remove(b);
        assert!(!t.has_shared(), "an empty group goes");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn attach_and_detach_renew_the_epoch() {
        let mut t = SessionTable::default();
        let a = t
            .insert(Session::new("a".into(), 1, Expiry::Never))
            .unwrap();
        t.attach(a, 7, 2);
        assert_eq!(t.get(a).map(|s| (s.conn(), s.epoch)), Some((Some(7), 2)));
        assert_eq!(t.detach(a, 3), Some(7));
        assert_eq!(t.get(a).map(|s| (s.conn(), s.epoch)), Some((None, 3)));
    }
}
