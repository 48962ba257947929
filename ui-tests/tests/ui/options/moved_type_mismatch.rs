use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `moved` is returned from the function: it must have its return type.
#[critical_section(index = given(on), moved = 0)]
fn add_on(counters: &PerCpu<AtomicU64>, on: usize, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}
