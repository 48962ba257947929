//! Per-CPU data structures built with the `critical_section` language only (no hand-written
//! assembly), re-exported by the `rseq` crate as `rseq::collections`.
//!
//! The sections here name the runtime with `crate = ::rseq_rt`, since this crate sits below the
//! `rseq` facade.

pub mod alloc;
pub mod buffer;
pub mod counter;
pub mod pool;
pub mod stack;
