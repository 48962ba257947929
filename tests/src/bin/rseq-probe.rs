//! A small program the integration tests run in child processes, so that each run has its own
//! environment (glibc's registration on or off, `RSEQ_DISABLE`, a seccomp filter, valgrind)
//! and its own process-wide mode. Prints `key=value` lines; exits non-zero on a failed check.

use rseq::{abi, sys, FenceError, Mode, RegistrationError};
use rseq_tests::{allow_cpus, allowed_cpus, pin_to_cpu};
use std::cell::Cell;
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("probe check failed: {msg}");
    exit(1)
}

fn check(cond: bool, msg: impl std::fmt::Display) {
    if !cond {
        fail(msg)
    }
}

/// Facts, then what the library decided from them. `kernel_rseq` comes from an invalid `rseq`
/// call (no area, length 0): `EINVAL` where the kernel implements rseq, whether the thread is
/// registered or not, and nothing is registered; `ENOSYS` under qemu-user, valgrind and kernels
/// before 4.18.
fn facts() {
    // SAFETY: with a length of 0 the kernel rejects the call before it looks at the area.
    let answer = unsafe { sys::rseq(core::ptr::null_mut(), 0, 0, 0) };
    println!("kernel_rseq={}", answer != Err(libc::ENOSYS));
    println!(
        "kernel_rseq_answer={}",
        match answer {
            Ok(()) => "success".to_string(),
            Err(e) => std::io::Error::from_raw_os_error(e).to_string(),
        }
    );
    let glibc = sys::glibc_rseq();
    println!("glibc_registered={}", glibc.is_some_and(|g| g.size != 0));
    let mode = rseq::mode();
    println!("mode={mode:?}");
    println!("rseq={}", mode.is_rseq());
    println!("owner={:?}", rseq::owner());
    let f = rseq::features();
    println!("feature_size={}", f.feature_size);
    println!("align={}", f.align);
    println!("registration_len={}", f.registration_len);
    println!("node_id={}", f.node_id);
    println!("mm_cid={}", f.mm_cid);
    println!("slice_ctrl={}", f.slice_ctrl);
    println!("possible_cpus={}", rseq::possible_cpus());
    println!("register={:?}", rseq::register_current_thread());
    println!("glibc={glibc:?}");
}

/// Pins itself to every allowed CPU in turn and compares the accessors with the kernel's
/// answer, on the main thread and on a second thread.
fn pin_check() {
    let cpus = allowed_cpus();
    let n = cpus.len();
    let check_all = move |who: &str| {
        for &cpu in &cpus {
            check(pin_to_cpu(cpu), format!("cannot pin to cpu {cpu}"));
            // The pin takes effect before sched_setaffinity returns; the area is updated on the
            // way back to user space.
            let ours = rseq::current_cpu();
            let kernel = sys::sched_getcpu();
            check(
                ours == cpu && kernel == cpu,
                format!("{who}: pinned to {cpu}, current_cpu {ours}, sched_getcpu {kernel}"),
            );
            let cid = rseq::current_mm_cid();
            check(
                cid < rseq::possible_cpus(),
                format!("{who}: mm_cid {cid} out of range"),
            );
            let node = rseq::current_node();
            check(
                node == sys::getcpu_node(),
                format!("{who}: node {node} != getcpu's {}", sys::getcpu_node()),
            );
        }
        allow_cpus(&cpus);
    };
    check_all.clone()("main");
    std::thread::spawn(move || check_all("thread"))
        .join()
        .unwrap_or_else(|_| fail("thread panicked"));
    println!("pinned_cpus={n}");
    println!("pin_check=ok");
}

/// `index = given(cpu)`: a thread pinned to one CPU that names another gets the `moved` value,
/// and no slot changes; naming its own CPU, it commits there. The same in every mode (the
/// fallback checks the CPU under the slot lock, as rseq checks it inside the section).
#[rseq::critical_section(index = given(cpu), moved = None)]
fn add_on(counts: &rseq::PerCpu<AtomicUsize>, cpu: usize, n: usize) -> Option<usize> {
    let seen = load(counts[cpu]);
    commit::add(counts[cpu], n);
    Some(seen)
}

