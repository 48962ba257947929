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
//!     drop(words);
//!     // The short strings above came from (and went back to) the per-CPU caches.
//!     println!("{:?}", GLOBAL.stats());
//!     // Hand the cached blocks back to `System` (after a burst of work, say).
//!     GLOBAL.release_memory();
//! }
//! ```
//!
//! # Size classes
//!
//! Requests of at most [`MAX_SMALL_SIZE`] (32 KiB) bytes with an alignment of at most
//! [`CLASS_ALIGN`] (16) are rounded up to one of the 44 [`SIZE_CLASSES`]: steps of 16 bytes up
//! to 128, then four classes per power of two (eight from 512 to 1024), so at most a quarter of
//! a block is unused.
//! [`GlobalAlloc::dealloc`] receives the layout the block was requested with and maps it to
//! the same class. Larger or more-aligned requests go straight to the inner allocator with
//! their own layout ([`GlobalAlloc::realloc`] of those uses the inner allocator's `realloc`).
//!
//! # Spans
//!
//! The blocks of a class are carved from *spans*: 256 KiB, 256 KiB-aligned, each holding
//! blocks of one class behind a header of 128 bytes or more (with a bitmap of the blocks that
//! came back: 2 KiB for 16-byte blocks, less for larger ones). A fresh span hands out its
//! blocks in address order (so objects allocated one after the other are neighbours in memory,
//! and one refill's batch is one CPU's run of cache lines); blocks that come back set their bit
//! in their span's bitmap, and go out again lowest address first. Neither touches the block's
//! memory: a batch moving between the caches and the spans writes to the headers only. Each
//! class's spans sit behind one mutex (the *central* lists), reached only by refills and
//! flushes, a batch at a time. A span none of whose blocks is out is reset to address order
//! and kept for the next refills, up to four per class; more go to a pool of empty spans that
//! every class takes its next span from before it carves a new one, and
//! [`release_memory`](PerCpuAlloc::release_memory) hands back the kept and pooled ones too.
//! Pooled spans keep their pages until an idle pass (below) finds them unused: a program that
//! frees a large structure and builds the next one reuses them without going through the inner
//! allocator, and never holds more than it held at its peak.
//!
//! New spans come from the inner allocator four at a time: one 1 MiB, 256 KiB-aligned
//! allocation (a *group*), carved as classes need them. An aligned allocation costs the inner
//! allocator pages of its own besides the memory (glibc's maps twice the size and writes a
//! header at the mapping's start and one before the aligned block: two resident pages), and a
//! group pays them once for four spans. A group goes back to the inner allocator once all its
//! spans are empty and pooled: at `release_memory`, or as soon as it happens while the pool
//! holds more than 1024 spans (256 MiB of address space). Until then, `release_memory`
//! returns its empty spans' pages to the system (all but each header's page). Where the inner
//! allocator cannot give a group, a span comes alone.
//!
//! Blocks served while the caches are bypassed (see below) are allocations of the inner
//! allocator with the class layout (`Layout::from_size_align(class, 16)`), and mix with span
//! blocks in the caches. A map with one bit per 256 KiB of address space (in leaves of 512
//! bytes, one per GiB that holds spans) tells the two apart when a block leaves the caches:
//! span blocks go back to their span, the others to the inner allocator with the class layout.
//!
//! # The per-CPU caches
//!
//! Each CPU has one region (a [`PerCpu`] slot of 145 KiB, padded to 256 KiB so that sections
//! scale the CPU index with a shift, allocated zeroed so that only the parts in use become
//! resident): for each class a stack of free block addresses, at most
//! [`max_cached_blocks`] of them (128 KiB of blocks, between 4 and 2048), and a header with
//! the stack's top and its current *limit*. `alloc` pops the top address and `dealloc` pushes
//! one, each with one critical section that checks the top against the class's base or its
//! limit inside the section, so the hit path takes no lock and runs no atomic
//! read-modify-write. Both sections are declared with `on_abort` and inlined into the hit
//! paths, which call nothing: an empty or full stack, an abort (or a thread the runtime has
//! not attached yet), a nested request and a missing state all go to a slow path that runs
//! the same steps in a section with the usual retries, so the hit keeps no value alive across
//! a call and saves almost no registers.
//!
//! **Capacity adapts.** A class's limit starts at zero blocks. Each miss (an empty stack on
//! `alloc`) and each overflow (a stack at its limit on `dealloc`) raises it by one batch (4 KiB
//! of blocks, 2 to 32 of them), while the CPU's limits add up to at most [`CPU_CACHE_BYTES`]
//! (512 KiB) of blocks; past that, the growing class takes a batch's worth of capacity from the
//! CPU's other classes in turn, and the blocks above a lowered limit move to the transfer cache.
//! So a CPU's cache is sized by what its threads ask for, within a fixed budget.
//!
//! **The transfer cache.** Each class has one shared cache of free blocks (up to 128 KiB of
//! them, 4 to 4096 addresses) behind a mutex, in front of the central lists. A miss takes a
//! batch from it (or, if it is empty, from the spans), returns one block and pushes the others;
//! an overflow that cannot grow moves a batch of cached blocks and the freed block to it (and
//! what does not fit to their spans). Blocks allocated on one CPU and freed on another (a
//! producer and a consumer) so cycle through it a batch at a time.
//!
//! **Returning memory.** [`PerCpuAlloc::release_memory`] stops each CPU's cache (its limits,
//! then its tops, set to zero, with a [`fence_cpu`](rseq_rt::fence_cpu) after each step),
//! frees its blocks and restarts it with zero capacity (its tops, a fence, its limits), then
//! empties the transfer caches: every cached block goes back to its span (or the inner
//! allocator), and then the groups whose spans are all empty to the inner allocator (the other
//! empty spans return their pages to the system). Caches hold at most `CPU_CACHE_BYTES` per
//! CPU (give or take a batch per racing thread), the transfer caches at most 128 KiB per class,
//! the central lists at most four empty spans (1 MiB) per class, and the pool about 1024
//! (their pages until an idle pass returns them), more only while their groups have spans in
//! use.
//!
//! **Idle memory goes back on its own.** An *idle pass* ([`PerCpuAlloc::release_idle`]) drains,
//! the same way, the caches of the CPUs that had no miss and no overflow since the last pass
//! and the transfer caches nobody used since then, and returns to the operating system
//! (`madvise(MADV_DONTNEED)`) the pages of the spans that stayed empty since the last pass,
//! keeping the spans themselves (their first page, with the header, stays). A pass runs on its
//! own from the slow paths once [`RELEASE_DELAY`] (one second) has passed since the last one
//! (every 64th miss or overflow of a CPU looks at the clock), so idle memory goes back within
//! one to two delays while the program allocates; a program that goes quiet can call
//! `release_idle` from a timer of its own.
//!
//! **Stats.** [`PerCpuAlloc::stats`] counts misses, overflows, the misses the transfer cache
//! served, the blocks and bytes cached per CPU and in the transfer caches, the spans held and
//! the bytes handed back, the idle passes, the caches they drained and the bytes they returned
//! to the system; [`PerCpuAlloc::cpu_stats`] gives each CPU's misses, overflows, capacity and
//! cached blocks per class. Hits are not counted: a count in the pop's section cost 3% on the
//! benchmark's 32-byte pairs and 8% on its batch.
//!
//! # In the fallback
//!
//! Where sections take the fallback's slot locks (no rseq: valgrind, qemu-user, seccomp,
//! `RSEQ_DISABLE=1`; or after a demotion), a cache would only add the locks' cost to every
//! request: small requests then go straight to the inner allocator, with their class layout,
//! and no span is made. The check is one relaxed load ([`rseq_rt::sections_run_on_rseq`]).
//! After a demotion (spans exist), a free also looks the block up in the span map and gives a
//! span's block back to its span; the blocks still cached when the process was demoted stay
//! there until `release_memory` or the allocator's drop.
//!
//! # Initialisation and reentrancy
//!
//! The per-CPU state (the regions and the transfer caches) is created on the first small
//! allocation, with its memory from the *inner* allocator ([`PerCpu::new_zeroed_in`]), never
//! from the global allocator, which may be this very allocator. Racing threads each build a
//! state and publish it with a compare-and-swap; a loser frees its copy through the inner
//! allocator.
//!
//! The rseq runtime allocates through the global allocator while it decides the process's mode
//! (it reads `/sys` and the environment), while it attaches a thread (arming its thread-exit
//! hook), and so on. So requests are served *directly by the inner allocator*
//! (with the class layout for small requests, which keeps blocks interchangeable):
//!
//! - while this thread is already inside a `PerCpuAlloc` method (a thread-local `Cell<bool>`
//!   with a `const` initialiser and no destructor, so it works in thread-local destructors; a
//!   hit reads it, and the slow paths set it around their work);
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
//! - Memory reaches the operating system as the inner allocator returns it (glibc unmaps
//!   freed chunks above its mmap threshold and trims its heaps' tops), except the pages of the
//!   kept empty spans, which the idle passes return themselves. Spans with any block out keep
//!   their pages.
//! - The idle passes run from the slow paths of allocating threads (or the program's own
//!   calls): no background thread. A CPU whose threads only hit its cache for a whole pass
//!   counts as idle and refills after the drain.
//! - Spans' addresses must be below 2⁴⁸ on 64-bit targets (the map's range); a span the inner
//!   allocator places higher is handed back, and that refill takes blocks of the inner
//!   allocator instead.
//! - In the runtime's `Fallback` mode, `fork` while another thread is inside an allocation can
//!   leave that thread's slot lock held in the child, as with any lock-based allocator; in
//!   either mode, so can a transfer cache's mutex. In `Rseq` mode the hit path holds no lock.
//! - Dropping a `PerCpuAlloc` (one that is not a `static`) frees every cached block, the spans
//!   none of whose blocks the program holds, and the state to the inner allocator (spans with
//!   blocks still out are leaked); it may be moved freely before and after use (the state keeps
//!   no pointer to it that is used after a move).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use rseq_macros::critical_section;
use rseq_rt::PerCpu;
use std::alloc::System;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

mod spans;
use spans::{Central, Pool, SpanMap, SPAN};

/// The block sizes of the size classes, in bytes: steps of 16 up to 128, then four classes
/// per power of two (at most 25% of a block unused) up to 32 KiB, except from 512 to 1024,
/// which has eight (steps of 64, at most 11% unused). That range holds many mid-sized
/// objects: a leaf node of Rust's `BTreeMap<String, Vec<u32>>` is 544 bytes, and gets a
/// 576-byte block rather than a 640-byte one.
pub const SIZE_CLASSES: [usize; 44] = [
    16, 32, 48, 64, 80, 96, 112, 128, //
    160, 192, 224, 256, 320, 384, 448, 512, //
    576, 640, 704, 768, 832, 896, 960, 1024, //
    1280, 1536, 1792, 2048, //
    2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, //
    10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
];

/// The largest request (in bytes) served from the caches.
pub const MAX_SMALL_SIZE: usize = 32768;

/// The largest alignment served from the caches (and the alignment of every cached block).
pub const CLASS_ALIGN: usize = 16;

/// The bytes of free blocks one CPU's cache may be sized for, over all classes: the sum of
/// every class's capacity times its block size. A class that needs more takes capacity from
/// the CPU's other classes.
pub const CPU_CACHE_BYTES: usize = 512 * 1024;

