//! The `/init` of the guests that `.ci/system-test` boots under qemu-system: a real kernel of
//! each architecture the macro generates code for, where (unlike qemu-user) `rseq(2)` works.
//!
//! As process 1 it mounts proc, sysfs and devtmpfs (the runtime reads
//! `/sys/devices/system/cpu/possible`), runs every operation of `rseq-stress` with more threads
//! than CPUs and `--signals`, checks each run, prints one line per operation and powers the
//! machine off. Started as any other process (to try it on a host) it mounts nothing, finds
//! `rseq-stress` beside itself and exits with 0 (all passed) or 1.
//!
//! A run passes when `rseq-stress` exits 0 with `result=ok` (its totals are exact), in the mode
//! expected (`Rseq(Glibc)` or `Rseq(Library)`), and with at least one kernel abort: a run that
//! happened to see none is repeated with twice the iterations, up to `RSEQ_GUEST_TRIES` runs.
//! `migration` and `barrier` are the exceptions (`ABORTS_NOT_REQUIRED`): their checks are not
//! about restarts (and on powerpc `migration`'s sections are rarely interrupted under TCG). So
//! is an op indexed by `mm_cid` on a kernel without it (before 6.3, as `rseq-probe` reports):
//! its sections run in the fallback, and it passes without aborts only if every one of them
//! did (`fallback_sections` = `ops`).
//! (Under qemu's TCG a vCPU takes interrupts only between translated blocks, so fewer
//! preemptions and signals land inside a section than on hardware.)
//!
//! After the ops, `op=slice-ext` (`slice_check`): time-slice extension must work where the
//! kernel has it and the registration is the library's, and fail with the typed error that
//! fits elsewhere. Then a negative test of the kernel's own checks, `op=tamper-cpu-id`
//! (`kernel_check`): `rseq-probe tamper-cpu-id` writes to `cpu_id_start`, which only the kernel
//! may write, and migrates. Where the boot line says `rseq_debug=1` (Linux 7.x with its checks
//! of rseq users on) the kernel must kill it with SIGSEGV; where there is no such switch it must
//! survive with the field rewritten (and with the switch off, see `kernel_check`). On x86_64 and
//! aarch64 a second one, `op=syscall-in-section`: `rseq-probe syscall-in-section` makes a
//! system call inside a critical section, eight times. Where the kernel checks for that on
//! syscall return (`checks_syscalls`: the generic entry code with `rseq_debug=1`, or a kernel
//! built with `CONFIG_DEBUG_RSEQ`, as `RSEQ_GUEST_KCONFIG` says) it must kill the probe with
//! SIGSEGV; elsewhere the probe must live, and every round must find its section still set
//! after the call (a kernel that looked would have cleared it) — except that with
//! `rseq_debug=1` a kill is accepted too: 7.x validates the section whenever it handles an rseq
//! event on the way back to user space, and a call that was scheduled out returns with one
//! pending. Last, where the initramfs has
//! `rseq-ptrace`, `op=ptrace` (`ptrace_check`): abort at every instruction of every kind of
//! section in this boot's registration, and a deliberately broken section that the harness
//! must catch.
//!
//! Configuration, from the environment (the kernel hands `KEY=VALUE` boot parameters whose key
//! has no dot to init's environment):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `RSEQ_GUEST_EXPECT` | `glibc` or `library`: the registration owner every run must report | required |
//! | `RSEQ_GUEST_OPS` | comma-separated operations | what `rseq-stress --list` (or its usage text) lists |
//! | `RSEQ_GUEST_ITERS` | `--iters` per thread of the first run | 100000 |
//! | `RSEQ_GUEST_THREADS` | `--threads` | 2 × online CPUs + 2 |
//! | `RSEQ_GUEST_ARGS` | comma-separated further arguments of every run (`--signals,--signal-every,64`) | `--signals` |
//! | `RSEQ_GUEST_TRIES` | runs of an op without aborts before it fails (runs under a second do not count, see `SHORT_RUN`) | 4 |
//! | `RSEQ_GUEST_OP_TIMEOUT` | seconds before a run is killed | 300 |
//! | `RSEQ_GUEST_STRESS` | the `rseq-stress` program | `/bin/rseq-stress` as init, else beside this program |
//! | `RSEQ_GUEST_OFFLINE` | comma-separated CPU numbers to take offline first (holes in the online ids) | none |
//! | `RSEQ_GUEST_KCONFIG` | the kernel's `CONFIG_GENERIC_ENTRY`, `CONFIG_DEBUG_RSEQ` and `CONFIG_RSEQ_SLICE_EXTENSION`, lower case and comma-separated (`generic_entry,rseq_slice_extension`), or `none`: whether it checks for system calls in sections, and has time-slice extension | read from `/boot/config-<release>`; without either, `syscall-in-section` and `slice-ext` do not run |
//! | `GLIBC_TUNABLES` | inherited by the runs: `glibc.pthread.rseq=0` selects the library's registration | unset |
//!
//! Output: lines that start with `rseq-guest: ` (the host reads these from the console):
//!
//! ```text
//! rseq-guest: boot kernel=6.12.107+deb13-arm64 machine=aarch64 cpus=0-1 possible=0-1 uptime_s=4.02 expect=glibc GLIBC_TUNABLES=<unset> rseq_debug=-
//! rseq-guest: probe mode=Rseq(Glibc) feature_size=28 …
//! rseq-guest: ops counter counter-mm-cid … (from rseq-stress --list)
//! rseq-guest: op=counter status=ok mode=Rseq(Glibc) aborts=12 signals_sent=56 ops=600000 iters=100000 elapsed_ms=900 tries=1
//! rseq-guest: done passed=9 failed=0 aborts=12345 elapsed_ms=20000
//! ```
//!
//! `status` is `ok`, `FAIL` (followed by `reason="…"` and the run's output on `rseq-guest: |`
//! lines) or `timeout`.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything a run of the guest needs to know, read from the environment.
struct Plan {
    stress: PathBuf,
    probe: PathBuf,
    expect_mode: &'static str,
    expect_name: &'static str,
    ops: Option<Vec<String>>,
    iters: usize,
    threads: usize,
    extra_args: Vec<String>,
    tries: usize,
    op_timeout: Duration,
    /// Whether the kernel has `mm_cid` (Linux 6.3), from `rseq-probe facts`: before it,
    /// sections indexed by `mm_cid` run in the fallback and cannot abort.
    kernel_mm_cid: bool,
}

