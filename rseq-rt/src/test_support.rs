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
    let case = envs.last().map_or("", |(_, case)| *case);
    let mut cmd = test_child(test);
    cmd.envs(envs.iter().copied());
    let out = match output_watched(cmd, timeout) {
        Ok(out) => out,
        Err(TimedOut(out)) => panic!(
            "the {case} child hung (killed after {timeout:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
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

/// A command that runs the calling test binary's test `name` alone: matched exactly, its
/// output shown, on one test thread. The caller adds the environment and starts it (with
/// [`spawn_watched`] or [`output_watched`]).
pub fn test_child(name: &str) -> std::process::Command {
    test_child_under(&[], name)
}

/// [`test_child`] run by another program: `runner[0]` with the arguments `runner[1..]`, then the
/// test binary and its arguments (for example `["valgrind", "-q"]`). An empty `runner` is
/// [`test_child`].
pub fn test_child_under(runner: &[&str], name: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = match runner.split_first() {
        Some((program, args)) => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args).arg(exe);
            cmd
        }
        None => std::process::Command::new(exe),
    };
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    cmd
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), in order; the CPU it is on if
/// the call fails.
pub fn allowed_cpus() -> Vec<usize> {
    match crate::sys::thread_affinity() {
        Ok(mask) => mask.cpus().collect(),
        Err(_) => vec![crate::sys::sched_getcpu()],
    }
}

/// Lets the calling thread run on `cpus` only (`sched_setaffinity`); the kernel moves it before
/// the call returns if it is elsewhere. Returns false if the kernel refused (no CPU of `cpus`
/// is allowed, or the call is denied).
pub fn allow_cpus(cpus: &[usize]) -> bool {
    let words = crate::sys::thread_affinity().map_or(16, |m| m.0.len());
    let mut mask = crate::sys::CpuMask(vec![0; words]);
    for &cpu in cpus {
        mask.insert(cpu);
    }
    crate::sys::set_thread_affinity(&mask).is_ok()
}

/// Pins the calling thread to `cpu` alone. Returns false if the CPU is not in the allowed set.
pub fn pin_to_cpu(cpu: usize) -> bool {
    allow_cpus(&[cpu])
}

/// Runs `f` with the calling thread pinned to the CPU it is on, then gives it back the CPUs it
/// had: the per-CPU data it uses stays the same CPU's throughout.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    let old = crate::sys::thread_affinity().expect("sched_getaffinity of the calling thread");
    assert!(
        pin_to_cpu(crate::sys::sched_getcpu()),
        "sched_setaffinity to the current CPU failed"
    );
    let r = f();
    crate::sys::set_thread_affinity(&old).expect("sched_setaffinity back to the thread's CPUs");
    r
}

/// A child that [`output_watched`] killed at its deadline, with what it wrote until then.
#[derive(Debug)]
pub struct TimedOut(pub std::process::Output);

/// How long a test's child may run (far more than any needs: all the tests of one target take
/// a few minutes under qemu-user).
pub const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// How long a child of [`spawn_watched`] may take to reach `exec` before it is taken for one
/// that never will.
pub const EXEC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// `cmd.output()` for tests: [`spawn_watched`], then [`WatchedChild::output`].
pub fn output_watched(
    cmd: std::process::Command,
    deadline: std::time::Duration,
) -> Result<std::process::Output, TimedOut> {
    spawn_watched(cmd).output(deadline)
}

/// Starts `cmd` (stdin empty, stdout and stderr captured) for a test that waits for it with
/// [`WatchedChild::output`], which guards against two ways a child can hang a test run:
///
/// - A child that runs past its deadline is killed, and the caller gets its output so far.
/// - A child that has not reached `exec` [`EXEC_DEADLINE`] after its start is killed and started
///   again, up to twice (a line on stderr says so). Under qemu-user, `fork` in a multi-threaded
///   program sometimes deadlocks the emulator in the child before the program runs (seen on
///   riscv64: both threads of the child waiting on a futex forever).
///
/// Panics if the program cannot be started ([`try_spawn_watched`] returns the error).
pub fn spawn_watched(cmd: std::process::Command) -> WatchedChild {
    let program = cmd.get_program().to_owned();
    try_spawn_watched(cmd).unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"))
}

