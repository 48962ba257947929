//! Expansion snapshots: the x86_64 assembly generated for each librseq-equivalent operation, so
//! a reviewer can read it without expanding anything. The expected text lives in
//! `rseq-macros/snapshots/<name>.asm`, and the i686 version (five registers: values shared,
//! kept in memory and spilled) in `rseq-macros/snapshots/i686/<name>.asm`; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change, and review the diff.

use crate::plan::{FrameWord, Operand, Plan};
use crate::{parse, valid};
use quote::quote;

fn render(
    target_arch: &str,
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> String {
    let options = parse::parse_options(attr).unwrap();
    let section = parse::parse_section(options, item).unwrap();
    let checked = valid::validate(&section).unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan::build(&section, &checked, target_arch);
    let codegen = rseq_arch::codegen(target_arch).unwrap();
    let mut out = String::new();
    for line in (codegen.emit)(&plan.ops) {
        let indent = if line.ends_with(':') || line.starts_with('.') {
            ""
        } else {
            "    "
        };
        out += &format!("{indent}{line}\n");
    }
    out += "\n; operands\n";
    for (name, op) in &plan.operands {
        let class = if plan.byte_operands.contains(name) {
            codegen.byte_register_class
        } else {
            codegen.register_class
        };
        let what = match op {
            Operand::In(e) => format!("in({class}) {e}"),
            Operand::InOut(e) => format!("inout({class}) {e} => _"),
            Operand::Scratch => format!("out({class}) _"),
            Operand::Const(e) => format!("const {e}"),
            Operand::Sym(e) => format!("sym {e}"),
            Operand::Label(code) => format!("label (outcome {code})"),
        };
        out += &format!(";   {name} = {what}\n");
    }
    if let Some(words) = &plan.frame {
        out += "; frame\n";
        for (i, word) in words.iter().enumerate() {
            let what = match word {
                FrameWord::Slot(slot) => format!("result slot {slot}"),
                FrameWord::Input(e) => format!("{e}"),
                FrameWord::Spill => "spill".into(),
            };
            out += &format!(";   [{i}] {what}\n");
        }
    }
    out += &format!("; registers: {}\n", plan.registers());
    out
}

/// Checks the x86_64 and the i686 snapshot of a section.
fn check(name: &str, attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    check_one(&dir, "x86_64", name, attr.clone(), item.clone());
    check_one(&dir.join("i686"), "x86", name, attr, item);
}

fn check_one(
    dir: &std::path::Path,
    target_arch: &str,
    name: &str,
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) {
    let actual = render(target_arch, attr, item);
    compare_or_update(
        &dir.join(format!("{name}.asm")),
        &actual,
        &format!("generated {target_arch} asm for `{name}`"),
    );
}

/// Compares `actual` with the snapshot at `path`, or rewrites it under `UPDATE_SNAPSHOTS=1`.
fn compare_or_update(path: &std::path::Path, actual: &str, what: &str) {
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{what} changed; review, then UPDATE_SNAPSHOTS=1"
    );
}

#[test]
fn counter_add() {
    check(
        "counter_add",
        quote!(),
        quote! {
            fn add(counters: &PerCpu<AtomicU64>, n: u64) {
                commit::add(counters[cpu], n);
            }
        },
    );
}

#[test]
fn cmpeq_store() {
    check(
        "cmpeq_store",
        quote!(),
        quote! {
            fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
                let seen = load(v[cpu]);
                if seen != expect { fail(Err(seen)) }
                commit::store(v[cpu], new);
                Ok(())
            }
        },
    );
}

#[test]
fn pop() {
    check(
        "pop",
        quote!(index = mm_cid),
        quote! {
            unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
                let head: *mut Node = load(heads[cpu]);
                if head == null { fail(None) }
                let next = load((*head).next);
                commit::store(heads[cpu], next);
                Some(head)
            }
        },
    );
}

