//! The subscription tree: topic filters by level, matched against topic names on publish.
//!
//! `+` and `#` are ordinary child keys, so a match costs at most three map look-ups per topic
//! level. Leading wildcards never match `$` topics [MQTT-4.7.2-1]. Empty branches are pruned on
//! unsubscribe, so memory follows the live subscriptions.

use crate::protocol::SubOptions;
use std::collections::HashMap;

/// One session's subscription at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    pub session: usize,
    pub opts: SubOptions,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// Children of a node. Most nodes have one or two, so a short vector (tens of bytes) until
/// there are more than [`FEW`], then a map, so that wide levels still cost O(1) per look-up.
// The map is boxed on purpose: it keeps every node (most have a vector) at 48 bytes.
#[allow(clippy::box_collection)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(Box<HashMap<Box<str>, Node>>),
}

const FEW: usize = 8;

impl Default for Children {
    fn default() -> Children {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, k: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(n, _)| &**n == k).map(|(_, c)| c),
            Children::Many(m) => m.get(k),
        }
    }

    fn get_mut(&mut self, k: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(n, _)| &**n == k).map(|(_, c)| c),
            Children::Many(m) => m.get_mut(k),
        }
    }

    fn get_or_insert(&mut self, k: &str) -> &mut Node {
        if let Children::Few(v) = self {
            if v.len() >= FEW && !v.iter().any(|(n, _)| &**n == k) {
                let map: HashMap<Box<str>, Node> = std::mem::take(v).into_iter().collect();
                *self = Children::Many(Box::new(map));
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(n, _)| &**n == k) {
                    Some(i) => i,
                    None => {
                        // Grow one at a time: these vectors stay short.
                        v.reserve_exact(1);
                        v.push((Box::from(k), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(Box::from(k)).or_default(),
        }
    }

    fn remove(&mut self, k: &str) {
        match self {
            Children::Few(v) => v.retain(|(n, _)| &**n != k),
            Children::Many(m) => {
                m.remove(k);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }
}

#[derive(Default)]
struct Node {
    children: Children,
    subs: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty()
    }
}

#[derive(Default)]
pub struct SubTree {
    root: Node,
    count: usize,
}

/// Splits off the first level: `"a/b/c"` gives `("a", Some("b/c"))`, `"a"` gives `("a", None)`.
fn split(t: &str) -> (&str, Option<&str>) {
    match t.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    }
}

impl SubTree {
    /// Number of (session, filter) subscriptions.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds or replaces `session`'s subscription to `filter`. Returns true if it replaced one.
    pub fn subscribe(&mut self, filter: &str, sub: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.get_or_insert(level);
        }
        if let Some(s) = node.subs.iter_mut().find(|s| s.session == sub.session) {
            *s = sub;
            return true;
        }
        node.subs.reserve_exact(1);
        node.subs.push(sub);
        self.count += 1;
        false
    }

    /// Removes `session`'s subscription to `filter`. Returns true if there was one.
    pub fn unsubscribe(&mut self, filter: &str, session: usize) -> bool {
        fn remove(node: &mut Node, filter: Option<&str>, session: usize) -> bool {
            let Some(f) = filter else {
                let before = node.subs.len();
                node.subs.retain(|s| s.session != session);
                return node.subs.len() != before;
            };
            let (level, rest) = split(f);
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove(child, rest, session);
            if child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
        let removed = remove(&mut self.root, Some(filter), session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Appends every subscription matching `topic` to `out` (a session may appear more than
    /// once when several of its filters match).
    pub fn matches(&self, topic: &str, out: &mut Vec<Subscriber>) {
        fn walk(node: &Node, topic: Option<&str>, root_dollar: bool, out: &mut Vec<Subscriber>) {
            let Some(t) = topic else {
                out.extend_from_slice(&node.subs);
                // "a/#" also matches "a". [MQTT-4.7.1-2]
                if let Some(h) = node.children.get("#") {
                    out.extend_from_slice(&h.subs);
                }
                return;
            };
            let (level, rest) = split(t);
            if !root_dollar {
                if let Some(h) = node.children.get("#") {
                    out.extend_from_slice(&h.subs);
                }
                if let Some(p) = node.children.get("+") {
                    walk(p, rest, false, out);
                }
            }
            if let Some(c) = node.children.get(level) {
                walk(c, rest, false, out);
            }
        }
        walk(&self.root, Some(topic), topic.starts_with('$'), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{topic, QoS};

    fn sub(session: usize) -> Subscriber {
        Subscriber {
            session,
            opts: SubOptions::default(),
            id: None,
        }
    }

    fn matching(t: &SubTree, topic: &str) -> Vec<usize> {
        let mut out = Vec::new();
        t.matches(topic, &mut out);
        let mut v: Vec<usize> = out.iter().map(|s| s.session).collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_dollar() {
        let mut t = SubTree::default();
        t.subscribe("a/b", sub(1));
        t.subscribe("a/+", sub(2));
        t.subscribe("a/#", sub(3));
        t.subscribe("#", sub(4));
        t.subscribe("+/b", sub(5));
        t.subscribe("$SYS/#", sub(6));
        assert_eq!(matching(&t, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matching(&t, "a"), vec![3, 4]);
        assert_eq!(matching(&t, "a/c/d"), vec![3, 4]);
        assert_eq!(matching(&t, "$SYS/x"), vec![6]);
        assert_eq!(t.count(), 6);
    }

    #[test]
    fn replace_and_prune() {
        let mut t = SubTree::default();
        assert!(!t.subscribe("a/b/c", sub(1)));
        let mut s = sub(1);
        s.opts.qos = QoS::ExactlyOnce;
        assert!(t.subscribe("a/b/c", s));
        assert_eq!(t.count(), 1);
        assert!(t.unsubscribe("a/b/c", 1));
        assert!(!t.unsubscribe("a/b/c", 1));
        assert!(t.root.is_empty());
        assert_eq!(t.count(), 0);
    }

    /// Wide levels switch from the short vector to a map and keep working both ways.
    #[test]
    fn wide_levels() {
        let mut t = SubTree::default();
        for i in 0..50 {
            t.subscribe(&format!("room/{i}/temp"), sub(i));
        }
        t.subscribe("room/+/temp", sub(100));
        assert!(matches!(
            t.root.children.get("room").unwrap().children,
            Children::Many(_)
        ));
        for i in [0, 7, 8, 9, 49] {
            assert_eq!(matching(&t, &format!("room/{i}/temp")), vec![i, 100]);
        }
        for i in 0..50 {
            assert!(t.unsubscribe(&format!("room/{i}/temp"), i));
        }
        assert_eq!(matching(&t, "room/3/temp"), vec![100]);
        assert_eq!(t.count(), 1);
    }

    /// The tree agrees with the reference matcher on every pair of a small universe.
    #[test]
    fn agrees_with_reference() {
        let filters = [
            "#", "+", "+/+", "a", "a/#", "a/+", "a/b", "a/+/c", "+/b/#", "$SYS/#", "/+", "a/",
            "+/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "b/b/c", "/", "/x", "a/", "$SYS/a", "$x", "a//c",
        ];
        let mut t = SubTree::default();
        for (i, f) in filters.iter().enumerate() {
            t.subscribe(f, sub(i));
        }
        for tp in topics {
            let want: Vec<usize> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| topic::matches(f, tp))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(matching(&t, tp), want, "topic {tp}");
        }
    }
}
