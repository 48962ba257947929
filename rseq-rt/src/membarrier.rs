//! Fences that restart critical sections on other CPUs — `membarrier(2)` with the RSEQ
//! commands where the kernel has them, else by running the fencing thread on every CPU — or, in
//! `Fallback` mode, wait for them under the slot locks.
//!
//! # Why running on a CPU fences it
//!
//! Kernels 4.18–5.9 have rseq but not `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` (and a seccomp
//! filter may deny membarrier anywhere). A fence only needs every critical section that runs
//! when it starts to commit or restart before it returns. The kernel restarts a section whose
//! thread is preempted (or migrated, which needs a preemption first) before it commits. So the
//! fencing thread asks to run on each CPU in turn (`sched_setaffinity` to that CPU alone: the
//! kernel moves it there before the call returns). For it to run there, whatever ran on that
//! CPU was switched out: a section of ours running there has committed, or will restart when
//! its thread runs again. A section that was not running (its thread preempted earlier) will
//! restart already. The context switch also orders memory as the membarrier's IPI does: the
//! runqueue locks give every store before the fence to whatever runs on that CPU after it.
//!
//! CPUs the fencing thread may not run on (outside the process's cpuset, or offline; the
//! kernel answers `EINVAL`) run no thread of the process, so they run none of its sections
//! and are skipped. The thread's own affinity is restored afterwards. Costs: one migration per
//! CPU (tens of microseconds each), so a fence of all CPUs on a large machine takes
//! milliseconds; and a CPU kept busy by a higher-priority real-time thread delays the fence
//! until that thread lets the CPU go.

use crate::barrier::{self, Expedited};
use crate::error::FenceError;
use crate::registration::{mode, Mode};
use crate::sys::{self, CpuMask};
use core::sync::atomic::{AtomicU8, Ordering};

/// How fences make the critical sections running on other CPUs commit or restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceMechanism {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)` (Linux ≥ 5.10): the kernel
    /// interrupts every CPU that runs a thread of the process and restarts its section.
    Membarrier,
    /// The fencing thread runs on each CPU in turn (`sched_setaffinity`), which preempts
    /// whatever ran there, and a preempted section restarts: for kernels that have rseq but
    /// not the membarrier command (4.18–5.9), or where a seccomp filter denies membarrier.
    /// Slower per fence (one migration per CPU), the same guarantee.
    Migration,
    /// `Fallback` mode: sections run under the slot locks, and a fence takes each lock once.
    SlotLocks,
}

/// The mechanism chosen with the mode (0: not chosen; 1: membarrier; 2: migration).
static MECHANISM: AtomicU8 = AtomicU8::new(0);

/// How [`fence_all`] and [`fence_cpu`] work in this process (decides the mode if it is not
/// decided yet).
///
/// ```
/// use rseq::FenceMechanism;
/// match rseq::fence_mechanism() {
///     FenceMechanism::Membarrier => println!("membarrier(PRIVATE_EXPEDITED_RSEQ)"),
///     FenceMechanism::Migration => println!("running on every CPU in turn"),
///     FenceMechanism::SlotLocks => assert!(!rseq::mode().is_rseq()),
/// }
/// ```
pub fn fence_mechanism() -> FenceMechanism {
    match mode() {
        Mode::Fallback(_) => FenceMechanism::SlotLocks,
        Mode::Rseq(_) => match MECHANISM.load(Ordering::Acquire) {
            1 => FenceMechanism::Membarrier,
            _ => FenceMechanism::Migration,
        },
    }
}

/// Chooses the mechanism for `Rseq` mode (called once, by the mode decision): membarrier if the
/// kernel has the RSEQ command, else migration if this thread may set its own affinity; the
/// membarrier's error when neither works.
pub(crate) fn choose() -> Result<FenceMechanism, FenceError> {
    let chosen = match ensure_registered() {
        Ok(()) => FenceMechanism::Membarrier,
        Err(membarrier) => {
            if !migration_works() {
                return Err(membarrier);
            }
            FenceMechanism::Migration
        }
    };
    let code = match chosen {
        FenceMechanism::Membarrier => 1,
        _ => 2,
    };
    // Racing deciders agree: the first choice stays (the mode's own compare-exchange picks one
    // decision; both would have chosen alike).
    let _ = MECHANISM.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    Ok(chosen)
}

/// Whether the calling thread can read and set its own affinity (a seccomp filter may deny it).
fn migration_works() -> bool {
    sys::thread_affinity().is_ok_and(|mask| sys::set_thread_affinity(&mask).is_ok())
}

