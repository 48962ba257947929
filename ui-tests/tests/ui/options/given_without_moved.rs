use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// With `index = given(..)`, the section needs the value it returns when the CPU changed.
#[critical_section(index = given(on))]
fn add_on(counters: &PerCpu<AtomicU64>, on: usize, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}
