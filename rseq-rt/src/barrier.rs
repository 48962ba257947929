//! Typed `membarrier(2)`: asymmetric fences, core serialisation and the global barriers.
//!
//! # Asymmetric fences
//!
//! A fast path that runs often and a slow path that runs rarely can split a full fence between
//! them: the fast path pays only [`light`] (a compiler fence: no instruction), the slow path
//! pays [`heavy`] (a system call that interrupts every CPU running a thread of this process).
//!
//! The guarantee is the store-buffering one. Let thread A run `x = 1; light(); r1 = y` and
//! thread B run `y = 1; heavy(); r2 = x` (all relaxed accesses). Then `r1 == 0 && r2 == 0` is
//! impossible. More generally, for every light fence L in any thread T of this process and every
//! heavy fence H, one of the two holds:
//!
//! - L comes before H: every access T made before L is visible to (ordered before) everything
//!   the heavy thread does after H; or
//! - H comes before L: everything the heavy thread did before H is visible to every access T
//!   makes after L.
//!
//! That is, each light fence behaves as a `SeqCst` fence *with respect to heavy fences*; two
//! light fences order nothing between themselves (on x86 the store-buffering outcome above
//! happens with `light` on both sides). The kernel makes it so by interrupting every CPU that
//! runs a thread of the process: the interrupt is a full barrier on that CPU between the
//! thread's instructions before it and after it, and the system call has full barriers around
//! it on the calling CPU. A thread that is not running is already ordered by the context
//! switch. This is outside Rust's memory model (it has no notion of an interrupt): the
//! guarantee is the kernel's, as for every user of membarrier.
//!
//! # What it does not order
//!
//! - **The kernel's own accesses**: memory the kernel writes on its own behalf, for example
//!   io_uring completions written from a kernel thread or in interrupt context, or `vDSO` data.
//!   A heavy fence does not wait for them; use the interface's own protocol (the ring's
//!   acquire load of the tail, release store of the head).
//! - **Devices**: DMA is ordered by the driver's and device's barriers, never by membarrier.
//! - **Other processes**, even on shared memory, unless you use [`global_expedited`] (which
//!   reaches the processes that called [`register_global_expedited`]) or [`global`] (every
//!   process, slowly). [`heavy`] and [`sync_core`] reach only this process's threads.
//!
//! # Why registration
//!
//! The expedited commands interrupt only CPUs that run an address space that registered for
//! them, and registration is what lets the scheduler skip the extra work (and some
//! architectures' extra barrier on switching address spaces) for everyone else. The kernel
//! answers `EPERM` to a private expedited command before registration. A registration belongs
//! to the address space: `exec` clears it, and a child of `fork` gets a copy of its parent's
//! (the kernel copies the whole `mm_struct`; observed on Linux 6.18). This module does not
//! rely on the copy: it keeps the process id that registered, per command, and a process with
//! another id (a forked child) registers again, one redundant and cheap call. Registration
//! happens on first use, or earlier with [`register`].
//!
//! ```
//! use rseq_rt::barrier::{self, Command, HeavyMechanism};
//! use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
//!
//! // The fast side (say, a reader announcing itself) pays a compiler fence only.
//! static ANNOUNCED: AtomicBool = AtomicBool::new(false);
//! ANNOUNCED.store(true, Relaxed);
//! barrier::light();
//!
//! // The slow side pays one system call (or the mprotect fallback, on x86).
//! barrier::heavy().expect("no heavy fence on this system");
//! match barrier::heavy_mechanism() {
//!     Ok(HeavyMechanism::Membarrier) => {
//!         assert!(barrier::query().unwrap().contains(Command::PrivateExpedited))
//!     }
//!     Ok(HeavyMechanism::Mprotect) => println!("membarrier missing: TLB shootdowns"),
//!     Ok(other) => println!("{other:?}"),
//!     Err(e) => println!("{e}"),
//! }
//! ```

use crate::abi;
pub use crate::error::BarrierError;
use crate::sys;
use core::fmt;
use core::sync::atomic::{compiler_fence, fence, AtomicI32, AtomicU8, Ordering};

