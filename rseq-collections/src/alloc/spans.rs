//! The span heap behind the caches: blocks carved from spans of [`SPAN`] bytes, one class per
//! span, which the inner allocator gives in [groups](GROUP) of four (one
//! `Layout::from_size_align(4 × SPAN, SPAN)` request each), and a map of which span-aligned
//! addresses are spans.
//!
//! A span starts with its [`Header`] and a bitmap of its blocks that came back; its blocks follow,
//! handed out first from the bitmap, lowest address first, then from a bump pointer (so a fresh
//! span gives its blocks in address order). The span heap never reads or writes a block's memory: a
//! batch of blocks moves between the caches and their spans with writes to the headers only, where
//! a list threaded through the blocks' first words would take a pass through blocks no longer in
//! the processor's caches. `used` counts the blocks out of the span (in a cache or with the
//! program). Each class has one [`Central`]: a mutex over its spans that have a block to give,
//! partly used ones first. A span whose blocks all came back is reset to its bump pointer (address
//! order again) and kept for the next refills, up to [`KEPT_EMPTY`] per class; more go to the
//! [`Pool`], where any class takes its next span from (an empty one, else the current group's
//! next, else a new group's first). A group goes back to the inner allocator once all its spans
//! are in the pool: when [`Pool::release_all`] runs (after [`Central::release_empty`] gave the
//! classes' empty spans to the pool), or when a span comes to a pool past [`POOL_SPANS`].
//!
//! Blocks of spans and blocks of the inner allocator (allocated with the class layout while the
//! caches were bypassed, or in the fallback) mix in the caches; [`SpanMap::contains`] tells
//! them apart when they leave: one bit per span-aligned address, in leaves of 1 GiB of address
//! space allocated on demand.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// log2 of [`SPAN`].
pub(super) const SPAN_SHIFT: u32 = 18;

/// Bytes of one span (256 KiB), and its alignment.
pub(super) const SPAN: usize = 1 << SPAN_SHIFT;

/// The span header's bytes without the bitmap, and the unit the header's bytes with the bitmap
/// round up to (a cache line on every target, so that the first block starts on one).
const HEADER: usize = 128;

/// Where the bitmap starts in a span.
const BITMAP: usize = core::mem::size_of::<Header>().next_multiple_of(8);

/// The bytes before the first block of a span of `size`-byte blocks: the header and a bitmap
/// large enough for the blocks (2 KiB for 16-byte blocks, 128 bytes from 256-byte blocks up).
const fn header_bytes(size: usize) -> usize {
    let most = (SPAN - HEADER) / size;
    (BITMAP + most.div_ceil(64) * 8).next_multiple_of(HEADER)
}

/// `ceil(2^48 / size)`: a block's offset from the first block, `k × size` (below [`SPAN`]),
/// times this, shifted right by 48, is its index `k`, exactly: the product is `k × 2^48 + k × e`
/// with `e < size`, and `k × e < SPAN < 2^48`. A multiplication instead of a division in every
/// [`Central::put`].
fn reciprocal(size: usize) -> u64 {
    (1u64 << 48).div_ceil(size as u64)
}

/// Spans' addresses are below `1 << ADDR_BITS` (a span the inner allocator places higher is
/// handed back and the refill takes blocks of the inner allocator instead).
const ADDR_BITS: u32 = if usize::BITS == 64 { 48 } else { 32 };

/// log2 of the address space one leaf of the map covers.
const LEAF_SHIFT: u32 = 30;

const TOP_ENTRIES: usize = 1 << (ADDR_BITS - LEAF_SHIFT);

const BITS: usize = usize::BITS as usize;

/// One bit per span of a leaf's address range (aligned to a cache line: 512 bytes on 64-bit
/// targets, read by every free that leaves the caches).
#[repr(C, align(64))]
struct Leaf([AtomicUsize; (1 << (LEAF_SHIFT - SPAN_SHIFT)) / BITS]);

