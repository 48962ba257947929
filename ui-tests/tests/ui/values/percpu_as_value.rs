use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `counters` is per-CPU storage, not a word: its slot is `counters[cpu]`.
#[critical_section]
fn store_address(counters: &PerCpu<AtomicU64>, last: &PerCpu<AtomicU64>) {
    commit::store(last[cpu], counters);
}

fn main() {}
