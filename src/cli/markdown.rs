//! `--format markdown` of `plan` and `audit`: a report ready to post as a merge-request
//! comment. A summary line, the safety valve's state, the warnings, then a table per action
//! (or finding) kind; a table of more than [`FOLD_ROWS`] rows is folded in `<details>`, and
//! the whole stays under [`MAX_CHARS`] characters, with a note saying what was cut.
//!
//! Every value from the policy or a directory goes through [`cell`] (in tables) or [`text`]
//! (in lines): hostile values cannot break a table, start a Markdown construct or inject HTML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::audit::Finding;
use crate::plan::{Action, ActionKind, Plan};

/// The most characters a report has (GitHub refuses comments over 65,536).
pub const MAX_CHARS: usize = 60_000;

/// Tables with more rows than this are folded.
pub const FOLD_ROWS: usize = 10;

/// Room kept for closing a cut report (closing `<details>`, the note).
const RESERVE: usize = 400;

/// A value as plain text: Markdown and HTML specials escaped, line breaks as spaces.
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(' ');
            }
            '\n' | '\t' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A value as a table cell: [`text`], and `-` for an empty value.
pub fn cell(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        text(value)
    }
}

/// A report being written within [`MAX_CHARS`].
struct Report {
    out: String,
    /// Rows (or lines) not written for want of room.
    left_out: usize,
    /// Room ran out: nothing more is written.
    cut: bool,
}

impl Report {
    fn new() -> Report {
        Report {
            out: String::new(),
            left_out: 0,
            cut: false,
        }
    }

    /// Appends `s` when it fits (keeping [`RESERVE`] for the end); otherwise writes nothing
    /// more.
    fn push(&mut self, s: &str) -> bool {
        if self.cut || self.out.len() + s.len() > MAX_CHARS - RESERVE {
            self.cut = true;
            return false;
        }
        self.out.push_str(s);
        true
    }

    /// Appends one row or warning line; counts it as left out when it does not fit.
    fn line(&mut self, s: &str) -> bool {
        let written = self.push(s);
        if !written {
            self.left_out += 1;
        }
        written
    }

    /// Writes one table: a heading, the header row, the rows; folded when long.
    fn table(&mut self, title: &str, headers: &[&str], rows: &[Vec<String>]) {
        let fold = rows.len() > FOLD_ROWS;
        let mut head = String::new();
        if fold {
            let _ = write!(head, "<details><summary>{title}</summary>\n\n");
        } else {
            let _ = write!(head, "#### {title}\n\n");
        }
        let _ = writeln!(head, "| {} |", headers.join(" | "));
        let _ = writeln!(head, "|{}", "---|".repeat(headers.len()));
        if !self.push(&head) {
            self.left_out += rows.len();
            return;
        }
        for (i, row) in rows.iter().enumerate() {
            if !self.line(&format!("| {} |\n", row.join(" | "))) {
                self.left_out += rows.len() - i - 1;
                break;
            }
        }
        // Always closed, even when cut: the room for it is reserved.
        self.out
            .push_str(if fold { "\n</details>\n\n" } else { "\n" });
    }

    fn finish(mut self, what: &str, full: &str) -> String {
        if self.cut {
            let _ = write!(
                self.out,
                "\n> **Cut at {MAX_CHARS} characters:** {} more {what} not shown; run `{full}` for all of them.\n",
                self.left_out
            );
        }
        self.out
    }
}

/// The card column of an action.
fn card_cell(a: &Action) -> String {
    match (&a.card, &a.stock) {
        (Some(c), _) => cell(c),
        (None, Some(s)) => format!("(new from {})", text(s)),
        (None, None) => "(none)".to_string(),
    }
}

/// The reason column of an action, with why it waits.
fn reason_cell(a: &Action) -> String {
    let mut r = cell(&a.reason.message);
    if a.card_suspect {
        r.push_str(" **(held: card suspect)**");
    } else if a.waiting_for_holder {
        r.push_str(" *(waiting for the holder)*");
    } else if a.waiting_for_card {
        r.push_str(" *(waiting for card)*");
    }
    r
}

