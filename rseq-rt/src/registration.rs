//! Per-thread registration and the process-wide mode.
//!
//! # Where a thread's area lives, and for how long
//!
//! Every thread has a *current area pointer* (a thread-local, read by generated critical
//! sections and by [`current_cpu`](crate::current_cpu)). It starts at a shared sentinel area
//! whose `cpu_id` is −1, which no index limit admits, so a thread that never attached runs no
//! critical section unprotected: its first section aborts into [`after_abort`], which attaches
//! the thread and retries.
//!
//! | who registers | the area | lifetime | what the library does at thread exit |
//! |---|---|---|---|
//! | glibc ≥ 2.35 (`__rseq_size != 0`) | glibc's, at thread pointer + `__rseq_offset` | glibc's thread descriptor | nothing: never registers, unregisters or writes it beyond `rseq_cs` |
//! | the library (musl, old glibc, `glibc.pthread.rseq=0`) | a 256-byte, 256-aligned `thread_local!` | the thread's TLS block | unregisters it from a thread-local destructor |
//!
//! Own areas are unregistered at thread exit in every case, not only when the TLS block is
//! dynamic (a `dlopen`ed library, whose block may be freed before the thread is gone): the
//! library cannot tell cheaply which case it is in, and one `rseq(UNREGISTER)` per exiting thread
//! costs little. A critical section that runs after that hook (from a later thread-local
//! destructor) does not register the TLS area again: it registers a fresh area on its own
//! stack for the duration of the call and unregisters it before returning
//! ([`with_temporary_registration`]), so the kernel never writes into memory that may be gone
//! and the section still runs protected.
//!
//! A `dlopen`ed copy of the library must not be `dlclose`d while threads it registered are still
//! running: their areas would be unmapped while the kernel still writes into them. Unload it
//! only after those threads have exited (their exit hooks unregister the areas).
//!
//! # The mode
//!
//! Decided once per process, on first use: `Rseq` when glibc registered (or the library could
//! register the deciding thread) *and* fences can restart sections (membarrier's RSEQ command,
//! or, without it, by moving the fencing thread to every CPU); `Fallback` otherwise,
//! or when `RSEQ_DISABLE` is set. The mode is published as an *index limit* that every
//! critical section checks its CPU index against: the number of possible CPUs in `Rseq` mode,
//! 0 in `Fallback` mode, so the fast path pays nothing for the check.
//!
//! If, later, one thread cannot register (another library took its rseq slot, a seccomp
//! filter applied to that thread only, glibc failed for that thread), the process is demoted to
//! `Fallback`: the limit drops to 0, a fence aborts every section in flight, and only
//! then does the mode say `Fallback`, so no rseq section commits while lock-based ones run.
//!
//! # fork and exec
//!
//! The kernel keeps the forking thread's registration in the child, at the same address; the
//! child's copy of the thread-local state says the same thing, so nothing needs fixing. The
//! membarrier registration belongs to the address space, which the child does not share: fences
//! re-register when they notice the process id changed. `execve` drops everything, and the new
//! program starts from scratch.

use crate::abi::{self, RseqArea};
use crate::error::{FenceError, RegistrationError};
use crate::sys::{self, KernelFeatures};
use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicUsize, Ordering};

/// The environment variable that forces [`Mode::Fallback`]: any value but empty or `0`.
pub const DISABLE_ENV: &str = "RSEQ_DISABLE";

/// Bytes of the library's own thread-local area (and its alignment). Kernels of 2026 need 33
/// bytes aligned to 64; this leaves room for growth. A kernel that asks for more gets
/// [`RegistrationError::AreaTooLarge`] and the process runs in `Fallback` mode.
pub const OWN_AREA_CAPACITY: usize = 256;

/// An rseq area the library can register: the 32-byte UAPI head, then room for the fields newer
/// kernels add. `cpu_id` starts at −1.
#[repr(C, align(256))]
pub(crate) struct OwnArea(UnsafeCell<OwnAreaBytes>);

#[repr(C)]
struct OwnAreaBytes {
    head: RseqArea,
    tail: [u8; OWN_AREA_CAPACITY - abi::ORIG_RSEQ_SIZE],
}

impl OwnArea {
    const fn new() -> Self {
        OwnArea(UnsafeCell::new(OwnAreaBytes {
            head: RseqArea::UNREGISTERED,
            tail: [0; OWN_AREA_CAPACITY - abi::ORIG_RSEQ_SIZE],
        }))
    }

    fn as_area(&self) -> *mut RseqArea {
        self.0.get().cast()
    }
}