/// What one operation ended with.
struct OpOutcome {
    passed: bool,
    aborts: u64,
}

fn say(line: impl AsRef<str>) {
    println!("rseq-guest: {}", line.as_ref());
}

fn is_init() -> bool {
    std::process::id() == 1
}

fn main() {
    let code = match run() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            say(format!("error {e}"));
            say("done passed=0 failed=1 aborts=0 elapsed_ms=0");
            1
        }
    };
    if is_init() {
        power_off();
    }
    std::process::exit(code);
}

/// Mounts, reads the plan, runs every op; `Ok(false)` if one failed.
fn run() -> Result<bool, String> {
    if is_init() {
        mount_filesystems()?;
    }
    if let Ok(list) = std::env::var("RSEQ_GUEST_OFFLINE") {
        take_offline(&list)?;
    }
    let plan = plan_from_env()?;
    let uname = uname();
    // Linux 7.x's switch for its checks of rseq users (absent before, or without debugfs).
    let rseq_debug = read_trimmed("/sys/kernel/debug/rseq/debug").unwrap_or_else(|| "-".into());
    say(format!(
        "boot kernel={} machine={} cpus={} possible={} uptime_s={} expect={} GLIBC_TUNABLES={} \
         rseq_debug={}",
        uname.0,
        uname.1,
        read_trimmed("/sys/devices/system/cpu/online").unwrap_or_else(|| "?".into()),
        read_trimmed("/sys/devices/system/cpu/possible").unwrap_or_else(|| "?".into()),
        read_trimmed("/proc/uptime")
            .and_then(|u| u.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into()),
        plan.expect_name,
        std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| "<unset>".into()),
        rseq_debug,
    ));
    if !plan.stress.is_file() {
        return Err(format!("{} is missing", plan.stress.display()));
    }
    // Without the probe's word, assume the kernel has mm_cid: its sections must then abort.
    let facts = if plan.probe.is_file() {
        probe(&plan.probe)
    } else {
        String::new()
    };
    let plan = Plan {
        kernel_mm_cid: field(&facts, "mm_cid") != Some("false"),
        ..plan
    };
    let (ops, source) = match &plan.ops {
        Some(ops) => (ops.clone(), "RSEQ_GUEST_OPS"),
        None => discover_ops(&plan.stress)?,
    };
    say(format!("ops {} (from {source})", ops.join(" ")));
    say(format!(
        "args --threads {} --iters {} {}",
        plan.threads,
        plan.iters,
        plan.extra_args.join(" ")
    ));
    let start = Instant::now();
    let (mut passed, mut failed, mut aborts) = (0, 0, 0);
    for op in &ops {
        let outcome = run_op(&plan, op);
        aborts += outcome.aborts;
        if outcome.passed {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if plan.probe.is_file() {
        // The probe has a hand-written section with a system call for these two only.
        let syscall_op = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
        let kconfig = kernel_config(&uname.0);
        let syscall_check = match &kconfig {
            Some((options, source)) => Some(checks_syscalls(options, &rseq_debug, source)),
            None => {
                if syscall_op {
                    say(
                        "note op=syscall-in-section not run: neither RSEQ_GUEST_KCONFIG nor \
                         /boot/config-<release> says whether this kernel checks for system calls \
                         in sections",
                    );
                }
                None
            }
        };
        // Time-slice extension, where the kernel configuration is known.
        if let Some((options, _)) = &kconfig {
            if slice_check(&plan.probe, options, &plan, &uname.0) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        for check in [
            Some(KernelCheck::TamperCpuId),
            syscall_op
                .then_some(KernelCheck::SyscallInSection)
                .filter(|_| syscall_check.is_some()),
        ]
        .into_iter()
        .flatten()
        {
            if kernel_check(
                &plan.probe,
                check,
                &rseq_debug,
                syscall_check.unwrap_or(false),
            ) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    // Abort at every instruction, where the guest has the harness.
    let ptrace = plan.probe.with_file_name("rseq-ptrace");
    if ptrace.is_file() {
        let (ok, n) = ptrace_check(&ptrace, &plan);
        aborts += n;
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    say(format!(
        "done passed={passed} failed={failed} aborts={aborts} elapsed_ms={}",
        start.elapsed().as_millis()
    ));
    Ok(failed == 0)
}

fn plan_from_env() -> Result<Plan, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name}={v} is not a number")),
        }
    };
    let (expect_mode, expect_name) = match var("RSEQ_GUEST_EXPECT").as_deref() {
        Some("glibc") => ("Rseq(Glibc)", "glibc"),
        Some("library") => ("Rseq(Library)", "library"),
        other => {
            return Err(format!(
                "RSEQ_GUEST_EXPECT must be glibc or library, not {other:?}"
            ))
        }
    };
    let programs = if is_init() {
        PathBuf::from("/bin")
    } else {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or("cannot find the directory of this program")?
    };
    let online = read_trimmed("/sys/devices/system/cpu/online")
        .map(|s| cpu_count(&s))
        .filter(|&n| n > 0)
        .unwrap_or(1);
    Ok(Plan {
        stress: var("RSEQ_GUEST_STRESS")
            .map(PathBuf::from)
            .unwrap_or_else(|| programs.join("rseq-stress")),
        probe: programs.join("rseq-probe"),
        expect_mode,
        expect_name,
        ops: var("RSEQ_GUEST_OPS").map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }),
        iters: number("RSEQ_GUEST_ITERS", 100_000)?,
        threads: number("RSEQ_GUEST_THREADS", 2 * online + 2)?,
        extra_args: var("RSEQ_GUEST_ARGS")
            .unwrap_or_else(|| "--signals".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        tries: number("RSEQ_GUEST_TRIES", 4)?.max(1),
        op_timeout: Duration::from_secs(number("RSEQ_GUEST_OP_TIMEOUT", 300)? as u64),
        kernel_mm_cid: true,
    })
}

