//! `PerCpu<T>`: one cache-padded slot per possible CPU id, plus the fallback's spare.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// A value padded and aligned to the architecture's cache-line size
/// ([`rseq_arch::current`]`.cache_line`: 128 on x86_64, aarch64 and powerpc64, 256 on s390x,
/// 64 elsewhere), so two of them never share a line, nor a pair of lines the prefetcher moves
/// together.
#[cfg_attr(
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    ),
    repr(C, align(128))
)]
#[cfg_attr(target_arch = "s390x", repr(C, align(256)))]
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    )),
    repr(C, align(64))
)]
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Pads `value`.
    pub const fn new(value: T) -> Self {
        CachePadded { value }
    }

    /// The padded value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// Storage with one slot per possible CPU id (`/sys/devices/system/cpu/possible`, sized by the
/// highest id + 1, so sparse ids still index directly), plus one, each slot on its own cache
/// line(s).
///
/// The last slot, index [`possible_cpus`](crate::possible_cpus)`()`, is the fallback's spare:
/// no CPU runs sections on it, and only a fallback section nested in its own thread's fallback
/// section (a signal handler that interrupted it) works on it, so that such a handler never
/// waits for a slot its thread holds ([`fallback`](crate::fallback)). Code that sums or drains
/// every slot covers it by going over all of `len()` ([`fence_cpu`](crate::fence_cpu) accepts
/// its index).
///
/// Slots are [`PerCpu::STRIDE`] bytes apart, a constant the critical-section code generator
/// uses to scale the CPU index. Critical sections write the current CPU's slot; from outside a
/// section, the slots are read (and, with `&mut`, written) through the ordinary accessors.
/// Slots that sections write while other threads read them should hold atomic types
/// (`AtomicUsize`, `AtomicPtr`, …): sections store whole aligned words, which those types read
/// without a data race.
///
/// ```
/// use core::sync::atomic::{AtomicUsize, Ordering};
/// use rseq::PerCpu;
///
/// let counts: PerCpu<AtomicUsize> = PerCpu::new(AtomicUsize::new);
/// assert_eq!(counts.len(), rseq::possible_cpus() + 1);
/// let sum: usize = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
/// let n = counts.len();
/// assert_eq!(sum, n * (n - 1) / 2);
/// ```
pub struct PerCpu<T> {
    slots: NonNull<CachePadded<T>>,
    len: usize,
    /// Where the slots came from; `None` is the global allocator.
    allocator: Option<&'static dyn GlobalAlloc>,
    /// Bytes from the start of the allocation to slot 0: non-zero only for zeroed slots
    /// aligned past [`ZEROED_ALIGN`], allocated with [`PerCpu::padded_layout`].
    offset: usize,
    /// Whether the allocation has the padded layout.
    padded: bool,
    _owns: PhantomData<CachePadded<T>>,
}

/// The alignment up to which zeroed slots are requested with their own layout: the alignment
/// every `malloc` gives. Past it, `System.alloc_zeroed` cannot use `calloc` (it allocates
/// aligned memory and writes every byte, so every page becomes resident), so more-aligned
/// zeroed slots are requested with this alignment and padded, and aligned in the allocation.
const ZEROED_ALIGN: usize = 16;

// SAFETY: `PerCpu<T>` owns its slots like a `Box<[T]>` does.
unsafe impl<T: Send> Send for PerCpu<T> {}
// SAFETY: shared access hands out `&T` only, like `Box<[T]>`.
unsafe impl<T: Sync> Sync for PerCpu<T> {}

impl<T> PerCpu<T> {
    /// Bytes from one slot to the next: `size_of::<T>()` rounded up to the cache-line size.
    pub const STRIDE: usize = core::mem::size_of::<CachePadded<T>>();

    /// One slot per possible CPU and the spare, slot `i` initialised with `init(i)`.
    pub fn new(init: impl FnMut(usize) -> T) -> Self {
        Self::build(init, None)
    }

    /// Like [`new`](Self::new), with the slots' memory from `allocator` instead of the global
    /// allocator: for a `#[global_allocator]` that keeps per-CPU state and must not allocate
    /// through itself.
    ///
    /// Panics (through `handle_alloc_error`) if the allocator fails.
    ///
    /// ```
    /// use std::alloc::System;
    /// use std::sync::atomic::AtomicUsize;
    ///
    /// let caches = rseq::PerCpu::new_in(|_| AtomicUsize::new(0), &System);
    /// assert_eq!(caches.len(), rseq::possible_cpus() + 1);
    /// ```
    pub fn new_in(init: impl FnMut(usize) -> T, allocator: &'static dyn GlobalAlloc) -> Self {
        Self::build(init, Some(allocator))
    }

