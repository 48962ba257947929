//! Lists the restartable-sequence (rseq) critical-section descriptors of an ELF file and checks
//! them as the kernel would.
//!
//! `#[rseq::critical_section]` leaves, for every critical section, a 32-byte `struct rseq_cs`
//! in section `__rseq_cs`, one entry in `__rseq_cs_ptr_array`, a `(start_ip, exit_ip)` pair in
//! `__rseq_exit_point_array` for every exit other than abort and commit, and an abort handler in
//! `__rseq_failure` preceded by the architecture's 4-byte signature. [`inspect`] reads those
//! tables from an executable, a position-independent executable, a shared object or a
//! relocatable object (`.o`), applies the relocations that give the tables their values, and
//! checks every descriptor (see [`Problem`] for the list of checks; [`Options::strict`] adds
//! the project's own conventions).
//!
//! ```
//! use rseq_inspect::{inspect_file, Verbosity};
//!
//! // The doctest binary has no critical sections, so there is nothing to complain about.
//! let report = inspect_file(std::env::current_exe()?)?;
//! assert_eq!(report.descriptors.len(), 0);
//! assert!(report.is_ok());
//! print!("{}", report.render(Verbosity::Full));
//! assert!(report.render(Verbosity::Quiet).ends_with("0 descriptors, 0 exit points, 0 problems\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Addresses are virtual addresses for linked files (relative to the load address for position
//! independent ones). A relocatable object has no addresses yet: there every loaded section is
//! given its own made-up base (see [`Report::locate`]), so that addresses in different sections
//! never compare equal and ranges never cross sections.
#![deny(missing_docs)]

use std::fmt;
use std::path::Path;

pub use rseq_arch::Arch;

mod check;
mod elf;
mod render;

/// Names of the sections that hold the tables.
pub mod sections {
    /// The `struct rseq_cs` descriptors, 32 bytes each.
    pub const DESCRIPTORS: &str = "__rseq_cs";
    /// One 64-bit pointer per descriptor.
    pub const POINTERS: &str = "__rseq_cs_ptr_array";
    /// `(start_ip, exit_ip)` pairs of 64-bit words.
    pub const EXIT_POINTS: &str = "__rseq_exit_point_array";
    /// The abort handlers, each preceded by the signature.
    pub const FAILURE: &str = "__rseq_failure";
}

/// What kind of ELF file was inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `ET_REL`: an object file (`.o`) that still needs linking.
    Relocatable,
    /// `ET_EXEC`: an executable linked at a fixed address.
    Executable,
    /// `ET_DYN` with an interpreter or `DF_1_PIE`: a position-independent executable.
    PositionIndependentExecutable,
    /// `ET_DYN` otherwise: a shared object.
    SharedObject,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Relocatable => "relocatable object",
            FileKind::Executable => "executable",
            FileKind::PositionIndependentExecutable => "position-independent executable",
            FileKind::SharedObject => "shared object",
        })
    }
}

/// Facts from the ELF header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The architecture, from `e_machine` and the class.
    pub arch: &'static Arch,
    /// The raw `e_machine`.
    pub machine: u16,
    /// 8 for ELF64, 4 for ELF32: the width of the pointer inside each 64-bit table word.
    pub pointer_bytes: usize,
    /// Whether the file's data is big-endian.
    pub big_endian: bool,
    /// Executable, shared object, ...
    pub kind: FileKind,
    /// The signature the 4 bytes before every abort handler must hold, as a `u32` read in the
    /// file's byte order. This is [`Arch::signature`], except on big-endian aarch64 and arm,
    /// whose instructions (and so the emitted signature) stay little-endian.
    pub signature: u32,
}

/// Which word of a table entry a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `struct rseq_cs::start_ip`.
    StartIp,
    /// `struct rseq_cs::post_commit_offset`.
    PostCommitOffset,
    /// `struct rseq_cs::abort_ip`.
    AbortIp,
    /// An entry of `__rseq_cs_ptr_array`.
    Pointer,
    /// The first word of an `__rseq_exit_point_array` pair.
    ExitStartIp,
    /// The second word of an `__rseq_exit_point_array` pair.
    ExitIp,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::StartIp => "start_ip",
            Field::PostCommitOffset => "post_commit_offset",
            Field::AbortIp => "abort_ip",
            Field::Pointer => "pointer",
            Field::ExitStartIp => "exit point's start_ip",
            Field::ExitIp => "exit_ip",
        })
    }
}

