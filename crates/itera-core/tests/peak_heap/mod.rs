//! A global allocator that counts live heap bytes and their peak, for tests that bound memory
//! (natively and in wasm32). Counters are process-wide: measure with nothing else running.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The heap a prompt of the most tokens accepted may take to generate with the shipped tiny
/// model, natively and in wasm32: generous (a 128-token chunk's activations, scan states and
/// logits come to about 10 MiB) and far below the 4.7 GB an unchunked prefill of 65,537
/// tokens took.
#[allow(dead_code)] // the prompt tests bound by it; the large-text test by its own figure
pub const BOUND: usize = 48 << 20;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations and growing reallocations made, ever, of at most 8-byte alignment: every
/// `Vec` of numbers. matrixmultiply's packing buffer (32-byte aligned, one per GEMM call,
/// freed on return; the library keeps none between calls) is not counted.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if layout.align() <= 8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if new_size > layout.size() && layout.align() <= 8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        if !q.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many times `f` allocated (or grew an allocation) a buffer of its own (see `ALLOCATIONS`).
#[allow(dead_code)] // the memory-bound tests use `peak_of`
pub fn allocations_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let out = f();
    (ALLOCATIONS.load(Ordering::Relaxed) - before, out)
}

/// Peak heap above what was live before `f` ran, in bytes.
#[allow(dead_code)] // the allocation-count test uses `allocations_of`
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed) - before, out)
}
