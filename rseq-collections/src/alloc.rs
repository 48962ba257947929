//! [`PerCpuAlloc`]: a [`GlobalAlloc`] front-end that keeps small blocks in per-CPU caches over
//! any inner allocator, usable as the `#[global_allocator]`.
//!
//! ```
//! use rseq::collections::alloc::PerCpuAlloc;
//! use std::alloc::System;
//!
//! #[global_allocator]
//! static GLOBAL: PerCpuAlloc = PerCpuAlloc::new(System);
//!
//! fn main() {
//!     let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
//!     assert_eq!(words[999], "word 999");
//!     // The short strings above came from (and went back to) the per-CPU caches.
//!     println!("{:?}", GLOBAL.stats());
//! }
//! ```
//!
//! # Size classes
//!
//! Requests of at most [`MAX_SMALL_SIZE`] (256) bytes with an alignment of at most
//! [`CLASS_ALIGN`] (16) are rounded up to one of the eight [`SIZE_CLASSES`]:
//! 16, 32, 48, 64, 96, 128, 192 and 256 bytes. Every block of a class is allocated from the
//! inner allocator with the class's layout (`Layout::from_size_align(class, 16)`) and returned
//! to it with that same layout, whether it went through a cache or not, so a block's route is a
//! function of the request's layout only: [`GlobalAlloc::dealloc`] receives the layout the block
//! was requested with, maps it to the same class, and the block goes back to where it came from.
//! Larger or more-aligned requests go straight to the inner allocator with their own layout
//! ([`GlobalAlloc::realloc`] of those uses the inner allocator's `realloc`).
//!
//! # The caches
//!
//! Each class has one cache per possible CPU (a [`PerCpu`] slot of 512 bytes): an array of
//! [`CACHE_CAPACITY`] (63) free block addresses and a length. `alloc` pops the top address and
//! `dealloc` pushes one, each with one critical section that checks the bound inside the
//! section (the `buffer_pop`/`buffer_push` pair of the `critical_section` documentation), so
//! the hit path takes no lock and runs no atomic read-modify-write. The two sections are
//! `#[inline(always)]`: inlined into `alloc`/`dealloc`, a hit costs about half of what an
//! out-of-line call does.
//!
//! - **Miss** (the CPU's cache of the class is empty): [`REFILL_BATCH`] (16) blocks are
//!   allocated from the inner allocator, one by one with the class layout; one is returned and
//!   the others are pushed (a block that no longer fits, because the thread moved to a CPU whose
//!   cache is fuller, goes back to the inner allocator).
//! - **Full** (`dealloc` finds the cache full): `REFILL_BATCH - 1` cached blocks are popped and
//!   freed to the inner allocator, then the block is pushed (or freed too, if the cache filled
//!   up again in between).
//!
//! Blocks are never carved out of slabs, so every block can be freed on its own, and nothing is
//! kept besides the caches: at most `possible CPUs × 8 classes × 63` blocks (at most 51 KiB of
//! blocks per CPU, when every cache of every class is full) sit in caches at any time
//! ([`PerCpuAlloc::stats`] counts them). Blocks freed on another CPU than the one they were
//! allocated on simply join that CPU's cache.
//!
//! # In the fallback
//!
//! Where sections take the fallback's slot locks (no rseq: valgrind, qemu-user, seccomp,
//! `RSEQ_DISABLE=1`; or after a demotion), a cache would only add the locks' cost to every
//! request: small requests then go straight to the inner allocator, with their class layout as
//! always (so a block cached before a demotion and a block allocated after it go back the same
//! way). The blocks still cached when the process was demoted stay there until the allocator is
//! dropped. The check is one relaxed load ([`rseq_rt::sections_run_on_rseq`]).
//!
//! # Initialisation and reentrancy
//!
//! The per-CPU state (one `PerCpu` of caches per class) is created on the first small
//! allocation, with its memory from the *inner* allocator ([`PerCpu::new_in`]), never from the
//! global allocator, which may be this very allocator. Racing threads each build a state and
//! publish it with a compare-and-swap; a loser frees its copy through the inner allocator.
//!
//! The rseq runtime allocates through the global allocator while it decides the process's mode
//! (it reads `/sys` and the environment), while it attaches a thread (arming its thread-exit
//! hook), and so on. So requests are served *directly by the inner allocator*
//! (with the class layout for small requests, which keeps blocks interchangeable):
//!
//! - while this thread is already inside a `PerCpuAlloc` method (a thread-local `Cell<bool>`
//!   with a `const` initialiser and no destructor, so it works in thread-local destructors and
//!   costs one thread-local load and two stores per call);
//! - before the state exists. The first small allocation of the process sets the guard, calls
//!   [`rseq_rt::mode`] (so the runtime decides its mode, with its own allocations served by the
//!   inner allocator), then builds the state; requests of other threads that come while the
//!   mode is undecided ([`rseq_rt::mode_if_decided`] is `None`) go to the inner allocator.
//!   Consequently the mode is decided at the process's first small allocation, usually before
//!   `main`: `RSEQ_DISABLE` must be in the environment from the start, not set by the program.
//!
//! A `dealloc` that finds no state yet frees the block to the inner allocator.
//!
//! Code that runs at thread exit after the runtime's exit hook (later thread-local destructors,
//! `pthread` key destructors) still allocates and frees through the caches: those sections run
//! under a temporary registration, which the runtime handles. In the runtime's `Fallback` mode
//! the same sections run under the per-CPU slot locks, with the same results (and at several
//! times the cost of a hit in `Rseq` mode).
//!
//! # Limitations
//!
//! - Cached blocks are not handed back to the inner allocator when a thread exits or goes
//!   idle: up to the caches' capacity stays cached (per CPU, not per thread).
//! - Blocks move between threads through the caches. Over an inner allocator with per-thread
//!   arenas (glibc's `malloc`), a block may be freed to the inner allocator by another thread
//!   than the one that allocated it, which such allocators handle more slowly (glibc takes the
//!   owning arena's lock). Workloads whose bursts overflow the caches pay for it.
//! - In the runtime's `Fallback` mode, `fork` while another thread is inside an allocation can
//!   leave that thread's slot lock held in the child, as with any lock-based allocator. In
//!   `Rseq` mode there is no lock.
//! - Dropping a `PerCpuAlloc` (one that is not a `static`) frees every cached block and the
//!   state to the inner allocator; it may be moved freely before and after use (the state keeps
//!   no pointer to it that is used after a move).
//! - Hits are not counted (that would put a shared write on the fast path); misses and
//!   flushes are, see [`AllocStats`].

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use rseq_macros::critical_section;
use rseq_rt::PerCpu;
use std::alloc::System;

