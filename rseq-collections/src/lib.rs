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

/// Hooks for the tests of the fallback paths. Not part of the API.
#[doc(hidden)]
pub mod __test_hooks {
    use core::sync::atomic::{AtomicPtr, Ordering};

    static COUNTER_LOCKED: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

    /// Sets the function that `PerCpuCounter::add` calls without rseq while it holds a lock,
    /// between reading the count and writing it back (`true` on the path of a signal handler
    /// that interrupted an add). For tests: it must not panic.
    pub fn set_counter_locked(hook: Option<fn(bool)>) {
        let hook = hook.map_or(core::ptr::null_mut(), |f| f as *mut ());
        COUNTER_LOCKED.store(hook, Ordering::SeqCst);
    }

    pub(crate) fn counter_locked(nested: bool) {
        let hook = COUNTER_LOCKED.load(Ordering::Relaxed);
        if !hook.is_null() {
            // SAFETY: only `set_counter_locked` stores a non-null pointer, a `fn(bool)`.
            let hook: fn(bool) = unsafe { core::mem::transmute::<*mut (), fn(bool)>(hook) };
            hook(nested);
        }
    }
}
