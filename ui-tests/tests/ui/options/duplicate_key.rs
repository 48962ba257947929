use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Each option is given once.
#[critical_section(index = mm_cid, index = cpu_id)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}