/// The block sizes of the small classes, in bytes.
pub const SIZE_CLASSES: [usize; 8] = [16, 32, 48, 64, 96, 128, 192, 256];

/// The largest request (in bytes) served from the caches.
pub const MAX_SMALL_SIZE: usize = 256;

/// The largest alignment served from the caches (and the alignment of every cached block).
pub const CLASS_ALIGN: usize = 16;

/// Free blocks one CPU's cache of one class holds. 63 addresses and the length make a cache
/// 512 bytes: a power-of-two `PerCpu` stride, so sections scale the CPU index with a shift.
pub const CACHE_CAPACITY: usize = 63;

/// Blocks taken from the inner allocator on a miss, and returned to it when a cache is full.
pub const REFILL_BATCH: usize = 16;

const CLASSES: usize = SIZE_CLASSES.len();

/// Class index by `ceil(size / 16)`, for sizes 0..=256.
const CLASS_BY_GRANULE: [u8; MAX_SMALL_SIZE / 16 + 1] =
    [0, 0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7];

/// The class index of a request, or `None` for the inner allocator.
#[inline(always)]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() <= MAX_SMALL_SIZE && layout.align() <= CLASS_ALIGN {
        Some(CLASS_BY_GRANULE[layout.size().div_ceil(16)] as usize)
    } else {
        None
    }
}

/// The layout every block of `class` is allocated from (and freed to) the inner allocator with.
#[inline(always)]
fn class_layout(class: usize) -> Layout {
    // SAFETY: the sizes are non-zero multiples of the alignment, a power of two.
    unsafe { Layout::from_size_align_unchecked(SIZE_CLASSES[class], CLASS_ALIGN) }
}