/// The area every thread points at until it attaches. Nothing registers it; critical sections
/// store their descriptor address into its `rseq_cs` (harmless: nobody reads it) and then see
/// `cpu_id == −1`, which fails the index check.
struct Sentinel(UnsafeCell<RseqArea>);
// SAFETY: Rust code only reads `cpu_id`/`mm_cid`/`node_id`, which nothing ever writes; the only
// writes are aligned word stores of `rseq_cs` from critical sections, never read.
unsafe impl Sync for Sentinel {}
static SENTINEL: Sentinel = Sentinel(UnsafeCell::new(RseqArea {
    // Out of range for both indexes a section can use.
    mm_cid: abi::CPU_ID_UNINITIALIZED,
    ..RseqArea::UNREGISTERED
}));

fn sentinel() -> *mut RseqArea {
    SENTINEL.0.get()
}

/// Whether `area` (an [`area_ptr`] of this thread) is a live, kernel-updated area rather than
/// the sentinel.
pub(crate) fn area_is_live(area: *mut RseqArea) -> bool {
    area != sentinel()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    /// Never attached: the area pointer is the sentinel.
    Unattached,
    /// The area pointer is a live, kernel-updated area (glibc's or ours).
    Attached,
    /// Tried, and no area is usable by this thread (the error says why).
    NoArea(RegistrationError),
    /// The exit hook unregistered our own area.
    Exited,
}

struct ThreadRseq {
    area: Cell<*mut RseqArea>,
    state: Cell<ThreadState>,
    /// Whether the attached area is the library's own (so the exit hook unregisters it).
    own: Cell<bool>,
}

thread_local! {
    static THREAD: ThreadRseq = const {
        ThreadRseq {
            area: Cell::new(SENTINEL.0.get()),
            state: Cell::new(ThreadState::Unattached),
            own: Cell::new(false),
        }
    };
    static OWN_AREA: OwnArea = const { OwnArea::new() };
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

/// Unregisters the library's own area when the thread's thread-local destructors run.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        THREAD.with(|t| {
            if t.state.get() == ThreadState::Attached && t.own.get() {
                let area = t.area.get();
                t.area.set(sentinel());
                t.own.set(false);
                t.state.set(ThreadState::Exited);
                // SAFETY: the same area, length and signature it was registered with.
                match unsafe {
                    sys::rseq(
                        area,
                        registration_len(),
                        abi::RSEQ_FLAG_UNREGISTER,
                        sys::SIGNATURE,
                    )
                } {
                    Ok(()) => STATS.unregistrations.fetch_add(1, Ordering::Relaxed),
                    Err(_) => STATS
                        .unregistration_failures
                        .fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
}

/// Who registered the rseq areas of this process's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// glibc ≥ 2.35 registers every thread; the library uses its area.
    Glibc,
    /// The library registers its own thread-local area, lazily, per thread.
    Library,
}

/// Why the process runs critical sections through the lock-based fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// `RSEQ_DISABLE` is set.
    Disabled,
    /// Registering the first thread failed (`ENOSYS` under valgrind, qemu-user, old kernels…).
    Registration(RegistrationError),
    /// Critical sections could not be fenced: the kernel lacks membarrier's RSEQ command (Linux
    /// < 5.10, or a seccomp filter denies it) *and* the thread cannot move itself between CPUs
    /// (`sched_setaffinity` denied), the two ways a fence restarts sections (see
    /// [`FenceMechanism`](crate::FenceMechanism)). The error is membarrier's.
    Membarrier(FenceError),
    /// The process ran in `Rseq` mode until a thread could not register.
    Demoted(RegistrationError),
}

/// How critical sections run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the kernel's restartable sequences.
    Rseq(Owner),
    /// Under per-slot locks, with the same results.
    Fallback(FallbackReason),
}

impl Mode {
    /// Whether critical sections run on rseq.
    pub fn is_rseq(&self) -> bool {
        matches!(self, Mode::Rseq(_))
    }
}

/// The kernel's rseq features as the library uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `AT_RSEQ_FEATURE_SIZE` (20 on kernels before 6.3).
    pub feature_size: usize,
    /// `AT_RSEQ_ALIGN` (32 on kernels before 6.3).
    pub align: usize,
    /// The length the library registers its own areas with.
    pub registration_len: usize,
    /// Whether the kernel fills `node_id` (feature size ≥ 24).
    pub node_id: bool,
    /// Whether the kernel fills `mm_cid` (feature size ≥ 28).
    pub mm_cid: bool,
    /// Whether the area has `slice_ctrl`, time-slice extension's field (feature size ≥ 32,
    /// Linux 7.0). Whether the kernel offers the extension to a thread's registration is
    /// [`slice::available`](crate::slice::available).
    pub slice_ctrl: bool,
}

