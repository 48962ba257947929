//! The lock table the fallback runs critical sections under: one cache-padded lock per possible
//! CPU index.
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
//! `slots − 1` slot locks are held with signals deliverable, process-wide (a counter). A thread
//! that would exceed that holds its lock with the asynchronous signals blocked: two
//! `pthread_sigmask` calls, most of a fallback section's cost when paid. With one thread
//! running sections it never pays it; with one slot (one possible CPU) it always does.
//! Synchronous signals (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`) are never
//! blocked, as the kernel would kill the process rather than hold them. Locks held by other
//! threads at `fork` stay held in the child, as for any mutex.
//!
//! A program whose signal handlers never run sections can say so with
//! [`assume_no_sections_in_signal_handlers`]: its fallback sections then hold the locks
//! without counting or blocking; a handler that still runs a section and waits in vain for a
//! slot (its interrupted thread holds one, the others are held) aborts the process with a
//! message after a second, rather than hang.

use crate::percpu::CachePadded;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

type LockTable = [CachePadded<Mutex<()>>];

static TABLE: AtomicPtr<Box<LockTable>> = AtomicPtr::new(core::ptr::null_mut());

/// Set by [`assume_no_sections_in_signal_handlers`].
static SIGNALS_UNBLOCKED: AtomicBool = AtomicBool::new(false);

/// Slot locks held (or about to be) with asynchronous signals deliverable, all threads
/// together, without the promise: kept below the number of slots (module docs).
static UNMASKED_HOLDS: AtomicUsize = AtomicUsize::new(0);

/// Promises that no signal handler of this process runs a critical section (nor a structure
/// built on them, such as the collections or the allocator): from now on the fallback holds its
/// slot locks without blocking signals, which saves two `pthread_sigmask` calls — most of its
/// cost — per fallback section. Nothing changes where sections run on rseq.
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

