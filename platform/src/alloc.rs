//! A counting global allocator, for the tests and benchmarks that prove reading allocates
//! nothing in steady state. It lives here because implementing `GlobalAlloc` takes `unsafe`.
//!
//! ```
//! use evloop_platform::alloc::CountingAlloc;
//!
//! // In a test binary or example: `#[global_allocator] static A: CountingAlloc = CountingAlloc;`
//! let before = CountingAlloc::count();
//! let v = vec![1u8; 10];
//! drop(v);
//! // Counts only when installed as the global allocator; here it was not.
//! assert_eq!(CountingAlloc::count(), before);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation (process-wide).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    /// Allocations and reallocations so far, by every thread.
    pub fn count() -> u64 {
        ALLOCATIONS.load(Relaxed)
    }
}

// SAFETY: every method forwards to the system allocator with the arguments it was given, so
// the system allocator's guarantees are ours; the counter is an atomic and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, that is from System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s size contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
