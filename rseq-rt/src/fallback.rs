//! The lock table the fallback runs critical sections under: one cache-padded lock word per
//! possible CPU index, plus a spare.
//!
//! In `Fallback` mode a critical section takes the lock of the slot it works on and runs the
//! same steps in plain Rust (the macro generates that body from the same syntax tree as the
//! asm). Results are the same as with rseq; only the speed differs.
//!
//! Signal handlers may run critical sections. A handler that interrupts its own thread's
//! fallback section cannot wait for the lock its thread holds, nor for any lock whose holder's
//! handler might be waiting in turn: with every slot held by a thread so interrupted, none
//! would ever be released. So the table has one more slot than there are possible CPUs (and
//! every `PerCpu` one more slot than that number), the *spare*, which is only ever held with
//! the asynchronous signals blocked:
//! - a thread that holds no slot (the common case) takes the slot it prefers, with signals
//!   deliverable — a compare-exchange and, at the end, a release store, no signal-mask calls;
//!   if that slot stays held, it yields the CPU once (its holder was most likely preempted on
//!   this CPU), then takes any free CPU slot, and waits for one if all are held;
//! - a thread that already holds one (a handler that interrupted its own thread's section, as a
//!   per-thread count says) blocks the asynchronous signals (two `pthread_sigmask` calls), then
//!   takes any free slot, the spare included, and waits until one is free.
//!
//! Every wait ends. The spare's holders cannot be interrupted and wait for nothing while they
//! hold it, so a nested wait ends when the spare is given back. A CPU slot's holder either runs
//! its section to the end, or is interrupted by a handler whose own section takes a slot
//! through the nested path, whose wait ends, and then resumes; so a wait for a CPU slot ends
//! too. The count is raised before the compare-exchange and lowered after the release, so a
//! handler that interrupts in between takes the nested path: it never waits for the slot its
//! thread may hold. With one possible CPU there are two slots and nothing changes.
//!
//! Synchronous signals (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`) are never
//! blocked, as the kernel would kill the process rather than hold them. Locks held by other
//! threads at `fork` stay held in the child, as for any mutex. Waiting threads spin briefly,
//! then yield the CPU.
//!
//! A program whose signal handlers never run sections can say so with
//! [`assume_no_sections_in_signal_handlers`]: the nested path then leaves the signal mask
//! alone too (it only runs for a section inside [`with_slot`]'s body); a handler that still
//! runs a section and waits in vain for a slot aborts the process with a message after a
//! second, rather than hang.

use crate::percpu::CachePadded;
use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// One word per slot: [`FREE`], or the holding thread's token (the address of its
/// [`ThreadState`]) with the hold's kind in the low two bits.
type LockTable = [CachePadded<AtomicUsize>];

const FREE: usize = 0;
/// Held with the asynchronous signals deliverable: a CPU's slot, by a thread that held none.
const UNMASKED: usize = 1;
/// Held with the asynchronous signals blocked.
const MASKED: usize = 2;
/// Held through the nested path under [`assume_no_sections_in_signal_handlers`]: deliverable.
const PROMISED: usize = 3;
const KIND: usize = 3;

static TABLE: AtomicPtr<Box<LockTable>> = AtomicPtr::new(core::ptr::null_mut());

/// Set by [`assume_no_sections_in_signal_handlers`].
static SIGNALS_UNBLOCKED: AtomicBool = AtomicBool::new(false);

/// Promises that no signal handler of this process runs a critical section (nor a structure
/// built on them, such as the collections or the allocator): from then on a section that
/// finds its thread already holding a slot (inside [`with_slot`]'s body) takes another one
/// without blocking the asynchronous signals. The common path never blocks them anyway, so
/// this saves two `pthread_sigmask` calls on those nested sections only. Nothing changes where
/// sections run on rseq.
///
/// Breaking the promise is caught where it matters: a section in a signal handler that
/// interrupted its own thread's fallback section then holds a slot with signals deliverable,
/// and when another such handler interrupts it, and every other slot is held, none is ever
/// released. After a second without a free slot the process is aborted with a message that
/// names this call, instead of hanging.
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

