//! Every instruction template, executed: each kind of step and commit runs through its
//! generated instructions on a fake, unregistered area (`run_unprotected`), single-threaded, so
//! this also works under qemu-user, which has no rseq — the way the templates of every
//! architecture are exercised in CI. Each check asserts the exact effect and that the fallback
//! was not used. Words are `usize` so the same file runs on 32-bit targets.

use rseq::__private::run_unprotected;
use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

fn cpus() -> Vec<u32> {
    (0..rseq::possible_cpus().min(3) as u32).collect()
}

/// Runs `f` on the asm path as CPU `cpu` and checks it never took the fallback.
fn on_cpu<R>(cpu: u32, f: impl FnOnce() -> R) -> R {
    let before = rseq::fallback::thread_fallback_sections();
    let r = run_unprotected(cpu, f);
    assert_eq!(
        rseq::fallback::thread_fallback_sections(),
        before,
        "the fallback ran instead of the instructions"
    );
    r
}

fn snapshot(p: &PerCpu<AtomicUsize>) -> Vec<usize> {
    p.iter().map(|v| v.load(Ordering::Relaxed)).collect()
}

#[critical_section]
fn add(c: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(c[cpu], n);
}

#[critical_section(index = mm_cid)]
fn add_by_cid(c: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(c[cpu], n);
}

#[critical_section]
fn add_big(c: &PerCpu<AtomicUsize>) {
    commit::add(c[cpu], 70000);
}

#[test]
fn add_commits_to_the_current_slot() {
    for cpu in cpus() {
        let c: PerCpu<AtomicUsize> = PerCpu::default();
        on_cpu(cpu, || {
            add(&c, 5);
            add(&c, 7);
            add_by_cid(&c, 100);
            add_big(&c);
        });
        let mut want = vec![0; c.len()];
        want[cpu as usize] = 5 + 7 + 100 + 70000;
        assert_eq!(snapshot(&c), want, "cpu {cpu}");
    }
}

#[critical_section]
fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
    let seen = load(v[cpu]);
    if seen != expect {
        fail(Err(seen))
    }
    commit::store(v[cpu], new);
    Ok(())
}

#[critical_section]
fn compare_immediates(v: &PerCpu<AtomicUsize>) -> u8 {
    let x = load(v[cpu]);
    if x == 100000 {
        fail(1)
    }
    if x > 3000000000 {
        fail(2)
    }
    if 3 >= x {
        fail(3)
    }
    if x < 4096 {
        fail(4)
    }
    commit::store(v[cpu], 70000);
    0
}

#[test]
fn compares_take_every_branch() {
    for cpu in cpus() {
        let v: PerCpu<AtomicUsize> = PerCpu::default();
        let slot = |x: usize| v.get(cpu as usize).unwrap().store(x, Ordering::Relaxed);
        on_cpu(cpu, || {
            assert_eq!(cmpeq_store(&v, 0, 9), Ok(()));
            assert_eq!(cmpeq_store(&v, 0, 10), Err(9));
            assert_eq!(cmpeq_store(&v, 9, 11), Ok(()));
        });
        assert_eq!(v.get(cpu as usize).unwrap().load(Ordering::Relaxed), 11);
        for (x, want) in [
            (100000, 1),
            (3000000001, 2),
            (3, 3),
            (0, 3),
            (4095, 4),
            (4096, 0),
        ] {
            slot(x);
            assert_eq!(on_cpu(cpu, || compare_immediates(&v)), want, "x = {x}");
        }
        assert_eq!(v.get(cpu as usize).unwrap().load(Ordering::Relaxed), 70000);
    }
}

#[repr(C)]
#[derive(Default)]
struct Pair {
    pad: [usize; 3],
    a: AtomicUsize,
    b: AtomicUsize,
}

#[critical_section]
fn double_cmp_store(p: &PerCpu<Pair>, e: usize, e2: usize, new: usize) -> bool {
    let a = load(p[cpu].a);
    if a != e {
        fail(false)
    }
    let b = load(p[cpu].b);
    if b != e2 {
        fail(false)
    }
    commit::store_release(p[cpu].a, new);
    true
}