/// The number of CPUs in a kernel CPU list such as `0-1,4`.
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
            None => part.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// (release, machine) of the running kernel.
fn uname() -> (String, String) {
    // SAFETY: `uname` fills the zeroed struct; its fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return ("?".into(), "?".into());
        }
        let field = |f: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(f.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        (field(&u.release), field(&u.machine))
    }
}

/// `RSEQ_GUEST_OFFLINE`: takes the listed CPUs offline before anything runs, so that the online
/// CPU ids have holes (with `-smp N,maxcpus=M` the possible ids also reach past the online
/// ones): slots must be indexed by id, not by rank among the online CPUs.
fn take_offline(list: &str) -> Result<(), String> {
    for cpu in list.split(',').filter(|c| !c.is_empty()) {
        let cpu: usize = cpu
            .parse()
            .map_err(|_| format!("RSEQ_GUEST_OFFLINE={list}: {cpu} is not a CPU number"))?;
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
        std::fs::write(&path, "0").map_err(|e| {
            format!("RSEQ_GUEST_OFFLINE: writing 0 to {path}: {e} (a kernel without CPU hotplug?)")
        })?;
    }
    Ok(())
}

/// Mounts what the runtime and the guest read: /proc, /sys and devtmpfs on /dev (the initramfs
/// itself holds only /dev/console, which the kernel opened for us).
fn mount_filesystems() -> Result<(), String> {
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
    ] {
        if let Err(e) = std::fs::create_dir_all(target) {
            // Without CONFIG_DEBUG_FS sysfs has no /sys/kernel/debug (and takes no mkdir).
            if fstype == "debugfs" {
                continue;
            }
            return Err(format!("mkdir {target}: {e}"));
        }
        let c = |s: &str| CString::new(s).expect("no NUL in a mount argument");
        let (source_c, target_c, fstype_c) = (c(source), c(target), c(fstype));
        // SAFETY: NUL-terminated strings that outlive the call; no mount data.
        let rc = unsafe {
            libc::mount(
                source_c.as_ptr(),
                target_c.as_ptr(),
                fstype_c.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // A kernel with CONFIG_DEVTMPFS_MOUNT may have mounted /dev already; debugfs is
            // optional (it says whether Linux 7.x checks rseq users: `rseq_debug` on the boot
            // line), and not every kernel has it.
            if err.raw_os_error() != Some(libc::EBUSY) && fstype != "debugfs" {
                return Err(format!("mount {fstype} on {target}: {err}"));
            }
        }
    }
    Ok(())
}

