use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// A typo in the step a `let` runs.
#[critical_section]
fn swap(v: &PerCpu<AtomicUsize>, new: usize) -> usize {
    let old = lod(v[cpu]);
    commit::store(v[cpu], new);
    old
}

fn main() {}