/// A `membarrier(2)` command (one bit of `enum membarrier_cmd`, `linux/membarrier.h`). The
/// numbers are in [`crate::abi`], with the kernel version that added each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `MEMBARRIER_CMD_GLOBAL` (Linux 4.3): every thread of every process, via RCU.
    Global,
    /// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (Linux 4.16).
    GlobalExpedited,
    /// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (Linux 4.16).
    RegisterGlobalExpedited,
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (Linux 4.14).
    PrivateExpedited,
    /// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` (Linux 4.14).
    RegisterPrivateExpedited,
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE` (Linux 4.16, some architectures).
    PrivateExpeditedSyncCore,
    /// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE` (Linux 4.16).
    RegisterPrivateExpeditedSyncCore,
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` (Linux 5.10).
    PrivateExpeditedRseq,
    /// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ` (Linux 5.10).
    RegisterPrivateExpeditedRseq,
    /// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3).
    GetRegistrations,
}

impl Command {
    /// Every command, in bit order.
    pub const ALL: [Command; 10] = [
        Command::Global,
        Command::GlobalExpedited,
        Command::RegisterGlobalExpedited,
        Command::PrivateExpedited,
        Command::RegisterPrivateExpedited,
        Command::PrivateExpeditedSyncCore,
        Command::RegisterPrivateExpeditedSyncCore,
        Command::PrivateExpeditedRseq,
        Command::RegisterPrivateExpeditedRseq,
        Command::GetRegistrations,
    ];

    /// The command's number (its bit).
    pub const fn bits(self) -> u32 {
        (match self {
            Command::Global => abi::MEMBARRIER_CMD_GLOBAL,
            Command::GlobalExpedited => abi::MEMBARRIER_CMD_GLOBAL_EXPEDITED,
            Command::RegisterGlobalExpedited => abi::MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            Command::PrivateExpedited => abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED,
            Command::RegisterPrivateExpedited => abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            Command::PrivateExpeditedSyncCore => abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
            Command::RegisterPrivateExpeditedSyncCore => {
                abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
            }
            Command::PrivateExpeditedRseq => abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
            Command::RegisterPrivateExpeditedRseq => {
                abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ
            }
            Command::GetRegistrations => abi::MEMBARRIER_CMD_GET_REGISTRATIONS,
        }) as u32
    }

