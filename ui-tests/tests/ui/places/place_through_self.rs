use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

pub struct Stats {
    hits: PerCpu<AtomicUsize>,
}

// A place through `self`'s field: the macro cannot see the field's `PerCpu` type.
impl Stats {
    #[critical_section]
    fn hit(hits: &Self) {
        commit::add(self.hits[cpu], 1);
    }
}

fn main() {}
