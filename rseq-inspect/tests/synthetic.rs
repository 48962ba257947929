//! Relocatable objects of every architecture and byte order the project knows, written with
//! `object::write` (no cross toolchain needed): one critical section each, with the tables laid
//! out as the ABI says (32-bit pointers padded to 64 bits in the byte order's order) and filled
//! by the architecture's own relocation types.

use object::write::{Object, Relocation, Symbol, SymbolId, SymbolSection};
use object::{
    elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
    SymbolKind, SymbolScope,
};
use rseq_inspect::{inspect, Error, Field, Problem, Report};

/// An architecture as the test writes it.
struct Target {
    /// The `target_arch` the report should name.
    name: &'static str,
    arch: Architecture,
    endian: Endianness,
    /// The absolute relocation of a pointer (64- or 32-bit).
    absolute: u32,
    pointer_bytes: usize,
    /// RISC-V and LoongArch write label differences as an ADD/SUB pair.
    add_sub: Option<(u32, u32)>,
    /// The signature as the assembler lays it down.
    signature_bytes: [u8; 4],
    /// What the report should expect, read in the file's byte order.
    signature: u32,
}

const TARGETS: &[Target] = &[
    Target {
        name: "s390x",
        arch: Architecture::S390x,
        endian: Endianness::Big,
        absolute: elf::R_390_64,
        pointer_bytes: 8,
        add_sub: None,
        signature_bytes: [0xb2, 0xff, 0x0f, 0xff],
        signature: 0xb2ff_0fff,
    },
    Target {
        name: "powerpc64",
        arch: Architecture::PowerPc64,
        endian: Endianness::Big,
        absolute: elf::R_PPC64_ADDR64,
        pointer_bytes: 8,
        add_sub: None,
        signature_bytes: [0x0f, 0xe5, 0x00, 0x0b],
        signature: 0x0fe5_000b,
    },
    Target {
        name: "powerpc64",
        arch: Architecture::PowerPc64,
        endian: Endianness::Little,
        absolute: elf::R_PPC64_ADDR64,
        pointer_bytes: 8,
        add_sub: None,
        signature_bytes: [0x0b, 0x00, 0xe5, 0x0f],
        signature: 0x0fe5_000b,
    },
    Target {
        name: "powerpc",
        arch: Architecture::PowerPc,
        endian: Endianness::Big,
        absolute: elf::R_PPC_ADDR32,
        pointer_bytes: 4,
        add_sub: None,
        signature_bytes: [0x0f, 0xe5, 0x00, 0x0b],
        signature: 0x0fe5_000b,
    },
    Target {
        name: "riscv64",
        arch: Architecture::Riscv64,
        endian: Endianness::Little,
        absolute: elf::R_RISCV_64,
        pointer_bytes: 8,
        add_sub: Some((elf::R_RISCV_ADD64, elf::R_RISCV_SUB64)),
        signature_bytes: [0x73, 0x10, 0x40, 0xf1],
        signature: 0xf140_1073,
    },
    Target {
        name: "loongarch64",
        arch: Architecture::LoongArch64,
        endian: Endianness::Little,
        absolute: elf::R_LARCH_64,
        pointer_bytes: 8,
        add_sub: Some((elf::R_LARCH_ADD64, elf::R_LARCH_SUB64)),
        signature_bytes: [0x10, 0x00, 0x2a, 0x00],
        signature: 0x002a_0010,
    },
    Target {
        name: "aarch64",
        arch: Architecture::Aarch64,
        endian: Endianness::Little,
        absolute: elf::R_AARCH64_ABS64,
        pointer_bytes: 8,
        add_sub: None,
        signature_bytes: [0x00, 0xbc, 0x28, 0xd4],
        signature: 0xd428_bc00,
    },
    // Instructions stay little-endian on big-endian aarch64: a big-endian program registers
    // the byte swap of 0xd428bc00.
    Target {
        name: "aarch64",
        arch: Architecture::Aarch64,
        endian: Endianness::Big,
        absolute: elf::R_AARCH64_ABS64,
        pointer_bytes: 8,
        add_sub: None,
        signature_bytes: [0x00, 0xbc, 0x28, 0xd4],
        signature: 0x00bc_28d4,
    },
    // REL relocations: the addend is stored in the place.
    Target {
        name: "arm",
        arch: Architecture::Arm,
        endian: Endianness::Little,
        absolute: elf::R_ARM_ABS32,
        pointer_bytes: 4,
        add_sub: None,
        signature_bytes: [0xf3, 0xde, 0xf5, 0xe7],
        signature: 0xe7f5_def3,
    },
];

