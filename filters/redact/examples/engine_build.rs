//! Memory of building the redaction engine: allocations, peak and live heap bytes of
//! `Engine::default_set`, measured with a counting allocator (what the native module's process
//! keeps: tcmalloc holds on to the build's peak, see docs/benchmarks.md).
//!
//! `cargo run -p cordon-redact --release --example engine_build`

use cordon_redact::Engine;
use cordon_redact::detect::builtin::{BUILTINS, scanner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Relaxed);
        let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        COUNT.fetch_add(1, Relaxed);
        let now = if new >= l.size() {
            LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size()
        } else {
            LIVE.fetch_sub(l.size() - new, Relaxed) - (l.size() - new)
        };
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations, peak and live bytes (above what was live before) while `f` runs.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, f64, f64) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    COUNT.store(0, Relaxed);
    let v = f();
    let (live, peak, count) = (LIVE.load(Relaxed).saturating_sub(base), PEAK.load(Relaxed) - base, COUNT.load(Relaxed));
    (v, count, peak as f64 / 1e3, live as f64 / 1e3)
}

fn main() {
    let (engine, count, peak, live) = measure(|| Engine::default_set(b"bench-key").expect("default set compiles"));
    println!("Engine::default_set: {count} allocations, peak {peak:.1} kB, live after {live:.1} kB");
    drop(engine);
    println!("\nper built-in scanner (built alone):");
    for b in BUILTINS {
        let (s, count, peak, live) = measure(|| scanner(b).expect("built-in compiles"));
        println!("  {:16} {count:6} allocations, peak {peak:8.1} kB, live {live:7.1} kB", b.name);
        drop(s);
    }
}
