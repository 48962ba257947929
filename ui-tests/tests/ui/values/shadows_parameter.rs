use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A loaded value cannot reuse a parameter's name.
#[critical_section]
fn store_twice(counters: &PerCpu<AtomicU64>, n: u64) {
    let n = load(counters[cpu]);
    commit::store(counters[cpu], n);
}

fn main() {}