/// One failed check. Addresses are in the report's address space (see [`Report::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// `version` is not 0 (the kernel rejects the descriptor).
    Version(u32),
    /// `flags` is not 0 (the kernel rejects the descriptor).
    Flags(u32),
    /// The descriptor is not 32-byte aligned, as `struct rseq_cs` is declared.
    Misaligned,
    /// `post_commit_offset` is 0: the section is empty.
    EmptyRange,
    /// `start_ip + post_commit_offset` overflows (the kernel rejects the descriptor).
    Overflow,
    /// `abort_ip` lies inside `[start_ip, start_ip + post_commit_offset)`.
    AbortInside,
    /// The 4 bytes before `abort_ip` are not the signature.
    WrongSignature {
        /// What is there, read in the file's byte order.
        found: u32,
        /// [`FileInfo::signature`].
        expected: u32,
    },
    /// The 4 bytes before `abort_ip` cannot be read (outside every section, or in one without
    /// contents).
    SignatureUnreadable,
    /// x86, [`Options::strict`] only: the signature word is not preceded by `0f b9 3d`, so it
    /// does not decode as the trapping `ud1` instruction the project emits. The kernel does not
    /// check this (TCMalloc, for one, emits a `nopl` there).
    NoTrapPrefix {
        /// The 3 bytes before the signature word.
        found: [u8; 3],
    },
    /// An address that must be code is outside every section or in a section without
    /// `SHF_EXECINSTR`.
    NotExecutable {
        /// Which word.
        field: Field,
        /// Its value.
        address: u64,
        /// The section it lies in, if any.
        section: Option<String>,
    },
    /// `start_ip + post_commit_offset` lies past the end of the section holding `start_ip`.
    RangeLeavesSection {
        /// The end of the range.
        end: u64,
        /// The section holding `start_ip`.
        section: String,
    },
    /// The descriptor's address is not in `__rseq_cs_ptr_array`.
    NotListed,
    /// The descriptor's address is in `__rseq_cs_ptr_array` more than once.
    ListedMoreThanOnce(usize),
    /// An entry of `__rseq_cs_ptr_array` is not the address of any descriptor.
    PointsAtNoDescriptor(u64),
    /// An exit point's `start_ip` is no descriptor's `start_ip`.
    UnknownSection(u64),
    /// An exit point's `exit_ip` lies inside its critical section.
    ExitInside {
        /// The exit.
        exit_ip: u64,
        /// The section's start.
        start_ip: u64,
        /// The section's end (the post-commit address).
        end: u64,
    },
    /// An exit point's `exit_ip` is in code but inside no function symbol.
    ExitOutsideFunctions(u64),
    /// A word gets its value from a symbol this file does not define.
    Unresolved {
        /// Which word.
        field: Field,
        /// What the relocation refers to.
        reason: String,
    },
    /// A pointer word of a position-independent file (or an object file) has no relocation,
    /// so it would keep its on-disk value instead of the run-time address.
    NotRelocated {
        /// Which word.
        field: Field,
        /// The on-disk value.
        value: u64,
    },
    /// 32-bit files only: a pointer word does not fit in 32 bits (the padding word is not 0,
    /// or the pointer is in the wrong half for the byte order).
    TooWide {
        /// Which word.
        field: Field,
        /// The 64-bit value.
        value: u64,
    },
    /// A table's size is not a multiple of its entry size.
    TrailingBytes {
        /// Section name.
        section: String,
        /// Bytes left over after the last whole entry.
        bytes: u64,
    },
    /// [`Options::strict`] only: a table of a linked file does not start at an 8-byte aligned
    /// address, so tools reading it as an array of `u64` would read misaligned words.
    MisalignedTable {
        /// Section name.
        section: String,
        /// Its address.
        address: u64,
    },
    /// A relocation of a table points outside the section.
    RelocationOutOfBounds {
        /// Section name.
        section: String,
        /// Offset in the section.
        offset: u64,
    },
}