fn given_cpu() {
    let cpus = allowed_cpus();
    let possible = rseq::possible_cpus();
    let counts: rseq::PerCpu<AtomicUsize> = rseq::PerCpu::default();
    let total = |counts: &rseq::PerCpu<AtomicUsize>| -> Vec<usize> {
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    };
    let mut checked_elsewhere = 0;
    for &cpu in &cpus {
        check(pin_to_cpu(cpu), format!("cannot pin to cpu {cpu}"));
        let before = total(&counts);
        let got = add_on(&counts, cpu, 1);
        let mut expected = before.clone();
        expected[cpu] += 1;
        check(
            got == Some(before[cpu]) && total(&counts) == expected,
            format!(
                "pinned to {cpu}, naming it: got {got:?}, slots {:?}",
                total(&counts)
            ),
        );
        for other in (0..possible).filter(|&o| o != cpu) {
            let before = total(&counts);
            let got = add_on(&counts, other, 1);
            check(
                got.is_none() && total(&counts) == before,
                format!(
                    "pinned to {cpu}, naming {other}: got {got:?} (expected the moved value), slots {:?} (before {before:?})",
                    total(&counts)
                ),
            );
            checked_elsewhere += 1;
        }
    }
    allow_cpus(&cpus);
    println!("given_cpu_elsewhere={checked_elsewhere}");
    println!("given_cpu=ok");
}

/// The kernel's answers for a thread registered by the library (run with glibc's registration
/// off): EBUSY, EPERM, EINVAL, then a foreign registration that demotes the process.
fn errors() {
    check(
        rseq::register_current_thread() == Ok(rseq::Owner::Library),
        "expected own registration",
    );
    let area = rseq::__private::area_ptr();
    let len = rseq::features().registration_len as u32;
    let again =
        |area, sig| unsafe { sys::rseq(area, len, 0, sig) }.map_err(RegistrationError::from_errno);
    let busy = again(area, sys::SIGNATURE);
    println!("same_area={busy:?}");
    check(
        busy == Err(RegistrationError::AlreadyRegistered),
        "same area: expected EBUSY",
    );
    let perm = again(area, sys::SIGNATURE ^ 1);
    println!("wrong_signature={perm:?}");
    check(
        perm == Err(RegistrationError::SignatureMismatch),
        "wrong signature: expected EPERM",
    );
    let other: &'static mut abi::RseqArea = Box::leak(Box::new(abi::RseqArea::UNREGISTERED));
    let inval = again(other, sys::SIGNATURE);
    println!("other_area={inval:?}");
    check(
        inval == Err(RegistrationError::RegisteredElsewhere),
        "other area: expected EINVAL",
    );

    // A thread that someone else registered first: the library cannot register it, says why,
    // and demotes the process (sections everywhere switch to the fallback).
    let demoted = std::thread::spawn(|| {
        let foreign: &'static mut abi::RseqArea = Box::leak(Box::new(abi::RseqArea::UNREGISTERED));
        let len = rseq::features().registration_len as u32;
        unsafe { sys::rseq(foreign, len, 0, sys::SIGNATURE) }
            .unwrap_or_else(|e| fail(format!("foreign registration: errno {e}")));
        let ours = rseq::register_current_thread();
        let cpu = rseq::current_cpu();
        unsafe { sys::rseq(foreign, len, abi::RSEQ_FLAG_UNREGISTER, sys::SIGNATURE) }
            .unwrap_or_else(|e| fail(format!("foreign unregistration: errno {e}")));
        (ours, cpu)
    })
    .join()
    .unwrap_or_else(|_| fail("thread panicked"));
    println!("foreign_thread={:?}", demoted.0);
    check(
        demoted.0 == Err(RegistrationError::RegisteredElsewhere),
        "foreign thread: expected EINVAL",
    );
    check(
        demoted.1 < rseq::possible_cpus(),
        "current_cpu out of range on a foreign thread",
    );
    println!("mode_after={:?}", rseq::mode());
    check(
        rseq::mode()
            == Mode::Fallback(rseq::FallbackReason::Demoted(
                RegistrationError::RegisteredElsewhere,
            )),
        "expected demotion to Fallback",
    );
    check(
        rseq::__private::INDEX_LIMIT.load(Ordering::SeqCst) == 0,
        "index limit must be 0 after demotion",
    );
    check(rseq::stats().demotions == 1, "one demotion");
    println!("errors=ok");
}

