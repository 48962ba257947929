//! Reading the ELF file: header facts, sections, function symbols, and the three tables with
//! their relocations applied.

use std::collections::BTreeMap;

use object::elf;
use object::read::elf::{
    Crel, Dyn, FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym, SymbolTable,
};
use object::{Endianness, SectionIndex, SymbolIndex};

use crate::{sections, Error, FileInfo, FileKind, Location, Problem};

/// A section as the checks see it.
#[derive(Debug, Clone)]
pub(crate) struct SectionInfo {
    pub name: String,
    /// Virtual address (linked files) or made-up base (relocatable objects).
    pub address: u64,
    pub size: u64,
    pub exec: bool,
    /// Whether the section occupies addresses: allocated, not thread-local, not empty.
    pub mapped: bool,
}

/// A function symbol with a size.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub address: u64,
    pub size: u64,
    pub name: String,
}

/// Sections and function symbols by address.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressMap {
    /// Indexed by ELF section index.
    pub sections: Vec<SectionInfo>,
    /// Sorted by address.
    pub functions: Vec<Function>,
    pub relocatable: bool,
    /// Whether the file has a `.symtab` (not stripped).
    pub has_symtab: bool,
}

impl AddressMap {
    pub fn section_at(&self, address: u64) -> Option<&SectionInfo> {
        self.sections
            .iter()
            .find(|s| s.mapped && s.address <= address && address - s.address < s.size)
    }

    pub fn function_at(&self, address: u64) -> Option<&Function> {
        let after = self.functions.partition_point(|f| f.address <= address);
        // Nested or aliased symbols are rare: look back a little.
        self.functions[..after]
            .iter()
            .rev()
            .take(16)
            .find(|f| address - f.address < f.size)
    }

    /// Whether any sized function symbol lies in `section`.
    pub fn has_functions_in(&self, section: &SectionInfo) -> bool {
        let first = self
            .functions
            .partition_point(|f| f.address < section.address);
        self.functions
            .get(first)
            .is_some_and(|f| f.address - section.address < section.size)
    }

    pub fn locate(&self, address: u64) -> Option<Location> {
        let section = self.section_at(address)?;
        Some(Location {
            section: section.name.clone(),
            offset: address - section.address,
            function: self
                .function_at(address)
                .map(|f| (f.name.clone(), address - f.address)),
        })
    }

    pub fn describe(&self, address: u64) -> String {
        let symbolic = self.locate(address).map(|l| match l.function {
            Some((name, 0)) => name,
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{}+{:#x}", l.section, l.offset),
        });
        match (self.relocatable, symbolic) {
            (true, Some(s)) => s,
            (true, None) => format!("{address:#x} (outside every section)"),
            (false, Some(s)) => format!("{address:#x} <{s}>"),
            (false, None) => format!("{address:#x}"),
        }
    }
}

/// One table section with its relocations applied.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: String,
    pub address: u64,
    pub bytes: Vec<u8>,
    /// Per byte: whether a relocation wrote it (or, for RELR, covers it).
    pub relocated: Vec<bool>,
    /// Offset of a relocation whose symbol could not be resolved → why.
    pub unresolved: BTreeMap<u64, String>,
}

/// A 64-bit table word and what is known about where its value came from.
pub(crate) struct Word {
    pub value: u64,
    pub relocated: bool,
    pub unresolved: Option<String>,
}

impl Table {
    pub fn word(&self, offset: usize, big_endian: bool) -> Word {
        let bytes: [u8; 8] = self.bytes[offset..offset + 8].try_into().unwrap();
        let value = if big_endian {
            u64::from_be_bytes(bytes)
        } else {
            u64::from_le_bytes(bytes)
        };
        Word {
            value,
            relocated: self.relocated[offset..offset + 8].iter().any(|r| *r),
            unresolved: self
                .unresolved
                .range(offset as u64..offset as u64 + 8)
                .next()
                .map(|(_, r)| r.clone()),
        }
    }

    pub fn u32(&self, offset: usize, big_endian: bool) -> u32 {
        let bytes: [u8; 4] = self.bytes[offset..offset + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }
}

/// Everything the checks need.
pub(crate) struct Image<'data> {
    pub info: FileInfo,
    pub map: AddressMap,
    /// Contents per ELF section index (`None` for `SHT_NOBITS` or unreadable).
    pub contents: Vec<Option<&'data [u8]>>,
    pub descriptors: Vec<Table>,
    pub pointers: Vec<Table>,
    pub exits: Vec<Table>,
    pub problems: Vec<Problem>,
}