/// Which span-aligned addresses are live spans.
pub(super) struct SpanMap {
    /// `TOP_ENTRIES` leaf pointers (null: no span there yet), zeroed memory of the inner
    /// allocator (2 MiB of address space on 64-bit targets, touched only where spans are).
    top: *mut AtomicPtr<Leaf>,
    /// Leaves allocated (each one inner allocation).
    leaves: AtomicUsize,
}

fn top_layout() -> Layout {
    Layout::array::<AtomicPtr<Leaf>>(TOP_ENTRIES).expect("small")
}

impl SpanMap {
    /// An empty map, or `None` if the inner allocator fails.
    pub(super) fn new<A: GlobalAlloc>(inner: &A) -> Option<SpanMap> {
        // SAFETY: a non-zero layout; zero is a null `AtomicPtr`.
        let top = unsafe { inner.alloc_zeroed(top_layout()) }.cast::<AtomicPtr<Leaf>>();
        (!top.is_null()).then_some(SpanMap {
            top,
            leaves: AtomicUsize::new(0),
        })
    }

    /// The leaf of `addr`'s range and `addr`'s bit in it, if `addr` is in the mapped range.
    #[inline(always)]
    fn slot(&self, addr: usize) -> Option<(&AtomicPtr<Leaf>, usize)> {
        if usize::BITS == 64 && (addr as u64) >> ADDR_BITS != 0 {
            return None;
        }
        // SAFETY: `addr >> LEAF_SHIFT < TOP_ENTRIES` by the check above.
        let entry = unsafe { &*self.top.add(addr >> LEAF_SHIFT) };
        Some((
            entry,
            (addr >> SPAN_SHIFT) & ((1 << (LEAF_SHIFT - SPAN_SHIFT)) - 1),
        ))
    }

    /// Whether `addr` lies in a live span (any address inside it).
    #[inline]
    pub(super) fn contains(&self, addr: usize) -> bool {
        let Some((entry, bit)) = self.slot(addr) else {
            return false;
        };
        let leaf = entry.load(Ordering::Acquire);
        if leaf.is_null() {
            return false;
        }
        // SAFETY: leaves live as long as the map.
        let word = unsafe { (*leaf).0[bit / BITS].load(Ordering::Acquire) };
        word & (1 << (bit % BITS)) != 0
    }

    /// Marks the span at `span` live; false if it is out of range or a leaf could not be
    /// allocated.
    fn insert<A: GlobalAlloc>(&self, inner: &A, span: usize) -> bool {
        let Some((entry, bit)) = self.slot(span) else {
            return false;
        };
        let mut leaf = entry.load(Ordering::Acquire);
        if leaf.is_null() {
            // SAFETY: a non-zero layout; zero words are a valid `Leaf`.
            let fresh = unsafe { inner.alloc_zeroed(Layout::new::<Leaf>()) }.cast::<Leaf>();
            if fresh.is_null() {
                return false;
            }
            match entry.compare_exchange(
                ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.leaves.fetch_add(1, Ordering::Relaxed);
                    leaf = fresh;
                }
                Err(theirs) => {
                    // SAFETY: ours, never published.
                    unsafe { inner.dealloc(fresh.cast(), Layout::new::<Leaf>()) };
                    leaf = theirs;
                }
            }
        }
        // SAFETY: leaves live as long as the map.
        unsafe { (*leaf).0[bit / BITS].fetch_or(1 << (bit % BITS), Ordering::Release) };
        true
    }

    /// Marks the span at `span` gone (before its memory goes back to the inner allocator).
    fn remove(&self, span: usize) {
        if let Some((entry, bit)) = self.slot(span) {
            let leaf = entry.load(Ordering::Acquire);
            if !leaf.is_null() {
                // SAFETY: leaves live as long as the map.
                unsafe { (*leaf).0[bit / BITS].fetch_and(!(1 << (bit % BITS)), Ordering::Release) };
            }
        }
    }

    /// The inner allocations the map holds.
    pub(super) fn allocations(&self) -> usize {
        1 + self.leaves.load(Ordering::Relaxed)
    }

    /// Frees the leaves and the top array.
    ///
    /// # Safety
    /// Nothing uses the map any more; `inner` is the allocator it was built with.
    pub(super) unsafe fn free<A: GlobalAlloc>(&mut self, inner: &A) {
        for i in 0..TOP_ENTRIES {
            let leaf = (*self.top.add(i)).load(Ordering::Relaxed);
            if !leaf.is_null() {
                inner.dealloc(leaf.cast(), Layout::new::<Leaf>());
            }
        }
        inner.dealloc(self.top.cast(), top_layout());
    }
}

