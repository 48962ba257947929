//! Abort at every instruction: a ptrace harness that makes the kernel abort each kind of
//! generated critical section at every instruction of `[start_ip, start_ip + post_commit_offset)`
//! and checks that the section's effect is then absent at the abort and applied exactly once by
//! the retry: never half-applied, never applied twice. Runs on x86_64, aarch64, riscv64,
//! powerpc64 (both endiannesses) and s390x; `.ci/system-test` runs it in every guest.
//!
//! ```text
//! rseq-ptrace [--mode glibc|own|both] [--kinds K,K,…] [--tamper-abort-target] [--timeout SECS]
//!             [--listing FILE] [-v]
//! rseq-ptrace --write-listing FILE        (x86_64)
//! kinds: counter-add cmpeq-store try-store list-push list-pop memcpy given-cpu mm-cid-add deref-add
//!        early-store (deliberately broken, only when named)
//! ```
//!
//! The program is both tracer and tracee. The tracer starts itself again with `--tracee` under
//! `PTRACE_TRACEME` (a fresh `execve`, so `GLIBC_TUNABLES=glibc.pthread.rseq=0` takes effect for
//! `--mode own`); the tracee pins itself to one CPU, runs every section once (which attaches the
//! thread), reports its `__rseq_cs` descriptors, then runs one section per command and checks
//! the exact end state. For each section kind the tracer
//!
//! 1. finds the section's descriptor: a breakpoint on every descriptor's `start_ip`, one run per
//!    input (all inputs must reach the same one); the area's `rseq_cs` must point at it;
//! 2. lists the instructions of `[start_ip, start_ip + post_commit_offset)`: on x86_64 with
//!    `objdump` (or from a `--listing` that `--write-listing` made where binutils are, for a
//!    machine without them), elsewhere by decoding each instruction's length from the tracee's
//!    memory (4 bytes on aarch64 and powerpc64; 2 or 4 on riscv64, 2, 4 or 6 on s390x, from
//!    the first bits). They must tile the range exactly, the last one a store to memory: the
//!    commit;
//! 3. for every instruction position and every input of the kind (inputs that take the fail or
//!    `moved` exits reach positions the others skip): plants the breakpoint instruction there
//!    (`int3`, `brk #0`, `ebreak`/`c.ebreak`, `trap`, s390x's `0x0001`), lets the section run
//!    into it, puts the IP back onto the instruction, restores it, and resumes with `SIGUSR1`:
//!    the kernel's signal-delivery fixup must move the IP to the descriptor's `abort_ip` before
//!    the handler runs (the handler reads the interrupted IP from its `ucontext`), the abort
//!    counter must advance, the retry must complete, and the effect must be exactly one
//!    application. A position no input reaches fails the run, unless it is the jump of an
//!    out-of-line exit (aarch64, riscv64 and powerpc64 branch over one after the bounds check
//!    of the CPU index, which only an unregistered thread fails): the tracer stops the section
//!    at `start_ip`, moves the IP onto the jump and resumes with `SIGUSR1` (`teleported=N`).
//!    A run that misses its breakpoint after a natural abort (the thread was preempted before
//!    reaching it, and the retry ran in the cold path's own copy of the section) is run again,
//!    up to 10 times (`reruns=N`).
//!
//! A ptrace stop schedules the tracee out, which by itself makes the kernel abort a section
//! stopped inside its range on the way back to user space; so single-stepping through a section
//! is impossible (it aborts at the first step; riscv64's ptrace has no single-step). The tracer
//! checks both facts once per kind and prints them as `fact` lines.
//!
//! Prints per mode and kind `mode=… kind=… positions=N covered=N aborts=N failures=0 …` and a
//! final `result=ok`; exits 1 on any failure (with one `FAIL` line per failed run), 2 on bad
//! usage. `--kinds early-store` adds a section whose visible effect is a speculative store before
//! the commit, and `--tamper-abort-target` points a descriptor's `abort_ip` at another section's
//! signed abort handler (which the kernel accepts): both must be reported as failures.

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x"
))]
fn main() {
    harness::main()
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)))]
fn main() {
    eprintln!(
        "rseq-ptrace: runs on x86_64, aarch64, riscv64, powerpc64(le) and s390x, whose breakpoint \
         instructions, registers and signal frames it knows"
    );
    std::process::exit(2);
}

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x"
))]
mod harness {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{exit, Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::time::Instant;

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("--tracee") {
            tracee::main()
        }
        #[cfg(target_arch = "x86_64")]
        if args.first().map(String::as_str) == Some("--write-listing") {
            match args.get(1) {
                Some(path) => exit(tracer::write_listing(path)),
                None => usage("--write-listing needs a file"),
            }
        }
        let opts = parse_args(&args);
        exit(tracer::main(&opts))
    }

