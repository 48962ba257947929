//! [`PerCpuBuffer`]: bounded per-CPU LIFO buffers of pointers (librseq's per-CPU buffer test).
//!
//! # Design
//!
//! Each CPU slot is `{ len, limit, items: [ptr; CAP] }`. Push and pop are critical sections on
//! the current CPU's slot:
//!
//! ```text
//! push: limit = load(limit); len = load(len); if len >= limit or len >= CAP fail;
//!       items[len] = item (speculative); commit: store_release(len, len + 1)
//! pop:  limit = load(limit); if limit == 0 fail; len = load(len); if len == 0 fail;
//!       item = load(items[len - 1]); commit: store(len, len - 1)
//! ```
//!
//! The bound is checked inside the section, against the loaded `len`, so it holds whatever
//! other threads do: the slot only changes through sections running on its CPU, and the
//! kernel restarts a section that is preempted, migrated or signalled before its commit (in
//! `Fallback` mode, a section holds the slot's lock throughout). `limit` is `CAP`, or 0 while
//! the slot is being drained; the `CAP` bound is checked as well, so memory safety does not
//! depend on `limit`.
//!
//! The push's commit is a release store, ordered after the speculative item store; a pop
//! that sees the new length runs on the same CPU (loads on x86_64 are acquire loads), or under
//! the same lock in `Fallback` mode.
//!
//! # Draining another CPU's buffer
//!
//! [`PerCpuBuffer::drain_cpu`] empties CPU `cpu`'s slot while other threads push and pop:
//!
//! 1. `limit = 0`: later sections on that CPU fail (push reports "full", pop "empty");
//! 2. [`rseq_rt::fence_cpu`]`(cpu)`: every section that ran there before has committed or
//!    been restarted (it then reloads `limit`); in `Fallback` mode, that slot's lock has been
//!    taken after the store, so every later fallback section sees `limit == 0`;
//! 3. the slot is quiescent: read `len` and the items, set `len = 0`;
//! 4. a second `fence_cpu(cpu)`, so that a section that sees the reopening also sees
//!    `len == 0` (the fallback's loads are relaxed, and weakly ordered CPUs may reorder the
//!    section's two loads);
//! 5. `limit = CAP`.
//!
//! Drainers are serialized by a mutex. With exclusive access (`&mut self`),
//! [`PerCpuBuffer::take_all`] needs no fence.
//!
//! # Without rseq
//!
//! Push and pop name their own fallbacks (`fallback = push_locked` / `pop_locked`): the same
//! steps under a one-word lock in the slot (`lock`), taken with a compare-exchange on the
//! thread's last slot or any free one, **never waited for**: when every slot is held, push
//! reports "full" and pop "empty", as they do for a slot being drained, and the caller takes
//! its slow path (the pool's global list). Nothing waits, so nothing can hang, also for a
//! signal handler that interrupts its own thread's push or pop: it finds that slot held and
//! uses another or fails. The drainer, after `limit = 0` and the fence, waits until it has seen
//! the slot's `lock` free (`SeqCst` on both sides: either the section's lock is seen, or the
//! section sees `limit == 0`), so the slot is quiescent as above; a section that sees the
//! reopened `limit` (an acquire load, before it reads `len`) sees `len == 0`.

use crate::__test_hooks::Locked;
use crate::slot_lock;
use rseq_macros::critical_section;
use rseq_rt::{FenceError, PerCpu};
use std::alloc::GlobalAlloc;
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// One CPU's buffer.
#[repr(C)]
struct Slot<const CAP: usize> {
    len: AtomicUsize,
    /// `CAP`, or 0 while a drainer owns the slot.
    limit: AtomicUsize,
    /// Without rseq only: 1 while a push or pop works on the slot under it.
    lock: AtomicUsize,
    items: [AtomicPtr<u8>; CAP],
}