impl Problem {
    /// Writes the problem in words, formatting addresses with `address`.
    pub fn write(&self, f: &mut dyn fmt::Write, address: &dyn Fn(u64) -> String) -> fmt::Result {
        match self {
            Problem::Version(v) => write!(f, "version is {v}, the kernel requires 0"),
            Problem::Flags(v) => write!(f, "flags is {v:#x}, the kernel requires 0"),
            Problem::Misaligned => write!(f, "descriptor is not 32-byte aligned"),
            Problem::EmptyRange => write!(f, "post_commit_offset is 0 (empty section)"),
            Problem::Overflow => write!(f, "start_ip + post_commit_offset overflows"),
            Problem::AbortInside => write!(f, "abort_ip lies inside the critical section"),
            Problem::WrongSignature { found, expected } => write!(
                f,
                "the 4 bytes before abort_ip are {found:#010x}, not the signature {expected:#010x}"
            ),
            Problem::SignatureUnreadable => {
                write!(f, "the 4 bytes before abort_ip are not in any section with contents")
            }
            Problem::NoTrapPrefix { found } => write!(
                f,
                "the signature is preceded by {:02x} {:02x} {:02x}, not 0f b9 3d (ud1)",
                found[0], found[1], found[2]
            ),
            Problem::NotExecutable { field, address: a, section } => match section {
                Some(s) => write!(f, "{field} {} is in non-executable section {s}", address(*a)),
                None => write!(f, "{field} {} is outside every section", address(*a)),
            },
            Problem::RangeLeavesSection { end, section } => {
                write!(f, "the section ends at {}, past the end of {section}", address(*end))
            }
            Problem::NotListed => write!(f, "missing from __rseq_cs_ptr_array"),
            Problem::ListedMoreThanOnce(n) => write!(f, "listed {n} times in __rseq_cs_ptr_array"),
            Problem::PointsAtNoDescriptor(v) => {
                write!(f, "__rseq_cs_ptr_array entry {} is not a descriptor", address(*v))
            }
            Problem::UnknownSection(v) => {
                write!(f, "exit point's start_ip {} is no descriptor's start_ip", address(*v))
            }
            Problem::ExitInside { exit_ip, start_ip, end } => write!(
                f,
                "exit_ip {} lies inside its critical section [{}, {})",
                address(*exit_ip),
                address(*start_ip),
                address(*end)
            ),
            Problem::ExitOutsideFunctions(v) => {
                write!(f, "exit_ip {} is inside no function symbol", address(*v))
            }
            Problem::Unresolved { field, reason } => {
                write!(f, "{field} cannot be resolved in this file: {reason}")
            }
            Problem::NotRelocated { field, value } => write!(
                f,
                "{field} ({value:#x} on disk) has no relocation, so it would not hold the run-time address"
            ),
            Problem::TooWide { field, value } => write!(
                f,
                "{field} {value:#x} does not fit in 32 bits (padding word not 0 or on the wrong side)"
            ),
            Problem::TrailingBytes { section, bytes } => {
                write!(f, "{section} has {bytes} bytes after its last whole entry")
            }
            Problem::MisalignedTable { section, address } => {
                write!(f, "{section} starts at {address:#x}, which is not 8-byte aligned")
            }
            Problem::RelocationOutOfBounds { section, offset } => {
                write!(f, "relocation at {section}+{offset:#x} lies outside the section")
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &|a| format!("{a:#x}"))
    }
}

/// One `struct rseq_cs` of `__rseq_cs`, after relocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Where the descriptor itself is.
    pub address: u64,
    /// `version` (must be 0).
    pub version: u32,
    /// `flags` (must be 0).
    pub flags: u32,
    /// First instruction of the critical section.
    pub start_ip: u64,
    /// Length of the section: the post-commit address is `start_ip + post_commit_offset`.
    pub post_commit_offset: u64,
    /// Where the kernel sends an interrupted section.
    pub abort_ip: u64,
    /// The `exit_ip`s of the exit points whose `start_ip` is this descriptor's.
    pub exits: Vec<u64>,
    /// Failed checks of this descriptor.
    pub problems: Vec<Problem>,
}

/// One `(start_ip, exit_ip)` pair of `__rseq_exit_point_array`, after relocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPoint {
    /// Where the pair is.
    pub address: u64,
    /// The start of the critical section it belongs to.
    pub start_ip: u64,
    /// Where the section can leave to.
    pub exit_ip: u64,
    /// Failed checks of this exit point.
    pub problems: Vec<Problem>,
}

/// One entry of `__rseq_cs_ptr_array` that failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerEntry {
    /// Where the entry is.
    pub address: u64,
    /// Its value.
    pub value: u64,
    /// Failed checks.
    pub problems: Vec<Problem>,
}

/// Where an address lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The section's name.
    pub section: String,
    /// Offset from the section's start.
    pub offset: u64,
    /// The (demangled) function symbol containing the address and the offset into it.
    pub function: Option<(String, u64)>,
}

/// Everything [`inspect`] found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Facts from the ELF header.
    pub file: FileInfo,
    /// Every descriptor, in section order.
    pub descriptors: Vec<Descriptor>,
    /// Every exit point, in section order.
    pub exit_points: Vec<ExitPoint>,
    /// Entries of `__rseq_cs_ptr_array` that failed a check (good entries are not listed).
    pub bad_pointers: Vec<PointerEntry>,
    /// Number of entries of `__rseq_cs_ptr_array`.
    pub pointer_count: usize,
    /// Problems of the tables as a whole (sizes, relocations).
    pub table_problems: Vec<Problem>,
    /// Whether the file has a `__rseq_cs` section at all.
    pub has_descriptor_section: bool,
    map: elf::AddressMap,
}

