use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

fn double(x: usize) -> usize {
    x * 2
}

// `{ expression }` runs before the section, when `x` is not loaded yet.
#[critical_section]
fn double_slot(v: &PerCpu<AtomicUsize>) {
    let x = load(v[cpu]);
    commit::store(v[cpu], { double(x) });
}

fn main() {}
