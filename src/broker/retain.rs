//! The retained-message store: the last retained message per topic, looked up by filter.
//!
//! A tree by topic level, separate from the subscription tree: here the stored side is the
//! topic name and the query is the filter. Storing an empty payload deletes the topic and prunes
//! empty branches. Leading wildcards never match `$` topics. [MQTT-4.7.2-1]
//! Messages whose 5.0 expiry has passed are removed by [`RetainStore::purge`], which the
//! broker runs when [`RetainStore::next_expiry`] comes due: an expired message neither
//! lingers in memory nor in the saved state.

use super::message::Message;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Instant;

#[derive(Default)]
struct Node {
    /// In key order, so that a snapshot written in slices can resume after a topic.
    children: BTreeMap<Box<str>, Node>,
    msg: Option<Rc<Message>>,
}

/// What a purge removed: count, bytes, the next expiry left, and the `$SYS` part.
type Purged = (usize, usize, Option<Instant>, (usize, usize));

fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

#[derive(Default)]
pub struct RetainStore {
    root: Node,
    count: usize,
    bytes: usize,
    /// How much of `count` and `bytes` is the broker's own `$SYS` tree, which the caps of
    /// [`RetainStore::admits`] leave out.
    sys: (usize, usize),
    /// No stored message expires before this (it may be earlier than the earliest left).
    next_expiry: Option<Instant>,
}

impl RetainStore {
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When [`RetainStore::purge`] is next due.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Removes every message expired at `now` (pruning emptied branches); returns how many.
    pub fn purge(&mut self, now: Instant) -> usize {
        fn walk(node: &mut Node, now: Instant, st: &mut Purged) {
            if let Some(m) = node.msg.as_ref() {
                if m.is_expired(now) {
                    st.0 += 1;
                    st.1 += m.size();
                    if is_sys(&m.topic) {
                        st.3 .0 += 1;
                        st.3 .1 += m.size();
                    }
                    node.msg = None;
                } else if let Some(e) = m.expires {
                    st.2 = Some(st.2.map_or(e, |n: Instant| n.min(e)));
                }
            }
            node.children.retain(|_, c| {
                walk(c, now, st);
                c.msg.is_some() || !c.children.is_empty()
            });
        }
        if self.next_expiry.is_none_or(|t| t > now) {
            return 0;
        }
        let mut st = (0, 0, None, (0, 0));
        walk(&mut self.root, now, &mut st);
        self.count = self.count.saturating_sub(st.0);
        self.bytes = self.bytes.saturating_sub(st.1);
        self.sys.0 = self.sys.0.saturating_sub(st.3 .0);
        self.sys.1 = self.sys.1.saturating_sub(st.3 .1);
        self.next_expiry = st.2;
        st.0
    }

    /// Stores `msg` as the retained message of its topic, or deletes the topic's retained
    /// message when the payload is empty. [MQTT-3.3.1-6] [MQTT-3.3.1-10]
    pub fn set(&mut self, msg: Rc<Message>) {
        fn walk(node: &mut Node, topic: Option<&str>, msg: Rc<Message>, st: &mut (usize, isize)) {
            let Some(t) = topic else {
                if let Some(old) = node.msg.take() {
                    st.0 -= 1;
                    st.1 -= old.size() as isize;
                }
                if !msg.payload.is_empty() {
                    st.0 += 1;
                    st.1 += msg.size() as isize;
                    node.msg = Some(msg);
                }
                return;
            };
            let (level, rest) = match t.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (t, None),
            };
            if msg.payload.is_empty() {
                let Some(child) = node.children.get_mut(level) else {
                    return;
                };
                walk(child, rest, msg, st);
                if child.msg.is_none() && child.children.is_empty() {
                    node.children.remove(level);
                }
            } else {
                let child = node.children.entry(Box::from(level)).or_default();
                walk(child, rest, msg, st);
            }
        }
        let topic = msg.topic.clone();
        if let Some(e) = msg.expires.filter(|_| !msg.payload.is_empty()) {
            self.next_expiry = Some(self.next_expiry.map_or(e, |n| n.min(e)));
        }
        let mut st = (self.count, self.bytes as isize);
        walk(&mut self.root, Some(&topic), msg, &mut st);
        if is_sys(&topic) {
            let dc = st.0 as isize - self.count as isize;
            let db = st.1 - self.bytes as isize;
            self.sys.0 = (self.sys.0 as isize + dc).max(0) as usize;
            self.sys.1 = (self.sys.1 as isize + db).max(0) as usize;
        }
        self.count = st.0;
        self.bytes = st.1.max(0) as usize;
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&Rc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Whether storing a message of `size` bytes ([`Message::size`]) on `topic` keeps the
    /// store within `max_count` topics and `max_bytes` (0: no cap). Replacing a topic's
    /// message with one no larger is always admitted, so a full store still takes updates.
    pub fn admits(&self, topic: &str, size: usize, max_count: u64, max_bytes: u64) -> bool {
        let old = self.get(topic).map(|m| m.size());
        if old.is_some_and(|o| size <= o) {
            return true;
        }
        let count = self.count.saturating_sub(self.sys.0) + usize::from(old.is_none());
        let bytes = (self.bytes.saturating_sub(self.sys.1) + size).saturating_sub(old.unwrap_or(0));
        (max_count == 0 || count as u64 <= max_count)
            && (max_bytes == 0 || bytes as u64 <= max_bytes)
    }

