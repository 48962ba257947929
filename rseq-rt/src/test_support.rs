//! Helpers for the project's own tests (feature `test-support`): not part of the API.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicU32, AtomicUsize};

/// Installs a seccomp filter under which the system call `nr` fails with `errno` (every other
/// call is allowed), after `PR_SET_NO_NEW_PRIVS`. Affects the calling thread, the threads it
/// creates afterwards and the programs it executes.
pub fn deny_syscall_with(nr: libc::c_long, errno: i32) -> std::io::Result<()> {
    let nr = nr as u32;
    let ret_errno = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    // struct seccomp_data starts with the syscall number (u32).
    let mut filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: ret_errno,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at a valid filter for the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Why [`set_fallback_slots`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackSlotsError {
    /// The lock table exists already (a section or fence ran), with this many slots.
    AlreadySet(usize),
    /// More slots than possible CPUs, the length of every `PerCpu`: a fallback body works on
    /// the per-CPU slot its lock names, so more locks than that would index past the data.
    MoreThanPossibleCpus(usize),
}

impl core::fmt::Display for FallbackSlotsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FallbackSlotsError::AlreadySet(n) => {
                write!(
                    f,
                    "the fallback has {n} slots already (set them before any section)"
                )
            }
            FallbackSlotsError::MoreThanPossibleCpus(n) => write!(
                f,
                "at most {n} CPU slots, one per possible CPU (per-CPU data has no more)"
            ),
        }
    }
}

/// Makes the fallback use `slots` CPU slot locks (and the spare) instead of one per possible
/// CPU, as on a machine (or a container) with that many CPUs; call it before the first section
/// or fence. Fails if the table exists already, or if `slots` exceeds the possible CPUs.
pub fn set_fallback_slots(slots: usize) -> Result<(), FallbackSlotsError> {
    let possible = crate::sys::possible_cpus();
    if slots > possible {
        return Err(FallbackSlotsError::MoreThanPossibleCpus(possible));
    }
    crate::fallback::init_with(slots.max(1)).map_err(FallbackSlotsError::AlreadySet)
}

/// Runs `test` of the calling test binary again, alone, in a child process with `env=case` in
/// its environment, and returns its output. A child still running after `timeout` is killed and
/// the call panics with its stderr: a hang fails the test instead of hanging it. So does a
/// child that exits successfully without having run a test: `test` (matched exactly) names
/// none of the binary's tests, and the child's success would say nothing.
pub fn run_test_in_child(
    test: &str,
    env: &str,
    case: &str,
    timeout: std::time::Duration,
) -> std::process::Output {
    run_test_in_child_with(test, &[(env, case)], timeout)
}

/// [`run_test_in_child`] with several variables set in the child's environment (named in the
/// panic message by the last one's value).
pub fn run_test_in_child_with(
    test: &str,
    envs: &[(&str, &str)],
    timeout: std::time::Duration,
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let case = envs.last().map_or("", |(_, case)| *case);
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let t0 = std::time::Instant::now();
    while child.try_wait().expect("wait for the child").is_none() {
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("the killed child's output");
            panic!(
                "the {case} child hung (killed after {timeout:?}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("the child's output");
    // libtest announces the count before it runs anything, so a child that failed or aborted
    // in its test has the line too.
    if out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("running 1 test") {
        panic!(
            "the {case} child ran no test: no test of this binary is named exactly `{test}`:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// Waits until `counter` reaches `at_least`: spins briefly, then yields (the machine may have
/// fewer free CPUs than threads).
pub fn wait_for(counter: &AtomicUsize, at_least: usize) {
    let mut spins = 0u32;
    while counter.load(Acquire) < at_least {
        spins += 1;
        if spins < 256 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Cache lines both litmus threads store to before their `x`/`y` store.
#[derive(Default)]
#[repr(align(128))]
struct Line(AtomicU32);
const PADS: usize = 8;

/// Queues stores to lines the other thread wrote last (each a cache miss) ahead of the
/// litmus store: x86 commits stores in order, so the litmus store stays invisible to the other
/// thread for several misses. That widens the window in which the store-buffering outcome can
/// happen, so that it shows even when the heavy side's call takes a while (a `heavy()`
/// reduced to a compiler fence is caught within the iteration counts of `rseq-rt`'s tests).
fn stall(pads: &[Line; PADS]) {
    for line in pads {
        line.0.store(1, Relaxed);
    }
}

/// Store buffering, `iterations` times. Thread A: `x = 1; light(); r1 = y`. Thread B:
/// `y = 1; fence_b(); r2 = x`. Each iteration starts when both threads arrived (a two-counter
/// spin barrier, no fence instructions on x86) and ends with A collecting `r2` and resetting
/// `x` and `y` before the next start; `after_each` runs on both threads after their read
/// (`rseq-stress barrier` runs a section there). Returns how often `r1 == r2 == 0` was seen.
pub fn store_buffering(
    iterations: usize,
    fence_b: impl Fn() + Sync,
    after_each: impl Fn() + Sync,
) -> usize {
    let (x, y, r2) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    let pads: [Line; PADS] = Default::default();
    let (a, b) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..iterations {
                b.store(2 * i + 1, Release);
                wait_for(&a, 2 * i + 1);
                stall(&pads);
                y.store(1, Relaxed);
                fence_b();
                r2.store(x.load(Relaxed), Relaxed);
                after_each();
                b.store(2 * i + 2, Release);
                wait_for(&a, 2 * i + 2);
            }
        });
        let mut forbidden = 0;
        for i in 0..iterations {
            a.store(2 * i + 1, Release);
            wait_for(&b, 2 * i + 1);
            stall(&pads);
            x.store(1, Relaxed);
            crate::barrier::light();
            let r1 = y.load(Relaxed);
            after_each();
            a.store(2 * i + 2, Release);
            wait_for(&b, 2 * i + 2);
            if r1 == 0 && r2.load(Relaxed) == 0 {
                forbidden += 1;
            }
            x.store(0, Relaxed);
            y.store(0, Relaxed);
        }
        forbidden
    })
}

/// Makes the fallback call `hook` each time a section nested in its own thread's fallback
/// section (a signal handler's) has taken its slot, with signals blocked unless promised;
/// `None` removes it. Process-wide.
pub fn set_fallback_nested_hook(hook: Option<fn()>) {
    let ptr = hook.map_or(core::ptr::null_mut(), |f| f as *mut ());
    crate::fallback::NESTED_HOOK.store(ptr, Release);
}

/// Why a valgrind run whose standard error is `stderr` did not run the program at all, or
/// `None` if it did: valgrind's launcher refuses programs of an architecture it was not built
/// for (the host's valgrind and a foreign target's program, run under qemu-user), and on x86
/// (i686) valgrind needs the dynamic linker's symbol table, which Debian ships only in the
/// 32-bit glibc's debug symbols (libc6-dbg:i386).
pub fn valgrind_cannot_run(stderr: &str) -> Option<String> {
    let launcher: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("valgrind: "))
        .collect();
    if launcher
        .iter()
        .any(|l| l.contains("cannot execute binary file") || l.contains("failed to start tool"))
    {
        return Some(format!(
            "this valgrind cannot run the target's programs: {}",
            launcher.join("; ")
        ));
    }
    if launcher
        .iter()
        .any(|l| l.contains("a function redirection"))
        && stderr.contains("mandatory for this platform-tool combination")
    {
        return Some(
            "valgrind cannot start the target's programs: its mandatory redirections need the \
             dynamic linker's symbols, i.e. glibc's debug symbols for this architecture \
             (on Debian, libc6-dbg:i386 for i686)"
                .to_string(),
        );
    }
    None
}