impl Report {
    /// All problems: of descriptors, exit points, pointer entries and tables.
    pub fn problem_count(&self) -> usize {
        self.descriptors
            .iter()
            .map(|d| d.problems.len())
            .sum::<usize>()
            + self
                .exit_points
                .iter()
                .map(|e| e.problems.len())
                .sum::<usize>()
            + self
                .bad_pointers
                .iter()
                .map(|p| p.problems.len())
                .sum::<usize>()
            + self.table_problems.len()
    }

    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.problem_count() == 0
    }

    /// The section (and function) an address lies in. In a relocatable object this is the only
    /// meaningful reading of an address.
    pub fn locate(&self, address: u64) -> Option<Location> {
        self.map.locate(address)
    }

    /// An address for people: `0x1234 <function+0x10>` in linked files, `function+0x10` or
    /// `section+0x10` in relocatable objects.
    pub fn describe(&self, address: u64) -> String {
        self.map.describe(address)
    }

    /// A problem in words, with addresses as [`Report::describe`] writes them.
    pub fn describe_problem(&self, problem: &Problem) -> String {
        let mut s = String::new();
        let _ = problem.write(&mut s, &|a| self.describe(a));
        s
    }

    /// The text report: see [`Verbosity`]. Always ends with the summary line
    /// `N descriptors, M exit points, K problems`.
    pub fn render(&self, verbosity: Verbosity) -> String {
        render::render(self, verbosity)
    }

    /// The summary line, without a newline.
    pub fn summary(&self) -> String {
        format!(
            "{} descriptors, {} exit points, {} problems",
            self.descriptors.len(),
            self.exit_points.len(),
            self.problem_count()
        )
    }
}

/// How much [`Report::render`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// A header line, one line per descriptor, lines for problems of exit points and pointer
    /// entries, and the summary.
    Full,
    /// Only lines with problems, and the summary.
    Quiet,
}

/// Why a file could not be inspected.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    Io(std::io::Error),
    /// Not an ELF file.
    NotElf,
    /// An ELF file of a kind that has no critical sections (a core dump, ...).
    UnsupportedType(u16),
    /// An architecture the project does not know.
    UnsupportedMachine {
        /// `e_machine`.
        machine: u16,
        /// Whether the file is ELF64.
        is_64: bool,
    },
    /// The ELF structure is broken.
    Malformed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "cannot read the file: {e}"),
            Error::NotElf => write!(
                f,
                "not an ELF file: pass an executable, a shared object or an object file (.o)"
            ),
            Error::UnsupportedType(t) => write!(
                f,
                "ELF type {t} has no critical sections: pass an executable, a shared object or an object file (.o)"
            ),
            Error::UnsupportedMachine { machine, is_64 } => write!(
                f,
                "ELF{} machine {machine} is not an architecture rseq supports (x86_64, i386, aarch64, arm, ppc64, ppc, riscv64, s390x, loongarch64)",
                if *is_64 { 64 } else { 32 }
            ),
            Error::Malformed(m) => write!(f, "malformed ELF file: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<object::read::Error> for Error {
    fn from(e: object::read::Error) -> Self {
        Error::Malformed(e.to_string())
    }
}

/// What to check beyond the kernel's checks and the consistency of the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Also check this project's own conventions, which the kernel does not require: on x86
    /// the signature decodes as `ud1` ([`Problem::NoTrapPrefix`]), and the tables of a linked
    /// file are 8-byte aligned ([`Problem::MisalignedTable`]).
    pub strict: bool,
}

/// Reads the tables of an ELF file held in memory and checks them (default [`Options`]).
pub fn inspect(data: &[u8]) -> Result<Report, Error> {
    inspect_with(data, Options::default())
}

/// Reads the tables of an ELF file held in memory and checks them.
pub fn inspect_with(data: &[u8], options: Options) -> Result<Report, Error> {
    let image = elf::load(data)?;
    Ok(check::check(image, options))
}

/// Reads the tables of the ELF file at `path` and checks them (default [`Options`]).
pub fn inspect_file(path: impl AsRef<Path>) -> Result<Report, Error> {
    inspect_file_with(path, Options::default())
}

/// Reads the tables of the ELF file at `path` and checks them.
pub fn inspect_file_with(path: impl AsRef<Path>, options: Options) -> Result<Report, Error> {
    let data = std::fs::read(path)?;
    inspect_with(&data, options)
}
