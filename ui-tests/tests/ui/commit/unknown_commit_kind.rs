use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// There is no `commit::or`.
#[critical_section]
fn set_bits(flags: &PerCpu<AtomicU64>, bits: u64) {
    commit::or(flags[cpu], bits);
}

fn main() {}