/// How long a CPU's cache may go without a miss or an overflow, and an empty span stay unused,
/// before the allocator gives their memory up: the CPU's cached blocks go back to their spans,
/// the span's pages to the operating system. See [`PerCpuAlloc::release_idle`].
pub const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// Misses (or overflows) of one CPU between two looks at the clock for a due
/// [`release_idle`](PerCpuAlloc::release_idle) pass.
const CLOCK_TICK: usize = 64;

const CLASSES: usize = SIZE_CLASSES.len();

/// Blocks moved at once between a CPU's cache and the transfer cache or the inner allocator.
const MAX_BATCH: usize = 32;

/// `bytes` of blocks of each class, as a count between `lo` and `hi`.
const fn per_class(bytes: usize, lo: usize, hi: usize) -> [usize; CLASSES] {
    let mut counts = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        counts[c] = clamp(bytes / SIZE_CLASSES[c], lo, hi);
        c += 1;
    }
    counts
}

/// The most blocks one CPU may cache of each class: 128 KiB of them, between 4 and 2048.
const MAX_CAP: [usize; CLASSES] = per_class(128 * 1024, 4, 2048);

/// Blocks per refill or flush: 4 KiB of them, between 2 and [`MAX_BATCH`].
const BATCH: [usize; CLASSES] = per_class(4096, 2, MAX_BATCH);

/// The most blocks the transfer cache holds of each class: 128 KiB of them, up to 4096, and
/// never fewer than two batches.
const TRANSFER_CAP: [usize; CLASSES] = per_class(128 * 1024, 4, 4096);

/// Where each class's addresses start in a CPU's [`Region`]. Slot 0 is never used, so that a
/// cache's top index is never 0 except in the stopped state of [`drain_cpu`](PerCpuAlloc).
const BASE: [usize; CLASSES] = {
    let mut base = [0; CLASSES];
    let mut next = 1;
    let mut c = 0;
    while c < CLASSES {
        base[c] = next;
        next += MAX_CAP[c];
        c += 1;
    }
    base
};

/// Address slots in a CPU's region.
const SLOTS: usize = BASE[CLASSES - 1] + MAX_CAP[CLASSES - 1];

const fn clamp(v: usize, lo: usize, hi: usize) -> usize {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// Class index by `ceil(size / 16)`, for sizes 0..=1024.
const CLASS_BY_16: [u8; 1024 / 16 + 1] = class_table(16);
/// Class index by `ceil(size / 128)`, for sizes 1025..=32768.
const CLASS_BY_128: [u8; MAX_SMALL_SIZE / 128 + 1] = class_table(128);

const fn class_table<const N: usize>(granule: usize) -> [u8; N] {
    let mut table = [0; N];
    let mut i = 0;
    let mut c = 0;
    while i < N {
        while SIZE_CLASSES[c] < i * granule {
            c += 1;
        }
        table[i] = c as u8;
        i += 1;
    }
    table
}

/// The class index of a request, or `None` for the inner allocator.
#[inline(always)]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() > CLASS_ALIGN {
        None
    } else if size <= 1024 {
        Some(CLASS_BY_16[size.div_ceil(16)] as usize)
    } else if size <= MAX_SMALL_SIZE {
        Some(CLASS_BY_128[size.div_ceil(128)] as usize)
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
/// assert_eq!(block_size(Layout::new::<[u8; 300]>()), Some(320));
/// assert_eq!(block_size(Layout::new::<[u8; 544]>()), Some(576));
/// assert_eq!(block_size(Layout::new::<[u8; 4097]>()), Some(5120));
/// assert_eq!(block_size(Layout::from_size_align(64, 64).unwrap()), None);
/// assert_eq!(block_size(Layout::new::<[u8; 40000]>()), None);
/// ```
pub fn block_size(layout: Layout) -> Option<usize> {
    class_of(layout).map(|c| SIZE_CLASSES[c])
}

/// The most blocks of a request's class that one CPU's cache may hold (its capacity adapts
/// between 0 and this bound, see the [module documentation](self)), or `None` for requests that
/// go to the inner allocator.
///
/// ```
/// use rseq::collections::alloc::max_cached_blocks;
/// use std::alloc::Layout;
///
/// assert_eq!(max_cached_blocks(Layout::new::<[u8; 32]>()), Some(2048));
/// assert_eq!(max_cached_blocks(Layout::new::<[u8; 32768]>()), Some(4));
/// ```
pub fn max_cached_blocks(layout: Layout) -> Option<usize> {
    class_of(layout).map(|c| MAX_CAP[c])
}

/// One CPU's cache: for each class, the index of its top (one past the last cached address)
/// and its limit (one past the last slot it may use), and behind them the classes' address
/// stacks, class `c` in `slots[BASE[c]..BASE[c] + MAX_CAP[c]]`.
///
/// `hdr[2c]` is class `c`'s top and `hdr[2c + 1]` its limit, both slot indices, with
/// `BASE[c] <= top <= limit <= BASE[c] + MAX_CAP[c]`, except in the stopped state (both 0) that
/// a drain sets and ends. Only the sections change the tops; the limits change with
/// compare-exchanges from outside (any value in range is safe for the sections); stats are
/// counted with atomic adds, after the slots so that they do not share the headers' lines.
#[repr(C)]
struct Region {
    hdr: [AtomicUsize; 2 * CLASSES],
    slots: [AtomicUsize; SLOTS],
    /// `Σ (limit - BASE[c]) × SIZE_CLASSES[c]`, kept with the limits' changes.
    capacity: AtomicUsize,
    /// The next class to take capacity from.
    victim: AtomicUsize,
    misses: AtomicUsize,
    overflows: AtomicUsize,
    /// `misses + overflows` at the last idle pass: unchanged at the next one, the CPU is idle.
    seen: AtomicUsize,
    /// To a power-of-two size (256 KiB), so that sections scale the CPU index with a shift;
    /// the padding is never touched, so it costs address space only.
    _pad: [u8; REGION_PAD],
}

/// The bytes of a region's fields.
const REGION_FIELDS: usize = (2 * CLASSES + SLOTS + 5) * core::mem::size_of::<usize>();

/// Padding to the next power of two.
const REGION_PAD: usize = REGION_FIELDS.next_power_of_two() - REGION_FIELDS;

/// Pops the current CPU's top free block of the class whose top is `hdr[top]` and whose stack
/// starts at `base`, or returns [`NO_HIT`] if it is empty (or stopped) or the attempt aborted.
/// It calls nothing (no retry, no registration, no fallback), so a caller that hands every
/// other case to a function running `cache_pop` (the same steps, retried, [`NO_HIT`] only for
/// an empty stack) keeps no value alive across a call, and saves almost no registers.
///
/// # Safety
/// `top` and `base` belong to one class (`top = 2c`, `base = BASE[c]`): the section then only
/// reads that class's slots.
#[critical_section(crate = ::rseq_rt, on_abort = NO_HIT, retrying = cache_pop)]
#[inline(always)]
unsafe fn cache_pop_hit(regions: &PerCpu<Region>, top: usize, base: usize) -> usize {
    let len = load(regions[cpu].hdr[top]);
    if len <= base {
        fail(NO_HIT)
    }
    let last = sub(len, 1);
    let block = load(regions[cpu].slots[last]);
    commit::store(regions[cpu].hdr[top], last);
    block
}

/// What [`cache_pop_hit`] and `cache_pop` return without a block (blocks are never null).
const NO_HIT: usize = 0;

/// Pushes `block` on the current CPU's stack of the class whose top is `hdr[top]`, unless it
/// is at its limit (`hdr[top + 1]`), the stack is stopped or the attempt aborted (false);
/// `cache_push` is the same steps, retried (false only for a full or stopped stack). See
/// [`cache_pop_hit`].
///
/// # Safety
/// `top` is `2c` for a class `c`: its limit keeps the store within the class's slots.
#[critical_section(crate = ::rseq_rt, on_abort = false, retrying = cache_push)]
#[inline(always)]
unsafe fn cache_push_hit(regions: &PerCpu<Region>, top: usize, limit: usize, block: usize) -> bool {
    let len = load(regions[cpu].hdr[top]);
    let end = load(regions[cpu].hdr[limit]);
    if len >= end {
        fail(false)
    }
    store(regions[cpu].slots[len], block);
    let grown = add(len, 1);
    // A plain store: the addresses are only read by sections on the same CPU (program order),
    // under the same slot lock in the fallback, or by a drain after a fence.
    commit::store(regions[cpu].hdr[top], grown);
    true
}

/// The cache-line size the per-CPU data is padded to (128 bytes on x86-64, where the adjacent
/// line is prefetched with a line).
const LINE: usize = core::mem::align_of::<rseq_rt::CachePadded<u8>>();

/// Reorders a batch of consecutive blocks of `size < LINE` bytes so that blocks handed out one
/// after the other never share a cache line: every `k`-th block first (`k` blocks apart is
/// more than a line), then the ones after those, and so on. That needs at least `3k` blocks
/// (each run of every `k`-th block two long or more, so that the step from one run to the next
/// is `2k - 1` blocks or more); a shorter batch keeps its order (16-byte blocks under s390x's
/// 256-byte lines: a refill's 32 are fewer than 48). Two threads that start on one CPU (or a
/// producer and its consumer) take consecutive blocks of one batch; on one line, they would
/// keep writing the same line from two CPUs long after they moved apart.
fn spread_over_lines(batch: &mut [usize], size: usize) {
    let k = line_step(size);
    if batch.len() < 3 * k || batch.len() > MAX_BATCH {
        return;
    }
    let mut spread = [0; MAX_BATCH];
    let mut n = 0;
    for start in 0..k.min(batch.len()) {
        for &block in batch[start..].iter().step_by(k) {
            spread[n] = block;
            n += 1;
        }
    }
    batch.copy_from_slice(&spread[..n]);
}

/// How many blocks of `size < LINE` bytes apart two blocks must be never to share a line: a
/// line's worth, plus one where blocks straddle lines.
const fn line_step(size: usize) -> usize {
    LINE.div_ceil(size) + (!LINE.is_multiple_of(size)) as usize
}

/// The transfer cache of one class: free blocks any CPU's cache refills from and flushes to.
struct Transfer {
    list: Mutex<TransferList>,
}

struct TransferList {
    /// `cap` addresses, `len` of them free blocks, in the state's transfer array.
    blocks: *mut usize,
    len: usize,
    cap: usize,
    /// Takes and puts so far, and their count at the last idle pass.
    ops: usize,
    seen: usize,
}

// SAFETY: the list owns its part of the transfer array and is only reached under its mutex.
unsafe impl Send for TransferList {}

impl TransferList {
    /// Moves up to `into.len()` blocks out, the last ones in first; returns how many.
    fn move_out(&mut self, into: &mut [usize]) -> usize {
        let n = into.len().min(self.len);
        self.len -= n;
        // SAFETY: `len + n <= cap` addresses of the list's part of the array.
        unsafe { ptr::copy_nonoverlapping(self.blocks.add(self.len), into.as_mut_ptr(), n) };
        n
    }
}

/// Locks `mutex` even if poisoned: the allocator's locks guard nothing a panic could leave
/// half-changed (nothing panics with them held), and an allocator must not fail for a panic
/// elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transfer {
    /// Moves up to `into.len()` blocks out; returns how many.
    fn take(&self, into: &mut [usize]) -> usize {
        let mut list = lock(&self.list);
        list.ops = list.ops.wrapping_add(1);
        list.move_out(into)
    }

    /// Moves as many of `blocks` in as fit; returns how many.
    fn put(&self, blocks: &[usize]) -> usize {
        let mut list = lock(&self.list);
        list.ops = list.ops.wrapping_add(1);
        let n = blocks.len().min(list.cap - list.len);
        // SAFETY: `len + n <= cap`.
        unsafe { ptr::copy_nonoverlapping(blocks.as_ptr(), list.blocks.add(list.len), n) };
        list.len += n;
        n
    }

    /// For an idle pass: moves up to `into.len()` blocks out if no CPU took or put any since
    /// the last call (returns how many), or notes the activity and moves none.
    fn take_idle(&self, into: &mut [usize]) -> usize {
        let mut list = lock(&self.list);
        if list.ops != list.seen {
            list.seen = list.ops;
            return 0;
        }
        list.move_out(into)
    }
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

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        (*self.inner.load(Ordering::Relaxed)).alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        (*self.inner.load(Ordering::Relaxed)).dealloc(ptr, layout)
    }
}