/// Counters of what the runtime did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Own areas registered (one per thread that used rseq in `Library` mode).
    pub registrations: u64,
    /// Own areas unregistered at thread exit.
    pub unregistrations: u64,
    /// Unregistrations the kernel refused (should stay 0).
    pub unregistration_failures: u64,
    /// Stack areas registered for sections that ran after the thread's exit hook.
    pub temporary_registrations: u64,
    /// Critical-section aborts seen by attached threads (preemption, migration, signals, fences).
    pub aborts: u64,
    /// Times the process went from `Rseq` to `Fallback`.
    pub demotions: u64,
}

struct AtomicStats {
    registrations: AtomicUsize,
    unregistrations: AtomicUsize,
    unregistration_failures: AtomicUsize,
    temporary_registrations: AtomicUsize,
    aborts: AtomicUsize,
    demotions: AtomicUsize,
}

static STATS: AtomicStats = AtomicStats {
    registrations: AtomicUsize::new(0),
    unregistrations: AtomicUsize::new(0),
    unregistration_failures: AtomicUsize::new(0),
    temporary_registrations: AtomicUsize::new(0),
    aborts: AtomicUsize::new(0),
    demotions: AtomicUsize::new(0),
};

/// A snapshot of the runtime's counters.
pub fn stats() -> Stats {
    Stats {
        registrations: STATS.registrations.load(Ordering::Relaxed) as u64,
        unregistrations: STATS.unregistrations.load(Ordering::Relaxed) as u64,
        unregistration_failures: STATS.unregistration_failures.load(Ordering::Relaxed) as u64,
        temporary_registrations: STATS.temporary_registrations.load(Ordering::Relaxed) as u64,
        aborts: STATS.aborts.load(Ordering::Relaxed) as u64,
        demotions: STATS.demotions.load(Ordering::Relaxed) as u64,
    }
}

/// Critical sections abort unless their CPU index is below this. The number of possible CPUs in
/// `Rseq` mode; 0 in `Fallback` mode (and while undecided or demoting).
pub static INDEX_LIMIT: AtomicU32 = AtomicU32::new(0);

/// Like [`INDEX_LIMIT`], for sections indexed by `mm_cid`: 0 also where the kernel does not
/// fill `mm_cid` (feature size < 28), so those sections use the fallback rather than share slot 0.
pub static MM_CID_LIMIT: AtomicU32 = AtomicU32::new(0);

/// The decided mode, packed (0 = undecided); see `encode_mode`.
static MODE: AtomicU32 = AtomicU32::new(0);
static DEMOTING: AtomicBool = AtomicBool::new(false);
static GLIBC_OFFSET: AtomicIsize = AtomicIsize::new(0);
static GLIBC_REGISTERED: AtomicBool = AtomicBool::new(false);
static FEATURE_SIZE: AtomicUsize = AtomicUsize::new(0);
static FEATURE_ALIGN: AtomicUsize = AtomicUsize::new(0);
/// Read by `current_mm_cid` on its fast path.
pub(crate) static MM_CID_AVAILABLE: AtomicBool = AtomicBool::new(false);
pub(crate) static NODE_ID_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// The current thread's area pointer: a live kernel-updated area once attached, else the
/// sentinel (whose `cpu_id` is −1). One thread-local load.
#[inline(always)]
pub fn area_ptr() -> *mut RseqArea {
    THREAD.with(|t| t.area.get())
}

fn registration_len() -> u32 {
    features().registration_len as u32
}

/// The kernel's rseq features (read once from the auxiliary vector).
pub fn features() -> Features {
    let mut size = FEATURE_SIZE.load(Ordering::Relaxed);
    let mut align = FEATURE_ALIGN.load(Ordering::Relaxed);
    if size == 0 {
        let k = KernelFeatures::read();
        FEATURE_ALIGN.store(k.align, Ordering::Relaxed);
        FEATURE_SIZE.store(k.feature_size, Ordering::Relaxed);
        MM_CID_AVAILABLE.store(
            k.feature_size >= abi::FEATURE_SIZE_MM_CID,
            Ordering::Relaxed,
        );
        NODE_ID_AVAILABLE.store(
            k.feature_size >= abi::FEATURE_SIZE_NODE_ID,
            Ordering::Relaxed,
        );
        (size, align) = (k.feature_size, k.align);
    }
    let k = KernelFeatures {
        feature_size: size,
        align,
    };
    Features {
        feature_size: size,
        align,
        registration_len: k.registration_len(),
        node_id: size >= abi::FEATURE_SIZE_NODE_ID,
        mm_cid: size >= abi::FEATURE_SIZE_MM_CID,
        slice_ctrl: size >= abi::FEATURE_SIZE_SLICE_CTRL,
    }
}