#[test]
fn fields_at_offsets_and_release_commits() {
    for cpu in cpus() {
        let p: PerCpu<Pair> = PerCpu::default();
        p.get(cpu as usize).unwrap().b.store(4, Ordering::Relaxed);
        on_cpu(cpu, || {
            assert!(!double_cmp_store(&p, 1, 4, 2));
            assert!(!double_cmp_store(&p, 0, 5, 2));
            assert!(double_cmp_store(&p, 0, 4, 2));
        });
        assert_eq!(p.get(cpu as usize).unwrap().a.load(Ordering::Relaxed), 2);
    }
}

#[repr(C)]
struct Node {
    next: *mut Node,
    value: usize,
}

/// # Safety
/// `node` is valid and on no list.
#[critical_section]
unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
    let head = load(heads[cpu]);
    store((*node).next, head);
    commit::store_release(heads[cpu], node);
}

/// # Safety
/// Every node on the lists is valid.
#[critical_section]
unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
    let head: *mut Node = load(heads[cpu]);
    if head == null {
        fail(None)
    }
    let next = load((*head).next);
    commit::store(heads[cpu], next);
    Some(head)
}

/// # Safety
/// Every slot points at a valid node.
#[critical_section]
unsafe fn deref_add(heads: &PerCpu<AtomicPtr<Node>>, n: usize) {
    let node: *mut Node = load(heads[cpu]);
    commit::add((*node).value, n);
}

#[test]
fn lists_push_and_pop_through_pointers() {
    for cpu in cpus() {
        let heads: PerCpu<AtomicPtr<Node>> = PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut()));
        let nodes: Vec<*mut Node> = (0..3)
            .map(|i| {
                Box::into_raw(Box::new(Node {
                    next: std::ptr::null_mut(),
                    value: i,
                }))
            })
            .collect();
        on_cpu(cpu, || unsafe {
            for &n in &nodes {
                push(&heads, n);
            }
            deref_add(&heads, 40);
            assert_eq!(pop(&heads), Some(nodes[2]));
            assert_eq!(pop(&heads), Some(nodes[1]));
            assert_eq!(pop(&heads), Some(nodes[0]));
            assert_eq!(pop(&heads), None);
        });
        let values: Vec<usize> = nodes
            .iter()
            .map(|&n| unsafe { Box::from_raw(n) }.value)
            .collect();
        assert_eq!(values, [0, 1, 42]);
    }
}

#[repr(C)]
#[derive(Default)]
struct Buffer {
    len: AtomicUsize,
    items: [AtomicUsize; 4],
}

/// # Safety
/// None beyond the bound the section checks.
#[critical_section]
unsafe fn buffer_push(b: &PerCpu<Buffer>, item: usize) -> bool {
    let len = load(b[cpu].len);
    if len >= 4 {
        fail(false)
    }
    store(b[cpu].items[len], item);
    let grown = add(len, 1);
    commit::store_release(b[cpu].len, grown);
    true
}

/// # Safety
/// As `buffer_push`.
#[critical_section]
unsafe fn buffer_pop(b: &PerCpu<Buffer>) -> Option<usize> {
    let len = load(b[cpu].len);
    if len == 0 {
        fail(None)
    }
    let last = add(len, { usize::MAX });
    let item = load(b[cpu].items[last]);
    commit::store(b[cpu].len, last);
    Some(item)
}

#[test]
fn element_indexing_and_bounds() {
    for cpu in cpus() {
        let b: PerCpu<Buffer> = PerCpu::default();
        on_cpu(cpu, || unsafe {
            for i in 0..4 {
                assert!(buffer_push(&b, 100 + i));
            }
            assert!(!buffer_push(&b, 999));
            for i in (0..4).rev() {
                assert_eq!(buffer_pop(&b), Some(100 + i));
            }
            assert_eq!(buffer_pop(&b), None);
        });
    }
}