/// The start of a span: its bookkeeping, under its class's [`Central`] mutex.
#[repr(C)]
struct Header {
    /// The blocks' size.
    size: usize,
    /// [`reciprocal`]`(size)`.
    recip: u64,
    /// Blocks that came back (their bits set in the bitmap).
    freed: usize,
    /// The bitmap's first word that may have a bit set.
    scan: usize,
    /// The next block never handed out (since the span was made or last emptied).
    bump: usize,
    /// The first block.
    first: usize,
    /// One past the last block.
    end: usize,
    /// Blocks out of the span.
    used: usize,
    /// The links of the list the span is on (`partial` or `empty`, or the pool's), if any.
    prev: *mut Header,
    next: *mut Header,
    /// On the empty list or in the pool: the list's pass count when the span went there.
    emptied_at: usize,
    /// The first span of the span's [group](GROUP) (the span itself for the first), whose
    /// header holds the group's counts below. Set when the span is carved, kept after.
    group: *mut Header,
    /// In a group's first span, under the pool's lock: the group's spans carved so far, and
    /// the spans of its allocation (the inner allocator's layout is `spans × SPAN`).
    group_carved: u32,
    group_spans: u32,
    /// In a group's first span, under the pool's lock: the group's carved spans that a class
    /// holds (not in the pool). The group goes back to the inner allocator when it is zero.
    group_out: usize,
    listed: bool,
    /// On the empty list or in the pool: whether its pages after the header's were returned
    /// to the operating system (they read as zeros, or the inner allocator's mapping's
    /// contents, when touched again).
    decommitted: bool,
}

const _: () = assert!(core::mem::size_of::<Header>() <= HEADER);

/// The bitmap of `span`'s blocks that came back: bit `i % 64` of word `i / 64` for block `i`
/// (from the first block).
fn bitmap(span: *mut Header) -> *mut u64 {
    span.cast::<u8>().wrapping_add(BITMAP).cast()
}

/// The index of `block` in `span` (a block of the span, `(*span).first` and `recip` set).
///
/// # Safety
/// `span`'s header is the caller's.
unsafe fn index_of(span: *mut Header, block: usize) -> usize {
    (((block - (*span).first) as u64 * (*span).recip) >> 48) as usize
}

/// Takes up to `out.len()` blocks from `span`'s bitmap, lowest address first; returns how many.
///
/// # Safety
/// `span`'s header and bitmap are the caller's.
unsafe fn take_freed(span: *mut Header, out: &mut [usize]) -> usize {
    let bits = bitmap(span);
    let size = (*span).size;
    let want = out.len().min((*span).freed);
    let mut w = (*span).scan;
    let mut n = 0;
    while n < want {
        let mut word = *bits.add(w);
        let base = (*span).first + w * 64 * size;
        while word != 0 && n < want {
            out[n] = base + word.trailing_zeros() as usize * size;
            word &= word - 1;
            n += 1;
        }
        *bits.add(w) = word;
        if word == 0 {
            w += 1;
        }
    }
    (*span).scan = w;
    (*span).freed -= n;
    n
}

/// Resets a span with no block out to hand out its blocks from the bump pointer again.
///
/// # Safety
/// `span`'s header and bitmap are the caller's; no block of it is out.
unsafe fn reset(span: *mut Header) {
    let handed = index_of(span, (*span).bump);
    bitmap(span).write_bytes(0, handed.div_ceil(64));
    (*span).freed = 0;
    (*span).scan = 0;
    (*span).bump = (*span).first;
}

/// Empty spans a class keeps for its next refills; more go to the [`Pool`] at once.
pub(super) const KEPT_EMPTY: usize = 4;

