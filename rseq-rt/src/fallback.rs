//! The lock table the fallback runs critical sections under: one cache-padded lock word per
//! possible CPU index.
//!
//! In `Fallback` mode a critical section takes the lock of the slot it works on and runs the
//! same steps in plain Rust (the macro generates that body from the same syntax tree as the
//! asm). Results are the same as with rseq; only the speed differs.
//!
//! Signal handlers may run critical sections. A handler that interrupts its own thread's
//! fallback section cannot wait for the lock its thread holds, so it takes another free slot
//! (any slot is as good as another under a lock) and waits until one is free. That wait ends
//! as long as some slot is free or held by a thread that no handler can hold up. Were every
//! slot held by a thread whose handler waits so, none would ever be released. So at most
//! `slots − 1` slot locks are held with signals deliverable. No counter keeps that limit (a
//! shared counter written twice per section cost more than the rest of it): a thread takes its
//! slot's word with a sequentially consistent compare-exchange, then reads the other words, and
//! keeps the slot with signals deliverable only if one of them is free or held with signals
//! blocked (of threads taking slots at once, the last one sees all the others, as in Dekker's
//! algorithm). Otherwise it reads again for a short while, then holds its lock with the
//! asynchronous signals blocked, two `pthread_sigmask` calls (the holder of the last slot does
//! so at once, so refused holders never wait for each other). A lone thread never pays that;
//! with one slot (one possible CPU) every hold does.
//!
//! Between taking its slot and reading the others, a thread holds a lock it may still give
//! back: a handler that interrupts it there must not wait for a slot either (with every slot
//! held so, none would be released). Such a handler *borrows* that slot: the interrupted code
//! has not touched the slot's data yet and resumes only after the handler's section is over,
//! so the handler runs its section on that slot, with signals blocked. Each thread records the
//! slot and the frame depth of that window, and lock words hold the owner thread's token, so a
//! handler borrows only from the frame it interrupted.
//!
//! Synchronous signals (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`) are never
//! blocked, as the kernel would kill the process rather than hold them. Locks held by other
//! threads at `fork` stay held in the child, as for any mutex. Waiting threads spin briefly,
//! then yield the CPU.
//!
//! A program whose signal handlers never run sections can say so with
//! [`assume_no_sections_in_signal_handlers`]: its fallback sections then hold the locks
//! without the check and never block signals; a handler that still runs a section and waits
//! in vain for a slot (its interrupted thread holds one, the others are held) aborts the
//! process with a message after a second, rather than hang.

use crate::percpu::CachePadded;
use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// One word per slot: [`FREE`], or the holding thread's token (the address of its
/// [`ThreadState`]) with the hold's kind in the low two bits.
type LockTable = [CachePadded<AtomicUsize>];

const FREE: usize = 0;
/// Held with the asynchronous signals deliverable, counted toward the `slots − 1` limit.
const UNMASKED: usize = 1;
/// Held with the asynchronous signals blocked.
const MASKED: usize = 2;
/// Held under [`assume_no_sections_in_signal_handlers`]: deliverable, not counted.
const PROMISED: usize = 3;
const KIND: usize = 3;

static TABLE: AtomicPtr<Box<LockTable>> = AtomicPtr::new(core::ptr::null_mut());

/// Set by [`assume_no_sections_in_signal_handlers`].
static SIGNALS_UNBLOCKED: AtomicBool = AtomicBool::new(false);

/// Promises that no signal handler of this process runs a critical section (nor a structure
/// built on them, such as the collections or the allocator): from now on the fallback holds its
/// slot locks without the check that keeps handlers from deadlocking, and never blocks signals
/// (which saves two `pthread_sigmask` calls on the holds that would otherwise pay them).
/// Nothing changes where sections run on rseq.
///
/// Breaking the promise is caught where it matters: a section in a signal handler that
/// interrupted its own thread's fallback section waits for another slot, and when the other
/// holders are interrupted the same way none is ever released. After a second without a free
/// slot the process is aborted with a message that names this call, instead of hanging. (A
/// handler that finds a free slot, or that did not interrupt a section, runs its section
/// normally.)
///
/// ```
/// rseq::fallback::assume_no_sections_in_signal_handlers();
/// assert!(rseq::fallback::signals_unblocked());
/// let slot = rseq::fallback::with_slot(0, |slot| slot);
/// assert!(slot < rseq::fallback::slots());
/// ```
pub fn assume_no_sections_in_signal_handlers() {
    SIGNALS_UNBLOCKED.store(true, Ordering::Relaxed);
}

