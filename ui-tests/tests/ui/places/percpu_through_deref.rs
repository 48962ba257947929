use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `*counters` is not a place: the current slot is `counters[cpu]`.
/// # Safety
/// None: the mistake is the place.
#[critical_section]
unsafe fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(*counters, n);
}

fn main() {}
