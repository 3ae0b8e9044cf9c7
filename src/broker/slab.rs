//! A minimal slab: values addressed by small reusable integer ids (connection and session ids).
//!
//! `get`/`get_mut` on a free or out-of-range id answer `None`; nothing here panics.

pub struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            if let Some(slot) = self.entries.get_mut(id) {
                *slot = Some(value);
                return id;
            }
        }
        self.entries.push(Some(value));
        self.entries.len() - 1
    }

    pub fn remove(&mut self, id: usize) -> Option<T> {
        let v = self.entries.get_mut(id)?.take()?;
        self.free.push(id);
        self.len -= 1;
        Some(v)
    }

    pub fn get(&self, id: usize) -> Option<&T> {
        self.entries.get(id)?.as_ref()
    }

    pub fn get_mut(&mut self, id: usize) -> Option<&mut T> {
        self.entries.get_mut(id)?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|v| (i, v)))
    }

    pub fn ids(&self) -> Vec<usize> {
        self.iter().map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn reuse_and_bounds() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(99), None);
        let c = s.insert("c");
        assert_eq!(c, a);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 2);
    }
}
