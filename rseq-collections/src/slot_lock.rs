//! One-word spin locks per slot, for the collections' own fallbacks (`fallback = path`):
//! without rseq a structure whose slots only its own code touches locks one slot with a
//! compare-exchange, where the runtime's generated fallback would go through its shared lock
//! table. Slots are interchangeable for these structures (a counter sums them, a buffer's pop
//! takes from whichever slot it locks), so a thread starts from its CPU's slot (as its rseq
//! area says; without one, the slot it used last, its CPU's when it last asked the kernel)
//! and takes any free one of the CPUs' slots. (Every `PerCpu` has one more, the generic fallback's
//! spare, which these locks never take: the structures' drains go over the CPUs' slots.)

use rseq_rt::PerCpu;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A thread re-reads its CPU (`sched_getcpu`) once in this many locks (a power of two), so that
/// threads on different CPUs keep to different cache lines after they move.
const HINT_REFRESH: u32 = 32;

std::thread_local! {
    /// The slot this thread locked last, where it tries first.
    static HINT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Locks taken by this thread, to re-read its CPU every `HINT_REFRESH`.
    static USES: Cell<u32> = const { Cell::new(0) };
}

#[inline(always)]
fn try_lock(lock: &AtomicUsize) -> bool {
    lock.compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
}

/// The CPUs' slots of `slots`: all but the spare.
#[inline(always)]
fn cpu_slots<T>(slots: &PerCpu<T>) -> usize {
    slots.len() - 1
}

/// The slot this thread should try first: its CPU's, from its rseq area where it has one
/// (a load); else the one it used last, its CPU's when it last asked the kernel (every
/// `HINT_REFRESH` locks: asking is a `getcpu` call, a system call on some architectures).
#[inline(always)]
fn preferred(n: usize) -> usize {
    if let Some(cpu) = rseq_rt::current_cpu_from_area() {
        return if cpu < n { cpu } else { cpu % n };
    }
    let uses = USES.get().wrapping_add(1);
    USES.set(uses);
    let mut hint = HINT.get();
    if uses & (HINT_REFRESH - 1) == 0 || hint >= n {
        hint = rseq_rt::current_cpu() % n;
        HINT.set(hint);
    }
    hint
}

/// Locks a free slot (`lock(slot)` from 0 to 1), without waiting: the thread's preferred slot
/// (see [`preferred`]), else the first free one from the current CPU's on; `None` if every slot
/// is held. Unlock with [`unlock`].
#[inline(always)]
pub(crate) fn try_lock_any<T>(slots: &PerCpu<T>, lock: impl Fn(&T) -> &AtomicUsize) -> Option<&T> {
    let n = cpu_slots(slots);
    let slot = slots.get(preferred(n))?;
    if try_lock(lock(slot)) {
        return Some(slot);
    }
    try_lock_other(slots, lock, n)
}

/// [`try_lock_any`] past its first try.
#[inline(never)]
fn try_lock_other<T>(slots: &PerCpu<T>, lock: impl Fn(&T) -> &AtomicUsize, n: usize) -> Option<&T> {
    // The preferred slot is held: by a thread sharing this CPU, or (with no rseq area, where
    // the preference is a hint read every `HINT_REFRESH` locks) this thread moved. Start over
    // from the current CPU.
    let first = rseq_rt::current_cpu() % n;
    (0..n).map(|step| (first + step) % n).find_map(|i| {
        let slot = slots.get(i)?;
        try_lock(lock(slot)).then(|| {
            HINT.set(i);
            slot
        })
    })
}

/// How many times [`lock_any`] re-reads its preferred slot, held, before it yields: a holder
/// running on another CPU lets go within this, one preempted on this CPU does not.
const HOLDER_SPINS: u32 = 64;

/// [`try_lock_any`], waiting while every slot is held. The caller must know that every holder
/// finishes without waiting for this thread.
///
/// Its preferred slot is its CPU's, so a holder that keeps it for a few dozen reads was most
/// likely preempted on this CPU: the thread yields once, to let it run to its unlock, before it
/// takes another CPU's slot (taking it at once made two CPUs' threads share one lock line until
/// the holder ran again).
#[inline(always)]
pub(crate) fn lock_any<T>(slots: &PerCpu<T>, lock: impl Fn(&T) -> &AtomicUsize + Copy) -> &T {
    let first = preferred(cpu_slots(slots));
    if let Some(slot) = slots.get(first) {
        if try_lock(lock(slot)) {
            return slot;
        }
    }
    lock_any_waiting(slots, lock, first)
}

/// [`lock_any`] past its first try on slot `first`.
#[inline(never)]
fn lock_any_waiting<T>(
    slots: &PerCpu<T>,
    lock: impl Fn(&T) -> &AtomicUsize + Copy,
    first: usize,
) -> &T {
    if let Some(slot) = slots.get(first) {
        for _ in 0..HOLDER_SPINS {
            core::hint::spin_loop();
            if lock(slot).load(Ordering::Relaxed) == 0 && try_lock(lock(slot)) {
                return slot;
            }
        }
        std::thread::yield_now();
    }
    loop {
        if let Some(slot) = try_lock_any(slots, lock) {
            return slot;
        }
        std::thread::yield_now();
    }
}

/// Locks one word (0 to 1), yielding while it is held. The caller must know that its holders
/// finish without waiting for this thread.
pub(crate) fn lock(lock: &AtomicUsize) {
    while !try_lock(lock) {
        std::thread::yield_now();
    }
}

/// Releases a lock taken by [`try_lock_any`], [`lock_any`] or [`lock`].
#[inline(always)]
pub(crate) fn unlock(lock: &AtomicUsize) {
    lock.store(0, Ordering::Release);
}

/// The slot this thread would try first (see [`preferred`]), for a path that must pick a slot
/// without taking its lock.
pub(crate) fn hinted<T>(slots: &PerCpu<T>) -> &T {
    slots
        .get(preferred(cpu_slots(slots)))
        .expect("a PerCpu has a slot per CPU index")
}

/// Returns once `lock` has been seen free (`SeqCst`: a locker that could not see a store the
/// caller made before this call held the lock, and has released it).
pub(crate) fn wait_until_free(lock: &AtomicUsize) {
    while lock.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}