/// Whether `RSEQ_DISABLE` asks for the fallback.
fn disabled_by_env() -> bool {
    std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The process's mode; decides it on first use (see the module documentation).
///
/// Call it (or [`register_current_thread`]) early in `main` if critical sections may first run
/// inside a signal handler: the decision reads the environment and looks up glibc's symbols,
/// which are not async-signal-safe.
///
/// ```
/// match rseq::mode() {
///     rseq::Mode::Rseq(owner) => println!("rseq, registered by {owner:?}"),
///     rseq::Mode::Fallback(why) => println!("fallback: {why:?}"),
/// }
/// ```
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        0 => decide(),
        packed => decode_mode(packed),
    }
}

/// The mode if it has been decided already, without deciding it (deciding reads the
/// environment and allocates; a global allocator built on critical sections calls this to know
/// whether it may use them yet).
pub fn mode_if_decided() -> Option<Mode> {
    match MODE.load(Ordering::Acquire) {
        0 => None,
        packed => Some(decode_mode(packed)),
    }
}

/// Whether critical sections run on rseq now: `false` before the mode is decided, in `Fallback`
/// mode, and from the start of a demotion. One relaxed load (of the index limit the sections
/// check), for structures that switch to another algorithm when sections would take the
/// fallback's locks.
///
/// ```
/// if rseq::mode().is_rseq() {
///     assert!(rseq::sections_run_on_rseq());
/// }
/// ```
#[inline]
pub fn sections_run_on_rseq() -> bool {
    INDEX_LIMIT.load(Ordering::Relaxed) != 0
}

/// Whether the process is in `Fallback` mode for good (decided, not `Rseq`): one load. For the
/// generated code of a section with a named fallback, which then skips the cold path's
/// bookkeeping and calls it at once.
#[doc(hidden)]
#[inline]
pub fn fallback_decided() -> bool {
    let bits = MODE.load(Ordering::Acquire);
    bits != 0 && !matches!(bits & 0xf, TAG_RSEQ_GLIBC | TAG_RSEQ_LIBRARY)
}

/// Who registered this process's areas, or `None` in `Fallback` mode.
pub fn owner() -> Option<Owner> {
    match mode() {
        Mode::Rseq(owner) => Some(owner),
        Mode::Fallback(_) => None,
    }
}

#[cold]
fn decide() -> Mode {
    let features = features();
    let possible = sys::possible_cpus();
    crate::fallback::init(possible);
    let glibc = sys::glibc_rseq().filter(|g| g.size != 0);
    if let Some(g) = glibc {
        GLIBC_OFFSET.store(g.offset, Ordering::Relaxed);
        GLIBC_REGISTERED.store(true, Ordering::Release);
    }
    let decided = if disabled_by_env() {
        Mode::Fallback(FallbackReason::Disabled)
    } else if glibc.is_some() {
        match crate::membarrier::choose() {
            Ok(_) => Mode::Rseq(Owner::Glibc),
            Err(e) => Mode::Fallback(FallbackReason::Membarrier(e)),
        }
    } else {
        // A nested decision on this thread (an allocation inside this one, served by an
        // allocator built on sections) may have registered our area already: that is success.
        let registered = THREAD.with(|t| match register_own_area(t, features) {
            Err(RegistrationError::AlreadyRegistered)
                if t.own.get() && t.state.get() == ThreadState::Attached =>
            {
                Ok(())
            }
            other => other,
        });
        match registered {
            Err(e) => Mode::Fallback(FallbackReason::Registration(e)),
            Ok(()) => match crate::membarrier::choose() {
                Ok(_) => Mode::Rseq(Owner::Library),
                Err(e) => Mode::Fallback(FallbackReason::Membarrier(e)),
            },
        }
    };
    match MODE.compare_exchange(0, encode_mode(decided), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if decided.is_rseq() {
                if features.mm_cid {
                    MM_CID_LIMIT.store(possible as u32, Ordering::SeqCst);
                }
                INDEX_LIMIT.store(possible as u32, Ordering::SeqCst);
            }
            decided
        }
        Err(packed) => decode_mode(packed),
    }
}