fn power_off() -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SAFETY: plain system calls; as process 1 we may power the machine off. `tcdrain` waits
    // until the console has sent what was written (one CI boot lost its last line, the `done`
    // the host looks for, to a power-off that came first); it fails at once on a non-terminal.
    unsafe {
        libc::tcdrain(1);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    say(format!(
        "error reboot(RB_POWER_OFF) failed: {}",
        std::io::Error::last_os_error()
    ));
    // Process 1 must not exit (the kernel would panic); the host's timeout ends the machine.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Time-slice extension (`op=slice-ext`): `rseq-probe slice-ext` enables it and, where that
/// works, makes the kernel extend short regions while another thread on the same CPU keeps
/// asking for it. What the kernel owes:
/// - built with `CONFIG_RSEQ_SLICE_EXTENSION` and the library's registration (longer than 32
///   bytes on 7.x): enabled, and at least one region extended and then given back with
///   `rseq_slice_yield` (the probe runs until 20 were, or 20 s);
/// - built with it under glibc's 32-byte registration: `LegacyRegistration`;
/// - booted with `rseq_slice_ext=0`: `Disabled` (`LegacyRegistration` under glibc's);
/// - built without it: `Unsupported`, but `LegacyRegistration` under glibc's registration on
///   7.x (which knows the `prctl` and answers a legacy registration first).
fn slice_check(probe: &Path, options: &[String], plan: &Plan, release: &str) -> bool {
    let op = "slice-ext";
    let kernel_major: u32 = release
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let out = match Command::new(probe).arg(op).output() {
        Ok(out) => out,
        Err(e) => {
            say(format!(
                "op={op} status=FAIL outcome=\"cannot run {}: {e}\"",
                probe.display()
            ));
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| field(&stdout, k).unwrap_or("?").to_string();
    let enable = get("slice_enable");
    let outcome = if !out.status.success() {
        format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("no message")
        )
    } else if enable == "ok" {
        format!(
            "enabled; {} regions in {} ms: {} not needed, {} extended and yielded, {} extended \
             and revoked; kernel {}; spinlock on one CPU, preempted holds: plain {}, extended {}",
            get("slice_regions"),
            get("slice_elapsed_ms"),
            get("slice_not_needed"),
            get("slice_yielded"),
            get("slice_revoked"),
            get("slice_kernel_stats"),
            get("slice_lock_plain"),
            get("slice_lock_extended"),
        )
    } else {
        format!("enable: {enable}")
    };
    let built_in = options.iter().any(|o| o == "rseq_slice_extension");
    let (expect, passed) = if !out.status.success() {
        ("the probe to finish", false)
    } else if built_in
        && read_trimmed("/proc/cmdline").is_some_and(|c| c.contains("rseq_slice_ext=0"))
    {
        (
            "Disabled (rseq_slice_ext=0) or LegacyRegistration",
            enable == "Disabled" || enable == "LegacyRegistration",
        )
    } else if built_in && plan.expect_name == "library" {
        let yielded = get("slice_yielded").parse::<u64>().unwrap_or(0);
        (
            "enabled, and regions extended and yielded",
            enable == "ok" && yielded > 0,
        )
    } else if built_in {
        (
            "LegacyRegistration (glibc's 32-byte registration)",
            enable == "LegacyRegistration",
        )
    } else if plan.expect_name == "glibc" && kernel_major >= 7 {
        // 7.x knows the prctl and answers a legacy registration first.
        (
            "LegacyRegistration (glibc's 32-byte registration, on 7.x)",
            enable == "LegacyRegistration",
        )
    } else {
        (
            "Unsupported (no CONFIG_RSEQ_SLICE_EXTENSION)",
            enable == "Unsupported",
        )
    };
    say(format!(
        "op={op} status={} expect=\"{expect}\" outcome=\"{outcome}\"",
        if passed { "ok" } else { "FAIL" }
    ));
    passed
}

/// The listing of the sections `rseq-ptrace --write-listing` made on the host, for the x86_64
/// harness, which needs objdump's instruction boundaries (the guest has no binutils).
const PTRACE_LISTING: &str = "/ptrace.lst";

/// Abort at every instruction (`op=ptrace`): `rseq-ptrace` in this boot's registration must
/// make the kernel abort every kind of section at every instruction of its range, with the
/// effect applied exactly once (`result=ok`, every position covered); and a second run with the
/// deliberately broken `early-store` section must fail on the double-applied effect, which shows
/// the harness can fail on this architecture. Without `mm_cid` (before 6.3) the `mm-cid-add`
/// section runs in the fallback and has no instruction to stop at, so it is left out. Returns
/// whether it passed and the aborts it confirmed.
fn ptrace_check(harness: &Path, plan: &Plan) -> (bool, u64) {
    let op = "ptrace";
    let mode = if plan.expect_name == "glibc" {
        "glibc"
    } else {
        "own"
    };
    let run = |extra: &[&str]| -> Result<(std::process::ExitStatus, String), String> {
        let mut cmd = Command::new(harness);
        cmd.args(["--mode", mode, "--timeout", "600"]).args(extra);
        if Path::new(PTRACE_LISTING).is_file() {
            cmd.args(["--listing", PTRACE_LISTING]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", harness.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status, text))
    };
    const KINDS: [&str; 9] = [
        "counter-add",
        "cmpeq-store",
        "try-store",
        "list-push",
        "list-pop",
        "memcpy",
        "given-cpu",
        "mm-cid-add",
        "deref-add",
    ];
    let kinds: Vec<&str> = KINDS
        .into_iter()
        .filter(|&k| plan.kernel_mm_cid || k != "mm-cid-add")
        .collect();
    let started = Instant::now();
    let number = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (mut positions, mut covered, mut aborts, mut teleported, mut reruns) = (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    let mut output = String::new();
    // The facts the harness checked per kind: whether a ptrace stop alone aborted the section,
    // and where a single step from start_ip went; each distinct answer once.
    let mut facts: Vec<String> = Vec::new();
    match run(&["--kinds", &kinds.join(",")]) {
        Err(e) => problems.push(e),
        Ok((status, text)) => {
            for key in ["ptrace_stop_aborts", "single_step_from_start"] {
                for value in text
                    .lines()
                    .filter(|l| l.starts_with("fact "))
                    .filter_map(|l| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                    })
                {
                    let fact = format!("{key}={value}");
                    if !facts.contains(&fact) {
                        facts.push(fact);
                    }
                }
            }
            for k in &kinds {
                let prefix = format!("mode={mode} kind={k} ");
                match text.lines().find(|l| l.starts_with(&prefix)) {
                    Some(line) => {
                        positions += number(line, "positions");
                        covered += number(line, "covered");
                        aborts += number(line, "aborts");
                        teleported += number(line, "teleported");
                        reruns += number(line, "reruns");
                    }
                    None => problems.push(format!("no summary for {k}")),
                }
            }
            if !status.success() || field(&text, "result") != Some("ok") {
                problems.push(format!("the harness failed ({status})"));
            }
            if positions == 0 || covered != positions {
                problems.push(format!("{covered} of {positions} positions covered"));
            }
            if !problems.is_empty() {
                output = text;
            }
        }
    }
    // The harness must catch a section whose effect precedes its commit.
    let caught = match run(&["--kinds", "early-store"]) {
        Err(e) => {
            problems.push(e);
            false
        }
        Ok((status, text)) => {
            let caught = status.code() == Some(1) && text.contains("effect check failed");
            if !caught {
                problems.push(format!(
                    "the broken early-store section was not caught ({status})"
                ));
                output.push_str(&text);
            }
            caught
        }
    };
    let passed = problems.is_empty();
    say(format!(
        "op={op} status={} aborts={aborts} kinds={} positions={positions} covered={covered} \
         teleported={teleported} reruns={reruns} broken_section_caught={} {} elapsed_ms={}{}",
        if passed { "ok" } else { "FAIL" },
        kinds.len(),
        if caught { "yes" } else { "no" },
        facts.join(" "),
        started.elapsed().as_millis(),
        if passed {
            String::new()
        } else {
            format!(" reason=\"{}\"", problems.join("; "))
        }
    ));
    if !passed {
        dump(&output, "");
    }
    (passed, aborts)
}

/// The kernel configuration options that decide whether it checks for system calls inside
/// critical sections, lower case (`generic_entry`, `debug_rseq`), and where they came from:
/// `RSEQ_GUEST_KCONFIG` (comma-separated, `none` for neither; `.ci/system-test` reads them from
/// the kernel package's config), else `/boot/config-<release>`; `None` if neither exists.
fn kernel_config(release: &str) -> Option<(Vec<String>, &'static str)> {
    if let Ok(list) = std::env::var("RSEQ_GUEST_KCONFIG") {
        let options = list
            .split(',')
            .map(|o| o.trim().to_ascii_lowercase())
            .filter(|o| !o.is_empty() && o != "none")
            .collect();
        return Some((options, "RSEQ_GUEST_KCONFIG"));
    }
    let text = std::fs::read_to_string(format!("/boot/config-{release}")).ok()?;
    let options = ["GENERIC_ENTRY", "DEBUG_RSEQ", "RSEQ_SLICE_EXTENSION"]
        .iter()
        .filter(|o| text.lines().any(|l| l == format!("CONFIG_{o}=y")))
        .map(|o| o.to_ascii_lowercase())
        .collect();
    Some((options, "/boot/config-<release>"))
}

/// Whether a system call inside a critical section gets the process killed, and says why.
/// Linux checks on syscall return: before 7.x only when built with `CONFIG_DEBUG_RSEQ`; from
/// 7.x on, on architectures with the generic entry code (x86_64, s390x, riscv64, …) when
/// `rseq_debug` is on, and elsewhere (aarch64 and powerpc in 7.2) only with
/// `CONFIG_DEBUG_RSEQ`, which 7.x offers only there.
fn checks_syscalls(options: &[String], rseq_debug: &str, source: &str) -> bool {
    let has = |o: &str| options.iter().any(|x| x == o);
    let checks = has("debug_rseq") || (has("generic_entry") && rseq_debug == "1");
    say(format!(
        "kernel-checks syscall_in_section={checks} config={} (from {source}) rseq_debug={rseq_debug}",
        if options.is_empty() {
            "none".to_string()
        } else {
            options.join(",")
        }
    ));
    checks
}

/// A negative test of the kernel's own checks, run after the ops.
#[derive(Clone, Copy)]
enum KernelCheck {
    /// `op=tamper-cpu-id`: `rseq-probe tamper-cpu-id` writes to a field of its area that only
    /// the kernel may write, then migrates.
    TamperCpuId,
    /// `op=syscall-in-section`: `rseq-probe syscall-in-section` makes a system call inside a
    /// critical section (x86_64 and aarch64).
    SyscallInSection,
}

impl KernelCheck {
    fn op(self) -> &'static str {
        match self {
            KernelCheck::TamperCpuId => "tamper-cpu-id",
            KernelCheck::SyscallInSection => "syscall-in-section",
        }
    }

    /// What a run that the kernel killed had printed, for the op line.
    fn killed(self, stdout: &str) -> String {
        match self {
            KernelCheck::TamperCpuId => "killed by SIGSEGV".to_string(),
            // The probe prints its rounds as it goes.
            KernelCheck::SyscallInSection => match stdout
                .lines()
                .filter_map(|l| l.strip_prefix("syscall_in_section_rounds_so_far="))
                .next_back()
            {
                Some(rounds) => format!(
                    "killed by SIGSEGV after rounds (aborts/rseq_cs after the call) {rounds}"
                ),
                None => "killed by SIGSEGV in the first round".to_string(),
            },
        }
    }

    /// What a run that survived printed, for the op line.
    fn survived(self, stdout: &str) -> String {
        match self {
            KernelCheck::TamperCpuId => format!(
                "survived, cpu_id_start {} -> {}",
                field(stdout, "tamper_cpu_id_start_before").unwrap_or("?"),
                field(stdout, "tamper_cpu_id_start_after").unwrap_or("?")
            ),
            KernelCheck::SyscallInSection => format!(
                "survived, the call returned into the section (rounds, aborts/rseq_cs after \
                 the call: {})",
                field(stdout, "syscall_in_section_rounds").unwrap_or("?")
            ),
        }
    }
}

/// The kernel checking us: runs the probe's negative test `check` in a child. `rseq_debug` is
/// what the boot line says of Linux 7.x's checks of rseq users:
/// - `1`: the kernel must kill it with SIGSEGV;
/// - `-` (no such switch: before 7.x, or a kernel without debugfs): it must survive (for
///   `tamper-cpu-id`, with the field rewritten by the kernel);
/// - `0`: a 32-byte registration (glibc's) must survive; for `tamper-cpu-id` a larger one (the
///   library's on 7.x, which the kernel treats as its "V2" ABI and may always check) may go
///   either way, and the line says which it was.
///
/// Any other outcome fails: a debug kernel that let it live would not be checking, and a kill
/// elsewhere would mean the kernel objects to something else.
fn kernel_check(probe: &Path, check: KernelCheck, rseq_debug: &str, syscall_check: bool) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    let op = check.op();
    let (outcome, killed, stdout) = match Command::new(probe).arg(op).output() {
        Err(e) => (
            format!("cannot run {}: {e}", probe.display()),
            None,
            String::new(),
        ),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let (outcome, killed) = match out.status.signal() {
                Some(libc::SIGSEGV) => (check.killed(&stdout), Some(true)),
                Some(sig) => (format!("killed by signal {sig}"), None),
                None if out.status.success() => (check.survived(&stdout), Some(false)),
                None => (
                    format!(
                        "exit {}: {}",
                        out.status,
                        stderr.lines().next().unwrap_or("no message")
                    ),
                    None,
                ),
            };
            (outcome, killed, stdout)
        }
    };
    // Only `tamper-cpu-id`'s outcome depends on the registration's length.
    let large = field(&stdout, "tamper_owner") == Some("Library")
        && field(&stdout, "tamper_registration_len")
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| l > 32);
    let (expect, passed) = match (rseq_debug, check) {
        (_, KernelCheck::SyscallInSection) if syscall_check => {
            ("killed by SIGSEGV", killed == Some(true))
        }
        // No check on every system call's return, but Linux 7.x's debug mode validates the
        // section whenever it handles an rseq event on the way back to user space. A call that
        // was scheduled out or migrated (for a 32-byte registration, any switch) returns with
        // one pending, the kernel finds the IP inside a section it was not interrupted in, and
        // kills: whether that happens in 8 rounds is up to the scheduler, so either outcome
        // passes, and the op line says which it was. Every round before must have found the
        // section untouched.
        ("1", KernelCheck::SyscallInSection) => (
            "survives with the section untouched, or killed by SIGSEGV (an rseq event pending \
             on a call's return)",
            match killed {
                Some(true) => {
                    rounds_untouched(&stdout, "syscall_in_section_rounds_so_far").unwrap_or(true)
                }
                Some(false) => {
                    rounds_untouched(&stdout, "syscall_in_section_rounds").unwrap_or(false)
                }
                None => false,
            },
        ),
        // Every round must have found the section still set after the call: a kernel that
        // looked would have cleared it.
        (_, KernelCheck::SyscallInSection) => (
            "survives, the section untouched",
            killed == Some(false)
                && rounds_untouched(&stdout, "syscall_in_section_rounds").unwrap_or(false),
        ),
        ("1", _) => ("killed by SIGSEGV", killed == Some(true)),
        ("0", KernelCheck::TamperCpuId) if large => (
            "either (a registration larger than 32 bytes)",
            killed.is_some(),
        ),
        (_, KernelCheck::TamperCpuId) => ("survives, the field rewritten", killed == Some(false)),
    };
    say(format!(
        "op={op} status={} rseq_debug={rseq_debug} expect=\"{expect}\" outcome=\"{outcome}\"",
        if passed { "ok" } else { "FAIL" }
    ));
    passed
}

