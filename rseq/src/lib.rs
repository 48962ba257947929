//! Restartable sequences (rseq) for Rust.
//!
//! See the README for an overview; the language of critical sections is documented on
//! [`critical_section`]. Everything from the runtime ([`rseq_rt`]) is re-exported here, so this
//! is the one dependency users add.

pub use rseq_rt::*;

/// Turns a function whose body is a list of per-CPU steps into a restartable sequence.
///
/// placeholder: documented below once the language is final.
pub use rseq_macros::critical_section;