impl Image<'_> {
    /// `len` bytes at `address`, from one section with contents.
    pub fn bytes_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        let (index, section) = self
            .map
            .sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.mapped && s.address <= address && address - s.address < s.size)?;
        let data = self.contents[index]?;
        let start = usize::try_from(address - section.address).ok()?;
        data.get(start..start.checked_add(len)?)
    }
}

pub(crate) fn load(data: &[u8]) -> Result<Image<'_>, Error> {
    match object::FileKind::parse(data) {
        Ok(object::FileKind::Elf32) => load_elf::<elf::FileHeader32<Endianness>>(data),
        Ok(object::FileKind::Elf64) => load_elf::<elf::FileHeader64<Endianness>>(data),
        _ => Err(Error::NotElf),
    }
}

/// The `target_arch` name for an ELF machine and class.
fn arch_name(machine: u16, is_64: bool) -> Option<&'static str> {
    Some(match (machine, is_64) {
        (elf::EM_X86_64, _) => "x86_64",
        (elf::EM_386, false) => "x86",
        (elf::EM_AARCH64, true) => "aarch64",
        (elf::EM_ARM, false) => "arm",
        (elf::EM_PPC64, true) => "powerpc64",
        (elf::EM_PPC, false) => "powerpc",
        (elf::EM_RISCV, true) => "riscv64",
        (elf::EM_S390, true) => "s390x",
        (elf::EM_LOONGARCH, true) => "loongarch64",
        _ => return None,
    })
}

/// What a relocation does to the word it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `S + A`.
    Absolute,
    /// `B + A` with load base 0.
    Relative,
    /// `place + S + A` (RISC-V, LoongArch label differences).
    Add,
    /// `place - (S + A)`.
    Sub,
    /// Nothing (`R_*_NONE`).
    None,
}

/// The operation and width in bytes of a relocation type, or `None` for an unknown type.
fn relocation_op(machine: u16, r_type: u32) -> Option<(Op, usize)> {
    use Op::*;
    Some(match (machine, r_type) {
        (elf::EM_X86_64, elf::R_X86_64_NONE) => (None, 0),
        (elf::EM_X86_64, elf::R_X86_64_64) => (Absolute, 8),
        (elf::EM_X86_64, elf::R_X86_64_32 | elf::R_X86_64_32S) => (Absolute, 4),
        (elf::EM_X86_64, elf::R_X86_64_RELATIVE) => (Relative, 8),
        (elf::EM_386, elf::R_386_NONE) => (None, 0),
        (elf::EM_386, elf::R_386_32) => (Absolute, 4),
        (elf::EM_386, elf::R_386_RELATIVE) => (Relative, 4),
        (elf::EM_AARCH64, elf::R_AARCH64_NONE) => (None, 0),
        (elf::EM_AARCH64, elf::R_AARCH64_ABS64) => (Absolute, 8),
        (elf::EM_AARCH64, elf::R_AARCH64_ABS32) => (Absolute, 4),
        (elf::EM_AARCH64, elf::R_AARCH64_RELATIVE) => (Relative, 8),
        (elf::EM_ARM, elf::R_ARM_NONE) => (None, 0),
        (elf::EM_ARM, elf::R_ARM_ABS32) => (Absolute, 4),
        (elf::EM_ARM, elf::R_ARM_RELATIVE) => (Relative, 4),
        (elf::EM_PPC64, elf::R_PPC64_NONE) => (None, 0),
        (elf::EM_PPC64, elf::R_PPC64_ADDR64) => (Absolute, 8),
        (elf::EM_PPC64, elf::R_PPC64_ADDR32) => (Absolute, 4),
        (elf::EM_PPC64, elf::R_PPC64_RELATIVE) => (Relative, 8),
        (elf::EM_PPC, elf::R_PPC_NONE) => (None, 0),
        (elf::EM_PPC, elf::R_PPC_ADDR32) => (Absolute, 4),
        (elf::EM_PPC, elf::R_PPC_RELATIVE) => (Relative, 4),
        (elf::EM_RISCV, elf::R_RISCV_NONE) => (None, 0),
        (elf::EM_RISCV, elf::R_RISCV_64) => (Absolute, 8),
        (elf::EM_RISCV, elf::R_RISCV_32) => (Absolute, 4),
        (elf::EM_RISCV, elf::R_RISCV_RELATIVE) => (Relative, 8),
        (elf::EM_RISCV, elf::R_RISCV_ADD64) => (Add, 8),
        (elf::EM_RISCV, elf::R_RISCV_SUB64) => (Sub, 8),
        (elf::EM_RISCV, elf::R_RISCV_ADD32) => (Add, 4),
        (elf::EM_RISCV, elf::R_RISCV_SUB32) => (Sub, 4),
        (elf::EM_S390, elf::R_390_NONE) => (None, 0),
        (elf::EM_S390, elf::R_390_64) => (Absolute, 8),
        (elf::EM_S390, elf::R_390_32) => (Absolute, 4),
        (elf::EM_S390, elf::R_390_RELATIVE) => (Relative, 8),
        (elf::EM_LOONGARCH, elf::R_LARCH_NONE) => (None, 0),
        (elf::EM_LOONGARCH, elf::R_LARCH_64) => (Absolute, 8),
        (elf::EM_LOONGARCH, elf::R_LARCH_32) => (Absolute, 4),
        (elf::EM_LOONGARCH, elf::R_LARCH_RELATIVE) => (Relative, 8),
        (elf::EM_LOONGARCH, elf::R_LARCH_ADD64) => (Add, 8),
        (elf::EM_LOONGARCH, elf::R_LARCH_SUB64) => (Sub, 8),
        (elf::EM_LOONGARCH, elf::R_LARCH_ADD32) => (Add, 4),
        (elf::EM_LOONGARCH, elf::R_LARCH_SUB32) => (Sub, 4),
        _ => return Option::None,
    })
}

