//! Typed errors. Every failure of registration or of a fence is one of these, with a message
//! that says what happened and what the caller can do.

use core::fmt;

/// Why this thread could not use an rseq area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationError {
    /// `ENOSYS`: the kernel has no rseq (Linux < 4.18), or it runs under valgrind or qemu-user,
    /// or a seccomp filter answers `ENOSYS`.
    Unsupported,
    /// `EPERM`: the thread is already registered with a different signature (another rseq
    /// library), or a seccomp filter denied the call.
    SignatureMismatch,
    /// `EINVAL`: the thread already has a *different* area registered (another library, or a
    /// second copy of this one), or the area or length is malformed.
    RegisteredElsewhere,
    /// `EBUSY`: this very area is already registered for the thread.
    AlreadyRegistered,
    /// `EFAULT`: the kernel could not access the area.
    BadAddress,
    /// The kernel asks for a larger or more aligned area than the library's thread-local area
    /// provides.
    AreaTooLarge {
        /// What the kernel reported in `AT_RSEQ_FEATURE_SIZE` (rounded to its alignment).
        needed: usize,
        /// What it reported in `AT_RSEQ_ALIGN`.
        align: usize,
    },
    /// glibc owns registration but reported that this thread's registration failed
    /// (`cpu_id` is −2 in glibc's area).
    GlibcRegistrationFailed,
    /// The thread is past its thread-local destructors' point of unregistering; the library
    /// does not register its area again (the memory may be freed before the thread is gone).
    ThreadExiting,
    /// `RSEQ_DISABLE` is set: rseq is switched off for the process.
    Disabled,
    /// Any other error number from `rseq(2)`.
    Os(i32),
}

impl RegistrationError {
    /// Maps an `errno` from `rseq(2)` registration.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOSYS => Self::Unsupported,
            libc::EPERM => Self::SignatureMismatch,
            libc::EINVAL => Self::RegisteredElsewhere,
            libc::EBUSY => Self::AlreadyRegistered,
            libc::EFAULT => Self::BadAddress,
            other => Self::Os(other),
        }
    }

    /// The `errno` this error came from, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Unsupported => Some(libc::ENOSYS),
            Self::SignatureMismatch => Some(libc::EPERM),
            Self::RegisteredElsewhere => Some(libc::EINVAL),
            Self::AlreadyRegistered => Some(libc::EBUSY),
            Self::BadAddress => Some(libc::EFAULT),
            Self::Os(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str(
                "rseq is not available (ENOSYS): the kernel predates Linux 4.18, or the program runs \
                 under valgrind or qemu-user, or a seccomp filter hides rseq; critical sections use \
                 the lock-based fallback",
            ),
            Self::SignatureMismatch => f.write_str(
                "rseq registration refused (EPERM): another library registered this thread with a \
                 different abort signature, or a seccomp filter denies rseq; let glibc own \
                 registration (do not set glibc.pthread.rseq=0) or remove the other registrant",
            ),
            Self::RegisteredElsewhere => f.write_str(
                "rseq registration refused (EINVAL): this thread already has a different rseq area \
                 registered, by a library that does not publish it through glibc's __rseq_offset",
            ),
            Self::AlreadyRegistered => {
                f.write_str("this rseq area is already registered for this thread (EBUSY)")
            }
            Self::BadAddress => f.write_str("the kernel could not access the rseq area (EFAULT)"),
            Self::AreaTooLarge { needed, align } => write!(
                f,
                "the kernel needs a {needed}-byte rseq area aligned to {align}, more than the \
                 library's thread-local area holds; upgrade the library"
            ),
            Self::GlibcRegistrationFailed => f.write_str(
                "glibc owns rseq registration but failed to register this thread (cpu_id is -2)",
            ),
            Self::ThreadExiting => f.write_str(
                "the thread has run its rseq exit hook; its area is not registered again",
            ),
            Self::Disabled => f.write_str("rseq is disabled by the RSEQ_DISABLE environment variable"),
            Self::Os(e) => write!(f, "rseq registration failed with errno {e}"),
        }
    }
}

impl std::error::Error for RegistrationError {}

