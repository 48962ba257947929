use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `given(..)` names the parameter holding the CPU the caller computed.
#[critical_section(index = given(on), moved = false)]
fn add_on(counters: &PerCpu<AtomicU64>, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}
