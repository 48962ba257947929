//! Hand-written x86_64 references for the benchmarks: the loops a C programmer writes with
//! librseq's helpers, as `asm!` with nothing generated. Each reads `cpu_id_start` before the
//! section, indexes its slot with it, and the section compares `cpu_id` with it first (as
//! `rseq_load_add_store__ptr`, `rseq_load_cbne_store__ptr` and
//! `rseq_load_cbeq_store_add_load_store__ptr` do); an abort goes round the loop again.
//!
//! The demo and `cargo bench` run them next to the generated sections on the same data, so the
//! ratio "generated / reference" is the cost of the `#[critical_section]` wrapper. They are for
//! measurement only: they need rseq mode (see [`available`]) and, like librseq, trust
//! `cpu_id_start` to index the `PerCpu` (it is below the number of possible CPUs, which every
//! `PerCpu` has slots for).

use crate::bench::Measured;
use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicPtr, AtomicUsize};

/// A node of the reference lists (the generated sections use the same layout: `next` first).
#[repr(C)]
pub struct Node {
    pub next: *mut Node,
    pub value: usize,
}

/// Whether the references can run here: x86_64, and sections run on rseq (the references have
/// no fallback).
pub fn available() -> bool {
    // `mode()` decides the mode on first use; then sections run on rseq unless it was demoted.
    cfg!(target_arch = "x86_64") && rseq::mode().is_rseq() && rseq::sections_run_on_rseq()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use core::arch::asm;

    // The parts every reference shares. Labels: 30 the descriptor, 31 the start, 32 the end
    // of the commit, 33 the abort handler; operands `area`, `cpu`, `tmp` and label `abort`.

    /// The descriptor in `__rseq_cs` and its entry in `__rseq_cs_ptr_array`.
    macro_rules! descriptor {
        () => {
            concat!(
                ".pushsection __rseq_cs, \"aw\"\n",
                ".balign 32\n",
                "30:\n",
                ".long 0, 0\n",
                ".quad 31f, (32f - 31f), 33f\n",
                ".popsection\n",
                ".pushsection __rseq_cs_ptr_array, \"awR\"\n",
                ".balign 8\n",
                ".quad 30b\n",
                ".popsection",
            )
        };
    }

    /// Arms the descriptor, starts the section and checks it runs on `cpu` (librseq's
    /// `RSEQ_ASM_STORE_RSEQ_CS` and `RSEQ_ASM_CMP_CPU_ID`).
    macro_rules! start_on_cpu {
        () => {
            concat!(
                "lea {tmp}, [rip + 30b]\n",
                "mov qword ptr [{area} + 8], {tmp}\n",
                "31:\n",
                "cmp dword ptr [{area} + 4], {cpu:e}\n",
                "jnz 33f",
            )
        };
    }

    /// The signed abort handler, out of line, jumping to label `abort`.
    macro_rules! abort_handler {
        () => {
            concat!(
                ".pushsection __rseq_failure, \"ax\"\n",
                ".byte 0x0f, 0xb9, 0x3d\n",
                ".long 0x53053053\n",
                "33:\n",
                "jmp {abort}\n",
                ".popsection",
            )
        };
    }

    /// The area's `cpu_id_start`, read before the section (librseq's `rseq_cpu_start()`).
    #[inline(always)]
    fn cpu_start(area: *mut rseq::abi::RseqArea) -> usize {
        // SAFETY: `area` is this thread's registered area (or the runtime's sentinel): readable.
        unsafe { core::ptr::addr_of!((*area).cpu_id_start).read_volatile() as usize }
    }

    /// The slot of `cpu` in `slots`.
    #[inline(always)]
    fn slot<T>(slots: &PerCpu<T>, cpu: usize) -> usize {
        slots.as_ptr() as usize + cpu * PerCpu::<T>::STRIDE
    }

    /// After an abort: attach the thread if it has no area yet (the first call on a thread the
    /// runtime registers itself), so the next attempt can succeed.
    #[cold]
    #[inline(never)]
    fn after_abort(area: *mut rseq::abi::RseqArea) {
        // SAFETY: as in `cpu_start`.
        let cpu_id = unsafe { core::ptr::addr_of!((*area).cpu_id).read_volatile() };
        if (cpu_id as i32) < 0 {
            rseq::register_current_thread().expect("the references need an rseq registration");
        }
    }

    /// `slots[cpu] += n`: librseq's per-CPU counter loop.
    #[inline(always)]
    pub fn counter_add(slots: &PerCpu<AtomicUsize>, n: usize) {
        loop {
            let area = rseq::__private::area_ptr();
            let cpu = cpu_start(area);
            let slot = slot(slots, cpu);
            // SAFETY: `area` is this thread's rseq area: the section stores its descriptor's
            // address into `rseq_cs`; `slot` is `cpu_id_start`'s slot of `slots` (below the
            // possible CPUs, which every `PerCpu` covers), written by the one commit
            // instruction; the abort handler is behind the signature in `__rseq_failure`.
            unsafe {
                asm!(
                    descriptor!(),
                    start_on_cpu!(),
                    "add qword ptr [{slot}], {n}",
                    "32:",
                    abort_handler!(),
                    area = in(reg) area,
                    cpu = in(reg) cpu,
                    slot = in(reg) slot,
                    n = in(reg) n,
                    tmp = out(reg) _,
                    abort = label {
                        after_abort(area);
                        continue;
                    },
                    options(nostack),
                );
            }
            return;
        }
    }

    /// Pushes `node` on this CPU's list: librseq's loop reads the head and links the node
    /// before the section, which checks the head is unchanged and commits the new head.
    ///
    /// # Safety
    /// `node` is a valid node that no list holds.
    #[inline(always)]
    pub unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
        loop {
            let area = rseq::__private::area_ptr();
            let cpu = cpu_start(area);
            let slot = slot(heads, cpu);
            // SAFETY: `slot` is an `AtomicPtr` slot of `heads`; `node` is the caller's.
            let expect = unsafe {
                (*(slot as *const AtomicPtr<Node>)).load(core::sync::atomic::Ordering::Relaxed)
            };
            // SAFETY: `node` is the caller's and in no list yet.
            unsafe { (*node).next = expect };
            // SAFETY: as in `counter_add`; the commit writes `cpu_id_start`'s head.
            unsafe {
                asm!(
                    descriptor!(),
                    ".pushsection __rseq_exit_point_array, \"awR\"",
                    ".balign 8",
                    ".quad 31f, {changed}",
                    ".popsection",
                    start_on_cpu!(),
                    "cmp qword ptr [{slot}], {expect}",
                    "jnz {changed}",
                    "mov qword ptr [{slot}], {node}",
                    "32:",
                    abort_handler!(),
                    area = in(reg) area,
                    cpu = in(reg) cpu,
                    slot = in(reg) slot,
                    expect = in(reg) expect,
                    node = in(reg) node,
                    tmp = out(reg) _,
                    abort = label {
                        after_abort(area);
                        continue;
                    },
                    changed = label {
                        continue;
                    },
                    options(nostack),
                );
            }
            return;
        }
    }

    /// Pops this CPU's head, or null: librseq's loop, with the head loaded, checked and saved
    /// inside the section and `head->next` committed.
    ///
    /// # Safety
    /// Every node in `heads` is valid.
    #[inline(always)]
    pub unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> *mut Node {
        let mut head: *mut Node = core::ptr::null_mut();
        loop {
            let area = rseq::__private::area_ptr();
            let cpu = cpu_start(area);
            let slot = slot(heads, cpu);
            // SAFETY: as in `counter_add`; `head` is a local the section writes (memory
            // operand, as librseq's `load` pointer); the nodes are the caller's.
            unsafe {
                asm!(
                    descriptor!(),
                    ".pushsection __rseq_exit_point_array, \"awR\"",
                    ".balign 8",
                    ".quad 31f, {empty}",
                    ".popsection",
                    start_on_cpu!(),
                    "mov {tmp}, qword ptr [{slot}]",
                    "test {tmp}, {tmp}",
                    "jz {empty}",
                    "mov qword ptr [{head}], {tmp}",
                    "mov {tmp}, qword ptr [{tmp}]",
                    "mov qword ptr [{slot}], {tmp}",
                    "32:",
                    abort_handler!(),
                    area = in(reg) area,
                    cpu = in(reg) cpu,
                    slot = in(reg) slot,
                    head = in(reg) &mut head,
                    tmp = out(reg) _,
                    abort = label {
                        after_abort(area);
                        continue;
                    },
                    empty = label {
                        return core::ptr::null_mut();
                    },
                    options(nostack),
                );
            }
            return head;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use imp::{counter_add, pop, push};

/// The generated twin of [`counter_add`].
#[critical_section]
pub fn dsl_counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

/// The generated twin of [`push`].
///
/// # Safety
/// `node` is a valid node in no list.
#[critical_section]
pub unsafe fn dsl_push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
    let head = load(heads[cpu]);
    store((*node).next, head);
    commit::store(heads[cpu], node);
}

/// The generated twin of [`pop`].
///
/// # Safety
/// Every node in `heads` is valid.
#[critical_section]
pub unsafe fn dsl_pop(heads: &PerCpu<AtomicPtr<Node>>) -> *mut Node {
    let head: *mut Node = load(heads[cpu]);
    if head == null {
        fail(core::ptr::null_mut())
    }
    let next = load((*head).next);
    commit::store(heads[cpu], next);
    head
}

/// The row names of [`side_by_side`], in order.
pub const ROWS: [&str; 5] = [
    "reference counter add (librseq's loop, asm)",
    "rseq counter add (DSL)",
    "PerCpuCounter::add (exact take)",
    "reference list pop + push (librseq's)",
    "rseq list pop + push (DSL)",
];

/// The generated sections and the references on the same data, one thread, interleaved rounds
/// (rows named by [`ROWS`]); checks that the counts and lists came out exact. `None` where the
/// references cannot run.
pub fn side_by_side(rounds: usize, ops: u64) -> Option<Vec<Measured>> {
    if !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::bench::compare;
        use rseq::collections::counter::PerCpuCounter;
        use std::hint::black_box;
        use std::sync::atomic::Ordering;
        let counters: PerCpu<AtomicUsize> = PerCpu::default();
        let counter = PerCpuCounter::new();
        let heads: PerCpu<AtomicPtr<Node>> = PerCpu::default();
        // A few nodes on every CPU's list (the thread may migrate): every pop finds one.
        let mut nodes: Vec<Box<Node>> = (0..4 * heads.len())
            .map(|i| {
                Box::new(Node {
                    next: core::ptr::null_mut(),
                    value: i,
                })
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            let head = heads.get(i % heads.len()).expect("slot");
            node.next = head.load(Ordering::Relaxed);
            head.store(&mut **node, Ordering::Relaxed);
        }
        let rows = compare(
            rounds,
            ops,
            &mut [
                (ROWS[0], &mut |n| {
                    for _ in 0..n {
                        counter_add(black_box(&counters), 1);
                    }
                }),
                (ROWS[1], &mut |n| {
                    for _ in 0..n {
                        dsl_counter_add(black_box(&counters), 1);
                    }
                }),
                (ROWS[2], &mut |n| {
                    for _ in 0..n {
                        black_box(&counter).add(1);
                    }
                }),
                (ROWS[3], &mut |n| {
                    for _ in 0..n {
                        // SAFETY: the lists hold only the boxes above, alive until the end.
                        unsafe {
                            let node = pop(black_box(&heads));
                            if !node.is_null() {
                                push(&heads, node);
                            }
                        }
                    }
                }),
                (ROWS[4], &mut |n| {
                    for _ in 0..n {
                        // SAFETY: as above.
                        unsafe {
                            let node = dsl_pop(black_box(&heads));
                            if !node.is_null() {
                                dsl_push(&heads, node);
                            }
                        }
                    }
                }),
            ],
        );
        // Warm-up (ops / 10 + 1) and the rounds, for both counter adds.
        let adds = 2 * (ops / 10 + 1 + rounds as u64 * ops);
        let total = counters
            .iter()
            .fold(0u64, |sum, c| sum + c.load(Ordering::Relaxed) as u64);
        assert_eq!(total, adds, "a counter add was lost or invented");
        assert_eq!(
            counter.sum() as u64,
            adds / 2,
            "PerCpuCounter lost or invented adds"
        );
        let mut seen = 0;
        for head in heads.iter() {
            let mut p = head.load(Ordering::Relaxed);
            while !p.is_null() {
                seen += 1;
                // SAFETY: the nodes are the boxes above.
                p = unsafe { (*p).next };
            }
        }
        assert_eq!(seen, nodes.len(), "the lists lost or duplicated nodes");
        drop(nodes);
        Some(rows)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rounds, ops);
        None
    }
}

/// Prints the zero-overhead goals from [`side_by_side`]'s rows: each generated section's time
/// in multiples of its reference's, and `PerCpuCounter::add`'s in multiples of the plain add's.
pub fn print_goals(rows: &[Measured]) {
    let time = |of: usize, base: usize| rows[of].ns_per_op / rows[base].ns_per_op;
    let verdict = |t: f64, goal: f64| if t <= goal { "met" } else { "MISSED" };
    let (add, counter, list) = (time(1, 0), time(2, 1), time(4, 3));
    println!("\nZero-overhead goals (time in multiples of the reference's; ≤ goal is met)");
    println!(
        "  counter add vs librseq's loop (hand-written):   {add:6.2}× (goal ≤ 1.0: {})",
        verdict(add, 1.0)
    );
    println!(
        "  list pop + push vs librseq's (hand-written):    {list:6.2}× (goal ≤ 1.0: {})",
        verdict(list, 1.0)
    );
    println!(
        "  PerCpuCounter::add vs the DSL counter add:      {counter:6.2}× (goal ≤ 1.3: {})",
        verdict(counter, 1.3)
    );
}