/// Registers the library's own thread-local area for the calling thread.
fn register_own_area(t: &ThreadRseq, features: Features) -> Result<(), RegistrationError> {
    if features.registration_len > OWN_AREA_CAPACITY || features.align > OWN_AREA_CAPACITY {
        return Err(RegistrationError::AreaTooLarge {
            needed: features.registration_len,
            align: features.align,
        });
    }
    // The exit hook must be armed before the kernel may write into TLS. If its slot is already
    // destroyed, the thread is past the point of unregistering: do not register.
    if EXIT_HOOK.try_with(|_| ()).is_err() {
        t.state.set(ThreadState::Exited);
        return Err(RegistrationError::ThreadExiting);
    }
    let area = OWN_AREA.with(|a| a.as_area());
    // SAFETY: the area is this thread's TLS, valid until the thread is gone; the exit hook
    // unregisters it before thread-local storage is torn down.
    unsafe { sys::rseq(area, features.registration_len as u32, 0, sys::SIGNATURE) }
        .map_err(RegistrationError::from_errno)?;
    STATS.registrations.fetch_add(1, Ordering::Relaxed);
    t.area.set(area);
    t.own.set(true);
    t.state.set(ThreadState::Attached);
    Ok(())
}

/// Makes the calling thread's critical sections run on rseq: attaches glibc's area, or
/// registers the library's own. Sections do this by themselves on their first abort; call it
/// to get the error, or to pay the cost up front.
///
/// Returns who owns the registration. In `Fallback` mode it returns the error that put the
/// process there (or [`RegistrationError::Disabled`]). A thread that cannot register while the
/// process is in `Rseq` mode demotes the process to `Fallback` (see the module documentation)
/// and gets the error.
///
/// ```
/// match rseq::register_current_thread() {
///     Ok(owner) => println!("registered ({owner:?})"),
///     Err(e) => println!("critical sections will use the fallback: {e}"),
/// }
/// ```
pub fn register_current_thread() -> Result<Owner, RegistrationError> {
    let mode = mode();
    THREAD.with(|t| {
        attach(t, mode)?;
        match mode {
            Mode::Rseq(owner) => Ok(owner),
            Mode::Fallback(reason) => Err(reason_error(reason)),
        }
    })
}

fn reason_error(reason: FallbackReason) -> RegistrationError {
    match reason {
        FallbackReason::Disabled => RegistrationError::Disabled,
        FallbackReason::Registration(e) | FallbackReason::Demoted(e) => e,
        FallbackReason::Membarrier(_) => RegistrationError::Unsupported,
    }
}

/// Points the thread at a live area if it can have one. In `Fallback` mode that is glibc's area
/// when glibc registered (for the accessors; sections still abort on the zero limit); the
/// library never registers its own area in `Fallback` mode.
fn attach(t: &ThreadRseq, mode: Mode) -> Result<(), RegistrationError> {
    match t.state.get() {
        ThreadState::Attached => return Ok(()),
        ThreadState::Exited => return Err(RegistrationError::ThreadExiting),
        ThreadState::NoArea(e) => return Err(e),
        ThreadState::Unattached => {}
    }
    let result = if GLIBC_REGISTERED.load(Ordering::Acquire) {
        let offset = GLIBC_OFFSET.load(Ordering::Relaxed);
        let area = sys::thread_pointer()
            .wrapping_offset(offset)
            .cast::<RseqArea>();
        // SAFETY: glibc's area of this thread, live for the thread's lifetime; read only.
        let cpu = unsafe { core::ptr::read_volatile(&raw const (*area).cpu_id) };
        if cpu == abi::CPU_ID_REGISTRATION_FAILED || cpu == abi::CPU_ID_UNINITIALIZED {
            Err(RegistrationError::GlibcRegistrationFailed)
        } else {
            t.area.set(area);
            t.own.set(false);
            t.state.set(ThreadState::Attached);
            Ok(())
        }
    } else if mode == Mode::Rseq(Owner::Library) {
        register_own_area(t, features())
    } else {
        Err(match mode {
            Mode::Fallback(reason) => reason_error(reason),
            Mode::Rseq(_) => RegistrationError::Unsupported,
        })
    };
    if let Err(e) = result {
        if t.state.get() == ThreadState::Unattached {
            t.state.set(ThreadState::NoArea(e));
        }
        if mode.is_rseq() && e != RegistrationError::ThreadExiting {
            demote(e);
        }
    }
    result
}

