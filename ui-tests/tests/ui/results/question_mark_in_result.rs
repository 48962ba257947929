use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The result is returned as it is: no `?`.
#[critical_section]
fn store_checked(slots: &PerCpu<AtomicU64>, new: u64, check: Option<bool>) -> Option<bool> {
    commit::store(slots[cpu], new);
    Some(check?)
}

fn main() {}
