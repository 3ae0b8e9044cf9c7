//! A map from names to values as a vector sorted by name, for the tables read once from a file
//! and then only looked up (password file users, ACL users, `$SYS` values last published).
//!
//! Each `HashMap` key/value pair was about 1.5 KB of hashbrown code in the mips binary
//! (rehashing, probing, dropping, SipHash); a binary search over a sorted `Vec` is a few hundred
//! bytes, and for tables of tens or hundreds of names it is as quick.

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

#[cfg(test)]
mod tests {
    use super::*;

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
