use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// One comparison per `if`.
#[critical_section]
fn set_outside(v: &PerCpu<AtomicUsize>, new: usize) -> bool {
    let a = load(v[cpu]);
    if a > 5 && a < 10 { fail(false) }
    commit::store(v[cpu], new);
    true
}

fn main() {}