    /// The kinds of section the harness drives, one generated section each.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Kind {
        CounterAdd,
        CmpeqStore,
        TryStore,
        ListPush,
        ListPop,
        Memcpy,
        GivenCpu,
        MmCidAdd,
        DerefAdd,
        /// Deliberately broken: only run when named.
        EarlyStore,
    }

    impl Kind {
        pub const ALL: [Kind; 10] = [
            Kind::CounterAdd,
            Kind::CmpeqStore,
            Kind::TryStore,
            Kind::ListPush,
            Kind::ListPop,
            Kind::Memcpy,
            Kind::GivenCpu,
            Kind::MmCidAdd,
            Kind::DerefAdd,
            Kind::EarlyStore,
        ];

        pub fn name(self) -> &'static str {
            match self {
                Kind::CounterAdd => "counter-add",
                Kind::CmpeqStore => "cmpeq-store",
                Kind::TryStore => "try-store",
                Kind::ListPush => "list-push",
                Kind::ListPop => "list-pop",
                Kind::Memcpy => "memcpy",
                Kind::GivenCpu => "given-cpu",
                Kind::MmCidAdd => "mm-cid-add",
                Kind::DerefAdd => "deref-add",
                Kind::EarlyStore => "early-store",
            }
        }

        /// The inputs the tracee knows for this kind; together they reach every instruction.
        pub fn inputs(self) -> &'static [&'static str] {
            match self {
                Kind::CounterAdd | Kind::MmCidAdd | Kind::DerefAdd | Kind::EarlyStore => &["add"],
                Kind::CmpeqStore => &["equal", "differ"],
                Kind::TryStore => &["room", "full"],
                Kind::ListPush => &["empty", "nonempty"],
                Kind::ListPop => &["nonempty", "empty"],
                Kind::Memcpy => &["copy", "occupied", "zero-length"],
                Kind::GivenCpu => &["here", "elsewhere"],
            }
        }

        pub fn from_name(name: &str) -> Option<Kind> {
            Kind::ALL.into_iter().find(|k| k.name() == name)
        }

        /// Whether the kind is a deliberately broken section (not run unless named).
        pub fn broken(self) -> bool {
            self == Kind::EarlyStore
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Registration {
        /// glibc registers the thread (the default on glibc ≥ 2.35).
        Glibc,
        /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`: the library registers its own area.
        Own,
    }

    impl Registration {
        pub fn name(self) -> &'static str {
            match self {
                Registration::Glibc => "glibc",
                Registration::Own => "own",
            }
        }
    }

    pub struct Options {
        pub modes: Vec<Registration>,
        pub kinds: Vec<Kind>,
        pub tamper_abort_target: bool,
        pub timeout_secs: u32,
        pub verbose: bool,
        /// x86_64: an objdump listing of the sections to read instead of running objdump.
        pub listing: Option<String>,
    }

    const USAGE: &str = "usage: rseq-ptrace [--mode glibc|own|both] [--kinds K,K,...] \
                         [--tamper-abort-target] [--timeout SECS] [--listing FILE] [-v]\n       \
                         rseq-ptrace --write-listing FILE   (x86_64: objdump's listing of the \
                         sections, for --listing where objdump is missing)\n\
                         kinds: counter-add cmpeq-store try-store list-push list-pop memcpy \
                         given-cpu mm-cid-add deref-add, and early-store (deliberately broken)";

    fn usage(msg: &str) -> ! {
        eprintln!("rseq-ptrace: {msg}\n{USAGE}");
        exit(2)
    }

    fn parse_args(args: &[String]) -> Options {
        let mut opts = Options {
            modes: vec![Registration::Glibc, Registration::Own],
            kinds: Kind::ALL.into_iter().filter(|k| !k.broken()).collect(),
            tamper_abort_target: false,
            timeout_secs: 150,
            verbose: false,
            listing: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--mode" => {
                    opts.modes = match it.next().map(String::as_str) {
                        Some("glibc") => vec![Registration::Glibc],
                        Some("own") => vec![Registration::Own],
                        Some("both") => vec![Registration::Glibc, Registration::Own],
                        _ => usage("--mode takes glibc, own or both"),
                    }
                }
                "--kinds" => {
                    let list = it.next().unwrap_or_else(|| usage("--kinds needs a list"));
                    opts.kinds = list
                        .split(',')
                        .map(|k| {
                            Kind::from_name(k)
                                .unwrap_or_else(|| usage(&format!("unknown kind {k}")))
                        })
                        .collect();
                }
                "--tamper-abort-target" => opts.tamper_abort_target = true,
                "--timeout" => {
                    opts.timeout_secs = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&v| v > 0)
                        .unwrap_or_else(|| usage("--timeout needs a number of seconds"))
                }
                "-v" | "--verbose" => opts.verbose = true,
                "--listing" if cfg!(target_arch = "x86_64") => {
                    opts.listing = Some(
                        it.next()
                            .unwrap_or_else(|| usage("--listing needs a file"))
                            .clone(),
                    )
                }
                other => usage(&format!("unknown argument {other}")),
            }
        }
        opts
    }

    /// One `struct rseq_cs` as the tracee's memory holds it (run-time addresses).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Descriptor {
        pub address: u64,
        pub start_ip: u64,
        pub post_commit_offset: u64,
        pub abort_ip: u64,
    }

    impl Descriptor {
        pub fn end(&self) -> u64 {
            self.start_ip + self.post_commit_offset
        }
    }

    /// The sections, run by the tracee. Each is called from exactly one place (`tracee::execute`)
    /// and never inlined, so that the binary holds one copy of each, which the tracer finds by
    /// its descriptor (inlined into `execute`, a release build duplicated one per input).
    mod sections {
        use rseq::{critical_section, PerCpu};
        use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};

        /// Every section counts its kernel aborts here.
        pub static ABORTS: AtomicUsize = AtomicUsize::new(0);

        /// Capacity of a [`Buf`].
        pub const CAP: usize = 16;

        #[repr(C)]
        pub struct Node {
            pub next: AtomicPtr<Node>,
            pub id: usize,
        }

        #[repr(C)]
        #[derive(Default)]
        pub struct Buf {
            pub len: AtomicUsize,
            pub items: [AtomicUsize; CAP],
        }

        /// The counter is not the first field, so the field offset matters.
        #[repr(C)]
        pub struct Target {
            pub id: usize,
            pub count: AtomicU64,
        }

        /// add: `*v += n` (commit::add).
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub fn counter_add(counters: &PerCpu<AtomicU64>, n: u64) {
            commit::add(counters[cpu], n);
        }

        /// cmpeq-store: `if *v == expect { *v = new }` (commit::store, one fail exit).
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub fn cmpeq_store(
            v: &PerCpu<AtomicUsize>,
            expect: usize,
            new: usize,
        ) -> Result<(), usize> {
            let seen = load(v[cpu]);
            if seen != expect {
                fail(Err(seen))
            }
            commit::store(v[cpu], new);
            Ok(())
        }

        /// try-store: `items[len] = item` (speculative), then `len += 1` with a release commit,
        /// unless full.
        ///
        /// # Safety
        /// None beyond the bound checked in the section.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub unsafe fn try_store(bufs: &PerCpu<Buf>, item: usize) -> bool {
            let len = load(bufs[cpu].len);
            if len >= { CAP } {
                fail(false)
            }
            store(bufs[cpu].items[len], item);
            let grown = add(len, 1);
            commit::store_release(bufs[cpu].len, grown);
            true
        }

        /// push: `node->next = head` (speculative, through a pointer), then `head = node`.
        ///
        /// # Safety
        /// `node` is valid and on no list.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub unsafe fn list_push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
            let head = load(heads[cpu]);
            store((*node).next, head);
            commit::store_release(heads[cpu], node);
        }

        /// pop: `h = head; if h == null fail; head = h->next` (a load through a loaded pointer).
        ///
        /// # Safety
        /// Every node on the lists is valid.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub unsafe fn list_pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
            let head: *mut Node = load(heads[cpu]);
            if head == null {
                fail(None)
            }
            let next = load((*head).next);
            commit::store(heads[cpu], next);
            Some(head)
        }

        /// memcpy: copy `len` bytes into `dst` (a loop), then publish `dst` if the slot is empty.
        ///
        /// # Safety
        /// `src`/`dst` are valid for `len` bytes; `dst` is not visible to other threads.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub unsafe fn publish(
            slots: &PerCpu<AtomicUsize>,
            dst: *mut u8,
            src: *const u8,
            len: usize,
        ) -> bool {
            let current = load(slots[cpu]);
            if current != 0 {
                fail(false)
            }
            memcpy(dst, src, len);
            commit::store_release(slots[cpu], dst);
            true
        }

        /// librseq's style: the caller computed the CPU; `false` (the `moved` exit) if the
        /// thread is not on it.
        #[critical_section(index = given(cpu), moved = false, aborts = ABORTS)]
        #[inline(never)]
        pub fn add_on(counters: &PerCpu<AtomicU64>, cpu: usize, n: u64) -> bool {
            commit::add(counters[cpu], n);
            true
        }

        /// add, indexed by the concurrency id.
        #[critical_section(index = mm_cid, aborts = ABORTS)]
        #[inline(never)]
        pub fn counter_add_mm_cid(counters: &PerCpu<AtomicU64>, n: u64) {
            commit::add(counters[cpu], n);
        }

        /// deref-add: `(*slot)->count += n` (the commit goes through a loaded pointer).
        ///
        /// # Safety
        /// Every slot points at a valid `Target`.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub unsafe fn deref_add(p: &PerCpu<AtomicPtr<Target>>, n: u64) {
            let target: *mut Target = load(p[cpu]);
            commit::add((*target).count, n);
        }

        /// DELIBERATELY BROKEN, to show the harness catches it: the visible effect (the counter)
        /// is a speculative store, and the commit only sets a flag. An abort between the two
        /// leaves the counter increased, and the retry increases it again.
        #[critical_section(aborts = ABORTS)]
        #[inline(never)]
        pub fn early_store_add(counters: &PerCpu<AtomicU64>, done: &PerCpu<AtomicUsize>, n: usize) {
            let old = load(counters[cpu]);
            let new = add(old, n);
            store(counters[cpu], new);
            commit::store(done[cpu], 1);
        }
    }

    /// The child: runs sections on command and checks their effect.
    mod tracee {
        use super::sections::*;
        use super::{Descriptor, Kind};
        use rseq::PerCpu;
        use std::io::{BufRead, Write};
        use std::process::exit;
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};

        /// Bytes copied by `memcpy`.
        const ITEM: usize = 64;
        /// What the counter sections add.
        const N: u64 = 5;

        /// What the SIGUSR1 handler saw: how often it ran and the interrupted IP of the last run.
        static HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);
        static HANDLER_IP: AtomicU64 = AtomicU64::new(0);
        /// Set from each command: the abort IP the kernel must send the thread to, and the
        /// section's range (an IP inside it means the kernel did not abort).
        static EXPECT_ABORT: AtomicU64 = AtomicU64::new(0);
        static RANGE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

        extern "C" {
            static __start___rseq_cs: rseq::abi::RseqCs;
            static __stop___rseq_cs: rseq::abi::RseqCs;
        }

        /// The descriptors as this process's memory holds them (after relocation).
        pub(super) fn descriptors() -> Vec<Descriptor> {
            let start = &raw const __start___rseq_cs;
            let stop = &raw const __stop___rseq_cs;
            let n = (stop as usize - start as usize) / std::mem::size_of::<rseq::abi::RseqCs>();
            // SAFETY: the linker places every `__rseq_cs` input section between the two symbols.
            let table = unsafe { std::slice::from_raw_parts(start, n) };
            table
                .iter()
                .map(|d| Descriptor {
                    address: d as *const _ as u64,
                    start_ip: d.start_ip,
                    post_commit_offset: d.post_commit_offset,
                    abort_ip: d.abort_ip,
                })
                .collect()
        }

        /// Writes `bytes` to stdout with `write(2)` only (usable in a signal handler).
        fn raw_write(bytes: &[u8]) {
            // SAFETY: writes from a valid buffer to fd 1.
            unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
        }

        fn hex(v: u64, out: &mut [u8; 18]) -> &[u8] {
            out[0] = b'0';
            out[1] = b'x';
            for i in 0..16 {
                let nibble = (v >> ((15 - i) * 4)) & 0xf;
                out[2 + i] = b"0123456789abcdef"[nibble as usize];
            }
            &out[..]
        }

        extern "C" fn on_sigusr1(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
            // SAFETY: the kernel passes the interrupted context of an SA_SIGINFO handler.
            let ip = unsafe { interrupted_ip(&*(ctx as *const libc::ucontext_t)) };
            HANDLER_CALLS.fetch_add(1, SeqCst);
            HANDLER_IP.store(ip, SeqCst);
            let expected = EXPECT_ABORT.load(SeqCst);
            let inside = (RANGE[0].load(SeqCst)..RANGE[1].load(SeqCst)).contains(&ip);
            if ip != expected && !inside {
                // Returning would resume at `ip`, some other code's abort handler, whose jump
                // lands in another function's frame: report and stop here.
                let (mut a, mut b) = ([0u8; 18], [0u8; 18]);
                raw_write(b"result=fail handler_calls=1 handler_ip=");
                raw_write(hex(ip, &mut a));
                raw_write(b" why=the kernel resumed the thread at ");
                raw_write(hex(ip, &mut a));
                raw_write(b", not at the descriptor's abort_ip ");
                raw_write(hex(expected, &mut b));
                raw_write(b"\n");
                // SAFETY: async-signal-safe exit without unwinding.
                unsafe { libc::_exit(3) };
            }
        }

        /// The IP a signal interrupted, from the handler's context.
        fn interrupted_ip(uc: &libc::ucontext_t) -> u64 {
            #[cfg(target_arch = "x86_64")]
            let ip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
            #[cfg(target_arch = "aarch64")]
            let ip = uc.uc_mcontext.pc;
            #[cfg(target_arch = "riscv64")]
            let ip = uc.uc_mcontext.__gregs[0]; // REG_PC
            #[cfg(target_arch = "powerpc64")]
            let ip = uc.uc_mcontext.gp_regs[32]; // PT_NIP
            #[cfg(target_arch = "s390x")]
            let ip = uc.uc_mcontext.psw.addr;
            ip
        }

        fn install_handler() {
            // SAFETY: a zeroed sigaction with an SA_SIGINFO handler that only touches atomics
            // and calls write/_exit.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_sigusr1
                    as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as libc::sighandler_t;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                    die(&format!("sigaction: {}", std::io::Error::last_os_error()));
                }
            }
        }

        fn die(msg: &str) -> ! {
            println!("fatal={msg}");
            let _ = std::io::stdout().flush();
            exit(1)
        }

        /// The load bias of the executable (0 unless it is position independent).
        pub(super) fn load_bias() -> u64 {
            unsafe extern "C" fn first(
                info: *mut libc::dl_phdr_info,
                _: libc::size_t,
                out: *mut libc::c_void,
            ) -> libc::c_int {
                // SAFETY: `info` is valid during the callback; `out` is the `u64` passed below.
                unsafe { *(out as *mut u64) = (*info).dlpi_addr };
                1 // the first object is the executable: stop
            }
            let mut bias = 0u64;
            // SAFETY: the callback only writes `bias`.
            unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut bias).cast()) };
            bias
        }

        /// The data every section works on; reset before each run.
        struct World {
            counters: PerCpu<AtomicU64>,
            words: PerCpu<AtomicUsize>,
            bufs: PerCpu<Buf>,
            heads: PerCpu<AtomicPtr<Node>>,
            /// `2 * slots + 1` nodes: a first and a second node per slot, and one to push.
            nodes: Box<[Node]>,
            targets: Box<[Target]>,
            target_slots: PerCpu<AtomicPtr<Target>>,
            done: PerCpu<AtomicUsize>,
            src: [u8; ITEM],
            /// Leaked: written through a raw pointer by `publish`.
            dst: *mut u8,
        }

        impl World {
            fn new() -> World {
                let slots = PerCpu::<AtomicU64>::default().len();
                let mut src = [0u8; ITEM];
                for (i, b) in src.iter_mut().enumerate() {
                    *b = (i as u8).wrapping_mul(37).wrapping_add(11);
                }
                World {
                    counters: PerCpu::default(),
                    words: PerCpu::default(),
                    bufs: PerCpu::default(),
                    heads: PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut())),
                    nodes: (0..2 * slots + 1)
                        .map(|id| Node {
                            next: AtomicPtr::new(std::ptr::null_mut()),
                            id,
                        })
                        .collect(),
                    targets: (0..slots)
                        .map(|id| Target {
                            id,
                            count: AtomicU64::new(0),
                        })
                        .collect(),
                    target_slots: PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut())),
                    done: PerCpu::default(),
                    src,
                    dst: Box::leak(Box::new([0u8; ITEM])).as_mut_ptr(),
                }
            }

            fn slots(&self) -> usize {
                self.counters.len()
            }

            fn node(&self, i: usize) -> *mut Node {
                &self.nodes[i] as *const Node as *mut Node
            }

            fn dst_bytes(&self) -> Vec<u8> {
                // SAFETY: `dst` is ITEM bytes, leaked, written only by `publish` on this thread.
                unsafe { std::slice::from_raw_parts(self.dst, ITEM) }.to_vec()
            }
        }

        fn counters_state(c: &PerCpu<AtomicU64>) -> Vec<u64> {
            c.iter().map(|v| v.load(SeqCst)).collect()
        }

        /// Exactly one slot went from `before` to `after`, every other slot is unchanged.
        fn one_slot_changed<T: PartialEq + std::fmt::Debug>(
            what: &str,
            state: &[T],
            before: impl Fn(usize) -> T,
            after: impl Fn(usize) -> T,
        ) -> Result<usize, String> {
            let mut changed = None;
            for (i, v) in state.iter().enumerate() {
                if *v == before(i) {
                    continue;
                }
                if *v != after(i) || changed.is_some() {
                    return Err(format!(
                        "{what}: expected exactly one slot to go from {:?} to {:?}, found {state:?}",
                        before(i),
                        after(i)
                    ));
                }
                changed = Some(i);
            }
            changed.ok_or_else(|| format!("{what}: no slot changed, found {state:?}"))
        }

        fn unchanged<T: PartialEq + std::fmt::Debug>(
            what: &str,
            state: &[T],
            before: impl Fn(usize) -> T,
        ) -> Result<(), String> {
            match state.iter().enumerate().find(|(i, v)| **v != before(*i)) {
                None => Ok(()),
                Some((i, v)) => Err(format!(
                    "{what}: slot {i} changed to {v:?} although the section failed (all: {state:?})"
                )),
            }
        }

        /// Sets the data up for `input`, runs `kind`'s section once, and checks that its effect
        /// was applied exactly once (or not at all, for inputs that take a fail exit).
        #[inline(never)]
        fn execute(w: &World, kind: Kind, input: &str) -> Result<(), String> {
            let slots = w.slots();
            match kind {
                Kind::CounterAdd | Kind::MmCidAdd => {
                    w.counters.iter().for_each(|c| c.store(0, SeqCst));
                    if kind == Kind::CounterAdd {
                        counter_add(&w.counters, N);
                    } else {
                        counter_add_mm_cid(&w.counters, N);
                    }
                    one_slot_changed("counters", &counters_state(&w.counters), |_| 0, |_| N)?;
                }
                Kind::CmpeqStore => {
                    w.words.iter().for_each(|v| v.store(10, SeqCst));
                    let expect = if input == "equal" { 10 } else { 9 };
                    let r = cmpeq_store(&w.words, expect, 11);
                    let state: Vec<usize> = w.words.iter().map(|v| v.load(SeqCst)).collect();
                    match (input, r) {
                        ("equal", Ok(())) => {
                            one_slot_changed("words", &state, |_| 10, |_| 11)?;
                        }
                        ("differ", Err(10)) => unchanged("words", &state, |_| 10)?,
                        (_, r) => return Err(format!("cmpeq_store returned {r:?} for `{input}`")),
                    }
                }
                Kind::TryStore => {
                    let len = if input == "room" { 3 } else { CAP };
                    for b in w.bufs.iter() {
                        b.len.store(len, SeqCst);
                        for (i, item) in b.items.iter().enumerate() {
                            item.store(if i < len { i + 1 } else { 0 }, SeqCst);
                        }
                    }
                    // SAFETY: the section checks the bound.
                    let r = unsafe { try_store(&w.bufs, 99) };
                    let lens: Vec<usize> = w.bufs.iter().map(|b| b.len.load(SeqCst)).collect();
                    for (s, b) in w.bufs.iter().enumerate() {
                        for i in 0..len {
                            let item = b.items[i].load(SeqCst);
                            if item != i + 1 {
                                return Err(format!("buffer {s} item {i} became {item}"));
                            }
                        }
                    }
                    match (input, r) {
                        ("room", true) => {
                            let s = one_slot_changed("buffer lengths", &lens, |_| 3, |_| 4)?;
                            let item = w.bufs.get(s).unwrap().items[3].load(SeqCst);
                            if item != 99 {
                                return Err(format!("buffer {s} grew but holds {item}, not 99"));
                            }
                        }
                        ("full", false) => unchanged("buffer lengths", &lens, |_| CAP)?,
                        (_, r) => return Err(format!("try_store returned {r} for `{input}`")),
                    }
                }
                Kind::ListPush => {
                    let initial = |s: usize| {
                        if input == "nonempty" {
                            w.node(s)
                        } else {
                            std::ptr::null_mut()
                        }
                    };
                    for (s, h) in w.heads.iter().enumerate() {
                        h.store(initial(s), SeqCst);
                    }
                    let pushed = w.node(2 * slots);
                    w.nodes[2 * slots].next.store(w.node(0), SeqCst); // stale, must be replaced
                                                                      // SAFETY: the node is valid and on no list.
                    unsafe { list_push(&w.heads, pushed) };
                    let state: Vec<*mut Node> = w.heads.iter().map(|h| h.load(SeqCst)).collect();
                    let s = one_slot_changed("heads", &state, initial, |_| pushed)?;
                    let next = w.nodes[2 * slots].next.load(SeqCst);
                    if next != initial(s) {
                        return Err(format!(
                            "pushed node's next is {next:?}, not the old head {:?}",
                            initial(s)
                        ));
                    }
                }
                Kind::ListPop => {
                    let initial = |s: usize| {
                        if input == "nonempty" {
                            w.node(s)
                        } else {
                            std::ptr::null_mut()
                        }
                    };
                    for (s, h) in w.heads.iter().enumerate() {
                        h.store(initial(s), SeqCst);
                        w.nodes[s].next.store(w.node(slots + s), SeqCst);
                        w.nodes[slots + s].next.store(std::ptr::null_mut(), SeqCst);
                    }
                    // SAFETY: every node on the lists is one of `nodes`.
                    let r = unsafe { list_pop(&w.heads) };
                    let state: Vec<*mut Node> = w.heads.iter().map(|h| h.load(SeqCst)).collect();
                    match (input, r) {
                        ("nonempty", Some(p)) => {
                            let s =
                                one_slot_changed("heads", &state, initial, |s| w.node(slots + s))?;
                            if p != w.node(s) {
                                return Err(format!(
                                    "popped {p:?} but list {s} lost node {:?}",
                                    w.node(s)
                                ));
                            }
                        }
                        ("empty", None) => unchanged("heads", &state, initial)?,
                        (_, r) => return Err(format!("list_pop returned {r:?} for `{input}`")),
                    }
                }
                Kind::Memcpy => {
                    let (slot, len) = match input {
                        "copy" => (0, ITEM),
                        "occupied" => (1, ITEM),
                        _ => (0, 0),
                    };
                    w.words.iter().for_each(|v| v.store(slot, SeqCst));
                    // SAFETY: `dst` is ITEM bytes, not visible to other threads.
                    unsafe { std::ptr::write_bytes(w.dst, 0xAA, ITEM) };
                    // SAFETY: `src` and `dst` are ITEM ≥ len bytes.
                    let r = unsafe { publish(&w.words, w.dst, w.src.as_ptr(), len) };
                    let state: Vec<usize> = w.words.iter().map(|v| v.load(SeqCst)).collect();
                    // The fail exit comes before the copy: `occupied` leaves `dst` untouched.
                    let copied = if input == "occupied" { 0 } else { len };
                    let mut expected = [0xAAu8; ITEM];
                    expected[..copied].copy_from_slice(&w.src[..copied]);
                    match (input, r) {
                        ("copy" | "zero-length", true) => {
                            one_slot_changed("slots", &state, |_| 0, |_| w.dst as usize)?;
                        }
                        ("occupied", false) => unchanged("slots", &state, |_| 1)?,
                        (_, r) => return Err(format!("publish returned {r} for `{input}`")),
                    }
                    let dst = w.dst_bytes();
                    if dst != expected {
                        return Err(format!(
                            "dst holds {dst:?}, expected {expected:?} (`{input}`)"
                        ));
                    }
                }
                Kind::GivenCpu => {
                    w.counters.iter().for_each(|c| c.store(0, SeqCst));
                    let here = rseq::current_cpu();
                    let cpu = if input == "here" {
                        here
                    } else {
                        (here + 1) % slots
                    };
                    if input != "here" && cpu == here {
                        return Err("the `moved` exit needs 2 possible CPUs".into());
                    }
                    let r = add_on(&w.counters, cpu, N);
                    let state = counters_state(&w.counters);
                    match (input, r) {
                        ("here", true) => {
                            let s = one_slot_changed("counters", &state, |_| 0, |_| N)?;
                            if s != cpu {
                                return Err(format!("added to slot {s}, given {cpu}"));
                            }
                        }
                        ("elsewhere", false) => unchanged("counters", &state, |_| 0)?,
                        (_, r) => {
                            return Err(format!(
                                "add_on(cpu {cpu}) returned {r} on cpu {here} for `{input}`"
                            ))
                        }
                    }
                }
                Kind::DerefAdd => {
                    for (s, slot) in w.target_slots.iter().enumerate() {
                        w.targets[s].count.store(0, SeqCst);
                        slot.store(&w.targets[s] as *const Target as *mut Target, SeqCst);
                    }
                    // SAFETY: every slot points at one of `targets`.
                    unsafe { deref_add(&w.target_slots, N) };
                    let state: Vec<u64> = w.targets.iter().map(|t| t.count.load(SeqCst)).collect();
                    let s = one_slot_changed("targets", &state, |_| 0, |_| N)?;
                    if w.targets[s].id != s {
                        return Err(format!("target {s} has id {}", w.targets[s].id));
                    }
                }
                Kind::EarlyStore => {
                    w.counters.iter().for_each(|c| c.store(0, SeqCst));
                    w.done.iter().for_each(|d| d.store(0, SeqCst));
                    early_store_add(&w.counters, &w.done, N as usize);
                    one_slot_changed("counters", &counters_state(&w.counters), |_| 0, |_| N)?;
                    let done: Vec<usize> = w.done.iter().map(|d| d.load(SeqCst)).collect();
                    one_slot_changed("done flags", &done, |_| 0, |_| 1)?;
                }
            }
            Ok(())
        }

        fn hexarg(s: Option<&str>) -> u64 {
            s.and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| die("bad command: expected a hex number"))
        }

        pub fn main() -> ! {
            install_handler();
            let cpus = rseq_tests::allowed_cpus();
            // One CPU: `given(cpu)` inputs stay true between computing the CPU and the section.
            if !rseq_tests::pin_to_cpu(cpus[0]) {
                die(&format!("cannot pin to cpu {}", cpus[0]));
            }
            // Built with `--features inject`, every section holds delay loops, skipped when their
            // count is 0: one iteration each makes their instructions reachable too.
            for point in 0..rseq::inject::POINTS {
                rseq::inject::set_delay(point, 1);
            }
            let world = World::new();
            // Attach the thread (the first section registers it or finds glibc's area) and run
            // every section once, unstopped, before any breakpoint.
            for kind in Kind::ALL {
                for input in kind.inputs() {
                    if let Err(e) = execute(&world, kind, input) {
                        die(&format!("warm-up run of {} `{input}`: {e}", kind.name()));
                    }
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "mode={:?}", rseq::mode());
            let _ = writeln!(out, "bias={:#x}", load_bias());
            let _ = writeln!(out, "area={:#x}", rseq::__private::area_ptr() as u64);
            let _ = writeln!(out, "cpu={}", rseq::current_cpu());
            for d in descriptors() {
                let _ = writeln!(
                    out,
                    "descriptor={:#x},{:#x},{:#x},{:#x}",
                    d.address, d.start_ip, d.post_commit_offset, d.abort_ip
                );
            }
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            drop(out);
            let mut line = String::new();
            let stdin = std::io::stdin();
            loop {
                // Stopped: the tracer plants or removes breakpoints now.
                // SAFETY: raise has no preconditions.
                unsafe { libc::raise(libc::SIGSTOP) };
                line.clear();
                if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
                    exit(0);
                }
                let mut words = line.split_whitespace();
                let cmd = words.next().unwrap_or("");
                if cmd == "quit" {
                    exit(0);
                }
                let kind = Kind::from_name(cmd)
                    .unwrap_or_else(|| die(&format!("unknown kind in command {line:?}")));
                let input = words.next().unwrap_or("").to_string();
                if !kind.inputs().contains(&input.as_str()) {
                    die(&format!("unknown input in command {line:?}"));
                }
                EXPECT_ABORT.store(hexarg(words.next()), SeqCst);
                RANGE[0].store(hexarg(words.next()), SeqCst);
                RANGE[1].store(hexarg(words.next()), SeqCst);
                HANDLER_CALLS.store(0, SeqCst);
                HANDLER_IP.store(0, SeqCst);
                let aborts_before = ABORTS.load(Relaxed);
                let outcome = execute(&world, kind, &input);
                let aborts = ABORTS.load(Relaxed) - aborts_before;
                let calls = HANDLER_CALLS.load(SeqCst);
                let ip = HANDLER_IP.load(SeqCst);
                let mut out = std::io::stdout().lock();
                let _ = match outcome {
                    Ok(()) => writeln!(
                        out,
                        "result=ok aborts={aborts} handler_calls={calls} handler_ip={ip:#x}"
                    ),
                    Err(why) => writeln!(
                        out,
                        "result=fail aborts={aborts} handler_calls={calls} handler_ip={ip:#x} why={why}"
                    ),
                };
                let _ = out.flush();
            }
        }
    }

    /// What the tracer must know of the instruction set it runs on: the breakpoint, where the
    /// trap leaves the IP, the register set, instruction lengths (every architecture but x86_64
    /// decodes them from the first bytes; x86_64 asks objdump), which instructions store to
    /// memory (a section's commit) and the abort handler's jump.
    mod isa {
        /// `PTRACE_GETREGSET`/`NT_PRSTATUS` words: room for every architecture's set (at most
        /// 48 words, powerpc64's `pt_regs` with its padding).
        pub type Regs = [u64; 64];

        /// The IP's word in [`Regs`]: `user_regs_struct.rip`, `user_pt_regs.pc`,
        /// `user_regs_struct.pc`, `pt_regs.nip`, `psw.addr`.
        #[cfg(target_arch = "x86_64")]
        pub const IP: usize = 16;
        #[cfg(target_arch = "aarch64")]
        pub const IP: usize = 32;
        #[cfg(target_arch = "riscv64")]
        pub const IP: usize = 0;
        #[cfg(target_arch = "powerpc64")]
        pub const IP: usize = 32;
        #[cfg(target_arch = "s390x")]
        pub const IP: usize = 1;

        /// How far past the breakpoint the IP is when the tracee stops on it: `int3` is a trap
        /// (the IP follows it), and so is s390x's `0x0001` (the PSW holds the next address);
        /// `brk`, `ebreak` and `trap` are faults (the IP stays on them).
        #[cfg(target_arch = "x86_64")]
        pub const TRAP_IP_AFTER: u64 = 1;
        #[cfg(target_arch = "s390x")]
        pub const TRAP_IP_AFTER: u64 = 2;
        #[cfg(not(any(target_arch = "x86_64", target_arch = "s390x")))]
        pub const TRAP_IP_AFTER: u64 = 0;

        /// Why the tracer does not single-step from a section's `start_ip` here, if it does
        /// not. On s390x (6.12 under qemu's TCG) the step ended at `abort_ip` + 6, past the
        /// abort handler's `jg`, as if the jump had not been taken, and the tracee then died
        /// with SIGILL on the next handler's signature: the step's report and the abort's new
        /// PSW disagree there (in the kernel or in qemu's PER emulation; not settled).
        #[cfg(target_arch = "s390x")]
        pub const SKIP_SINGLE_STEP: Option<&str> = Some(
            "skipped: on s390x a step from start_ip ended past the abort handler's jump, and \
             the tracee died on the next signature",
        );
        #[cfg(not(target_arch = "s390x"))]
        pub const SKIP_SINGLE_STEP: Option<&str> = None;

        /// The breakpoint to plant over an instruction whose first bytes are `insn`, in
        /// memory order. riscv64 needs the compressed `c.ebreak` over a 2-byte instruction,
        /// where a 4-byte `ebreak` would be in the next one's way.
        pub fn breakpoint(insn: &[u8]) -> &'static [u8] {
            #[cfg(target_arch = "x86_64")]
            let bp: &[u8] = &[0xcc]; // int3
            #[cfg(target_arch = "aarch64")]
            const BRK: [u8; 4] = 0xd420_0000u32.to_le_bytes(); // brk #0
            #[cfg(target_arch = "aarch64")]
            let bp: &[u8] = &BRK;
            #[cfg(target_arch = "riscv64")]
            let bp: &[u8] = {
                const C_EBREAK: [u8; 2] = 0x9002u16.to_le_bytes();
                const EBREAK: [u8; 4] = 0x0010_0073u32.to_le_bytes();
                if length(insn) == 2 {
                    &C_EBREAK
                } else {
                    &EBREAK
                }
            };
            #[cfg(target_arch = "powerpc64")]
            const TRAP: [u8; 4] = 0x7fe0_0008u32.to_ne_bytes(); // trap (tw 31,0,0)
            #[cfg(target_arch = "powerpc64")]
            let bp: &[u8] = &TRAP;
            #[cfg(target_arch = "s390x")]
            let bp: &[u8] = &[0x00, 0x01]; // the breakpoint the kernel reports as SIGTRAP
            let _ = insn;
            bp
        }

        /// The length of the instruction whose first bytes are `insn` (architectures with
        /// fixed or self-describing lengths).
        #[cfg(not(target_arch = "x86_64"))]
        pub fn length(insn: &[u8]) -> u64 {
            #[cfg(any(target_arch = "aarch64", target_arch = "powerpc64"))]
            let n = 4;
            // Compressed instructions have 00, 01 or 10 in their two lowest bits.
            #[cfg(target_arch = "riscv64")]
            let n = if insn[0] & 3 == 3 { 4 } else { 2 };
            // The two highest bits of the opcode give the length: 00 two bytes, 01 and 10
            // four, 11 six.
            #[cfg(target_arch = "s390x")]
            let n = match insn[0] >> 6 {
                0 => 2,
                1 | 2 => 4,
                _ => 6,
            };
            let _ = insn;
            n
        }

        #[allow(dead_code)] // not every architecture reads each
        fn word(b: &[u8]) -> u32 {
            u32::from_ne_bytes(b[..4].try_into().unwrap())
        }

        #[allow(dead_code)] // not every architecture reads each
        fn half(b: &[u8]) -> u16 {
            u16::from_ne_bytes(b[..2].try_into().unwrap())
        }

        #[allow(dead_code)] // not every architecture reads each
        fn sign_extend(v: u64, bits: u32) -> u64 {
            (((v << (64 - bits)) as i64) >> (64 - bits)) as u64
        }

        /// Whether the instruction is a store of a general register to memory, which a
        /// section's last instruction (its commit) must be.
        #[cfg(not(target_arch = "x86_64"))]
        pub fn is_store(insn: &[u8]) -> bool {
            #[cfg(target_arch = "aarch64")]
            {
                let i = word(insn);
                // STR/STRB/STRH/STUR (immediate, unsigned offset, pre/post-index, register
                // offset): size:111:V=0:..:opc=00; STLR/STLRB/STLRH: size:001000100:11111.
                let plain = i & 0x3b00_0000 == 0x3900_0000
                    || i & 0x3b20_0000 == 0x3800_0000
                    || i & 0x3b20_0c00 == 0x3820_0800;
                (plain && i & 0x00c0_0000 == 0) || i & 0x3fff_fc00 == 0x089f_fc00
            }
            #[cfg(target_arch = "riscv64")]
            {
                if insn[0] & 3 == 3 {
                    // STORE major opcode: sb, sh, sw, sd.
                    word(insn) & 0x7f == 0x23
                } else {
                    // c.sw, c.sd (quadrant 0) and c.swsp, c.sdsp (quadrant 2): funct3 110, 111.
                    let h = half(insn);
                    matches!(h & 3, 0 | 2) && h >> 14 == 3
                }
            }
            #[cfg(target_arch = "powerpc64")]
            {
                let i = word(insn);
                match i >> 26 {
                    36..=39 | 44 | 45 => true, // stw, stwu, stb, stbu, sth, sthu
                    62 => i & 3 <= 1,          // std, stdu
                    // stdx, stdux, stwx, stwux, stbx, stbux, sthx, sthux
                    31 => matches!(
                        (i >> 1) & 0x3ff,
                        149 | 181 | 151 | 183 | 215 | 247 | 407 | 439
                    ),
                    _ => false,
                }
            }
            #[cfg(target_arch = "s390x")]
            {
                match insn[0] {
                    0x50 | 0x42 | 0x40 => true, // st, stc, sth
                    // stg, sty, stcy, sthy
                    0xe3 => matches!(insn[5], 0x24 | 0x50 | 0x72 | 0x70),
                    0xc4 => matches!(insn[1] & 0x0f, 0x0b | 0x0f | 0x07), // stgrl, strl, sthrl
                    _ => false,
                }
            }
        }

        /// The target of the jump an abort handler holds at `at` (its bytes `b`): `b`
        /// (aarch64, powerpc64), `auipc`+`jalr` (riscv64), `jg` (s390x); x86_64's `jmp` with a
        /// 32- or 8-bit displacement.
        pub fn jump_target(at: u64, b: &[u8]) -> Result<u64, String> {
            let unknown = || {
                Err(format!(
                    "the abort handler at {at:#x} does not start with a jump this harness \
                     knows ({})",
                    hex_bytes(&b[..8.min(b.len())])
                ))
            };
            #[cfg(target_arch = "x86_64")]
            {
                match b[0] {
                    0xe9 => {
                        let rel = i32::from_le_bytes(b[1..5].try_into().unwrap());
                        Ok(at.wrapping_add(5).wrapping_add(rel as i64 as u64))
                    }
                    0xeb => Ok(at.wrapping_add(2).wrapping_add(b[1] as i8 as i64 as u64)),
                    _ => unknown(),
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                let i = word(b) as u64;
                if i & 0xfc00_0000 != 0x1400_0000 {
                    return unknown();
                }
                Ok(at.wrapping_add(sign_extend(i & 0x03ff_ffff, 26) << 2))
            }
            #[cfg(target_arch = "riscv64")]
            {
                let (auipc, jalr) = (word(b) as u64, word(&b[4..]) as u64);
                let rd = (auipc >> 7) & 31;
                if auipc & 0x7f != 0x17 || jalr & 0x707f != 0x67 || (jalr >> 15) & 31 != rd {
                    return unknown();
                }
                let hi = sign_extend(auipc & 0xffff_f000, 32);
                let lo = sign_extend(jalr >> 20, 12);
                Ok(at.wrapping_add(hi).wrapping_add(lo))
            }
            #[cfg(target_arch = "powerpc64")]
            {
                let i = word(b) as u64;
                if i >> 26 != 18 || i & 3 != 0 {
                    return unknown();
                }
                Ok(at.wrapping_add(sign_extend(i & 0x03ff_fffc, 26)))
            }
            #[cfg(target_arch = "s390x")]
            {
                // brcl 15 (jg): c0 f4 and a 32-bit count of halfwords.
                if half(b) != 0xc0f4 {
                    return unknown();
                }
                let rel = i32::from_be_bytes(b[2..6].try_into().unwrap());
                Ok(at.wrapping_add((rel as i64 as u64) << 1))
            }
        }

        /// If the instruction at `at` (bytes `b`) begins an unconditional jump out of `range`
        /// (the jump to an out-of-line exit), the jump's length in bytes: riscv64's
        /// `auipc`+`jalr` is two instructions.
        pub fn exit_jump(at: u64, b: &[u8], range: std::ops::Range<u64>) -> Option<u64> {
            let target = jump_target(at, b).ok()?;
            if range.contains(&target) {
                return None;
            }
            #[cfg(target_arch = "x86_64")]
            let len = if b[0] == 0xe9 { 5 } else { 2 };
            #[cfg(target_arch = "riscv64")]
            let len = 8;
            #[cfg(target_arch = "s390x")]
            let len = 6;
            #[cfg(any(target_arch = "aarch64", target_arch = "powerpc64"))]
            let len = 4;
            Some(len)
        }

        /// Bytes as hex, for messages and for instruction listings without a disassembler.
        pub fn hex_bytes(b: &[u8]) -> String {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// The parent: drives the tracee with ptrace.
    mod tracer {
        use super::*;

        /// The type of ptrace(2)'s request in the `libc` crate: `c_uint` for glibc, `c_int` for
        /// musl.
        #[cfg(target_env = "musl")]
        type Request = libc::c_int;
        #[cfg(not(target_env = "musl"))]
        type Request = libc::c_uint;

        /// How a run ended at the planted breakpoint.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        enum AtBreakpoint {
            /// Resume with SIGUSR1: the kernel's signal delivery must abort the section.
            Signal,
            /// Resume with no signal: the ptrace stop alone must have made the kernel abort it.
            Plain,
            /// Single-step once, record where that lands, then resume.
            SingleStep,
            /// Move the IP to this address of the section's range (from its `start_ip`, where
            /// nothing has run yet), then resume with SIGUSR1: for an out-of-line exit's jump
            /// that no input takes (see `isa::exit_jump`).
            Teleport(u64),
        }

        /// What the tracee reported for one run.
        #[derive(Debug, Default)]
        struct RunReport {
            ok: bool,
            aborts: u64,
            handler_calls: u64,
            handler_ip: u64,
            why: String,
        }

        /// One run: whether (and where) a breakpoint was hit, and the tracee's report.
        #[derive(Debug)]
        struct Run {
            hit: Option<u64>,
            /// The area's `rseq_cs` word when the tracee stopped at the breakpoint.
            rseq_cs_at_stop: u64,
            /// Where a single step from the breakpoint landed, or why ptrace refused it.
            stepped_to: Option<Result<u64, String>>,
            report: RunReport,
        }

        #[derive(Debug)]
        enum Stop {
            Signal(i32),
            Exited(i32),
            Killed(i32),
        }

        struct Startup {
            mode: String,
            bias: u64,
            area: u64,
            cpu: String,
            descriptors: Vec<Descriptor>,
        }

        struct Tracee {
            pid: libc::pid_t,
            child: Child,
            stdin: ChildStdin,
            stdout: BufReader<ChildStdout>,
            startup: Startup,
            /// Reaped by `wait`: its pid may belong to another process now.
            reaped: bool,
        }

        fn errno() -> std::io::Error {
            std::io::Error::last_os_error()
        }

        impl Tracee {
            fn spawn(mode: Registration) -> Result<Tracee, String> {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut cmd = Command::new(&exe);
                cmd.arg("--tracee")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                match mode {
                    Registration::Glibc => rseq_tests::RunMode::Glibc.apply(&mut cmd),
                    Registration::Own => rseq_tests::RunMode::Own.apply(&mut cmd),
                };
                // SAFETY: the closure only calls ptrace(2), which is async-signal-safe.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    cmd.pre_exec(|| {
                        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let mut child = cmd
                    .spawn()
                    .map_err(|e| format!("cannot start the tracee {}: {e}", exe.display()))?;
                let pid = child.id() as libc::pid_t;
                let stdin = child.stdin.take().unwrap();
                let stdout = BufReader::new(child.stdout.take().unwrap());
                let mut t = Tracee {
                    pid,
                    child,
                    stdin,
                    stdout,
                    reaped: false,
                    startup: Startup {
                        mode: String::new(),
                        bias: 0,
                        area: 0,
                        cpu: String::new(),
                        descriptors: Vec::new(),
                    },
                };
                // The execve stop.
                match t.wait()? {
                    Stop::Signal(libc::SIGTRAP) => {}
                    other => return Err(format!("tracee: expected the exec stop, got {other:?}")),
                }
                // SAFETY: ptrace on our stopped child.
                if unsafe {
                    libc::ptrace(
                        libc::PTRACE_SETOPTIONS,
                        pid,
                        0,
                        libc::PTRACE_O_EXITKILL as usize,
                    )
                } == -1
                {
                    return Err(format!("PTRACE_SETOPTIONS: {}", errno()));
                }
                t.cont(0)?;
                t.wait_ready()?;
                loop {
                    let line = t.read_line()?;
                    if line == "ready" {
                        break;
                    }
                    let (key, value) = line.split_once('=').unwrap_or((&line, ""));
                    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16);
                    match key {
                        "mode" => t.startup.mode = value.to_string(),
                        "bias" => t.startup.bias = hex(value).map_err(|e| e.to_string())?,
                        "area" => t.startup.area = hex(value).map_err(|e| e.to_string())?,
                        "cpu" => t.startup.cpu = value.to_string(),
                        "descriptor" => {
                            let v: Vec<u64> =
                                value.split(',').filter_map(|x| hex(x).ok()).collect();
                            if v.len() != 4 {
                                return Err(format!("tracee: bad descriptor line {line:?}"));
                            }
                            t.startup.descriptors.push(Descriptor {
                                address: v[0],
                                start_ip: v[1],
                                post_commit_offset: v[2],
                                abort_ip: v[3],
                            });
                        }
                        "fatal" => return Err(format!("tracee: {value}")),
                        _ => return Err(format!("tracee: unexpected line {line:?}")),
                    }
                }
                Ok(t)
            }

            fn read_line(&mut self) -> Result<String, String> {
                let mut line = String::new();
                match self.stdout.read_line(&mut line) {
                    Ok(0) => Err("the tracee closed its output".into()),
                    Ok(_) => Ok(line.trim_end().to_string()),
                    Err(e) => Err(format!("reading the tracee's output: {e}")),
                }
            }

            fn wait(&mut self) -> Result<Stop, String> {
                let mut status = 0;
                // SAFETY: waitpid on our child.
                let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
                if r != self.pid {
                    return Err(format!("waitpid: {}", errno()));
                }
                if libc::WIFSTOPPED(status) {
                    return Ok(Stop::Signal(libc::WSTOPSIG(status)));
                }
                self.reaped = true;
                Ok(if libc::WIFEXITED(status) {
                    Stop::Exited(libc::WEXITSTATUS(status))
                } else {
                    Stop::Killed(libc::WTERMSIG(status))
                })
            }

            /// Waits for the tracee's SIGSTOP between commands. Any other end is an error that
            /// carries whatever the tracee printed.
            fn wait_ready(&mut self) -> Result<(), String> {
                match self.wait()? {
                    Stop::Signal(libc::SIGSTOP) => Ok(()),
                    other => Err(self.died(other)),
                }
            }

            /// Describes an unexpected end or stop of the tracee. A stopped tracee is killed
            /// first: its output ends only when it is gone.
            fn died(&mut self, stop: Stop) -> String {
                let mut at = String::new();
                if let Stop::Signal(_) = stop {
                    if let Ok(ip) = self.ip() {
                        at = format!(" at {ip:#x}");
                    }
                    // SAFETY: kill and waitpid on our own stopped child, not yet reaped.
                    unsafe {
                        libc::kill(self.pid, libc::SIGKILL);
                        libc::waitpid(self.pid, std::ptr::null_mut(), 0);
                    }
                    self.reaped = true;
                }
                let mut rest = String::new();
                while let Ok(line) = self.read_line() {
                    rest.push_str(&line);
                    rest.push('\n');
                }
                let how = match stop {
                    Stop::Signal(s) => format!("stopped by unexpected signal {s}{at}"),
                    Stop::Exited(c) => format!("exited with status {c}"),
                    Stop::Killed(s) => format!("was killed by signal {s}"),
                };
                format!("the tracee {how}; its last output: {rest:?}")
            }

            fn ptrace(&self, req: Request, addr: u64, data: u64) -> Result<i64, String> {
                // SAFETY: ptrace requests on our stopped tracee; addresses are the tracee's.
                unsafe {
                    *libc::__errno_location() = 0;
                    let r = libc::ptrace(req, self.pid, addr as usize, data as usize);
                    if r == -1 && *libc::__errno_location() != 0 {
                        return Err(format!("ptrace request {req} at {addr:#x}: {}", errno()));
                    }
                    Ok(r)
                }
            }

            fn cont(&self, sig: i32) -> Result<(), String> {
                self.ptrace(libc::PTRACE_CONT, 0, sig as u64).map(drop)
            }

            fn step(&self) -> Result<(), String> {
                self.ptrace(libc::PTRACE_SINGLESTEP, 0, 0).map(drop)
            }

            fn peek(&self, addr: u64) -> Result<u64, String> {
                self.ptrace(libc::PTRACE_PEEKDATA, addr, 0)
                    .map(|v| v as u64)
            }

            fn poke(&self, addr: u64, word: u64) -> Result<(), String> {
                self.ptrace(libc::PTRACE_POKEDATA, addr, word).map(drop)
            }

            /// The general registers (`PTRACE_GETREGSET`, `NT_PRSTATUS`) and how many bytes of
            /// them the kernel filled.
            fn regs(&self) -> Result<(isa::Regs, usize), String> {
                let mut regs: isa::Regs = [0; 64];
                let mut iov = libc::iovec {
                    iov_base: regs.as_mut_ptr().cast(),
                    iov_len: std::mem::size_of_val(&regs),
                };
                self.ptrace(
                    libc::PTRACE_GETREGSET,
                    libc::NT_PRSTATUS as u64,
                    &raw mut iov as u64,
                )?;
                Ok((regs, iov.iov_len))
            }

            fn set_regs(&self, regs: &isa::Regs, len: usize) -> Result<(), String> {
                let mut iov = libc::iovec {
                    iov_base: regs.as_ptr() as *mut libc::c_void,
                    iov_len: len,
                };
                self.ptrace(
                    libc::PTRACE_SETREGSET,
                    libc::NT_PRSTATUS as u64,
                    &raw mut iov as u64,
                )
                .map(drop)
            }

            fn ip(&self) -> Result<u64, String> {
                Ok(self.regs()?.0[isa::IP])
            }

            /// `len` bytes of the tracee's memory from `addr`.
            fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, String> {
                let mut bytes = Vec::new();
                let mut a = addr;
                while (bytes.len() as u64) < len {
                    bytes.extend_from_slice(&self.peek(a)?.to_ne_bytes());
                    a += 8;
                }
                bytes.truncate(len as usize);
                Ok(bytes)
            }

            /// Plants the breakpoint instruction at each address; returns the original words,
            /// to restore in reverse.
            fn plant(&self, addrs: &[u64]) -> Result<Vec<(u64, u64)>, String> {
                let mut saved = Vec::new();
                for &a in addrs {
                    let word = self.peek(a)?;
                    let mut bytes = word.to_ne_bytes();
                    let bp = isa::breakpoint(&bytes);
                    bytes[..bp.len()].copy_from_slice(bp);
                    self.poke(a, u64::from_ne_bytes(bytes))?;
                    saved.push((a, word));
                }
                Ok(saved)
            }

            fn unplant(&self, saved: &[(u64, u64)]) -> Result<(), String> {
                for &(a, word) in saved.iter().rev() {
                    self.poke(a, word)?;
                }
                Ok(())
            }

            /// Runs `kind` with `input` once, with breakpoints at `addrs`. The tracee is in its
            /// SIGSTOP stop before and after.
            fn run(
                &mut self,
                kind: Kind,
                input: &str,
                addrs: &[u64],
                expect: &Descriptor,
                at: AtBreakpoint,
            ) -> Result<Run, String> {
                let saved = self.plant(addrs)?;
                writeln!(
                    self.stdin,
                    "{} {input} {:#x} {:#x} {:#x}",
                    kind.name(),
                    expect.abort_ip,
                    expect.start_ip,
                    expect.end()
                )
                .and_then(|()| self.stdin.flush())
                .map_err(|e| format!("writing a command to the tracee: {e}"))?;
                self.cont(0)?;
                let mut run = Run {
                    hit: None,
                    rseq_cs_at_stop: 0,
                    stepped_to: None,
                    report: RunReport::default(),
                };
                match self.wait()? {
                    Stop::Signal(libc::SIGSTOP) => self.unplant(&saved)?,
                    Stop::Signal(libc::SIGTRAP) => {
                        let (mut regs, len) = self.regs()?;
                        let at_ip = regs[isa::IP].wrapping_sub(isa::TRAP_IP_AFTER);
                        if !addrs.contains(&at_ip) {
                            return Err(format!(
                                "SIGTRAP at {:#x}, where no breakpoint was planted",
                                regs[isa::IP]
                            ));
                        }
                        run.hit = Some(at_ip);
                        run.rseq_cs_at_stop = self.peek(self.startup.area + 8)?;
                        self.unplant(&saved)?;
                        regs[isa::IP] = match at {
                            AtBreakpoint::Teleport(to) => to,
                            _ => at_ip,
                        };
                        self.set_regs(&regs, len)?;
                        match at {
                            AtBreakpoint::Signal | AtBreakpoint::Teleport(_) => {
                                self.cont(libc::SIGUSR1)?
                            }
                            AtBreakpoint::Plain => self.cont(0)?,
                            // riscv64's ptrace has no single-step: the fact says so.
                            AtBreakpoint::SingleStep if isa::SKIP_SINGLE_STEP.is_some() => {
                                run.stepped_to =
                                    Some(Err(isa::SKIP_SINGLE_STEP.unwrap_or("").to_string()));
                                self.cont(0)?;
                            }
                            AtBreakpoint::SingleStep => match self.step() {
                                Ok(()) => {
                                    match self.wait()? {
                                        Stop::Signal(libc::SIGTRAP) => {}
                                        other => return Err(self.died(other)),
                                    }
                                    run.stepped_to = Some(Ok(self.ip()?));
                                    self.cont(0)?;
                                }
                                Err(e) => {
                                    run.stepped_to = Some(Err(e));
                                    self.cont(0)?;
                                }
                            },
                        }
                        self.wait_ready()?;
                    }
                    other => return Err(self.died(other)),
                }
                let line = self.read_line()?;
                let field = |key: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                        .unwrap_or("")
                };
                let num = |key: &str| {
                    let v = field(key);
                    match v.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16).ok(),
                        None => v.parse().ok(),
                    }
                    .ok_or_else(|| format!("tracee report without {key}: {line:?}"))
                };
                run.report = RunReport {
                    ok: field("result") == "ok",
                    aborts: num("aborts")?,
                    handler_calls: num("handler_calls")?,
                    handler_ip: num("handler_ip")?,
                    why: line
                        .split_once(" why=")
                        .map(|(_, w)| w.to_string())
                        .unwrap_or_default(),
                };
                if !run.report.ok && run.report.why.is_empty() {
                    return Err(format!("unexpected tracee report {line:?}"));
                }
                Ok(run)
            }

            /// Ends the tracee: `quit` if it is waiting for a command, else SIGKILL.
            fn quit(mut self) {
                if self.reaped {
                    return;
                }
                let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
                if self.cont(0).is_ok() && self.wait().is_ok() && self.reaped {
                    return;
                }
                // SAFETY: kill and waitpid on our own child, which has not been reaped.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    libc::waitpid(self.pid, std::ptr::null_mut(), 0);
                }
                drop(self.child);
            }
        }

        /// One instruction of a section.
        #[derive(Clone, Debug)]
        struct Instruction {
            /// From the section's `start_ip`.
            offset: u64,
            /// objdump's text on x86_64, the bytes in hex elsewhere.
            text: String,
            /// Whether it stores to memory (what the last one, the commit, must do).
            store: bool,
        }

        /// The instructions of the descriptor's range `[start_ip, start_ip + post_commit_offset)`.
        /// They must tile it exactly: the first at `start_ip`, each next one where the previous
        /// one's bytes end, the last one ending at the post-commit address. x86_64 reads them
        /// from objdump (run on `exe`, or a listing `--write-listing` made); the others decode
        /// the lengths from the tracee's memory.
        fn instructions(
            t: &Tracee,
            exe: &str,
            listing: Option<&str>,
            d: &Descriptor,
        ) -> Result<Vec<Instruction>, String> {
            #[cfg(target_arch = "x86_64")]
            {
                let _ = t;
                let (start, end) = (d.start_ip - t.startup.bias, d.end() - t.startup.bias);
                let (text, source) = match listing {
                    Some(path) => (
                        std::fs::read_to_string(path)
                            .map_err(|e| format!("cannot read the listing {path}: {e}"))?,
                        path,
                    ),
                    None => (objdump(exe, start, end)?, exe),
                };
                parse_objdump(&text, start, end, source)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (exe, listing);
                // Eight bytes more, so that the last instruction's bytes are all there.
                let bytes = t.read(d.start_ip, d.post_commit_offset + 8)?;
                let mut insns = Vec::new();
                let mut offset = 0;
                while offset < d.post_commit_offset {
                    let at = &bytes[offset as usize..];
                    let n = isa::length(at);
                    insns.push(Instruction {
                        offset,
                        text: format!(".inst {}", isa::hex_bytes(&at[..n as usize])),
                        store: isa::is_store(at),
                    });
                    offset += n;
                }
                if offset != d.post_commit_offset {
                    return Err(format!(
                        "the instructions from {:#x} end at +{offset:#x}, past the post-commit \
                         offset {:#x}",
                        d.start_ip, d.post_commit_offset
                    ));
                }
                Ok(insns)
            }
        }

        /// objdump's listing of `[start, end)` of `exe` (link-time addresses).
        #[cfg(target_arch = "x86_64")]
        fn objdump(exe: &str, start: u64, end: u64) -> Result<String, String> {
            let out = Command::new("objdump")
                .args([
                    "-d",
                    "-M",
                    "intel",
                    "--insn-width=16",
                    &format!("--start-address={start:#x}"),
                    &format!("--stop-address={end:#x}"),
                    exe,
                ])
                .output()
                .map_err(|e| {
                    format!(
                        "cannot run objdump ({e}): install binutils (.ci/run does), or pass \
                         --listing"
                    )
                })?;
            if !out.status.success() {
                return Err(format!(
                    "objdump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }

        /// The instructions of `[start, end)` in an objdump listing, which may hold more.
        #[cfg(target_arch = "x86_64")]
        fn parse_objdump(
            text: &str,
            start: u64,
            end: u64,
            source: &str,
        ) -> Result<Vec<Instruction>, String> {
            let mut insns = Vec::new();
            let mut lines = Vec::new();
            let mut next = start;
            for line in text.lines() {
                // Instruction lines: "   1234:\t8b 47 04 \tmov    eax,DWORD PTR [rdi+0x4]"
                let mut fields = line.split('\t');
                let (Some(addr), Some(bytes), Some(insn)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let Some(Ok(addr)) = addr
                    .trim()
                    .strip_suffix(':')
                    .map(|a| u64::from_str_radix(a, 16))
                else {
                    continue;
                };
                if addr < start || addr >= end {
                    continue;
                }
                lines.push(line);
                if insn.contains("(bad)") {
                    return Err(format!("objdump cannot decode {addr:#x}: {insn}"));
                }
                if addr != next {
                    return Err(format!(
                        "objdump's listing of [{start:#x}, {end:#x}) has an instruction at \
                         {addr:#x}, expected one at {next:#x}:\n{}",
                        lines.join("\n")
                    ));
                }
                next = addr + bytes.split_whitespace().count() as u64;
                // Drop objdump's comments (`# 10acc0 <symbol>`) and symbolic targets.
                let insn = insn.split(" #").next().unwrap_or(insn);
                let insn = insn.split(" <").next().unwrap_or(insn);
                let text = insn.split_whitespace().collect::<Vec<_>>().join(" ");
                insns.push(Instruction {
                    offset: addr - start,
                    store: is_store(&text),
                    text,
                });
            }
            if insns.is_empty() || next != end {
                return Err(format!(
                    "objdump's listing of [{start:#x}, {end:#x}) in {source} ends at {next:#x}, \
                     not at the post-commit address:\n{}",
                    lines.join("\n")
                ));
            }
            Ok(insns)
        }

        /// `--write-listing`: objdump's listing of every section of this executable, for a
        /// machine without binutils (the system test's x86_64 guests) to pass as `--listing`.
        #[cfg(target_arch = "x86_64")]
        pub fn write_listing(path: &str) -> i32 {
            let result = (|| -> Result<usize, String> {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let exe = exe.to_string_lossy();
                let bias = tracee::load_bias();
                let mut text = String::new();
                let descriptors = tracee::descriptors();
                for d in &descriptors {
                    text.push_str(&objdump(&exe, d.start_ip - bias, d.end() - bias)?);
                }
                std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))?;
                Ok(descriptors.len())
            })();
            match result {
                Ok(n) => {
                    println!("listing={path} sections={n}");
                    0
                }
                Err(e) => {
                    eprintln!("rseq-ptrace: {e}");
                    1
                }
            }
        }

        #[derive(Default)]
        struct KindSummary {
            positions: usize,
            covered: usize,
            aborts: usize,
            failures: usize,
            /// Positions reached, per input.
            reached: Vec<(&'static str, usize)>,
            /// Positions of out-of-line exit jumps no input takes, aborted by moving the IP
            /// there (counted in `covered` too).
            teleported: usize,
            /// Runs repeated because a natural abort (preemption, migration) came before the
            /// breakpoint.
            reruns: usize,
        }

        /// How often a run at one position and input is tried while natural aborts keep it from
        /// reaching the breakpoint.
        const NATURAL_ABORT_TRIES: usize = 10;

        struct ModeRun {
            summaries: Vec<(Kind, KindSummary)>,
            failures: Vec<String>,
            facts: Vec<String>,
        }

        extern "C" fn on_alarm(_: libc::c_int) {
            let msg = b"rseq-ptrace: timed out (--timeout); result=fail\n";
            // SAFETY: write and _exit are async-signal-safe. The tracee dies with us
            // (PTRACE_O_EXITKILL).
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(1);
            }
        }

        pub fn main(opts: &Options) -> i32 {
            let started = Instant::now();
            // SAFETY: installs a handler that only writes and exits; alarm has no preconditions.
            unsafe {
                libc::signal(
                    libc::SIGALRM,
                    on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
                libc::alarm(opts.timeout_secs);
            }
            let exe = match std::env::current_exe() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(e) => {
                    eprintln!("rseq-ptrace: current_exe: {e}");
                    return 1;
                }
            };
            let mut all_ok = true;
            let mut summaries = Vec::new();
            for &mode in &opts.modes {
                match run_mode(&exe, mode, opts) {
                    Ok(run) => {
                        for f in &run.facts {
                            println!("fact mode={} {f}", mode.name());
                        }
                        for f in &run.failures {
                            println!("FAIL mode={} {f}", mode.name());
                        }
                        all_ok &= run.failures.is_empty();
                        summaries.push((mode, run.summaries));
                    }
                    Err(e) => {
                        println!("FAIL mode={} {e}", mode.name());
                        all_ok = false;
                    }
                }
            }
            for (mode, kinds) in &summaries {
                for (kind, s) in kinds {
                    let reached: Vec<String> = s
                        .reached
                        .iter()
                        .map(|(input, n)| format!("{input}:{n}"))
                        .collect();
                    println!(
                        "mode={} kind={} positions={} covered={} aborts={} failures={} reached={} teleported={} reruns={}",
                        mode.name(),
                        kind.name(),
                        s.positions,
                        s.covered,
                        s.aborts,
                        s.failures,
                        reached.join(","),
                        s.teleported,
                        s.reruns
                    );
                    all_ok &= s.failures == 0 && s.covered == s.positions && s.positions > 0;
                }
            }
            println!("elapsed_ms={}", started.elapsed().as_millis());
            println!("result={}", if all_ok { "ok" } else { "fail" });
            if all_ok {
                0
            } else {
                1
            }
        }

        fn run_mode(exe: &str, mode: Registration, opts: &Options) -> Result<ModeRun, String> {
            let mut t = Tracee::spawn(mode)?;
            let expected_mode = match mode {
                Registration::Glibc => "Rseq(Glibc)",
                Registration::Own => "Rseq(Library)",
            };
            println!(
                "tracee mode={} pid={} runtime={} cpu={} descriptors={} bias={:#x}",
                mode.name(),
                t.pid,
                t.startup.mode,
                t.startup.cpu,
                t.startup.descriptors.len(),
                t.startup.bias
            );
            if t.startup.mode != expected_mode {
                let got = t.startup.mode.clone();
                t.quit();
                return Err(format!(
                    "the tracee runs in {got}, expected {expected_mode} (glibc < 2.35 or musl \
                     cannot run --mode glibc)"
                ));
            }
            let mut run = ModeRun {
                summaries: Vec::new(),
                failures: Vec::new(),
                facts: Vec::new(),
            };
            if let Err(e) = drive(&mut t, exe, opts, &mut run) {
                run.failures.push(e);
            }
            t.quit();
            Ok(run)
        }

        fn drive(
            t: &mut Tracee,
            exe: &str,
            opts: &Options,
            run: &mut ModeRun,
        ) -> Result<(), String> {
            let descriptors = t.startup.descriptors.clone();
            if descriptors.is_empty() {
                return Err("the tracee has no descriptors in __rseq_cs".into());
            }
            let starts: Vec<u64> = descriptors.iter().map(|d| d.start_ip).collect();
            let mut tampered = false;
            for &kind in &opts.kinds {
                // 1. Which descriptor is this kind's: a breakpoint on every start_ip, one run per
                //    input; every input must reach the same one (a copy of the section made by
                //    the compiler would hide positions). The stop alone (resumed without a
                //    signal) must make the kernel abort the section.
                let any = Descriptor {
                    address: 0,
                    start_ip: 0,
                    post_commit_offset: 0,
                    abort_ip: 0,
                };
                let mut d: Option<Descriptor> = None;
                let mut stop_aborts = Vec::new();
                for &input in kind.inputs() {
                    let found = t.run(kind, input, &starts, &any, AtBreakpoint::Plain)?;
                    let Some(start) = found.hit else {
                        return Err(format!(
                            "kind={} input={input}: the section ran without reaching any descriptor's start_ip",
                            kind.name()
                        ));
                    };
                    let this = *descriptors.iter().find(|d| d.start_ip == start).unwrap();
                    match d {
                        Some(first) if first != this => {
                            return Err(format!(
                                "kind={}: input {input} runs the section at {:#x}, input {} at {:#x}: the compiler duplicated it",
                                kind.name(),
                                this.start_ip,
                                kind.inputs()[0],
                                first.start_ip
                            ))
                        }
                        _ => d = Some(this),
                    }
                    if found.rseq_cs_at_stop != this.address {
                        run.failures.push(format!(
                            "kind={} input={input}: at start_ip the area's rseq_cs is {:#x}, not the descriptor {:#x}",
                            kind.name(),
                            found.rseq_cs_at_stop,
                            this.address
                        ));
                    }
                    if !found.report.ok {
                        run.failures.push(format!(
                            "kind={} input={input} stopped at start_ip: {}",
                            kind.name(),
                            found.report.why
                        ));
                    }
                    stop_aborts.push(found.report.aborts);
                }
                let d = d.expect("every kind has an input");
                let input = kind.inputs()[0];
                run.facts.push(format!(
                    "kind={} ptrace_stop_aborts={} (stopped at start_ip {:#x}, resumed without a signal: abort counter +{stop_aborts:?} per input)",
                    kind.name(),
                    if stop_aborts.iter().all(|&a| a >= 1) { "yes" } else { "no" },
                    d.start_ip,
                ));

                // 2. Single-stepping from start_ip: the first step must already be in the abort
                //    path (the handler's jump executed), not at the second instruction.
                let insns = instructions(t, exe, opts.listing.as_deref(), &d)?;
                let handler_jump = isa::jump_target(d.abort_ip, &t.read(d.abort_ip, 16)?)?;
                let stepped = t.run(kind, input, &[d.start_ip], &d, AtBreakpoint::SingleStep)?;
                let second = insns
                    .get(1)
                    .map(|i| d.start_ip + i.offset)
                    .unwrap_or(d.end());
                run.facts.push(match stepped.stepped_to {
                    Some(Ok(to)) => format!(
                        "kind={} single_step_from_start={} (landed at {to:#x}; next instruction {second:#x}, abort handler jumps to {handler_jump:#x})",
                        kind.name(),
                        if to == handler_jump {
                            "aborted"
                        } else if to == second {
                            "stepped"
                        } else {
                            "elsewhere"
                        },
                    ),
                    Some(Err(e)) => format!(
                        "kind={} single_step_from_start=unavailable ({e})",
                        kind.name()
                    ),
                    None => format!(
                        "kind={} single_step_from_start=not-reached",
                        kind.name()
                    ),
                });
                if !stepped.report.ok {
                    run.failures.push(format!(
                        "kind={} input={input} single-stepped at start_ip: {}",
                        kind.name(),
                        stepped.report.why
                    ));
                }

                // The demonstration of a wrong abort target: point this descriptor's abort_ip at
                // another section's abort handler (signed, so the kernel accepts it).
                if opts.tamper_abort_target && !tampered {
                    let other = descriptors
                        .iter()
                        .find(|o| o.abort_ip != d.abort_ip)
                        .ok_or("--tamper-abort-target needs two descriptors")?;
                    t.poke(d.address + 24, other.abort_ip)?;
                    println!(
                        "tampered kind={}: descriptor {:#x} abort_ip {:#x} -> {:#x}",
                        kind.name(),
                        d.address,
                        d.abort_ip,
                        other.abort_ip
                    );
                    // The tracee is still told the true abort_ip of the section's code.
                    tampered = true;
                }

                // 3. Every instruction position, every input.
                let mut s = KindSummary {
                    positions: insns.len(),
                    reached: kind.inputs().iter().map(|i| (*i, 0)).collect(),
                    ..KindSummary::default()
                };
                let last = &insns[insns.len() - 1];
                if !last.store {
                    let last = &last.text;
                    run.failures.push(format!(
                        "kind={}: the last instruction of the range is `{last}`, not a store to memory (the commit)",
                        kind.name()
                    ));
                    s.failures += 1;
                }
                let mut uncovered = Vec::new();
                for insn in &insns {
                    let at = d.start_ip + insn.offset;
                    let mut covered = false;
                    let mut failed = false;
                    for (i, &input) in kind.inputs().iter().enumerate() {
                        // A run that misses the breakpoint but counted an abort was preempted
                        // (or migrated) before reaching it: its retry ran in the cold path's own
                        // copy of the section, past this one's breakpoint. Run it again.
                        let mut tries = 0;
                        let r = loop {
                            tries += 1;
                            match t.run(kind, input, &[at], &d, AtBreakpoint::Signal) {
                                Ok(r)
                                    if r.hit.is_none()
                                        && r.report.aborts > 0
                                        && tries < NATURAL_ABORT_TRIES =>
                                {
                                    s.reruns += 1
                                }
                                other => break other,
                            }
                        };
                        let r = match r {
                            Ok(r) => r,
                            Err(e) => {
                                run.failures.push(format!(
                                    "kind={} position=+{:#x} (`{}`) input={input}: {e}",
                                    kind.name(),
                                    insn.offset,
                                    insn.text
                                ));
                                s.failures += 1;
                                run.summaries.push((kind, s));
                                return Err(format!(
                                    "kind={}: the tracee is gone, the remaining positions and kinds were not run",
                                    kind.name()
                                ));
                            }
                        };
                        let problems = check_run(&r, at, &d);
                        if opts.verbose {
                            println!(
                                "  {} +{:#04x} {:<44} {input:<12} {}",
                                kind.name(),
                                insn.offset,
                                insn.text,
                                if r.hit.is_some() {
                                    format!(
                                        "aborted to {:#x}, aborts+{}",
                                        r.report.handler_ip, r.report.aborts
                                    )
                                } else {
                                    "not reached".to_string()
                                } + if problems.is_empty() { "" } else { " FAIL" }
                            );
                        }
                        if r.hit.is_some() {
                            s.reached[i].1 += 1;
                            covered = true;
                            if problems.is_empty() {
                                s.aborts += 1;
                            }
                        }
                        if !problems.is_empty() {
                            failed = true;
                            s.failures += 1;
                            run.failures.push(format!(
                                "kind={} position=+{:#x} (`{}`) input={input}: {}",
                                kind.name(),
                                insn.offset,
                                insn.text,
                                problems.join("; ")
                            ));
                        }
                    }
                    if covered && !failed {
                        s.covered += 1;
                    } else if !covered {
                        uncovered.push(insn);
                    }
                }
                // An out-of-line exit's jump that no input takes (aarch64's, riscv64's and
                // powerpc64's bounds check on the CPU index branches over one; only an
                // unregistered thread's index fails it): abort there by moving the IP onto it
                // from start_ip, where the registers are as the section found them.
                let mut exit_jumps: Vec<u64> = Vec::new();
                for insn in &insns {
                    let at = d.start_ip + insn.offset;
                    if let Some(len) = isa::exit_jump(at, &t.read(at, 16)?, d.start_ip..d.end()) {
                        exit_jumps.extend(
                            (insn.offset..insn.offset + len)
                                .filter(|o| insns.iter().any(|i| i.offset == *o)),
                        );
                    }
                }
                let mut unreached = Vec::new();
                for insn in uncovered {
                    if !exit_jumps.contains(&insn.offset) {
                        unreached.push(format!("+{:#x} (`{}`)", insn.offset, insn.text));
                        continue;
                    }
                    let at = d.start_ip + insn.offset;
                    let r = t.run(kind, input, &[d.start_ip], &d, AtBreakpoint::Teleport(at))?;
                    let problems = check_run(&r, d.start_ip, &d);
                    if opts.verbose {
                        println!(
                            "  {} +{:#04x} {:<44} {input:<12} moved there from start_ip, aborted to {:#x}, aborts+{}{}",
                            kind.name(),
                            insn.offset,
                            insn.text,
                            r.report.handler_ip,
                            r.report.aborts,
                            if problems.is_empty() { "" } else { " FAIL" }
                        );
                    }
                    if problems.is_empty() {
                        s.covered += 1;
                        s.teleported += 1;
                        s.aborts += 1;
                    } else {
                        s.failures += 1;
                        run.failures.push(format!(
                            "kind={} position=+{:#x} (`{}`), an exit's jump, the IP moved there: {}",
                            kind.name(),
                            insn.offset,
                            insn.text,
                            problems.join("; ")
                        ));
                    }
                }
                let uncovered = unreached;
                if !uncovered.is_empty() {
                    run.failures.push(format!(
                        "kind={}: no input reached {}",
                        kind.name(),
                        uncovered.join(", ")
                    ));
                }
                run.summaries.push((kind, s));
            }
            Ok(())
        }

        /// Whether an instruction (objdump's Intel syntax) is a `mov` or `add` to memory: what
        /// a commit must be, the last instruction of the range.
        #[cfg(target_arch = "x86_64")]
        fn is_store(text: &str) -> bool {
            let (mnemonic, operands) = text.split_once(' ').unwrap_or((text, ""));
            let destination = operands.split(',').next().unwrap_or("");
            matches!(mnemonic, "mov" | "add") && destination.contains("PTR [")
        }

        /// What is wrong with one run at position `at` (empty: nothing).
        fn check_run(r: &Run, at: u64, d: &Descriptor) -> Vec<String> {
            let mut problems = Vec::new();
            let rep = &r.report;
            if !rep.ok {
                problems.push(format!("effect check failed: {}", rep.why));
            }
            match r.hit {
                Some(hit) => {
                    if hit != at {
                        problems.push(format!("stopped at {hit:#x}, not at {at:#x}"));
                    }
                    if r.rseq_cs_at_stop != d.address {
                        problems.push(format!(
                            "the area's rseq_cs held {:#x}, not the descriptor {:#x}",
                            r.rseq_cs_at_stop, d.address
                        ));
                    }
                    if rep.handler_calls != 1 {
                        problems.push(format!(
                            "the SIGUSR1 handler ran {} times, expected once",
                            rep.handler_calls
                        ));
                    } else if rep.handler_ip != d.abort_ip {
                        problems.push(format!(
                            "the signal interrupted the thread at {:#x}, not at the descriptor's abort_ip {:#x}: the kernel did not abort the section",
                            rep.handler_ip, d.abort_ip
                        ));
                    }
                    if rep.aborts == 0 {
                        problems.push("the section's abort counter did not advance".into());
                    }
                }
                None => {
                    if rep.handler_calls != 0 {
                        problems.push(format!(
                            "the SIGUSR1 handler ran {} times without a breakpoint stop",
                            rep.handler_calls
                        ));
                    }
                }
            }
            problems
        }
    }
}