/// The size of the block a request gets: its class size for small requests, `None` for
/// requests that go straight to the inner allocator (larger than [`MAX_SMALL_SIZE`] or aligned
/// more than [`CLASS_ALIGN`]).
///
/// ```
/// use rseq::collections::alloc::block_size;
/// use std::alloc::Layout;
///
/// assert_eq!(block_size(Layout::new::<[u8; 40]>()), Some(48));
/// assert_eq!(block_size(Layout::new::<u8>()), Some(16));
/// assert_eq!(block_size(Layout::from_size_align(64, 64).unwrap()), None);
/// assert_eq!(block_size(Layout::new::<[u8; 300]>()), None);
/// ```
pub fn block_size(layout: Layout) -> Option<usize> {
    class_of(layout).map(|c| SIZE_CLASSES[c])
}

/// One CPU's cache of one class: a stack of free block addresses.
#[repr(C)]
struct Cache {
    len: AtomicUsize,
    items: [AtomicUsize; CACHE_CAPACITY],
}

impl Cache {
    const fn new() -> Self {
        Cache {
            len: AtomicUsize::new(0),
            items: [const { AtomicUsize::new(0) }; CACHE_CAPACITY],
        }
    }
}

/// Pops the current CPU's top free block, or `None` if its cache is empty.
///
/// # Safety
/// None beyond the bound: `len` never exceeds the capacity (only `cache_push` grows it).
#[critical_section(crate = ::rseq_rt)]
#[inline(always)]
unsafe fn cache_pop(caches: &PerCpu<Cache>) -> Option<usize> {
    let len = load(caches[cpu].len);
    if len == 0 {
        fail(None)
    }
    let last = add(len, { usize::MAX });
    let block = load(caches[cpu].items[last]);
    commit::store(caches[cpu].len, last);
    Some(block)
}

/// Pushes `block` on the current CPU's cache, unless it is full.
///
/// # Safety
/// None beyond the bound checked in the section (indexing needs an `unsafe fn`).
#[critical_section(crate = ::rseq_rt)]
#[inline(always)]
unsafe fn cache_push(caches: &PerCpu<Cache>, block: usize) -> bool {
    let len = load(caches[cpu].len);
    if len >= { CACHE_CAPACITY } {
        fail(false)
    }
    store(caches[cpu].items[len], block);
    let grown = add(len, 1);
    // A plain store: the addresses are only read by sections on the same CPU (program order)
    // or, in the fallback, under the same slot lock; the block's contents travel the same way.
    commit::store(caches[cpu].len, grown);
    true
}

thread_local! {
    /// Whether this thread is inside a `PerCpuAlloc` method: nested requests (the runtime's own
    /// allocations) go to the inner allocator. `const`, no destructor: usable at any time,
    /// including in thread-local destructors.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Set by the first request that has the runtime decide its mode: until the mode is decided,
/// other requests go to the inner allocator rather than decide it again.
static DECISION_REQUESTED: AtomicBool = AtomicBool::new(false);

/// The allocator the `PerCpu` slots of the state come from: the inner allocator, reached
/// through a pointer that is refreshed before the state is dropped, so the `PerCpuAlloc` may be
/// moved in between.
struct Forward<A> {
    inner: AtomicPtr<A>,
}

// SAFETY: forwards to the inner allocator, which `inner` points at whenever `PerCpu` calls it
// (while building the state, inside a `&self` method of `PerCpuAlloc`; and while dropping it,
// in `PerCpuAlloc::drop`, which refreshes the pointer first).
unsafe impl<A: GlobalAlloc> GlobalAlloc for Forward<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        (*self.inner.load(Ordering::Relaxed)).alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        (*self.inner.load(Ordering::Relaxed)).dealloc(ptr, layout)
    }
}

/// The per-CPU state, in memory from the inner allocator.
struct State<A> {
    forward: Forward<A>,
    caches: [PerCpu<Cache>; CLASSES],
}

/// Counters of a [`PerCpuAlloc`], from [`PerCpuAlloc::stats`].
///
/// The event counts are kept in `usize` atomics, as the runtime's `Stats` are (32-bit powerpc
/// has no 64-bit atomics): on 32-bit targets they wrap after 2³² events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocStats {
    /// Cache misses: small allocations that found the CPU's cache empty and took a batch from
    /// the inner allocator.
    pub refills: u64,
    /// Small frees that found the CPU's cache full and returned a batch to the inner allocator.
    pub flushes: u64,
    /// Small requests served directly by the inner allocator because they were nested in
    /// another call (the runtime's own allocations) or came before the state existed.
    pub bypassed: u64,
    /// Free blocks in the caches now, all CPUs and classes (a snapshot: other threads may be
    /// changing it).
    pub cached_blocks: usize,
}