/// Runs the calling thread on `cpu` (all possible CPUs if `None`) in turn, then restores its
/// affinity: see the module documentation for why that fences.
fn migration_fence(cpu: Option<usize>) -> Result<(), FenceError> {
    let original = sys::thread_affinity().map_err(FenceError::Os)?;
    let words = original.0.len();
    let targets = match cpu {
        Some(cpu) => cpu..cpu + 1,
        None => 0..sys::possible_cpus(),
    };
    let mut result = Ok(());
    for target in targets {
        match sys::set_thread_affinity(&CpuMask::single(target, words)) {
            // The kernel moved this thread before returning; the check is a safety net.
            Ok(()) => {
                while sys::sched_getcpu() != target {
                    std::thread::yield_now();
                }
            }
            // Not in the process's cpuset, or offline: no thread of ours runs there.
            Err(libc::EINVAL) => {}
            Err(e) => {
                result = Err(FenceError::Os(e));
                break;
            }
        }
    }
    sys::set_thread_affinity(&original).map_err(FenceError::Os)?;
    result
}

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` once per process id (a
/// forked child registers again): the registration every expedited command shares.
pub(crate) fn ensure_registered() -> Result<(), FenceError> {
    barrier::register(Expedited::PrivateRseq).map_err(FenceError::from)
}

/// The rseq fence alone (membarrier or migration, as chosen), whatever the mode: used by
/// demotion, which runs while the mode still says `Rseq`.
pub(crate) fn rseq_fence_all() -> Result<(), FenceError> {
    if MECHANISM.load(Ordering::Acquire) == 2 {
        return migration_fence(None);
    }
    barrier::private_expedited(Expedited::PrivateRseq, None).map_err(FenceError::from)
}

/// The rseq fence of one CPU.
fn rseq_fence_cpu(cpu: usize) -> Result<(), FenceError> {
    if MECHANISM.load(Ordering::Acquire) == 2 {
        return migration_fence(Some(cpu));
    }
    barrier::private_expedited(Expedited::PrivateRseq, Some(cpu)).map_err(FenceError::from)
}

/// Waits until no critical section of this process that started before the call is still
/// running: in `Rseq` mode every such section on every CPU has committed or been restarted
/// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`, or, on kernels without it, by running this thread
/// on every CPU: see [`fence_mechanism`]); in `Fallback` mode every slot lock has been taken
/// and released once.
///
/// Use it to make a change to per-CPU data visible to sections before relying on it (swap a
/// structure, then fence, then reclaim the old one).
///
/// ```
/// rseq::fence_all().expect("membarrier");
/// ```
pub fn fence_all() -> Result<(), FenceError> {
    match mode() {
        Mode::Rseq(_) => {
            rseq_fence_all()?;
            // Sections that run under the slot locks must be waited for too: `mm_cid` sections
            // on kernels without mm_cid, and every section if the process was demoted to the
            // fallback while the fence ran.
            if !crate::features().mm_cid || !mode().is_rseq() {
                crate::fallback::fence_all();
            }
            Ok(())
        }
        Mode::Fallback(_) => {
            crate::fallback::fence_all();
            Ok(())
        }
    }
}

/// Like [`fence_all`], for the sections running on one CPU (`MEMBARRIER_CMD_FLAG_CPU`, or this
/// thread running on that CPU once) — in `Fallback` mode, for the sections holding that slot's
/// lock.
///
/// `cpu` may also be [`possible_cpus`](crate::possible_cpus)`()`, the index of every
/// [`PerCpu`](crate::PerCpu)'s last slot: the fallback's spare, which only fallback sections
/// nested in their own thread's section use (no CPU runs sections on it); its fence waits for
/// the spare's lock, so a structure that drains slot by slot drains that one too.
///
/// ```
/// rseq::fence_cpu(0).expect("cpu 0 exists");
/// rseq::fence_cpu(rseq::possible_cpus()).expect("the spare slot");
/// assert!(rseq::fence_cpu(usize::MAX).is_err());
/// ```
pub fn fence_cpu(cpu: usize) -> Result<(), FenceError> {
    let possible = sys::possible_cpus();
    if cpu > possible {
        return Err(FenceError::InvalidCpu(cpu));
    }
    if cpu == possible {
        crate::fallback::fence_spare();
        return Ok(());
    }
    match mode() {
        Mode::Rseq(_) => {
            rseq_fence_cpu(cpu)?;
            if !crate::features().mm_cid || !mode().is_rseq() {
                crate::fallback::fence_slot(cpu);
            }
            Ok(())
        }
        Mode::Fallback(_) => {
            crate::fallback::fence_slot(cpu);
            Ok(())
        }
    }
}
