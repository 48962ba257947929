//! Restartable sequences (rseq) for Rust. Re-exports the runtime.
pub use rseq_rt::*;
