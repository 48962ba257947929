//! [`PerCpuCounter`]: a counter whose increments touch only the current CPU's cache line, with
//! an exact, concurrent reset ([`PerCpuCounter::take`]).
//!
//! # Design
//!
//! Each CPU slot holds two *banks* (two `usize` words); a per-counter word, `active`, says which
//! bank increments go to (0 or 1). [`add`](PerCpuCounter::add) is one critical section:
//!
//! ```text
//! bank = load(*active)                  // inside the section
//! commit: slots[cpu].banks[bank] += n   // one add instruction, the commit
//! ```
//!
//! Loading `active` *inside* the section is what makes [`take`](PerCpuCounter::take) exact.
//! `take` (serialized with the other takers by a mutex) does:
//!
//! 1. flip `active` (old → new), a `SeqCst` store;
//! 2. [`rseq_rt::fence_all`]: when it returns, every section that was running has committed or
//!    been restarted. A section that loaded the *old* index therefore either committed its add
//!    to the old bank before the fence returned, or restarts and loads the *new* index. No add
//!    can land in the old bank afterwards (until the next flip, which the mutex orders after
//!    this take);
//! 3. sum the old bank over all slots and zero it (atomic swaps; `membarrier` is a full
//!    barrier on every CPU that ran a section, so every committed add is visible).
//!
//! Every add is thus counted by exactly one take, or is still in the counter: the adds a take
//! returns are exactly those that loaded the index it flipped away from (its linearization
//! point is the flip), so the takes' results plus a final [`sum`](PerCpuCounter::sum) equal
//! the total added, whatever ran concurrently.
//!
//! # Without rseq
//!
//! When sections cannot run on rseq (`Fallback` mode), `add` runs its own fallback
//! (`fallback = add_locked`) instead of the runtime's slot-locked body, to cost about what a
//! per-CPU atomic would. Each slot has a one-word spin lock of its own (`lock`):
//!
//! ```text
//! lock slot i (compare-exchange 0 → 1)  // i: the thread's last slot, else a free one
//! bank = load(active)
//! slots[i].banks[bank] += n             // a plain load and store under the lock
//! unlock (store 0, release)
//! ```
//!
//! and `take`, after the flip and the fence, waits until it has seen every slot's `lock` free
//! (`SeqCst` on both sides: either the add's lock is seen, and waited for, or the add reads the
//! new index). The argument is then the one above: an add that read the old index has
//! finished before the drain.
//!
//! **Signal handlers.** A handler that runs `add` while its own thread is inside `add`'s locked
//! region must not wait for that lock. The thread marks the region (a thread-local flag, set
//! before it tries a lock and cleared after it unlocks), and a handler that finds the mark
//! takes another path: with the asynchronous signals blocked, it takes the counter's one
//! `nested_lock` and adds to the slot's `nested` bank. No wait can hang:
//! - a `lock` holder's handlers never wait for a `lock`, so every holder finishes (when it is
//!   scheduled);
//! - a `nested_lock` holder runs with signals blocked, so it finishes too.
//!
//! `take` waits for `nested_lock` as for `lock`, and drains `nested[old]` with `banks[old]`.
//! Only adds that interrupt an add pay the two `pthread_sigmask` calls.
//!
//! # Fence errors
//!
//! [`try_take`](PerCpuCounter::try_take) returns the [`FenceError`] if the fence fails: then
//! it cannot know whether sections are still adding to the old bank, so it flips `active`
//! back and leaves both banks as they are. Nothing is lost: the counts stay in the counter and
//! a later take returns them (the "since the previous take" split of that failed attempt is
//! what is given up). [`take`](PerCpuCounter::take) panics with the error instead. In
//! `Fallback` mode the fence cannot fail; in `Rseq` mode it only fails if `membarrier`, which
//! worked when the mode was decided, stops working.

use crate::__test_hooks::Locked;
use crate::slot_lock;
use rseq_macros::critical_section;
use rseq_rt::{CachePadded, FenceError, PerCpu};
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One CPU's counts: the active bank receives adds, the other is drained by `take`.
#[repr(C)]
#[derive(Default)]
struct Banks {
    banks: [AtomicUsize; 2],
    /// Without rseq only: 1 while an add works on `banks` under it.
    lock: AtomicUsize,
    /// Without rseq only: adds made by signal handlers that interrupted an add (under the
    /// counter's `nested_lock`).
    nested: [AtomicUsize; 2],
}

impl Banks {
    fn bank(&self, bank: usize) -> usize {
        let nested = self.nested[bank].load(Ordering::SeqCst);
        self.banks[bank].load(Ordering::SeqCst).wrapping_add(nested)
    }
}

