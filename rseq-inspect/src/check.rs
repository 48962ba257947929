//! The checks: what the kernel checks when it aborts a section, and the consistency of the three
//! tables.

use std::collections::HashMap;

use crate::elf::{Image, Table, Word};
use crate::{Descriptor, ExitPoint, Field, FileKind, Options, PointerEntry, Problem, Report};

/// Bytes of one `struct rseq_cs`.
const DESCRIPTOR_BYTES: usize = 32;
/// The `ud1` opcode and ModRM byte the x86 signature word follows.
const X86_TRAP_PREFIX: [u8; 3] = [0x0f, 0xb9, 0x3d];

struct Checker<'a, 'data> {
    image: &'a Image<'data>,
    options: Options,
}

impl Checker<'_, '_> {
    /// Checks that apply to every word holding an address. Returns whether the value can be
    /// used for further checks.
    fn pointer(&self, field: Field, word: &Word, problems: &mut Vec<Problem>) -> bool {
        if let Some(reason) = &word.unresolved {
            problems.push(Problem::Unresolved {
                field,
                reason: reason.clone(),
            });
            return false;
        }
        if self.image.info.kind != FileKind::Executable && !word.relocated {
            problems.push(Problem::NotRelocated {
                field,
                value: word.value,
            });
            return false;
        }
        if self.image.info.pointer_bytes == 4 && word.value > u64::from(u32::MAX) {
            problems.push(Problem::TooWide {
                field,
                value: word.value,
            });
            return false;
        }
        true
    }

    /// The address must be in an executable section.
    fn code(&self, field: Field, address: u64, problems: &mut Vec<Problem>) -> bool {
        match self.image.map.section_at(address) {
            Some(s) if s.exec => true,
            section => {
                problems.push(Problem::NotExecutable {
                    field,
                    address,
                    section: section.map(|s| s.name.clone()),
                });
                false
            }
        }
    }

    fn signature(&self, abort_ip: u64, problems: &mut Vec<Problem>) {
        let info = &self.image.info;
        let Some(bytes) = abort_ip
            .checked_sub(4)
            .and_then(|a| self.image.bytes_at(a, 4))
        else {
            problems.push(Problem::SignatureUnreadable);
            return;
        };
        let bytes: [u8; 4] = bytes.try_into().unwrap();
        let found = if info.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        if found != info.signature {
            problems.push(Problem::WrongSignature {
                found,
                expected: info.signature,
            });
            return;
        }
        if self.options.strict && matches!(info.arch.target_arch, "x86_64" | "x86") {
            match abort_ip
                .checked_sub(7)
                .and_then(|a| self.image.bytes_at(a, 3))
            {
                Some(prefix) if prefix == X86_TRAP_PREFIX => {}
                Some(prefix) => problems.push(Problem::NoTrapPrefix {
                    found: prefix.try_into().unwrap(),
                }),
                None => problems.push(Problem::NoTrapPrefix { found: [0; 3] }),
            }
        }
    }

    fn trailing(&self, table: &Table, entry: usize, problems: &mut Vec<Problem>) -> usize {
        // Made-up bases of relocatable objects are always aligned; only linked files can tell.
        if self.options.strict && !self.image.map.relocatable && !table.address.is_multiple_of(8) {
            problems.push(Problem::MisalignedTable {
                section: table.name.clone(),
                address: table.address,
            });
        }
        let rest = table.bytes.len() % entry;
        if rest != 0 {
            problems.push(Problem::TrailingBytes {
                section: table.name.clone(),
                bytes: rest as u64,
            });
        }
        table.bytes.len() - rest
    }
}

