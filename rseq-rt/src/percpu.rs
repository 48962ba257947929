//! `PerCpu<T>`: one cache-padded slot per possible CPU id.

use core::fmt;
use core::ops::{Deref, DerefMut};

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
/// highest id + 1, so sparse ids still index directly), each slot on its own cache line(s).
///
/// Slots are [`PerCpu::STRIDE`] bytes apart, a constant the critical-section code generator
/// uses to scale the CPU index. Critical sections write the current CPU's slot; from outside a
/// section, the slots are read (and, with `&mut`, written) through the ordinary accessors.
/// Slots that sections write while other threads read them should hold atomic types
/// (`AtomicU64`, `AtomicPtr`, …): sections store whole aligned words, which those types read
/// without a data race.
///
/// ```
/// use core::sync::atomic::{AtomicU64, Ordering};
/// use rseq_rt::PerCpu;
///
/// let counts: PerCpu<AtomicU64> = PerCpu::new(|cpu| AtomicU64::new(cpu as u64));
/// assert_eq!(counts.len(), rseq_rt::possible_cpus());
/// let sum: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
/// let n = counts.len() as u64;
/// assert_eq!(sum, n * (n - 1) / 2);
/// ```
pub struct PerCpu<T> {
    slots: Box<[CachePadded<T>]>,
}

impl<T> PerCpu<T> {
    /// Bytes from one slot to the next: `size_of::<T>()` rounded up to the cache-line size.
    pub const STRIDE: usize = core::mem::size_of::<CachePadded<T>>();

    /// One slot per possible CPU, slot `i` initialised with `init(i)`.
    pub fn new(init: impl FnMut(usize) -> T) -> Self {
        PerCpu {
            slots: (0..crate::sys::possible_cpus())
                .map(init)
                .map(CachePadded::new)
                .collect(),
        }
    }

    /// The number of slots: the number of possible CPU ids. Every CPU index a critical section
    /// can see (`cpu_id` or `mm_cid`) is below it.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never true: every machine has CPU 0. Present for the usual pairing with `len`.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slot `cpu`, if it exists.
    pub fn get(&self, cpu: usize) -> Option<&T> {
        self.slots.get(cpu).map(|s| &s.value)
    }

    /// Slot `cpu`, mutably, if it exists.
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        self.slots.get_mut(cpu).map(|s| &mut s.value)
    }

    /// Every slot, in CPU order (to sum a counter, drain caches, …).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.slots.iter().map(|s| &s.value)
    }

    /// Every slot, mutably, in CPU order.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut T> + '_ {
        self.slots.iter_mut().map(|s| &mut s.value)
    }

    /// The address of slot 0; slot `i` is at `as_ptr() + i * STRIDE` bytes. For generated code.
    pub fn as_ptr(&self) -> *const T {
        self.slots.as_ptr().cast()
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