/// One class's spans.
pub(super) struct Central {
    list: Mutex<List>,
}

/// A doubly linked list of spans, through their headers.
struct Chain {
    head: *mut Header,
    len: usize,
}

impl Chain {
    /// # Safety
    /// `span` is a live span of the class, on no list.
    unsafe fn push(&mut self, span: *mut Header) {
        (*span).prev = ptr::null_mut();
        (*span).next = self.head;
        if !self.head.is_null() {
            (*self.head).prev = span;
        }
        self.head = span;
        (*span).listed = true;
        self.len += 1;
    }

    /// # Safety
    /// `span` is on this list.
    unsafe fn remove(&mut self, span: *mut Header) {
        let (prev, next) = ((*span).prev, (*span).next);
        if prev.is_null() {
            self.head = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*span).listed = false;
        self.len -= 1;
    }
}

struct List {
    /// Spans with blocks out and a block to give; refills take from these first, so that the
    /// empty ones stay empty.
    partial: Chain,
    /// Spans with no block out, reset to hand out their blocks in address order again.
    empty: Chain,
    /// Spans held, all of this class (full ones are on no list).
    spans: usize,
    /// Blocks out of the spans (in caches or with the program).
    out: usize,
    /// Calls of [`Central::decommit_idle`] so far.
    passes: usize,
}

// SAFETY: the list owns its spans, reached only under the mutex.
unsafe impl Send for List {}

/// Counts of one class's spans, for the stats.
#[derive(Clone, Copy, Default)]
pub(super) struct CentralCounts {
    pub spans: usize,
    pub out: usize,
}

