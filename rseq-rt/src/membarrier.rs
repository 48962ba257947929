//! Fences that restart critical sections on other CPUs (`membarrier(2)` with the RSEQ
//! commands), or, in `Fallback` mode, wait for them under the slot locks.

use crate::abi;
use crate::error::FenceError;
use crate::registration::{mode, Mode};
use crate::sys;
use core::sync::atomic::{AtomicI32, Ordering};

/// The process that registered for `PRIVATE_EXPEDITED_RSEQ`. The registration belongs to the
/// address space, so a forked child (another pid) must register again.
static REGISTERED_PID: AtomicI32 = AtomicI32::new(0);

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` once (per process id).
pub(crate) fn ensure_registered() -> Result<(), FenceError> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if REGISTERED_PID.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    let needed = abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ
        | abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ;
    match sys::membarrier(abi::MEMBARRIER_CMD_QUERY, 0, 0) {
        Ok(mask) if mask as libc::c_int & needed == needed => {}
        Ok(_) | Err(libc::ENOSYS) | Err(libc::EINVAL) => return Err(FenceError::Unsupported),
        Err(e) => return Err(FenceError::Os(e)),
    }
    sys::membarrier(abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0).map_err(
        |e| match e {
            libc::ENOSYS | libc::EINVAL => FenceError::Unsupported,
            e => FenceError::Os(e),
        },
    )?;
    REGISTERED_PID.store(pid, Ordering::Release);
    Ok(())
}

/// The membarrier fence alone, whatever the mode (used by demotion).
pub(crate) fn rseq_fence_all() -> Result<(), FenceError> {
    ensure_registered()?;
    sys::membarrier(abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0)
        .map(drop)
        .map_err(FenceError::Os)
}

/// Waits until no critical section of this process that started before the call is still
/// running: in `Rseq` mode every such section on every CPU has committed or been restarted
/// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`); in `Fallback` mode every slot lock has been taken
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

/// Like [`fence_all`], for the sections running on one CPU (`MEMBARRIER_CMD_FLAG_CPU`) — in
/// `Fallback` mode, for the sections holding that slot's lock.
///
/// ```
/// rseq::fence_cpu(0).expect("cpu 0 exists");
/// assert!(rseq::fence_cpu(usize::MAX).is_err());
/// ```
pub fn fence_cpu(cpu: usize) -> Result<(), FenceError> {
    if cpu >= sys::possible_cpus() {
        return Err(FenceError::InvalidCpu(cpu));
    }
    match mode() {
        Mode::Rseq(_) => {
            ensure_registered()?;
            sys::membarrier(
                abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                abi::MEMBARRIER_CMD_FLAG_CPU,
                cpu as libc::c_int,
            )
            .map_err(|e| match e {
                libc::EINVAL => FenceError::InvalidCpu(cpu),
                e => FenceError::Os(e),
            })?;
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
