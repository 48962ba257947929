use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// When the first `fail` leaves, `b` has not been loaded.
#[critical_section]
fn both_nonzero(a: &PerCpu<AtomicU64>, b: &PerCpu<AtomicU64>) -> u64 {
    let x = load(a[cpu]);
    if x == 0 { fail(y as u64) }
    let y = load(b[cpu]);
    commit::store(a[cpu], y);
    x as u64
}

fn main() {}
