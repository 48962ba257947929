use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `null` is the null pointer (0); it cannot name a value.
#[critical_section]
fn clear(counters: &PerCpu<AtomicU64>) {
    let null = load(counters[cpu]);
    commit::store(counters[cpu], 0);
}

fn main() {}
