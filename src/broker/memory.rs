//! `memory_limit`: the process's heap bytes, counted as Mosquitto's `memory_mosq.c` counts
//! them, so that new PUBLISHes can be refused once the broker holds more than the limit.
//!
//! A global allocator wrapping the system one keeps a running total of bytes currently
//! allocated (a relaxed load and store per call: the broker is one thread). The count is
//! exact and falls as memory is freed, unlike the resident set, which the C allocator rarely
//! gives back.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static HEAP: AtomicUsize = AtomicUsize::new(0);

/// Counts `plus` bytes more and `minus` fewer. The broker is one thread: a plain load and
/// store, not a locked read-modify-write (which costs tens of cycles on every allocation and
/// free). Unit tests allocate from many threads, so they keep exact atomic operations.
#[inline(always)]
fn count(plus: usize, minus: usize) {
    if cfg!(test) {
        HEAP.fetch_add(plus, Ordering::Relaxed);
        HEAP.fetch_sub(minus, Ordering::Relaxed);
    } else {
        let n = HEAP.load(Ordering::Relaxed);
        HEAP.store(n.wrapping_add(plus).wrapping_sub(minus), Ordering::Relaxed);
    }
}

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 0);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        count(0, layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 0);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`; `ptr` and `layout` are the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes allocated now.
pub fn heap_bytes() -> usize {
    HEAP.load(Ordering::Relaxed)
}

/// Whether the heap is above `limit` bytes (0: no limit).
pub fn over_limit(limit: usize) -> bool {
    limit > 0 && heap_bytes() > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_held() {
        // Other tests allocate concurrently: compare against a large, held allocation.
        let big = vec![1u8; 64 << 20];
        assert!(heap_bytes() >= 64 << 20);
        assert!(over_limit(heap_bytes() / 2));
        assert!(!over_limit(0));
        drop(big);
        assert!(!over_limit(usize::MAX));
    }
}
