use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicUsize, Ordering};

const CAPACITY: usize = 4;

pub struct Limits;
impl Limits {
    pub const FLOOR: usize = 1;
}

// `sub` and `commit::sub` subtract a parameter, an integer or a constant; constants are named
// like `CAPACITY` or by a path (`Limits::FLOOR`).
#[critical_section]
fn take(v: &PerCpu<AtomicUsize>, n: usize) -> Option<usize> {
    let have = load(v[cpu]);
    if have < n { fail(None) }
    let left = sub(have, n);
    if left < Limits::FLOOR { fail(None) }
    commit::sub(v[cpu], n);
    Some(left)
}

#[critical_section]
fn fill(v: &PerCpu<AtomicUsize>) -> bool {
    let have = load(v[cpu]);
    if have >= CAPACITY { fail(false) }
    commit::store(v[cpu], CAPACITY);
    true
}

fn main() {
    let v: PerCpu<AtomicUsize> = PerCpu::default();
    // Each call works on the CPU it runs on: check the totals.
    let mut filled = 0;
    for _ in 0..3 {
        filled += fill(&v) as usize;
    }
    let total: usize = v.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, filled * CAPACITY);
    let mut taken = 0;
    for _ in 0..3 {
        if let Some(left) = take(&v, 2) {
            assert!(left >= 1 && left < CAPACITY);
            taken += 2;
        }
    }
    let after: usize = v.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(after, total - taken);
}