/// An array stack's pop: `sub` of a literal is an immediate (no register holds the `-1`).
#[test]
fn index_pop() {
    check(
        "index_pop",
        quote!(),
        quote! {
            unsafe fn index_pop(stacks: &PerCpu<Stack>) -> Option<usize> {
                let len = load(stacks[cpu].len);
                if len == 0 { fail(None) }
                let last = sub(len, 1);
                let item = load(stacks[cpu].items[last]);
                commit::store(stacks[cpu].len, last);
                Some(item)
            }
        },
    );
}

#[test]
fn double_compare_store() {
    check(
        "double_compare_store",
        quote!(),
        quote! {
            fn double_cmp(p: &PerCpu<Pair>, e: usize, e2: usize, new: usize) -> bool {
                let a = load(p[cpu].a);
                if a != e { fail(false) }
                let b = load(p[cpu].b);
                if b != e2 { fail(false) }
                commit::store(p[cpu].a, new);
                true
            }
        },
    );
}

#[test]
fn try_store() {
    check(
        "try_store",
        quote!(),
        quote! {
            unsafe fn buffer_push(bufs: &PerCpu<Buffer>, item: usize) -> bool {
                let len = load(bufs[cpu].len);
                if len >= 16 { fail(false) }
                store(bufs[cpu].items[len], item);
                let grown = add(len, 1);
                commit::store_release(bufs[cpu].len, grown);
                true
            }
        },
    );
}

#[test]
fn memcpy() {
    check(
        "memcpy",
        quote!(),
        quote! {
            unsafe fn publish(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) -> bool {
                let current = load(slots[cpu]);
                if current != 0 { fail(false) }
                memcpy(dst, src, len);
                commit::store(slots[cpu], dst);
                true
            }
        },
    );
}

#[test]
fn deref_add() {
    check(
        "deref_add",
        quote!(),
        quote! {
            unsafe fn deref_add(p: &PerCpu<AtomicPtr<Node>>, n: u64) {
                let node: *mut Node = load(p[cpu]);
                commit::add((*node).value, n);
            }
        },
    );
}

#[test]
fn given_cpu() {
    check(
        "given_cpu",
        quote!(index = given(cpu), moved = false),
        quote! {
            fn add_on(counters: &PerCpu<AtomicU64>, cpu: usize, n: u64) -> bool {
                commit::add(counters[cpu], n);
                true
            }
        },
    );
}

/// The whole generated function of the counter add, as a reviewer would read the wrapper: the
/// x86_64 parts only (the other architectures' `cfg`-gated statements are dropped), pretty-printed,
/// in `rseq-macros/snapshots/counter_add.expanded.rs`.
#[test]
fn counter_add_whole_function() {
    use syn::visit_mut::VisitMut;
    struct KeepX86_64;
    impl KeepX86_64 {
        fn kept(attrs: &[syn::Attribute]) -> bool {
            attrs.iter().all(|a| {
                if !a.path().is_ident("cfg") {
                    return true;
                }
                let text = a.meta.to_token_stream().to_string();
                !text.contains("target_arch") || text == "cfg (target_arch = \"x86_64\")"
            })
        }
    }
    impl VisitMut for KeepX86_64 {
        fn visit_block_mut(&mut self, block: &mut syn::Block) {
            block.stmts.retain(|stmt| match stmt {
                syn::Stmt::Local(l) => Self::kept(&l.attrs),
                syn::Stmt::Macro(m) => Self::kept(&m.attrs),
                syn::Stmt::Item(syn::Item::Macro(m)) => Self::kept(&m.attrs),
                _ => true,
            });
            syn::visit_mut::visit_block_mut(self, block);
        }
    }
    use quote::ToTokens;
    let tokens = crate::expand_critical_section(
        quote!(),
        quote! {
            fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
                commit::add(counters[cpu], n);
            }
        },
    );
    let mut file: syn::File = syn::parse2(tokens).expect("the expansion parses");
    KeepX86_64.visit_file_mut(&mut file);
    let actual = format!(
        "// The whole function `#[critical_section]` generates for the README's counter add, x86_64\n// parts only (rseq-macros/src/snapshots.rs: counter_add_whole_function).\n\n{}",
        prettyplease::unparse(&file)
    );
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/counter_add.expanded.rs");
    compare_or_update(&path, &actual, "the generated counter add function");
}
