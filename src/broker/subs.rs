//! The subscription tree: topic filters by level, matched against topic names on publish.
//!
//! `+` and `#` are ordinary child keys, so a match costs at most three map look-ups per topic
//! level. Leading wildcards never match `$` topics [MQTT-4.7.2-1]. Empty branches are pruned on
//! unsubscribe, so memory follows the live subscriptions.

use crate::protocol::SubOptions;
use std::collections::HashMap;
use std::num::NonZeroU32;

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
// The map is boxed on purpose: it keeps `Children` at 24 bytes.
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

/// A node's children, boxed: most nodes are leaves (one per distinct filter), and a leaf pays
/// a pointer instead of a vector. Keeps a node at 32 bytes, so a wide level's map is 48 bytes
/// an entry.
#[derive(Default)]
struct Kids(Option<Box<Children>>);

impl Kids {
    fn get(&self, k: &str) -> Option<&Node> {
        self.0.as_deref().and_then(|c| c.get(k))
    }

    fn get_mut(&mut self, k: &str) -> Option<&mut Node> {
        self.0.as_deref_mut().and_then(|c| c.get_mut(k))
    }

    fn get_or_insert(&mut self, k: &str) -> &mut Node {
        self.0.get_or_insert_with(Default::default).get_or_insert(k)
    }

    fn remove(&mut self, k: &str) {
        if let Some(c) = self.0.as_deref_mut() {
            c.remove(k);
            if c.is_empty() {
                self.0 = None;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Children::is_empty)
    }
}

/// A [`Subscriber`] as the tree stores it: 12 bytes.
#[derive(Debug, Clone, Copy)]
struct Packed {
    /// A session slab index (below 2^32; `u32::MAX` matches no session).
    session: u32,
    id: Option<NonZeroU32>,
    opts: SubOptions,
}

impl Packed {
    fn new(s: Subscriber) -> Packed {
        Packed {
            session: u32::try_from(s.session).unwrap_or(u32::MAX),
            id: s.id.and_then(NonZeroU32::new),
            opts: s.opts,
        }
    }

    fn full(&self) -> Subscriber {
        Subscriber {
            session: self.session as usize,
            opts: self.opts,
            id: self.id.map(NonZeroU32::get),
        }
    }
}

/// A node's subscriptions. A node per distinct filter, and most filters have one subscriber:
/// that one is held inline, and the whole is 16 bytes.
#[derive(Debug, Default)]
// The vector is boxed on purpose: it keeps `Subs` at 16 bytes.
#[allow(clippy::box_collection)]
enum Subs {
    #[default]
    None,
    One(Packed),
    /// Two or more.
    Many(Box<Vec<Packed>>),
}

impl Subs {
    fn is_empty(&self) -> bool {
        matches!(self, Subs::None)
    }

    fn as_slice(&self) -> &[Packed] {
        match self {
            Subs::None => &[],
            Subs::One(p) => std::slice::from_ref(p),
            Subs::Many(v) => v,
        }
    }

    /// Adds `p`, or replaces the same session's entry; true if it replaced one.
    fn upsert(&mut self, p: Packed) -> bool {
        match self {
            Subs::None => {
                *self = Subs::One(p);
                false
            }
            Subs::One(q) if q.session == p.session => {
                *q = p;
                true
            }
            Subs::One(q) => {
                let q = *q;
                *self = Subs::Many(Box::new(vec![q, p]));
                false
            }
            Subs::Many(v) => match v.iter_mut().find(|q| q.session == p.session) {
                Some(q) => {
                    *q = p;
                    true
                }
                None => {
                    v.push(p);
                    false
                }
            },
        }
    }

    /// Removes `session`'s entry; true if there was one.
    fn remove(&mut self, session: u32) -> bool {
        match self {
            Subs::One(q) if q.session == session => {
                *self = Subs::None;
                true
            }
            Subs::Many(v) => {
                let before = v.len();
                v.retain(|q| q.session != session);
                let removed = v.len() != before;
                match v.as_slice() {
                    [] => *self = Subs::None,
                    [one] => *self = Subs::One(*one),
                    _ => {}
                }
                removed
            }
            _ => false,
        }
    }

    fn extend_into(&self, out: &mut Vec<Subscriber>) {
        out.extend(self.as_slice().iter().map(Packed::full));
    }
}

#[derive(Default)]
struct Node {
    children: Kids,
    subs: Subs,
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
        let replaced = node.subs.upsert(Packed::new(sub));
        if !replaced {
            self.count += 1;
        }
        replaced
    }

    /// Removes `session`'s subscription to `filter`. Returns true if there was one.
    pub fn unsubscribe(&mut self, filter: &str, session: usize) -> bool {
        fn remove(node: &mut Node, filter: Option<&str>, session: usize) -> bool {
            let Some(f) = filter else {
                return node.subs.remove(u32::try_from(session).unwrap_or(u32::MAX));
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
                node.subs.extend_into(out);
                // "a/#" also matches "a". [MQTT-4.7.1-2]
                if let Some(h) = node.children.get("#") {
                    h.subs.extend_into(out);
                }
                return;
            };
            let (level, rest) = split(t);
            if !root_dollar {
                if let Some(h) = node.children.get("#") {
                    h.subs.extend_into(out);
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

    /// One subscriber is held inline, two or more in a vector, and back as they leave.
    #[test]
    fn subscribers_of_one_filter_come_and_go() {
        let mut t = SubTree::default();
        assert!(!t.subscribe("a", sub(1)));
        assert!(!t.subscribe("a", sub(2)));
        assert!(!t.subscribe("a", sub(3)));
        assert!(t.subscribe("a", sub(2)), "same session: replaced");
        assert_eq!(matching(&t, "a"), vec![1, 2, 3]);
        assert!(t.unsubscribe("a", 1) && t.unsubscribe("a", 3));
        assert!(!t.unsubscribe("a", 3));
        assert_eq!(matching(&t, "a"), vec![2]);
        assert!(t.unsubscribe("a", 2));
        assert!(t.root.is_empty());
        assert_eq!(t.count(), 0);
    }

    /// The memory per subscription rests on these sizes (a wide level's map entry is a key
    /// and a node).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn node_sizes() {
        assert_eq!(std::mem::size_of::<Packed>(), 12);
        assert_eq!(std::mem::size_of::<Subs>(), 16);
        assert_eq!(std::mem::size_of::<Node>(), 24);
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
            t.root.children.get("room").unwrap().children.0.as_deref(),
            Some(Children::Many(_))
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
