use rseq::{critical_section, PerCpu};
use std::ptr::NonNull;

// `NonNull` is never null: a section could store any word into it.
#[critical_section]
fn clear(slots: &PerCpu<NonNull<u8>>) {
    commit::store(slots[cpu], null);
}

fn main() {}
