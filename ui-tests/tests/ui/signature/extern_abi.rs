use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Sections use the Rust ABI.
#[critical_section]
extern "C" fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}