    /// Like [`new_in`](Self::new_in), with every slot's bytes zero: the memory comes from
    /// `allocator.alloc_zeroed` and nothing else writes it, so the pages of large slots are not
    /// touched here (from an allocator that maps fresh pages for large requests, as glibc's
    /// `calloc` does, they are not even resident) until code uses them. The request's alignment
    /// is 16 (with room to align the cache-padded slots inside it): `System` serves a more
    /// aligned `alloc_zeroed` by writing every byte, which would make every page resident.
    ///
    /// Panics (through `handle_alloc_error`) if the allocator fails.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`: integers, atomics, raw pointers, `Option<NonNull<_>>`
    /// and arrays and `repr(C)` structs of them.
    ///
    /// ```
    /// use std::alloc::System;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// // SAFETY: zero is a valid `[AtomicUsize; 4096]`.
    /// let big = unsafe { rseq::PerCpu::<[AtomicUsize; 4096]>::new_zeroed_in(&System) };
    /// assert!(big.iter().all(|slot| slot[4095].load(Ordering::Relaxed) == 0));
    /// ```
    pub unsafe fn new_zeroed_in(allocator: &'static dyn GlobalAlloc) -> Self {
        let len = Self::slot_count();
        let layout = Self::layout(len);
        let padded = layout.align() > ZEROED_ALIGN;
        let (slots, offset) = if layout.size() == 0 {
            (NonNull::dangling(), 0)
        } else {
            let request = if padded {
                Self::padded_layout(len)
            } else {
                layout
            };
            // SAFETY: the layout has a non-zero size.
            let raw = unsafe { allocator.alloc_zeroed(request) };
            if raw.is_null() {
                std::alloc::handle_alloc_error(request);
            }
            // Below `align`, within the padding of the padded layout (none when not padded:
            // `raw` is then aligned already).
            let offset = (raw as usize).next_multiple_of(layout.align()) - raw as usize;
            // SAFETY: `raw + offset` is within the allocation, non-null, aligned for the slots,
            // and followed by `layout.size()` bytes of it.
            let slots = unsafe { NonNull::new_unchecked(raw.add(offset)) };
            (slots.cast::<CachePadded<T>>(), offset)
        };
        // The caller vouches that the zeroed slots are valid `T`s (and `CachePadded` adds only
        // alignment padding).
        PerCpu {
            slots,
            len,
            allocator: Some(allocator),
            offset,
            padded: padded && layout.size() != 0,
            _owns: PhantomData,
        }
    }

    fn layout(len: usize) -> Layout {
        Layout::array::<CachePadded<T>>(len).expect("PerCpu size overflows")
    }

    /// The slots' bytes plus room to align them, at [`ZEROED_ALIGN`].
    fn padded_layout(len: usize) -> Layout {
        let layout = Self::layout(len);
        Layout::from_size_align(layout.size() + layout.align(), ZEROED_ALIGN)
            .expect("PerCpu size overflows")
    }

    /// Slots of every `PerCpu`: the possible CPUs and the spare.
    fn slot_count() -> usize {
        crate::sys::possible_cpus() + 1
    }

    fn build(
        mut init: impl FnMut(usize) -> T,
        allocator: Option<&'static dyn GlobalAlloc>,
    ) -> Self {
        let len = Self::slot_count();
        let layout = Self::layout(len);
        let slots = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout has a non-zero size.
            let raw = unsafe {
                match allocator {
                    Some(a) => a.alloc(layout),
                    None => std::alloc::alloc(layout),
                }
            };
            NonNull::new(raw.cast::<CachePadded<T>>())
                .unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        };
        let mut this = PerCpu {
            slots,
            len: 0,
            allocator,
            offset: 0,
            padded: false,
            _owns: PhantomData,
        };
        for i in 0..len {
            // SAFETY: slot `i` is within the allocation and not yet initialised; `len` counts the
            // initialised slots, so a panic in `init` drops only those.
            unsafe { this.slots.as_ptr().add(i).write(CachePadded::new(init(i))) };
            this.len = i + 1;
        }
        this
    }

    fn as_slice(&self) -> &[CachePadded<T>] {
        // SAFETY: `len` slots are initialised and owned by `self`.
        unsafe { core::slice::from_raw_parts(self.slots.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [CachePadded<T>] {
        // SAFETY: as in `as_slice`, with exclusive access.
        unsafe { core::slice::from_raw_parts_mut(self.slots.as_ptr(), self.len) }
    }

    /// The number of slots: the number of possible CPU ids, plus the spare. Every CPU index a
    /// critical section can see (`cpu_id` or `mm_cid`) is below it, and so is every slot a
    /// fallback section locks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: every machine has CPU 0. Present for the usual pairing with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot `cpu`, if it exists.
    pub fn get(&self, cpu: usize) -> Option<&T> {
        self.as_slice().get(cpu).map(|s| &s.value)
    }

    /// Slot `cpu`, mutably, if it exists.
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        self.as_mut_slice().get_mut(cpu).map(|s| &mut s.value)
    }

    /// Every slot, in CPU order (to sum a counter, drain caches, …).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.as_slice().iter().map(|s| &s.value)
    }

    /// Every slot, mutably, in CPU order.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut T> + '_ {
        self.as_mut_slice().iter_mut().map(|s| &mut s.value)
    }

    /// The address of slot 0; slot `i` is at `as_ptr() + i * STRIDE` bytes. For generated code.
    pub fn as_ptr(&self) -> *const T {
        self.slots.as_ptr().cast()
    }
}