/// Under a seccomp filter that makes rseq fail with `errno` (glibc's registration off).
fn seccomp(errno: i32) {
    rseq_tests::deny_rseq_with(errno).unwrap_or_else(|e| fail(format!("seccomp: {e}")));
    let mode = rseq::mode();
    println!("mode={mode:?}");
    let expected = RegistrationError::from_errno(errno);
    check(
        mode == Mode::Fallback(rseq::FallbackReason::Registration(expected)),
        format!("expected Fallback({expected:?})"),
    );
    check(
        rseq::register_current_thread() == Err(expected),
        "register_current_thread must give the same error",
    );
    let cpu = rseq::current_cpu();
    check(
        cpu == sys::sched_getcpu() || cpu < rseq::possible_cpus(),
        "current_cpu out of range",
    );
    println!("message={expected}");
    println!("seccomp=ok");
}

/// Membarrier denied (as on Linux 4.18–5.9): the process stays on rseq and fences by moving
/// the thread between CPUs; with `sched_setaffinity` denied too, nothing can fence sections and
/// the process takes the fallback, saying why.
fn seccomp_fences(deny_affinity: bool) {
    rseq_tests::deny_membarrier().unwrap_or_else(|e| fail(format!("seccomp: {e}")));
    if deny_affinity {
        rseq_tests::deny_syscall_with(libc::SYS_sched_setaffinity, libc::EPERM)
            .unwrap_or_else(|e| fail(format!("seccomp: {e}")));
    }
    let mode = rseq::mode();
    println!("mode={mode:?}");
    println!("fence={:?}", rseq::fence_mechanism());
    if deny_affinity {
        check(
            matches!(mode, Mode::Fallback(rseq::FallbackReason::Membarrier(_))),
            "expected Fallback(Membarrier(..))",
        );
        if let Mode::Fallback(rseq::FallbackReason::Membarrier(e)) = mode {
            println!("message={e}");
        }
    } else {
        check(mode.is_rseq(), "expected an Rseq mode");
        check(
            rseq::fence_mechanism() == rseq::FenceMechanism::Migration,
            "expected fences by migration",
        );
        let before = allowed_cpus();
        rseq::fence_all().unwrap_or_else(|e| fail(format!("fence_all: {e}")));
        for &cpu in &before {
            rseq::fence_cpu(cpu).unwrap_or_else(|e| fail(format!("fence_cpu({cpu}): {e}")));
        }
        check(
            allowed_cpus() == before,
            "the fences must restore the thread's affinity",
        );
    }
    println!("seccomp=ok");
}

/// Creates and joins `n` threads that each use rseq; every own registration must be undone.
/// Prints how much resident memory grew, for the test to bound where it measures this library
/// (under qemu-user it mostly measures the emulator's own per-thread memory).
fn churn(n: usize) {
    let before = rseq::stats();
    let rss_before = rss_kib();
    let batch = 50;
    let mut done = 0;
    while done < n {
        let handles: Vec<_> = (0..batch.min(n - done))
            .map(|_| std::thread::spawn(|| rseq::current_cpu() + rseq::current_mm_cid()))
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|_| fail("thread panicked"));
        }
        done += batch.min(n - done);
    }
    let after = rseq::stats();
    let rss_after = rss_kib();
    let registered = after.registrations - before.registrations;
    let unregistered = after.unregistrations - before.unregistrations;
    println!("mode={:?}", rseq::mode());
    println!("threads={n}");
    println!("registrations={registered}");
    println!("unregistrations={unregistered}");
    println!("unregistration_failures={}", after.unregistration_failures);
    println!("rss_growth_kib={}", rss_after.saturating_sub(rss_before));
    if rseq::owner() == Some(rseq::Owner::Library) {
        check(
            registered == n as u64 && unregistered == n as u64,
            "every thread registers once and unregisters at exit",
        );
    } else {
        check(
            registered == 0 && unregistered == 0,
            "the library registers nothing when it does not own registration",
        );
    }
    check(
        after.unregistration_failures == 0,
        "no unregistration may fail",
    );
    println!("churn=ok");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })?
        })
        .unwrap_or(0)
}

thread_local! {
    static LATE_RESULT: Cell<bool> = const { Cell::new(false) };
}