/// The layout of the transfer caches' address array, all classes.
fn transfer_layout() -> Layout {
    let words: usize = TRANSFER_CAP.iter().sum();
    Layout::array::<usize>(words).expect("small")
}

/// The per-CPU state, in memory from the inner allocator.
struct State<A> {
    forward: Forward<A>,
    regions: PerCpu<Region>,
    transfer: [Transfer; CLASSES],
    /// The transfer caches' addresses (`TRANSFER_CAP[c]` words per class, in class order).
    transfer_array: *mut usize,
    /// Held by `release_memory` (one drain at a time).
    draining: Mutex<()>,
    /// Each class's spans.
    central: [Central; CLASSES],
    /// Which addresses are spans.
    map: SpanMap,
    /// Empty spans of no class.
    pool: Pool,
    /// The idle passes' clock and counts.
    idle: Idle,
}

/// The bookkeeping of [`PerCpuAlloc::release_idle`].
struct Idle {
    /// The clock's origin: the state's creation.
    since: Instant,
    /// Milliseconds since `since` at the last pass (wrapping on 32-bit targets after 49 days;
    /// compared with wrapping arithmetic).
    last_pass_ms: AtomicUsize,
    passes: AtomicUsize,
    drains: AtomicUsize,
    returned: AtomicUsize,
    /// The system's page size.
    page: usize,
}

impl Idle {
    fn new() -> Idle {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Idle {
            since: Instant::now(),
            last_pass_ms: AtomicUsize::new(0),
            passes: AtomicUsize::new(0),
            drains: AtomicUsize::new(0),
            returned: AtomicUsize::new(0),
            page: if page > 0 { page as usize } else { 4096 },
        }
    }

    fn now_ms(&self) -> usize {
        self.since.elapsed().as_millis() as usize
    }

    /// Whether a pass is due: [`RELEASE_DELAY`] since the last one.
    fn due(&self, now_ms: usize) -> bool {
        now_ms.wrapping_sub(self.last_pass_ms.load(Ordering::Relaxed))
            >= RELEASE_DELAY.as_millis() as usize
    }
}

/// Counters of a [`PerCpuAlloc`], from [`PerCpuAlloc::stats`].
///
/// The event counts are kept in `usize` atomics, as the runtime's `Stats` are (32-bit powerpc
/// has no 64-bit atomics): on 32-bit targets they wrap after 2³² events. The block and byte
/// counts are snapshots: other threads may be changing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocStats {
    /// Small allocations that found the CPU's cache of their class empty (each refilled it
    /// with a batch, from the transfer cache or the spans).
    pub misses: u64,
    /// Small frees that found the CPU's cache of their class at its limit (each grew the
    /// limit, or moved a batch to the transfer cache or the blocks' spans).
    pub overflows: u64,
    /// Of the misses, those the transfer cache served (at least in part).
    pub transfer_refills: u64,
    /// Small requests served directly by the inner allocator because they were nested in
    /// another call (the runtime's own allocations) or came before the state existed.
    pub bypassed: u64,
    /// Free blocks in the per-CPU caches, all CPUs and classes.
    pub cached_blocks: usize,
    /// Their bytes (block sizes).
    pub cached_bytes: usize,
    /// Free blocks in the transfer caches, all classes.
    pub transfer_blocks: usize,
    /// Their bytes.
    pub transfer_bytes: usize,
    /// Bytes handed back to the inner allocator: groups of spans emptied beyond the ones kept,
    /// blocks of the inner allocator leaving the caches, and all that
    /// [`PerCpuAlloc::release_memory`] hands back.
    pub released_bytes: u64,
    /// Spans held (each 256 KiB of a group from the inner allocator, carved into blocks of one
    /// class), the pooled ones included; not the current group's spans never carved.
    pub spans: usize,
    /// Of them, empty spans of no class, kept for any class's next span (about 1024 at most,
    /// more while their groups have spans in use).
    pub pooled_spans: usize,
    /// Their bytes.
    pub span_bytes: usize,
    /// Blocks out of the spans: with the program or in a cache.
    pub span_blocks_out: usize,
    /// Idle passes run ([`PerCpuAlloc::release_idle`], called or due).
    pub idle_passes: u64,
    /// CPU caches drained by the idle passes (no miss or overflow between two passes).
    pub idle_drains: u64,
    /// Bytes of empty spans' pages returned to the operating system (`madvise`) by the idle
    /// passes, and by [`PerCpuAlloc::release_memory`] for spans whose groups cannot go back
    /// yet; the spans are kept, their pages come back zeroed when used again.
    pub returned_bytes: u64,
    /// Allocations of the inner allocator that the front-end holds for itself: its state, the
    /// per-CPU regions, the transfer array, the span map and the spans' groups. With
    /// `cached_blocks`, `transfer_blocks` and `span_blocks_out`, this tells the program's
    /// blocks from the inner allocator's count of live blocks.
    pub own_allocations: usize,
}

/// One CPU's cache, from [`PerCpuAlloc::cpu_stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCacheStats {
    /// The CPU (the last index, [`possible_cpus`](rseq_rt::possible_cpus), is the fallback's
    /// spare slot).
    pub cpu: usize,
    /// Misses on this CPU (see [`AllocStats::misses`]).
    pub misses: u64,
    /// Overflows on this CPU (see [`AllocStats::overflows`]).
    pub overflows: u64,
    /// Bytes the cache's limits allow now, all classes (at most [`CPU_CACHE_BYTES`], give or
    /// take one batch per racing thread).
    pub capacity_bytes: usize,
    /// Free blocks cached per class, in [`SIZE_CLASSES`] order.
    pub blocks: [usize; SIZE_CLASSES.len()],
}

impl CpuCacheStats {
    /// Bytes of the free blocks cached.
    pub fn cached_bytes(&self) -> usize {
        self.blocks
            .iter()
            .zip(SIZE_CLASSES)
            .map(|(n, size)| n * size)
            .sum()
    }
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
/// if rseq::sections_run_on_rseq() {
///     assert!(cache.stats().misses >= 1);
/// }
/// // Everything cached goes back to `System`.
/// cache.release_memory();
/// assert_eq!(cache.stats().cached_blocks + cache.stats().transfer_blocks, 0);
/// ```
pub struct PerCpuAlloc<A: GlobalAlloc + 'static = System> {
    inner: A,
    state: AtomicPtr<State<A>>,
    transfer_refills: AtomicUsize,
    bypassed: AtomicUsize,
    released: AtomicUsize,
    /// Whether a span was ever made: until then no block can be a span's, and the fallback's
    /// frees skip the map. Next to `state`, so that the fallback's free reads one line.
    has_spans: AtomicBool,
    /// Set by the thread that builds the state (one at a time; the others' requests meanwhile
    /// go to the inner allocator).
    creating: AtomicBool,
    /// A bitwise copy of the state's `regions` (which stays the owner: the copy is never
    /// dropped), written once, before the state is published. The hit paths take the regions'
    /// address from here, a load off `self` that does not wait for the state's pointer (on the
    /// 32-byte pair that dependent load cost about 5%).
    hot_regions: UnsafeCell<MaybeUninit<PerCpu<Region>>>,
}

// SAFETY: `hot_regions` is written once, by the one thread that builds the state, before it
// publishes the state with a release store, and read only after the state was seen published
// (an acquire load); the other fields are atomics or `A`.
unsafe impl<A: GlobalAlloc + Sync + 'static> Sync for PerCpuAlloc<A> {}