/// Whether [`assume_no_sections_in_signal_handlers`] was called: fallback sections then run with
/// the thread's signal mask untouched.
pub fn signals_unblocked() -> bool {
    SIGNALS_UNBLOCKED.load(Ordering::Relaxed)
}

/// Slot locks held right now with signals deliverable and counted toward the limit of
/// `slots − 1` (for tests and diagnostics; holds under the promise are not counted).
pub fn unmasked_holds() -> usize {
    let table = table();
    table
        .iter()
        .filter(|w| w.load(Ordering::Relaxed) & KIND == UNMASKED)
        .count()
}

/// How long a handler that interrupted its thread's section waits for a free slot, signals
/// unblocked, before it takes the wait for a deadlock.
const BROKEN_PROMISE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// A handler that interrupted its thread's section found no free slot for
/// [`BROKEN_PROMISE_PATIENCE`] while signals were not blocked: the promise of
/// [`assume_no_sections_in_signal_handlers`] was broken.
#[cold]
fn broken_promise() -> ! {
    const MSG: &[u8] = b"rseq: a signal handler ran a critical section that had to wait for a \
fallback slot held by the thread it interrupted, after \
rseq::fallback::assume_no_sections_in_signal_handlers() promised that no handler runs sections; \
aborting instead of hanging. Remove that call, or run no sections in signal handlers.\n";
    // SAFETY: write(2) of a static buffer to stderr, then abort: both async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort()
    }
}

/// What this thread's slot locks are doing. Signal handlers on the same thread read it, so every
/// change that matters to them is followed by a compiler fence.
#[repr(align(4))]
struct ThreadState {
    /// Slot locks this thread holds for a section's body (more than one only through handlers).
    held: Cell<usize>,
    /// Slot-lock frames active on this thread: taking a lock, holding one, or borrowing one.
    depth: Cell<usize>,
    /// The slot a frame has taken (or is about to take) with signals deliverable and has not
    /// checked yet, with that frame's depth: `slot << 8 | depth`, or [`NO_WINDOW`]. A handler
    /// one frame deeper that finds the slot's word holding this thread's token borrows it.
    window: Cell<usize>,
    /// Slot locks this thread has taken: a per-thread count, so counting costs no shared write.
    sections: Cell<u64>,
}

const NO_WINDOW: usize = usize::MAX;

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            held: Cell::new(0),
            depth: Cell::new(0),
            window: Cell::new(NO_WINDOW),
            sections: Cell::new(0),
        }
    };
}

/// Runs `f` on this thread's state. The state lives as long as the thread; a section in a
/// destructor after it is gone would have no slot bookkeeping, so that case blocks signals for
/// the hold and borrows nothing (see [`state`]).
#[inline]
fn state() -> Option<&'static ThreadState> {
    // SAFETY: the reference does not outlive the thread (it is only used during a lock frame
    // of this thread, and a guard is `!Send`).
    THREAD
        .try_with(|t| unsafe { &*(t as *const ThreadState) })
        .ok()
}

/// How many times this thread has taken a slot lock (run a section through the fallback).
pub fn thread_fallback_sections() -> u64 {
    state().map_or(0, |t| t.sections.get())
}

/// Creates the table (once; racing callers agree on one).
pub(crate) fn init(slots: usize) {
    if TABLE.load(Ordering::Acquire).is_null() {
        let _ = init_with(slots);
    }
}

