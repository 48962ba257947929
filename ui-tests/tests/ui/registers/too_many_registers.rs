use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

#[repr(C)]
pub struct Wide {
    pub w0: AtomicU64,
    pub w1: AtomicU64,
    pub w2: AtomicU64,
    pub w3: AtomicU64,
    pub w4: AtomicU64,
    pub w5: AtomicU64,
    pub w6: AtomicU64,
    pub w7: AtomicU64,
    pub w8: AtomicU64,
    pub w9: AtomicU64,
    pub w10: AtomicU64,
    pub w11: AtomicU64,
    pub w12: AtomicU64,
    pub w13: AtomicU64,
}

// 14 loaded values all live at once, plus the two slot bases: more than the 13 registers
// x86_64 offers to a section (values that are never live together would share registers).
#[critical_section]
fn copy_wide(wide: &PerCpu<Wide>, last: &PerCpu<AtomicU64>) {
    let v0 = load(wide[cpu].w0);
    let v1 = load(wide[cpu].w1);
    let v2 = load(wide[cpu].w2);
    let v3 = load(wide[cpu].w3);
    let v4 = load(wide[cpu].w4);
    let v5 = load(wide[cpu].w5);
    let v6 = load(wide[cpu].w6);
    let v7 = load(wide[cpu].w7);
    let v8 = load(wide[cpu].w8);
    let v9 = load(wide[cpu].w9);
    let v10 = load(wide[cpu].w10);
    let v11 = load(wide[cpu].w11);
    let v12 = load(wide[cpu].w12);
    let v13 = load(wide[cpu].w13);
    // Every value is still needed here: none can share a register.
    store(wide[cpu].w0, v13);
    store(wide[cpu].w1, v12);
    store(wide[cpu].w2, v11);
    store(wide[cpu].w3, v10);
    store(wide[cpu].w4, v9);
    store(wide[cpu].w5, v8);
    store(wide[cpu].w6, v7);
    store(wide[cpu].w7, v6);
    store(wide[cpu].w8, v5);
    store(wide[cpu].w9, v4);
    store(wide[cpu].w10, v3);
    store(wide[cpu].w11, v2);
    store(wide[cpu].w12, v1);
    commit::store(last[cpu], v0);
}

fn main() {}
