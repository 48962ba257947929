use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The body has no commit step: nothing is ever published.
#[critical_section]
fn check(counters: &PerCpu<AtomicU64>) {
    let seen = load(counters[cpu]);
    if seen == 0 { fail() }
}

fn main() {}