/// Whether [`assume_no_sections_in_signal_handlers`] was called: nested fallback sections then
/// run with the thread's signal mask untouched.
pub fn signals_unblocked() -> bool {
    SIGNALS_UNBLOCKED.load(Ordering::Relaxed)
}

/// Slot locks held right now with signals deliverable by a thread that held no other (for tests
/// and diagnostics).
pub fn unmasked_holds() -> usize {
    let table = table();
    table
        .iter()
        .filter(|w| w.load(Ordering::Relaxed) & KIND == UNMASKED)
        .count()
}

/// How long a nested section waits for a free slot, signals unblocked under the promise,
/// before it takes the wait for a deadlock.
const BROKEN_PROMISE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// A nested section found no free slot for [`BROKEN_PROMISE_PATIENCE`] while signals were not
/// blocked: the promise of [`assume_no_sections_in_signal_handlers`] was broken.
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
    /// Slot locks this thread holds or is about to take (more than one only through handlers,
    /// or [`with_slot`] bodies).
    held: Cell<usize>,
    /// Slot locks this thread has taken: a per-thread count, so counting costs no shared write.
    sections: Cell<u64>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            held: Cell::new(0),
            sections: Cell::new(0),
        }
    };
}

/// This thread's state. It lives as long as the thread; a section in a destructor after it is
/// gone has no slot bookkeeping, so that case blocks signals for the hold.
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

/// Creates the table for `cpus` CPU slots, plus the spare (once; racing callers agree on one).
pub(crate) fn init(cpus: usize) {
    if TABLE.load(Ordering::Acquire).is_null() {
        let _ = init_with(cpus);
    }
}

/// Creates the table with `cpus` CPU slots and the spare, or fails with the number of CPU slots
/// of the one that exists.
pub(crate) fn init_with(cpus: usize) -> Result<(), usize> {
    let table: Box<LockTable> = (0..cpus.max(1) + 1)
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
        return Err(self::table().len() - 1);
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

/// The number of slot locks: one per possible CPU, plus the spare that only sections nested
/// in their own thread's fallback section take (the length of every [`PerCpu`]).
///
/// [`PerCpu`]: crate::PerCpu
pub fn slots() -> usize {
    table().len()
}

/// Called each time a nested section has taken a slot with signals blocked (tests only: a
/// signal raised there must wait until the slot is given back).
#[cfg(feature = "test-support")]
pub(crate) static NESTED_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

#[inline(always)]
fn nested_hook() {
    #[cfg(feature = "test-support")]
    {
        let hook = NESTED_HOOK.load(Ordering::Relaxed);
        if !hook.is_null() {
            // SAFETY: only `test_support::set_fallback_nested_hook` stores it, from an `fn()`.
            let hook: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
            hook();
        }
    }
}

/// A held slot lock. The critical section's fallback body works on slot [`SlotGuard::index`].
#[must_use = "the slot is unlocked when the guard is dropped"]
pub struct SlotGuard {
    index: usize,
    /// This thread's state, whose count the guard lowers on drop (`None`: a hold without
    /// thread state, in a late thread-local destructor).
    thread: Option<&'static ThreadState>,
    /// The signal mask to restore after the slot is given back (`Some`: the hold blocked the
    /// asynchronous signals). Plain words, not a [`SignalsBlocked`]: with a field that has a
    /// destructor of its own, the guard's drop glue grew too large to inline, and every
    /// section paid a call and a copy of the guard for it.
    signals: Option<MaskWords>,
    /// The count is this thread's: the guard stays on it.
    _thread: PhantomData<*const ()>,
}
/// Asynchronous signals blocked on this thread until it is dropped.
///
/// It keeps the kernel's part of the old mask only: 64 signals on every supported architecture,
/// where the C library's `sigset_t` is 128 bytes. A guard is moved around with the slot guard
/// on every fallback section, and copying 128 bytes each time was a third of a section's cost.
struct SignalsBlocked(MaskWords);

/// The kernel's part of a saved signal mask.
type MaskWords = [libc::c_ulong; MASK_WORDS];

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

    /// The saved mask, for a slot guard to restore with [`restore_mask`].
    fn into_words(self) -> MaskWords {
        let words = self.0;
        core::mem::forget(self);
        words
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        restore_mask(self.0);
    }
}

