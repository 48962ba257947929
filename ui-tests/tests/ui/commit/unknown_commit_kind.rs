use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// There is no `commit::sub`.
#[critical_section]
fn sub(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::sub(counters[cpu], n);
}

fn main() {}