    /// The kernel's name without the `MEMBARRIER_CMD_` prefix.
    pub const fn name(self) -> &'static str {
        match self {
            Command::Global => "GLOBAL",
            Command::GlobalExpedited => "GLOBAL_EXPEDITED",
            Command::RegisterGlobalExpedited => "REGISTER_GLOBAL_EXPEDITED",
            Command::PrivateExpedited => "PRIVATE_EXPEDITED",
            Command::RegisterPrivateExpedited => "REGISTER_PRIVATE_EXPEDITED",
            Command::PrivateExpeditedSyncCore => "PRIVATE_EXPEDITED_SYNC_CORE",
            Command::RegisterPrivateExpeditedSyncCore => "REGISTER_PRIVATE_EXPEDITED_SYNC_CORE",
            Command::PrivateExpeditedRseq => "PRIVATE_EXPEDITED_RSEQ",
            Command::RegisterPrivateExpeditedRseq => "REGISTER_PRIVATE_EXPEDITED_RSEQ",
            Command::GetRegistrations => "GET_REGISTRATIONS",
        }
    }

    /// The first kernel version that has the command (`"4.16"`).
    pub const fn since(self) -> &'static str {
        match self {
            Command::Global => "4.3",
            Command::PrivateExpedited | Command::RegisterPrivateExpedited => "4.14",
            Command::GlobalExpedited
            | Command::RegisterGlobalExpedited
            | Command::PrivateExpeditedSyncCore
            | Command::RegisterPrivateExpeditedSyncCore => "4.16",
            Command::PrivateExpeditedRseq | Command::RegisterPrivateExpeditedRseq => "5.10",
            Command::GetRegistrations => "6.3",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Command`]s, as `MEMBARRIER_CMD_QUERY` and `MEMBARRIER_CMD_GET_REGISTRATIONS`
/// answer. Bits the library does not know are kept (see [`Commands::bits`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Commands(u32);

impl Commands {
    /// The empty set.
    pub const fn empty() -> Commands {
        Commands(0)
    }

    /// The set with these bits, known or not.
    pub const fn from_bits_retain(bits: u32) -> Commands {
        Commands(bits)
    }

    /// The bits, including any the library does not know.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether `command` is in the set.
    pub const fn contains(self, command: Command) -> bool {
        self.0 & command.bits() != 0
    }

    /// This set with `command` added.
    pub const fn with(self, command: Command) -> Commands {
        Commands(self.0 | command.bits())
    }

    /// The known commands in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Command> {
        Command::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl From<Command> for Commands {
    fn from(command: Command) -> Commands {
        Commands(command.bits())
    }
}

impl FromIterator<Command> for Commands {
    fn from_iter<I: IntoIterator<Item = Command>>(iter: I) -> Commands {
        iter.into_iter().fold(Commands::empty(), Commands::with)
    }
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = Command::ALL.iter().fold(0, |bits, c| bits | c.bits());
        let mut set = f.debug_set();
        set.entries(self.iter());
        if self.0 & !known != 0 {
            set.entry(&format_args!("{:#x}", self.0 & !known));
        }
        set.finish()
    }
}

/// The expedited commands a process registers for before using them (or, for `Global`, before
/// other processes' `GLOBAL_EXPEDITED` reaches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expedited {
    /// `REGISTER_GLOBAL_EXPEDITED`: this process is reached by `GLOBAL_EXPEDITED` from any
    /// process (issuing `GLOBAL_EXPEDITED` needs no registration).
    Global,
    /// `REGISTER_PRIVATE_EXPEDITED`, for [`heavy`].
    Private,
    /// `REGISTER_PRIVATE_EXPEDITED_SYNC_CORE`, for [`sync_core`].
    PrivateSyncCore,
    /// `REGISTER_PRIVATE_EXPEDITED_RSEQ`, for the rseq fences ([`fence_all`](crate::fence_all)).
    PrivateRseq,
}

impl Expedited {
    /// The command that registers.
    pub const fn register_command(self) -> Command {
        match self {
            Expedited::Global => Command::RegisterGlobalExpedited,
            Expedited::Private => Command::RegisterPrivateExpedited,
            Expedited::PrivateSyncCore => Command::RegisterPrivateExpeditedSyncCore,
            Expedited::PrivateRseq => Command::RegisterPrivateExpeditedRseq,
        }
    }

    /// The command the registration is for.
    pub const fn command(self) -> Command {
        match self {
            Expedited::Global => Command::GlobalExpedited,
            Expedited::Private => Command::PrivateExpedited,
            Expedited::PrivateSyncCore => Command::PrivateExpeditedSyncCore,
            Expedited::PrivateRseq => Command::PrivateExpeditedRseq,
        }
    }
}

/// Per [`Expedited`], the process id that registered for it (0: none). Another pid (a forked
/// child) registers again rather than rely on the kernel copying the registration.
static REGISTERED_PID: [AtomicI32; 4] = [
    AtomicI32::new(0),
    AtomicI32::new(0),
    AtomicI32::new(0),
    AtomicI32::new(0),
];

/// Issues `command` (on one CPU with `MEMBARRIER_CMD_FLAG_CPU`), typing the kernel's answer.
fn call(command: Command, cpu: Option<usize>) -> Result<u32, BarrierError> {
    let (flags, cpu_arg) = match cpu {
        Some(cpu) => (
            abi::MEMBARRIER_CMD_FLAG_CPU,
            libc::c_int::try_from(cpu).map_err(|_| BarrierError::InvalidCpu(cpu))?,
        ),
        None => (0, 0),
    };
    sys::membarrier(command.bits() as libc::c_int, flags, cpu_arg)
        .map(|r| r as u32)
        .map_err(|e| match e {
            libc::ENOSYS => BarrierError::NoMembarrier,
            libc::EPERM => BarrierError::NotRegistered(command),
            libc::EINVAL => match cpu {
                Some(cpu) => BarrierError::InvalidCpu(cpu),
                None => BarrierError::Unsupported(command),
            },
            e => BarrierError::Os(e),
        })
}

/// The commands this kernel supports (`MEMBARRIER_CMD_QUERY`).
///
/// `ENOSYS` (no membarrier, or a seccomp filter saying so) is
/// [`BarrierError::NoMembarrier`]; any other errno a filter chooses is `Os(errno)`.
///
/// ```
/// use rseq_rt::barrier::{self, Command};
/// let supported = barrier::query().expect("membarrier");
/// println!("{supported:?}");
/// // Every kernel with membarrier has the slow global barrier (unless nohz_full).
/// let _ = supported.contains(Command::Global);
/// ```
pub fn query() -> Result<Commands, BarrierError> {
    match sys::membarrier(abi::MEMBARRIER_CMD_QUERY, 0, 0) {
        Ok(bits) => Ok(Commands(bits as u32)),
        Err(libc::ENOSYS) => Err(BarrierError::NoMembarrier),
        Err(e) => Err(BarrierError::Os(e)),
    }
}

/// The expedited commands this process has registered for, as the kernel records them
/// (`MEMBARRIER_CMD_GET_REGISTRATIONS`, Linux 6.3; `Unsupported` before).
///
/// ```
/// use rseq_rt::barrier::{self, Command, Expedited};
/// barrier::register(Expedited::Private).expect("membarrier");
/// if let Ok(registered) = barrier::registrations() {
///     assert!(registered.contains(Command::RegisterPrivateExpedited));
/// }
/// ```
pub fn registrations() -> Result<Commands, BarrierError> {
    call(Command::GetRegistrations, None).map(Commands)
}

/// Registers this process for `expedited` unless it did already (checked per process id, so a
/// forked child registers again). Fails with `Unsupported` when the kernel does not offer the
/// command. The barrier functions call it on first use; call it earlier to take the cost (a
/// registration may wait for an RCU grace period) at a time of your choosing.
///
/// ```
/// use rseq_rt::barrier::{self, Expedited};
/// barrier::register(Expedited::Private).expect("Linux 4.14");
/// barrier::register(Expedited::Private).expect("the second call does nothing");
/// ```
pub fn register(expedited: Expedited) -> Result<(), BarrierError> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let registered = &REGISTERED_PID[expedited as usize];
    if registered.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    let supported = query()?;
    for command in [expedited.command(), expedited.register_command()] {
        if !supported.contains(command) {
            return Err(BarrierError::Unsupported(command));
        }
    }
    call(expedited.register_command(), None)?;
    registered.store(pid, Ordering::Release);
    Ok(())
}

