use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The only thing an `if` can do is leave through `fail(value)`.
#[critical_section]
fn store_if_empty(slots: &PerCpu<AtomicU64>, new: u64) -> bool {
    let seen = load(slots[cpu]);
    if seen != 0 { skip(false) }
    commit::store(slots[cpu], new);
    true
}

fn main() {}
