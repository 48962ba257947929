//! Runtime for Linux restartable sequences (rseq).
//!
//! - **Registration** that cooperates with glibc: glibc ≥ 2.35 registers every thread and the
//!   library uses its area; elsewhere (musl, older glibc, `GLIBC_TUNABLES=glibc.pthread.rseq=0`)
//!   the library registers its own thread-local area, lazily, and unregisters it at thread exit.
//!   See [`registration`] for the lifetimes.
//! - A process-wide [`Mode`]: `Rseq` or `Fallback` (valgrind, qemu-user, seccomp, old kernels,
//!   or `RSEQ_DISABLE=1`), decided once and queryable.
//! - Accessors: [`current_cpu`], [`current_mm_cid`], [`current_node`].
//! - Fences: [`fence_all`] and [`fence_cpu`] (membarrier; on kernels without its RSEQ command,
//!   running on every CPU in turn; or the fallback locks): see [`fence_mechanism`].
//! - [`barrier`]: typed `membarrier(2)`: asymmetric light/heavy fences, `sync_core`, the global
//!   barriers.
//! - [`PerCpu<T>`] storage, and the [`fallback`] lock table.
//! - [`word`]: which place types a section may load, and which it may write.
//! - [`inject`]: delay loops inside sections for stress tests (off unless asked for).
//!
//! Critical sections themselves are written with the `rseq` crate's `critical_section`
//! attribute, whose generated code talks to this crate through [`__private`].
//!
//! ```
//! use rseq::{mode, Mode};
//!
//! let cpu = rseq::current_cpu();
//! println!("on cpu {cpu}, mode {:?}, kernel features {:?}", mode(), rseq::features());
//! ```

#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("rseq-rt supports Linux only: restartable sequences are a Linux kernel feature");

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc64",
    target_arch = "powerpc",
    target_arch = "riscv64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)))]
compile_error!("rseq-rt is not supported on this target architecture");

pub mod abi;
pub mod barrier;
mod cpu;
mod error;
pub mod fallback;
pub mod inject;
mod membarrier;
mod percpu;
pub mod registration;
pub mod slice;
pub mod sys;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support;

pub use cpu::{current_cpu, current_cpu_from_area, current_mm_cid, current_node};
pub use error::{BarrierError, FenceError, RegistrationError};
pub use membarrier::{fence_all, fence_cpu, fence_mechanism, FenceMechanism};
pub use percpu::{CachePadded, PerCpu};
pub use registration::{
    features, mode, mode_if_decided, owner, register_current_thread, sections_run_on_rseq, stats,
    FallbackReason, Features, Mode, Owner, Stats, DISABLE_ENV,
};
pub use sys::possible_cpus;

/// The types a critical section's places may have, by what the section does with them.
///
/// The `critical_section` macro checks every place against one of these traits, so a place of
/// another type is a compile error on that place. They are sealed: the list is the safety
/// argument of the macro, so no other crate can extend it.
///
/// | a place that the section… | must be | for example |
/// |---|---|---|
/// | loads | [`Word`](crate::word::Word) | `usize`, `*mut T`, `NonNull<T>`, `AtomicUsize` |
/// | writes in a `PerCpu` slot (`p[cpu]…`) | [`SharedWord`](crate::word::SharedWord) | `AtomicUsize`, `AtomicPtr<T>` |
/// | writes through a pointer (`*ptr`, `(*ptr).field`) | [`PointerWord`](crate::word::PointerWord) | `usize`, `*mut T`, `Option<NonNull<T>>`, atomics |
///
/// A section holds its `PerCpu` by shared reference, and other code may hold `&T` to any slot
/// (through [`PerCpu::iter`](crate::PerCpu::iter)) while it runs: writing a plain `usize` there
/// would change memory behind a shared reference, which Rust forbids. Atomic words allow it.
/// Through a pointer, in an `unsafe fn`, plain words may be written: the section's callers
/// vouch that no reference to the place is live. `NonNull<T>` is never writable: a section
/// could store null into it.
pub mod word {
    mod sealed {
        pub trait Sealed {}
    }

