use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// The result runs after the section: it cannot load.
#[critical_section]
fn add_and_read(v: &PerCpu<AtomicUsize>, n: usize) -> usize {
    commit::add(v[cpu], n);
    load(v[cpu])
}

fn main() {}