/// A thread-local whose destructor runs after the library's exit hook (it was created before
/// the thread registered, and destructors run in reverse order of creation).
struct LateUser(Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for LateUser {
    fn drop(&mut self) {
        let mut log = self.0.lock().unwrap();
        log.push(format!("register={:?}", rseq::register_current_thread()));
        let before = rseq::stats();
        let seen = rseq::__private::with_temporary_registration(|| {
            let area = rseq::__private::area_ptr();
            let cpu = unsafe { core::ptr::read_volatile(&raw const (*area).cpu_id) };
            Some(cpu)
        });
        let after = rseq::stats();
        log.push(format!("temporary_cpu={seen:?}"));
        log.push(format!(
            "temporary_registrations={}",
            after.temporary_registrations - before.temporary_registrations
        ));
        log.push(format!(
            "registrations_in_dtor={}",
            after.registrations - before.registrations
        ));
        log.push(format!(
            "area_after_is_live={}",
            (unsafe { (*rseq::__private::area_ptr()).cpu_id } as i32) >= 0
        ));
        log.push(format!("current_cpu={}", rseq::current_cpu()));
    }
}

thread_local! {
    static LATE: std::cell::RefCell<Option<LateUser>> = const { std::cell::RefCell::new(None) };
}

fn late_destructor() {
    check(
        rseq::owner() == Some(rseq::Owner::Library),
        "run with glibc's registration off",
    );
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    std::thread::spawn(move || {
        LATE.with(|l| *l.borrow_mut() = Some(LateUser(l2)));
        check(rseq::register_current_thread().is_ok(), "registration");
    })
    .join()
    .unwrap_or_else(|_| fail("thread panicked"));
    let log = log.lock().unwrap();
    for line in log.iter() {
        println!("{line}");
    }
    let get = |k: &str| {
        log.iter()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    check(
        get("register") == "Err(ThreadExiting)",
        "no re-registration after the exit hook",
    );
    let cpu = get("temporary_cpu");
    check(
        cpu.starts_with("Some(") && !cpu.contains("4294967295"),
        "the temporary area must be live (kernel-written cpu_id)",
    );
    check(
        get("temporary_registrations") == "1",
        "one temporary registration",
    );
    check(
        get("registrations_in_dtor") == "0",
        "the TLS area is not registered again",
    );
    check(
        get("area_after_is_live") == "false",
        "the area pointer is back to the sentinel",
    );
    println!("late_destructor=ok");
}

fn fork_check() {
    let owner = rseq::register_current_thread();
    println!("parent_register={owner:?}");
    rseq::fence_all().unwrap_or_else(|e| fail(format!("parent fence: {e}")));
    let parent_area = rseq::__private::area_ptr() as usize;
    // SAFETY: the child only runs async-signal-safe work plus our own code, single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork failed");
    }
    if pid == 0 {
        // Child: same thread state, same area address, and the kernel agrees it is registered.
        // It pins itself before comparing CPU numbers: unpinned, it may move between the two
        // reads (seen under qemu-user on a busy host).
        let here = sys::sched_getcpu();
        let failed = if rseq::__private::area_ptr() as usize != parent_area {
            "the area moved"
        } else if !pin_to_cpu(here) {
            "cannot pin to the current cpu"
        } else if rseq::current_cpu() != here || sys::sched_getcpu() != here {
            "current_cpu differs from sched_getcpu while pinned"
        } else if rseq::fence_all().is_err() {
            "fence_all failed"
        } else if rseq::fence_cpu(0).is_err() {
            "fence_cpu(0) failed"
        } else if matches!(owner, Ok(rseq::Owner::Library)) && {
            let len = rseq::features().registration_len as u32;
            (unsafe { sys::rseq(rseq::__private::area_ptr(), len, 0, sys::SIGNATURE) })
                != Err(libc::EBUSY)
        } {
            "registering again did not give EBUSY"
        } else if std::thread::spawn(rseq::current_cpu).join().is_err() {
            "a thread of the child failed"
        } else {
            ""
        };
        if !failed.is_empty() {
            let msg = format!("fork child: {failed}\n");
            // SAFETY: writes a buffer we own to stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
        unsafe { libc::_exit(if failed.is_empty() { 0 } else { 3 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    check(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        format!("child failed: status {status:#x}"),
    );
    check(
        rseq::current_cpu() == sys::sched_getcpu() || rseq::current_cpu() < rseq::possible_cpus(),
        "parent cpu",
    );
    rseq::fence_all().unwrap_or_else(|e| fail(format!("parent fence after fork: {e}")));
    println!("fork=ok");
}

fn fences() {
    rseq::fence_all().unwrap_or_else(|e| fail(format!("fence_all: {e}")));
    for cpu in allowed_cpus() {
        rseq::fence_cpu(cpu).unwrap_or_else(|e| fail(format!("fence_cpu({cpu}): {e}")));
    }
    // The index after the last CPU is the fallback's spare slot (fenced by its lock); one more
    // is past every slot.
    let spare = rseq::possible_cpus();
    check(
        rseq::fence_cpu(spare).is_ok(),
        "fence_cpu of the spare slot",
    );
    let bad = spare + 1;
    check(
        rseq::fence_cpu(bad) == Err(FenceError::InvalidCpu(bad)),
        "fence_cpu past the spare slot",
    );
    if !rseq::mode().is_rseq() {
        // The fallback fence waits for the slot's lock holder.
        let released = Arc::new(AtomicBool::new(false));
        let guard_taken = Arc::new(AtomicBool::new(false));
        let (r, g) = (released.clone(), guard_taken.clone());
        let holder = std::thread::spawn(move || {
            let guard = rseq::__private::lock_slot(0);
            g.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            r.store(true, Ordering::SeqCst);
            drop(guard);
        });
        while !guard_taken.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        rseq::fence_cpu(0).unwrap();
        check(
            released.load(Ordering::SeqCst),
            "fallback fence returned while slot 0 was held",
        );
        holder.join().unwrap();
        println!("fallback_fence_waited=true");
    }
    println!("fences=ok");
}

/// The value `tamper-cpu-id` writes to `cpu_id_start`: no CPU has that number.
const TAMPERED_CPU_ID: u32 = 0x00de_ad00;

/// A negative test of the kernel's own checks: writes a number no CPU has to this thread's
/// `cpu_id_start`, a field only the kernel may write, then moves to each allowed CPU (a
/// migration makes the kernel update the ids on the way back to user space). A kernel that
/// checks what user space does with its area (Linux 7.x booted with `rseq_debug=1`, or built
/// with `CONFIG_DEBUG_RSEQ`; on 7.x also any registration of more than the original 32 bytes,
/// which the kernel treats as its optimised "V2" ABI) kills the process with SIGSEGV there;
/// the others overwrite the field, and the probe prints what it reads back and exits 0. The
/// caller runs it in a child and decides which outcome the kernel owes it.
fn tamper_cpu_id() {
    check(rseq::mode().is_rseq(), "the process is not in Rseq mode");
    check(
        rseq::register_current_thread().is_ok(),
        "this thread has no area",
    );
    let cpus = allowed_cpus();
    check(
        cpus.len() >= 2,
        "tamper-cpu-id needs two CPUs to migrate between",
    );
    let area = rseq::registration::area_ptr();
    println!(
        "tamper_owner={:?}",
        rseq::owner().expect("Rseq mode has an owner")
    );
    // The library registers the whole area the kernel describes; glibc its own (32 bytes).
    println!(
        "tamper_registration_len={}",
        rseq::features().registration_len
    );
    println!("tamper_cpu_id_start_before={}", rseq::current_cpu());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SAFETY: `area` is this thread's live, registered area (checked above); a volatile store
    // of a u32 field. Writing it breaks the ABI on purpose: that is the test.
    unsafe { core::ptr::addr_of_mut!((*area).cpu_id_start).write_volatile(TAMPERED_CPU_ID) };
    for round in 0..4 {
        for &cpu in &cpus {
            check(pin_to_cpu(cpu), format!("cannot pin to CPU {cpu}"));
            std::thread::sleep(Duration::from_millis(1 + round));
        }
    }
    // SAFETY: as above; a volatile load.
    let now = unsafe { core::ptr::addr_of!((*area).cpu_id_start).read_volatile() };
    println!("tamper_survived=true");
    println!("tamper_cpu_id_start_after={now}");
    check(
        now != TAMPERED_CPU_ID,
        "the kernel neither killed the process nor rewrote cpu_id_start after migrations",
    );
}

/// A negative test of the kernel's own checks: a system call made inside a critical section,
/// which the rseq ABI forbids (the kernel cannot restart a section across one), in eight
/// rounds. A kernel that checks its rseq users on syscall return (Linux 7.x on an architecture
/// with the generic entry code, booted with `rseq_debug=1`, or one built with
/// `CONFIG_DEBUG_RSEQ`) kills the process with SIGSEGV; the others return from the call into
/// the section, and the probe exits 0. After each round it prints how often the section was
/// aborted before the call completed (a preemption during the call restarts it) and what
/// `rseq_cs` held right after the call: the descriptor, where the kernel did not look at it.
/// The caller runs it in a child and decides which outcome the kernel owes it.
///
/// Linux 7.2 and 7.3 (x86_64, `rseq_debug=1`) kill a 32-byte registration (glibc's) in the
/// first round; with a larger one (the library's, which they treat as their "V2" ABI) the
/// first round of the process returns with `rseq_cs` cleared, as if the call had been made
/// outside the section, and the second is killed (the same when the first round ran on another
/// thread). Hence several rounds.
///
/// The section is written by hand here, for x86_64 and aarch64 (the architectures the 7.x
/// guests run): the library's generator has no step that makes a system call, on purpose.
fn syscall_in_section() {
    check(rseq::mode().is_rseq(), "the process is not in Rseq mode");
    check(
        rseq::register_current_thread().is_ok(),
        "this thread has no area",
    );
    println!(
        "syscall_owner={:?}",
        rseq::owner().expect("Rseq mode has an owner")
    );
    println!(
        "syscall_registration_len={}",
        rseq::features().registration_len
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let area = rseq::registration::area_ptr();
    let mut rounds = Vec::new();
    for _ in 0..8 {
        // SAFETY: `area` is this thread's live, registered area; the section only stores to
        // its `rseq_cs` field and makes a getpid call.
        let (pid, aborts, after) = unsafe { getpid_in_section(area) };
        check(
            pid == std::process::id() as usize,
            format!("getpid in the section returned {pid}"),
        );
        rounds.push(format!("{aborts}/{after:#x}"));
        // Printed as it goes, so that a kill shows how many rounds the process survived.
        println!("syscall_in_section_rounds_so_far={}", rounds.join(","));
        let _ = std::io::stdout().flush();
    }
    println!("syscall_in_section_survived=true");
    // Per round: aborts before the call returned into the section / `rseq_cs` right after it
    // (non-zero: the kernel did not look at the section on the way back).
    println!("syscall_in_section_rounds={}", rounds.join(","));
}

/// The descriptor of `getpid_in_section`'s section, label `2:` (section `4:`–`5:`, abort
/// handler `6:`), in a writable data section of its own: not `__rseq_cs`, so tools that check
/// the library's tables do not see it.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! syscall_section_descriptor {
    () => {
        concat!(
            ".pushsection .data.rseq_probe_syscall, \"aw\"\n",
            ".balign 32\n",
            "2:\n",
            ".long 0, 0\n",
            ".quad 4f, 5f - 4f, 6f\n",
            ".popsection",
        )
    };
}

/// Makes `getpid` from inside a critical section of its own (descriptor, section, signed abort
/// handler that starts again); returns the pid, the number of aborts and what `rseq_cs` held
/// right after the call returned.
#[cfg(target_arch = "x86_64")]
unsafe fn getpid_in_section(area: *mut abi::RseqArea) -> (usize, u64, u64) {
    let pid: usize;
    let after: u64;
    let mut aborts: u64 = 0;
    // SAFETY: the caller passes the live area; the asm writes only its `rseq_cs` field.
    unsafe {
        core::arch::asm!(
            syscall_section_descriptor!(),
            "3:",
            "lea {tmp}, [rip + 2b]",
            "mov qword ptr [{area} + {cs}], {tmp}",
            "mov eax, {nr}",
            "4:",
            "syscall",
            // The call returns here, inside the section: `5:` is its end.
            "mov {after}, qword ptr [{area} + {cs}]",
            "5:",
            "mov qword ptr [{area} + {cs}], 0",
            "jmp 7f",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "6:",
            "add {aborts}, 1",
            "jmp 3b",
            "7:",
            area = in(reg) area,
            cs = const abi::OFFSET_RSEQ_CS,
            nr = const libc::SYS_getpid,
            tmp = out(reg) _,
            after = out(reg) after,
            aborts = inout(reg) aborts,
            out("rax") pid,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    (pid, aborts, after)
}

/// As the x86_64 version: `svc #0` inside the section.
#[cfg(target_arch = "aarch64")]
unsafe fn getpid_in_section(area: *mut abi::RseqArea) -> (usize, u64, u64) {
    let pid: usize;
    let after: u64;
    let mut aborts: u64 = 0;
    // SAFETY: as the x86_64 version.
    unsafe {
        core::arch::asm!(
            syscall_section_descriptor!(),
            "3:",
            "adrp {tmp}, 2b",
            "add {tmp}, {tmp}, :lo12:2b",
            "str {tmp}, [{area}, #{cs}]",
            "mov x8, #{nr}",
            "4:",
            "svc #0",
            // The call returns here, inside the section: `5:` is its end.
            "ldr {after}, [{area}, #{cs}]",
            "5:",
            "str xzr, [{area}, #{cs}]",
            "b 7f",
            ".inst 0xd428bc00",
            "6:",
            "add {aborts}, {aborts}, #1",
            "b 3b",
            "7:",
            area = in(reg) area,
            cs = const abi::OFFSET_RSEQ_CS,
            nr = const libc::SYS_getpid,
            tmp = out(reg) _,
            after = out(reg) after,
            aborts = inout(reg) aborts,
            out("x0") pid,
            out("x8") _,
            options(nostack),
        );
    }
    (pid, aborts, after)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn getpid_in_section(_area: *mut abi::RseqArea) -> (usize, u64, u64) {
    fail("syscall-in-section has a hand-written section for x86_64 and aarch64 only")
}

/// Time-slice extension (`rseq::slice`): prints what `SliceExtension::enable` answers
/// (`slice_enable=ok` or the error, with its message) and, where it is enabled, makes the
/// kernel grant extensions: this thread and a second one are pinned to one CPU, the second
/// sleeping 50 µs at a time, so the scheduler keeps wanting the CPU back while this one runs
/// short regions under `request`. It runs until 20 regions were extended and yielded or 20 s
/// passed, and prints how the regions ended (`slice_yielded` and `slice_revoked` count
/// extensions) and the kernel's slice counters where debugfs has them.
///
/// With `deny ERRNO`, `prctl` is first denied with that error number by a seccomp filter (to
/// see each answer of the kernel mapped to its error).
fn slice_ext(deny: Option<i32>) {
    use rseq::slice::{Finish, SliceExtension};
    if let Some(errno) = deny {
        rseq_tests::deny_syscall_with(libc::SYS_prctl, errno)
            .unwrap_or_else(|e| fail(format!("seccomp: {e}")));
    }
    println!("slice_mode={:?}", rseq::mode());
    println!("slice_available={}", rseq::slice::available());
    let ext = match SliceExtension::enable() {
        Ok(ext) => ext,
        Err(e) => {
            println!("slice_enable={e:?}");
            println!("slice_message={e}");
            return;
        }
    };
    println!("slice_enable=ok");
    check(
        rseq::slice::enabled() == Ok(true),
        format!("enabled() says {:?} after enable", rseq::slice::enabled()),
    );
    check(
        rseq::slice::available(),
        "enabled, but the area's AVAILABLE flag is clear",
    );
    // SAFETY: a live area of this thread (enable registered it); a volatile read.
    let flags =
        unsafe { core::ptr::addr_of!((*rseq::registration::area_ptr()).flags).read_volatile() };
    check(
        flags & abi::RSEQ_CS_FLAG_SLICE_EXT_ENABLED != 0,
        format!("enabled, but the area's flags are {flags:#x}"),
    );
    let cpu = *allowed_cpus().last().expect("an allowed CPU");
    check(pin_to_cpu(cpu), format!("cannot pin to CPU {cpu}"));
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            check(pin_to_cpu(cpu), format!("noise: cannot pin to CPU {cpu}"));
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let (mut not_needed, mut yielded, mut revoked, mut regions) = (0u64, 0u64, 0u64, 0u64);
    let start = std::time::Instant::now();
    while yielded < 20 && start.elapsed() < Duration::from_secs(20) {
        let request = ext.request();
        short_region(regions);
        match request.finish() {
            Finish::NotNeeded => not_needed += 1,
            Finish::Yielded => yielded += 1,
            Finish::Revoked => revoked += 1,
        }
        regions += 1;
    }
    stop.store(true, Ordering::Relaxed);
    noise.join().expect("noise thread");
    println!("slice_regions={regions}");
    println!("slice_not_needed={not_needed}");
    println!("slice_yielded={yielded}");
    println!("slice_revoked={revoked}");
    println!("slice_elapsed_ms={}", start.elapsed().as_millis());
    if let Ok(stats) = std::fs::read_to_string("/sys/kernel/debug/rseq/stats") {
        let line: Vec<String> = stats
            .lines()
            .filter(|l| {
                ["sgrant:", "sexpir:", "srevok:", "syield:", "sabort:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .join("")
                    .replace(':', "=")
            })
            .collect();
        println!("slice_kernel_stats={}", line.join(","));
    }
    ext.disable()
        .unwrap_or_else(|e| fail(format!("disable: {e}")));
    check(
        rseq::slice::enabled() == Ok(false),
        "enabled() still true after disable",
    );
    // The use it is for, side by side: a spinlock three threads on one CPU take in turn, with
    // and without asking for extensions while they hold it, two rounds of each, alternating.
    let (mut plain, mut extended) = (LockRun::default(), LockRun::default());
    for _ in 0..2 {
        plain.add(spinlock_run(cpu, false, Duration::from_millis(500)));
        extended.add(spinlock_run(cpu, true, Duration::from_millis(500)));
    }
    for (name, run) in [("plain", plain), ("extended", extended)] {
        println!(
            "slice_lock_{name}=holds:{},preempted_holds:{},per_100k:{:.1}",
            run.holds,
            run.preempted,
            run.preempted as f64 * 1e5 / run.holds.max(1) as f64
        );
    }
}

/// The work of one region under a slice request: a few dozen instructions, well inside the
/// kernel's 5 µs extension even under emulation.
fn short_region(seed: u64) {
    let mut x = seed;
    for i in 0..20u64 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    std::hint::black_box(x);
}

/// What `spinlock_run` counted.
#[derive(Default, Clone, Copy)]
struct LockRun {
    holds: u64,
    /// Holds that lasted more than `PREEMPTED_HOLD`: the holder was scheduled out with the lock.
    preempted: u64,
}

impl LockRun {
    fn add(&mut self, other: LockRun) {
        self.holds += other.holds;
        self.preempted += other.preempted;
    }
}

/// A hold of a few hundred instructions that lasted this long was scheduled out in the middle.
const PREEMPTED_HOLD: Duration = Duration::from_micros(200);

/// Three threads pinned to `cpu` take a test-and-set spinlock in turn for `time`, each hold a
/// short region; with `extend`, each holder asks for a time-slice extension while it holds the
/// lock. Counts the holds and those the holder was preempted in.
fn spinlock_run(cpu: usize, extend: bool, time: Duration) -> LockRun {
    static LOCKED: AtomicBool = AtomicBool::new(false);
    let deadline = std::time::Instant::now() + time;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                check(pin_to_cpu(cpu), format!("lock: cannot pin to CPU {cpu}"));
                let ext = extend.then(|| {
                    rseq::slice::SliceExtension::enable()
                        .unwrap_or_else(|e| fail(format!("lock: enable: {e}")))
                });
                let mut run = LockRun::default();
                while std::time::Instant::now() < deadline {
                    while LOCKED.swap(true, Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let request = ext.as_ref().map(|e| e.request());
                    let held = std::time::Instant::now();
                    short_region(run.holds);
                    if held.elapsed() > PREEMPTED_HOLD {
                        run.preempted += 1;
                    }
                    LOCKED.store(false, Ordering::Release);
                    drop(request);
                    run.holds += 1;
                }
                run
            })
        })
        .collect();
    let mut total = LockRun::default();
    for w in workers {
        total.add(w.join().expect("lock worker"));
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("facts") => facts(),
        Some("pin-check") => pin_check(),
        Some("given-cpu") => given_cpu(),
        Some("errors") => errors(),
        Some("seccomp-enosys") => seccomp(libc::ENOSYS),
        Some("seccomp-eperm") => seccomp(libc::EPERM),
        Some("seccomp-no-membarrier") => seccomp_fences(false),
        Some("seccomp-no-fences") => seccomp_fences(true),
        Some("churn") => churn(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000)),
        Some("late-destructor") => late_destructor(),
        Some("fork") => fork_check(),
        Some("fences") => fences(),
        Some("tamper-cpu-id") => tamper_cpu_id(),
        Some("syscall-in-section") => syscall_in_section(),
        Some("slice-ext") => slice_ext(None),
        Some("slice-ext-deny") => slice_ext(Some(
            args.get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| fail("slice-ext-deny needs an error number")),
        )),
        _ => {
            eprintln!("usage: rseq-probe facts|pin-check|given-cpu|errors|seccomp-enosys|seccomp-eperm|seccomp-no-membarrier|seccomp-no-fences|churn [N]|late-destructor|fork|fences|tamper-cpu-id|syscall-in-section|slice-ext|slice-ext-deny ERRNO");
            exit(2)
        }
    }
}
