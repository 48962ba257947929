//! Helpers for the project's own tests (feature `test-support`): not part of the API.

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

/// Makes the fallback use `slots` slot locks instead of one per possible CPU, as on a machine
/// (or a container) with that many CPUs; call it before the first section or fence. Fails with
/// the current count if the table exists already.
pub fn set_fallback_slots(slots: usize) -> Result<(), usize> {
    crate::fallback::init_with(slots.max(1))
}

/// Runs `test` of the calling test binary again, alone, in a child process with `env=case` in
/// its environment, and returns its output. A child still running after `timeout` is killed and
/// the call panics with its stderr: a hang fails the test instead of hanging it.
pub fn run_test_in_child(
    test: &str,
    env: &str,
    case: &str,
    timeout: std::time::Duration,
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, case)
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
    child.wait_with_output().expect("the child's output")
}