/// Sets this thread's signal mask to `saved` (a mask that [`SignalsBlocked::new`] saved on this
/// thread).
#[cold]
#[inline(never)]
fn restore_mask(saved: MaskWords) {
    // SAFETY: written into a zeroed `sigset_t` (an array of at least `MASK_WORDS` words), then
    // installed on the calling thread.
    unsafe {
        let mut old: libc::sigset_t = core::mem::zeroed();
        let words = &mut old as *mut libc::sigset_t as *mut libc::c_ulong;
        for (i, word) in saved.iter().enumerate() {
            *words.add(i) = *word;
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}

impl SlotGuard {
    /// The slot this guard locks (may differ from the preferred one inside a signal handler).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for SlotGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the table exists (this guard holds one of its slots), is never freed, and
        // `index` is one of its slots; this thread saw it published when it took the slot.
        unsafe {
            (&*TABLE.load(Ordering::Relaxed))
                .get_unchecked(self.index)
                .store(FREE, Ordering::Release);
        }
        if let Some(t) = self.thread {
            // Unlock first, then stop counting: a signal arriving in between still sees this
            // thread as a holder and takes the nested path instead of waiting on a slot.
            compiler_fence(Ordering::SeqCst);
            t.held.set(t.held.get() - 1);
        }
        compiler_fence(Ordering::SeqCst);
        // Pending signals are delivered here, with the slot given back.
        if let Some(saved) = self.signals {
            restore_mask(saved);
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

/// `preferred` as the index of a CPU's slot (a CPU number is one already).
#[inline(always)]
fn reduce(preferred: usize, cpus: usize) -> usize {
    if preferred < cpus {
        preferred
    } else {
        preferred % cpus
    }
}

/// This thread's token in a lock word.
fn token(t: &'static ThreadState) -> usize {
    t as *const ThreadState as usize
}

/// Takes exactly slot `i` with `word`, waiting until it is free.
fn take_waiting(table: &LockTable, i: usize, word: usize) {
    let mut round = 0;
    while !try_plain(table, i, word) {
        pause(&mut round);
    }
}

/// Takes slot `i` with `word` if it is free.
#[inline(always)]
fn try_plain(table: &LockTable, i: usize, word: usize) -> bool {
    table[i].load(Ordering::Relaxed) == FREE
        && table[i]
            .compare_exchange(FREE, word, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
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

/// Counts a hold this thread is about to take (before its compare-exchange: a handler that
/// interrupts from here on takes the nested path).
#[inline(always)]
fn count_hold(t: &'static ThreadState) {
    t.held.set(t.held.get() + 1);
    compiler_fence(Ordering::SeqCst);
}

/// The first try both entries make for a thread that holds no slot: reduces `preferred` to a
/// CPU slot, counts the hold and tries that slot once. Returns the thread, the slot and whether
/// it was taken; `None` for a nested section or a thread without state (nothing counted).
#[inline(always)]
fn first_try(table: &LockTable, preferred: usize) -> Option<(&'static ThreadState, usize, bool)> {
    let t = state()?;
    if t.held.get() != 0 {
        return None;
    }
    let preferred = reduce(preferred, table.len() - 1);
    count_hold(t);
    let taken = try_plain(table, preferred, token(t) | UNMASKED);
    Some((t, preferred, taken))
}

/// The guard of a hold counted by [`count_hold`] (or of a stateless one).
#[inline(always)]
fn guard(
    index: usize,
    thread: Option<&'static ThreadState>,
    signals: Option<SignalsBlocked>,
) -> SlotGuard {
    let signals = signals.map(SignalsBlocked::into_words);
    if let Some(t) = thread {
        t.sections.set(t.sections.get() + 1);
    }
    SlotGuard {
        index,
        thread,
        signals,
        _thread: PhantomData,
    }
}

/// Locks a slot for a fallback section: the CPU slot `preferred` (reduced modulo the number of
/// CPU slots) once it is free, yielding the CPU once to a holder that does not let go at once
/// (most likely preempted on this CPU), then the first free CPU slot — slots are
/// interchangeable under their locks; when none is free it waits for one. Signals stay
/// deliverable.
///
/// A section nested in its own thread's section (a signal handler that interrupted it, or a
/// [`with_slot`] body) blocks the asynchronous signals instead and takes any free slot, the
/// spare included, never waiting for the one its thread holds (see the module documentation).
// Always inlined, as is the guard's drop: called out of line, the two calls and their register
// saves were a third of a generic section's cost in the fallback.
#[inline(always)]
pub fn lock_slot(preferred: usize) -> SlotGuard {
    let table = table();
    if let Some((t, preferred, taken)) = first_try(table, preferred) {
        // The guard is built here for either outcome: returned from the call, it went through
        // memory on every section.
        let index = if taken {
            preferred
        } else {
            lock_cpu_slot_waiting(table, t, preferred)
        };
        return guard(index, Some(t), None);
    }
    lock_nested(table, reduce(preferred, table.len() - 1))
}

/// Runs `body` on a slot locked as [`lock_slot`] locks one, passing the slot's index, and
/// unlocks it: what a critical section's generic fallback does.
///
/// The common case (the table exists, the thread holds no slot, its preferred slot is free) is
/// inlined into the section and calls nothing; every other case is a call to an out-of-line
/// copy that does nothing afterwards. With [`lock_slot`]'s out-of-line paths inlined into the
/// section instead, the values live across those calls took six saved registers on every
/// section, and their stores delay the compare-exchange, which waits for earlier stores.
#[inline(always)]
pub fn with_locked_slot<R>(preferred: usize, body: impl FnOnce(usize) -> R) -> R {
    let table = TABLE.load(Ordering::Acquire);
    if !table.is_null() {
        // SAFETY: published once, never freed.
        let table: &'static LockTable = unsafe { &*table };
        if let Some((t, preferred, taken)) = first_try(table, preferred) {
            if taken {
                let guard = guard(preferred, Some(t), None);
                return body(guard.index);
            }
            return with_slot_waiting(table, t, preferred, body);
        }
    }
    with_slot_any(preferred, body)
}

/// [`with_locked_slot`] past a failed first try (the hold counted).
#[inline(never)]
fn with_slot_waiting<R>(
    table: &'static LockTable,
    t: &'static ThreadState,
    preferred: usize,
    body: impl FnOnce(usize) -> R,
) -> R {
    let guard = guard(lock_cpu_slot_waiting(table, t, preferred), Some(t), None);
    body(guard.index)
}

/// [`with_locked_slot`] for a nested section, a thread without state or a table not made yet.
#[cold]
#[inline(never)]
fn with_slot_any<R>(preferred: usize, body: impl FnOnce(usize) -> R) -> R {
    let guard = lock_slot(preferred);
    body(guard.index)
}

/// How many times a section that found its slot held re-reads it before yielding the CPU: a
/// holder that runs on another CPU releases within this, one preempted on this CPU does not.
const HOLDER_SPINS: u32 = 64;

/// [`lock_slot`] past its first try, for a thread that holds no other slot (counted already):
/// takes the preferred slot once its holder lets go, else the first free CPU slot from
/// `preferred` on, waiting for one, and returns its index.
///
/// The preferred slot is its CPU's, so a holder that does not release it within a few dozen
/// reads was most likely preempted on this CPU by the caller. Yielding once lets it run to its
/// release. Taking another CPU's slot at once instead (as before) made the two CPUs' threads
/// share one slot, its lock word's cache line moving between them on every section, until the
/// holder was scheduled again: with four threads on two CPUs, the DSL counter add took
/// 18.5–19.5 ns against 13.9–14.2 ns with the yield, the alternative `sched_getcpu` + per-CPU
/// `fetch_add` 7.2 ns (one run each way, alternating).
#[inline(never)]
fn lock_cpu_slot_waiting(table: &LockTable, t: &'static ThreadState, preferred: usize) -> usize {
    let cpus = table.len() - 1;
    let word = token(t) | UNMASKED;
    for _ in 0..HOLDER_SPINS {
        core::hint::spin_loop();
        if try_plain(table, preferred, word) {
            return preferred;
        }
    }
    std::thread::yield_now();
    let mut round = 0;
    loop {
        for step in 0..cpus {
            let i = after(preferred, step, cpus);
            if try_plain(table, i, word) {
                return i;
            }
        }
        pause(&mut round);
    }
}

/// The nested path of [`lock_slot`] (and the one for a thread without state): signals blocked
/// (unless promised), then any free slot from `preferred` on, the spare included, waiting for
/// one.
#[cold]
#[inline(never)]
fn lock_nested(table: &LockTable, preferred: usize) -> SlotGuard {
    let t = state();
    let promised = t.is_some() && signals_unblocked();
    let signals = (!promised).then(SignalsBlocked::new);
    let word = match t {
        Some(t) => {
            count_hold(t);
            token(t) | if promised { PROMISED } else { MASKED }
        }
        None => 1 << 2 | MASKED,
    };
    let n = table.len();
    let mut waiting_since = None;
    let mut round = 0;
    loop {
        for step in 0..n {
            let i = after(preferred, step, n);
            if try_plain(table, i, word) {
                nested_hook();
                return guard(i, t, signals);
            }
        }
        // Under the promise nothing bounds the holders: after a second without a free slot,
        // stop.
        if promised
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

/// Locks exactly the CPU slot `index` (for sections whose caller chose the CPU,
/// `index = given(cpu)`), waiting for it; `None` if there is no such CPU slot. A section
/// nested in its own thread's section tries it once, signals blocked, and gets `None` if it is
/// held: waiting could then deadlock, and the caller reports the CPU as moved.
pub fn lock_slot_exact(index: usize) -> Option<SlotGuard> {
    let table = table();
    if index >= table.len() - 1 {
        return None;
    }
    match state() {
        Some(t) if t.held.get() == 0 => {
            count_hold(t);
            take_waiting(table, index, token(t) | UNMASKED);
            Some(guard(index, Some(t), None))
        }
        Some(t) => {
            let promised = signals_unblocked();
            let signals = (!promised).then(SignalsBlocked::new);
            count_hold(t);
            let word = token(t) | if promised { PROMISED } else { MASKED };
            if try_plain(table, index, word) {
                nested_hook();
                Some(guard(index, Some(t), signals))
            } else {
                compiler_fence(Ordering::SeqCst);
                t.held.set(t.held.get() - 1);
                drop(signals);
                None
            }
        }
        None => {
            // No thread state (a late thread-local destructor): signals blocked, so nothing
            // nests in this hold, and waiting is safe.
            let signals = SignalsBlocked::new();
            take_waiting(table, index, 1 << 2 | MASKED);
            Some(guard(index, None, Some(signals)))
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

/// Runs `body` with slot `preferred` (or another free one) locked, passing the slot's index. A
/// `with_slot` (or a section) inside `body` takes another slot, with signals blocked, as a
/// signal handler's would.
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

/// Takes and releases every slot lock once, the spare's too: every fallback section that started
/// before the call has finished when it returns.
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

/// [`fence_slot`] for the spare.
pub(crate) fn fence_spare() {
    fence_slot(slots() - 1);
}