/// Whether every round of `syscall-in-section` in the last `key=` line of `stdout` found the
/// section still set right after the call (`None`: no such line).
fn rounds_untouched(stdout: &str, key: &str) -> Option<bool> {
    let prefix = format!("{key}=");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .next_back()
        .map(|rounds| rounds.split(',').all(|r| !r.ends_with("/0x0")))
}

/// Prints what the runtime finds on this kernel (`rseq-probe facts`) on one line, and returns
/// those `key=value` lines.
fn probe(program: &Path) -> String {
    match Command::new(program).arg("facts").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let facts: Vec<&str> = text.lines().filter(|l| l.contains('=')).collect();
            say(format!("probe {} exit={}", facts.join(" "), out.status));
            text
        }
        Err(e) => {
            say(format!("probe error={e}"));
            String::new()
        }
    }
}

/// The ops `rseq-stress` offers: `rseq-stress --list` if it understands that, else the `ops:`
/// line of the usage text it prints for an unknown op.
fn discover_ops(stress: &Path) -> Result<(Vec<String>, &'static str), String> {
    let out = Command::new(stress)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", stress.display()))?;
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .filter(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
            .map(str::to_string)
            .collect()
    };
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ops = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line
                .strip_prefix("ops:")
                .or_else(|| line.strip_prefix("ops="))
                .unwrap_or(line);
            ops.extend(words(line));
        }
        if !ops.is_empty() {
            return Ok((ops, "rseq-stress --list"));
        }
    }
    let usage = String::from_utf8_lossy(&out.stderr);
    let ops = usage
        .lines()
        .find_map(|l| l.trim().strip_prefix("ops:"))
        .map(words)
        .unwrap_or_default();
    if ops.is_empty() {
        return Err(format!(
            "rseq-stress lists no ops (neither --list nor an `ops:` usage line): {usage}"
        ));
    }
    Ok((ops, "rseq-stress usage"))
}

