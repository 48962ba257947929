//! Without rseq, a section with `fallback = path` calls `path` with its own arguments and
//! returns its result; the generated slot-locked body never runs.
use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicUsize, Ordering};

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Adds `n` to the current slot and returns what it held.
///
/// # Safety
/// `extra` points at a live word.
#[critical_section(fallback = add_elsewhere)]
unsafe fn add(counters: &PerCpu<AtomicUsize>, extra: *const AtomicUsize, n: usize) -> usize {
    let old = load(counters[cpu]);
    commit::add(counters[cpu], n);
    old
}

/// # Safety
/// As `add`.
unsafe fn add_elsewhere(_counters: &PerCpu<AtomicUsize>, extra: *const AtomicUsize, n: usize) -> usize {
    CALLS.fetch_add(1, Ordering::SeqCst);
    unsafe { &*extra }.fetch_add(n, Ordering::SeqCst)
}

fn main() {
    // Before the first section decides the mode.
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("RSEQ_DISABLE", "1") };
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
    let extra = AtomicUsize::new(0);
    // SAFETY: `extra` is live.
    assert_eq!(unsafe { add(&counters, &extra, 2) }, 0);
    assert_eq!(unsafe { add(&counters, &extra, 3) }, 2);
    assert!(!rseq::mode().is_rseq());
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(extra.load(Ordering::SeqCst), 5);
    assert!(counters.iter().all(|c| c.load(Ordering::SeqCst) == 0));
    assert_eq!(rseq::fallback::thread_fallback_sections(), 0, "the slot-locked body never ran");
}
