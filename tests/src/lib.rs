//! Helpers shared by the integration tests, the probe and the demonstration.

pub use rseq::test_support::{
    allow_cpus, allowed_cpus, output_watched, pin_to_cpu, pinned, spawn_watched, test_child,
    try_spawn_watched, TimedOut, CHILD_DEADLINE,
};
use std::process::{Command, Output};

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
/// The child is watched ([`rseq::test_support::spawn_watched`]): one that runs longer than
/// [`CHILD_DEADLINE`] is killed and the test fails, naming it (a hang is a failure, not a stalled
/// test run), and one that the emulator deadlocked before `exec` is started again.
pub fn run_in(mode: RunMode, program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    mode.apply(&mut cmd);
    match output_watched(cmd, CHILD_DEADLINE) {
        Ok(out) => {
            eprintln!(
                "--- {program} {args:?} in {mode:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Err(TimedOut(out)) => panic!(
            "{program} {args:?} in {mode:?} still ran after {CHILD_DEADLINE:?}: killed. \
             Its output:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
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