/// Attaches for the accessors (no error reporting); true when the area pointer is now live.
#[cold]
pub(crate) fn attach_for_accessors() -> bool {
    let mode = mode();
    THREAD.with(|t| attach(t, mode).is_ok())
}

/// Moves the process from `Rseq` to `Fallback`: zero limit, fence, then publish.
#[cold]
fn demote(error: RegistrationError) {
    if !mode().is_rseq() {
        return;
    }
    if DEMOTING.swap(true, Ordering::AcqRel) {
        while mode().is_rseq() {
            std::thread::yield_now();
        }
        return;
    }
    INDEX_LIMIT.store(0, Ordering::SeqCst);
    MM_CID_LIMIT.store(0, Ordering::SeqCst);
    // Every section that read the old limit is now either committed or restarted at its abort
    // handler, where it will see the zero limit and the new mode.
    let _ = crate::membarrier::rseq_fence_all();
    MODE.store(
        encode_mode(Mode::Fallback(FallbackReason::Demoted(error))),
        Ordering::Release,
    );
    STATS.demotions.fetch_add(1, Ordering::Relaxed);
}

/// What a critical section's wrapper does after its asm block left through the abort exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortAction {
    /// The kernel (or a fence) aborted the section: run it again on rseq.
    Retry,
    /// The thread just attached its area (its first section): run it again on rseq.
    Attached,
    /// Run the section's fallback body under the slot lock.
    Fallback,
    /// The thread is past its exit hook: run the section under
    /// [`with_temporary_registration`].
    TemporaryRegistration,
}

/// Called by generated code each time a section aborts (`index_is_mm_cid` for sections indexed
/// by `mm_cid`): attaches the thread on its first section, counts real aborts, and says how to
/// go on. Never blocks for long: while a demotion
/// is in flight it yields.
#[inline]
pub fn after_abort(index_is_mm_cid: bool) -> AbortAction {
    // In `Fallback` mode every section comes here first: one load says so.
    if fallback_decided() {
        return AbortAction::Fallback;
    }
    after_abort_slow(index_is_mm_cid)
}

#[cold]
fn after_abort_slow(index_is_mm_cid: bool) -> AbortAction {
    let before = THREAD.with(|t| t.state.get());
    // The first use decides the mode, which may register this very thread.
    let mode = mode();
    if !mode.is_rseq() {
        return AbortAction::Fallback;
    }
    THREAD.with(|t| match t.state.get() {
        // Kernels before 6.3 fill no mm_cid: such sections always take the fallback (every
        // section on the same data is indexed the same way, so they exclude each other).
        _ if index_is_mm_cid && !MM_CID_AVAILABLE.load(Ordering::Relaxed) => AbortAction::Fallback,
        ThreadState::Attached if before == ThreadState::Unattached => AbortAction::Attached,
        ThreadState::Attached => {
            if INDEX_LIMIT.load(Ordering::Relaxed) == 0 {
                // Demotion (or the first decision) is being published: wait for it.
                std::thread::yield_now();
            } else {
                STATS.aborts.fetch_add(1, Ordering::Relaxed);
            }
            AbortAction::Retry
        }
        ThreadState::Exited => AbortAction::TemporaryRegistration,
        ThreadState::Unattached => match attach(t, mode) {
            Ok(()) => AbortAction::Attached,
            Err(RegistrationError::ThreadExiting) => AbortAction::TemporaryRegistration,
            // attach demoted the process
            Err(_) => AbortAction::Fallback,
        },
        ThreadState::NoArea(e) => {
            demote(e);
            AbortAction::Fallback
        }
    })
}

/// Runs `attempt` until it returns `Some`, with a fresh area registered on this stack frame for
/// the duration, for a thread whose exit hook already unregistered its thread-local area.
/// Returns `None` when the process is (or becomes) `Fallback`: the caller then runs its fallback
/// body.
///
/// `attempt` is one try of a critical section: `Some` when it committed or failed, `None` when
/// it aborted.
#[cold]
#[inline(never)]
pub fn with_temporary_registration<R>(mut attempt: impl FnMut() -> Option<R>) -> Option<R> {
    let stack_area = OwnArea::new();
    let area = stack_area.as_area();
    let len = registration_len();
    // SAFETY: `stack_area` outlives the registration: it is unregistered below, before this
    // frame returns, on every path.
    if let Err(errno) = unsafe { sys::rseq(area, len, 0, sys::SIGNATURE) } {
        demote(RegistrationError::from_errno(errno));
        return None;
    }
    STATS
        .temporary_registrations
        .fetch_add(1, Ordering::Relaxed);
    let previous = THREAD.with(|t| t.area.replace(area));
    let outcome = loop {
        if !mode().is_rseq() {
            break None;
        }
        if let Some(r) = attempt() {
            break Some(r);
        }
        if INDEX_LIMIT.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
    };
    THREAD.with(|t| t.area.set(previous));
    // SAFETY: the registration made above.
    let _ = unsafe { sys::rseq(area, len, abi::RSEQ_FLAG_UNREGISTER, sys::SIGNATURE) };
    outcome
}

