use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `totals` is a slice, not per-CPU storage: it cannot be indexed by `cpu`.
#[critical_section]
fn flush(counters: &PerCpu<AtomicU64>, totals: &[AtomicU64]) {
    let count = load(counters[cpu]);
    commit::add(totals[cpu], count);
}

fn main() {}
