//! Per-CPU data structures built with the `critical_section` language only (no hand-written
//! assembly), re-exported by the `rseq` crate as `rseq::collections`.
//!
//! The sections here name the runtime with `crate = ::rseq_rt`, since this crate sits below the
//! `rseq` facade.

pub mod alloc;
pub mod buffer;
pub mod counter;
pub mod pool;
mod slot_lock;
pub mod stack;

/// Hooks for the tests of the fallback paths. Not part of the API.
#[doc(hidden)]
pub mod __test_hooks {
    use core::sync::atomic::{AtomicPtr, Ordering};

    /// Where a collection's own fallback calls the hook: with a lock held, between reading
    /// what it changes and writing it back.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Locked {
        /// `PerCpuCounter::add`, under a slot lock.
        CounterAdd,
        /// `PerCpuCounter::add` in a signal handler that interrupted an add (the nested path).
        CounterNested,
        /// `PerCpuBuffer::push`, under a slot lock, after it stores the item and before it
        /// grows the length.
        BufferPush,
        /// `PerCpuBuffer::pop`, under a slot lock, before it stores the new length.
        BufferPop,
    }

    static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

    /// Sets the function the collections' own fallbacks call while they hold a lock. For tests:
    /// it must not panic.
    pub fn set_locked_hook(hook: Option<fn(Locked)>) {
        let hook = hook.map_or(core::ptr::null_mut(), |f| f as *mut ());
        HOOK.store(hook, Ordering::SeqCst);
    }

    #[inline(always)]
    pub(crate) fn locked(at: Locked) {
        let hook = HOOK.load(Ordering::Relaxed);
        if !hook.is_null() {
            // SAFETY: only `set_locked_hook` stores a non-null pointer, a `fn(Locked)`.
            let hook: fn(Locked) = unsafe { core::mem::transmute::<*mut (), fn(Locked)>(hook) };
            hook(at);
        }
    }
}