// Mode packing into one u32 (every target has 32-bit atomics): bits 0..4 the variant, 4..8 the
// error kind, 8..12 log2 of an alignment, 12..32 a payload (an errno, a size or a CPU number).
const TAG_RSEQ_GLIBC: u32 = 1;
const TAG_RSEQ_LIBRARY: u32 = 2;
const TAG_DISABLED: u32 = 3;
const TAG_REGISTRATION: u32 = 4;
const TAG_MEMBARRIER: u32 = 5;
const TAG_DEMOTED: u32 = 6;
const PAYLOAD_MAX: u32 = (1 << 20) - 1;

fn pack(tag: u32, kind: u32, log2_align: u32, payload: u32) -> u32 {
    tag | (kind << 4) | ((log2_align & 0xf) << 8) | (payload.min(PAYLOAD_MAX) << 12)
}

fn encode_registration_error(tag: u32, e: RegistrationError) -> u32 {
    let (kind, log2_align, payload) = match e {
        RegistrationError::Unsupported => (1, 0, 0),
        RegistrationError::SignatureMismatch => (2, 0, 0),
        RegistrationError::RegisteredElsewhere => (3, 0, 0),
        RegistrationError::AlreadyRegistered => (4, 0, 0),
        RegistrationError::BadAddress => (5, 0, 0),
        RegistrationError::AreaTooLarge { needed, align } => {
            (6, align.max(1).trailing_zeros(), needed as u32)
        }
        RegistrationError::GlibcRegistrationFailed => (7, 0, 0),
        RegistrationError::ThreadExiting => (8, 0, 0),
        RegistrationError::Disabled => (9, 0, 0),
        RegistrationError::Os(errno) => (10, 0, errno as u32),
    };
    pack(tag, kind, log2_align, payload)
}

fn decode_registration_error(bits: u32) -> RegistrationError {
    let payload = bits >> 12;
    match (bits >> 4) & 0xf {
        1 => RegistrationError::Unsupported,
        2 => RegistrationError::SignatureMismatch,
        3 => RegistrationError::RegisteredElsewhere,
        4 => RegistrationError::AlreadyRegistered,
        5 => RegistrationError::BadAddress,
        6 => RegistrationError::AreaTooLarge {
            needed: payload as usize,
            align: 1usize << ((bits >> 8) & 0xf),
        },
        7 => RegistrationError::GlibcRegistrationFailed,
        8 => RegistrationError::ThreadExiting,
        9 => RegistrationError::Disabled,
        _ => RegistrationError::Os(payload as i32),
    }
}

fn encode_mode(mode: Mode) -> u32 {
    match mode {
        Mode::Rseq(Owner::Glibc) => TAG_RSEQ_GLIBC,
        Mode::Rseq(Owner::Library) => TAG_RSEQ_LIBRARY,
        Mode::Fallback(FallbackReason::Disabled) => TAG_DISABLED,
        Mode::Fallback(FallbackReason::Registration(e)) => {
            encode_registration_error(TAG_REGISTRATION, e)
        }
        Mode::Fallback(FallbackReason::Demoted(e)) => encode_registration_error(TAG_DEMOTED, e),
        Mode::Fallback(FallbackReason::Membarrier(e)) => match e {
            FenceError::Unsupported => pack(TAG_MEMBARRIER, 1, 0, 0),
            FenceError::InvalidCpu(cpu) => pack(TAG_MEMBARRIER, 2, 0, cpu as u32),
            FenceError::Os(errno) => pack(TAG_MEMBARRIER, 3, 0, errno as u32),
        },
    }
}