impl Central {
    pub(super) const fn new() -> Central {
        const NONE: Chain = Chain {
            head: ptr::null_mut(),
            len: 0,
        };
        Central {
            list: Mutex::new(List {
                partial: NONE,
                empty: NONE,
                spans: 0,
                out: 0,
                passes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, List> {
        super::lock(&self.list)
    }

    pub(super) fn counts(&self) -> CentralCounts {
        let list = self.lock();
        CentralCounts {
            spans: list.spans,
            out: list.out,
        }
    }

    /// Fills `out` with blocks of `size` bytes from this class's spans (new ones from the inner
    /// allocator as needed); returns how many (fewer if the inner allocator fails).
    pub(super) fn take<A: GlobalAlloc>(
        &self,
        map: &SpanMap,
        pool: &Pool,
        inner: &A,
        size: usize,
        out: &mut [usize],
    ) -> usize {
        let mut list = self.lock();
        let mut n = 0;
        while n < out.len() {
            // SAFETY: listed spans are live spans of this class: their headers and free blocks
            // are ours under the lock.
            unsafe {
                let span = if !list.partial.head.is_null() {
                    list.partial.head
                } else if !list.empty.head.is_null() {
                    let span = list.empty.head;
                    list.empty.remove(span);
                    list.partial.push(span);
                    // Its pages come back zeroed as they are touched.
                    (*span).decommitted = false;
                    span
                } else {
                    let span = pool.take(map, inner, size);
                    if span.is_null() {
                        break;
                    }
                    list.spans += 1;
                    list.partial.push(span);
                    span
                };
                // Field by field through the raw pointer (no `&mut Header`): the list's links
                // are written through the same pointer.
                let before = n;
                if (*span).freed != 0 {
                    n += take_freed(span, &mut out[n..]);
                }
                while n < out.len() && (*span).bump < (*span).end {
                    out[n] = (*span).bump;
                    (*span).bump += size;
                    n += 1;
                }
                (*span).used += n - before;
                list.out += n - before;
                if (*span).freed == 0 && (*span).bump >= (*span).end {
                    // Full: on no list until a block comes back.
                    list.partial.remove(span);
                }
            }
        }
        n
    }

    /// Gives `blocks` back to their spans. A span left with no block out is reset and kept
    /// empty, or, if the class keeps [`KEPT_EMPTY`] already, goes to `pool` (which may hand
    /// its group back: see [`Pool::put`]). Returns the bytes handed back.
    ///
    /// # Safety
    /// Each is a free block of this class, of a live span (`map.contains`), owned by the caller.
    pub(super) unsafe fn put<A: GlobalAlloc>(
        &self,
        map: &SpanMap,
        pool: &Pool,
        inner: &A,
        blocks: &[usize],
    ) -> usize {
        let mut released = 0;
        let mut list = self.lock();
        for &block in blocks {
            // Field by field through the raw pointer (no `&mut Header`): the list's links
            // are written through the same pointer.
            let span = (block & !(SPAN - 1)) as *mut Header;
            let i = index_of(span, block);
            let word = bitmap(span).add(i / 64);
            debug_assert!(*word & (1 << (i % 64)) == 0, "block {block:#x} freed twice");
            *word |= 1 << (i % 64);
            (*span).freed += 1;
            (*span).scan = (*span).scan.min(i / 64);
            (*span).used -= 1;
            list.out -= 1;
            if (*span).used == 0 {
                if (*span).listed {
                    list.partial.remove(span);
                }
                if list.empty.len >= KEPT_EMPTY {
                    list.spans -= 1;
                    released += pool.put(map, inner, span);
                } else {
                    reset(span);
                    (*span).emptied_at = list.passes;
                    list.empty.push(span);
                }
            } else if !(*span).listed {
                list.partial.push(span);
            }
        }
        released
    }

    /// Returns to the operating system (`madvise(MADV_DONTNEED)`) the pages of the empty spans
    /// that were empty already at the previous call, all but the page of the header, and keeps
    /// the spans. Called once per [`RELEASE_DELAY`](super::RELEASE_DELAY) or more, that is
    /// a span's memory goes back after it stayed unused between two calls. Returns the bytes
    /// returned. A span whose `madvise` fails (memory the inner allocator locked, or mapped
    /// with huge pages) keeps its pages.
    pub(super) fn decommit_idle(&self, page: usize) -> usize {
        let mut list = self.lock();
        list.passes += 1;
        // SAFETY: the empty list's spans are this class's, with no block out, ours under the
        // lock.
        unsafe { decommit_idle(&list.empty, list.passes, page) }
    }

    /// Gives every empty span to `pool` (for [`Pool::release_all`] to hand back); returns the
    /// bytes of the groups that went back to the inner allocator on the way (see
    /// [`Pool::put`]).
    pub(super) fn release_empty<A: GlobalAlloc>(
        &self,
        map: &SpanMap,
        pool: &Pool,
        inner: &A,
    ) -> usize {
        let mut list = self.lock();
        // SAFETY: the empty list's spans have no block out and are ours under the lock.
        unsafe { give_to_pool(&mut list, map, pool, inner) }
    }

    /// At the allocator's drop, after every cached block came back: gives the spans none of
    /// whose blocks is with the program to `pool`; the others (their blocks may still be in
    /// use) are leaked, with their groups.
    ///
    /// # Safety
    /// Nothing uses the class any more.
    pub(super) unsafe fn free_all<A: GlobalAlloc>(
        &mut self,
        map: &SpanMap,
        pool: &Pool,
        inner: &A,
    ) {
        let list = self.list.get_mut().unwrap_or_else(|e| e.into_inner());
        // Only the empty list holds spans with no block out.
        give_to_pool(list, map, pool, inner);
    }
}

/// Moves every span of `list`'s empty list to `pool`; returns the bytes handed back on the way.
///
/// # Safety
/// `list` is the caller's (under its lock).
unsafe fn give_to_pool<A: GlobalAlloc>(
    list: &mut List,
    map: &SpanMap,
    pool: &Pool,
    inner: &A,
) -> usize {
    let mut released = 0;
    while !list.empty.head.is_null() {
        let span = list.empty.head;
        list.empty.remove(span);
        list.spans -= 1;
        released += pool.put(map, inner, span);
    }
    released
}

/// Returns to the operating system the pages (all but the header's) of the spans on `chain`
/// that have been on it since before the previous pass (`emptied_at + 2 <= passes`), once
/// each; returns their bytes.
///
/// # Safety
/// The spans on `chain` have no block out and are the caller's (under their list's lock).
unsafe fn decommit_idle(chain: &Chain, passes: usize, page: usize) -> usize {
    let mut returned = 0;
    let mut span = chain.head;
    while !span.is_null() {
        if (*span).emptied_at + 2 <= passes {
            returned += decommit(span, page);
        }
        span = (*span).next;
    }
    returned
}

/// Returns to the operating system the pages of `span` after its header's, unless they were
/// already; returns their bytes. Only the span's own bytes are dropped: its pages after the
/// header's page lie inside the span's allocation. A span whose `madvise` fails (memory the
/// inner allocator locked, or mapped with huge pages) keeps its pages.
///
/// # Safety
/// `span` has no block out and is the caller's.
unsafe fn decommit(span: *mut Header, page: usize) -> usize {
    if (*span).decommitted {
        return 0;
    }
    let start = (*span).first.next_multiple_of(page);
    let len = (span as usize + SPAN).saturating_sub(start);
    if len > 0 && libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 {
        (*span).decommitted = true;
        len
    } else {
        0
    }
}

/// Spans the inner allocator gives in one request (`Layout::from_size_align(GROUP × SPAN,
/// SPAN)`), carved one at a time as classes need them. An aligned request costs the inner
/// allocator pages of its own besides the span (glibc's `memalign` of 256 KiB maps 512 KiB
/// and writes a chunk header at the start of the mapping and one before the span: two
/// resident pages); a group pays that once for four spans. A group goes back to the inner
/// allocator once none of its spans is with a class. 1 MiB: with the inner allocator's
/// overhead a group's mapping stays under 2 MiB, so it never holds a whole transparent huge
/// page on its own. Where the inner allocator cannot give a group, a span comes alone (a group
/// of one).
pub(super) const GROUP: usize = 4;

/// The pool keeps up to this many empty spans (256 MiB of address space) with their groups:
/// past it, a span that comes to the pool sends its group back to the inner allocator if the
/// group's other spans are in the pool too. Their pages are the program's own peak (every
/// pooled span was in use), and the idle passes return them to the operating system once a
/// span stayed unused for a pass; what stays is a page for each span's header. A program that
/// frees a large structure and builds the next one (a parser's document, say) so reuses its
/// spans with their pages, instead of handing them back to the inner allocator (whose `free`
/// and aligned `alloc` of large blocks unmap and map pages, or split and merge its heap) each
/// time.
pub(super) const POOL_SPANS: usize = 1024;

/// The spans of no class, and where new ones come from. A class that empties a span beyond
/// [`KEPT_EMPTY`] puts it here, and a class that needs a new span takes one from here: an
/// empty one if the pool has one, else the next fresh span of the current [group](GROUP),
/// else the first of a new group from the inner allocator. So spans move between classes
/// without going through the inner allocator, and the idle passes return their pages to the
/// system.
pub(super) struct Pool {
    list: Mutex<PoolList>,
}

struct PoolList {
    /// Empty spans (carved, of no class).
    spans: Chain,
    passes: usize,
    /// The current group (its first span), whose spans from `fresh` to `fresh_end` were never
    /// carved (equal: none left).
    fresh_group: *mut Header,
    fresh: usize,
    fresh_end: usize,
    /// Groups held (inner allocations).
    groups: usize,
}

// SAFETY: the pool owns its spans, reached only under the mutex.
unsafe impl Send for PoolList {}

fn group_layout(spans: usize) -> Layout {
    // SAFETY: a power of two, and the size (at most `GROUP` spans) is its multiple.
    unsafe { Layout::from_size_align_unchecked(spans * SPAN, SPAN) }
}

impl Pool {
    pub(super) const fn new() -> Pool {
        Pool {
            list: Mutex::new(PoolList {
                spans: Chain {
                    head: ptr::null_mut(),
                    len: 0,
                },
                passes: 0,
                fresh_group: ptr::null_mut(),
                fresh: 0,
                fresh_end: 0,
                groups: 0,
            }),
        }
    }

    /// Spans held.
    pub(super) fn len(&self) -> usize {
        super::lock(&self.list).spans.len
    }

    /// Groups held: the inner allocations that hold the spans.
    pub(super) fn groups(&self) -> usize {
        super::lock(&self.list).groups
    }

    /// A span for blocks of `size` bytes, its header written, in the map: an empty one of the
    /// pool, or a fresh one. Null if the inner allocator fails.
    fn take<A: GlobalAlloc>(&self, map: &SpanMap, inner: &A, size: usize) -> *mut Header {
        let mut list = super::lock(&self.list);
        // SAFETY: the pool's spans and the current group's fresh spans are ours under the
        // lock, and so are the groups' counts.
        unsafe {
            let span = list.spans.head;
            if !span.is_null() {
                list.spans.remove(span);
                (*(*span).group).group_out += 1;
                return init_span(span, size);
            }
            if list.fresh == list.fresh_end && !list.new_group(map, inner) {
                return ptr::null_mut();
            }
            let span = list.fresh as *mut Header;
            let group = list.fresh_group;
            if span != group && !map.insert(inner, span as usize) {
                // Out of the map's range or no leaf: the group's other spans stay uncarved.
                list.fresh = list.fresh_end;
                return ptr::null_mut();
            }
            list.fresh += SPAN;
            (*span).group = group;
            (*group).group_carved += 1;
            (*group).group_out += 1;
            init_span(span, size)
        }
    }

    /// Keeps `span`, whose class gave it up. Past [`POOL_SPANS`], its group goes back to the
    /// inner allocator if none of its spans is with a class; returns the bytes handed back.
    ///
    /// # Safety
    /// `span` is a live span, with no block out, on no list, the caller's.
    unsafe fn put<A: GlobalAlloc>(&self, map: &SpanMap, inner: &A, span: *mut Header) -> usize {
        let mut list = super::lock(&self.list);
        let group = (*span).group;
        (*group).group_out -= 1;
        // A span from a class's empty list may have returned its pages already: it stays so.
        (*span).emptied_at = list.passes;
        list.spans.push(span);
        if list.spans.len > POOL_SPANS && (*group).group_out == 0 {
            list.release_group(map, inner, group)
        } else {
            0
        }
    }

    /// [`Central::decommit_idle`] for the pool's spans.
    pub(super) fn decommit_idle(&self, page: usize) -> usize {
        let mut list = super::lock(&self.list);
        list.passes += 1;
        // SAFETY: the pool's spans have no block out and are ours under the lock.
        unsafe { decommit_idle(&list.spans, list.passes, page) }
    }

    /// Hands every group none of whose spans is with a class back to the inner allocator, and
    /// returns to the operating system the pages (all but the header's) of the pool's other
    /// spans, whose groups must wait for their last span. Returns the bytes handed back and
    /// the bytes returned.
    pub(super) fn release_all<A: GlobalAlloc>(
        &self,
        map: &SpanMap,
        inner: &A,
        page: usize,
    ) -> (usize, usize) {
        self.release(map, inner, Some(page))
    }

    /// [`Pool::release_all`], returning the kept spans' pages only with a `page` size.
    fn release<A: GlobalAlloc>(
        &self,
        map: &SpanMap,
        inner: &A,
        page: Option<usize>,
    ) -> (usize, usize) {
        let mut list = super::lock(&self.list);
        let (mut released, mut returned) = (0, 0);
        let mut kept = Chain {
            head: ptr::null_mut(),
            len: 0,
        };
        // SAFETY: the pool's spans have no block out and are ours under the lock. A group's
        // `group_out` does not change here: its carved spans are all on `list.spans` (zero)
        // or some are with a class (then none of them goes back).
        unsafe {
            while !list.spans.head.is_null() {
                let span = list.spans.head;
                let group = (*span).group;
                if (*group).group_out == 0 {
                    released += list.release_group(map, inner, group);
                } else {
                    list.spans.remove(span);
                    if let Some(page) = page {
                        returned += decommit(span, page);
                    }
                    kept.push(span);
                }
            }
        }
        list.spans = kept;
        (released, returned)
    }

    /// At the allocator's drop: hands back what [`Pool::release_all`] would; the groups with
    /// spans still with a class (their blocks may still be in use) are leaked.
    ///
    /// # Safety
    /// Nothing uses the pool any more.
    pub(super) unsafe fn free_all<A: GlobalAlloc>(&mut self, map: &SpanMap, inner: &A) {
        self.release(map, inner, None);
    }
}

impl PoolList {
    /// Takes a new group from the inner allocator (or a span alone, if a group is too much
    /// for it) and makes it the current one, its first span in the map; false if the inner
    /// allocator fails or the map cannot take it.
    ///
    /// # Safety
    /// Called under the pool's lock, with no fresh span left.
    unsafe fn new_group<A: GlobalAlloc>(&mut self, map: &SpanMap, inner: &A) -> bool {
        let mut spans = GROUP;
        let mut base = inner.alloc(group_layout(spans));
        if base.is_null() {
            spans = 1;
            base = inner.alloc(group_layout(spans));
            if base.is_null() {
                return false;
            }
        }
        if !map.insert(inner, base as usize) {
            inner.dealloc(base, group_layout(spans));
            return false;
        }
        let group = base.cast::<Header>();
        (*group).group_carved = 0;
        (*group).group_spans = spans as u32;
        (*group).group_out = 0;
        self.fresh_group = group;
        self.fresh = base as usize;
        self.fresh_end = base as usize + spans * SPAN;
        self.groups += 1;
        true
    }

    /// Hands `group` back to the inner allocator: takes its carved spans (all in the pool) off
    /// the pool and out of the map. Returns the bytes handed back.
    ///
    /// # Safety
    /// Called under the pool's lock; none of the group's spans is with a class.
    unsafe fn release_group<A: GlobalAlloc>(
        &mut self,
        map: &SpanMap,
        inner: &A,
        group: *mut Header,
    ) -> usize {
        let (carved, spans) = (
            (*group).group_carved as usize,
            (*group).group_spans as usize,
        );
        for i in (0..carved).rev() {
            let span = (group as usize + i * SPAN) as *mut Header;
            self.spans.remove(span);
            map.remove(span as usize);
        }
        if self.fresh_group == group {
            self.fresh_group = ptr::null_mut();
            self.fresh = 0;
            self.fresh_end = 0;
        }
        self.groups -= 1;
        inner.dealloc(group.cast(), group_layout(spans));
        spans * SPAN
    }
}

/// Writes the header (all but the group fields) and clears the bitmap of a span for blocks of
/// `size` bytes (a fresh span, or one of the pool), and returns it.
///
/// # Safety
/// The span is the caller's, on no list; its `group` is set. Called under the pool's lock: a
/// group's first span's header holds the group's counts, which other spans of the group
/// update under that lock.
unsafe fn init_span(span: *mut Header, size: usize) -> *mut Header {
    let first = span as usize + header_bytes(size);
    let blocks = (span as usize + SPAN - first) / size;
    bitmap(span).write_bytes(0, blocks.div_ceil(64));
    // Field by field: the group's counts in a first span's header stay as they are.
    (*span).size = size;
    (*span).recip = reciprocal(size);
    (*span).freed = 0;
    (*span).scan = 0;
    (*span).bump = first;
    (*span).first = first;
    (*span).end = first + blocks * size;
    (*span).used = 0;
    (*span).prev = ptr::null_mut();
    (*span).next = ptr::null_mut();
    (*span).listed = false;
    (*span).emptied_at = 0;
    (*span).decommitted = false;
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_room_for_its_bitmap_and_exact_indices() {
        for &size in super::super::SIZE_CLASSES.iter() {
            let header = header_bytes(size);
            let blocks = (SPAN - header) / size;
            assert!(blocks >= 1, "{size}");
            assert_eq!(header % HEADER, 0, "{size}");
            assert!(BITMAP + blocks.div_ceil(64) * 8 <= header, "{size}");
            let recip = reciprocal(size);
            for k in 0..blocks {
                assert_eq!(
                    ((k * size) as u64 * recip) >> 48,
                    k as u64,
                    "{size}: block {k}"
                );
            }
        }
    }
}
