//! The mode a test process must run in, worked out from facts the runtime does not decide:
//! whether the environment disables rseq, whether the kernel implements the `rseq` system call
//! at all (qemu-user and valgrind answer `ENOSYS`), and whether glibc registered the thread
//! (glibc ≥ 2.35 does unless `GLIBC_TUNABLES=glibc.pthread.rseq=0`; musl never does). Each
//! process asks for itself, in its own environment.

use rseq_rt::{FallbackReason, Mode, Owner, RegistrationError};

/// A mode, with the fact that selects it (for the test log and failure messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub mode: Mode,
    pub because: &'static str,
}

/// Whether `RSEQ_DISABLE` asks for the fallback (as the runtime reads it).
fn disabled_by_env() -> bool {
    std::env::var("RSEQ_DISABLE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether the kernel implements `rseq(2)`: an invalid call (no area, length 0) fails with
/// `EINVAL` where it does, registered thread or not, and registers nothing; `ENOSYS` where it
/// does not.
pub fn kernel_has_rseq() -> bool {
    // SAFETY: with a length of 0 the kernel rejects the call before it looks at the area.
    let answer = unsafe { rseq_rt::sys::rseq(core::ptr::null_mut(), 0, 0, 0) };
    answer != Err(libc::ENOSYS)
}

/// The mode of a process whose threads the library registers itself: glibc's registration
/// turned off (`GLIBC_TUNABLES=glibc.pthread.rseq=0`), or musl.
pub fn own_registration() -> Expected {
    if kernel_has_rseq() {
        Expected {
            mode: Mode::Rseq(Owner::Library),
            because: "the kernel has rseq and glibc did not register this thread",
        }
    } else {
        Expected {
            mode: Mode::Fallback(FallbackReason::Registration(RegistrationError::Unsupported)),
            because: "the kernel answers ENOSYS to rseq (qemu-user, valgrind, Linux < 4.18)",
        }
    }
}

/// The mode this process must run in.
pub fn expected_mode() -> Expected {
    if disabled_by_env() {
        return Expected {
            mode: Mode::Fallback(FallbackReason::Disabled),
            because: "RSEQ_DISABLE is set",
        };
    }
    if rseq_rt::sys::glibc_rseq().is_some_and(|g| g.size != 0) {
        return Expected {
            mode: Mode::Rseq(Owner::Glibc),
            because: "glibc registered this thread (__rseq_size != 0)",
        };
    }
    own_registration()
}

/// Says that part of the running test does not apply here, and why, as
/// `note: <test>: not applicable: <why>` on a line of its own written past the test harness's
/// output capture, so it shows in the log of a passing test too (`.ci/cross-test` lists these).
pub fn not_applicable(why: impl std::fmt::Display) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let _ = writeln!(
        std::io::stderr().lock(),
        "note: {test}: not applicable: {why}"
    );
}

/// `n` rounds of a workload, or a twentieth of them under an emulator (`RSEQ_TEST_EMULATOR`,
/// which `.ci/cross-test` sets for the targets it runs under qemu-user), where each costs 20–50
/// times more.
#[allow(dead_code)] // not every test file scales its workloads
pub fn rounds(n: usize) -> usize {
    match std::env::var("RSEQ_TEST_EMULATOR") {
        Ok(e) if !e.is_empty() => (n / 20).max(1),
        _ => n,
    }
}