    /// Types a critical section can load as one machine word. Places of any other type are
    /// rejected at compile time. Writing needs more: [`SharedWord`] for per-CPU slots,
    /// [`PointerWord`] for places reached through a pointer.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a word: critical-section places must be word-sized",
        label = "this place is not a word",
        note = "places hold `usize`, `isize`, `u64`/`i64` (on 64-bit targets), raw pointers, or their atomic forms (`AtomicUsize`, `AtomicU64`, `AtomicPtr<T>`, …)"
    )]
    pub trait Word: sealed::Sealed {}
    macro_rules! words {
        ($trait:path: $($t:ty),* $(,)?) => { $(impl $trait for $t {})* };
    }
    words!(sealed::Sealed: usize, isize);
    #[cfg(target_pointer_width = "64")]
    words!(sealed::Sealed: u64, i64);
    #[cfg(target_pointer_width = "32")]
    words!(sealed::Sealed: u32, i32);
    impl<T> sealed::Sealed for *mut T {}
    impl<T> sealed::Sealed for *const T {}
    impl<T> sealed::Sealed for Option<core::ptr::NonNull<T>> {}
    impl<T> sealed::Sealed for core::ptr::NonNull<T> {}
    impl<T> sealed::Sealed for core::sync::atomic::AtomicPtr<T> {}
    words!(Word: usize, isize);
    #[cfg(target_pointer_width = "64")]
    words!(Word: u64, i64);
    #[cfg(target_pointer_width = "32")]
    words!(Word: u32, i32);
    impl<T> Word for *mut T {}
    impl<T> Word for *const T {}
    impl<T> Word for Option<core::ptr::NonNull<T>> {}
    impl<T> Word for core::ptr::NonNull<T> {}

    /// Types a section may write in a `PerCpu` slot: the atomic words. The caller holds the
    /// `PerCpu` by shared reference, and other code may hold `&T` to any slot (`iter`, `get`),
    /// so a write needs interior mutability — and an atomic accepts every bit pattern, where
    /// `NonNull<T>` (never null) or a reference would not.
    #[diagnostic::on_unimplemented(
        message = "a critical section writes only atomic words in per-CPU slots, and `{Self}` is not one",
        label = "written here",
        note = "other code may hold a `&{Self}` to the slot while a section writes it, so it must be an atomic word: `AtomicUsize`, `AtomicIsize`, `AtomicU64`/`AtomicI64` (64-bit targets) or `AtomicPtr<T>`; plain words (`usize`, `NonNull<T>`, …) can only be loaded"
    )]
    pub trait SharedWord: sealed::Sealed {}
    // The atomic words are all three: loadable, writable in a slot and through a pointer.
    macro_rules! atomic_words {
        ($($t:ty),* $(,)?) => { $(impl sealed::Sealed for $t {} impl Word for $t {} impl SharedWord for $t {} impl PointerWord for $t {})* };
    }
    atomic_words!(
        core::sync::atomic::AtomicUsize,
        core::sync::atomic::AtomicIsize
    );
    #[cfg(target_pointer_width = "64")]
    atomic_words!(core::sync::atomic::AtomicU64, core::sync::atomic::AtomicI64);
    #[cfg(target_pointer_width = "32")]
    atomic_words!(core::sync::atomic::AtomicU32, core::sync::atomic::AtomicI32);
    impl<T> Word for core::sync::atomic::AtomicPtr<T> {}
    impl<T> SharedWord for core::sync::atomic::AtomicPtr<T> {}
    impl<T> PointerWord for core::sync::atomic::AtomicPtr<T> {}

    /// Types a section may write through a pointer (`*ptr`, `(*ptr).field`, in an `unsafe fn`
    /// whose callers vouch for the pointer): words that every bit pattern is a valid value of.
    /// `NonNull<T>` is not one: a section could store null into it.
    #[diagnostic::on_unimplemented(
        message = "a critical section cannot write `{Self}` through a pointer: it stores words, and not every word is a valid `{Self}`",
        label = "written here",
        note = "sections write words that every bit pattern is valid for: `usize`, `isize`, `u64`/`i64` (64-bit targets), `*mut T`, `*const T`, `Option<NonNull<T>>` or an atomic word; for a `NonNull<T>` field use `Option<NonNull<T>>` or `*mut T`"
    )]
    pub trait PointerWord: sealed::Sealed {}
    words!(PointerWord: usize, isize);
    #[cfg(target_pointer_width = "64")]
    words!(PointerWord: u64, i64);
    #[cfg(target_pointer_width = "32")]
    words!(PointerWord: u32, i32);
    impl<T> PointerWord for *mut T {}
    impl<T> PointerWord for *const T {}
    impl<T> PointerWord for Option<core::ptr::NonNull<T>> {}
}