/// How a slot lock about to be taken keeps handlers from deadlocking.
enum Signals {
    /// The program promised that no handler runs a section: nothing to do.
    Promised,
    /// Signals stay deliverable: one of the at most `slots − 1` such holds (counted in
    /// [`UNMASKED_HOLDS`], uncounted when the guard drops).
    Counted,
    /// Asynchronous signals blocked until the guard drops (its drop restores the mask).
    Blocked(#[allow(dead_code)] SignalsBlocked),
}

impl Signals {
    /// Before taking a lock of a table with `slots` locks: count a hold with signals
    /// deliverable if fewer than `slots − 1` are, else block the asynchronous signals.
    fn for_hold(slots: usize) -> Signals {
        if signals_unblocked() {
            return Signals::Promised;
        }
        // Every increment is ordered with the others, so the holds it admits stay below the
        // limit; a refused one is taken back (a later caller may block needlessly meanwhile).
        if UNMASKED_HOLDS.fetch_add(1, Ordering::AcqRel) < slots - 1 {
            return Signals::Counted;
        }
        UNMASKED_HOLDS.fetch_sub(1, Ordering::AcqRel);
        Signals::Blocked(SignalsBlocked::new())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Signals::Counted = self {
            UNMASKED_HOLDS.fetch_sub(1, Ordering::AcqRel);
        }
        // `Blocked` restores the mask in its own drop: pending signals are delivered then.
    }
}

/// Slot locks held with signals deliverable right now (for tests and diagnostics).
pub fn unmasked_holds() -> usize {
    UNMASKED_HOLDS.load(Ordering::Relaxed)
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

thread_local! {
    /// Slot locks this thread holds (more than one only through signal handlers).
    static HELD: Cell<u32> = const { Cell::new(0) };
    /// Slot locks this thread has taken: a per-thread count, so counting costs no shared write.
    static FALLBACK_SECTIONS: Cell<u64> = const { Cell::new(0) };
}

/// How many times this thread has taken a slot lock (run a section through the fallback).
pub fn thread_fallback_sections() -> u64 {
    FALLBACK_SECTIONS.with(|n| n.get())
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
        .map(|_| CachePadded::new(Mutex::new(())))
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

/// A held slot lock. The critical section's fallback body works on slot [`SlotGuard::index`].
#[must_use = "the slot is unlocked when the guard is dropped"]
pub struct SlotGuard {
    index: usize,
    guard: Option<MutexGuard<'static, ()>>,
    /// How signals are kept from deadlocking this hold; dropped after unlocking (restoring the
    /// mask, or uncounting the hold).
    signals: Option<Signals>,
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
    fn drop(&mut self) {
        // Unlock first, then stop counting: a signal arriving in between still sees this thread
        // as a holder and picks a free slot instead of waiting on one we hold.
        drop(self.guard.take());
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        // Pending signals are delivered here, with this lock released (or the hold uncounted).
        drop(self.signals.take());
    }
}

fn try_slot(table: &'static LockTable, index: usize) -> Option<SlotGuard> {
    let guard = match table[index].try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    Some(SlotGuard {
        index,
        guard: Some(guard),
        signals: None,
    })
}

/// The first free slot from `preferred` on, if any.
fn any_free_slot(table: &'static LockTable, preferred: usize) -> Option<SlotGuard> {
    (0..table.len()).find_map(|step| try_slot(table, (preferred + step) % table.len()))
}

/// Locks a slot for a fallback section: `preferred` (reduced modulo the number of slots) if it
/// is free, else the first free one — slots are interchangeable under their locks, and taking a
/// free one avoids waiting for a holder that the scheduler preempted on the same CPU. Only when
/// every slot is busy does it wait, for `preferred`. Inside a signal handler that interrupted
/// this thread's own fallback section it never waits for the lock the thread holds.
pub fn lock_slot(preferred: usize) -> SlotGuard {
    FALLBACK_SECTIONS.with(|n| n.set(n.get() + 1));
    let table = table();
    let preferred = preferred % table.len();
    // Decide (and block, when it must) first, then count the hold: a handler that runs before
    // this thread holds anything may wait like any thread; one that runs after sees the
    // nesting and never waits for a lock this thread holds.
    let signals = Signals::for_hold(table.len());
    let promised = matches!(signals, Signals::Promised);
    let nested = HELD.with(|h| {
        h.set(h.get() + 1);
        h.get() > 1
    });
    let mut waiting_since = None;
    loop {
        if let Some(mut guard) = any_free_slot(table, preferred) {
            guard.signals = Some(signals);
            return guard;
        }
        if !nested {
            let guard = table[preferred].lock().unwrap_or_else(|p| p.into_inner());
            return SlotGuard {
                index: preferred,
                guard: Some(guard),
                signals: Some(signals),
            };
        }
        // Nested, every slot busy. At most `slots − 1` holders can be held up by a handler like
        // this one, so some holder finishes and a slot comes free. Under the promise nothing
        // bounds them: after a second without a free slot, stop.
        if promised
            && waiting_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > BROKEN_PROMISE_PATIENCE
        {
            broken_promise();
        }
        std::thread::yield_now();
    }
}

/// Locks exactly slot `index` (for sections whose caller chose the CPU, `index = given(cpu)`);
/// `None` if there is no such slot, or if this thread already holds a slot lock (a signal
/// handler): waiting could then deadlock, and the caller reports the CPU as moved.
pub fn lock_slot_exact(index: usize) -> Option<SlotGuard> {
    let table = table();
    if index >= table.len() || HELD.with(|h| h.get()) > 0 {
        return None;
    }
    FALLBACK_SECTIONS.with(|n| n.set(n.get() + 1));
    let signals = Signals::for_hold(table.len());
    HELD.with(|h| h.set(h.get() + 1));
    let guard = table[index].lock().unwrap_or_else(|p| p.into_inner());
    Some(SlotGuard {
        index,
        guard: Some(guard),
        signals: Some(signals),
    })
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
    // A handler running a section while this thread held the lock could wait for it forever.
    let _signals = SignalsBlocked::new();
    drop(
        table[index % table.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
}