/// Creates the table with `slots` locks, or fails with the size of the one that exists.
pub(crate) fn init_with(slots: usize) -> Result<(), usize> {
    let table: Box<LockTable> = (0..slots.max(1))
        .map(|_| CachePadded::new(AtomicUsize::new(FREE)))
        .collect();
    let fresh = Box::into_raw(Box::new(table));
    if TABLE
        .compare_exchange(
            core::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: we made `fresh` and lost the race; nobody else has seen it.
        drop(unsafe { Box::from_raw(fresh) });
        return Err(self::table().len());
    }
    Ok(())
}

#[inline]
fn table() -> &'static LockTable {
    let mut table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        init(crate::sys::possible_cpus());
        table = TABLE.load(Ordering::Acquire);
    }
    // SAFETY: published once (non-null from then on), never freed.
    unsafe { &*table }
}

/// The number of slot locks (the number of possible CPUs).
pub fn slots() -> usize {
    table().len()
}

/// Called between taking a slot with signals deliverable and checking the others (tests only:
/// a signal raised there must be handled without a hang).
#[cfg(feature = "test-support")]
pub(crate) static WINDOW_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

#[inline(always)]
fn window_hook() {
    #[cfg(feature = "test-support")]
    {
        let hook = WINDOW_HOOK.load(Ordering::Relaxed);
        if !hook.is_null() {
            // SAFETY: only `test_support::set_fallback_window_hook` stores it, from an `fn()`.
            let hook: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
            hook();
        }
    }
}

/// A held slot lock. The critical section's fallback body works on slot [`SlotGuard::index`].
#[must_use = "the slot is unlocked when the guard is dropped"]
pub struct SlotGuard {
    index: usize,
    hold: Hold,
    /// Blocked asynchronous signals, restored after the slot is given back.
    signals: Option<SignalsBlocked>,
    /// The frame's bookkeeping is this thread's: the guard stays on it.
    _thread: PhantomData<*const ()>,
}

enum Hold {
    /// This frame's lock on the slot: released on drop.
    Owned(&'static ThreadState),
    /// A handler's use of the slot its interrupted frame has just taken and not checked yet
    /// (that frame has not touched the slot's data): the window to restore on drop.
    Borrowed(&'static ThreadState, usize),
    /// A hold without thread state (a section in a late thread-local destructor).
    Stateless,
}

/// Asynchronous signals blocked on this thread until it is dropped.
///
/// It keeps the kernel's part of the old mask only: 64 signals on every supported architecture,
/// where the C library's `sigset_t` is 128 bytes. A guard is moved around with the slot guard
/// on every fallback section, and copying 128 bytes each time was a third of a section's cost.
struct SignalsBlocked([libc::c_ulong; MASK_WORDS]);

/// Words of the kernel's signal mask (`_NSIG` is 64, plus one, on every supported target).
const MASK_WORDS: usize = 64 / libc::c_ulong::BITS as usize;

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data that sigfillset/sigdelset initialise; pthread_sigmask
        // only reads `set` and writes `old`.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGSYS,
            ] {
                libc::sigdelset(&mut set, sig);
            }
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            // The C library's `sigset_t` is an array of `unsigned long` (glibc and musl); only
            // its first 64 bits name signals.
            let words = &old as *const libc::sigset_t as *const libc::c_ulong;
            SignalsBlocked(core::array::from_fn(|i| *words.add(i)))
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread (the guard is !Send),
        // written into a zeroed `sigset_t` (an array of at least `MASK_WORDS` words).
        unsafe {
            let mut old: libc::sigset_t = core::mem::zeroed();
            let words = &mut old as *mut libc::sigset_t as *mut libc::c_ulong;
            for (i, word) in self.0.iter().enumerate() {
                *words.add(i) = *word;
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        }
    }
}