/// `slots[cpu].banks[*active] += n`.
///
/// # Safety
/// `active` points at a live word holding 0 or 1 (the index is not bounds-checked), and
/// `nested_lock` at a live word (read only without rseq).
#[critical_section(crate = ::rseq_rt, fallback = add_locked)]
unsafe fn add_to_active(
    slots: &PerCpu<Banks>,
    active: *const AtomicUsize,
    nested_lock: *const AtomicUsize,
    n: usize,
) {
    let bank = load(*active);
    commit::add(slots[cpu].banks[bank], n);
}

std::thread_local! {
    /// Without rseq: set while this thread is in `add_locked`'s locked region (from before it
    /// tries a lock to after it unlocks); a signal handler's add that sees it takes the nested
    /// path.
    static IN_ADD: Cell<bool> = const { Cell::new(false) };
}

/// `add` without rseq (module documentation, "Without rseq").
///
/// # Safety
/// As [`add_to_active`].
#[cold]
unsafe fn add_locked(
    slots: &PerCpu<Banks>,
    active: *const AtomicUsize,
    nested_lock: *const AtomicUsize,
    n: usize,
) {
    // SAFETY: the caller vouches for both words.
    let (active, nested_lock) = unsafe { (&*active, &*nested_lock) };
    if IN_ADD.get() {
        return add_nested(slots, active, nested_lock, n);
    }
    IN_ADD.set(true);
    let slot = slot_lock::lock_any(slots, |s| &s.lock);
    let bank = active.load(Ordering::SeqCst);
    let word = &slot.banks[bank];
    let count = word.load(Ordering::Relaxed);
    crate::__test_hooks::locked(Locked::CounterAdd);
    word.store(count.wrapping_add(n), Ordering::Relaxed);
    slot_lock::unlock(&slot.lock);
    IN_ADD.set(false);
}

/// An add in a signal handler that interrupted this thread's `add_locked`: with the
/// asynchronous signals blocked, under the counter's `nested_lock`, into the `nested` bank of
/// the thread's slot.
#[cold]
fn add_nested(slots: &PerCpu<Banks>, active: &AtomicUsize, nested_lock: &AtomicUsize, n: usize) {
    rseq_rt::fallback::with_async_signals_blocked(|| {
        // Its holders run with signals blocked, so they finish.
        slot_lock::lock(nested_lock);
        let slot = slot_lock::hinted(slots);
        let word = &slot.nested[active.load(Ordering::SeqCst)];
        let count = word.load(Ordering::Relaxed);
        crate::__test_hooks::locked(Locked::CounterNested);
        word.store(count.wrapping_add(n), Ordering::Relaxed);
        slot_lock::unlock(nested_lock);
    })
}

/// A counter split over the CPUs: [`add`](Self::add) is a per-CPU critical section (no atomic
/// read-modify-write, no shared cache line written), [`sum`](Self::sum) adds the slots up, and
/// [`take`](Self::take) returns and resets the count exactly, even while other threads add. See
/// the [module documentation](self) for the design.
///
/// Counts are `usize`, the word a section commits with one instruction on every target: 64 bits
/// on 64-bit targets, 32 bits on 32-bit ones (i686, armv7, powerpc), where no single instruction
/// adds a 64-bit value. Arithmetic wraps modulo 2<sup>`usize::BITS`</sup>, like
/// `usize::wrapping_add`; [`sub`](Self::sub) adds the two's complement, so a counter that goes up
/// and down still sums exactly, and a count that passes `usize::MAX` between two takes is exact
/// modulo that. On a 32-bit target, [`take`](Self::take) often enough (or count in coarser
/// units) if one period may pass 2³² − 1.
///
/// ```
/// use rseq::collections::counter::PerCpuCounter;
///
/// let requests = PerCpuCounter::new();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| (0..1000).for_each(|_| requests.add(1)));
///     }
/// });
/// assert_eq!(requests.sum(), 4000);
/// assert_eq!(requests.take(), 4000);
/// assert_eq!(requests.sum(), 0);
/// ```
pub struct PerCpuCounter {
    slots: PerCpu<Banks>,
    /// The bank `add` writes: 0 or 1. Read by every add on every CPU, written by `take` only,
    /// so it has a cache line of its own.
    active: CachePadded<AtomicUsize>,
    /// Without rseq only: held by an add in a signal handler that interrupted its thread's add
    /// (module documentation).
    nested_lock: AtomicUsize,
    /// Serializes `take` (and `sum`, which must not see a bank half-drained).
    takers: Mutex<()>,
}

impl PerCpuCounter {
    /// A counter at zero.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// assert_eq!(c.sum(), 0);
    /// ```
    pub fn new() -> Self {
        PerCpuCounter {
            slots: PerCpu::default(),
            active: CachePadded::new(AtomicUsize::new(0)),
            nested_lock: AtomicUsize::new(0),
            takers: Mutex::new(()),
        }
    }

