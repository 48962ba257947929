//! The typed membarrier API (`rseq_rt::barrier`): the store-buffering litmus test with each heavy
//! mechanism, the control without a heavy fence, seccomp denials, registration after `fork`,
//! the global commands and (x86_64) code modified under another thread with `sync_core`.
//!
//! Cases that change process-wide state (the chosen mechanism, a seccomp filter) or that need
//! the CPUs to themselves run in a child process (this binary again, `CHILD_ENV` naming the
//! case), one child at a time.

use rseq_rt::barrier::{self, BarrierError, Command, Expedited, HeavyMechanism};
use rseq_rt::test_support::{run_test_in_child, store_buffering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "RSEQ_RT_BARRIER_CHILD";

/// One child at a time: the litmus tests want both CPUs for their two threads.
static CHILDREN: Mutex<()> = Mutex::new(());

/// Runs this binary's `test` in a child with `CHILD_ENV=case` and returns its stdout; fails if
/// the child fails, or hangs for more than two minutes (killed).
fn run_child(test: &str, case: &str) -> String {
    let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_test_in_child(test, CHILD_ENV, case, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the {case} child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with --nocapture.
    print!("{stdout}");
    stdout
}

/// The case this process runs as a child, if it is one.
fn child_case() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Runs the litmus with `heavy()` on B's side and asserts the forbidden outcome never appears.
/// The iteration counts keep each run to a few seconds on a loaded two-CPU machine. Without
/// the heavy fence the control sees the outcome 0.1–1.7 % of the time here, and a `heavy()`
/// mutated into a compiler fence was caught by each litmus in most runs (3–316 outcomes per
/// run; the seccomp case once saw none in 10 000, so it runs 30 000): the test is
/// probabilistic in what it can catch, never in what it asserts.
fn heavy_litmus(what: &str, iterations: usize) {
    let t0 = Instant::now();
    let forbidden = store_buffering(iterations, || barrier::heavy().expect("heavy fence"), || {});
    println!(
        "litmus {what}: r1 == r2 == 0 seen {forbidden} times in {iterations} iterations ({:?})",
        t0.elapsed()
    );
    assert_eq!(
        forbidden, 0,
        "{what}: a heavy fence must forbid the store-buffering outcome"
    );
}

/// With membarrier(PRIVATE_EXPEDITED) on the heavy side, the store-buffering outcome never
/// appears.
#[test]
fn heavy_membarrier_forbids_store_buffering() {
    let Some(case) = child_case() else {
        run_child("heavy_membarrier_forbids_store_buffering", "membarrier");
        return;
    };
    assert_eq!(case, "membarrier");
    barrier::set_heavy_mechanism(HeavyMechanism::Membarrier).expect("PRIVATE_EXPEDITED here");
    assert_eq!(barrier::heavy_mechanism(), Ok(HeavyMechanism::Membarrier));
    heavy_litmus("membarrier", 50_000);
}

/// The mprotect fallback, forced, forbids the outcome too (x86 only: the only architectures
/// where the library offers it).
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
#[test]
fn heavy_mprotect_forbids_store_buffering() {
    let Some(case) = child_case() else {
        run_child("heavy_mprotect_forbids_store_buffering", "mprotect");
        return;
    };
    assert_eq!(case, "mprotect");
    barrier::set_heavy_mechanism(HeavyMechanism::Mprotect).expect("mprotect");
    assert_eq!(barrier::heavy_mechanism(), Ok(HeavyMechanism::Mprotect));
    heavy_litmus("mprotect", 30_000);
}

/// The control: `light()` on both sides. On x86 (TSO: a store may wait in the store buffer past
/// a later load) the forbidden outcome does appear, which shows the litmus can observe it. How
/// often depends on timing and load, so the count is printed (run with `--nocapture`), not
/// asserted: a test that demanded it would fail on an idle machine by chance.
#[test]
fn light_alone_allows_store_buffering() {
    let Some(case) = child_case() else {
        run_child("light_alone_allows_store_buffering", "control");
        return;
    };
    assert_eq!(case, "control");
    let iterations = 200_000;
    let t0 = Instant::now();
    let forbidden = store_buffering(iterations, barrier::light, || {});
    println!(
        "litmus control (light on both sides): r1 == r2 == 0 seen {forbidden} times in \
         {iterations} iterations ({:?})",
        t0.elapsed()
    );
}

/// Installs a seccomp filter under which membarrier fails with `errno`. Under qemu-user
/// (`RSEQ_TEST_EMULATOR`, set by `.ci/cross-test`) the emulator does not install guest filters:
/// says so and returns false; anywhere else a failure fails the test.
fn deny_membarrier_with(errno: i32) -> bool {
    match rseq_rt::test_support::deny_syscall_with(libc::SYS_membarrier, errno) {
        Ok(()) => true,
        Err(e) if std::env::var_os("RSEQ_TEST_EMULATOR").is_some() => {
            eprintln!("not applicable under the emulator: no seccomp filter ({e})");
            false
        }
        Err(e) => panic!("cannot install the seccomp filter: {e}"),
    }
}

/// Under a seccomp filter that answers `ENOSYS` to membarrier: `query` says there is none,
/// `heavy` falls back to mprotect (x86) and still forbids the store-buffering outcome, and
/// `sync_core`, `register` and `global` report the same typed error.
#[test]
fn without_membarrier_heavy_falls_back_to_mprotect() {
    let Some(case) = child_case() else {
        run_child("without_membarrier_heavy_falls_back_to_mprotect", "seccomp");
        return;
    };
    assert_eq!(case, "seccomp");
    if !deny_membarrier_with(libc::ENOSYS) {
        return;
    }
    assert_eq!(barrier::query(), Err(BarrierError::NoMembarrier));
    assert_eq!(barrier::sync_core(), Err(BarrierError::NoMembarrier));
    assert_eq!(
        barrier::register(Expedited::Private),
        Err(BarrierError::NoMembarrier)
    );
    assert_eq!(barrier::global(), Err(BarrierError::NoMembarrier));
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        assert_eq!(barrier::heavy_mechanism(), Ok(HeavyMechanism::Mprotect));
        heavy_litmus("seccomp, mprotect fallback", 30_000);
    } else {
        // No fallback is offered off x86: the error says why the membarrier is missing.
        assert_eq!(barrier::heavy(), Err(BarrierError::NoMembarrier));
    }
}

/// A filter's own errno comes back as `Os(errno)`, and `heavy` still falls back.
#[test]
fn a_filters_errno_is_reported_as_is() {
    let Some(case) = child_case() else {
        run_child("a_filters_errno_is_reported_as_is", "eacces");
        return;
    };
    assert_eq!(case, "eacces");
    if !deny_membarrier_with(libc::EACCES) {
        return;
    }
    assert_eq!(barrier::query(), Err(BarrierError::Os(libc::EACCES)));
    assert_eq!(barrier::sync_core(), Err(BarrierError::Os(libc::EACCES)));
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        barrier::heavy().unwrap();
        assert_eq!(barrier::heavy_mechanism(), Ok(HeavyMechanism::Mprotect));
    }
    let message = BarrierError::Os(libc::EACCES).to_string();
    assert!(
        message.contains("13") && message.contains("seccomp"),
        "{message}"
    );
}