impl<const CAP: usize> Slot<CAP> {
    fn new() -> Self {
        Slot {
            len: AtomicUsize::new(0),
            limit: AtomicUsize::new(CAP),
            lock: AtomicUsize::new(0),
            items: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }
}

/// Bounded per-CPU buffers of non-null pointers: [`push`](Self::push) and [`pop`](Self::pop)
/// work on the current CPU's buffer (at most `CAP` items each) with one critical section, no
/// atomic instruction and no lock. See the [module documentation](self).
///
/// The buffer never dereferences the pointers: it stores them (ownership of what they point at
/// is the caller's business, e.g. [`PerCpuPool`](crate::pool::PerCpuPool) keeps free objects
/// here). Items left in the buffer when it is dropped are forgotten.
///
/// `pop` only looks at the current CPU's buffer; [`drain_cpu`](Self::drain_cpu) and
/// [`drain_all`](Self::drain_all) collect the others'.
///
/// ```
/// use rseq::collections::buffer::PerCpuBuffer;
/// use std::ptr::NonNull;
///
/// let buf: PerCpuBuffer<4> = PerCpuBuffer::new();
/// let mut items = [0u8; 8];
/// let mut pushed = 0;
/// for item in &mut items {
///     if buf.push(NonNull::from(item)).is_ok() {
///         pushed += 1;
///     }
/// }
/// // At most 4 per CPU (the thread may have moved between pushes).
/// assert!(pushed >= 4);
/// let mut drained = 0;
/// buf.drain_all(|_| drained += 1).unwrap();
/// assert_eq!(drained, pushed);
/// ```
pub struct PerCpuBuffer<const CAP: usize> {
    slots: PerCpu<Slot<CAP>>,
    /// Serializes drainers.
    drainers: Mutex<()>,
}

impl<const CAP: usize> PerCpuBuffer<CAP> {
    /// push: `items[len] = item; len += 1`, unless `len` reached `limit` or `CAP`.
    ///
    /// # Safety
    /// None beyond the slot's invariants (`len <= CAP`), which only these sections and
    /// drainers (holding the slot closed) maintain; indexing requires an `unsafe fn`.
    #[critical_section(crate = ::rseq_rt, fallback = Self::push_locked)]
    unsafe fn push_item(slots: &PerCpu<Slot<CAP>>, item: *mut u8) -> bool {
        let limit = load(slots[cpu].limit);
        let len = load(slots[cpu].len);
        if len >= limit {
            fail(false)
        }
        if len >= { CAP } {
            fail(false)
        }
        store(slots[cpu].items[len], item);
        let grown = add(len, 1);
        commit::store_release(slots[cpu].len, grown);
        true
    }

    /// pop: `len -= 1; items[len]`, unless the slot is closed or empty.
    ///
    /// # Safety
    /// `len <= CAP` (only `push_item` grows it, within the bound).
    #[critical_section(crate = ::rseq_rt, fallback = Self::pop_locked)]
    unsafe fn pop_item(slots: &PerCpu<Slot<CAP>>) -> Option<NonNull<u8>> {
        let limit = load(slots[cpu].limit);
        if limit == 0 {
            fail(None)
        }
        let len = load(slots[cpu].len);
        if len == 0 {
            fail(None)
        }
        let last = add(len, { usize::MAX });
        let item: *mut u8 = load(slots[cpu].items[last]);
        commit::store(slots[cpu].len, last);
        NonNull::new(item)
    }

    /// `push_item` without rseq (module documentation, "Without rseq").
    ///
    /// # Safety
    /// As `push_item`.
    #[cold]
    unsafe fn push_locked(slots: &PerCpu<Slot<CAP>>, item: *mut u8) -> bool {
        let Some(slot) = slot_lock::try_lock_any(slots, |s| &s.lock) else {
            return false;
        };
        let limit = slot.limit.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::Relaxed);
        let room = len < limit && len < CAP;
        if room {
            slot.items[len].store(item, Ordering::Relaxed);
            crate::__test_hooks::locked(Locked::BufferPush);
            slot.len.store(len + 1, Ordering::Release);
        }
        slot_lock::unlock(&slot.lock);
        room
    }

