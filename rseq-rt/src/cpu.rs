//! CPU, concurrency-id and node accessors.

use crate::abi;
use crate::registration::{area_ptr, attach_for_accessors, MM_CID_AVAILABLE, NODE_ID_AVAILABLE};
use crate::sys;
use core::sync::atomic::Ordering;

#[inline(always)]
fn read_cpu_id(area: *mut abi::RseqArea) -> u32 {
    // SAFETY: `area` is the sentinel or a live area of this thread; the kernel updates `cpu_id`
    // between our instructions, hence the volatile read.
    unsafe { core::ptr::read_volatile(&raw const (*area).cpu_id) }
}

/// The CPU the calling thread runs on (it may move right after). One thread-local load once the
/// thread is attached; `sched_getcpu()` where no rseq area is available.
///
/// ```
/// let cpu = rseq::current_cpu();
/// assert!(cpu < rseq::possible_cpus());
/// ```
#[inline]
pub fn current_cpu() -> usize {
    let cpu = read_cpu_id(area_ptr());
    if (cpu as i32) >= 0 {
        cpu as usize
    } else {
        current_cpu_slow()
    }
}

#[cold]
#[inline(never)]
fn current_cpu_slow() -> usize {
    current_cpu_from_area_slow().unwrap_or_else(sys::sched_getcpu)
}

/// The CPU the calling thread runs on, as the kernel last published it in the thread's rseq
/// area: one thread-local load, never a system call; `None` where the thread has no area (no
/// rseq: [`current_cpu`] then asks the kernel, which costs a `getcpu` call and, on
/// architectures without a vDSO `getcpu` such as aarch64, a system call). For code that can
/// use a remembered CPU instead, such as a fallback that only prefers a slot.
///
/// ```
/// if let Some(cpu) = rseq::current_cpu_from_area() {
///     assert!(cpu < rseq::possible_cpus());
/// }
/// ```
#[inline]
pub fn current_cpu_from_area() -> Option<usize> {
    let cpu = read_cpu_id(area_ptr());
    if (cpu as i32) >= 0 {
        Some(cpu as usize)
    } else {
        current_cpu_from_area_slow()
    }
}

#[cold]
#[inline(never)]
fn current_cpu_from_area_slow() -> Option<usize> {
    if attach_for_accessors() {
        let cpu = read_cpu_id(area_ptr());
        if (cpu as i32) >= 0 {
            return Some(cpu as usize);
        }
    }
    None
}

/// The calling thread's concurrency id (`mm_cid`): dense, below the number of possible CPUs and
/// the number of threads, so per-CPU data indexed by it stays compact when a process uses few
/// CPUs of a large machine. Falls back to [`current_cpu`] where the kernel lacks `mm_cid`
/// (feature size < 28) or no area is available.
///
/// ```
/// assert!(rseq::current_mm_cid() < rseq::possible_cpus());
/// ```
#[inline]
pub fn current_mm_cid() -> usize {
    let area = area_ptr();
    let cpu = read_cpu_id(area);
    if (cpu as i32) >= 0 && MM_CID_AVAILABLE.load(Ordering::Relaxed) {
        // SAFETY: as in `read_cpu_id`; the area is live (its cpu_id is valid).
        unsafe { core::ptr::read_volatile(&raw const (*area).mm_cid) as usize }
    } else {
        current_mm_cid_slow()
    }
}

#[cold]
#[inline(never)]
fn current_mm_cid_slow() -> usize {
    if crate::features().mm_cid && attach_for_accessors() {
        let area = area_ptr();
        if (read_cpu_id(area) as i32) >= 0 {
            // SAFETY: as above.
            return unsafe { core::ptr::read_volatile(&raw const (*area).mm_cid) as usize };
        }
    }
    current_cpu()
}

/// The NUMA node of the CPU the calling thread runs on: the area's `node_id` (feature size
/// ≥ 24), else `getcpu(2)`.
///
/// ```
/// let _node = rseq::current_node();
/// ```
#[inline]
pub fn current_node() -> usize {
    let area = area_ptr();
    let cpu = read_cpu_id(area);
    if (cpu as i32) >= 0 && NODE_ID_AVAILABLE.load(Ordering::Relaxed) {
        // SAFETY: as in `current_mm_cid`.
        unsafe { core::ptr::read_volatile(&raw const (*area).node_id) as usize }
    } else {
        current_node_slow()
    }
}

#[cold]
#[inline(never)]
fn current_node_slow() -> usize {
    if crate::features().node_id && attach_for_accessors() {
        let area = area_ptr();
        if (read_cpu_id(area) as i32) >= 0 {
            // SAFETY: as above.
            return unsafe { core::ptr::read_volatile(&raw const (*area).node_id) as usize };
        }
    }
    sys::getcpu_node()
}
