use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

#[repr(C)]
struct Stats {
    hits: AtomicUsize,
    misses: usize,
}

// A plain field of a slot is as borrowable as a plain slot.
#[critical_section]
fn miss(stats: &PerCpu<Stats>) {
    commit::add(stats[cpu].misses, 1);
}

fn main() {}