/// Issues an expedited private command after registering for it.
pub(crate) fn private_expedited(
    expedited: Expedited,
    cpu: Option<usize>,
) -> Result<(), BarrierError> {
    register(expedited)?;
    call(expedited.command(), cpu).map(drop)
}

/// The light side of an asymmetric fence: a compiler fence, no instruction. It orders this
/// thread's accesses against every [`heavy`] fence (see the module documentation); against
/// other light fences it orders nothing.
///
/// ```
/// rseq_rt::barrier::light();
/// ```
#[inline(always)]
pub fn light() {
    compiler_fence(Ordering::SeqCst);
}

/// How [`heavy`] interrupts the other threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeavyMechanism {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14), registered first.
    Membarrier,
    /// Where membarrier is missing or denied, on x86 only: changing the protection of a private
    /// page this process has touched (read-write, write to it, read-only) makes the kernel shoot
    /// the stale translation out of every CPU that runs this address space, by an
    /// inter-processor interrupt that each such CPU must acknowledge. The interrupt is a full
    /// barrier on that CPU, as membarrier's is (x86 is TSO: the acknowledgement, a store, is
    /// visible only after the thread's earlier stores, and the return from the interrupt is
    /// serialising). The `membarrier` crate and Folly's `asymmetricHeavyBarrier` rely on the
    /// same effect.
    ///
    /// It is a property of the kernel's implementation, not an ABI promise: a kernel that
    /// flushes remote TLBs without interrupting the CPUs (AMD's broadcast `INVLPGB`, which a
    /// kernel may use where the processor has it; arm64's `TLBI` broadcasts, which is why the
    /// mechanism is not offered there) gives no such barrier. Prefer membarrier; this exists
    /// for seccomp sandboxes and kernels before 4.14.
    ///
    /// Shootdowns are serialised by a lock (the page must not turn read-only between another
    /// call's `mprotect` and its write). As with any lock, a child forked while another thread
    /// held it waits forever in its first shootdown: programs that fork from a multi-threaded
    /// process should fence with membarrier.
    Mprotect,
}

/// The chosen mechanism (0: not chosen; 1: membarrier; 2: mprotect).
static HEAVY: AtomicU8 = AtomicU8::new(0);

fn heavy_code(mechanism: HeavyMechanism) -> u8 {
    match mechanism {
        HeavyMechanism::Membarrier => 1,
        HeavyMechanism::Mprotect => 2,
    }
}

