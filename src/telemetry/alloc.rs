//! Counting heap allocations made through Rust's allocator, per thread and in total: how the
//! hot path is shown to allocate nothing per frame (`vigil bench`, the allocation test,
//! `VIGIL_TRACE_ALLOCS=N`). GStreamer's and ONNX Runtime's own C allocations are not seen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts heap allocations made through Rust's allocator.
pub struct CountingAlloc;

pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static THREAD_ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static TRACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Heap allocations made so far by the calling thread (through Rust's allocator).
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(|c| c.get())
}

/// How many analysed frames after warm-up to trace allocations on (`VIGIL_TRACE_ALLOCS=N`; 0: off).
pub fn trace_frames() -> u64 {
    std::env::var("VIGIL_TRACE_ALLOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// While on, every heap allocation by the calling thread prints `ALLOC` and the innermost source
/// lines of its backtrace (this crate's and `ort`'s) to stderr.
pub fn trace_allocations(on: bool) {
    let _ = TRACE.try_with(|t| t.set(on));
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    // off while tracing, so that the backtrace's own allocations are not traced
    if TRACE.try_with(|t| t.replace(false)).unwrap_or(false) {
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        let at: Vec<&str> = bt
            .lines()
            .filter(|l| (l.contains("at ./src/") || l.contains("/ort-")) && !l.contains("alloc.rs"))
            .map(str::trim)
            .take(3)
            .collect();
        eprintln!("ALLOC {}", at.join(" <- "));
        TRACE.with(|t| t.set(true));
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Gives the C heap's free memory back to the system (glibc `malloc_trim`, every arena). After
/// an evidence clip: its decoder and encoder threads free their frames into per-thread arenas,
/// which otherwise keep them, so a worker that cut N clips held N clips' worth (`vigil bench` on
/// the panning clip, docs "Memory").
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Peak resident set size of this process (VmHWM), MB.
pub fn peak_rss_mb() -> f64 {
    status_kb("VmHWM:") / 1024.0
}

/// Current resident set size (VmRSS), MB.
pub fn rss_mb() -> f64 {
    status_kb("VmRSS:") / 1024.0
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_sees_an_allocation_and_nothing_else() {
        let before = super::thread_allocations();
        let x = 1u64 + std::hint::black_box(1);
        assert_eq!(super::thread_allocations() - before, 0, "{x}");
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
        assert_eq!(super::thread_allocations() - before, 1, "{}", v.capacity());
    }
}