/// The value of `key=` in `key=value` lines.
fn field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// One run of `rseq-stress`.
enum Run {
    Finished {
        success: bool,
        stdout: String,
        stderr: String,
    },
    TimedOut {
        stdout: String,
    },
}

fn run_stress(plan: &Plan, op: &str, iters: usize) -> Result<Run, String> {
    let out_path = std::env::temp_dir().join(format!("rseq-guest-{}.out", std::process::id()));
    let err_path = std::env::temp_dir().join(format!("rseq-guest-{}.err", std::process::id()));
    let out = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let err = File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
    let mut child = Command::new(&plan.stress)
        .args([op, "--threads", &plan.threads.to_string()])
        .args(["--iters", &iters.to_string()])
        .args(&plan.extra_args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.stress.display()))?;
    let deadline = Instant::now() + plan.op_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for rseq-stress: {e}")),
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(match status {
        Some(status) => Run::Finished {
            success: status.success(),
            stdout,
            stderr,
        },
        None => Run::TimedOut { stdout },
    })
}

/// Ops whose runs pass without a kernel abort, and why: their checks are not about restarts.
/// Their aborts are still counted and printed.
const ABORTS_NOT_REQUIRED: &[(&str, &str)] = &[
    (
        "migration",
        "its checks are of CPU ids across migrations, and its few sections sit between \
         getcpu(2) calls: under TCG on powerpc they saw 0-3 aborts per run (46-110 on the other \
         arches)",
    ),
    (
        "barrier",
        "its checks are of the membarrier API and of fence ordering; its two threads take turns \
         with their sections and no signal storm reaches them",
    ),
];