/// A [`GlobalAlloc`] that caches small blocks per CPU over an inner allocator `A`; see the
/// [module documentation](self).
///
/// ```
/// use rseq::collections::alloc::PerCpuAlloc;
/// use std::alloc::{GlobalAlloc, Layout, System};
///
/// // Used directly, not as the global allocator.
/// let cache = PerCpuAlloc::new(System);
/// let layout = Layout::new::<[u64; 4]>();
/// unsafe {
///     let a = cache.alloc(layout);
///     assert!(!a.is_null());
///     a.cast::<[u64; 4]>().write([1, 2, 3, 4]);
///     cache.dealloc(a, layout);
///     // The block went to the current CPU's cache (if the thread did not move).
///     let b = cache.alloc(layout);
///     cache.dealloc(b, layout);
/// }
/// assert!(cache.stats().refills >= 1);
/// ```
pub struct PerCpuAlloc<A: GlobalAlloc + 'static = System> {
    inner: A,
    state: AtomicPtr<State<A>>,
    refills: AtomicUsize,
    flushes: AtomicUsize,
    bypassed: AtomicUsize,
}

impl<A: GlobalAlloc + 'static> PerCpuAlloc<A> {
    /// A front-end over `inner`. Allocates nothing until the first request.
    pub const fn new(inner: A) -> Self {
        PerCpuAlloc {
            inner,
            state: AtomicPtr::new(ptr::null_mut()),
            refills: AtomicUsize::new(0),
            flushes: AtomicUsize::new(0),
            bypassed: AtomicUsize::new(0),
        }
    }

    /// The inner allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AllocStats {
        let state = self.state.load(Ordering::Acquire);
        let cached_blocks = if state.is_null() {
            0
        } else {
            // SAFETY: a published state lives as long as `self`.
            let state = unsafe { &*state };
            state
                .caches
                .iter()
                .flat_map(|c| c.iter())
                .map(|c| c.len.load(Ordering::Relaxed))
                .sum()
        };
        AllocStats {
            refills: self.refills.load(Ordering::Relaxed) as u64,
            flushes: self.flushes.load(Ordering::Relaxed) as u64,
            bypassed: self.bypassed.load(Ordering::Relaxed) as u64,
            cached_blocks,
        }
    }

    /// Sets this thread's guard and returns the state, or `None` (guard untouched) when the
    /// request must go to the inner allocator: nested, or no state and `create` is false (or
    /// creating it failed).
    #[inline(always)]
    fn enter(&self, create: bool) -> Option<&State<A>> {
        if BUSY.get() {
            return None;
        }
        let mut state = self.state.load(Ordering::Acquire);
        if state.is_null() {
            if !create {
                return None;
            }
            state = self.create_state();
            if state.is_null() {
                return None;
            }
        }
        BUSY.set(true);
        // SAFETY: a published state lives as long as `self`.
        Some(unsafe { &*state })
    }

    /// Has the runtime decide its mode (once per process), then builds and publishes the
    /// state; returns the published one (possibly another thread's), or null (serve the request
    /// from the inner allocator) while another thread is having the mode decided, or if the
    /// inner allocator failed.
    #[cold]
    #[inline(never)]
    fn create_state(&self) -> *mut State<A> {
        if rseq_rt::mode_if_decided().is_none() {
            if DECISION_REQUESTED.swap(true, Ordering::AcqRel) {
                return ptr::null_mut();
            }
            // The runtime's allocations while it decides are nested: with the guard set, they
            // go to the inner allocator.
            BUSY.set(true);
            let _ = rseq_rt::mode();
            BUSY.set(false);
        }
        BUSY.set(true);
        let layout = Layout::new::<State<A>>();
        // SAFETY: `State` is not zero-sized.
        let fresh = unsafe { self.inner.alloc(layout) }.cast::<State<A>>();
        let published = if fresh.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `fresh` is valid for a `State`; `forward` is written before any reference
            // to it is taken. The `'static` reference to it is only held by the `PerCpu`s in
            // the same `State`, which are dropped before its memory is freed.
            unsafe {
                let forward = ptr::addr_of_mut!((*fresh).forward);
                forward.write(Forward {
                    inner: AtomicPtr::new(ptr::from_ref(&self.inner).cast_mut()),
                });
                let forward: &'static Forward<A> = &*forward;
                let caches = core::array::from_fn(|_| PerCpu::new_in(|_| Cache::new(), forward));
                ptr::addr_of_mut!((*fresh).caches).write(caches);
            }
            match self.state.compare_exchange(
                ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => fresh,
                Err(theirs) => {
                    // SAFETY: ours, never published; its `forward` points at `self.inner`.
                    unsafe {
                        ptr::drop_in_place(fresh);
                        self.inner.dealloc(fresh.cast(), layout);
                    }
                    theirs
                }
            }
        };
        BUSY.set(false);
        published
    }

    /// A block of `class` from the inner allocator, for a request that cannot use the caches.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_bypass(&self, class: usize) -> *mut u8 {
        self.bypassed.fetch_add(1, Ordering::Relaxed);
        self.inner.alloc(class_layout(class))
    }

    /// The miss path: a batch from the inner allocator, one block returned, the rest cached.
    /// Runs with the guard set.
    #[cold]
    #[inline(never)]
    unsafe fn refill(&self, caches: &PerCpu<Cache>, class: usize) -> *mut u8 {
        self.refills.fetch_add(1, Ordering::Relaxed);
        let layout = class_layout(class);
        let first = self.inner.alloc(layout);
        if first.is_null() {
            return first;
        }
        for _ in 1..REFILL_BATCH {
            let block = self.inner.alloc(layout);
            if block.is_null() {
                break;
            }
            if !cache_push(caches, block as usize) {
                // The thread moved to a CPU whose cache is fuller.
                self.inner.dealloc(block, layout);
                break;
            }
        }
        first
    }

    /// The full path: a batch back to the inner allocator, then `block` cached (or freed too,
    /// if the cache filled again). Runs with the guard set.
    #[cold]
    #[inline(never)]
    unsafe fn flush(&self, caches: &PerCpu<Cache>, class: usize, block: *mut u8) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let layout = class_layout(class);
        for _ in 1..REFILL_BATCH {
            match cache_pop(caches) {
                Some(old) => self.inner.dealloc(old as *mut u8, layout),
                None => break,
            }
        }
        if REFILL_BATCH == 1 || !cache_push(caches, block as usize) {
            self.inner.dealloc(block, layout);
        }
    }

    /// Whether small requests go straight to the inner allocator because the process runs its
    /// sections through the fallback (decided, and not on rseq): a cache behind slot locks
    /// would only add their cost to every request.
    #[inline(always)]
    fn passes_through(&self) -> bool {
        !rseq_rt::sections_run_on_rseq() && !self.state.load(Ordering::Relaxed).is_null()
    }

    /// A small request. The pass-through test comes first and the cache path is a call of its
    /// own, so that a request passed through costs two loads and a jump to the inner
    /// allocator: inlined together, the cache path's register saves were paid by every
    /// request (25–30% over glibc's malloc/free pair in the fallback).
    #[inline(always)]
    unsafe fn alloc_small(&self, class: usize) -> *mut u8 {
        if self.passes_through() {
            return self.inner.alloc(class_layout(class));
        }
        self.alloc_cached(class)
    }

    #[inline(never)]
    unsafe fn alloc_cached(&self, class: usize) -> *mut u8 {
        let Some(state) = self.enter(true) else {
            return self.alloc_bypass(class);
        };
        let caches = &state.caches[class];
        let block = match cache_pop(caches) {
            Some(block) => block as *mut u8,
            None => self.refill(caches, class),
        };
        BUSY.set(false);
        block
    }

    /// As [`alloc_small`](Self::alloc_small).
    #[inline(always)]
    unsafe fn dealloc_small(&self, block: *mut u8, class: usize) {
        if self.passes_through() {
            self.inner.dealloc(block, class_layout(class));
            return;
        }
        self.dealloc_cached(block, class)
    }

    #[inline(never)]
    unsafe fn dealloc_cached(&self, block: *mut u8, class: usize) {
        let Some(state) = self.enter(false) else {
            self.inner.dealloc(block, class_layout(class));
            return;
        };
        let caches = &state.caches[class];
        if !cache_push(caches, block as usize) {
            self.flush(caches, class, block);
        }
        BUSY.set(false);
    }
}

