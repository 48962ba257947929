use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Nothing may follow the commit.
#[critical_section]
fn add_then_store(counters: &PerCpu<AtomicU64>, shadow: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
    store(shadow[cpu], n);
}

fn main() {}