fn read_uint(bytes: &[u8], big_endian: bool) -> u64 {
    let mut v = 0u64;
    if big_endian {
        for b in bytes {
            v = (v << 8) | u64::from(*b);
        }
    } else {
        for b in bytes.iter().rev() {
            v = (v << 8) | u64::from(*b);
        }
    }
    v
}

fn write_uint(bytes: &mut [u8], mut v: u64, big_endian: bool) {
    if big_endian {
        for b in bytes.iter_mut().rev() {
            *b = v as u8;
            v >>= 8;
        }
    } else {
        for b in bytes.iter_mut() {
            *b = v as u8;
            v >>= 8;
        }
    }
}

fn demangle(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    format!("{:#}", rustc_demangle::demangle(&name))
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

fn load_elf<'data, Elf: FileHeader<Endian = Endianness>>(
    data: &'data [u8],
) -> Result<Image<'data>, Error> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let big_endian = endian == Endianness::Big;
    let is_64 = header.is_class_64();
    let machine = header.e_machine(endian);
    let arch = arch_name(machine, is_64)
        .and_then(rseq_arch::by_target_arch)
        .ok_or(Error::UnsupportedMachine { machine, is_64 })?;
    let sections = header.sections(endian, data)?;
    let kind = match header.e_type(endian) {
        elf::ET_REL => FileKind::Relocatable,
        elf::ET_EXEC => FileKind::Executable,
        elf::ET_DYN => {
            let interp = header
                .program_headers(endian, data)?
                .iter()
                .any(|p| p.p_type(endian) == elf::PT_INTERP);
            let pie_flag = sections.dynamic(endian, data)?.is_some_and(|(entries, _)| {
                entries.iter().any(|d| {
                    d.d_tag(endian).into() == u64::from(elf::DT_FLAGS_1)
                        && d.d_val(endian).into() & u64::from(elf::DF_1_PIE) != 0
                })
            });
            if interp || pie_flag {
                FileKind::PositionIndependentExecutable
            } else {
                FileKind::SharedObject
            }
        }
        t => return Err(Error::UnsupportedType(t)),
    };
    let relocatable = kind == FileKind::Relocatable;
    // aarch64 instructions are little-endian even in a big-endian file; the signature is
    // emitted as an instruction (`.inst`), so a big-endian program registers its byte swap.
    let signature = if big_endian && machine == elf::EM_AARCH64 {
        arch.signature.swap_bytes()
    } else {
        arch.signature
    };
    let info = FileInfo {
        arch,
        machine,
        pointer_bytes: if is_64 { 8 } else { 4 },
        big_endian,
        kind,
        signature,
    };

    // Sections, with made-up distinct bases in relocatable objects.
    let mut map = AddressMap {
        relocatable,
        ..AddressMap::default()
    };
    let mut contents = Vec::new();
    let mut next_base = 0x10000u64;
    for (_, shdr) in sections.enumerate() {
        let name = String::from_utf8_lossy(sections.section_name(endian, shdr).unwrap_or(b"?"))
            .into_owned();
        let flags: u64 = shdr.sh_flags(endian).into();
        let size: u64 = shdr.sh_size(endian).into();
        let alloc = flags & u64::from(elf::SHF_ALLOC) != 0;
        let tls = flags & u64::from(elf::SHF_TLS) != 0;
        let address = if !relocatable {
            shdr.sh_addr(endian).into()
        } else if alloc {
            let align: u64 = shdr.sh_addralign(endian).into();
            let base = align_up(
                next_base,
                align
                    .max(0x1000)
                    .checked_next_power_of_two()
                    .unwrap_or(0x1000),
            );
            next_base = base.saturating_add(size).saturating_add(0x1000);
            base
        } else {
            0
        };
        map.sections.push(SectionInfo {
            name,
            address,
            size,
            exec: flags & u64::from(elf::SHF_EXECINSTR) != 0,
            mapped: alloc && !tls && size > 0,
        });
        contents.push(if shdr.sh_type(endian) == elf::SHT_NOBITS {
            None
        } else {
            shdr.data(endian, data).ok()
        });
    }

    // Function symbols: .symtab, or .dynsym in a stripped file.
    let symtab = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    map.has_symtab = !symtab.is_empty();
    let symbols = if map.has_symtab {
        symtab
    } else {
        sections.symbols(endian, data, elf::SHT_DYNSYM)?
    };
    for (index, sym) in symbols.enumerate() {
        let size: u64 = sym.st_size(endian).into();
        if sym.st_type() != elf::STT_FUNC || size == 0 {
            continue;
        }
        let Ok(Some(section)) = symbols.symbol_section(endian, sym, index) else {
            continue;
        };
        let Some(info) = map.sections.get(section.0) else {
            continue;
        };
        let mut value: u64 = sym.st_value(endian).into();
        if machine == elf::EM_ARM {
            value &= !1; // the Thumb bit
        }
        let address = if relocatable {
            info.address.wrapping_add(value)
        } else {
            value
        };
        let name = demangle(symbols.symbol_name(endian, sym).unwrap_or(b"?"));
        map.functions.push(Function {
            address,
            size,
            name,
        });
    }
    map.functions.sort_by_key(|f| f.address);

    // The tables.
    let mut tables: Vec<(usize, Table)> = Vec::new();
    for (index, section) in map.sections.iter().enumerate() {
        if [
            sections::DESCRIPTORS,
            sections::POINTERS,
            sections::EXIT_POINTS,
        ]
        .contains(&section.name.as_str())
        {
            let bytes = match contents[index] {
                Some(c) => c.to_vec(),
                None => vec![0; usize::try_from(section.size).unwrap_or(0)],
            };
            tables.push((
                index,
                Table {
                    name: section.name.clone(),
                    address: section.address,
                    relocated: vec![false; bytes.len()],
                    bytes,
                    unresolved: BTreeMap::new(),
                },
            ));
        }
    }

    let mut problems = Vec::new();
    if !tables.is_empty() {
        let ctx = Context {
            endian,
            data,
            sections: &sections,
            map: &map,
            info: &info,
        };
        for shdr in sections.iter() {
            ctx.apply_section(shdr, &mut tables, &mut problems)?;
        }
    }

    let mut image = Image {
        info,
        map,
        contents,
        descriptors: Vec::new(),
        pointers: Vec::new(),
        exits: Vec::new(),
        problems,
    };
    for (_, table) in tables {
        match table.name.as_str() {
            sections::DESCRIPTORS => image.descriptors.push(table),
            sections::POINTERS => image.pointers.push(table),
            _ => image.exits.push(table),
        }
    }
    Ok(image)
}