// SAFETY: every small block is a whole block of its class, allocated from the inner allocator
// with the class layout (at least as large and as aligned as the request) and owned by exactly
// one party at a time: the caller, one CPU's cache (a slot of which only the sections of that
// CPU, or the holder of its fallback lock, change), or the inner allocator. Each block goes
// back to the inner allocator with the layout it was allocated with. Large requests are the
// inner allocator's.
unsafe impl<A: GlobalAlloc + 'static> GlobalAlloc for PerCpuAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => self.alloc_small(class),
            None => self.inner.alloc(layout),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) => self.dealloc_small(ptr, class),
            None => self.inner.dealloc(ptr, layout),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => {
                let block = self.alloc_small(class);
                if !block.is_null() {
                    block.write_bytes(0, layout.size());
                }
                block
            }
            None => self.inner.alloc_zeroed(layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not
        // overflow `isize`.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            // The block is already of the right class.
            (Some(old), Some(new)) if old == new => ptr,
            (None, None) => self.inner.realloc(ptr, layout, new_size),
            _ => {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

impl<A: GlobalAlloc + 'static> Drop for PerCpuAlloc<A> {
    fn drop(&mut self) {
        let state = *self.state.get_mut();
        if state.is_null() {
            return;
        }
        // SAFETY: `&mut self`: no other thread uses the state or the caches. Every cached block
        // goes back to the inner allocator with its class layout; then the `PerCpu`s free their
        // slots through `forward`, pointed at the inner allocator where it is now.
        unsafe {
            let s = &mut *state;
            s.forward
                .inner
                .store(ptr::from_mut(&mut self.inner), Ordering::Relaxed);
            for (class, caches) in s.caches.iter_mut().enumerate() {
                for cache in caches.iter_mut() {
                    let len = *cache.len.get_mut();
                    for item in &mut cache.items[..len] {
                        self.inner
                            .dealloc(*item.get_mut() as *mut u8, class_layout(class));
                    }
                    *cache.len.get_mut() = 0;
                }
            }
            ptr::drop_in_place(state);
            self.inner.dealloc(state.cast(), Layout::new::<State<A>>());
        }
    }
}

impl<A: GlobalAlloc + core::fmt::Debug + 'static> core::fmt::Debug for PerCpuAlloc<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpuAlloc")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_small_size_maps_to_the_smallest_class_that_fits() {
        for size in 0..=MAX_SMALL_SIZE {
            for align in [1, 2, 4, 8, 16] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let class = class_of(layout).unwrap();
                assert!(SIZE_CLASSES[class] >= size);
                assert!(class == 0 || SIZE_CLASSES[class - 1] < size, "{size}");
            }
        }
        assert_eq!(class_of(Layout::from_size_align(16, 32).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(257, 8).unwrap()), None);
    }

    #[test]
    fn a_local_allocator_reuses_and_frees_everything_on_drop() {
        let a = PerCpuAlloc::new(System);
        let layout = Layout::new::<[u8; 100]>();
        let blocks: Vec<*mut u8> = (0..200).map(|_| unsafe { a.alloc(layout) }).collect();
        assert!(blocks
            .iter()
            .all(|b| !b.is_null() && (*b as usize).is_multiple_of(16)));
        for b in blocks {
            unsafe { a.dealloc(b, layout) };
        }
        let s = a.stats();
        if rseq_rt::sections_run_on_rseq() {
            assert!(s.refills >= 1 && s.flushes >= 1, "{s:?}");
        } else {
            // The fallback passes requests through: only the first one used a cache.
            assert!(s.refills <= 1 && s.flushes == 0, "{s:?}");
        }
        assert!(s.cached_blocks <= CLASSES * CACHE_CAPACITY * (rseq_rt::possible_cpus() + 1));
        // Moved after use: the drop still frees through the inner allocator.
        let moved = a;
        drop(moved);
    }
}