impl SlotGuard {
    /// The slot this guard locks (may differ from the preferred one inside a signal handler).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for SlotGuard {
    #[inline]
    fn drop(&mut self) {
        match self.hold {
            Hold::Owned(t) => {
                // Unlock first, then stop counting: a signal arriving in between still sees this
                // thread as a holder and picks a free slot instead of waiting on one we hold.
                table()[self.index].store(FREE, Ordering::Release);
                compiler_fence(Ordering::SeqCst);
                t.held.set(t.held.get() - 1);
                t.depth.set(t.depth.get() - 1);
            }
            // Signals are still blocked: the interrupted frame's window is back before any
            // handler can look for it.
            Hold::Borrowed(t, window) => {
                t.window.set(window);
                t.depth.set(t.depth.get() - 1);
            }
            Hold::Stateless => table()[self.index].store(FREE, Ordering::Release),
        }
        compiler_fence(Ordering::SeqCst);
        // Pending signals are delivered here, with the slot given back. (Tested first: moving
        // the empty option out costs a stalled 16-byte copy on every section.)
        if self.signals.is_some() {
            drop(self.signals.take());
        }
    }
}

/// The slot `step` places after `from`, wrapping at `n` (no division: a fallback section's
/// whole cost is a few dozen cycles).
#[inline(always)]
fn after(from: usize, step: usize, n: usize) -> usize {
    let i = from + step;
    if i >= n {
        i - n
    } else {
        i
    }
}

/// `preferred` as a slot index (a CPU number is one already).
#[inline(always)]
fn reduce(preferred: usize, n: usize) -> usize {
    if preferred < n {
        preferred
    } else {
        preferred % n
    }
}

/// This thread's token in a lock word.
fn token(t: &'static ThreadState) -> usize {
    t as *const ThreadState as usize
}

/// Whether some slot other than `mine` is free or held in a way no handler can hold up: then
/// `mine` may be held with signals deliverable. Sequentially consistent with the lock words'
/// compare-exchanges (Dekker's pattern): of holders that take slots at the same time, the last
/// one sees all the others.
#[inline]
fn another_slot_settles(table: &LockTable, mine: usize) -> bool {
    let n = table.len();
    (1..n).any(|step| table[after(mine, step, n)].load(Ordering::SeqCst) & KIND != UNMASKED)
}

/// The outcome of trying one slot with signals deliverable.
enum Try {
    Held,
    /// The slot is not free.
    Busy,
    /// Every other slot is held with signals deliverable: holding this one so too could let
    /// handlers deadlock. The slot is still taken, its window still open (this is the window
    /// to restore): [`downgrade`].
    Refused(usize),
}

/// Tries slot `i` for frame `depth` of thread `t` with signals deliverable: takes it if it is
/// free, then keeps it so only if [`another_slot_settles`]. From before the compare-exchange
/// until the check is over a handler on this thread borrows it (the window).
#[inline(always)]
fn try_unmasked(table: &LockTable, i: usize, t: &'static ThreadState, depth: usize) -> Try {
    let word = &table[i];
    // Seen free here, so no other frame of this thread holds it (they are suspended while this
    // one runs): a word with this thread's token below can only be this frame's.
    if word.load(Ordering::Relaxed) != FREE {
        return Try::Busy;
    }
    let saved = t.window.get();
    t.window.set(i << 8 | (depth & 0xff));
    compiler_fence(Ordering::SeqCst);
    if word
        .compare_exchange(
            FREE,
            token(t) | UNMASKED,
            Ordering::SeqCst,
            Ordering::Relaxed,
        )
        .is_err()
    {
        compiler_fence(Ordering::SeqCst);
        t.window.set(saved);
        return Try::Busy;
    }
    window_hook();
    if !another_slot_settles(table, i) && !settles_soon(table, i) {
        return Try::Refused(saved);
    }
    t.held.set(t.held.get() + 1);
    compiler_fence(Ordering::SeqCst);
    t.window.set(saved);
    Try::Held
}

/// After a failed check, still holding slot `i` (window open): whether another slot settles
/// within a short spin. Reading again is as good as the first read (it also follows this
/// thread's compare-exchange, and a slot held with signals deliverable stays so until it is
/// given back or downgraded). Only the holder of the last slot never waits: it downgrades at
/// once, so holders that refuse each other do not wait for each other, and a section lasts
/// tens of nanoseconds where blocking signals takes two system calls.
#[cold]
fn settles_soon(table: &LockTable, i: usize) -> bool {
    if i + 1 == table.len() {
        return false;
    }
    for _ in 0..SETTLE_SPINS {
        core::hint::spin_loop();
        if another_slot_settles(table, i) {
            return true;
        }
    }
    false
}

