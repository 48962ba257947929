use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// What `sub` subtracts is negated before the section: not a loaded value.
#[critical_section]
fn difference(a: &PerCpu<AtomicUsize>, b: &PerCpu<AtomicUsize>) -> usize {
    let x = load(a[cpu]);
    let y = load(b[cpu]);
    let d = sub(x, y);
    commit::store(a[cpu], d);
    d
}

fn main() {}