impl<A: GlobalAlloc + 'static> PerCpuAlloc<A> {
    /// A front-end over `inner`. Allocates nothing until the first request.
    pub const fn new(inner: A) -> Self {
        PerCpuAlloc {
            inner,
            state: AtomicPtr::new(ptr::null_mut()),
            transfer_refills: AtomicUsize::new(0),
            bypassed: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            has_spans: AtomicBool::new(false),
            creating: AtomicBool::new(false),
            hot_regions: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The state's regions, through `hot_regions`.
    ///
    /// # Safety
    /// The state was seen published (non-null, with an acquire load).
    #[inline(always)]
    unsafe fn hot_regions(&self) -> &PerCpu<Region> {
        (*self.hot_regions.get()).assume_init_ref()
    }

    /// The inner allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn published(&self) -> Option<&State<A>> {
        let state = self.state.load(Ordering::Acquire);
        // SAFETY: a published state lives as long as `self`.
        (!state.is_null()).then(|| unsafe { &*state })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AllocStats {
        let mut stats = AllocStats {
            transfer_refills: self.transfer_refills.load(Ordering::Relaxed) as u64,
            bypassed: self.bypassed.load(Ordering::Relaxed) as u64,
            released_bytes: self.released.load(Ordering::Relaxed) as u64,
            ..AllocStats::default()
        };
        self.each_cpu(|cpu| {
            stats.misses += cpu.misses;
            stats.overflows += cpu.overflows;
            stats.cached_blocks += cpu.blocks.iter().sum::<usize>();
            stats.cached_bytes += cpu.cached_bytes();
        });
        if let Some(state) = self.published() {
            for (class, transfer) in state.transfer.iter().enumerate() {
                let len = lock(&transfer.list).len;
                stats.transfer_blocks += len;
                stats.transfer_bytes += len * SIZE_CLASSES[class];
            }
            for central in &state.central {
                let counts = central.counts();
                stats.spans += counts.spans;
                stats.span_blocks_out += counts.out;
            }
            stats.pooled_spans = state.pool.len();
            stats.spans += stats.pooled_spans;
            stats.span_bytes = stats.spans * SPAN;
            stats.idle_passes = state.idle.passes.load(Ordering::Relaxed) as u64;
            stats.idle_drains = state.idle.drains.load(Ordering::Relaxed) as u64;
            stats.returned_bytes = state.idle.returned.load(Ordering::Relaxed) as u64;
            // The state, the regions, the transfer array.
            stats.own_allocations = 3 + state.map.allocations() + state.pool.groups();
        }
        stats
    }

    /// Each CPU's cache (and the fallback's spare slot), in CPU order; empty before the first
    /// small allocation.
    ///
    /// ```
    /// use rseq::collections::alloc::PerCpuAlloc;
    /// use std::alloc::{GlobalAlloc, Layout, System};
    ///
    /// let cache = PerCpuAlloc::new(System);
    /// let layout = Layout::new::<[u8; 100]>();
    /// let blocks: Vec<_> = (0..100).map(|_| unsafe { cache.alloc(layout) }).collect();
    /// for b in blocks {
    ///     unsafe { cache.dealloc(b, layout) };
    /// }
    /// let per_cpu = cache.cpu_stats();
    /// assert_eq!(per_cpu.len(), rseq::possible_cpus() + 1);
    /// let cached: usize = per_cpu.iter().map(|c| c.cached_bytes()).sum();
    /// assert_eq!(cached, cache.stats().cached_bytes);
    /// ```
    pub fn cpu_stats(&self) -> Vec<CpuCacheStats> {
        let mut all = Vec::new();
        self.each_cpu(|cpu| all.push(cpu));
        all
    }

    /// Calls `f` with each CPU's cache stats, allocating nothing (so that `stats` can be read
    /// between the inner allocator's counts without changing them).
    fn each_cpu(&self, mut f: impl FnMut(CpuCacheStats)) {
        let Some(state) = self.published() else {
            return;
        };
        for (cpu, region) in state.regions.iter().enumerate() {
            f(CpuCacheStats {
                cpu,
                misses: region.misses.load(Ordering::Relaxed) as u64,
                overflows: region.overflows.load(Ordering::Relaxed) as u64,
                capacity_bytes: region.capacity.load(Ordering::Relaxed),
                blocks: core::array::from_fn(|c| {
                    region.hdr[2 * c]
                        .load(Ordering::Relaxed)
                        .saturating_sub(BASE[c])
                }),
            });
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
    /// from the inner allocator) while another thread is having the mode decided or building
    /// the state, or if the inner allocator failed (a later request tries again).
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
        if self.creating.swap(true, Ordering::Acquire) {
            // Being built by another thread (null), or published since this one looked.
            return self.state.load(Ordering::Acquire);
        }
        BUSY.set(true);
        let layout = Layout::new::<State<A>>();
        // SAFETY: neither layout is zero-sized.
        let (fresh, array) = unsafe {
            (
                self.inner.alloc(layout).cast::<State<A>>(),
                self.inner.alloc(transfer_layout()).cast::<usize>(),
            )
        };
        let map = SpanMap::new(&self.inner);
        let published = match map {
            Some(map) if !fresh.is_null() && !array.is_null() => {
                // SAFETY: `fresh` is valid for a `State`; `forward` is written before any reference
                // to it is taken. The `'static` reference to it is only held by the `PerCpu` in the
                // same `State`, which is dropped before its memory is freed (and by that
                // `PerCpu`'s copy in `hot_regions`, never dropped and not used once the state
                // is freed, at the allocator's drop). Zero bytes are a valid
                // `Region` (atomics); each region's headers are then set to empty stacks of zero
                // capacity. The transfer lists split `array` by `TRANSFER_CAP`.
                unsafe {
                    let forward = ptr::addr_of_mut!((*fresh).forward);
                    forward.write(Forward {
                        inner: AtomicPtr::new(ptr::from_ref(&self.inner).cast_mut()),
                    });
                    let forward: &'static Forward<A> = &*forward;
                    let regions = PerCpu::<Region>::new_zeroed_in(forward);
                    for region in regions.iter() {
                        for (c, base) in BASE.iter().enumerate() {
                            region.hdr[2 * c].store(*base, Ordering::Relaxed);
                            region.hdr[2 * c + 1].store(*base, Ordering::Relaxed);
                        }
                    }
                    ptr::addr_of_mut!((*fresh).regions).write(regions);
                    let mut start = 0;
                    let transfer = core::array::from_fn(|c| {
                        let list = TransferList {
                            blocks: array.add(start),
                            len: 0,
                            cap: TRANSFER_CAP[c],
                            ops: 0,
                            seen: 0,
                        };
                        start += TRANSFER_CAP[c];
                        Transfer {
                            list: Mutex::new(list),
                        }
                    });
                    ptr::addr_of_mut!((*fresh).transfer).write(transfer);
                    ptr::addr_of_mut!((*fresh).transfer_array).write(array);
                    ptr::addr_of_mut!((*fresh).draining).write(Mutex::new(()));
                    ptr::addr_of_mut!((*fresh).central).write([const { Central::new() }; CLASSES]);
                    ptr::addr_of_mut!((*fresh).map).write(map);
                    ptr::addr_of_mut!((*fresh).pool).write(Pool::new());
                    ptr::addr_of_mut!((*fresh).idle).write(Idle::new());
                }
                // SAFETY: this thread is the only one that writes `hot_regions` (`creating`),
                // and no thread reads it before the store below publishes the state. The copy
                // is never dropped: the state's `regions` owns the slots.
                unsafe {
                    ptr::copy_nonoverlapping(
                        ptr::addr_of!((*fresh).regions),
                        (*self.hot_regions.get()).as_mut_ptr(),
                        1,
                    );
                }
                self.state.store(fresh, Ordering::Release);
                fresh
            }
            map => {
                // SAFETY: whichever succeeded came from the inner allocator with these layouts.
                unsafe {
                    if !fresh.is_null() {
                        self.inner.dealloc(fresh.cast(), layout);
                    }
                    if !array.is_null() {
                        self.inner.dealloc(array.cast(), transfer_layout());
                    }
                    if let Some(mut map) = map {
                        map.free(&self.inner);
                    }
                }
                self.creating.store(false, Ordering::Release);
                ptr::null_mut()
            }
        };
        BUSY.set(false);
        published
    }

    /// Frees a state's memory (not its cached blocks) to the inner allocator.
    ///
    /// # Safety
    /// Nothing else uses the state; its `forward` points at `self.inner`.
    unsafe fn free_state(&self, state: *mut State<A>) {
        let array = (*state).transfer_array;
        (*state).map.free(&self.inner);
        ptr::drop_in_place(state);
        self.inner.dealloc(array.cast(), transfer_layout());
        self.inner.dealloc(state.cast(), Layout::new::<State<A>>());
    }

    /// A block of `class` from the inner allocator, for a request that cannot use the caches.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_bypass(&self, class: usize) -> *mut u8 {
        self.bypassed.fetch_add(1, Ordering::Relaxed);
        self.inner.alloc(class_layout(class))
    }

    /// The current CPU's region, for the slow paths' bookkeeping (the sections find theirs
    /// themselves).
    fn my_region<'s>(&self, state: &'s State<A>) -> Option<&'s Region> {
        state.regions.get(rseq_rt::current_cpu())
    }

    /// Raises `class`'s limit in `region` by a batch, within the class's bound and the CPU's
    /// byte budget (taking capacity from its other classes if needed). Returns whether it did.
    fn grow(&self, state: &State<A>, region: &Region, class: usize) -> bool {
        let base = BASE[class];
        let end = base + MAX_CAP[class];
        let limit = region.hdr[2 * class + 1].load(Ordering::Relaxed);
        if limit < base || limit >= end {
            // Stopped by a drain, or at its bound.
            return false;
        }
        let more = BATCH[class].min(end - limit);
        let bytes = more * SIZE_CLASSES[class];
        if region.capacity.load(Ordering::Relaxed) + bytes > CPU_CACHE_BYTES
            && !self.make_room(state, region, class, bytes)
        {
            return false;
        }
        region.capacity.fetch_add(bytes, Ordering::Relaxed);
        if region.hdr[2 * class + 1]
            .compare_exchange(limit, limit + more, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            region.capacity.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Lowers other classes' limits in `region`, one batch at a time, round-robin, until
    /// `bytes` more fit the budget (or every class was tried once). Blocks left above a lowered
    /// limit are moved to the transfer cache. Returns whether `bytes` fit now.
    #[cold]
    fn make_room(&self, state: &State<A>, region: &Region, class: usize, bytes: usize) -> bool {
        let fits = || region.capacity.load(Ordering::Relaxed) + bytes <= CPU_CACHE_BYTES;
        for _ in 0..CLASSES {
            if fits() {
                return true;
            }
            let victim = region.victim.fetch_add(1, Ordering::Relaxed) % CLASSES;
            let base = BASE[victim];
            let limit = region.hdr[2 * victim + 1].load(Ordering::Relaxed);
            if victim == class || limit <= base {
                continue;
            }
            let less = BATCH[victim].min(limit - base);
            if region.hdr[2 * victim + 1]
                .compare_exchange(limit, limit - less, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                region
                    .capacity
                    .fetch_sub(less * SIZE_CLASSES[victim], Ordering::Relaxed);
                // The blocks above the new limit: popped on this CPU (if the thread moved, it
                // pops as many from the CPU it is on, which costs that CPU a refill later).
                let top = region.hdr[2 * victim].load(Ordering::Relaxed);
                let excess = top.saturating_sub(limit - less).min(MAX_BATCH);
                let mut out = [0; MAX_BATCH];
                let mut n = 0;
                while n < excess {
                    // SAFETY: `2 * victim` and `BASE[victim]` are one class's.
                    match unsafe { cache_pop(&state.regions, 2 * victim, base) } {
                        NO_HIT => break,
                        block => out[n] = block,
                    }
                    n += 1;
                }
                // SAFETY: the popped blocks are free blocks of `victim`.
                unsafe { self.give_back(state, victim, &out[..n]) };
            }
        }
        fits()
    }

    /// Free blocks of `class` to the transfer cache, and those that do not fit to the inner
    /// allocator.
    ///
    /// # Safety
    /// Each is a free block of `class`, owned by the caller.
    unsafe fn give_back(&self, state: &State<A>, class: usize, blocks: &[usize]) {
        let kept = state.transfer[class].put(blocks);
        self.free_blocks(state, class, &blocks[kept..]);
    }

    /// Free blocks of `class` back to where they came from: their spans, or the inner
    /// allocator (blocks allocated while the caches were bypassed, or in the fallback).
    /// Returns the bytes handed back to the inner allocator (those blocks, and spans left
    /// empty beyond the kept ones).
    ///
    /// # Safety
    /// Each is a free block of `class`, owned by the caller.
    unsafe fn free_blocks(&self, state: &State<A>, class: usize, blocks: &[usize]) -> usize {
        let mut ours = [0; MAX_BATCH];
        let mut n = 0;
        let mut released = 0;
        for &block in blocks {
            if state.map.contains(block) {
                ours[n] = block;
                n += 1;
                if n == MAX_BATCH {
                    released +=
                        state.central[class].put(&state.map, &state.pool, &self.inner, &ours);
                    n = 0;
                }
            } else {
                self.inner.dealloc(block as *mut u8, class_layout(class));
                released += SIZE_CLASSES[class];
            }
        }
        released += state.central[class].put(&state.map, &state.pool, &self.inner, &ours[..n]);
        if released != 0 {
            self.released.fetch_add(released, Ordering::Relaxed);
        }
        released
    }

    /// Frees one block of `class` outside the caches (the fallback's and a nested request's
    /// frees): to its span, or to the inner allocator.
    ///
    /// # Safety
    /// A free block of `class`, owned by the caller.
    #[inline(always)]
    unsafe fn free_direct(&self, class: usize, block: *mut u8) {
        if self.has_spans.load(Ordering::Relaxed) {
            self.free_direct_spans(class, block);
        } else {
            self.inner.dealloc(block, class_layout(class));
        }
    }

    /// [`free_direct`](Self::free_direct) once spans exist (then so does the state).
    #[cold]
    #[inline(never)]
    unsafe fn free_direct_spans(&self, class: usize, block: *mut u8) {
        match self.published() {
            Some(state) if state.map.contains(block as usize) => {
                self.free_blocks(state, class, &[block as usize]);
            }
            _ => self.inner.dealloc(block, class_layout(class)),
        }
    }

    /// The miss path: the class's capacity grows, a batch comes from the transfer cache (or the
    /// spans; from the inner allocator only if no span can be had), one block is returned and
    /// the rest cached. Runs with the guard set.
    #[cold]
    #[inline(never)]
    unsafe fn refill(&self, state: &State<A>, class: usize) -> *mut u8 {
        if let Some(region) = self.my_region(state) {
            if region.misses.fetch_add(1, Ordering::Relaxed) % CLOCK_TICK == CLOCK_TICK - 1 {
                self.release_idle_if_due(state);
            }
            self.grow(state, region, class);
        }
        let want = BATCH[class];
        let mut batch = [0; MAX_BATCH];
        let mut got = state.transfer[class].take(&mut batch[..want]);
        if got > 0 {
            self.transfer_refills.fetch_add(1, Ordering::Relaxed);
        }
        // Spans only on rseq: in the fallback (this is then the state's first request, or one
        // after a demotion) requests pass through to the inner allocator, and with no span
        // made its frees need not look at the map.
        if got < want && rseq_rt::sections_run_on_rseq() {
            if !self.has_spans.load(Ordering::Relaxed) {
                self.has_spans.store(true, Ordering::Relaxed);
            }
            got += state.central[class].take(
                &state.map,
                &state.pool,
                &self.inner,
                SIZE_CLASSES[class],
                &mut batch[got..want],
            );
        }
        // Only if no span could be had.
        let layout = class_layout(class);
        while got < want {
            let block = self.inner.alloc(layout);
            if block.is_null() {
                break;
            }
            batch[got] = block as usize;
            got += 1;
        }
        if got == 0 {
            return ptr::null_mut();
        }
        if SIZE_CLASSES[class] < LINE {
            spread_over_lines(&mut batch[..got], SIZE_CLASSES[class]);
        }
        // The first block is returned and the others pushed last to first, so that the
        // following pops hand them out in the batch's order (from a fresh span, ascending
        // addresses: neighbours in time stay neighbours in memory).
        let mut left = got;
        while left > 1 && cache_push(&state.regions, 2 * class, 2 * class + 1, batch[left - 1]) {
            left -= 1;
        }
        // The cache filled (another thread on this CPU, or the thread moved).
        self.give_back(state, class, &batch[1..left]);
        batch[0] as *mut u8
    }

    /// The full path: the class's capacity grows and `block` is cached, or a batch of cached
    /// blocks and `block` go to the transfer cache (or back to where they came from). Runs with
    /// the guard set.
    #[cold]
    #[inline(never)]
    unsafe fn overflow(&self, state: &State<A>, class: usize, block: *mut u8) {
        if let Some(region) = self.my_region(state) {
            if region.overflows.fetch_add(1, Ordering::Relaxed) % CLOCK_TICK == CLOCK_TICK - 1 {
                self.release_idle_if_due(state);
            }
            if self.grow(state, region, class)
                && cache_push(&state.regions, 2 * class, 2 * class + 1, block as usize)
            {
                return;
            }
        }
        let mut batch = [0; MAX_BATCH];
        batch[0] = block as usize;
        let mut n = 1;
        while n < BATCH[class] {
            match cache_pop(&state.regions, 2 * class, BASE[class]) {
                NO_HIT => break,
                old => batch[n] = old,
            }
            n += 1;
        }
        self.give_back(state, class, &batch[..n]);
    }

    /// Hands every cached free block back: each CPU's cache (stopped, drained and restarted
    /// with zero capacity, which grows again on demand) and the transfer caches, to their spans
    /// (or the inner allocator); then every group of spans none of whose blocks is out, to the
    /// inner allocator, and the pages of the other empty spans (all but each header's page) to
    /// the operating system (counted in [`AllocStats::returned_bytes`]: their groups go back
    /// with their last span). Returns the bytes handed back to the inner allocator (also
    /// counted in [`AllocStats::released_bytes`]). Whether the inner allocator gives the
    /// memory to the operating system is its own policy (glibc's `free` trims its heaps' tops
    /// and unmaps large chunks).
    ///
    /// Call it when a phase of the program ends (a burst of work, the last request of a
    /// connection pool): the caches otherwise keep up to [`CPU_CACHE_BYTES`] per CPU, the
    /// transfer caches up to 128 KiB per class and the central lists four empty spans per
    /// class. A CPU whose cache is being drained sees misses meanwhile. In `Rseq` mode each CPU's drain takes a membarrier fence
    /// ([`fence_cpu`](rseq_rt::fence_cpu)); a CPU whose fence fails is skipped (its cache
    /// kept). Concurrent calls drain one after the other.
    ///
    /// ```
    /// use rseq::collections::alloc::PerCpuAlloc;
    /// use std::alloc::{GlobalAlloc, Layout, System};
    ///
    /// let cache = PerCpuAlloc::new(System);
    /// let layout = Layout::new::<[u8; 64]>();
    /// let blocks: Vec<_> = (0..1000).map(|_| unsafe { cache.alloc(layout) }).collect();
    /// for b in blocks {
    ///     unsafe { cache.dealloc(b, layout) };
    /// }
    /// let released = cache.release_memory();
    /// let now = cache.stats();
    /// assert_eq!((now.cached_blocks, now.transfer_blocks), (0, 0));
    /// // Every block is back in its span, and every span back with `System`.
    /// assert_eq!((now.spans, now.span_blocks_out), (0, 0));
    /// if rseq::sections_run_on_rseq() {
    ///     assert!(released >= 1000 * 64);
    /// }
    /// ```
    pub fn release_memory(&self) -> usize {
        let Some(state) = self.published() else {
            return 0;
        };
        // The runtime's own allocations (a fence's first use registers with membarrier) and
        // the frees below go to the inner allocator.
        let nested = BUSY.replace(true);
        let mut released = 0;
        {
            let _one_at_a_time = lock(&state.draining);
            for cpu in 0..state.regions.len() {
                // SAFETY: the guard is set; `cpu` is a slot of the regions.
                released += unsafe { self.drain_cpu(state, cpu) }.unwrap_or(0);
            }
            for (class, transfer) in state.transfer.iter().enumerate() {
                let mut batch = [0; MAX_BATCH];
                loop {
                    let n = transfer.take(&mut batch);
                    if n == 0 {
                        break;
                    }
                    // SAFETY: free blocks of `class`, now ours.
                    released += unsafe { self.free_blocks(state, class, &batch[..n]) };
                }
            }
            let mut spans = 0;
            for central in &state.central {
                spans += central.release_empty(&state.map, &state.pool, &self.inner);
            }
            // Spans whose groups cannot go back yet return their pages to the system.
            let (handed_back, returned) =
                state
                    .pool
                    .release_all(&state.map, &self.inner, state.idle.page);
            spans += handed_back;
            state.idle.returned.fetch_add(returned, Ordering::Relaxed);
            self.released.fetch_add(spans, Ordering::Relaxed);
            released += spans;
        }
        BUSY.set(nested);
        released
    }

    /// Stops CPU `cpu`'s cache, frees its blocks (to their spans or the inner allocator) and
    /// restarts it empty, with zero capacity. Returns the bytes handed back to the inner
    /// allocator, or `None` if the CPU could not be fenced (its cache is kept).
    ///
    /// The stop: every class's limit is set to 0 and a fence on the CPU waits for the sections
    /// that read the old limits, so pushes fail from then on (`top >= 0`). Then every top is
    /// swapped with 0, so pops fail too (`0 <= base`), and a second fence waits for the pops
    /// that read the old tops. A pop that committed after the swap left a non-zero top (tops
    /// are never 0 otherwise: slot 0 is unused), so the swap and the fence are repeated until
    /// every top stays 0: the last swapped values are then the stacks' tops, and no section
    /// can change the stopped cache. (`grow` and `make_room` leave a stopped class alone.)
    ///
    /// The restart: each top is set to its class's base once the blocks are read, which keeps
    /// the cache stopped (pushes still see a limit of 0, pops an empty stack). A third fence
    /// then waits for the sections that loaded a stopped top, and only then are the limits set
    /// to the bases: a section loads its top before its limit, so one that loaded the stopped
    /// top and then a reopened limit would pass its check (`0 < base`) and push at slot 0,
    /// below the class's stack.
    ///
    /// # Safety
    /// The guard is set and the caller holds `draining`.
    unsafe fn drain_cpu(&self, state: &State<A>, cpu: usize) -> Option<usize> {
        let region = state.regions.get(cpu).expect("a slot");
        let mut limits = [0; CLASSES];
        for (class, limit) in limits.iter_mut().enumerate() {
            *limit = region.hdr[2 * class + 1].swap(0, Ordering::SeqCst);
        }
        if rseq_rt::fence_cpu(cpu).is_err() {
            // Nothing was stopped yet: the limits go back.
            for (class, limit) in limits.iter().enumerate() {
                region.hdr[2 * class + 1].store(*limit, Ordering::SeqCst);
            }
            return None;
        }
        for (class, limit) in limits.iter().enumerate() {
            let capacity = limit.saturating_sub(BASE[class]) * SIZE_CLASSES[class];
            region.capacity.fetch_sub(capacity, Ordering::Relaxed);
        }
        let mut tops = [0; CLASSES];
        loop {
            for (class, top) in tops.iter_mut().enumerate() {
                let now = region.hdr[2 * class].swap(0, Ordering::SeqCst);
                if now != 0 {
                    *top = now;
                }
            }
            if rseq_rt::fence_cpu(cpu).is_err() {
                // Stopped for good: its blocks stay cached and every request on this CPU
                // misses. The fence worked a moment ago, so this is not expected.
                return None;
            }
            // The fence orders this load after the sections it waited for.
            if (0..CLASSES).all(|c| region.hdr[2 * c].load(Ordering::Acquire) == 0) {
                break;
            }
        }
        let mut freed = 0;
        for (class, &top) in tops.iter().enumerate() {
            for chunk in region.slots[BASE[class]..top.max(BASE[class])].chunks(MAX_BATCH) {
                let mut blocks = [0; MAX_BATCH];
                for (block, slot) in blocks.iter_mut().zip(chunk) {
                    *block = slot.load(Ordering::Relaxed);
                }
                freed += self.free_blocks(state, class, &blocks[..chunk.len()]);
            }
            // Empty again; still stopped, by its limit (0).
            region.hdr[2 * class].store(BASE[class], Ordering::SeqCst);
        }
        // A section that loaded a stopped top (0) may still be running: were a limit reopened
        // now, it could load that limit next, pass its check and push at slot 0. The fence
        // waits for it; the sections after it load the restarted tops.
        if rseq_rt::fence_cpu(cpu).is_err() {
            // Not expected (two fences on this CPU worked a moment ago): the cache stays
            // stopped, empty, and its requests miss until a later drain reopens it.
            return Some(freed);
        }
        for (class, base) in BASE.iter().enumerate() {
            region.hdr[2 * class + 1].store(*base, Ordering::SeqCst);
        }
        Some(freed)
    }

    /// Gives up the memory nobody used since the last call: drains the caches of the CPUs that
    /// had no miss and no overflow since then (with [`fence_cpu`](rseq_rt::fence_cpu), as
    /// [`release_memory`](Self::release_memory) does, so their blocks go back to their spans)
    /// and the transfer caches no CPU took from or gave to, and returns to the operating system
    /// (`madvise(MADV_DONTNEED)`) the pages of the spans that were empty already at the last
    /// call (the spans are kept: their pages come back zeroed, as the kernel gives them, when a
    /// refill uses them again). Returns the bytes given up: handed back to the inner
    /// allocator, and returned to the system.
    ///
    /// Such a pass also runs on its own, from the slow paths (every 64th miss or overflow of a
    /// CPU looks at the clock), once [`RELEASE_DELAY`] has passed since the last one: a
    /// program that keeps allocating gives its idle memory back within one to two delays. A
    /// program that goes quiet makes no slow path; call this from a timer of your own (once
    /// per `RELEASE_DELAY`, say) to have its memory returned too, or
    /// [`release_memory`](Self::release_memory) to give up everything at once.
    ///
    /// A CPU whose threads only hit its cache for a whole pass (no miss, no overflow) counts as
    /// idle too: its blocks go back and its next requests refill, a few batches per pass.
    ///
    /// ```
    /// use rseq::collections::alloc::PerCpuAlloc;
    /// use std::alloc::{GlobalAlloc, Layout, System};
    ///
    /// let cache = PerCpuAlloc::new(System);
    /// let layout = Layout::new::<[u8; 64]>();
    /// let blocks: Vec<_> = (0..10_000).map(|_| unsafe { cache.alloc(layout) }).collect();
    /// for b in blocks {
    ///     unsafe { cache.dealloc(b, layout) };
    /// }
    /// // The first pass sees the CPUs' activity; with none since, the second drains their
    /// // caches, and the third returns the pages of the spans the drains left empty.
    /// for _ in 0..3 {
    ///     cache.release_idle();
    /// }
    /// let now = cache.stats();
    /// assert!(now.idle_passes >= 3);
    /// if rseq::sections_run_on_rseq() {
    ///     assert_eq!(now.cached_blocks, 0);
    ///     assert!(now.returned_bytes > 0);
    /// }
    /// ```
    pub fn release_idle(&self) -> usize {
        let Some(state) = self.published() else {
            return 0;
        };
        let nested = BUSY.replace(true);
        let given_up = {
            let _one_at_a_time = lock(&state.draining);
            state
                .idle
                .last_pass_ms
                .store(state.idle.now_ms(), Ordering::Relaxed);
            // SAFETY: the guard is set and `draining` held.
            unsafe { self.idle_pass(state) }
        };
        BUSY.set(nested);
        given_up
    }

    /// [`release_idle`](Self::release_idle) from a slow path, if it is due and no other drain
    /// runs. Runs with the guard set.
    #[cold]
    #[inline(never)]
    unsafe fn release_idle_if_due(&self, state: &State<A>) {
        let now = state.idle.now_ms();
        if !state.idle.due(now) {
            return;
        }
        let _one_at_a_time = match state.draining.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // Another thread's pass may have ended between the look and the lock.
        if state.idle.due(now) {
            state.idle.last_pass_ms.store(now, Ordering::Relaxed);
            self.idle_pass(state);
        }
    }

    /// One idle pass; returns the bytes given up.
    ///
    /// # Safety
    /// The guard is set and the caller holds `draining`.
    unsafe fn idle_pass(&self, state: &State<A>) -> usize {
        state.idle.passes.fetch_add(1, Ordering::Relaxed);
        let mut given_up = 0;
        for (cpu, region) in state.regions.iter().enumerate() {
            let activity = region
                .misses
                .load(Ordering::Relaxed)
                .wrapping_add(region.overflows.load(Ordering::Relaxed));
            let seen = region.seen.swap(activity, Ordering::Relaxed);
            let cached = (0..CLASSES).any(|c| region.hdr[2 * c].load(Ordering::Relaxed) > BASE[c]);
            if activity == seen && cached {
                if let Some(freed) = self.drain_cpu(state, cpu) {
                    state.idle.drains.fetch_add(1, Ordering::Relaxed);
                    given_up += freed;
                }
            }
        }
        for (class, transfer) in state.transfer.iter().enumerate() {
            let mut batch = [0; MAX_BATCH];
            loop {
                let n = transfer.take_idle(&mut batch);
                if n == 0 {
                    break;
                }
                given_up += self.free_blocks(state, class, &batch[..n]);
            }
        }
        let mut returned = 0;
        for central in &state.central {
            returned += central.decommit_idle(state.idle.page);
        }
        returned += state.pool.decommit_idle(state.idle.page);
        state.idle.returned.fetch_add(returned, Ordering::Relaxed);
        given_up + returned
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

    /// The hit: one section that calls nothing, then a return; anything else (no state yet,
    /// a nested request, an empty stack, an abort) is [`alloc_miss`](Self::alloc_miss)'s, a
    /// call in tail position. The guard is not set around the section: it allocates nothing.
    #[inline(never)]
    unsafe fn alloc_cached(&self, class: usize) -> *mut u8 {
        if !BUSY.get() {
            let state = self.state.load(Ordering::Acquire);
            if !state.is_null() {
                // SAFETY: a published state lives as long as `self`, and `hot_regions` is its
                // regions; `class_of` gives classes below `CLASSES`.
                let base = *BASE.get_unchecked(class);
                let block = cache_pop_hit(self.hot_regions(), 2 * class, base);
                if block != NO_HIT {
                    return block as *mut u8;
                }
            }
        }
        self.alloc_miss(class)
    }

    #[inline(never)]
    unsafe fn alloc_miss(&self, class: usize) -> *mut u8 {
        let Some(state) = self.enter(true) else {
            return self.alloc_bypass(class);
        };
        // SAFETY: `class_of` gives classes below `CLASSES`.
        let base = *BASE.get_unchecked(class);
        let block = match cache_pop(&state.regions, 2 * class, base) {
            NO_HIT => self.refill(state, class),
            block => block as *mut u8,
        };
        BUSY.set(false);
        block
    }

    /// As [`alloc_small`](Self::alloc_small).
    #[inline(always)]
    unsafe fn dealloc_small(&self, block: *mut u8, class: usize) {
        if self.passes_through() {
            self.free_direct(class, block);
            return;
        }
        self.dealloc_cached(block, class)
    }

    /// As [`alloc_cached`](Self::alloc_cached): the hit, or a call in tail position.
    #[inline(never)]
    unsafe fn dealloc_cached(&self, block: *mut u8, class: usize) {
        if !BUSY.get() {
            let state = self.state.load(Ordering::Acquire);
            // SAFETY: a published state lives as long as `self`, and `hot_regions` is its
            // regions; `class_of` gives classes below `CLASSES`.
            if !state.is_null()
                && cache_push_hit(self.hot_regions(), 2 * class, 2 * class + 1, block as usize)
            {
                return;
            }
        }
        self.dealloc_miss(block, class)
    }

    #[inline(never)]
    unsafe fn dealloc_miss(&self, block: *mut u8, class: usize) {
        let Some(state) = self.enter(false) else {
            self.free_direct(class, block);
            return;
        };
        if !cache_push(&state.regions, 2 * class, 2 * class + 1, block as usize) {
            self.overflow(state, class, block);
        }
        BUSY.set(false);
    }
}

// SAFETY: every small block is a whole block of its class (at least as large as the request,
// 16-aligned): carved from a span of that class, or allocated from the inner allocator with the
// class layout. It is owned by exactly one party at a time: the caller, one CPU's cache (a slot
// of which only the sections of that CPU, the holder of its fallback lock, or a drain that
// stopped it change), the transfer cache or its span's bitmap (under their mutexes), or the
// inner allocator. A block leaving the caches goes back to where it came from (the span map
// tells which), an inner allocator's block with the layout it was allocated with; a span goes
// back to the inner allocator only with none of its blocks out. Large requests are the inner
// allocator's.
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
        // goes back to its span or to the inner allocator with its class layout; then the
        // spans and the state's memory, through `forward` pointed at the inner allocator where
        // it is now.
        unsafe {
            let s = &mut *state;
            s.forward
                .inner
                .store(ptr::from_mut(&mut self.inner), Ordering::Relaxed);
            for region in s.regions.iter() {
                for (class, base) in BASE.iter().enumerate() {
                    let top = region.hdr[2 * class].load(Ordering::Relaxed);
                    for slot in &region.slots[*base..top.max(*base)] {
                        self.free_blocks(s, class, &[slot.load(Ordering::Relaxed)]);
                    }
                }
            }
            for (class, transfer) in s.transfer.iter().enumerate() {
                let mut batch = [0; MAX_BATCH];
                loop {
                    let n = transfer.take(&mut batch);
                    if n == 0 {
                        break;
                    }
                    self.free_blocks(s, class, &batch[..n]);
                }
            }
            // Spans with blocks still out (the program's, freed after this drop, if ever) are
            // leaked rather than freed under it.
            for central in s.central.iter_mut() {
                central.free_all(&s.map, &s.pool, &self.inner);
            }
            s.pool.free_all(&s.map, &self.inner);
            self.free_state(state);
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
    use rseq_rt::test_support::pinned;

    /// Whether sections run on rseq, once the mode is decided (tests may run before any
    /// section did).
    fn on_rseq() -> bool {
        let _ = rseq_rt::mode();
        rseq_rt::sections_run_on_rseq()
    }

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
        assert_eq!(class_of(Layout::from_size_align(32769, 8).unwrap()), None);
    }

    #[test]
    fn the_tables_fit_the_region_and_the_batches() {
        assert!(SIZE_CLASSES.windows(2).all(|w| w[0] < w[1]));
        assert!(SIZE_CLASSES.iter().all(|s| s % CLASS_ALIGN == 0));
        for c in 0..CLASSES {
            assert!(BATCH[c] <= MAX_CAP[c] && BATCH[c] <= MAX_BATCH);
            assert!(TRANSFER_CAP[c] >= 2 * BATCH[c]);
            assert!(BASE[c] >= 1);
        }
        assert_eq!(SLOTS, 1 + MAX_CAP.iter().sum::<usize>());
        // One CPU's region: the address stacks and their headers, 18 557 words here, padded
        // to a power of two.
        assert!(core::mem::size_of::<Region>().is_power_of_two());
        assert!(core::mem::size_of::<Region>() <= 256 * 1024);
    }

    #[test]
    fn fresh_spans_hand_out_neighbours_and_go_back_when_released() {
        if !on_rseq() {
            // The fallback passes every request through: no spans.
            return;
        }
        let a = PerCpuAlloc::new(System);
        let layout = Layout::new::<[u8; 256]>();
        let blocks: Vec<usize> = (0..2000)
            .map(|_| unsafe { a.alloc(layout) } as usize)
            .collect();
        // One after the other, from fresh spans: mostly the next 256 bytes (a thread that
        // moves to another CPU starts on another batch; the first request builds the state).
        let next = blocks.windows(2).filter(|w| w[1] == w[0] + 256).count();
        assert!(next >= blocks.len() / 2, "{next} of {}", blocks.len());
        let s = a.stats();
        assert!(s.spans >= 1 && s.span_blocks_out >= 1900, "{s:?}");
        for &b in &blocks {
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        a.release_memory();
        let s = a.stats();
        assert_eq!(
            (s.spans, s.span_blocks_out, s.cached_blocks),
            (0, 0, 0),
            "{s:?}"
        );
        assert!(s.released_bytes >= spans::SPAN as u64, "{s:?}");
    }

    /// Resident pages of `[start, end)`, by `mincore`.
    fn resident_pages(start: usize, end: usize) -> usize {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let start = start.next_multiple_of(page);
        let pages = (end - start) / page;
        let mut vec = vec![0u8; pages];
        let r =
            unsafe { libc::mincore(start as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }

    /// `n` blocks of `layout` from `a`, each filled with `mark`.
    fn filled<A: GlobalAlloc>(
        a: &PerCpuAlloc<A>,
        layout: Layout,
        n: usize,
        mark: u8,
    ) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let b = unsafe { a.alloc(layout) };
                assert!(!b.is_null());
                unsafe { b.write_bytes(mark, layout.size()) };
                b as usize
            })
            .collect()
    }

    /// The spans `blocks` lie in, each once, in address order.
    fn spans_of(blocks: &[usize]) -> Vec<usize> {
        let mut spans: Vec<usize> = blocks.iter().map(|b| b & !(spans::SPAN - 1)).collect();
        spans.sort_unstable();
        spans.dedup();
        spans
    }

    #[test]
    fn idle_passes_drain_idle_caches_and_return_empty_spans_to_the_system() {
        if !on_rseq() {
            // The fallback passes every request through: no cache, no spans.
            return;
        }
        let a = PerCpuAlloc::new(System);
        let layout = Layout::new::<[u8; 256]>();
        // 3000 blocks of 256 bytes: three spans (1023 blocks each), fewer than a class keeps
        // empty, so every one of them stays held.
        let blocks = filled(&a, layout, 3000, 0xa5);
        let spans = spans_of(&blocks);
        assert_eq!(spans.len(), 3, "{:x?}", spans);
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let resident = |spans: &[usize]| -> usize {
            spans
                .iter()
                .map(|&s| resident_pages(s + page, s + spans::SPAN))
                .sum()
        };
        let all_pages = 3 * (spans::SPAN - page) / page;
        assert!(
            resident(&spans) >= all_pages * 9 / 10,
            "written, so resident"
        );
        for &b in &blocks {
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        // The first pass sees the CPUs' and the transfer cache's activity and drains nothing
        // (unless a pass fell due on its own, the thread stalled for a second).
        a.release_idle();
        let s = a.stats();
        if s.idle_passes == 1 {
            assert!(s.cached_blocks + s.transfer_blocks > 0, "{s:?}");
            assert_eq!(s.idle_drains, 0, "{s:?}");
        }
        // Nothing since: the second drains every cache that holds blocks, so that every span
        // is empty; the third returns the pages of the spans empty since the second.
        a.release_idle();
        let s = a.stats();
        assert_eq!((s.cached_blocks, s.transfer_blocks), (0, 0), "{s:?}");
        assert!(s.idle_drains >= 1, "{s:?}");
        assert_eq!((s.spans, s.span_blocks_out), (3, 0), "{s:?}");
        a.release_idle();
        let s = a.stats();
        assert_eq!(s.returned_bytes, (3 * (spans::SPAN - page)) as u64, "{s:?}");
        assert_eq!(resident(&spans), 0, "returned to the system");
        // Another pass returns nothing more.
        a.release_idle();
        assert_eq!(a.stats().returned_bytes, s.returned_bytes);
        // The spans serve refills again, with every byte the program writes kept.
        let again = filled(&a, layout, 3000, 0x5a);
        for &b in &again {
            let bytes = unsafe { core::slice::from_raw_parts(b as *const u8, 256) };
            assert!(bytes.iter().all(|&x| x == 0x5a));
            assert!(spans.contains(&(b & !(spans::SPAN - 1))));
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        a.release_memory();
        assert_eq!(a.stats().spans, 0);
    }

    #[test]
    fn blocks_that_came_back_are_handed_out_again_lowest_address_first() {
        if !on_rseq() {
            return;
        }
        let a = PerCpuAlloc::new(System);
        // 256-byte blocks (a cache line or more: refills keep their order), 1023 to a span:
        // three spans, the third with room left.
        let layout = Layout::new::<[u8; 256]>();
        let blocks = filled(&a, layout, 3000, 0xa5);
        assert_eq!(spans_of(&blocks).len(), 3);
        let again = pinned(|| {
            // Every other block back to its span (the caches drained into them).
            for &b in blocks.iter().step_by(2) {
                unsafe { a.dealloc(b as *mut u8, layout) };
            }
            a.release_memory();
            filled(&a, layout, 1500, 0x5a)
        });
        // From each span, lowest address first: the blocks that came back, then (in the third)
        // the ones never handed out, which lie above them all.
        for span in spans_of(&blocks) {
            let from: Vec<usize> = again
                .iter()
                .copied()
                .filter(|&b| b & !(spans::SPAN - 1) == span)
                .collect();
            assert!(from.windows(2).all(|w| w[0] < w[1]), "{span:#x}: {from:x?}");
        }
        let freed: std::collections::HashSet<usize> = blocks.iter().copied().step_by(2).collect();
        let reused = again.iter().filter(|b| freed.contains(b)).count();
        // At most the third span's 69 fresh blocks are not reused ones.
        assert!(reused >= 1500 - (3 * 1023 - 3000), "{reused}");
        for &b in blocks.iter().skip(1).step_by(2).chain(&again) {
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        a.release_memory();
        assert_eq!(a.stats().spans, 0);
    }

    #[test]
    fn spans_a_class_empties_serve_other_classes_through_the_pool() {
        if !on_rseq() {
            return;
        }
        let a = PerCpuAlloc::new(System);
        let churn = |layout: Layout, n: usize| {
            let blocks = filled(&a, layout, n, 0x3c);
            for &b in &blocks {
                unsafe { a.dealloc(b as *mut u8, layout) };
            }
            spans_of(&blocks)
        };
        // 8 KiB blocks, 31 to a span: 12 spans' worth (with room for the blocks a refill
        // caches beyond the last request). Once the caches are drained, the class keeps four
        // empty spans and the pool gets the others.
        let big = Layout::new::<[u8; 8192]>();
        let big_spans = churn(big, 12 * 31 - 8);
        assert_eq!(big_spans.len(), 12);
        a.release_idle();
        a.release_idle();
        let s = a.stats();
        assert_eq!((s.cached_blocks, s.transfer_blocks), (0, 0), "{s:?}");
        assert_eq!(
            (s.spans, s.pooled_spans),
            (12, 12 - spans::KEPT_EMPTY),
            "{s:?}"
        );
        // Another class's spans come from the pool, not from the inner allocator.
        let small_spans = churn(Layout::new::<[u8; 1024]>(), 2 * 255 - 16);
        assert!(small_spans.iter().all(|s| big_spans.contains(s)));
        let t = a.stats();
        assert_eq!(t.spans, 12, "{t:?}");
        assert_eq!(t.pooled_spans, 12 - spans::KEPT_EMPTY - 2, "{t:?}");
        assert_eq!(t.released_bytes, s.released_bytes, "{t:?}");
        // An idle pass returns the pooled spans' pages too; a release hands them back.
        for _ in 0..3 {
            a.release_idle();
        }
        // The kept and pooled ones (not the two the other class holds, whose blocks may be
        // cached) are no longer resident.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let resident: usize = big_spans
            .iter()
            .filter(|s| !small_spans.contains(s))
            .map(|&s| resident_pages(s + page, s + spans::SPAN))
            .sum();
        assert_eq!(resident, 0);
        a.release_memory();
        let u = a.stats();
        assert_eq!((u.spans, u.pooled_spans), (0, 0), "{u:?}");
    }

    #[test]
    fn the_pool_keeps_a_large_structures_spans_for_the_next_one() {
        if !on_rseq() {
            return;
        }
        let a = PerCpuAlloc::new(System);
        let big = Layout::new::<[u8; 8192]>();
        // 8 KiB blocks, 31 to a span, written: 160 spans (40 MiB), more than the class keeps.
        let blocks = filled(&a, big, 160 * 31, 0xa5);
        let spans = spans_of(&blocks);
        assert!(spans.len() >= 160);
        let before = a.stats();
        // Freed: the caches keep the last few blocks, the other spans empty; the class keeps
        // four and the pool the rest, with their pages; none goes back to the inner allocator.
        for &b in &blocks {
            unsafe { a.dealloc(b as *mut u8, big) };
        }
        let s = a.stats();
        assert_eq!(s.released_bytes, before.released_bytes, "{s:?}");
        assert!(
            s.pooled_spans >= spans.len() - spans::KEPT_EMPTY - 3,
            "{s:?}"
        );
        // The next structure, of another class, takes its spans from the pool.
        let layout = Layout::new::<[u8; 6144]>();
        let next = filled(&a, layout, 100 * 42, 0x5a);
        assert!(spans_of(&next).iter().all(|s| spans.contains(s)));
        let t = a.stats();
        assert_eq!(
            (t.spans, t.released_bytes),
            (s.spans, s.released_bytes),
            "{t:?}"
        );
        for &b in &next {
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        // Idle passes return the pooled spans' pages, a release the spans.
        for _ in 0..3 {
            a.release_idle();
        }
        let u = a.stats();
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert!(
            u.returned_bytes >= (u.pooled_spans * (spans::SPAN - page)) as u64,
            "{u:?}"
        );
        a.release_memory();
        let v = a.stats();
        assert_eq!((v.spans, v.pooled_spans), (0, 0), "{v:?}");
        // Whole groups went back: the spans, and the current group's spans never carved.
        let handed_back = (v.released_bytes - u.released_bytes) as usize;
        assert!(
            (u.spans * spans::SPAN..(u.spans + spans::GROUP) * spans::SPAN).contains(&handed_back),
            "{v:?}"
        );
    }

    /// An inner allocator over `System` that counts its live allocations of span groups and
    /// single spans (`SPAN`-aligned), and refuses groups if told to (the allocator's other
    /// requests, the per-CPU regions among them, pass).
    struct SpanCounting {
        groups: AtomicUsize,
        singles: AtomicUsize,
        refuse_groups: bool,
    }

    impl SpanCounting {
        const fn new(refuse_groups: bool) -> SpanCounting {
            SpanCounting {
                groups: AtomicUsize::new(0),
                singles: AtomicUsize::new(0),
                refuse_groups,
            }
        }

        fn counter(&self, layout: Layout) -> Option<&AtomicUsize> {
            match (layout.size() / spans::SPAN, layout.align()) {
                (spans::GROUP, spans::SPAN) => Some(&self.groups),
                (1, spans::SPAN) => Some(&self.singles),
                _ => None,
            }
        }

        fn live(&self) -> (usize, usize) {
            (
                self.groups.load(Ordering::Relaxed),
                self.singles.load(Ordering::Relaxed),
            )
        }
    }

    unsafe impl GlobalAlloc for &'static SpanCounting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if self.refuse_groups && layout.size() == spans::GROUP * spans::SPAN {
                return ptr::null_mut();
            }
            let p = System.alloc(layout);
            if let (false, Some(c)) = (p.is_null(), self.counter(layout)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if let Some(c) = self.counter(layout) {
                c.fetch_sub(1, Ordering::Relaxed);
            }
            System.dealloc(ptr, layout)
        }
    }

    #[test]
    fn spans_come_in_groups_that_go_back_whole() {
        if !on_rseq() {
            return;
        }
        static INNER: SpanCounting = SpanCounting::new(false);
        let a = PerCpuAlloc::new(&INNER);
        // 8 KiB blocks, 31 to a span: one group's worth and one span more.
        let big = Layout::new::<[u8; 8192]>();
        let blocks = filled(&a, big, (spans::GROUP + 1) * 31 - 8, 0x6b);
        let spans = spans_of(&blocks);
        assert_eq!(spans.len(), spans::GROUP + 1, "{:?}", a.stats());
        // Two requests of the inner allocator; the first group's spans are neighbours, from
        // the first block's span up (the second group may lie below: mappings grow down).
        assert_eq!(INNER.live(), (2, 0));
        let kept = blocks[0];
        let group: Vec<usize> = (0..spans::GROUP)
            .map(|i| (kept & !(spans::SPAN - 1)) + i * spans::SPAN)
            .collect();
        assert!(
            group.iter().all(|s| spans.contains(s)),
            "{group:x?} {spans:x?}"
        );
        // One block of the first group stays: the group stays, its other spans' pages go
        // back to the system; the second group goes back to the inner allocator.
        for &b in &blocks[1..] {
            unsafe { a.dealloc(b as *mut u8, big) };
        }
        a.release_memory();
        let s = a.stats();
        assert_eq!(INNER.live(), (1, 0), "{s:?}");
        assert_eq!((s.spans, s.span_blocks_out), (spans::GROUP, 1), "{s:?}");
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let resident: usize = group[1..]
            .iter()
            .map(|&s| resident_pages(s + page, s + spans::SPAN))
            .sum();
        assert_eq!(resident, 0, "{s:?}");
        // The pool's spans serve the next refills.
        let again = filled(&a, Layout::new::<[u8; 4096]>(), 60, 0x7c);
        assert!(spans_of(&again).iter().all(|s| group.contains(s)));
        assert_eq!(INNER.live(), (1, 0));
        for &b in &again {
            unsafe { a.dealloc(b as *mut u8, Layout::new::<[u8; 4096]>()) };
        }
        // The last block back: the whole group goes.
        unsafe { a.dealloc(kept as *mut u8, big) };
        a.release_memory();
        let s = a.stats();
        assert_eq!(INNER.live(), (0, 0), "{s:?}");
        assert_eq!((s.spans, s.pooled_spans), (0, 0), "{s:?}");
    }

    #[test]
    fn spans_come_alone_where_the_inner_allocator_refuses_groups() {
        if !on_rseq() {
            return;
        }
        static INNER: SpanCounting = SpanCounting::new(true);
        let a = PerCpuAlloc::new(&INNER);
        let big = Layout::new::<[u8; 8192]>();
        let blocks = filled(&a, big, 3 * 31 - 8, 0x4d);
        assert_eq!(spans_of(&blocks).len(), 3);
        assert_eq!(INNER.live(), (0, 3));
        for &b in &blocks {
            unsafe { a.dealloc(b as *mut u8, big) };
        }
        a.release_memory();
        assert_eq!(INNER.live(), (0, 0));
        assert_eq!(a.stats().spans, 0);
    }

    #[test]
    fn the_allocator_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PerCpuAlloc<System>>();
    }

    /// `System`, failing every request while `failing` is set.
    struct Failing {
        failing: AtomicBool,
    }

    unsafe impl GlobalAlloc for &'static Failing {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if self.failing.load(Ordering::Relaxed) {
                return ptr::null_mut();
            }
            System.alloc(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[test]
    fn a_state_the_inner_allocator_could_not_give_is_built_at_a_later_request() {
        static INNER: Failing = Failing {
            failing: AtomicBool::new(true),
        };
        // Decided first: while another thread has the mode decided, requests bypass the state.
        let _ = rseq_rt::mode();
        let a = PerCpuAlloc::new(&INNER);
        let layout = Layout::new::<[u8; 64]>();
        assert!(unsafe { a.alloc(layout) }.is_null());
        assert!(a.published().is_none());
        INNER.failing.store(false, Ordering::Relaxed);
        let block = unsafe { a.alloc(layout) };
        assert!(!block.is_null());
        assert!(a.published().is_some(), "the state was not built again");
        unsafe { a.dealloc(block, layout) };
    }

    #[test]
    fn threads_whose_first_requests_race_get_distinct_blocks() {
        // One thread builds the state; the others' requests meanwhile go to the inner
        // allocator, and every later one to the caches once it is published. (The mode is
        // decided first: while it is being decided, requests bypass the state too.)
        let _ = rseq_rt::mode();
        let a = PerCpuAlloc::new(System);
        let start = std::sync::Barrier::new(8);
        let layout = Layout::new::<[u8; 48]>();
        let blocks: Vec<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8u8)
                .map(|t| {
                    let (a, start) = (&a, &start);
                    scope.spawn(move || {
                        start.wait();
                        filled(a, layout, 200, t)
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("a thread"))
                .collect()
        });
        let mut sorted = blocks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), blocks.len(), "a block was handed out twice");
        for (i, &b) in blocks.iter().enumerate() {
            let p = b as *const u8;
            assert_eq!(unsafe { *p.add(47) }, (i / 200) as u8, "a block changed");
            unsafe { a.dealloc(b as *mut u8, layout) };
        }
        assert!(a.published().is_some());
        a.release_memory();
        let s = a.stats();
        assert_eq!((s.spans, s.cached_blocks), (0, 0), "{s:?}");
    }

    #[test]
    fn groups_are_counted_right_while_threads_churn_and_memory_is_released() {
        if !on_rseq() {
            return;
        }
        static INNER: SpanCounting = SpanCounting::new(false);
        static A: PerCpuAlloc<&SpanCounting> = PerCpuAlloc::new(&INNER);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // A thread releases memory all the while, so groups go back and come again under
            // the churn of four threads that fill and empty spans of three classes (two to
            // four spans a round each), checking their blocks.
            let releaser = scope.spawn(|| {
                let mut releases = 0;
                while !stop.load(Ordering::Relaxed) {
                    A.release_memory();
                    releases += 1;
                    std::thread::yield_now();
                }
                releases
            });
            let workers: Vec<_> = (0..4usize)
                .map(|t| {
                    scope.spawn(move || {
                        let layouts = [
                            Layout::new::<[u8; 8192]>(),
                            Layout::new::<[u8; 6144]>(),
                            Layout::new::<[u8; 3072]>(),
                        ];
                        for round in 0..40 {
                            let layout = layouts[(t + round) % 3];
                            let mark = (t * 40 + round) as u8;
                            let blocks = filled(&A, layout, 100 + 20 * (round % 4), mark);
                            for &b in &blocks {
                                let p = b as *const u8;
                                let ends = unsafe { (*p, *p.add(layout.size() - 1)) };
                                assert_eq!(ends, (mark, mark), "a block changed");
                                unsafe { A.dealloc(b as *mut u8, layout) };
                            }
                        }
                    })
                })
                .collect();
            // Every worker joined before the releaser stops, a failed one too (then its panic
            // goes on once the releaser has stopped).
            let done: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            stop.store(true, Ordering::Relaxed);
            let releases = releaser.join().expect("the releaser");
            for d in done {
                if let Err(panic) = d {
                    std::panic::resume_unwind(panic);
                }
            }
            assert!(releases >= 1);
        });
        A.release_memory();
        let s = A.stats();
        assert_eq!((s.spans, s.span_blocks_out), (0, 0), "{s:?}");
        assert_eq!(INNER.live(), (0, 0), "{s:?}");
    }

    #[test]
    fn past_the_pools_limit_free_groups_go_back_to_the_inner_allocator() {
        if !on_rseq() {
            return;
        }
        static INNER: SpanCounting = SpanCounting::new(false);
        let a = PerCpuAlloc::new(&INNER);
        // 32 KiB blocks, 7 to a span, never written (only the spans' headers become
        // resident): more spans than the pool keeps.
        let huge = Layout::new::<[u8; 32768]>();
        let spans_wanted = spans::POOL_SPANS + 8 * spans::GROUP;
        let blocks: Vec<usize> = (0..spans_wanted * 7)
            .map(|_| unsafe { a.alloc(huge) } as usize)
            .collect();
        assert!(blocks.iter().all(|&b| b != 0));
        let held = INNER.live().0;
        assert!(held * spans::GROUP >= spans_wanted, "{held}");
        let before = a.stats();
        for &b in &blocks {
            unsafe { a.dealloc(b as *mut u8, huge) };
        }
        let s = a.stats();
        // The class keeps a few, the pool at most its limit and a group's worth (a span that
        // comes beyond the limit sends back only a group that is free by then).
        assert!(s.pooled_spans <= spans::POOL_SPANS + spans::GROUP, "{s:?}");
        assert!(INNER.live().0 < held, "{s:?}");
        assert_eq!(
            (s.released_bytes - before.released_bytes) as usize,
            (held - INNER.live().0) * spans::GROUP * spans::SPAN,
            "{s:?}"
        );
        a.release_memory();
        assert_eq!(INNER.live(), (0, 0));
    }

    #[test]
    fn an_idle_pass_runs_on_its_own_once_the_delay_passed() {
        if !on_rseq() {
            return;
        }
        let a = PerCpuAlloc::new(System);
        // The largest class caches at most four blocks per CPU, two per batch: eight at a time
        // miss at least twice per round, so that 32 rounds per CPU slot make some CPU miss at
        // least 64 times (a look at the clock), whichever CPUs the thread visits.
        let layout = Layout::new::<[u8; MAX_SMALL_SIZE]>();
        let rounds = 40 * (rseq_rt::possible_cpus() + 1);
        let churn = || {
            for _ in 0..rounds {
                let blocks: [*mut u8; 8] = core::array::from_fn(|_| unsafe { a.alloc(layout) });
                for b in blocks {
                    assert!(!b.is_null());
                    unsafe { a.dealloc(b, layout) };
                }
            }
        };
        let t0 = Instant::now();
        churn();
        let quick = t0.elapsed() < RELEASE_DELAY;
        std::thread::sleep(RELEASE_DELAY + Duration::from_millis(50));
        churn();
        let s = a.stats();
        assert!(s.idle_passes >= 1, "{s:?}");
        if quick {
            // Within one delay of the state's creation, no pass was due before the sleep.
            assert!(s.idle_passes <= 2, "{s:?}");
        }
    }

    #[test]
    fn small_blocks_handed_out_one_after_the_other_do_not_share_a_line() {
        for size in [16, 32, 48, 64, 80, 96, 112] {
            if size >= LINE {
                continue;
            }
            let k = line_step(size);
            let class = class_of(Layout::from_size_align(size, 1).unwrap()).unwrap();
            // Batches of at least `3k` blocks are spread (a refill's 32, from a fresh span,
            // where the lines allow), shorter ones keep their order; a span's blocks start
            // 128 bytes into it, so both alignments of the first block are tried.
            for base in [4096, 4096 + 128] {
                for len in [2, k, 3 * k - 1, 3 * k, 3 * k + 1, 4 * k - 1, BATCH[class]] {
                    if len > MAX_BATCH {
                        continue;
                    }
                    let fresh: Vec<usize> = (0..len).map(|i| base + i * size).collect();
                    let mut batch = fresh.clone();
                    spread_over_lines(&mut batch, size);
                    if len < 3 * k {
                        assert_eq!(batch, fresh, "{size} B, {len} blocks");
                        continue;
                    }
                    let mut sorted = batch.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, fresh);
                    for w in batch.windows(2) {
                        let (a, b) = (w[0].min(w[1]), w[0].max(w[1]));
                        assert!((a + size - 1) / LINE < b / LINE, "{size} B: {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_local_allocator_reuses_and_frees_everything_on_drop() {
        let a = PerCpuAlloc::new(System);
        let layout = Layout::new::<[u8; 100]>();
        let blocks: Vec<*mut u8> = (0..3000).map(|_| unsafe { a.alloc(layout) }).collect();
        assert!(blocks
            .iter()
            .all(|b| !b.is_null() && (*b as usize).is_multiple_of(16)));
        for b in blocks {
            unsafe { a.dealloc(b, layout) };
        }
        let s = a.stats();
        if rseq_rt::sections_run_on_rseq() {
            assert!(s.misses >= 1 && s.overflows >= 1, "{s:?}");
            assert!(s.cached_blocks > 0, "{s:?}");
        } else {
            // The fallback passes requests through: only the first one used a cache.
            assert!(s.misses <= 1 && s.overflows == 0, "{s:?}");
        }
        // Moved after use: the drop still frees through the inner allocator.
        let moved = a;
        drop(moved);
    }
}