    /// Every retained message, for persistence.
    pub fn all(&self, out: &mut Vec<Rc<Message>>) {
        fn walk(node: &Node, out: &mut Vec<Rc<Message>>) {
            out.extend(node.msg.iter().cloned());
            for c in node.children.values() {
                walk(c, out);
            }
        }
        walk(&self.root, out);
    }

    /// Up to `n` retained messages in topic order (level by level), from the first, or from
    /// the one after topic `after` (which may be gone since): a snapshot written in slices
    /// walks the store with no list of its own, whatever changes between slices.
    pub fn after(&self, after: Option<&str>, n: usize, out: &mut dyn FnMut(&Rc<Message>)) {
        type Out<'a> = (usize, &'a mut dyn FnMut(&Rc<Message>));
        /// Pre-order: the node's message, then its children in key order. True once full.
        fn full(node: &Node, n: usize, out: &mut Out<'_>) -> bool {
            if out.0 >= n {
                return true;
            }
            if let Some(m) = &node.msg {
                out.0 += 1;
                (out.1)(m);
            }
            for c in node.children.values() {
                if full(c, n, out) {
                    return true;
                }
            }
            false
        }
        fn resume(node: &Node, rest: Option<&str>, n: usize, out: &mut Out<'_>) -> bool {
            let Some(t) = rest else {
                // The node of `after` itself: its message was taken, its children follow.
                for c in node.children.values() {
                    if full(c, n, out) {
                        return true;
                    }
                }
                return false;
            };
            let (level, tail) = match t.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (t, None),
            };
            if let Some(c) = node.children.get(level) {
                if resume(c, tail, n, out) {
                    return true;
                }
            }
            for (_, c) in node
                .children
                .range::<str, _>((Bound::Excluded(level), Bound::Unbounded))
            {
                if full(c, n, out) {
                    return true;
                }
            }
            false
        }
        let mut out: Out<'_> = (0, out);
        match after {
            None => full(&self.root, n, &mut out),
            Some(t) => resume(&self.root, Some(t), n, &mut out),
        };
    }

    /// Every retained message whose topic matches `filter`.
    pub fn matches(&self, filter: &str, out: &mut Vec<Rc<Message>>) {
        fn all(node: &Node, out: &mut Vec<Rc<Message>>) {
            out.extend(node.msg.iter().cloned());
            for c in node.children.values() {
                all(c, out);
            }
        }
        fn walk(node: &Node, filter: Option<&str>, root: bool, out: &mut Vec<Rc<Message>>) {
            let Some(f) = filter else {
                out.extend(node.msg.iter().cloned());
                return;
            };
            let (level, rest) = match f.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (f, None),
            };
            match level {
                "#" => {
                    out.extend(node.msg.iter().cloned());
                    for (k, c) in &node.children {
                        if !(root && k.starts_with('$')) {
                            all(c, out);
                        }
                    }
                }
                "+" => {
                    for (k, c) in &node.children {
                        if !(root && k.starts_with('$')) {
                            walk(c, rest, false, out);
                        }
                    }
                }
                _ => {
                    if let Some(c) = node.children.get(level) {
                        walk(c, rest, false, out);
                    }
                }
            }
        }
        walk(&self.root, Some(filter), true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{topic, QoS};

    fn msg(topic: &str, payload: &str) -> Rc<Message> {
        Rc::new(Message {
            topic: topic.into(),
            payload: payload.as_bytes().into(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            expires: None,
        })
    }

    fn found(s: &RetainStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        s.matches(filter, &mut out);
        let mut v: Vec<String> = out
            .iter()
            .map(|m| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_walk_in_batches_visits_each_topic_once_whatever_changes_between_batches() {
        let topics = ["a", "a/b", "a/b/c", "a/c", "/x", "b", "b/a", "c/d/e", "z"];
        for batch in 1..5 {
            let mut s = RetainStore::default();
            for t in topics {
                s.set(msg(t, "1"));
            }
            let (mut seen, mut cursor) = (Vec::<String>::new(), None::<String>);
            for round in 0..100 {
                let mut out = Vec::new();
                s.after(cursor.as_deref(), batch, &mut |m| out.push(m.clone()));
                if out.is_empty() {
                    break;
                }
                assert!(out.len() <= batch);
                for m in &out {
                    seen.push(m.topic.to_string());
                }
                cursor = out.last().map(|m| m.topic.to_string());
                // The cursor's own topic goes away, and topics come and go either side.
                if round == 1 {
                    if let Some(c) = &cursor {
                        s.set(msg(c, ""));
                    }
                    s.set(msg("zz/new", "1"));
                    s.set(msg("0/before", "1"));
                }
            }
            let mut want: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
            want.push("zz/new".into());
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), seen.len(), "no topic twice: {seen:?}");
            want.sort();
            assert_eq!(sorted, want, "batch {batch}");
        }
    }

    #[test]
    fn set_replace_delete() {
        let mut s = RetainStore::default();
        s.set(msg("a/b", "1"));
        s.set(msg("a/b", "2"));
        assert_eq!(s.count(), 1);
        assert_eq!(found(&s, "a/b"), vec!["a/b=2"]);
        s.set(msg("a/b", ""));
        assert_eq!(s.count(), 0);
        assert_eq!(s.bytes(), 0);
        assert!(s.root.children.is_empty(), "empty branches are pruned");
        s.set(msg("x", ""));
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn caps_on_count_and_bytes() {
        let mut s = RetainStore::default();
        s.set(msg("a", "1234"));
        s.set(msg("b", "1234"));
        assert_eq!((s.count(), s.bytes()), (2, 10));
        assert!(!s.admits("c", 2, 2, 0), "a third topic over a count of 2");
        assert!(s.admits("c", 2, 3, 0));
        assert!(s.admits("a", 5, 2, 0), "replacing keeps the count");
        assert!(
            !s.admits("a", 9, 0, 12),
            "replacing with more bytes than fit"
        );
        assert!(s.admits("a", 7, 0, 12));
        assert!(s.admits("a", 1, 1, 1), "a smaller replacement always fits");
        assert!(s.admits("z/y", 100, 0, 0), "0: no cap");
        assert_eq!(s.get("a").map(|m| m.payload.len()), Some(4));
        assert!(s.get("a/b").is_none() && s.get("").is_none());
        // The broker's own $SYS tree is not counted against the caps.
        s.set(msg("$SYS/broker/uptime", "1234567890"));
        assert!(!s.admits("c", 2, 2, 0) && s.admits("a", 7, 0, 12));
        s.set(msg("$SYS/broker/uptime", ""));
        assert_eq!((s.count(), s.bytes(), s.sys), (2, 10, (0, 0)));
    }

    #[test]
    fn agrees_with_reference() {
        let topics = [
            "a", "a/b", "a/b/c", "b", "/", "/x", "a/", "$SYS/a", "$x", "a//c",
        ];
        let filters = [
            "#", "+", "+/+", "a/#", "a/+", "a/b", "a/+/c", "+/b/#", "$SYS/#", "/+", "+/#",
        ];
        let mut s = RetainStore::default();
        for t in topics {
            s.set(msg(t, "p"));
        }
        assert_eq!(s.count(), topics.len());
        for f in filters {
            let mut want: Vec<String> = topics
                .iter()
                .filter(|t| topic::matches(f, t))
                .map(|t| format!("{t}=p"))
                .collect();
            want.sort();
            assert_eq!(found(&s, f), want, "filter {f}");
        }
    }
}
