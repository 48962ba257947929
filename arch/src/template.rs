//! The architecture-neutral description of a critical section's instructions, which each
//! architecture module turns into `asm!` template lines.
//!
//! Operands are named the way the macro declares them in the `asm!` block (`{area}`, `{v0}`,
//! …); the templates only place those names, so they can be unit-tested on the host.

use alloc::string::String;

/// A value operand: a register operand's name, or an immediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The name of a register operand.
    Reg(String),
    /// An integer written into the instruction.
    Imm(i64),
}

/// A memory address: `base + index * scale + disp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Register operand holding the base address.
    pub base: String,
    /// Optional register operand added to the base, and its scale (1 or the word size).
    pub index: Option<(String, u8)>,
    /// Optional `const` operand name added as a displacement (a field offset).
    pub disp: Option<String>,
}

/// An unsigned comparison (the DSL compares words as unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cond {
    /// The condition with its operands swapped (`a < b` is `b > a`).
    pub fn swapped(self) -> Cond {
        match self {
            Cond::Eq => Cond::Eq,
            Cond::Ne => Cond::Ne,
            Cond::Lt => Cond::Gt,
            Cond::Le => Cond::Ge,
            Cond::Gt => Cond::Lt,
            Cond::Ge => Cond::Le,
        }
    }
}

/// Which kernel-maintained field a section indexes its per-CPU data by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexField {
    /// `cpu_id`.
    CpuId,
    /// `mm_cid`.
    MmCid,
}

impl IndexField {
    /// The field's byte offset in `struct rseq`.
    pub fn offset(self) -> usize {
        match self {
            IndexField::CpuId => crate::area::CPU_ID,
            IndexField::MmCid => crate::area::MM_CID,
        }
    }
}

/// The local labels of the `unique`-th copy loop of a section: its top and its end (30, 31,
/// 32, … — never labels made of 0s and 1s only, which Intel syntax reads as binary).
pub fn memcpy_labels(unique: u32) -> (u32, u32) {
    (30 + 2 * unique, 31 + 2 * unique)
}

/// How the commit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// A plain word store.
    Store,
    /// A store ordered after every earlier load and store of the section.
    StoreRelease,
    /// A word add to memory (one read-modify-write instruction, not atomic across CPUs).
    Add,
}

/// The smallest immediate [`Op::AddValue`] takes (every target encodes an add of
/// `ADD_IMM_MIN..=i32::MAX`, or of a register): `sub(x, 1)` needs no register for its `-1`.
pub const ADD_IMM_MIN: i64 = -255;

/// One piece of a critical section, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Declare the descriptor and its table entries, store its address into the area's
    /// `rseq_cs`, and mark the start of the section. `exits` are the label operands the section
    /// may leave through besides abort and commit.
    Begin {
        /// Register operand holding the thread's area address.
        area: String,
        /// A scratch register operand.
        scratch: String,
        /// Label operands of the other exits (for `__rseq_exit_point_array`).
        exits: alloc::vec::Vec<String>,
    },
    /// Read the CPU index into `dst` and abort unless it is below the runtime's limit
    /// (`limit` is a `sym` operand naming a `u32`).
    ReadIndex {
        /// Destination register operand.
        dst: String,
        /// Area register operand.
        area: String,
        /// Which field.
        field: IndexField,
        /// `sym` operand of the limit.
        limit: String,
    },
    /// Leave through `exit` unless the index equals `expected` (caller-supplied CPU).
    CheckIndex {
        /// Index register operand.
        index: String,
        /// Register operand with the caller's CPU.
        expected: String,
        /// Label operand to leave through.
        exit: String,
    },
    /// `dst = index * stride`. `stride`, `pow2` (1 or 0) and `shift` are `const` operand names.
    Scale {
        /// Destination register operand.
        dst: String,
        /// Index register operand.
        index: String,
        /// `const` operand: the stride.
        stride: String,
        /// `const` operand: 1 when the stride is a power of two.
        pow2: String,
        /// `const` operand: log2 of the stride when it is.
        shift: String,
    },
    /// `base += offset` (turns a slot-0 base into the current slot's address).
    AddTo {
        /// Register operand to add to.
        base: String,
        /// Register operand added.
        offset: String,
    },
    /// Load a word.
    Load {
        /// Destination register operand.
        dst: String,
        /// Source address.
        addr: Addr,
    },
    /// Copy a register into the stack slot `slot` (word index) of the `slots` array.
    Save {
        /// Register operand with the slots' address.
        slots: String,
        /// Word index.
        slot: usize,
        /// Register operand to save.
        src: String,
    },
    /// Compare and leave through `exit` when `a cond b` holds.
    ExitIf {
        /// Left operand.
        a: Value,
        /// Condition.
        cond: Cond,
        /// Right operand.
        b: Value,
        /// Label operand.
        exit: String,
    },
    /// A speculative word store.
    Store {
        /// Destination address.
        addr: Addr,
        /// Stored value.
        value: Value,
    },
    /// `dst = src` (a register copy, or an immediate load).
    Copy {
        /// Destination register operand.
        dst: String,
        /// Source.
        src: Value,
    },
    /// `dst += value` (wrapping), in a register. An immediate is at least [`ADD_IMM_MIN`].
    AddValue {
        /// Register operand added to.
        dst: String,
        /// Value added.
        value: Value,
    },
    /// Copy `len` bytes from `src` to `dst` (all three registers are consumed).
    Memcpy {
        /// Destination address register operand.
        dst: String,
        /// Source address register operand.
        src: String,
        /// Length register operand.
        len: String,
        /// Scratch register operand.
        scratch: String,
        /// A number that makes this copy's local labels unique within the block.
        unique: u32,
    },
    /// The commit: the last instruction of the section.
    Commit {
        /// What kind.
        kind: CommitKind,
        /// Destination address.
        addr: Addr,
        /// Value stored or added.
        value: Value,
    },
    /// A fault-injection delay (only with the macro's `inject-delays` feature): load the `u32`
    /// at index `point` of the `counts` array (a `sym` operand naming a `[AtomicU32; N]`) and
    /// spin that many times in `reg`, widening the window in which the kernel may abort the
    /// section at this point. `reg` is free at every step boundary.
    Delay {
        /// `sym` operand of the counts array.
        counts: String,
        /// Index into the array (a byte offset of `4 * point`).
        point: usize,
        /// Register operand the loop counts down in.
        reg: String,
    },
    /// End the section and emit the abort handler (signature, then a jump to `abort`).
    End {
        /// Label operand of the abort exit.
        abort: String,
    },
}