fn decode_mode(bits: u32) -> Mode {
    let payload = bits >> 12;
    match bits & 0xf {
        TAG_RSEQ_GLIBC => Mode::Rseq(Owner::Glibc),
        TAG_RSEQ_LIBRARY => Mode::Rseq(Owner::Library),
        TAG_DISABLED => Mode::Fallback(FallbackReason::Disabled),
        TAG_REGISTRATION => Mode::Fallback(FallbackReason::Registration(
            decode_registration_error(bits),
        )),
        TAG_DEMOTED => Mode::Fallback(FallbackReason::Demoted(decode_registration_error(bits))),
        _ => Mode::Fallback(FallbackReason::Membarrier(match (bits >> 4) & 0xf {
            1 => FenceError::Unsupported,
            2 => FenceError::InvalidCpu(payload as usize),
            _ => FenceError::Os(payload as i32),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_survives_packing() {
        let errors = [
            RegistrationError::Unsupported,
            RegistrationError::SignatureMismatch,
            RegistrationError::RegisteredElsewhere,
            RegistrationError::AlreadyRegistered,
            RegistrationError::BadAddress,
            RegistrationError::AreaTooLarge {
                needed: 320,
                align: 128,
            },
            RegistrationError::GlibcRegistrationFailed,
            RegistrationError::ThreadExiting,
            RegistrationError::Disabled,
            RegistrationError::Os(libc::EACCES),
        ];
        let mut modes = vec![
            Mode::Rseq(Owner::Glibc),
            Mode::Rseq(Owner::Library),
            Mode::Fallback(FallbackReason::Disabled),
            Mode::Fallback(FallbackReason::Membarrier(FenceError::Unsupported)),
            Mode::Fallback(FallbackReason::Membarrier(FenceError::InvalidCpu(7))),
            Mode::Fallback(FallbackReason::Membarrier(FenceError::Os(libc::EPERM))),
        ];
        for e in errors {
            modes.push(Mode::Fallback(FallbackReason::Registration(e)));
            modes.push(Mode::Fallback(FallbackReason::Demoted(e)));
        }
        for m in modes {
            let packed = encode_mode(m);
            assert_ne!(packed, 0, "{m:?} must not look undecided");
            assert_eq!(decode_mode(packed), m);
        }
    }

    #[test]
    fn own_area_is_big_and_aligned_enough() {
        assert_eq!(core::mem::size_of::<OwnArea>(), OWN_AREA_CAPACITY);
        assert_eq!(core::mem::align_of::<OwnArea>(), OWN_AREA_CAPACITY);
        let a = OwnArea::new();
        // SAFETY: a fresh, unregistered local.
        assert_eq!(unsafe { (*a.as_area()).cpu_id }, abi::CPU_ID_UNINITIALIZED);
    }
}

/// Test support: run sections' generated instructions where the kernel has no rseq.
#[cfg(feature = "unprotected-test-mode")]
pub mod testing {
    use super::*;

    /// Runs `f` with this thread's critical sections executing their instructions on a fake,
    /// *unregistered* area whose `cpu_id` and `mm_cid` are `cpu`, with the index limits opened.
    /// Nothing is protected by the kernel: only for single-threaded tests of the generated code
    /// on emulators without rseq (qemu-user). Other threads must not run sections meanwhile.
    pub fn run_unprotected<R>(cpu: u32, f: impl FnOnce() -> R) -> R {
        // Callers are serialized: each opens the global limits and restores them, which is only
        // right if no other caller changes them meanwhile.
        static CALLERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = CALLERS.lock().unwrap_or_else(|p| p.into_inner());
        // Decide the mode first, so the limits saved below are the decided ones.
        let _ = mode();

        /// Puts the thread's area and the limits back, also when `f` panics.
        struct Restore {
            area: *mut RseqArea,
            limits: (u32, u32),
        }
        impl Drop for Restore {
            fn drop(&mut self) {
                THREAD.with(|t| t.area.set(self.area));
                INDEX_LIMIT.store(self.limits.0, Ordering::SeqCst);
                MM_CID_LIMIT.store(self.limits.1, Ordering::SeqCst);
            }
        }

        let fake = OwnArea::new();
        // SAFETY: a local, unregistered area: the kernel never writes it; we own it.
        unsafe {
            let area = fake.as_area();
            (*area).cpu_id = cpu;
            (*area).cpu_id_start = cpu;
            (*area).mm_cid = cpu;
        }
        let limits = (
            INDEX_LIMIT.load(Ordering::SeqCst),
            MM_CID_LIMIT.load(Ordering::SeqCst),
        );
        let open = sys::possible_cpus() as u32;
        INDEX_LIMIT.store(open, Ordering::SeqCst);
        MM_CID_LIMIT.store(open, Ordering::SeqCst);
        let previous = THREAD.with(|t| t.area.replace(fake.as_area()));
        let _restore = Restore {
            area: previous,
            limits,
        };
        f()
    }
}