    /// Adds `n` (wrapping) to the current CPU's slot: one critical section, no atomic
    /// instruction.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(5);
    /// c.add(usize::MAX); // wraps: -1
    /// assert_eq!(c.sum(), 4);
    /// ```
    #[inline]
    pub fn add(&self, n: usize) {
        // SAFETY: `active` is a field of `self` and only ever holds 0 or 1; so is `nested_lock`.
        unsafe { add_to_active(&self.slots, &*self.active, &self.nested_lock, n) }
    }

    /// Subtracts `n` (wrapping): adds its two's complement.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(10);
    /// c.sub(3);
    /// assert_eq!(c.sum(), 7);
    /// ```
    #[inline]
    pub fn sub(&self, n: usize) {
        self.add(n.wrapping_neg())
    }

    /// The count since the last [`take`](Self::take) (or creation): exact when no thread adds
    /// concurrently; otherwise some value the count had, or will have, while the call ran —
    /// an approximation (adds on slots already read are missed). Waits for a concurrent `take`
    /// to finish, so it never sees a bank half-drained.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(2);
    /// c.add(3);
    /// assert_eq!(c.sum(), 5);
    /// ```
    pub fn sum(&self) -> usize {
        let _takers = self.takers.lock().unwrap_or_else(|p| p.into_inner());
        self.slots.iter().fold(0usize, |acc, slot| {
            acc.wrapping_add(slot.bank(0)).wrapping_add(slot.bank(1))
        })
    }

    /// Returns the count since the previous take and resets it to zero, exactly, even while
    /// other threads add: every add is returned by exactly one take (or is still counted by
    /// [`sum`](Self::sum)). Concurrent takes are serialized.
    ///
    /// Costs a process-wide fence ([`rseq_rt::fence_all`]: a `membarrier` system call that
    /// interrupts the CPUs running this process, or, in `Fallback` mode, taking every slot
    /// lock once).
    ///
    /// # Panics
    /// If the fence fails (see [`try_take`](Self::try_take), which returns the error instead
    /// and loses nothing).
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(7);
    /// assert_eq!(c.take(), 7);
    /// c.add(1);
    /// assert_eq!(c.take(), 1);
    /// assert_eq!(c.take(), 0);
    /// ```
    pub fn take(&self) -> usize {
        self.try_take().unwrap_or_else(|e| {
            panic!(
                "PerCpuCounter::take: the fence failed ({e}); the counts are kept (use try_take to handle this)"
            )
        })
    }

    /// Like [`take`](Self::take), returning the fence's error instead of panicking. On error
    /// the counter is left as it was before the call (the active bank is flipped back) and no
    /// count is lost: a later take returns it.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(3);
    /// assert_eq!(c.try_take(), Ok(3));
    /// ```
    pub fn try_take(&self) -> Result<usize, FenceError> {
        let _takers = self.takers.lock().unwrap_or_else(|p| p.into_inner());
        // Only takers write `active`, and the mutex excludes the others.
        let old = self.active.load(Ordering::Relaxed);
        self.active.store(old ^ 1, Ordering::SeqCst);
        if let Err(e) = rseq_rt::fence_all() {
            // Some section may still add to `old`: leave it alone, and send adds back to it.
            self.active.store(old, Ordering::SeqCst);
            return Err(e);
        }
        // Without rseq, adds hold these locks instead of running sections.
        self.slots
            .iter()
            .for_each(|slot| slot_lock::wait_until_free(&slot.lock));
        slot_lock::wait_until_free(&self.nested_lock);
        // No section adds to `old` any more (see the module documentation).
        Ok(self.slots.iter().fold(0usize, |acc, slot| {
            let nested = slot.nested[old].swap(0, Ordering::SeqCst);
            acc.wrapping_add(slot.banks[old].swap(0, Ordering::SeqCst))
                .wrapping_add(nested)
        }))
    }

    /// The counts held for each CPU (both banks), a snapshot: where the adds landed.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(1);
    /// assert_eq!(c.per_cpu().iter().sum::<usize>(), 1);
    /// assert_eq!(c.per_cpu().len(), rseq::possible_cpus() + 1); // the spare slot too
    /// ```
    pub fn per_cpu(&self) -> Vec<usize> {
        let _takers = self.takers.lock().unwrap_or_else(|p| p.into_inner());
        self.slots
            .iter()
            .map(|slot| slot.bank(0).wrapping_add(slot.bank(1)))
            .collect()
    }
}

impl Default for PerCpuCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PerCpuCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuCounter")
            .field("sum", &self.sum())
            .finish()
    }
}
