//! `keyfleet test`: run the policy set's `PolicyTest`s (see `crate::policytest`), print each
//! result, optionally write JUnit XML. Exit codes: 0 every test passed, 1 a test failed or a
//! file under `tests/` could not be loaded.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::policytest::{Outcome, Report};

/// Long help of `keyfleet test`.
pub const LONG_ABOUT: &str = "Run the PolicyTest objects under tests/ of the policy directory. \
Each gives a directory fixture (users and groups), an optional inventory fixture (who already \
holds which credential), a time and policy documents to lay over the set, and expects a plan \
(actions by kind, user, template and reason; `exactly: true` for nothing else) or validation \
errors. Tests run through the same desired-state and planner code as `plan`, with no state \
directory, directory server, CA or card.\n\nExit codes: 0 every test passed, 1 a test failed \
or a file under tests/ could not be loaded.";

/// Arguments of `keyfleet test`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Also write the results as JUnit XML to FILE (for CI).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Runs `keyfleet test`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let root = &global.policy_dir;
    if !root.is_dir() {
        anyhow::bail!(
            "policy directory {} does not exist or is not a directory",
            root.display()
        );
    }
    let report = crate::policytest::run_all(root);
    print!("{}", text(&report));
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::from(if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

/// The results for people: one line per test, what differed under each failure.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.problems {
        let _ = writeln!(out, "ERROR {d}");
    }
    for r in &report.results {
        let at = format!("{}:{}", r.file.display(), r.line);
        match &r.outcome {
            Outcome::Pass => {
                let _ = writeln!(out, "PASS  {} ({at})", r.name);
            }
            Outcome::Fail(lines) => {
                let _ = writeln!(out, "FAIL  {} ({at})", r.name);
                for l in lines {
                    let _ = writeln!(out, "      {l}");
                }
            }
        }
    }
    if report.results.is_empty() && report.problems.is_empty() {
        out.push_str("No PolicyTest found under tests/.\n");
        return out;
    }
    let failed = report.failures();
    let _ = write!(
        out,
        "\n{} passed, {} failed",
        report.results.len() - failed,
        failed
    );
    if !report.problems.is_empty() {
        let _ = write!(out, ", {} file problem(s)", report.problems.len());
    }
    out.push_str(".\n");
    out
}

/// Escapes text for XML content and attribute values.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The results as JUnit XML: one `testsuite` named `keyfleet`, a `testcase` per test (class
/// name: its file) with a `failure` when it failed, and an `error` testcase per file under
/// `tests/` that could not be loaded.
pub fn junit(report: &Report) -> String {
    let total: f64 = report
        .results
        .iter()
        .map(|r| r.duration.as_secs_f64())
        .sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"keyfleet test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{total:.3}\">",
        report.results.len() + report.problems.len(),
        report.failures(),
        report.problems.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"keyfleet\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{total:.3}\">",
        report.results.len() + report.problems.len(),
        report.failures(),
        report.problems.len()
    );
    for r in &report.results {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.3}\"",
            xml(&r.name),
            xml(&r.file.display().to_string()),
            xml(&r.file.display().to_string()),
            r.line,
            r.duration.as_secs_f64()
        );
        match &r.outcome {
            Outcome::Pass => out.push_str("/>\n"),
            Outcome::Fail(lines) => {
                let first = lines.first().map(String::as_str).unwrap_or("failed");
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml(first),
                    xml(&lines.join("\n"))
                );
            }
        }
    }
    for d in &report.problems {
        let _ = writeln!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\" time=\"0.000\">\n      <error message=\"{}\" type=\"{}\">{}</error>\n    </testcase>",
            xml(d.name.as_deref().unwrap_or("(not loaded)")),
            xml(&d.file.display().to_string()),
            xml(&d.file.display().to_string()),
            d.line,
            xml(&d.message),
            xml(d.code),
            xml(&d.to_string())
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml("a<b>&\"c\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;\u{FFFD}"
        );
    }
}