    /// `pop_item` without rseq (module documentation, "Without rseq").
    ///
    /// # Safety
    /// As `pop_item`.
    #[cold]
    unsafe fn pop_locked(slots: &PerCpu<Slot<CAP>>) -> Option<NonNull<u8>> {
        let slot = slot_lock::try_lock_any(slots, |s| &s.lock)?;
        let limit = slot.limit.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::Relaxed);
        let item = (limit != 0 && len != 0).then(|| {
            let item = slot.items[len - 1].load(Ordering::Relaxed);
            crate::__test_hooks::locked(Locked::BufferPop);
            slot.len.store(len - 1, Ordering::Relaxed);
            item
        });
        slot_lock::unlock(&slot.lock);
        NonNull::new(item?)
    }

    /// Empty buffers, one per possible CPU.
    ///
    /// ```
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<16>::new();
    /// assert!(buf.is_empty());
    /// ```
    pub fn new() -> Self {
        PerCpuBuffer {
            slots: PerCpu::new(|_| Slot::new()),
            drainers: Mutex::new(()),
        }
    }

    /// Like [`new`](Self::new), with the slots' memory from `allocator` (for use inside a
    /// `#[global_allocator]`, which must not allocate through itself). Nothing else in the
    /// buffer allocates.
    ///
    /// ```
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<16>::new_in(&std::alloc::System);
    /// assert_eq!(buf.capacity(), 16);
    /// ```
    pub fn new_in(allocator: &'static dyn GlobalAlloc) -> Self {
        PerCpuBuffer {
            slots: PerCpu::new_in(|_| Slot::new(), allocator),
            drainers: Mutex::new(()),
        }
    }

    /// The capacity of each CPU's buffer: `CAP`.
    ///
    /// ```
    /// assert_eq!(rseq::collections::buffer::PerCpuBuffer::<8>::new().capacity(), 8);
    /// ```
    pub const fn capacity(&self) -> usize {
        CAP
    }

    /// Pushes `item` on the current CPU's buffer, or gives it back if that buffer is full (or
    /// being drained; or, without rseq, if every slot is busy at that instant: the fallback
    /// never waits).
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<1>::new();
    /// let mut x = 0u8;
    /// let item = NonNull::from(&mut x);
    /// assert_eq!(buf.push(item), Ok(()));
    /// # buf.drain_all(|_| {}).unwrap();
    /// ```
    #[inline]
    pub fn push(&self, item: NonNull<u8>) -> Result<(), NonNull<u8>> {
        // SAFETY: the section checks the bound; the slot invariants hold.
        if unsafe { Self::push_item(&self.slots, item.as_ptr()) } {
            Ok(())
        } else {
            Err(item)
        }
    }

    /// Pops the most recently pushed item of the current CPU's buffer: `None` if it is empty
    /// (or being drained; or, without rseq, if every slot is busy at that instant), even if
    /// other CPUs' buffers hold items. Without rseq "the current CPU's buffer" is the slot
    /// this thread used last, or any free one.
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// assert_eq!(buf.pop(), None);
    /// ```
    #[inline]
    pub fn pop(&self) -> Option<NonNull<u8>> {
        // SAFETY: the slot invariants hold (`len <= CAP`).
        unsafe { Self::pop_item(&self.slots) }
    }

    /// The number of items in CPU `cpu`'s buffer (0 for a CPU that does not exist): a
    /// snapshot.
    ///
    /// ```
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// assert_eq!(buf.len_on(0), 0);
    /// ```
    pub fn len_on(&self, cpu: usize) -> usize {
        self.slots
            .get(cpu)
            .map_or(0, |s| s.len.load(Ordering::Acquire))
    }

    /// The number of items in all buffers: a snapshot, exact when no thread pushes or pops.
    ///
    /// ```
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// assert_eq!(buf.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        (0..self.slots.len()).map(|cpu| self.len_on(cpu)).sum()
    }

    /// Whether all buffers are empty: a snapshot, like [`len`](Self::len).
    ///
    /// ```
    /// assert!(rseq::collections::buffer::PerCpuBuffer::<4>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties CPU `cpu`'s buffer while other threads push and pop, passing each item to `f`
    /// (oldest first); returns how many. Uses the fence protocol of the
    /// [module documentation](self); meanwhile, pushes and pops on that CPU fail. If `f`
    /// panics, the items not yet passed to it are forgotten.
    ///
    /// # Errors
    /// [`FenceError::InvalidCpu`] if `cpu` is above [`rseq::possible_cpus`](rseq_rt::possible_cpus) (that index itself
    /// is the slot every `PerCpu` has for the generic fallback's spare lock, which this
    /// structure's own fallback never uses); another error if the fence fails, in which case
    /// nothing was taken.
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// let mut x = 0u8;
    /// buf.push(NonNull::from(&mut x)).unwrap();
    /// let mut got = Vec::new();
    /// for cpu in 0..rseq::possible_cpus() {
    ///     buf.drain_cpu(cpu, |p| got.push(p)).unwrap();
    /// }
    /// assert_eq!(got, [NonNull::from(&mut x)]);
    /// ```
    pub fn drain_cpu(
        &self,
        cpu: usize,
        mut f: impl FnMut(NonNull<u8>),
    ) -> Result<usize, FenceError> {
        let slot = self.slots.get(cpu).ok_or(FenceError::InvalidCpu(cpu))?;
        let _drainers = self.drainers.lock().unwrap_or_else(|p| p.into_inner());
        slot.limit.store(0, Ordering::SeqCst);
        if let Err(e) = rseq_rt::fence_cpu(cpu) {
            slot.limit.store(CAP, Ordering::SeqCst);
            return Err(e);
        }
        // Without rseq, pushes and pops hold this lock instead of running sections.
        slot_lock::wait_until_free(&slot.lock);
        // Reopens the slot when done, also if `f` panics.
        struct Reopen<'a, const CAP: usize>(&'a Slot<CAP>, usize);
        impl<const CAP: usize> Drop for Reopen<'_, CAP> {
            fn drop(&mut self) {
                // Orders `len = 0` before the reopening for the sections that see it. It cannot
                // fail where the first fence succeeded (same CPU; `Fallback` fences never
                // fail); if it did anyway, reopening is still correct on x86_64, whose loads
                // are not reordered with each other.
                let _ = rseq_rt::fence_cpu(self.1);
                self.0.limit.store(CAP, Ordering::SeqCst);
            }
        }
        let reopen = Reopen(slot, cpu);
        // Quiescent: no section on `cpu` is between its first load and its commit, and every
        // later one fails on `limit`.
        let len = slot.len.swap(0, Ordering::SeqCst).min(CAP);
        for item in &slot.items[..len] {
            if let Some(p) = NonNull::new(item.load(Ordering::SeqCst)) {
                f(p);
            }
        }
        drop(reopen);
        Ok(len)
    }

    /// [`drain_cpu`](Self::drain_cpu) for every CPU; returns the number of items passed to
    /// `f`.
    ///
    /// # Errors
    /// The first fence error (which cannot happen in `Fallback` mode); the items of the CPUs
    /// drained before it have been passed to `f`, the others stay in place.
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// let buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// let mut x = 0u8;
    /// buf.push(NonNull::from(&mut x)).unwrap();
    /// assert_eq!(buf.drain_all(|_| {}), Ok(1));
    /// assert!(buf.is_empty());
    /// ```
    pub fn drain_all(&self, mut f: impl FnMut(NonNull<u8>)) -> Result<usize, FenceError> {
        let mut total = 0;
        for cpu in 0..self.slots.len() {
            total += self.drain_cpu(cpu, &mut f)?;
        }
        Ok(total)
    }

    /// Empties every buffer through exclusive access (no fence: no section can run), passing
    /// each item to `f`; returns how many. For teardown.
    ///
    /// ```
    /// use std::ptr::NonNull;
    /// let mut buf = rseq::collections::buffer::PerCpuBuffer::<4>::new();
    /// let mut x = 0u8;
    /// buf.push(NonNull::from(&mut x)).unwrap();
    /// assert_eq!(buf.take_all(|_| {}), 1);
    /// ```
    pub fn take_all(&mut self, mut f: impl FnMut(NonNull<u8>)) -> usize {
        let mut total = 0;
        for slot in self.slots.iter_mut() {
            let len = std::mem::take(slot.len.get_mut()).min(CAP);
            for item in &mut slot.items[..len] {
                if let Some(p) = NonNull::new(*item.get_mut()) {
                    f(p);
                }
            }
            total += len;
        }
        total
    }
}

impl<const CAP: usize> Default for PerCpuBuffer<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> fmt::Debug for PerCpuBuffer<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuBuffer")
            .field("capacity", &CAP)
            .field("len", &self.len())
            .finish()
    }
}
