//! The text report.

use std::fmt::Write;

use crate::{Problem, Report, Verbosity};

fn problems(report: &Report, problems: &[Problem]) -> String {
    if problems.is_empty() {
        return "OK".into();
    }
    let words: Vec<String> = problems
        .iter()
        .map(|p| report.describe_problem(p))
        .collect();
    format!("FAILED: {}", words.join("; "))
}

pub(crate) fn render(report: &Report, verbosity: Verbosity) -> String {
    let full = verbosity == Verbosity::Full;
    let mut out = String::new();
    let info = &report.file;
    if full {
        let _ = writeln!(
            out,
            "{}, ELF{} {}-endian, {}; abort signature {:#010x}",
            info.arch.target_arch,
            info.pointer_bytes * 8,
            if info.big_endian { "big" } else { "little" },
            info.kind,
            info.signature
        );
        if !report.has_descriptor_section {
            out.push_str("no __rseq_cs section: this file has no critical sections\n");
        }
    }
    for (i, d) in report.descriptors.iter().enumerate() {
        if !full && d.problems.is_empty() {
            continue;
        }
        let exits = if d.exits.is_empty() {
            "none".to_string()
        } else {
            d.exits
                .iter()
                .map(|e| report.describe(*e))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  [{i}] {}: start {}, length {}, abort {}, exits {}: {}",
            report.describe(d.address),
            report.describe(d.start_ip),
            d.post_commit_offset,
            report.describe(d.abort_ip),
            exits,
            problems(report, &d.problems)
        );
    }
    for (i, e) in report.exit_points.iter().enumerate() {
        if e.problems.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  exit point [{i}] {} (start {}, exit {}): {}",
            report.describe(e.address),
            report.describe(e.start_ip),
            report.describe(e.exit_ip),
            problems(report, &e.problems)
        );
    }
    for p in &report.bad_pointers {
        let _ = writeln!(
            out,
            "  __rseq_cs_ptr_array entry {} (value {}): {}",
            report.describe(p.address),
            report.describe(p.value),
            problems(report, &p.problems)
        );
    }
    for p in &report.table_problems {
        let _ = writeln!(out, "  {}", report.describe_problem(p));
    }
    out.push_str(&report.summary());
    out.push('\n');
    out
}
