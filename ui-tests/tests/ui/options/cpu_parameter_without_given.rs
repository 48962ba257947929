use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// `v[cpu]` is the current CPU's slot whatever the parameter says: `index = given(cpu)` is
// missing.
#[critical_section]
fn add_on(v: &PerCpu<AtomicUsize>, cpu: usize, n: usize) {
    commit::add(v[cpu], n);
}

fn main() {}