/// [`spawn_watched`], returning the error if the program cannot be started.
pub fn try_spawn_watched(mut cmd: std::process::Command) -> std::io::Result<WatchedChild> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = start(&mut cmd)?;
    Ok(WatchedChild { cmd, child })
}

/// A child started by [`spawn_watched`].
pub struct WatchedChild {
    cmd: std::process::Command,
    child: Started,
}

/// One start of a watched child: the process, the threads that read its pipes (so a chatty
/// child never blocks on a full pipe), and when it started.
struct Started {
    process: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    at: std::time::Instant,
}

fn start(cmd: &mut std::process::Command) -> std::io::Result<Started> {
    let mut process = cmd.spawn()?;
    Ok(Started {
        stdout: drain(process.stdout.take()),
        stderr: drain(process.stderr.take()),
        process,
        at: std::time::Instant::now(),
    })
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

impl WatchedChild {
    /// Waits for the child and returns its output; kills it once it has run for `deadline`.
    pub fn output(self, deadline: std::time::Duration) -> Result<std::process::Output, TimedOut> {
        self.output_with(EXEC_DEADLINE, deadline)
    }

    /// Whether the child's command line, `line`, is the one `exec` gives it. Before `exec`, a
    /// child's command line is its parent's (under qemu-user, the emulator's and the parent's).
    /// After, it ends with the command's arguments (qemu-user run through binfmt_misc puts
    /// itself and the program's path first), and names the program. No caller runs a child
    /// with the arguments its own process was started with.
    fn has_exec(&self, line: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let mut args = Vec::new();
        for arg in self.cmd.get_args() {
            args.extend_from_slice(arg.as_bytes());
            args.push(0);
        }
        let program = std::path::Path::new(self.cmd.get_program());
        let name = program
            .file_name()
            .unwrap_or(program.as_os_str())
            .as_bytes();
        line.ends_with(&args) && line.windows(name.len()).any(|w| w == name)
    }

    /// [`WatchedChild::output`] with the time a child may take to reach `exec`.
    fn output_with(
        mut self,
        exec_deadline: std::time::Duration,
        deadline: std::time::Duration,
    ) -> Result<std::process::Output, TimedOut> {
        let mut restarts = 0;
        loop {
            let mut execed = false;
            let mut poll = std::time::Duration::from_millis(1);
            let stuck_before_exec = loop {
                match self.child.process.try_wait() {
                    Ok(Some(_)) => return Ok(self.child.finish()),
                    Ok(None) => {}
                    Err(e) => panic!("cannot wait for {:?}: {e}", self.cmd.get_program()),
                }
                let ran = self.child.at.elapsed();
                if !execed && ran >= exec_deadline {
                    // An empty or unreadable command line (the child exited since `try_wait`)
                    // counts as having run.
                    let pid = self.child.process.id();
                    execed = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|line| line.is_empty() || self.has_exec(&line))
                        .unwrap_or(true);
                    if !execed {
                        break true;
                    }
                }
                if ran >= deadline {
                    break false;
                }
                std::thread::sleep(poll);
                poll = (poll * 2).min(std::time::Duration::from_millis(10));
            };
            let _ = self.child.process.kill();
            if !stuck_before_exec {
                return Err(TimedOut(self.child.finish()));
            }
            restarts += 1;
            assert!(
                restarts <= 2,
                "{:?}: three children in a row did not reach exec within {exec_deadline:?}",
                self.cmd
            );
            eprintln!(
                "{:?}: the child did not reach exec within {exec_deadline:?} (the emulator's \
                 fork deadlocked); started again",
                self.cmd
            );
            let _ = self.child.finish();
            self.child = start(&mut self.cmd)
                .unwrap_or_else(|e| panic!("cannot run {:?} again: {e}", self.cmd.get_program()));
        }
    }
}

