//! Helpers shared by the integration tests, the probe and the demonstration.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Pins the calling thread to one CPU. Returns false if the CPU is not in the allowed set.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity take pointers
    // to our local.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restores the affinity to `cpus`.
pub fn allow_cpus(cpus: &[usize]) {
    // SAFETY: as in `pin_to_cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Installs a seccomp filter under which `rseq(2)` fails with `errno` (every other call is
/// allowed). Affects the calling thread and the threads it creates afterwards.
pub fn deny_rseq_with(errno: i32) -> std::io::Result<()> {
    deny_syscall_with(libc::SYS_rseq, errno)
}

/// Installs a seccomp filter under which `membarrier(2)` fails with `ENOSYS`, as on a kernel
/// that has rseq but lacks membarrier's RSEQ commands (Linux 4.18–5.9 answer `EINVAL` to them;
/// the library treats both alike). Affects the calling thread and the threads it creates
/// afterwards, and programs it executes.
pub fn deny_membarrier() -> std::io::Result<()> {
    deny_syscall_with(libc::SYS_membarrier, libc::ENOSYS)
}

/// Installs a seccomp filter under which the system call `nr` fails with `errno` (every other
/// call is allowed).
pub fn deny_syscall_with(nr: libc::c_long, errno: i32) -> std::io::Result<()> {
    rseq::test_support::deny_syscall_with(nr, errno)
}

/// How to run a probe in one of the three modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// glibc registers (the default on glibc ≥ 2.35).
    Glibc,
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`: the library registers its own areas.
    Own,
    /// `RSEQ_DISABLE=1`: the fallback.
    Disabled,
}

impl RunMode {
    /// All three.
    pub const ALL: [RunMode; 3] = [RunMode::Glibc, RunMode::Own, RunMode::Disabled];

    /// Applies the mode's environment to a command.
    pub fn apply(self, cmd: &mut Command) -> &mut Command {
        cmd.env_remove("RSEQ_DISABLE").env_remove("GLIBC_TUNABLES");
        match self {
            RunMode::Glibc => cmd,
            RunMode::Own => cmd.env("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
            RunMode::Disabled => cmd.env("RSEQ_DISABLE", "1"),
        }
    }
}

/// Runs `program args…` in `mode` and returns its output, printing it for the test log.
///
/// A child that runs longer than [`CHILD_DEADLINE`] is killed and the test fails, naming it
/// (a hang is a failure, not a stalled test run). A child that has not reached `exec` a minute
/// after it was started is killed and started again, up to twice: under qemu-user, `fork` in a
/// multi-threaded program sometimes deadlocks the emulator in the child before the program
/// ever runs (seen on riscv64: both threads of the child waiting on a futex forever).
pub fn run_in(mode: RunMode, program: &str, args: &[&str]) -> Output {
    for attempt in 1..=3 {
        let mut cmd = Command::new(program);
        cmd.args(args);
        mode.apply(&mut cmd);
        match run_watched(&mut cmd, program, EXEC_DEADLINE, CHILD_DEADLINE) {
            Ok(out) => {
                eprintln!(
                    "--- {program} {args:?} in {mode:?}: {}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                return out;
            }
            Err(Stuck::BeforeExec) if attempt < 3 => eprintln!(
                "--- {program} {args:?} in {mode:?}: the child did not reach exec within \
                 {EXEC_DEADLINE:?} (the emulator's fork deadlocked); started again"
            ),
            Err(Stuck::BeforeExec) => panic!(
                "{program} {args:?} in {mode:?}: three children in a row did not reach exec \
                 within {EXEC_DEADLINE:?}"
            ),
            Err(Stuck::Running(out)) => panic!(
                "{program} {args:?} in {mode:?} still ran after {CHILD_DEADLINE:?}: killed. \
                 Its output:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// How long a child of [`run_in`] may run (far more than any needs: all the tests of one
/// target take a few minutes under qemu-user).
pub const CHILD_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// How long a child of [`run_in`] may take to reach `exec`.
pub const EXEC_DEADLINE: Duration = Duration::from_secs(60);

/// Why [`run_watched`] gave up on a child (which it killed).
enum Stuck {
    /// It never reached `exec`.
    BeforeExec,
    /// It ran past [`CHILD_DEADLINE`]; what it wrote until then.
    Running(Output),
}

/// `cmd.output()`, with the deadlines of [`run_in`]. `program` is how `cmd` names the program:
/// once the child runs it, `/proc/<pid>/cmdline` names it too (also when qemu-user runs it
/// through binfmt_misc); before `exec`, the child's command line is still its parent's.
fn run_watched(
    cmd: &mut Command,
    program: &str,
    exec_deadline: Duration,
    deadline: Duration,
) -> Result<Output, Stuck> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let mut execed = false;
    let mut poll = Duration::from_millis(1);
    let before_exec = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(Output {
                    status,
                    stdout: stdout.join().unwrap_or_default(),
                    stderr: stderr.join().unwrap_or_default(),
                })
            }
            Ok(None) => {}
            Err(e) => panic!("cannot wait for {program}: {e}"),
        }
        let waited = started.elapsed();
        if !execed && waited >= exec_deadline {
            // An empty or unreadable command line (the child exited since `try_wait`) counts
            // as having run: one stuck before exec still has its parent's.
            execed = std::fs::read(format!("/proc/{}/cmdline", child.id()))
                .map(|line| line.is_empty() || String::from_utf8_lossy(&line).contains(program))
                .unwrap_or(true);
            if !execed {
                break true;
            }
        }
        if waited >= deadline {
            break false;
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(10));
    };
    let _ = child.kill();
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("cannot wait for {program}: {e}"));
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Err(if before_exec {
        Stuck::BeforeExec
    } else {
        Stuck::Running(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_its_output_back() {
        let out = run_watched(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "sh",
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        let out = out.unwrap_or_else(|_| panic!("sh ran into a deadline"));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_with_its_output() {
        let started = Instant::now();
        // The shell prints, then becomes `sleep` (which keeps no other process on the pipes).
        let out = run_watched(
            Command::new("sh").args(["-c", "echo started; exec sleep 60"]),
            "sleep",
            Duration::from_secs(2),
            Duration::from_secs(3),
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        match out {
            Err(Stuck::Running(out)) => assert_eq!(out.stdout, b"started\n"),
            _ => panic!("the sleep was not reported as running past its deadline"),
        }
    }

    #[test]
    fn a_child_whose_command_line_never_names_the_program_did_not_reach_exec() {
        // `sleep` runs, but under a name the watcher does not look for: what it sees of a
        // child stuck between fork and exec.
        let out = run_watched(
            Command::new("sleep").arg("60"),
            "/no/such/program",
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        assert!(matches!(out, Err(Stuck::BeforeExec)));
    }
}

/// The value of `key=value` in a probe's output.
pub fn field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// What the system under test offers, from `rseq-probe facts`: the tests check the expectation
/// that fits it (and say so) instead of assuming a recent kernel and glibc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The kernel implements `rseq(2)` (it does not answer `ENOSYS`, as qemu-user, valgrind and
    /// kernels before 4.18 do).
    pub kernel_rseq: bool,
    /// What the kernel answered the probe's invalid `rseq` call, for the log.
    pub kernel_rseq_answer: String,
    /// glibc registered the threads in the default environment (glibc ≥ 2.35 on a kernel with
    /// rseq; never on musl).
    pub glibc_registers: bool,
}

impl Platform {
    /// Asks `probe` (the path of `rseq-probe`) in the default environment.
    pub fn probe(probe: &str) -> Platform {
        let out = run_in(RunMode::Glibc, probe, &["facts"]);
        assert!(
            out.status.success(),
            "rseq-probe facts failed: {}",
            out.status
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let flag = |key: &str| match field(&stdout, key) {
            Some("true") => true,
            Some("false") => false,
            other => panic!("rseq-probe facts: {key}={other:?}"),
        };
        Platform {
            kernel_rseq: flag("kernel_rseq"),
            kernel_rseq_answer: field(&stdout, "kernel_rseq_answer")
                .unwrap_or("?")
                .to_string(),
            glibc_registers: flag("glibc_registered"),
        }
    }

    /// The mode `rseq-probe facts` must report in `mode`'s environment.
    pub fn expected_mode(&self, mode: RunMode) -> &'static str {
        match mode {
            RunMode::Disabled => "Fallback(Disabled)",
            _ if !self.kernel_rseq => "Fallback(Registration(Unsupported))",
            RunMode::Glibc if self.glibc_registers => "Rseq(Glibc)",
            RunMode::Glibc | RunMode::Own => "Rseq(Library)",
        }
    }
}

/// Writes `note: <test>: <what>` on a line of its own past the test harness's output capture,
/// so that it shows in the log of a passing test too (`.ci/cross-test` lists these lines).
pub fn note(what: impl std::fmt::Display) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let _ = writeln!(std::io::stderr().lock(), "note: {test}: {what}");
}

/// Says that part of the running test does not apply here, and why (see [`note`]).
pub fn not_applicable(why: impl std::fmt::Display) {
    note(format_args!("not applicable: {why}"));
}

/// The emulator the test programs run under, as the runner announces it in
/// `RSEQ_TEST_EMULATOR` (`.ci/cross-test` sets `qemu-user` for the targets it runs under
/// qemu-user): the long stress runs are shortened there. `None` when unset or empty.
pub fn emulator() -> Option<String> {
    std::env::var("RSEQ_TEST_EMULATOR")
        .ok()
        .filter(|e| !e.is_empty())
}

/// By how much the stress runs divide their operation counts here, and why (for the log):
/// `RSEQ_TEST_OPS_DIVISOR` if set (`.ci/cross-test` sets it for the targets it runs natively
/// besides the host, whose own `cargo test` does the full counts on the same kernel), else
/// `under_emulator` when [`emulator`] names one, else 1 (full counts).
///
/// # Panics
/// If `RSEQ_TEST_OPS_DIVISOR` is not a positive integer.
pub fn ops_divisor(under_emulator: usize) -> (usize, String) {
    if let Some(v) = std::env::var("RSEQ_TEST_OPS_DIVISOR")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let d = v
            .parse::<usize>()
            .ok()
            .filter(|&d| d > 0)
            .unwrap_or_else(|| panic!("RSEQ_TEST_OPS_DIVISOR={v:?}: expected a positive integer"));
        return (d, format!("RSEQ_TEST_OPS_DIVISOR={d}"));
    }
    match emulator() {
        Some(e) => (
            under_emulator,
            format!("runs under {e} (RSEQ_TEST_EMULATOR)"),
        ),
        None => (1, "full counts".to_string()),
    }
}

pub mod bench;
pub mod chart;
pub mod reference;