/// Prepares `mechanism` (registers, or maps the page) without choosing it.
fn prepare(mechanism: HeavyMechanism) -> Result<(), BarrierError> {
    match mechanism {
        HeavyMechanism::Membarrier => register(Expedited::Private),
        HeavyMechanism::Mprotect => tlb::prepare(),
    }
}

/// The mechanism [`heavy`] uses, choosing it on the first call: membarrier where the kernel
/// offers `PRIVATE_EXPEDITED` and registration succeeds, else (x86) the mprotect shootdown.
/// Where neither works, the membarrier error (nothing is chosen, the next call tries again):
/// no weaker fence is substituted, because a `SeqCst` fence on the heavy side orders nothing
/// against a light side that is only a compiler fence.
///
/// ```
/// use rseq_rt::barrier::{self, HeavyMechanism};
/// println!("heavy fences use {:?}", barrier::heavy_mechanism());
/// ```
pub fn heavy_mechanism() -> Result<HeavyMechanism, BarrierError> {
    match HEAVY.load(Ordering::Acquire) {
        1 => return Ok(HeavyMechanism::Membarrier),
        2 => return Ok(HeavyMechanism::Mprotect),
        _ => {}
    }
    let chosen = match prepare(HeavyMechanism::Membarrier) {
        Ok(()) => HeavyMechanism::Membarrier,
        // Where the shootdown fails too (not x86, or mprotect denied), the membarrier error
        // says what to fix first.
        Err(membarrier) => match prepare(HeavyMechanism::Mprotect) {
            Ok(()) => HeavyMechanism::Mprotect,
            Err(_) => return Err(membarrier),
        },
    };
    // Racing first callers may choose differently (a registration failing transiently); both
    // mechanisms are correct, the first stays.
    Ok(
        match HEAVY.compare_exchange(0, heavy_code(chosen), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => chosen,
            Err(1) => HeavyMechanism::Membarrier,
            Err(_) => HeavyMechanism::Mprotect,
        },
    )
}

/// Makes [`heavy`] use `mechanism` from now on, after preparing it (the error if it cannot
/// work here: `Unsupported` for `Mprotect` off x86). For tests of the fallback, and for
/// programs that know membarrier is slow or unwelcome on their systems. Either mechanism is
/// correct, so switching while other threads fence is safe.
///
/// ```
/// use rseq_rt::barrier::{self, HeavyMechanism};
/// if barrier::set_heavy_mechanism(HeavyMechanism::Membarrier).is_ok() {
///     assert_eq!(barrier::heavy_mechanism(), Ok(HeavyMechanism::Membarrier));
/// }
/// ```
pub fn set_heavy_mechanism(mechanism: HeavyMechanism) -> Result<(), BarrierError> {
    prepare(mechanism)?;
    HEAVY.store(heavy_code(mechanism), Ordering::Release);
    Ok(())
}

/// The heavy side of an asymmetric fence: when it returns, every thread of this process that
/// was running has passed a full barrier, pairing with their [`light`] fences (see the module
/// documentation for the guarantee). Costs a system call and an interrupt of each CPU that runs
/// a thread of the process (microseconds); the light side costs nothing.
///
/// Reaches this process only; for memory shared with other processes use
/// [`global_expedited`]. The mechanism is [`heavy_mechanism`]'s; after a `fork` the child
/// registers again on its first call.
///
/// ```
/// rseq_rt::barrier::heavy().expect("membarrier, or mprotect on x86");
/// ```
pub fn heavy() -> Result<(), BarrierError> {
    let mechanism = heavy_mechanism()?;
    fence(Ordering::SeqCst);
    let result = match mechanism {
        HeavyMechanism::Membarrier => private_expedited(Expedited::Private, None),
        HeavyMechanism::Mprotect => tlb::shootdown(),
    };
    fence(Ordering::SeqCst);
    result
}

