//! `memory_limit`: the process's heap bytes, counted as Mosquitto's `memory_mosq.c` counts
//! them, so that new PUBLISHes can be refused once the broker holds more than the limit.
//!
//! A global allocator wrapping the system one keeps a running total of bytes currently
//! allocated (one relaxed atomic add or subtract per call). The count is exact and falls as
//! memory is freed, unlike the resident set, which the C allocator rarely gives back.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static HEAP: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`; `ptr` and `layout` are the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
            HEAP.fetch_add(new_size, Ordering::Relaxed);
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
