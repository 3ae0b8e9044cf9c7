//! A map from names to values as a vector sorted by name, for the tables read once from a file
//! and then only looked up (password file users, ACL users, `$SYS` values last published).
//!
//! Each `HashMap` key/value pair was about 1.5 KB of hashbrown code in the mips binary
//! (rehashing, probing, dropping, SipHash); a binary search over a sorted `Vec` is a few hundred
//! bytes, and for tables of tens or hundreds of names it is as quick.

/// `entries` sorted by name, those with the same name in the order given (the project's
/// heapsort is not stable: the position breaks ties).
fn in_order<T>(entries: Vec<(String, T)>) -> impl Iterator<Item = (String, T)> {
    let mut v: Vec<(String, usize, T)> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (n, t))| (n, i, t))
        .collect();
    crate::sort::sort_by(&mut v, |a, b| (&a.0, a.1) < (&b.0, b.1));
    v.into_iter().map(|(n, _, t)| (n, t))
}

#[derive(Clone, Debug)]
pub struct Names<V> {
    /// Sorted by name, each name once.
    items: Vec<(String, V)>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names { items: Vec::new() }
    }
}

impl<V> Names<V> {
    /// The table of `entries` given in any order, in O(n log n) (inserting one at a time
    /// shifts the vector each time: O(n²), seconds for a 100,000-line password file). For a
    /// name given more than once the first entry is kept, and `dropped` sees each later one.
    pub fn from_entries(entries: Vec<(String, V)>, mut dropped: impl FnMut(&str, V)) -> Names<V> {
        let mut items: Vec<(String, V)> = Vec::with_capacity(entries.len());
        for (name, v) in in_order(entries) {
            match items.last() {
                Some((last, _)) if *last == name => dropped(&name, v),
                _ => items.push((name, v)),
            }
        }
        Names { items }
    }

    /// The same names with each value changed by `f`.
    pub fn map_values<W>(self, mut f: impl FnMut(V) -> W) -> Names<W> {
        Names {
            items: self.items.into_iter().map(|(n, v)| (n, f(v))).collect(),
        }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.items.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.find(name)
            .ok()
            .and_then(|i| self.items.get(i))
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets `name` to `value`, replacing what it had.
    pub fn insert(&mut self, name: &str, value: V) {
        match self.find(name) {
            Ok(i) => {
                if let Some(slot) = self.items.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.items.insert(i, (name.to_string(), value)),
        }
    }

    /// The value of `name`, made with `V::default()` if it had none.
    pub fn get_or_default(&mut self, name: &str) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                self.items.insert(i, (name.to_string(), V::default()));
                i
            }
        };
        // `i` is in range: found, or just inserted there.
        &mut self.items[i].1
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T> Names<Vec<T>> {
    /// The table of each name's values, in the order given, from `entries` in any order
    /// (O(n log n)).
    pub fn grouped(entries: Vec<(String, T)>) -> Names<Vec<T>> {
        let mut items: Vec<(String, Vec<T>)> = Vec::new();
        for (name, v) in in_order(entries) {
            match items.last_mut() {
                Some((last, vs)) if *last == name => vs.push(v),
                _ => items.push((name, vec![v])),
            }
        }
        Names { items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_from_entries_first_wins_and_groups_keep_order() {
        let e = |n: &str, v: u32| (n.to_string(), v);
        let mut dropped = Vec::new();
        let m = Names::from_entries(
            vec![e("b", 1), e("a", 2), e("b", 3), e("c", 4), e("a", 5)],
            |n, v| dropped.push((n.to_string(), v)),
        );
        assert_eq!(m.get("a"), Some(&2));
        assert_eq!(m.get("b"), Some(&1));
        assert_eq!(m.get("c"), Some(&4));
        assert_eq!(m.len(), 3);
        dropped.sort();
        assert_eq!(dropped, [e("a", 5), e("b", 3)]);
        let g = Names::grouped(vec![e("u", 1), e("t", 2), e("u", 3), e("u", 4), e("t", 5)]);
        assert_eq!(g.get("u"), Some(&vec![1, 3, 4]));
        assert_eq!(g.get("t"), Some(&vec![2, 5]));
        // A big table in reverse order, looked up.
        let big: Vec<(String, usize)> = (0..20_000).rev().map(|i| (format!("u{i}"), i)).collect();
        let m = Names::from_entries(big, |_, _| panic!("no duplicates"));
        assert_eq!(m.len(), 20_000);
        assert!((0..20_000).all(|i| m.get(&format!("u{i}")) == Some(&i)));
    }

    #[test]
    fn sorted_lookups_inserts_and_defaults() {
        let mut m: Names<Vec<u32>> = Names::default();
        assert!(m.is_empty() && m.get("a").is_none());
        for (n, name) in ["m", "b", "z", "a", "m"].into_iter().enumerate() {
            m.get_or_default(name).push(n as u32);
        }
        assert_eq!(m.len(), 4);
        assert_eq!(m.get("m"), Some(&vec![0, 4]));
        assert_eq!(m.get("a"), Some(&vec![3]));
        assert!(m.contains_key("z") && !m.contains_key("c") && !m.contains_key(""));
        m.insert("b", vec![9]);
        m.insert("c", vec![8]);
        assert_eq!(m.get("b"), Some(&vec![9]));
        assert_eq!(m.get("c"), Some(&vec![8]));
        let names: Vec<&str> = m.items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "m", "z"]);
    }
}