/// Why a fence failed (`membarrier(2)`, or `sched_setaffinity(2)` where fences move the thread
/// between CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FenceError {
    /// The kernel has no `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` (Linux < 5.10), or no
    /// membarrier at all.
    Unsupported,
    /// The CPU number is not a possible CPU of this machine.
    InvalidCpu(usize),
    /// Any other error number from `membarrier(2)` or `sched_setaffinity(2)`.
    Os(i32),
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str(
                "membarrier cannot restart rseq critical sections on this kernel (it needs Linux 5.10, and a seccomp filter may deny it); fences would run the fencing thread on every CPU instead, but this thread may not change its affinity either (is sched_setaffinity denied?)",
            ),
            Self::InvalidCpu(cpu) => write!(
                f,
                "cpu {cpu} is not a possible CPU of this machine (see /sys/devices/system/cpu/possible)"
            ),
            Self::Os(e) => write!(
                f,
                "the fence failed with errno {e} (from membarrier, or sched_setaffinity where fences move the thread between CPUs)"
            ),
        }
    }
}

impl std::error::Error for FenceError {}

/// Why a `membarrier(2)` command of [`barrier`](crate::barrier) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BarrierError {
    /// `ENOSYS`: the kernel has no membarrier at all (Linux < 4.3, `CONFIG_MEMBARRIER=n`, or
    /// an emulator), or a seccomp filter answers `ENOSYS`.
    NoMembarrier,
    /// The kernel does not offer this command (`MEMBARRIER_CMD_QUERY` leaves it out, or the
    /// command answers `EINVAL`): an older kernel, an architecture without it, or (for
    /// `GLOBAL`) a `nohz_full` kernel.
    Unsupported(crate::barrier::Command),
    /// `EPERM`: the process has not registered for this expedited command (a seccomp filter
    /// that answers `EPERM` looks the same).
    NotRegistered(crate::barrier::Command),
    /// The CPU number is not a possible CPU of this machine.
    InvalidCpu(usize),
    /// Any other error number (for example the one a seccomp filter chose).
    Os(i32),
}

impl fmt::Display for BarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::barrier::Command;
        match self {
            Self::NoMembarrier => f.write_str(
                "membarrier is not available (ENOSYS): the kernel predates Linux 4.3 or was built without CONFIG_MEMBARRIER, the program runs under an emulator, or a seccomp filter denies it; allow membarrier in the filter, or use a mechanism that needs no system call (barrier::heavy falls back to mprotect on x86)",
            ),
            Self::Unsupported(Command::PrivateExpeditedSyncCore) => f.write_str(
                "membarrier(PRIVATE_EXPEDITED_SYNC_CORE) is not offered by this kernel: it needs Linux 4.16 on an architecture that implements it (x86, arm, arm64, powerpc, recent riscv); elsewhere synchronise the other threads' instruction streams yourself (for example by stopping them)",
            ),
            Self::Unsupported(cmd) => write!(
                f,
                "membarrier({}) is not offered by this kernel: it needs Linux {} or later (and GLOBAL is left out on nohz_full kernels); check barrier::query() and choose another command",
                cmd.name(),
                cmd.since()
            ),
            Self::NotRegistered(cmd) => write!(
                f,
                "membarrier({}) refused (EPERM): the process has not registered for it; call barrier::register first (the barrier functions register lazily), or a seccomp filter answers EPERM",
                cmd.name()
            ),
            Self::InvalidCpu(cpu) => write!(
                f,
                "cpu {cpu} is not a possible CPU of this machine (see /sys/devices/system/cpu/possible)"
            ),
            Self::Os(e) => write!(
                f,
                "membarrier failed with errno {e} (a seccomp filter may have chosen it); allow membarrier, or check the command's arguments"
            ),
        }
    }
}

impl std::error::Error for BarrierError {}

impl From<BarrierError> for FenceError {
    /// The rseq fences report every way the command is missing as `Unsupported`.
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::NoMembarrier | BarrierError::Unsupported(_) => FenceError::Unsupported,
            BarrierError::NotRegistered(_) => FenceError::Os(libc::EPERM),
            BarrierError::InvalidCpu(cpu) => FenceError::InvalidCpu(cpu),
            BarrierError::Os(e) => FenceError::Os(e),
        }
    }
}