/// Interrupts every CPU that runs a thread of this process and makes it execute a
/// core-serialising instruction before it returns to user space
/// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE`, registered on first use): after code has been
/// modified, no other thread of the process keeps executing instructions fetched before the
/// modification. It is also a [`heavy`] fence.
///
/// What the caller must still do, per architecture:
///
/// - **x86, x86_64**: the return from the interrupt (`IRET`, or a serialising instruction the
///   kernel adds) is serialising, so the other cores fetch the new code. The modifying thread
///   itself must serialise its own instruction stream before running the new code (x86 keeps
///   its own cores' instruction fetch coherent with stores; a jump to the new code after the
///   stores suffices on current processors, a `CPUID` or `SERIALIZE` is the documented way).
/// - **arm64**: instruction fetch is not coherent with stores. Before calling, the writer must
///   clean the data cache to the point of unification (`DC CVAU`) and invalidate the
///   instruction cache (`IC IVAU`) for the modified range, each followed by `DSB ISH` (what the
///   compilers' `__builtin___clear_cache` does); this call then gives every other core the
///   context synchronisation (`ISB`-equivalent exception return) that discards instructions
///   it fetched earlier. The writer runs `ISB` itself before executing the code.
/// - **arm (32-bit)**: as arm64; the cache maintenance is the `cacheflush` system call.
/// - **powerpc**: the writer runs `dcbst`, `sync`, `icbi`, `sync`, `isync` over the range; this
///   call gives the other cores the `isync` (context synchronisation on return from the
///   interrupt).
/// - **riscv**: recent kernels implement the command (check [`query`]); each interrupted hart
///   executes `fence.i` before it returns to user space, which makes its instruction fetch see
///   the stores. The writer makes its own fetch see them (`fence.i`, or the
///   `riscv_flush_icache` system call, which also covers a writer that migrates).
/// - **s390x**: Debian's 6.12 kernel reports the command and accepts it (the system test's
///   guests, both registration modes); the other CPUs are serialised when they return from
///   the interrupt. What the writing CPU itself needs is not covered here: see the
///   z/Architecture rules for stores into the instruction stream.
/// - **elsewhere** (kernels before 4.16, and architectures whose kernel does not select
///   `ARCH_HAS_MEMBARRIER_SYNC_CORE`): [`query`] does not report the command, and this returns
///   [`BarrierError::Unsupported`]. Check [`query`] rather than the architecture.
///
/// ```
/// use rseq_rt::barrier::{self, BarrierError, Command};
/// match barrier::sync_core() {
///     Ok(()) => {}
///     Err(BarrierError::Unsupported(Command::PrivateExpeditedSyncCore)) => {
///         println!("stop the other threads instead")
///     }
///     Err(e) => panic!("{e}"),
/// }
/// ```
pub fn sync_core() -> Result<(), BarrierError> {
    private_expedited(Expedited::PrivateSyncCore, None)
}

/// `MEMBARRIER_CMD_GLOBAL`: when it returns, every thread of every process on the machine has
/// passed a full barrier (it waits for an RCU grace period: milliseconds, and it blocks; the
/// kernel leaves it out on `nohz_full` kernels). Needs no registration; reaches processes that
/// never heard of membarrier. Use it rarely.
///
/// ```
/// use rseq_rt::barrier::{self, Command};
/// if barrier::query().is_ok_and(|s| s.contains(Command::Global)) {
///     barrier::global().expect("offered");
/// }
/// ```
pub fn global() -> Result<(), BarrierError> {
    call(Command::Global, None).map(drop)
}

/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: a [`heavy`] fence for memory shared between processes.
/// It interrupts the CPUs that run a thread of any process that registered with
/// [`register_global_expedited`] (this one included if it did): a process that did not register
/// is **not** ordered. Issuing it needs no registration.
///
/// ```
/// use rseq_rt::barrier;
/// // Each process that runs the light side on the shared memory registers once:
/// barrier::register_global_expedited().expect("Linux 4.16");
/// // The process on the slow path fences all of them:
/// barrier::global_expedited().expect("Linux 4.16");
/// ```
pub fn global_expedited() -> Result<(), BarrierError> {
    fence(Ordering::SeqCst);
    let result = call(Command::GlobalExpedited, None).map(drop);
    fence(Ordering::SeqCst);
    result
}

/// Registers this process to be reached by other processes' [`global_expedited`] (once per
/// process id: a forked child registers again). Same as
/// [`register(Expedited::Global)`](register).
pub fn register_global_expedited() -> Result<(), BarrierError> {
    register(Expedited::Global)
}