/// # Safety
/// `src`/`dst` valid for `len` bytes.
#[critical_section]
unsafe fn publish(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) -> bool {
    let current = load(slots[cpu]);
    if current != 0 {
        fail(false)
    }
    memcpy(dst, src, len);
    commit::store(slots[cpu], dst);
    true
}

#[test]
fn memcpy_copies_every_byte() {
    for cpu in cpus() {
        let slots: PerCpu<AtomicUsize> = PerCpu::default();
        let src: Vec<u8> = (0..67u8).collect();
        let mut dst = vec![0xAAu8; 68];
        let mut other = vec![0u8; 67];
        on_cpu(cpu, || unsafe {
            assert!(publish(&slots, dst.as_mut_ptr(), src.as_ptr(), 67));
            assert!(!publish(&slots, other.as_mut_ptr(), src.as_ptr(), 67));
        });
        assert_eq!(&dst[..67], &src[..]);
        assert_eq!(dst[67], 0xAA, "one byte too many");
        assert!(
            other.iter().all(|&b| b == 0),
            "a failed section must not copy"
        );
        assert_eq!(
            slots.get(cpu as usize).unwrap().load(Ordering::Relaxed),
            dst.as_ptr() as usize
        );
        on_cpu(cpu, || unsafe {
            slots.get(cpu as usize).unwrap().store(0, Ordering::Relaxed);
            assert!(publish(&slots, other.as_mut_ptr(), src.as_ptr(), 0));
        });
        assert!(
            other.iter().all(|&b| b == 0),
            "a zero-length copy writes nothing"
        );
    }
}

#[critical_section(index = given(cpu), moved = false)]
fn add_on(c: &PerCpu<AtomicUsize>, cpu: usize, n: usize) -> bool {
    commit::add(c[cpu], n);
    true
}

#[test]
fn given_cpu_commits_only_on_that_cpu() {
    for cpu in cpus() {
        let c: PerCpu<AtomicUsize> = PerCpu::default();
        on_cpu(cpu, || {
            assert!(add_on(&c, cpu as usize, 3));
            if c.len() > 1 {
                assert!(!add_on(&c, (cpu as usize + 1) % c.len(), 3));
            }
        });
        let mut want = vec![0; c.len()];
        want[cpu as usize] = 3;
        assert_eq!(snapshot(&c), want);
    }
}

/// Two `PerCpu` parameters with different strides (a stride of 3 cache lines on x86_64, scaled
/// by a multiply), and parameters and expressions as values.
#[repr(C)]
struct Wide {
    pad: [[usize; 20]; 2],
    last: AtomicUsize,
}

impl Default for Wide {
    fn default() -> Self {
        Wide {
            pad: [[0; 20]; 2],
            last: AtomicUsize::new(0),
        }
    }
}

#[critical_section]
fn two_bases(small: &PerCpu<AtomicUsize>, wide: &PerCpu<Wide>, n: usize) -> usize {
    let x = load(small[cpu]);
    let y = load(wide[cpu].last);
    let sum = add(x, y);
    store(small[cpu], { n * 2 });
    commit::store(wide[cpu].last, sum);
    sum
}

#[test]
fn several_bases_and_strides() {
    const { assert!(PerCpu::<Wide>::STRIDE > PerCpu::<AtomicUsize>::STRIDE) };
    for cpu in cpus() {
        let small: PerCpu<AtomicUsize> = PerCpu::default();
        let wide: PerCpu<Wide> = PerCpu::default();
        small.get(cpu as usize).unwrap().store(5, Ordering::Relaxed);
        wide.get(cpu as usize)
            .unwrap()
            .last
            .store(6, Ordering::Relaxed);
        assert_eq!(on_cpu(cpu, || two_bases(&small, &wide, 21)), 11);
        assert_eq!(small.get(cpu as usize).unwrap().load(Ordering::Relaxed), 42);
        assert_eq!(
            wide.get(cpu as usize).unwrap().last.load(Ordering::Relaxed),
            11
        );
    }
}
