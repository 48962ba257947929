use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// There is no `retries` option: sections retry until they commit or fail.
#[critical_section(retries = 3)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}
