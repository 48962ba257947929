use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Parameters used as values are cast to a word: a `String` is not one.
#[critical_section]
fn store_name(slots: &PerCpu<AtomicU64>, name: String) {
    commit::store(slots[cpu], name);
}

fn main() {}