/// The interface between code generated by the `critical_section` macro and this runtime. Not
/// for direct use: it changes with the macro, whose version is locked to this crate's.
#[doc(hidden)]
pub mod __private {
    pub use crate::fallback::{
        lock_slot, lock_slot_exact, lock_slot_on_cpu, with_locked_slot, SlotGuard,
    };
    #[cfg(feature = "unprotected-test-mode")]
    pub use crate::registration::testing::run_unprotected;
    pub use crate::registration::{
        after_abort, area_ptr, fallback_decided, with_temporary_registration, AbortAction,
        INDEX_LIMIT, MM_CID_LIMIT,
    };
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// Types a loaded value can be given (`let x: T = load(..)`): words that every bit pattern
    /// is a valid value of.
    #[diagnostic::on_unimplemented(
        message = "a loaded value cannot have type `{Self}`: it holds one machine word",
        label = "not a word-sized integer or raw pointer",
        note = "give loaded values a type among `usize`, `isize`, `u64`/`i64` (on 64-bit targets), `*mut T`, `*const T`"
    )]
    pub trait WordValue {
        /// Reinterprets a loaded word.
        fn from_word(word: usize) -> Self;
    }
    macro_rules! word_values {
        ($($t:ty),* $(,)?) => { $(impl WordValue for $t {
            #[inline(always)]
            fn from_word(word: usize) -> Self { word as $t }
        })* };
    }
    word_values!(usize, isize);
    #[cfg(target_pointer_width = "64")]
    word_values!(u64, i64);
    #[cfg(target_pointer_width = "32")]
    word_values!(u32, i32);
    impl<T> WordValue for *mut T {
        #[inline(always)]
        fn from_word(word: usize) -> Self {
            word as *mut T
        }
    }
    impl<T> WordValue for *const T {
        #[inline(always)]
        fn from_word(word: usize) -> Self {
            word as *const T
        }
    }

    /// Runs a section's cold path (retries, temporary registration, the fallback) out of line:
    /// the call, and the closure's copies of the section's words, exist only on the abort path,
    /// so the success path keeps no value in memory for it.
    #[cold]
    #[inline(never)]
    pub fn cold_with<A, R>(arg: A, f: impl FnOnce(A) -> R) -> R {
        f(arg)
    }

    /// Whether a `PerCpu` stride is a power of two (then the index is scaled by a shift).
    pub const fn stride_is_pow2(stride: usize) -> usize {
        stride.is_power_of_two() as usize
    }

    /// log2 of a power-of-two stride.
    pub const fn stride_shift(stride: usize) -> usize {
        stride.trailing_zeros() as usize
    }

    /// The fallback's load of a word place.
    ///
    /// # Safety
    /// `addr` is a valid, aligned word.
    #[inline(always)]
    pub unsafe fn load_word(addr: usize) -> usize {
        AtomicUsize::from_ptr(addr as *mut usize).load(Ordering::Relaxed)
    }

    /// The fallback's store.
    ///
    /// # Safety
    /// As [`load_word`].
    #[inline(always)]
    pub unsafe fn store_word(addr: usize, value: usize) {
        AtomicUsize::from_ptr(addr as *mut usize).store(value, Ordering::Relaxed)
    }

    /// The fallback's release commit.
    ///
    /// # Safety
    /// As [`load_word`].
    #[inline(always)]
    pub unsafe fn store_word_release(addr: usize, value: usize) {
        AtomicUsize::from_ptr(addr as *mut usize).store(value, Ordering::Release)
    }

    /// The fallback's add commit (a plain read-modify-write: the slot lock excludes the others).
    ///
    /// # Safety
    /// As [`load_word`].
    #[inline(always)]
    pub unsafe fn add_word(addr: usize, value: usize) {
        let word = AtomicUsize::from_ptr(addr as *mut usize);
        word.store(
            word.load(Ordering::Relaxed).wrapping_add(value),
            Ordering::Relaxed,
        )
    }

    /// The fallback's subtracting commit (`commit::sub`).
    ///
    /// # Safety
    /// As [`load_word`].
    #[inline(always)]
    pub unsafe fn sub_word(addr: usize, value: usize) {
        add_word(addr, value.wrapping_neg())
    }

    /// The fallback's `memcpy`.
    ///
    /// # Safety
    /// `src` and `dst` are valid for `len` bytes and do not overlap.
    #[inline(always)]
    pub unsafe fn copy_bytes(dst: usize, src: usize, len: usize) {
        core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len)
    }
}
