use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Indexing by a loaded value is not bounds-checked: the section must be `unsafe fn`.
#[repr(C)]
pub struct Buffer {
    pub len: AtomicU64,
    pub items: [AtomicU64; 16],
}

#[critical_section]
fn buffer_push(bufs: &PerCpu<Buffer>, item: u64) -> bool {
    let len = load(bufs[cpu].len);
    if len >= 16 { fail(false) }
    store(bufs[cpu].items[len], item);
    let grown = add(len, 1);
    commit::store_release(bufs[cpu].len, grown);
    true
}

fn main() {}