impl Started {
    /// Reaps the (exited or killed) process and collects its output.
    fn finish(self) -> std::process::Output {
        let mut process = self.process;
        let status = process.wait().expect("wait for an exited child");
        std::process::Output {
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn pinned_keeps_the_thread_on_one_cpu_and_gives_back_its_cpus() {
        let before = allowed_cpus();
        let (inside, cpu) = pinned(|| (allowed_cpus(), crate::sys::sched_getcpu()));
        assert_eq!(inside, [cpu]);
        assert!(before.contains(&cpu), "{cpu} not in {before:?}");
        assert_eq!(allowed_cpus(), before);
    }

    #[test]
    fn test_children_run_one_test_of_this_binary_directly_or_under_a_runner() {
        let exe = std::env::current_exe().unwrap();
        let tail = ["--exact", "t", "--nocapture", "--test-threads=1"];
        let direct = test_child("t");
        assert_eq!(direct.get_program(), exe.as_os_str());
        assert!(direct.get_args().eq(tail.iter().map(std::ffi::OsStr::new)));
        let under = test_child_under(&["valgrind", "-q"], "t");
        assert_eq!(under.get_program(), "valgrind");
        let args: Vec<_> = under.get_args().collect();
        assert_eq!(args[0], "-q");
        assert_eq!(args[1], exe.as_os_str());
        assert!(args[2..]
            .iter()
            .copied()
            .eq(tail.iter().map(std::ffi::OsStr::new)));
    }

    #[test]
    fn a_watched_child_gets_its_output_back() {
        let out = spawn_watched(sh("echo out; echo err >&2; exit 3"))
            .output_with(Duration::from_millis(100), Duration::from_secs(60))
            .expect("sh ran into its deadline");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn a_watched_child_past_its_deadline_is_killed_with_its_output() {
        let started = Instant::now();
        // The shell prints, then becomes `sleep` (which keeps no other process on the pipes);
        // the deadline comes before the exec check would.
        let out = spawn_watched(sh("echo started; exec sleep 60"))
            .output_with(Duration::from_secs(60), Duration::from_secs(3));
        assert!(started.elapsed() < Duration::from_secs(30));
        match out {
            Err(TimedOut(out)) => assert_eq!(out.stdout, b"started\n"),
            Ok(_) => panic!("the sleep was not reported as running past its deadline"),
        }
    }

    #[test]
    fn a_child_stuck_before_exec_is_started_again() {
        let dir = std::env::temp_dir().join(format!("rseq-watch-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        // The first start becomes `sleep 600`, whose command line does not end with the
        // shell's arguments: to the watcher, a child still before exec. The second runs.
        let script = format!(
            "if [ -e {0} ]; then echo ran; else : > {0}; exec sleep 600; fi",
            dir.display()
        );
        let started = Instant::now();
        let out = spawn_watched(sh(&script))
            .output_with(Duration::from_millis(300), Duration::from_secs(60))
            .expect("the second start ran into its deadline");
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(0), &b"ran\n"[..])
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn a_child_is_known_by_its_arguments_and_its_programs_name() {
        let mut cmd = Command::new("/usr/bin/rseq-stress");
        cmd.args(["--ops", "add"]);
        let child = spawn_watched(sh("exit 0"));
        let child = WatchedChild { cmd, ..child };
        // Run directly, or by qemu-user through binfmt_misc.
        assert!(child.has_exec(b"/usr/bin/rseq-stress\0--ops\0add\0"));
        assert!(child.has_exec(b"/usr/bin/qemu-riscv64\0/usr/bin/rseq-stress\0--ops\0add\0"));
        // Still the parent: a test binary, also one run with the same last argument.
        assert!(!child.has_exec(b"/t/reliability-0123\0"));
        assert!(!child.has_exec(b"/usr/bin/qemu-riscv64\0/t/reliability-0123\0add\0"));
        assert!(!child.has_exec(b"/t/reliability-0123\0--ops\0add\0"));
        let _ = child.output(Duration::from_secs(60));
    }

    #[test]
    fn three_children_stuck_before_exec_fail_the_test() {
        let started = Instant::now();
        let panicked = std::panic::catch_unwind(|| {
            spawn_watched(sh("exec sleep 600"))
                .output_with(Duration::from_millis(300), Duration::from_secs(60))
        });
        let message = panicked.expect_err("a child stuck before exec was taken for one that ran");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("three children in a row did not reach exec"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
