use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The index is `cpu_id`, `mm_cid` or `given(parameter)`.
#[critical_section(index = node_id)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}
