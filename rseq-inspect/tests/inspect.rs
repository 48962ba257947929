//! Builds real ELF files from the x86_64 assembly fixtures in `tests/fixtures` (they lay out the
//! tables exactly as `#[rseq::critical_section]` does) with `cc`, as relocatable objects,
//! static executables, PIEs, static PIEs, shared objects and PIEs with packed (RELR)
//! relocations, and checks what `rseq-inspect` finds in them. Tests that need `cc` are skipped
//! (with a message) when it is missing or the host is not x86_64 Linux.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rseq_inspect::{inspect_file, inspect_file_with, Field, FileKind, Options, Problem, Report};

/// How a fixture is turned into an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `cc -c`: a relocatable object.
    Object,
    /// `-nostdlib -static -no-pie`: addresses fixed at link time, no relocations left.
    Static,
    /// `-nostdlib -pie`: the tables hold zeros on disk and `R_*_RELATIVE` relocations.
    Pie,
    /// `-nostdlib -static-pie`: the same without an interpreter.
    StaticPie,
    /// `-nostdlib -shared`.
    Shared,
    /// A PIE with `-z pack-relative-relocs` (`.relr.dyn`).
    Relr,
}

const X86_64_LINKS: [Link; 6] = [
    Link::Object,
    Link::Static,
    Link::Pie,
    Link::StaticPie,
    Link::Shared,
    Link::Relr,
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rseq-inspect-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether fixtures can be built here; prints why not.
fn can_build() -> bool {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        eprintln!("skipped: the fixtures are x86_64 Linux assembly");
        return false;
    }
    match Command::new("cc").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipped: `cc` is not installed (install gcc to run the fixture tests)");
            false
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Assembles `tests/fixtures/{name}.s` and links it as `link`; `m32` builds for i386.
/// `tag` keeps the files of concurrently running tests apart.
fn try_build(name: &str, link: Link, m32: bool, tag: &str) -> Result<PathBuf, String> {
    let dir = out_dir();
    let stem = format!("{tag}-{name}-{link:?}{}", if m32 { "-m32" } else { "" });
    let object = dir.join(format!("{stem}.o"));
    let mut cc = Command::new("cc");
    if m32 {
        cc.arg("-m32");
    }
    cc.arg("-c")
        .arg(format!("-Wa,-I,{}", fixtures().display()))
        .arg(fixtures().join(format!("{name}.s")))
        .arg("-o")
        .arg(&object);
    run(&mut cc)?;
    if link == Link::Object {
        return Ok(object);
    }
    let output = dir.join(&stem);
    let mut cc = Command::new("cc");
    if m32 {
        cc.arg("-m32");
    }
    cc.arg("-nostdlib");
    match link {
        Link::Object => unreachable!(),
        Link::Static => cc.args(["-static", "-no-pie"]),
        Link::Pie => cc.arg("-pie"),
        Link::StaticPie => cc.arg("-static-pie"),
        Link::Shared => cc.arg("-shared"),
        Link::Relr => cc.args(["-pie", "-Wl,-z,pack-relative-relocs"]),
    };
    run(cc.arg(&object).arg("-o").arg(&output))?;
    Ok(output)
}

/// Builds a fixture; the basic x86_64 variants must build, the others (RELR needs binutils
/// 2.38, -m32 a 32-bit capable assembler and linker) are skipped when the toolchain cannot.
fn build(name: &str, link: Link, m32: bool, tag: &str) -> Option<PathBuf> {
    match try_build(name, link, m32, tag) {
        Ok(path) => Some(path),
        Err(e) if m32 || link == Link::Relr || link == Link::StaticPie => {
            eprintln!(
                "skipped {name} as {link:?} (m32: {m32}): the toolchain cannot build it: {e}"
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn inspect(path: &Path) -> Report {
    let report = inspect_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!(
        "{}:\n{}",
        path.display(),
        report.render(rseq_inspect::Verbosity::Full)
    );
    report
}

fn expected_kind(link: Link) -> FileKind {
    match link {
        Link::Object => FileKind::Relocatable,
        Link::Static => FileKind::Executable,
        Link::Pie | Link::StaticPie | Link::Relr => FileKind::PositionIndependentExecutable,
        Link::Shared => FileKind::SharedObject,
    }
}

fn function_of(report: &Report, address: u64) -> String {
    report
        .locate(address)
        .and_then(|l| l.function)
        .map(|f| f.0)
        .unwrap_or_default()
}

/// Runs `check` on the fixture built every way in `links`.
fn each(name: &str, links: &[Link], m32: bool, check: impl Fn(Link, &Report)) {
    if !can_build() {
        return;
    }
    for &link in links {
        let Some(path) = build(name, link, m32, "each") else {
            continue;
        };
        let report = inspect(&path);
        assert_eq!(report.file.kind, expected_kind(link), "{link:?}");
        check(link, &report);
        // Only nopl_signature breaks a convention of --strict: for the other fixtures strict
        // mode finds the same problems.
        if name != "nopl_signature" {
            let strict = inspect_file_with(&path, Options { strict: true }).unwrap();
            assert_eq!(
                strict.problem_count(),
                report.problem_count(),
                "{link:?} --strict"
            );
        }
    }
}

/// The structure every two-section fixture shares.
fn assert_two_sections(report: &Report) {
    assert_eq!(report.descriptors.len(), 2);
    assert_eq!(report.exit_points.len(), 2);
    for (d, name) in report
        .descriptors
        .iter()
        .zip(["rseq_fixture_first", "rseq_fixture_second"])
    {
        assert_eq!(function_of(report, d.start_ip), name);
        let failure = report.locate(d.abort_ip).unwrap();
        assert!(
            failure.section == "__rseq_failure" || failure.section == ".text",
            "{failure:?}"
        );
    }
}

#[test]
fn good_fixture_passes_in_every_form() {
    each("good", &X86_64_LINKS, false, |link, report| {
        assert_two_sections(report);
        assert!(
            report.is_ok(),
            "{link:?}: {}",
            report.render(rseq_inspect::Verbosity::Quiet)
        );
        assert_eq!(report.file.arch.target_arch, "x86_64");
        assert_eq!(report.file.pointer_bytes, 8);
        assert!(!report.file.big_endian);
        assert_eq!(report.file.signature, 0x5305_3053);
        assert_eq!(report.pointer_count, 2);
        for d in &report.descriptors {
            // movl 4(%rdi); movq (%rcx); cmpq; jne; movq: 14 bytes from start to commit.
            assert_eq!(d.post_commit_offset, 14);
            assert_eq!(d.exits.len(), 1);
            assert_eq!(report.locate(d.abort_ip).unwrap().section, "__rseq_failure");
        }
        let third = report.locate(report.descriptors[1].address).unwrap();
        assert_eq!((third.section.as_str(), third.offset), ("__rseq_cs", 32));
    });
}

/// In a PIE the values come from the dynamic relocations: GNU ld also stores the addends in
/// place, but lld (rustc's default linker on x86_64 Linux) leaves zeros. Zeroing the tables on
/// disk (every pointer word; the lengths are constants) must not change what the report says.
/// (Not for RELR, whose addends are the stored words.)
#[test]
fn pie_values_come_from_relocations() {
    use object::{Object, ObjectSection};
    if !can_build() {
        return;
    }
    for link in [Link::Pie, Link::StaticPie, Link::Shared] {
        let Some(path) = build("good", link, false, "zeros") else {
            continue;
        };
        let mut data = std::fs::read(&path).unwrap();
        let before = inspect_file(&path).unwrap();
        let mut pointer_words = Vec::new();
        {
            let file = object::File::parse(&*data).unwrap();
            let range = |name| {
                let (offset, size) = file.section_by_name(name).unwrap().file_range().unwrap();
                offset as usize..(offset + size) as usize
            };
            for entry in range("__rseq_cs").step_by(32) {
                pointer_words.extend([entry + 8, entry + 24]);
            }
            pointer_words.extend(range("__rseq_cs_ptr_array").step_by(8));
            pointer_words.extend(range("__rseq_exit_point_array").step_by(8));
        }
        assert_eq!(pointer_words.len(), 2 * 2 + 2 + 2 * 2);
        for word in pointer_words {
            data[word..word + 8].fill(0);
        }
        let after = rseq_inspect::inspect(&data).unwrap();
        assert!(
            after.is_ok(),
            "{link:?}: {}",
            after.render(rseq_inspect::Verbosity::Quiet)
        );
        assert_eq!(after.descriptors, before.descriptors, "{link:?}");
        assert_eq!(after.exit_points, before.exit_points, "{link:?}");
        assert_eq!(
            function_of(&after, after.descriptors[0].start_ip),
            "rseq_fixture_first"
        );
    }
}

#[test]
fn wrong_signature_is_reported() {
    each("bad_signature", &X86_64_LINKS, false, |_, report| {
        assert_two_sections(report);
        assert_eq!(report.problem_count(), 1);
        assert_eq!(
            report.descriptors[1].problems,
            [Problem::WrongSignature {
                found: 0x5305_3054,
                expected: 0x5305_3053
            }]
        );
    });
}

#[test]
fn abort_inside_the_section_is_reported() {
    each("abort_inside", &X86_64_LINKS, false, |_, report| {
        assert_two_sections(report);
        assert_eq!(report.problem_count(), 1);
        assert_eq!(report.descriptors[1].problems, [Problem::AbortInside]);
        let d = &report.descriptors[1];
        assert!(d.abort_ip > d.start_ip && d.abort_ip < d.start_ip + d.post_commit_offset);
    });
}

#[test]
fn descriptor_missing_from_the_pointer_array_is_reported() {
    each("not_listed", &X86_64_LINKS, false, |_, report| {
        assert_two_sections(report);
        assert_eq!(report.pointer_count, 1);
        assert_eq!(report.problem_count(), 1);
        assert_eq!(report.descriptors[1].problems, [Problem::NotListed]);
    });
}

#[test]
fn version_1_is_reported() {
    each("version1", &X86_64_LINKS, false, |_, report| {
        assert_two_sections(report);
        assert_eq!(report.problem_count(), 1);
        assert_eq!(report.descriptors[1].problems, [Problem::Version(1)]);
        assert_eq!(report.descriptors[1].version, 1);
    });
}

#[test]
fn bad_exits_are_reported() {
    each("bad_exits", &X86_64_LINKS, false, |_, report| {
        assert_two_sections(report);
        assert_eq!(report.problem_count(), 2);
        assert!(report.descriptors.iter().all(|d| d.problems.is_empty()));
        let first = &report.descriptors[0];
        assert_eq!(
            report.exit_points[0].problems,
            [Problem::ExitInside {
                exit_ip: report.exit_points[0].exit_ip,
                start_ip: first.start_ip,
                end: first.start_ip + first.post_commit_offset
            }]
        );
        assert_eq!(
            report.exit_points[1].problems,
            [Problem::ExitOutsideFunctions(report.exit_points[1].exit_ip)]
        );
    });
}

/// Exits relocated against symbols: a shared object binds a global symbol with `R_X86_64_64`
/// against the symbol, and an undefined one cannot be resolved in the file.
#[test]
fn exits_relocated_against_symbols() {
    each(
        "exit_to_symbol",
        &[Link::Object, Link::Shared],
        false,
        |_, report| {
            assert_eq!(report.descriptors.len(), 2);
            assert!(report.descriptors.iter().all(|d| d.problems.is_empty()));
            assert!(report.exit_points[0].problems.is_empty());
            assert_eq!(
                function_of(report, report.exit_points[0].exit_ip),
                "rseq_fixture_exit_target"
            );
            match &report.exit_points[1].problems[..] {
                [Problem::Unresolved {
                    field: Field::ExitIp,
                    reason,
                }] => {
                    assert!(reason.contains("rseq_fixture_elsewhere"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(report.problem_count(), 1);
        },
    );
}

#[test]
fn unrelocated_pointer_is_reported() {
    each("unrelocated", &X86_64_LINKS, false, |link, report| {
        let expected = if link == Link::Static {
            Problem::NotExecutable {
                field: Field::StartIp,
                address: 0x100b,
                section: None,
            }
        } else {
            Problem::NotRelocated {
                field: Field::StartIp,
                value: 0x100b,
            }
        };
        assert_eq!(report.descriptors[1].problems, [expected]);
        assert!(matches!(
            report.exit_points[1].problems[..],
            [Problem::UnknownSection(_)]
        ));
        assert_eq!(report.problem_count(), 2);
    });
}

/// `nopl` before the signature: the kernel does not mind, `--strict` does.
#[test]
fn nopl_before_the_signature_fails_only_strict() {
    each("nopl_signature", &X86_64_LINKS, false, |link, report| {
        assert_two_sections(report);
        assert!(report.is_ok());
        let path = build("nopl_signature", link, false, "strict").unwrap();
        let strict = inspect_file_with(&path, Options { strict: true }).unwrap();
        assert_eq!(strict.problem_count(), 1);
        assert_eq!(
            strict.descriptors[1].problems,
            [Problem::NoTrapPrefix {
                found: [0x0f, 0x1f, 0x05]
            }]
        );
    });
}

const I386_LINKS: [Link; 4] = [Link::Object, Link::Static, Link::Pie, Link::Shared];

/// i386: 32-bit pointers padded to 64 bits, REL relocations with implicit addends.
#[test]
fn i386_good_fixture_passes() {
    each("good32", &I386_LINKS, true, |_, report| {
        assert_two_sections(report);
        assert!(report.is_ok());
        assert_eq!(report.file.arch.target_arch, "x86");
        assert_eq!(report.file.pointer_bytes, 4);
        assert!(report
            .descriptors
            .iter()
            .all(|d| d.post_commit_offset == 14 && d.start_ip <= 0xffff_ffff));
    });
}

#[test]
fn i386_pointer_in_the_wrong_half_is_reported() {
    each("bad32", &I386_LINKS, true, |_, report| {
        let d = &report.descriptors[1];
        assert!(
            matches!(
                d.problems[..],
                [
                    Problem::TooWide {
                        field: Field::StartIp,
                        ..
                    },
                    Problem::WrongSignature {
                        found: 0x1234_5678,
                        expected: 0x5305_3053
                    }
                ]
            ),
            "{:?}",
            d.problems
        );
        assert!(matches!(
            report.exit_points[1].problems[..],
            [Problem::UnknownSection(_)]
        ));
        assert_eq!(report.problem_count(), 3);
    });
}

// The command.

fn command(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rseq-inspect"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn command_exit_status_and_output() {
    if !can_build() {
        return;
    }
    let good = build("good", Link::Pie, false, "cli").unwrap();
    let bad = build("version1", Link::Pie, false, "cli").unwrap();

    let o = command(&[good.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("x86_64") && lines[0].contains("position-independent executable"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].contains("rseq_fixture_first") && lines[1].ends_with(": OK"),
        "{text}"
    );
    assert_eq!(lines[3], "2 descriptors, 2 exit points, 0 problems");

    let o = command(&[bad.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("FAILED: version is 1, the kernel requires 0"),
        "{}",
        stdout(&o)
    );

    // --quiet: only the failed descriptor and the summary.
    let o = command(&["--quiet".as_ref(), bad.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("rseq_fixture_second") && lines[0].contains("version is 1"),
        "{text}"
    );
    assert_eq!(lines[1], "2 descriptors, 2 exit points, 1 problems");

    let o = command(&["-q".as_ref(), good.as_os_str()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "2 descriptors, 2 exit points, 0 problems\n");

    // --strict adds the project's conventions.
    let nopl = build("nopl_signature", Link::Pie, false, "cli").unwrap();
    assert_eq!(command(&[nopl.as_os_str()]).status.code(), Some(0));
    let o = command(&["--strict".as_ref(), "-q".as_ref(), nopl.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not 0f b9 3d (ud1)"), "{}", stdout(&o));
    assert_eq!(
        command(&["--strict".as_ref(), good.as_os_str()])
            .status
            .code(),
        Some(0)
    );

    // Several files: the worst status wins, each file is named.
    let o = command(&["-q".as_ref(), good.as_os_str(), bad.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(&format!("{}:", good.display())));
    assert_eq!(stdout(&o).matches(" problems\n").count(), 2);
}

#[test]
fn command_usage_errors_exit_2() {
    let o = command(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no input file") && stderr(&o).contains("usage:"),
        "{}",
        stderr(&o)
    );

    let o = command(&["--frobnicate".as_ref()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--help"), "{}", stderr(&o));

    let missing = out_dir().join("does-not-exist");
    let o = command(&[missing.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read the file"),
        "{}",
        stderr(&o)
    );

    let not_elf = fixtures().join("good.s");
    let o = command(&[not_elf.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an ELF file"), "{}", stderr(&o));

    let o = command(&["--help".as_ref()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("--quiet"));
}

/// Real binaries built by the workspace, named by the caller (the crate does not build them):
/// `RSEQ_INSPECT_EXTRA=target/debug/examples/smoke:target/debug/rseq-demo cargo test -p
/// rseq-inspect -- --ignored` (relative paths are taken from the current directory, else from
/// the workspace root).
#[test]
#[ignore = "needs RSEQ_INSPECT_EXTRA: a list of binaries, separated like PATH"]
fn extra_binaries_pass() {
    let Some(list) = std::env::var_os("RSEQ_INSPECT_EXTRA") else {
        eprintln!("skipped: set RSEQ_INSPECT_EXTRA to binaries to check, separated by ':'");
        return;
    };
    let mut failed = Vec::new();
    // Tests run in the crate's directory; relative paths may also be meant from the workspace.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for path in std::env::split_paths(&list) {
        let path = if path.exists() {
            path
        } else {
            workspace.join(path)
        };
        let report = inspect(&path);
        println!("{}: {}", path.display(), report.summary());
        let strict = inspect_file_with(&path, Options { strict: true }).unwrap();
        println!("{} --strict: {}", path.display(), strict.summary());
        if !report.is_ok() || !strict.is_ok() {
            failed.push(path);
        }
    }
    assert!(failed.is_empty(), "problems in {failed:?}");
}