impl<T> Drop for PerCpu<T> {
    fn drop(&mut self) {
        // SAFETY: the initialised slots are dropped once, then the memory is returned to the
        // allocator it came from, with the layout it was allocated with.
        unsafe {
            core::ptr::drop_in_place(self.as_mut_slice());
            let len = Self::slot_count();
            let slots_layout = Self::layout(len);
            if slots_layout.size() != 0 {
                let layout = if self.padded {
                    Self::padded_layout(len)
                } else {
                    slots_layout
                };
                let start = self.slots.as_ptr().cast::<u8>().sub(self.offset);
                match self.allocator {
                    Some(a) => a.dealloc(start, layout),
                    None => std::alloc::dealloc(start, layout),
                }
            }
        }
    }
}

impl<T: Default> Default for PerCpu<T> {
    fn default() -> Self {
        PerCpu::new(|_| T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for PerCpu<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn padding_is_the_architectures_cache_line() {
        let line = rseq_arch::current.cache_line;
        assert_eq!(align_of::<CachePadded<u8>>(), line);
        assert_eq!(size_of::<CachePadded<u64>>(), line);
        assert_eq!(PerCpu::<u64>::STRIDE, line);
        assert_eq!(PerCpu::<[u8; 129]>::STRIDE, 129usize.next_multiple_of(line));
    }

    #[test]
    fn slots_drop_once_and_come_from_the_given_allocator() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(AtomicUsize, AtomicUsize);
        // SAFETY: forwards to System.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                self.0.fetch_add(1, Ordering::SeqCst);
                std::alloc::System.alloc(l)
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                self.1.fetch_add(1, Ordering::SeqCst);
                std::alloc::System.dealloc(p, l)
            }
        }
        static COUNTING: Counting = Counting(AtomicUsize::new(0), AtomicUsize::new(0));
        let drops = std::rc::Rc::new(());
        let p = PerCpu::new_in(|_| drops.clone(), &COUNTING);
        assert_eq!(std::rc::Rc::strong_count(&drops), 1 + p.len());
        drop(p);
        assert_eq!(std::rc::Rc::strong_count(&drops), 1);
        assert_eq!(COUNTING.0.load(Ordering::SeqCst), 1);
        assert_eq!(COUNTING.1.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn zeroed_slots_are_requested_at_malloc_alignment_and_freed_as_requested() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        /// Records the zeroed requests (address, layout) and checks every free against them.
        struct Recording(Mutex<Vec<(usize, Layout)>>, AtomicUsize);
        // SAFETY: forwards to System.
        unsafe impl GlobalAlloc for Recording {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                std::alloc::System.alloc(l)
            }
            unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
                let p = std::alloc::System.alloc_zeroed(l);
                self.0.lock().unwrap().push((p as usize, l));
                p
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                let mut live = self.0.lock().unwrap();
                let at = live.iter().position(|&(q, m)| q == p as usize && m == l);
                live.swap_remove(at.expect("freed as allocated"));
                self.1.fetch_add(1, Ordering::SeqCst);
                std::alloc::System.dealloc(p, l)
            }
        }
        static RECORDING: Recording = Recording(Mutex::new(Vec::new()), AtomicUsize::new(0));
        type Big = [AtomicUsize; 8192];
        // SAFETY: zero is a valid array of atomics.
        let p = unsafe { PerCpu::<Big>::new_zeroed_in(&RECORDING) };
        let (start, layout) = RECORDING.0.lock().unwrap()[0];
        // `System` serves that with `calloc`, which leaves fresh pages untouched.
        assert!(layout.align() <= 16, "{layout:?}");
        let slots = p.as_ptr() as usize;
        assert_eq!(slots % align_of::<CachePadded<Big>>(), 0);
        assert!(slots >= start);
        assert!(slots + p.len() * PerCpu::<Big>::STRIDE <= start + layout.size());
        assert!(p
            .iter()
            .all(|s| s.iter().all(|w| w.load(Ordering::Relaxed) == 0)));
        p.iter().for_each(|s| s[8191].store(1, Ordering::Relaxed));
        drop(p);
        assert_eq!(RECORDING.1.load(Ordering::SeqCst), 1);
        assert!(RECORDING.0.lock().unwrap().is_empty());
    }

    #[test]
    fn slots_are_stride_apart() {
        let p: PerCpu<u64> = PerCpu::new(|i| i as u64);
        let base = p.as_ptr() as usize;
        for (i, slot) in p.iter().enumerate() {
            assert_eq!(
                slot as *const u64 as usize,
                base + i * PerCpu::<u64>::STRIDE
            );
            assert_eq!(*slot, i as u64);
        }
    }
}
