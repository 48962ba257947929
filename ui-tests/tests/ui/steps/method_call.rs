use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Methods cannot run between the start and the commit.
#[critical_section]
fn add_one_more(counters: &PerCpu<AtomicU64>, n: u64) {
    n.wrapping_add(1);
    commit::add(counters[cpu], n);
}

fn main() {}