/// The plan as a Markdown report. `observation_errors` are the directories that could not be
/// read (the desired state's).
pub fn plan_markdown(plan: &Plan, observation_errors: &[String]) -> String {
    let mut r = Report::new();
    r.push("### Keyfleet plan\n\n");
    let by_kind: BTreeMap<ActionKind, Vec<&Action>> =
        plan.actions.iter().fold(BTreeMap::new(), |mut m, a| {
            m.entry(a.kind).or_insert_with(Vec::new).push(a);
            m
        });
    if plan.actions.is_empty() {
        r.push("**No changes:** every entitled user holds the credential they should.\n\n");
    } else {
        let counts: Vec<String> = ActionKind::ALL
            .iter()
            .filter_map(|k| {
                by_kind
                    .get(k)
                    .map(|v| format!("{} {}", v.len(), k.as_str()))
            })
            .collect();
        let waiting = plan.actions.iter().filter(|a| a.waiting_for_card).count();
        let holder = plan.actions.iter().filter(|a| a.waiting_for_holder).count();
        let suspect = plan.actions.iter().filter(|a| a.card_suspect).count();
        let mut line = format!(
            "**{} action(s):** {}; {} runnable now, {waiting} waiting for a card",
            plan.actions.len(),
            counts.join(", "),
            plan.runnable().count()
        );
        if holder > 0 {
            let _ = write!(line, ", {holder} waiting for the holder");
        }
        if suspect > 0 {
            let _ = write!(line, ", {suspect} held on a suspect card");
        }
        line.push_str(".\n\n");
        r.push(&line);
    }
    let v = &plan.safety_valve;
    let valve = if !v.tripped {
        format!(
            "**Safety valve:** not tripped (revokes the credentials of {} of {} users; limits {} users / {}%).\n\n",
            v.revoked_users, v.holders, v.limits.max_revocations, v.limits.max_revocation_percent
        )
    } else {
        format!(
            "**Safety valve: TRIPPED.** The plan revokes the credentials of {} of {} users, over the limits ({} users / {}%). {}\n\n",
            v.revoked_users,
            v.holders,
            v.limits.max_revocations,
            v.limits.max_revocation_percent,
            if v.allowed {
                "Allowed by `--allow-mass-revocation`."
            } else {
                "`apply` refuses it unless `--allow-mass-revocation` is given."
            }
        )
    };
    r.push(&valve);

    let mut warnings = Vec::new();
    for e in observation_errors {
        warnings.push(format!("Observation error: {}", text(e)));
    }
    if let Some(note) = super::plan::incomplete_observation_note(plan) {
        warnings.push(note);
    }
    for c in &plan.conflicts {
        warnings.push(format!("Conflict: {}", text(&c.message)));
    }
    for e in &plan.errors {
        warnings.push(format!(
            "Cannot compute {} / {}: {}",
            text(&e.user),
            text(&e.template),
            text(&e.message)
        ));
    }
    if !warnings.is_empty() {
        r.push("#### Warnings\n\n");
        for w in &warnings {
            r.line(&format!("- {w}\n"));
        }
        r.push("\n");
    }

    for kind in ActionKind::ALL {
        let Some(actions) = by_kind.get(&kind) else {
            continue;
        };
        let rows: Vec<Vec<String>> = actions
            .iter()
            .map(|a| {
                let slots: Vec<&str> = a.slots.iter().map(|s| s.hex()).collect();
                vec![
                    cell(&a.user),
                    cell(a.template.as_deref().unwrap_or("")),
                    card_cell(a),
                    cell(&slots.join(", ")),
                    reason_cell(a),
                ]
            })
            .collect();
        r.table(
            &format!("{} ({})", kind.as_str(), actions.len()),
            &["User", "Template", "Card", "Slots", "Reason"],
            &rows,
        );
    }
    r.finish("rows or warnings", "keyfleet plan")
}

