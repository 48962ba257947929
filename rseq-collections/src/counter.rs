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
//! In `Fallback` mode the section runs under its slot's lock, and `fence_all` takes and
//! releases every slot lock after the flip: a section that acquires its lock afterwards
//! synchronizes with the flip and reads the new index; one that held it before has finished
//! its add. The argument is the same.
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

use rseq_macros::critical_section;
use rseq_rt::{CachePadded, FenceError, PerCpu};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One CPU's counts: the active bank receives adds, the other is drained by `take`.
#[repr(C)]
#[derive(Default)]
struct Banks {
    banks: [AtomicUsize; 2],
}

/// `slots[cpu].banks[*active] += n`.
///
/// # Safety
/// `active` points at a live word holding 0 or 1 (the index is not bounds-checked).
#[critical_section(crate = ::rseq_rt)]
unsafe fn add_to_active(slots: &PerCpu<Banks>, active: *const AtomicUsize, n: usize) {
    let bank = load(*active);
    commit::add(slots[cpu].banks[bank], n);
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
        // SAFETY: `active` is a field of `self` and only ever holds 0 or 1.
        unsafe { add_to_active(&self.slots, &*self.active, n) }
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
        self.slots
            .iter()
            .flat_map(|slot| slot.banks.iter())
            .fold(0usize, |acc, b| acc.wrapping_add(b.load(Ordering::SeqCst)))
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
        // No section adds to `old` any more (see the module documentation).
        Ok(self.slots.iter().fold(0usize, |acc, slot| {
            acc.wrapping_add(slot.banks[old].swap(0, Ordering::SeqCst))
        }))
    }

    /// The counts held for each CPU (both banks), a snapshot: where the adds landed.
    ///
    /// ```
    /// let c = rseq::collections::counter::PerCpuCounter::new();
    /// c.add(1);
    /// assert_eq!(c.per_cpu().iter().sum::<usize>(), 1);
    /// assert_eq!(c.per_cpu().len(), rseq::possible_cpus());
    /// ```
    pub fn per_cpu(&self) -> Vec<usize> {
        let _takers = self.takers.lock().unwrap_or_else(|p| p.into_inner());
        self.slots
            .iter()
            .map(|slot| {
                slot.banks[0]
                    .load(Ordering::SeqCst)
                    .wrapping_add(slot.banks[1].load(Ordering::SeqCst))
            })
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