pub(crate) fn check(image: Image<'_>, options: Options) -> Report {
    let checker = Checker {
        image: &image,
        options,
    };
    let big = image.info.big_endian;
    let mut table_problems = image.problems.clone();

    // Descriptors, with whether start_ip is usable.
    let mut descriptors: Vec<(Descriptor, bool)> = Vec::new();
    for table in &image.descriptors {
        let whole = checker.trailing(table, DESCRIPTOR_BYTES, &mut table_problems);
        for offset in (0..whole).step_by(DESCRIPTOR_BYTES) {
            let mut problems = Vec::new();
            let address = table.address.wrapping_add(offset as u64);
            let version = table.u32(offset, big);
            let flags = table.u32(offset + 4, big);
            let start = table.word(offset + 8, big);
            let length = table.word(offset + 16, big);
            let abort = table.word(offset + 24, big);
            if version != 0 {
                problems.push(Problem::Version(version));
            }
            if flags != 0 {
                problems.push(Problem::Flags(flags));
            }
            if !address.is_multiple_of(DESCRIPTOR_BYTES as u64) {
                problems.push(Problem::Misaligned);
            }
            let start_ok = checker.pointer(Field::StartIp, &start, &mut problems);
            let length_ok = match &length.unresolved {
                Some(reason) => {
                    problems.push(Problem::Unresolved {
                        field: Field::PostCommitOffset,
                        reason: reason.clone(),
                    });
                    false
                }
                None => true,
            };
            let abort_ok = checker.pointer(Field::AbortIp, &abort, &mut problems);
            if length_ok && length.value == 0 {
                problems.push(Problem::EmptyRange);
            }
            let end = if start_ok && length_ok {
                let end = start.value.checked_add(length.value);
                if end.is_none() {
                    problems.push(Problem::Overflow);
                }
                end
            } else {
                None
            };
            if let (Some(end), true) = (end, abort_ok) {
                if (start.value..end).contains(&abort.value) {
                    problems.push(Problem::AbortInside);
                }
            }
            if start_ok && checker.code(Field::StartIp, start.value, &mut problems) {
                let section = image.map.section_at(start.value).unwrap();
                if let Some(end) = end {
                    if end - section.address > section.size {
                        problems.push(Problem::RangeLeavesSection {
                            end,
                            section: section.name.clone(),
                        });
                    }
                }
            }
            if abort_ok {
                checker.code(Field::AbortIp, abort.value, &mut problems);
                checker.signature(abort.value, &mut problems);
            }
            let descriptor = Descriptor {
                address,
                version,
                flags,
                start_ip: start.value,
                post_commit_offset: length.value,
                abort_ip: abort.value,
                exits: Vec::new(),
                problems,
            };
            descriptors.push((descriptor, start_ok && length_ok));
        }
    }

    // __rseq_cs_ptr_array.
    let mut listed: HashMap<u64, usize> = HashMap::new();
    let mut bad_pointers = Vec::new();
    let mut pointer_count = 0;
    for table in &image.pointers {
        let whole = checker.trailing(table, 8, &mut table_problems);
        for offset in (0..whole).step_by(8) {
            pointer_count += 1;
            let word = table.word(offset, big);
            let mut problems = Vec::new();
            if checker.pointer(Field::Pointer, &word, &mut problems) {
                *listed.entry(word.value).or_default() += 1;
                if !descriptors.iter().any(|(d, _)| d.address == word.value) {
                    problems.push(Problem::PointsAtNoDescriptor(word.value));
                }
            }
            if !problems.is_empty() {
                bad_pointers.push(PointerEntry {
                    address: table.address.wrapping_add(offset as u64),
                    value: word.value,
                    problems,
                });
            }
        }
    }
    for (d, _) in &mut descriptors {
        match listed.get(&d.address).copied().unwrap_or(0) {
            0 => d.problems.push(Problem::NotListed),
            1 => {}
            n => d.problems.push(Problem::ListedMoreThanOnce(n)),
        }
    }

    // __rseq_exit_point_array.
    let mut exit_points = Vec::new();
    for table in &image.exits {
        let whole = checker.trailing(table, 16, &mut table_problems);
        for offset in (0..whole).step_by(16) {
            let start = table.word(offset, big);
            let exit = table.word(offset + 8, big);
            let mut problems = Vec::new();
            let start_ok = checker.pointer(Field::ExitStartIp, &start, &mut problems);
            let exit_ok = checker.pointer(Field::ExitIp, &exit, &mut problems);
            if exit_ok && checker.code(Field::ExitIp, exit.value, &mut problems) {
                let section = image.map.section_at(exit.value).unwrap();
                if image.map.has_symtab
                    && image.map.has_functions_in(section)
                    && image.map.function_at(exit.value).is_none()
                {
                    problems.push(Problem::ExitOutsideFunctions(exit.value));
                }
            }
            if start_ok {
                let mut found = false;
                for (d, usable) in &mut descriptors {
                    if !*usable || d.start_ip != start.value {
                        continue;
                    }
                    found = true;
                    d.exits.push(exit.value);
                    let end = d.start_ip.saturating_add(d.post_commit_offset);
                    if exit_ok && (d.start_ip..end).contains(&exit.value) {
                        problems.push(Problem::ExitInside {
                            exit_ip: exit.value,
                            start_ip: d.start_ip,
                            end,
                        });
                    }
                }
                if !found {
                    problems.push(Problem::UnknownSection(start.value));
                }
            }
            exit_points.push(ExitPoint {
                address: table.address.wrapping_add(offset as u64),
                start_ip: start.value,
                exit_ip: exit.value,
                problems,
            });
        }
    }

    Report {
        file: image.info,
        descriptors: descriptors.into_iter().map(|(d, _)| d).collect(),
        exit_points,
        bad_pointers,
        pointer_count,
        table_problems,
        has_descriptor_section: !image.descriptors.is_empty(),
        map: image.map,
    }
}