/// How long [`settles_soon`] spins at most.
const SETTLE_SPINS: u32 = 64;

/// Gives a refused slot back and takes one again with the asynchronous signals blocked. The
/// slot is given back before the two system calls, so other threads' checks do not see it held
/// with signals deliverable while they run (and do not stall on it); then the thread goes
/// straight to a blocked hold instead of trying again with signals deliverable, since two
/// threads that keep sections running back to back would refuse each other over and over.
#[cold]
fn downgrade(frame: Frame, table: &'static LockTable, i: usize, window: usize) -> SlotGuard {
    let t = frame.t;
    table[i].store(FREE, Ordering::Release);
    compiler_fence(Ordering::SeqCst);
    t.window.set(window);
    lock_blocked(table, i, Some(frame), token(t) | MASKED)
}

/// Takes exactly slot `i` with `word`, waiting until it is free.
fn take_waiting(table: &LockTable, i: usize, word: usize) {
    let mut round = 0;
    while !try_plain(table, i, word) {
        pause(&mut round);
    }
}

/// Takes slot `i` for good with signals blocked (the caller blocked them) or under the promise.
#[inline(always)]
fn try_plain(table: &LockTable, i: usize, word: usize) -> bool {
    table[i].load(Ordering::Relaxed) == FREE
        && table[i]
            .compare_exchange(FREE, word, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
}

/// A frame of this thread's slot-lock bookkeeping: depth counted from here until a guard takes
/// it over (or the frame ends without one).
struct Frame {
    t: &'static ThreadState,
    depth: usize,
}

impl Frame {
    #[inline]
    fn enter(t: &'static ThreadState) -> Frame {
        let depth = t.depth.get() + 1;
        t.depth.set(depth);
        compiler_fence(Ordering::SeqCst);
        Frame { t, depth }
    }

    /// The slot the directly interrupted frame is in the window of, if its word holds this
    /// thread's token: this frame (a signal handler's) may use it, with signals blocked.
    fn borrowable(&self, table: &LockTable) -> Option<usize> {
        let w = self.t.window.get();
        if w == NO_WINDOW || w & 0xff != (self.depth - 1) & 0xff {
            return None;
        }
        let slot = w >> 8;
        (table[slot].load(Ordering::Relaxed) == token(self.t) | UNMASKED).then_some(slot)
    }

    /// Borrows `slot` (see [`Frame::borrowable`]): the window moves up to this frame first, so
    /// that a handler interrupting this one before it blocks signals borrows it too.
    fn borrow(self, slot: usize) -> SlotGuard {
        let t = self.t;
        t.sections.set(t.sections.get() + 1);
        let window = t.window.get();
        t.window.set(slot << 8 | (self.depth & 0xff));
        compiler_fence(Ordering::SeqCst);
        let signals = SignalsBlocked::new();
        core::mem::forget(self);
        SlotGuard {
            index: slot,
            hold: Hold::Borrowed(t, window),
            signals: Some(signals),
            _thread: PhantomData,
        }
    }

    fn owned(self, index: usize, signals: Option<SignalsBlocked>) -> SlotGuard {
        let t = self.t;
        t.sections.set(t.sections.get() + 1);
        core::mem::forget(self);
        SlotGuard {
            index,
            hold: Hold::Owned(t),
            signals,
            _thread: PhantomData,
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.t.depth.set(self.depth - 1);
    }
}

/// Waits a little for a slot word to change: spins, then yields the CPU (async-signal-safe).
fn pause(round: &mut u32) {
    *round += 1;
    if *round < 64 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Takes a slot from `preferred` on (the first free one) with signals blocked, waiting for one:
/// after a refusal, with one slot, or for a thread that has no state left.
fn lock_blocked(
    table: &'static LockTable,
    preferred: usize,
    frame: Option<Frame>,
    word: usize,
) -> SlotGuard {
    let signals = SignalsBlocked::new();
    let n = table.len();
    let mut round = 0;
    loop {
        for step in 0..n {
            let i = after(preferred, step, n);
            if try_plain(table, i, word) {
                return match frame {
                    Some(frame) => {
                        frame.t.held.set(frame.t.held.get() + 1);
                        frame.owned(i, Some(signals))
                    }
                    None => SlotGuard {
                        index: i,
                        hold: Hold::Stateless,
                        signals: Some(signals),
                        _thread: PhantomData,
                    },
                };
            }
        }
        pause(&mut round);
    }
}

/// Locks a slot for a fallback section: `preferred` (reduced modulo the number of slots) if it
/// is free, else the first free one — slots are interchangeable under their locks, and taking a
/// free one avoids waiting for a holder that the scheduler preempted on the same CPU; when none
/// is free it waits for one. Inside a signal handler that interrupted this thread's own fallback
/// section it never waits for the lock the thread holds.
///
/// Signals stay deliverable during the hold unless every other slot is held so (then a handler
/// in each holder, waiting for a slot, would wait forever): that hold blocks the asynchronous
/// signals, after a short wait for another holder to finish.
#[inline]
pub fn lock_slot(preferred: usize) -> SlotGuard {
    let table = table();
    let n = table.len();
    let preferred = reduce(preferred, n);
    // The common case inline: no window open on this thread (so nothing to borrow), more than
    // one slot, no promise, and the preferred slot free and kept.
    if let Some(t) = state() {
        if t.window.get() == NO_WINDOW && n > 1 && !signals_unblocked() {
            let frame = Frame::enter(t);
            return match try_unmasked(table, preferred, t, frame.depth) {
                Try::Held => frame.owned(preferred, None),
                Try::Refused(window) => downgrade(frame, table, preferred, window),
                Try::Busy => lock_slot_slow(table, preferred, Some(frame)),
            };
        }
    }
    lock_slot_slow(table, preferred, None)
}

/// [`lock_slot`] past its first try.
#[inline(never)]
fn lock_slot_slow(table: &'static LockTable, preferred: usize, frame: Option<Frame>) -> SlotGuard {
    let n = table.len();
    let Some(t) = state() else {
        return lock_blocked(table, preferred, None, 1 << 2 | MASKED);
    };
    let frame = frame.unwrap_or_else(|| Frame::enter(t));
    if let Some(slot) = frame.borrowable(table) {
        return frame.borrow(slot);
    }
    let nested = t.held.get() > 0;
    if signals_unblocked() {
        // Counted before the lock is taken: a handler that runs once it is (promise broken)
        // sees the nesting and never waits for this thread's slot.
        t.held.set(t.held.get() + 1);
        compiler_fence(Ordering::SeqCst);
        let mut waiting_since = None;
        let mut round = 0;
        loop {
            for step in 0..n {
                let i = after(preferred, step, n);
                if try_plain(table, i, token(t) | PROMISED) {
                    return frame.owned(i, None);
                }
            }
            // Nested, every slot busy: under the promise nothing bounds the holders, so after a
            // second without a free slot, stop.
            if nested
                && waiting_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    > BROKEN_PROMISE_PATIENCE
            {
                broken_promise();
            }
            pause(&mut round);
        }
    }
    if n == 1 {
        // One slot: no other slot can settle, every hold blocks signals.
        return lock_blocked(table, preferred, Some(frame), token(t) | MASKED);
    }
    let mut round = 0;
    loop {
        for step in 0..n {
            let i = after(preferred, step, n);
            match try_unmasked(table, i, t, frame.depth) {
                Try::Held => return frame.owned(i, None),
                Try::Refused(window) => return downgrade(frame, table, i, window),
                Try::Busy => {}
            }
        }
        pause(&mut round);
    }
}

/// Locks exactly slot `index` (for sections whose caller chose the CPU, `index = given(cpu)`);
/// `None` if there is no such slot, or if this thread already holds a slot lock (a signal
/// handler): waiting could then deadlock, and the caller reports the CPU as moved.
pub fn lock_slot_exact(index: usize) -> Option<SlotGuard> {
    let table = table();
    if index >= table.len() {
        return None;
    }
    let Some(t) = state() else {
        let signals = SignalsBlocked::new();
        take_waiting(table, index, 1 << 2 | MASKED);
        return Some(SlotGuard {
            index,
            hold: Hold::Stateless,
            signals: Some(signals),
            _thread: PhantomData,
        });
    };
    let frame = Frame::enter(t);
    if let Some(slot) = frame.borrowable(table) {
        // The interrupted frame has taken a slot and not checked yet: waiting for another one
        // while it holds that one could deadlock.
        return (slot == index).then(|| frame.borrow(slot));
    }
    if t.held.get() > 0 {
        return None;
    }
    let mut round = 0;
    if signals_unblocked() {
        t.held.set(t.held.get() + 1);
        compiler_fence(Ordering::SeqCst);
        take_waiting(table, index, token(t) | PROMISED);
        return Some(frame.owned(index, None));
    }
    // With signals blocked, exactly this slot (after a refusal, given back first: see
    // `downgrade`).
    let blocked = |frame: Frame| {
        let signals = SignalsBlocked::new();
        take_waiting(table, index, token(t) | MASKED);
        t.held.set(t.held.get() + 1);
        frame.owned(index, Some(signals))
    };
    if table.len() == 1 {
        return Some(blocked(frame));
    }
    loop {
        match try_unmasked(table, index, t, frame.depth) {
            Try::Held => return Some(frame.owned(index, None)),
            Try::Refused(window) => {
                table[index].store(FREE, Ordering::Release);
                compiler_fence(Ordering::SeqCst);
                t.window.set(window);
                return Some(blocked(frame));
            }
            Try::Busy => pause(&mut round),
        }
    }
}

/// Locks slot `cpu` for a section whose caller chose the CPU (`index = given(cpu)`), if the
/// calling thread runs on `cpu` once it holds the lock; `None` (the section reports `moved`)
/// if it does not, or as [`lock_slot_exact`] says. This is what the same section promises with
/// rseq: it takes effect only while the thread is on the CPU it named. The thread may still
/// migrate after the check, which rseq would have aborted; the slot lock keeps the steps
/// exclusive on that slot all the same, so only locality is lost, never an update.
pub fn lock_slot_on_cpu(cpu: usize) -> Option<SlotGuard> {
    let guard = lock_slot_exact(cpu)?;
    (crate::current_cpu() == cpu).then_some(guard)
}

/// Runs `body` with slot `preferred` (or a free one, when nested) locked, passing the slot's
/// index.
///
/// ```
/// let total = rseq::fallback::with_slot(0, |slot| slot + 1);
/// assert_eq!(total, 1);
/// ```
pub fn with_slot<R>(preferred: usize, body: impl FnOnce(usize) -> R) -> R {
    let guard = lock_slot(preferred);
    body(guard.index())
}

/// Runs `body` with the asynchronous signals blocked on this thread (the synchronous ones,
/// such as `SIGSEGV`, stay deliverable): for a structure's own fallback, a wait that a signal
/// handler must not hold up. Two `pthread_sigmask` calls.
///
/// ```
/// let five = rseq::fallback::with_async_signals_blocked(|| 2 + 3);
/// assert_eq!(five, 5);
/// ```
pub fn with_async_signals_blocked<R>(body: impl FnOnce() -> R) -> R {
    let _blocked = SignalsBlocked::new();
    body()
}

/// Takes and releases every slot lock once: every fallback section that started before the call
/// has finished when it returns.
pub(crate) fn fence_all() {
    for i in 0..slots() {
        fence_slot(i);
    }
}

/// Takes and releases one slot lock: exactly that slot, even when nested (fences are not meant
/// for signal handlers).
pub(crate) fn fence_slot(index: usize) {
    let table = table();
    let index = index % table.len();
    // A handler running a section while this thread held the lock could wait for it forever.
    let _signals = SignalsBlocked::new();
    take_waiting(table, index, 1 << 2 | MASKED);
    table[index].store(FREE, Ordering::Release);
}
