use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Each value has one name, loaded once.
#[critical_section]
fn copy_b_to_a(a: &PerCpu<AtomicU64>, b: &PerCpu<AtomicU64>) {
    let v = load(a[cpu]);
    if v != 0 { fail() }
    let v = load(b[cpu]);
    commit::store(a[cpu], v);
}

fn main() {}
