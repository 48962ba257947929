use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `add(place, value)` as a statement is only a commit (`let x = add(a, b)` is a sum).
#[critical_section]
fn add_both(counters: &PerCpu<AtomicU64>, totals: &PerCpu<AtomicU64>, n: u64) {
    add(totals[cpu], n);
    commit::add(counters[cpu], n);
}

fn main() {}