/// The mprotect shootdown (see [`HeavyMechanism::Mprotect`]).
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod tlb {
    use crate::error::BarrierError;
    use core::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Mutex;

    /// The page whose protection is changed: private, anonymous, mapped once and never unmapped
    /// (a forked child has its own copy at the same address).
    static PAGE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
    /// Serialises shootdowns: between making the page writable and read-only again, no other
    /// call may make it read-only (the write would fault).
    static LOCK: Mutex<()> = Mutex::new(());

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn page() -> Result<*mut u8, BarrierError> {
        let page = PAGE.load(Ordering::Acquire);
        if !page.is_null() {
            return Ok(page);
        }
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let new = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                page_size(),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if new == libc::MAP_FAILED {
            return Err(BarrierError::Os(errno()));
        }
        match PAGE.compare_exchange(
            core::ptr::null_mut(),
            new.cast(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(new.cast()),
            Err(winner) => {
                // SAFETY: `new` is our own mapping, never published.
                unsafe { libc::munmap(new, page_size()) };
                Ok(winner)
            }
        }
    }

    fn protect(page: *mut u8, prot: libc::c_int) -> Result<(), BarrierError> {
        // SAFETY: `page` is the module's own mapping, which nothing else uses.
        if unsafe { libc::mprotect(page.cast(), page_size(), prot) } == 0 {
            Ok(())
        } else {
            Err(BarrierError::Os(errno()))
        }
    }

    /// Maps the page and runs one shootdown, so that a denied `mprotect` shows now.
    pub(super) fn prepare() -> Result<(), BarrierError> {
        shootdown()
    }

    pub(super) fn shootdown() -> Result<(), BarrierError> {
        let page = page()?;
        let _serialised = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        protect(page, libc::PROT_READ | libc::PROT_WRITE)?;
        // Makes the translation present and dirty, so that taking write access away must
        // invalidate it on every CPU that may cache it.
        // SAFETY: the page is mapped read-write, and only this function, under the lock,
        // accesses it.
        unsafe { page.write_volatile(1) };
        protect(page, libc::PROT_READ)
    }
}

/// Off x86 a TLB shootdown need not interrupt the other CPUs (arm64 broadcasts `TLBI`), so the
/// mechanism is not offered.
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
mod tlb {
    use super::Command;
    use crate::error::BarrierError;

    pub(super) fn prepare() -> Result<(), BarrierError> {
        Err(BarrierError::Unsupported(Command::PrivateExpedited))
    }

    pub(super) fn shootdown() -> Result<(), BarrierError> {
        prepare()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bits_are_the_uapi_numbers() {
        let bits: Vec<u32> = Command::ALL.iter().map(|c| c.bits()).collect();
        assert_eq!(bits, (0..10).map(|i| 1u32 << i).collect::<Vec<_>>());
        assert_eq!(Command::PrivateExpedited.bits(), 8);
        assert_eq!(Command::PrivateExpeditedSyncCore.bits(), 0x20);
        assert_eq!(Command::RegisterPrivateExpeditedRseq.bits(), 0x100);
    }

    #[test]
    fn command_sets_keep_unknown_bits() {
        let set = Commands::from_bits_retain(0x3ff | 0x1000);
        assert_eq!(set.iter().count(), 10);
        assert!(set.contains(Command::GetRegistrations));
        assert_eq!(set.bits() & 0x1000, 0x1000);
        assert_eq!(
            format!(
                "{:?}",
                Commands::from(Command::Global).with(Command::PrivateExpedited)
            ),
            "{Global, PrivateExpedited}"
        );
        let collected: Commands = [Command::Global, Command::GlobalExpedited]
            .into_iter()
            .collect();
        assert_eq!(collected.bits(), 3);
    }

    #[test]
    fn registrations_pair_with_their_commands() {
        for e in [
            Expedited::Global,
            Expedited::Private,
            Expedited::PrivateSyncCore,
            Expedited::PrivateRseq,
        ] {
            // Each register command is the bit after its command.
            assert_eq!(e.register_command().bits(), e.command().bits() << 1);
        }
    }

    #[test]
    fn query_agrees_with_registration() {
        let supported = query().expect("membarrier on the test machine");
        match register(Expedited::Private) {
            Ok(()) => assert!(supported.contains(Command::PrivateExpedited)),
            Err(e) => assert_eq!(e, BarrierError::Unsupported(Command::PrivateExpedited)),
        }
    }

    #[test]
    fn errors_name_the_command_and_the_fix() {
        let e = BarrierError::NotRegistered(Command::PrivateExpedited);
        assert!(e.to_string().contains("PRIVATE_EXPEDITED"));
        assert!(e.to_string().contains("register"));
        let e = BarrierError::Unsupported(Command::GlobalExpedited);
        assert!(e.to_string().contains("4.16"));
        assert!(BarrierError::NoMembarrier.to_string().contains("seccomp"));
    }
}
