use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The function returns a `bool`, but the body does not say which one on commit.
#[critical_section]
fn store_if_empty(slots: &PerCpu<AtomicU64>, new: u64) -> bool {
    let seen = load(slots[cpu]);
    if seen != 0 { fail(false) }
    commit::store(slots[cpu], new);
}

fn main() {}