#[derive(Default, Clone, Copy)]
struct Faults {
    /// 32-bit: store pointers in the other half of their 64-bit word.
    wrong_half: bool,
    /// Store the signature in the other byte order.
    swapped_signature: bool,
    /// Make `__rseq_cs_ptr_array` 12 bytes long.
    trailing_bytes: bool,
    /// Relocate the pointer array with a type no architecture uses for data.
    unknown_relocation: bool,
}

fn section(
    obj: &mut Object<'_>,
    name: &str,
    kind: SectionKind,
    data: &[u8],
    align: u64,
) -> (object::write::SectionId, SymbolId) {
    let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
    obj.append_section_data(id, data, align);
    (id, obj.section_symbol(id))
}

fn build(t: &Target, faults: Faults) -> Vec<u8> {
    let big = t.endian == Endianness::Big;
    let mut obj = Object::new(BinaryFormat::Elf, t.arch, t.endian);
    // Code: the section runs from +8 to +20, the exit is at +24.
    let (text, text_sym) = section(&mut obj, ".text", SectionKind::Text, &[0; 32], 4);
    obj.add_symbol(Symbol {
        name: b"synthetic_function".to_vec(),
        value: 0,
        size: 32,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    let mut signature = t.signature_bytes;
    if faults.swapped_signature {
        signature.reverse();
    }
    let mut failure_code = signature.to_vec();
    failure_code.extend([0; 4]);
    let (_, failure_sym) = section(
        &mut obj,
        "__rseq_failure",
        SectionKind::Text,
        &failure_code,
        4,
    );

    let mut descriptor = [0u8; 32];
    if t.add_sub.is_none() {
        let length = if big {
            12u64.to_be_bytes()
        } else {
            12u64.to_le_bytes()
        };
        descriptor[16..24].copy_from_slice(&length);
    }
    let (cs, cs_sym) = section(&mut obj, "__rseq_cs", SectionKind::Data, &descriptor, 32);
    let pointers_len = if faults.trailing_bytes { 12 } else { 8 };
    let (pointers, _) = section(
        &mut obj,
        "__rseq_cs_ptr_array",
        SectionKind::Data,
        &vec![0; pointers_len],
        8,
    );
    let (exits, _) = section(
        &mut obj,
        "__rseq_exit_point_array",
        SectionKind::Data,
        &[0; 16],
        8,
    );

    // A pointer goes in the low-address half on little-endian, the high-address half on
    // big-endian.
    let pointer_shift = if t.pointer_bytes == 4 && (big != faults.wrong_half) {
        4
    } else {
        0
    };
    let pointer = |obj: &mut Object<'_>, section, offset: u64, symbol, addend: i64, r_type: u32| {
        obj.add_relocation(
            section,
            Relocation {
                offset: offset + pointer_shift,
                symbol,
                addend,
                flags: RelocationFlags::Elf { r_type },
            },
        )
        .unwrap();
    };
    pointer(&mut obj, cs, 8, text_sym, 8, t.absolute);
    pointer(&mut obj, cs, 24, failure_sym, 4, t.absolute);
    if let Some((add, sub)) = t.add_sub {
        for (r_type, addend) in [(add, 20), (sub, 8)] {
            obj.add_relocation(
                cs,
                Relocation {
                    offset: 16,
                    symbol: text_sym,
                    addend,
                    flags: RelocationFlags::Elf { r_type },
                },
            )
            .unwrap();
        }
    }
    let pointer_type = if faults.unknown_relocation {
        250
    } else {
        t.absolute
    };
    pointer(&mut obj, pointers, 0, cs_sym, 0, pointer_type);
    pointer(&mut obj, exits, 0, text_sym, 8, t.absolute);
    pointer(&mut obj, exits, 8, text_sym, 24, t.absolute);
    obj.write().unwrap()
}

fn check(t: &Target, faults: Faults) -> Report {
    let data = build(t, faults);
    let report = inspect(&data).unwrap_or_else(|e| panic!("{} {:?}: {e}", t.name, t.endian));
    eprintln!(
        "{} {:?}:\n{}",
        t.name,
        t.endian,
        report.render(rseq_inspect::Verbosity::Full)
    );
    report
}

#[test]
fn every_architecture_and_byte_order_passes() {
    for t in TARGETS {
        let report = check(t, Faults::default());
        let what = format!("{} {:?}", t.name, t.endian);
        assert!(
            report.is_ok(),
            "{what}: {}",
            report.render(rseq_inspect::Verbosity::Quiet)
        );
        assert_eq!(report.file.arch.target_arch, t.name, "{what}");
        assert_eq!(
            report.file.big_endian,
            t.endian == Endianness::Big,
            "{what}"
        );
        assert_eq!(report.file.pointer_bytes, t.pointer_bytes, "{what}");
        assert_eq!(report.file.signature, t.signature, "{what}");
        assert_eq!(report.descriptors.len(), 1, "{what}");
        let d = &report.descriptors[0];
        assert_eq!(d.post_commit_offset, 12, "{what}");
        assert_eq!(
            report.describe(d.start_ip),
            "synthetic_function+0x8",
            "{what}"
        );
        assert_eq!(report.describe(d.abort_ip), "__rseq_failure+0x4", "{what}");
        assert_eq!(d.exits.len(), 1, "{what}");
        assert_eq!(
            report.describe(d.exits[0]),
            "synthetic_function+0x18",
            "{what}"
        );
        assert_eq!(report.pointer_count, 1, "{what}");
    }
}

#[test]
fn signature_in_the_wrong_byte_order_is_reported() {
    for t in TARGETS {
        let report = check(
            t,
            Faults {
                swapped_signature: true,
                ..Faults::default()
            },
        );
        assert_eq!(
            report.descriptors[0].problems,
            [Problem::WrongSignature {
                found: t.signature.swap_bytes(),
                expected: t.signature
            }],
            "{} {:?}",
            t.name,
            t.endian
        );
        assert_eq!(report.problem_count(), 1);
    }
}

#[test]
fn pointer_in_the_wrong_half_is_reported_on_32_bit() {
    for t in TARGETS.iter().filter(|t| t.pointer_bytes == 4) {
        let report = check(
            t,
            Faults {
                wrong_half: true,
                ..Faults::default()
            },
        );
        let d = &report.descriptors[0];
        assert!(
            matches!(
                d.problems[..],
                [
                    Problem::TooWide {
                        field: Field::StartIp,
                        ..
                    },
                    Problem::TooWide {
                        field: Field::AbortIp,
                        ..
                    },
                    Problem::NotListed
                ]
            ),
            "{} {:?}: {:?}",
            t.name,
            t.endian,
            d.problems
        );
        assert!(matches!(
            report.bad_pointers[0].problems[..],
            [Problem::TooWide {
                field: Field::Pointer,
                ..
            }]
        ));
    }
}

#[test]
fn table_problems_are_reported() {
    let t = &TARGETS[0];
    let report = check(
        t,
        Faults {
            trailing_bytes: true,
            ..Faults::default()
        },
    );
    assert_eq!(
        report.table_problems,
        [Problem::TrailingBytes {
            section: "__rseq_cs_ptr_array".into(),
            bytes: 4
        }]
    );
    assert!(report.descriptors[0].problems.is_empty());

    let report = check(
        t,
        Faults {
            unknown_relocation: true,
            ..Faults::default()
        },
    );
    match &report.bad_pointers[0].problems[..] {
        [Problem::Unresolved {
            field: Field::Pointer,
            reason,
        }] => assert!(reason.contains("type 250"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.descriptors[0].problems, [Problem::NotListed]);
}

#[test]
fn unreadable_input_is_an_error() {
    assert!(matches!(
        inspect(b"not an ELF file at all"),
        Err(Error::NotElf)
    ));
    let mips = Object::new(BinaryFormat::Elf, Architecture::Mips, Endianness::Big)
        .write()
        .unwrap();
    let err = inspect(&mips).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedMachine {
                machine: elf::EM_MIPS,
                is_64: false
            }
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("not an architecture rseq supports"));
    let mut truncated = build(&TARGETS[0], Faults::default());
    truncated.truncate(80);
    assert!(matches!(inspect(&truncated), Err(Error::Malformed(_))));
}

#[test]
fn a_file_without_tables_is_fine() {
    let obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
        .write()
        .unwrap();
    let report = inspect(&obj).unwrap();
    assert!(report.is_ok());
    assert!(!report.has_descriptor_section);
    let text = report.render(rseq_inspect::Verbosity::Full);
    assert!(text.contains("no __rseq_cs section"), "{text}");
    assert!(text.ends_with("0 descriptors, 0 exit points, 0 problems\n"));
}
