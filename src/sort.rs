//! A small in-place heapsort for the few places that sort plain keys (journal ids, session
//! indexes, packet ids, matched subscribers).
//!
//! The standard library's `sort_unstable` is a pattern-defeating quicksort with sorting
//! networks, unrolled per element type: on mips it was 7,636 bytes for `u64` alone and about
//! 2,800 for each of `u16`, `usize` and the subscriber list, 15 KB in all (scripts/size-table.sh).
//! This one is a few hundred bytes per type, O(n log n) in the worst case, needs no allocation
//! and never panics; it is not stable, which none of the callers needs.

/// Sorts `v` by `key`, smallest first.
pub fn sort_by_key<T, K: Ord>(v: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(v, |a, b| key(a) < key(b));
}

/// Sorts `v` so that no element is `less` than one before it.
pub fn sort_by<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let n = v.len();
    // Build a max-heap, then move the largest to the end one by one.
    for start in (0..n / 2).rev() {
        sift_down(v, start, n, &mut less);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &mut less);
    }
}

/// Sorts `v` smallest first.
pub fn sort<T: Ord + Copy>(v: &mut [T]) {
    sort_by_key(v, |x| *x);
}

fn sift_down<T>(v: &mut [T], mut node: usize, end: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    loop {
        let mut child = 2 * node + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && less(&v[child], &v[child + 1]) {
            child += 1;
        }
        if !less(&v[node], &v[child]) {
            return;
        }
        v.swap(node, child);
        node = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_std() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..200usize {
            let mut v: Vec<u64> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % (n as u64 / 2 + 1)
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort(&mut v);
            assert_eq!(v, want, "n = {n}");
        }
    }

    #[test]
    fn by_key() {
        let mut v = vec![(3, 'c'), (1, 'a'), (2, 'b'), (0, 'z')];
        sort_by_key(&mut v, |p| p.0);
        assert_eq!(v, [(0, 'z'), (1, 'a'), (2, 'b'), (3, 'c')]);
    }
}