/// The audit's findings as a Markdown report: a table per finding kind. `complete` is
/// whether every directory was observed completely.
pub fn audit_markdown(
    findings: &[Finding],
    complete: bool,
    observation_errors: &[String],
) -> String {
    let mut r = Report::new();
    r.push("### Keyfleet audit\n\n");
    let mut by_kind: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        by_kind.entry(f.kind).or_default().push(f);
    }
    if findings.is_empty() {
        r.push("**No drift.**\n\n");
    } else {
        let counts: Vec<String> = by_kind
            .iter()
            .map(|(k, v)| format!("{} {k}", v.len()))
            .collect();
        r.push(&format!(
            "**{} finding(s):** {}.\n\n",
            findings.len(),
            counts.join(", ")
        ));
    }
    let mut warnings: Vec<String> = observation_errors
        .iter()
        .map(|e| format!("Observation error: {}", text(e)))
        .collect();
    if !complete {
        warnings.push(
            "Observation incomplete: credentials that lost their entitlement may be missing from this report."
                .to_string(),
        );
    }
    if !warnings.is_empty() {
        r.push("#### Warnings\n\n");
        for w in &warnings {
            r.line(&format!("- {w}\n"));
        }
        r.push("\n");
    }
    for (kind, list) in &by_kind {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|f| {
                vec![
                    cell(&f.user),
                    cell(f.card.as_deref().unwrap_or("")),
                    cell(f.serial.as_deref().unwrap_or("")),
                    cell(&f.message),
                ]
            })
            .collect();
        r.table(
            &format!("{kind} ({})", list.len()),
            &["User", "Card", "Serial", "Details"],
            &rows,
        );
    }
    r.finish("rows or warnings", "keyfleet audit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Reason, ReasonCode, SafetyLimits, SafetyReport};
    use crate::policy::model::Slot;

    fn plan_of(actions: Vec<Action>) -> Plan {
        Plan {
            complete: true,
            actions,
            safety_valve: SafetyReport {
                tripped: false,
                allowed: false,
                revoked_users: 0,
                holders: 0,
                limits: SafetyLimits::default(),
            },
            conflicts: Vec::new(),
            errors: Vec::new(),
            withheld_revocations: 0,
        }
    }

    fn issue(user: &str, message: &str) -> Action {
        Action {
            kind: ActionKind::Issue,
            user: user.into(),
            template: Some("employee".into()),
            card: None,
            stock: Some("virtual".into()),
            slot: None,
            slots: vec![Slot::PivAuthentication],
            serials: Vec::new(),
            reason: Reason {
                code: ReasonCode::NotIssued,
                message: message.into(),
            },
            waiting_for_card: false,
            waiting_for_holder: false,
            card_suspect: false,
        }
    }

    /// The rows of the Markdown table(s), as cells: split on unescaped pipes.
    fn table_rows(md: &str) -> Vec<Vec<String>> {
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| User"))
            .map(|l| {
                let mut cells = Vec::new();
                let mut cur = String::new();
                let mut chars = l.trim().trim_start_matches('|').chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            cur.push(c);
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
                        c => cur.push(c),
                    }
                }
                cells
            })
            .collect()
    }

    #[test]
    fn hostile_values_neither_break_the_table_nor_inject_html() {
        let hostile = "evil | </td><script>alert(1)</script>\n| x | y |\r\n**bold** [link](javascript:x) & `code` \\| <img src=x>";
        let md = plan_markdown(
            &plan_of(vec![issue(hostile, hostile), issue("bob", "plain")]),
            &[format!("directory people: <b>{hostile}</b>")],
        );
        let rows = table_rows(&md);
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows.iter().all(|r| r.len() == 5), "{rows:?}\n{md}");
        assert_eq!(rows[1][0], "bob");
        for forbidden in ["<script", "</td>", "<img", "<b>", "\r"] {
            assert!(!md.contains(forbidden), "{forbidden:?} in\n{md}");
        }
        // Only the report's own HTML: no tag but <details>/<summary>.
        let tags: Vec<&str> = md.split('<').skip(1).collect();
        assert!(
            tags.iter().all(|t| t.starts_with("details")
                || t.starts_with("/details")
                || t.starts_with("summary")
                || t.starts_with("/summary")),
            "{md}"
        );
        assert!(rows[0][0].contains("&lt;script&gt;"), "{}", rows[0][0]);
        assert!(rows[0][0].contains(r"\*\*bold\*\*"), "{}", rows[0][0]);
        assert!(rows[0][0].contains(r"\[link\]"), "{}", rows[0][0]);
        assert!(rows[0][0].contains("&amp;"), "{}", rows[0][0]);
        assert_eq!(cell("a|b"), r"a\|b");
        assert_eq!(cell("a\\|b"), r"a\\\|b");
        assert_eq!(
            cell("line1\nline2\r\nline3\rline4"),
            "line1 line2 line3 line4"
        );
        assert_eq!(cell(""), "-");
        assert_eq!(cell("\u{7}"), "\u{fffd}");
    }

    #[test]
    fn long_plans_are_folded_and_cut_under_the_limit_with_a_note() {
        let short = plan_markdown(
            &plan_of(
                (0..FOLD_ROWS)
                    .map(|i| issue(&format!("u{i}"), "r"))
                    .collect(),
            ),
            &[],
        );
        assert!(!short.contains("<details>"), "{short}");
        assert!(short.contains("#### issue (10)"), "{short}");

        let folded = plan_markdown(
            &plan_of(
                (0..=FOLD_ROWS)
                    .map(|i| issue(&format!("u{i}"), "r"))
                    .collect(),
            ),
            &[],
        );
        assert!(
            folded.contains("<details><summary>issue (11)</summary>"),
            "{folded}"
        );
        assert!(folded.contains("</details>"));
        assert!(!folded.contains("Cut at"));

        let n = 5_000;
        let long = plan_of(
            (0..n)
                .map(|i| issue(&format!("user-{i:05}"), &"a long reason ".repeat(5)))
                .collect(),
        );
        let md = plan_markdown(&long, &[]);
        assert!(md.chars().count() <= MAX_CHARS, "{} characters", md.len());
        assert!(
            md.len() > MAX_CHARS - 2 * RESERVE,
            "the room is used: {}",
            md.len()
        );
        let shown = table_rows(&md).len();
        assert!(shown > 100 && shown < n, "{shown}");
        let note = format!(
            "**Cut at 60000 characters:** {} more rows or warnings not shown; run `keyfleet plan` for all of them.",
            n - shown
        );
        assert!(md.contains(&note), "{}", &md[md.len() - 400..]);
        assert_eq!(
            md.matches("<details>").count(),
            md.matches("</details>").count()
        );

        // Warnings beyond the room are counted with the rows after them.
        let errors: Vec<String> = (0..2_000)
            .map(|i| format!("directory d{i:04}: {}", "unreachable ".repeat(8)))
            .collect();
        let many = plan_markdown(&plan_of(vec![issue("alice", "r")]), &errors);
        assert!(many.len() <= MAX_CHARS);
        let shown = many
            .lines()
            .filter(|l| l.starts_with("- Observation error"))
            .count();
        assert!(shown > 100 && shown < errors.len(), "{shown}");
        assert!(
            many.contains(&format!(
                "{} more rows or warnings not shown",
                errors.len() - shown + 1
            )),
            "{}",
            &many[many.len() - 300..]
        );
        assert!(
            md.starts_with("### Keyfleet plan\n\n**5000 action(s):** 5000 issue;"),
            "{}",
            &md[..200]
        );
    }

    #[test]
    fn the_audit_report_has_a_table_per_finding_kind() {
        let f = |kind, user: &str, message: &str| Finding {
            kind,
            user: user.into(),
            card: Some("vcard-1".into()),
            serial: Some("0A".into()),
            message: message.into(),
        };
        let md = audit_markdown(
            &[
                f("expiring", "alice", "expires at 2027-01-01"),
                f("template-drift", "bob|x", "<i>changed</i>"),
                f("expiring", "carol", "expires at 2027-01-02"),
            ],
            false,
            &["directory hr: timeout".into()],
        );
        assert!(
            md.contains("**3 finding(s):** 2 expiring, 1 template-drift."),
            "{md}"
        );
        assert!(
            md.contains("#### expiring (2)\n\n| User | Card | Serial | Details |"),
            "{md}"
        );
        assert!(
            md.contains("| bob\\|x | vcard-1 | 0A | &lt;i&gt;changed&lt;/i&gt; |"),
            "{md}"
        );
        assert!(
            md.contains("- Observation error: directory hr: timeout"),
            "{md}"
        );
        assert!(md.contains("- Observation incomplete"), "{md}");
        assert_eq!(
            audit_markdown(&[], true, &[]),
            "### Keyfleet audit\n\n**No drift.**\n\n"
        );
    }
}