/// A run without aborts shorter than this does not count against `tries`: a short op (`fork`
/// runs for about 100 ms) gets few signals and preemptions under TCG, where a vCPU thread that
/// runs the workers can starve the main thread that sends the signals (powerpc64 BE once saw 24
/// signals and no abort in each of 4 runs, the longest 517 ms). The iterations still double, so
/// the runs soon last long enough to count.
const SHORT_RUN: Duration = Duration::from_secs(1);

/// Runs `op` until a run passes with aborts, doubling the iterations after a run without any
/// (at most `tries` runs that last `SHORT_RUN` or longer, and `tries + SHORT_RUNS_MAX` runs in
/// all; one run for the ops of `ABORTS_NOT_REQUIRED`); prints the op's line.
fn run_op(plan: &Plan, op: &str) -> OpOutcome {
    /// Short runs allowed beyond `tries` (with doubling iterations, 2^8 times the first run's).
    const SHORT_RUNS_MAX: usize = 8;
    let mut aborts_total = 0;
    let mut attempt = 0;
    let mut counted = 0;
    loop {
        attempt += 1;
        let iters = plan.iters.saturating_mul(1 << (attempt - 1).min(16));
        let fail = |status: &str, details: String, reason: String, aborts: u64| {
            say(format!(
                "op={op} status={status}{details} tries={attempt} reason=\"{}\"",
                reason.replace('"', "'")
            ));
            OpOutcome {
                passed: false,
                aborts,
            }
        };
        let (success, stdout, stderr) = match run_stress(plan, op, iters) {
            Ok(Run::Finished {
                success,
                stdout,
                stderr,
            }) => (success, stdout, stderr),
            Ok(Run::TimedOut { stdout }) => {
                let secs = plan.op_timeout.as_secs();
                let reason = format!("killed after {secs}s");
                let outcome = fail("timeout", String::new(), reason, aborts_total);
                dump(&stdout, "");
                return outcome;
            }
            Err(e) => return fail("FAIL", String::new(), e, aborts_total),
        };
        let get = |key: &str| field(&stdout, key).unwrap_or("?");
        let aborts: u64 = get("aborts").parse().unwrap_or(0);
        aborts_total += aborts;
        let mut details = format!(
            " mode={} aborts={aborts} signals_sent={} ops={} iters={iters} elapsed_ms={}",
            get("mode"),
            get("signals_sent"),
            get("ops"),
            get("elapsed_ms"),
        );
        // What `barrier` found out about this kernel's membarrier.
        for key in ["heavy", "sync_core", "forbidden"] {
            if let Some(value) = field(&stdout, key) {
                details.push_str(&format!(" {key}={value}"));
            }
        }
        let elapsed_ms: u64 = get("elapsed_ms").parse().unwrap_or(u64::MAX);
        if elapsed_ms >= SHORT_RUN.as_millis() as u64 {
            counted += 1;
        }
        let reason = if !success || get("result") != "ok" {
            format!(
                "rseq-stress failed: {}",
                stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
            )
        } else if get("mode") != plan.expect_mode {
            format!("mode is not {}", plan.expect_mode)
        } else if aborts > 0 {
            say(format!("op={op} status=ok{details} tries={attempt}"));
            return OpOutcome {
                passed: true,
                aborts: aborts_total,
            };
        } else if get("index") == "mm_cid"
            && !plan.kernel_mm_cid
            && get("fallback_sections") == get("ops")
        {
            // A kernel before 6.3 has no mm_cid: such sections run in the fallback, all of
            // them (checked), and cannot abort. A section indexed by cpu_id still must.
            say(format!(
                "op={op} status=ok{details} tries={attempt} note=\"no abort, not required: \
                 the kernel has no mm_cid, and all {} sections ran in the fallback\"",
                get("ops")
            ));
            return OpOutcome {
                passed: true,
                aborts: aborts_total,
            };
        } else if let Some((_, why)) = ABORTS_NOT_REQUIRED.iter().find(|(o, _)| *o == op) {
            say(format!(
                "op={op} status=ok{details} tries={attempt} note=\"no abort, not required: {why}\""
            ));
            return OpOutcome {
                passed: true,
                aborts: aborts_total,
            };
        } else if counted < plan.tries && attempt < plan.tries + SHORT_RUNS_MAX {
            say(format!("op={op} retry{details} run={attempt}"));
            continue;
        } else {
            format!(
                "no section aborted in {attempt} runs ({counted} of them {} ms or longer)",
                SHORT_RUN.as_millis()
            )
        };
        let outcome = fail("FAIL", details, reason, aborts_total);
        dump(&stdout, &stderr);
        return outcome;
    }
}

/// Shows a failed run's output.
fn dump(stdout: &str, stderr: &str) {
    for l in stdout.lines().chain(stderr.lines()) {
        say(format!("| {l}"));
    }
}
