use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `store_release` is only a commit, not a speculative step.
#[critical_section]
fn publish(ready: &PerCpu<AtomicU64>, counters: &PerCpu<AtomicU64>, n: u64) {
    store_release(ready[cpu], n);
    commit::store(counters[cpu], n);
}

fn main() {}