struct Context<'a, 'data, Elf: FileHeader<Endian = Endianness>> {
    endian: Endianness,
    data: &'data [u8],
    sections: &'a SectionTable<'data, Elf>,
    map: &'a AddressMap,
    info: &'a FileInfo,
}

impl<'data, Elf: FileHeader<Endian = Endianness>> Context<'_, 'data, Elf> {
    /// Applies one relocation section to the tables it targets.
    fn apply_section(
        &self,
        shdr: &Elf::SectionHeader,
        tables: &mut [(usize, Table)],
        problems: &mut Vec<Problem>,
    ) -> Result<(), Error> {
        let endian = self.endian;
        let flags: u64 = shdr.sh_flags(endian).into();
        // In a linked file only the dynamic relocations (allocated sections) are still to be
        // applied; `--emit-relocs` leftovers are already in the contents.
        if !self.map.relocatable && flags & u64::from(elf::SHF_ALLOC) == 0 {
            return Ok(());
        }
        if let Some(relr) = shdr.relr(endian, self.data)? {
            for offset in relr {
                let offset: u64 = offset.into();
                if let Some((_, table)) = self.table_at(tables, None, offset) {
                    let start = (offset - table.address) as usize;
                    let end = (start + self.info.pointer_bytes).min(table.bytes.len());
                    table.relocated[start..end]
                        .iter_mut()
                        .for_each(|r| *r = true);
                }
            }
            return Ok(());
        }
        let (relocs, is_rela, link): (Vec<Crel>, bool, SectionIndex) =
            if let Some((r, link)) = shdr.rel(endian, self.data)? {
                (
                    r.iter().map(|r| Crel::from_rel(r, endian)).collect(),
                    false,
                    link,
                )
            } else if let Some((r, link)) = shdr.rela(endian, self.data)? {
                (
                    r.iter()
                        .map(|r| Crel::from_rela(r, endian, false))
                        .collect(),
                    true,
                    link,
                )
            } else if let Some((iter, link)) = shdr.crel(endian, self.data)? {
                let is_rela = iter.is_rela();
                (iter.collect::<Result<_, _>>()?, is_rela, link)
            } else {
                return Ok(());
            };
        let target = self.map.relocatable.then(|| shdr.sh_info(endian) as usize);
        if let Some(target) = target {
            if !tables.iter().any(|(i, _)| *i == target) {
                return Ok(());
            }
        }
        let symbols = if link.0 == 0 {
            None
        } else {
            Some(
                self.sections
                    .symbol_table_by_index(endian, self.data, link)?,
            )
        };
        for rel in relocs {
            let Some((_, table)) = self.table_at(tables, target, rel.r_offset) else {
                continue;
            };
            let offset = if self.map.relocatable {
                rel.r_offset
            } else {
                rel.r_offset - table.address
            };
            let Some((op, width)) = relocation_op(self.info.machine, rel.r_type) else {
                let reason = format!(
                    "relocation type {} is not one this tool understands",
                    rel.r_type
                );
                table.unresolved.insert(offset, reason);
                continue;
            };
            if op == Op::None {
                continue;
            }
            let start = offset as usize;
            if offset
                .checked_add(width as u64)
                .is_none_or(|end| end > table.bytes.len() as u64)
            {
                problems.push(Problem::RelocationOutOfBounds {
                    section: table.name.clone(),
                    offset,
                });
                continue;
            }
            let place = &mut table.bytes[start..start + width];
            let current = read_uint(place, self.info.big_endian);
            table.relocated[start..start + width]
                .iter_mut()
                .for_each(|r| *r = true);
            let s = if op == Op::Relative {
                Ok(0)
            } else {
                self.symbol_value(symbols.as_ref(), rel.r_sym)
            };
            let s = match s {
                Ok(s) => s,
                Err(reason) => {
                    table.unresolved.insert(offset, reason);
                    continue;
                }
            };
            let addend = rel.r_addend as u64;
            let value = match op {
                Op::Absolute | Op::Relative => {
                    s.wrapping_add(if is_rela { addend } else { current })
                }
                Op::Add => current
                    .wrapping_add(s)
                    .wrapping_add(if is_rela { addend } else { 0 }),
                Op::Sub => current.wrapping_sub(s.wrapping_add(if is_rela { addend } else { 0 })),
                Op::None => unreachable!(),
            };
            write_uint(place, value, self.info.big_endian);
        }
        Ok(())
    }

    /// The table a relocation applies to: by section index in relocatable objects, by address
    /// otherwise.
    fn table_at<'t>(
        &self,
        tables: &'t mut [(usize, Table)],
        target: Option<usize>,
        offset: u64,
    ) -> Option<&'t mut (usize, Table)> {
        tables.iter_mut().find(|(index, table)| match target {
            Some(target) => *index == target,
            None => table.address <= offset && offset - table.address < table.bytes.len() as u64,
        })
    }

    /// `S` of a relocation: the symbol's address, or why it has none in this file.
    fn symbol_value(
        &self,
        symbols: Option<&SymbolTable<'data, Elf>>,
        r_sym: u32,
    ) -> Result<u64, String> {
        if r_sym == 0 {
            return Ok(0);
        }
        let symbols =
            symbols.ok_or_else(|| "relocation has a symbol but no symbol table".to_string())?;
        let index = SymbolIndex(r_sym as usize);
        let sym = symbols.symbol(index).map_err(|e| e.to_string())?;
        let value: u64 = sym.st_value(self.endian).into();
        let section = symbols
            .symbol_section(self.endian, sym, index)
            .ok()
            .flatten();
        let name = match symbols.symbol_name(self.endian, sym) {
            Ok(n) if !n.is_empty() => demangle(n),
            _ => section
                .and_then(|s| self.map.sections.get(s.0))
                .map_or_else(|| format!("symbol #{r_sym}"), |s| s.name.clone()),
        };
        if !self.map.relocatable {
            return if sym.is_undefined(self.endian) {
                Err(format!(
                    "`{name}` is defined in another file and bound at load time"
                ))
            } else {
                Ok(value)
            };
        }
        match section {
            Some(s) => match self.map.sections.get(s.0) {
                // Every allocated section has a made-up base; others have 0.
                Some(info) if info.address != 0 => Ok(info.address.wrapping_add(value)),
                Some(info) => Err(format!(
                    "`{name}` is in section {}, which is not loaded",
                    info.name
                )),
                None => Err(format!(
                    "`{name}` is in section #{} which does not exist",
                    s.0
                )),
            },
            None if sym.st_shndx(self.endian) == elf::SHN_ABS => Ok(value),
            None => Err(format!("`{name}` is not defined in this object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_in_both_byte_orders() {
        for big in [false, true] {
            for width in [4, 8] {
                let mut bytes = vec![0u8; width];
                write_uint(&mut bytes, 0x1122_3344_5566_7788, big);
                let expect = if width == 4 {
                    0x5566_7788
                } else {
                    0x1122_3344_5566_7788
                };
                assert_eq!(read_uint(&bytes, big), expect, "big {big} width {width}");
                assert_eq!(
                    bytes[0],
                    if big {
                        (expect >> (8 * (width - 1))) as u8
                    } else {
                        0x88
                    }
                );
            }
        }
    }

    /// Every architecture of `rseq_arch::ALL` has a name here, and its pointer relocations
    /// (absolute of its width, relative) are understood.
    #[test]
    fn every_known_architecture_has_its_relocations() {
        let machines: [(u16, bool, u32, u32); 9] = [
            (
                elf::EM_X86_64,
                true,
                elf::R_X86_64_64,
                elf::R_X86_64_RELATIVE,
            ),
            (elf::EM_386, false, elf::R_386_32, elf::R_386_RELATIVE),
            (
                elf::EM_AARCH64,
                true,
                elf::R_AARCH64_ABS64,
                elf::R_AARCH64_RELATIVE,
            ),
            (elf::EM_ARM, false, elf::R_ARM_ABS32, elf::R_ARM_RELATIVE),
            (
                elf::EM_PPC64,
                true,
                elf::R_PPC64_ADDR64,
                elf::R_PPC64_RELATIVE,
            ),
            (elf::EM_PPC, false, elf::R_PPC_ADDR32, elf::R_PPC_RELATIVE),
            (elf::EM_RISCV, true, elf::R_RISCV_64, elf::R_RISCV_RELATIVE),
            (elf::EM_S390, true, elf::R_390_64, elf::R_390_RELATIVE),
            (
                elf::EM_LOONGARCH,
                true,
                elf::R_LARCH_64,
                elf::R_LARCH_RELATIVE,
            ),
        ];
        for (arch, (machine, is_64, absolute, relative)) in rseq_arch::ALL.iter().zip(machines) {
            assert_eq!(arch_name(machine, is_64), Some(arch.target_arch));
            let width = if is_64 { 8 } else { 4 };
            assert_eq!(
                relocation_op(machine, absolute),
                Some((Op::Absolute, width)),
                "{}",
                arch.target_arch
            );
            assert_eq!(
                relocation_op(machine, relative),
                Some((Op::Relative, width)),
                "{}",
                arch.target_arch
            );
        }
        assert_eq!(
            arch_name(elf::EM_RISCV, false),
            None,
            "riscv32 is not supported"
        );
    }
}