/// Fences work in a forked child. The kernel copies the parent's registrations into the
/// child's address space (`dup_mm` copies the whole `mm_struct`; `exec` clears them), and the
/// library registers again per process id anyway: the child's raw command must not fail with
/// EPERM after `heavy`, whichever way the kernel went (reported, not assumed).
#[test]
fn a_forked_child_fences() {
    let Some(case) = child_case() else {
        run_child("a_forked_child_fences", "fork");
        return;
    };
    assert_eq!(case, "fork");
    let raw = || rseq_rt::sys::membarrier(Command::PrivateExpedited.bits() as i32, 0, 0);
    barrier::set_heavy_mechanism(HeavyMechanism::Membarrier).expect("PRIVATE_EXPEDITED here");
    barrier::heavy().unwrap();
    assert_eq!(raw(), Ok(0), "registered in the parent");
    let sync_core = barrier::query()
        .unwrap()
        .contains(Command::PrivateExpeditedSyncCore);
    // SAFETY: the child only makes system calls and atomic accesses, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // 0 or 1: fine, the registration was inherited or not; 10 and up: a failure (no
        // allocation, no unwinding in the child).
        let inherited = raw().is_ok();
        let status = if barrier::heavy().is_err() {
            10
        } else if raw() != Ok(0) {
            11 // heavy succeeded but the child is not registered
        } else if sync_core && barrier::sync_core().is_err() {
            12
        } else {
            i32::from(!inherited)
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(status) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert!(
        code <= 1,
        "the child failed with {code} (see its exit codes)"
    );
    println!(
        "fork: the child {} the parent's registration",
        if code == 0 {
            "inherited"
        } else {
            "did not inherit"
        }
    );
}

/// What `query` reports and what registration records agree, for each expedited command.
#[test]
fn registration_is_recorded_by_the_kernel() {
    let supported = barrier::query().unwrap();
    for expedited in [
        Expedited::Global,
        Expedited::Private,
        Expedited::PrivateSyncCore,
        Expedited::PrivateRseq,
    ] {
        let result = barrier::register(expedited);
        if supported.contains(expedited.command()) {
            result.unwrap();
            if let Ok(registered) = barrier::registrations() {
                assert!(
                    registered.contains(expedited.register_command()),
                    "{expedited:?}: {registered:?}"
                );
            }
        } else {
            assert_eq!(result, Err(BarrierError::Unsupported(expedited.command())));
        }
    }
}

/// The global commands run where offered, and report `Unsupported` where not.
#[test]
fn global_barriers_run() {
    let supported = barrier::query().unwrap();
    match barrier::global() {
        Ok(()) => assert!(supported.contains(Command::Global)),
        Err(e) => assert_eq!(e, BarrierError::Unsupported(Command::Global)),
    }
    if supported.contains(Command::GlobalExpedited) {
        barrier::register_global_expedited().unwrap();
        barrier::global_expedited().unwrap();
    } else {
        assert_eq!(
            barrier::global_expedited(),
            Err(BarrierError::Unsupported(Command::GlobalExpedited))
        );
    }
}

/// Code rewritten by one thread and run by another (x86_64 only: the bytes below are x86_64
/// instructions, and it is the architecture whose caller obligations the test follows: the
/// writer needs no cache maintenance, the other thread needs the serialisation `sync_core`
/// gives it). The page is mapped twice from a memfd, writable and executable, so that no
/// mapping is both. It fails if `sync_core` fails, or if a round runs stale code; current x86
/// processors snoop instruction fetch, so a `sync_core` that did nothing would rarely show here:
/// the test checks the API and the protocol, the architecture manual is the argument.
#[cfg(target_arch = "x86_64")]
#[test]
fn code_rewritten_under_another_thread_runs_after_sync_core() {
    use rseq_rt::test_support::wait_for;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
    match barrier::sync_core() {
        Err(BarrierError::Unsupported(_)) => {
            println!("not applicable: the kernel does not offer PRIVATE_EXPEDITED_SYNC_CORE");
            return;
        }
        other => other.unwrap(),
    }
    let len = 4096;
    // SAFETY: system calls creating our own file and two mappings of it; the mappings are
    // unmapped at the end, after the executing thread is joined.
    let (rw, rx) = unsafe {
        let fd = libc::memfd_create(c"rseq-rt-jit".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        let map = |prot| libc::mmap(core::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
        let rw = map(libc::PROT_READ | libc::PROT_WRITE);
        let rx = map(libc::PROT_READ | libc::PROT_EXEC);
        libc::close(fd);
        assert!(
            rw != libc::MAP_FAILED && rx != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        (rw.cast::<u8>(), rx as usize)
    };
    let write_function = |imm: u32| {
        // mov eax, imm32; ret
        let mut code = [0xb8, 0, 0, 0, 0, 0xc3];
        code[1..5].copy_from_slice(&imm.to_le_bytes());
        // SAFETY: `rw` maps 4096 writable bytes; the executing thread is not running this
        // code now (it waits for `round`), which is the cross-modifying protocol's condition.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), rw, code.len()) };
    };
    let rounds = 2_000usize;
    let round = AtomicUsize::new(0);
    let returned = AtomicU32::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 1..=rounds {
                wait_for(&round, k);
                if stop.load(Acquire) {
                    return;
                }
                // SAFETY: `rx` maps the page executable and the writer published (after
                // `sync_core`) a complete `mov eax, imm32; ret`, a function of the C ABI with
                // no arguments; it is not rewritten before `done` says this call returned.
                let function: extern "C" fn() -> u32 = unsafe { core::mem::transmute(rx) };
                returned.store(function(), Relaxed);
                done.store(k, Release);
            }
        });
        let mut failure = None;
        for k in 1..=rounds {
            let imm = (k as u32).wrapping_mul(0x9e37_79b9);
            write_function(imm);
            if let Err(e) = barrier::sync_core() {
                failure = Some(format!("sync_core: {e}"));
                break;
            }
            round.store(k, Release);
            wait_for(&done, k);
            let got = returned.load(Relaxed);
            if got != imm {
                failure = Some(format!("round {k} ran stale code: {got:#x}, not {imm:#x}"));
                break;
            }
        }
        if let Some(failure) = failure {
            // Releases the executing thread before the scope joins it.
            stop.store(true, Release);
            round.store(usize::MAX, Release);
            panic!("{failure}");
        }
    });
    // SAFETY: our own mappings; the executing thread has been joined.
    unsafe {
        libc::munmap(rw.cast(), len);
        libc::munmap(rx as *mut libc::c_void, len);
    }
}
