//! `rseq-inspect [--quiet] [--strict] FILE...`: lists and checks the rseq critical-section descriptors of
//! ELF files. Exit status: 0 when every check passes, 1 when some check fails, 2 when a file
//! cannot be read or the command line is wrong.

use std::process::ExitCode;

use rseq_inspect::{inspect_file_with, Options, Verbosity};

const USAGE: &str = "\
usage: rseq-inspect [--quiet] [--strict] FILE...

Lists the rseq critical-section descriptors (section __rseq_cs) of each ELF file (executable,
position-independent executable, shared object or object file .o) and checks them as the kernel
would, together with __rseq_cs_ptr_array and __rseq_exit_point_array.

  -q, --quiet    print only problems and the summary line
  -s, --strict   also check the project's conventions, which the kernel does not require:
                 the x86 signature decodes as ud1, the tables are 8-byte aligned
  -h, --help     print this help
  -V, --version  print the version

Exit status: 0 all checks pass, 1 some check failed, 2 unreadable input or usage error.";

fn main() -> ExitCode {
    let mut verbosity = Verbosity::Full;
    let mut options = Options::default();
    let mut files = Vec::new();
    let mut options_done = false;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("-q" | "--quiet") if !options_done => verbosity = Verbosity::Quiet,
            Some("-s" | "--strict") if !options_done => options.strict = true,
            Some("-h" | "--help") if !options_done => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("-V" | "--version") if !options_done => {
                println!("rseq-inspect {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some("--") if !options_done => options_done = true,
            Some(s) if s.starts_with('-') && s.len() > 1 && !options_done => {
                eprintln!(
                    "rseq-inspect: unknown option {s}: run `rseq-inspect --help` for the options"
                );
                return ExitCode::from(2);
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("rseq-inspect: no input file: pass the path of an ELF executable, shared object or .o file\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let several = files.len() > 1;
    let mut status = 0u8;
    for file in &files {
        let name = file.to_string_lossy();
        match inspect_file_with(file, options) {
            Ok(report) => {
                let text = report.render(verbosity);
                match verbosity {
                    Verbosity::Full => print!("{name}: {text}"),
                    Verbosity::Quiet if several => print!("{name}:\n{text}"),
                    Verbosity::Quiet => print!("{text}"),
                }
                if !report.is_ok() {
                    status = status.max(1);
                }
            }
            Err(e) => {
                eprintln!("rseq-inspect: {name}: {e}");
                status = 2;
            }
        }
    }
    ExitCode::from(status)
}
