//! The safety valve in the controller: a plan whose revocations trip the limits runs without
//! them (the non-destructive actions still run) and the revocations are held until an operator
//! approves them with `keyfleet approve`, or the plan shrinks back under the limits.
//!
//! [`hold_revocations`] is pure: it filters a plan, it does not change the planner's verdict.
//! Approvals are the ids of the revocations an operator approved, kept in
//! `<state dir>/approved-revocations.json` so that they survive a restart; only the holder of
//! the state-directory lock writes that file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::plan::{Action, ActionKind, Plan, ReasonCode};
use crate::statedir::status::HeldRevocation;

/// File name of the approvals inside the state directory.
pub const APPROVALS_FILE: &str = "approved-revocations.json";

/// Splits a plan: when its valve tripped, every revocation not in `approved` (and the wipe of
/// its card) is taken out and returned as held. A plan under the limits runs whole. The
/// revocation of superseded certificates takes nobody's credential: it is never held.
pub fn hold_revocations(plan: &Plan, approved: &BTreeSet<String>) -> (Plan, Vec<HeldRevocation>) {
    if !plan.safety_valve.tripped || plan.safety_valve.allowed {
        return (plan.clone(), Vec::new());
    }
    let holdable =
        |a: &Action| a.kind == ActionKind::Revoke && a.reason.code != ReasonCode::Superseded;
    let held: Vec<HeldRevocation> = plan
        .actions
        .iter()
        .filter(|a| holdable(a) && !approved.contains(&a.id()))
        .map(|a| HeldRevocation {
            id: a.id(),
            user: a.user.clone(),
            card: a.card.clone(),
            template: a.template.clone(),
            serials: a.serials.clone(),
            reason: a.reason.message.clone(),
        })
        .collect();
    let held_ids: BTreeSet<&str> = held.iter().map(|h| h.id.as_str()).collect();
    let held_cards: BTreeSet<&str> = held.iter().filter_map(|h| h.card.as_deref()).collect();
    let mut out = plan.clone();
    out.actions.retain(|a| match a.kind {
        ActionKind::Revoke => !holdable(a) || !held_ids.contains(a.id().as_str()),
        ActionKind::Retire => a.card.as_deref().is_none_or(|c| !held_cards.contains(c)),
        _ => true,
    });
    (out, held)
}

/// Reading or writing the approvals failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The approval could not be written to the audit log: it is not saved.
    #[error("the audit log cannot be written: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The file is not a JSON list of action ids.
    #[error("{path}: not a list of approved revocations: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The approved revocation ids of a state directory (none when the file is absent).
pub fn load_approvals(state_dir: &Path) -> Result<BTreeSet<String>, ApprovalError> {
    let path = state_dir.join(APPROVALS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ApprovalError::Decode {
            path: path.clone(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(ApprovalError::Io { path, source }),
    }
}

/// Replaces the approvals of a state directory (atomically: write, then rename; mode 0600).
pub fn save_approvals(state_dir: &Path, ids: &BTreeSet<String>) -> Result<(), ApprovalError> {
    let path = state_dir.join(APPROVALS_FILE);
    let bytes = serde_json::to_vec_pretty(ids).unwrap_or_default();
    crate::fsutil::write_atomic(&path, &bytes, 0o600)
        .map_err(|source| ApprovalError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Reason, SafetyLimits, SafetyReport};

    fn action(kind: ActionKind, user: &str, card: &str) -> Action {
        Action {
            kind,
            user: user.into(),
            template: Some("t".into()),
            card: Some(card.into()),
            stock: None,
            slot: None,
            slots: vec![],
            serials: vec![format!("S-{user}")],
            reason: Reason {
                code: ReasonCode::NoLongerEntitled,
                message: "gone".into(),
            },
            waiting_for_card: false,
            waiting_for_holder: false,
            card_suspect: false,
        }
    }

    fn plan(tripped: bool) -> Plan {
        Plan {
            complete: true,
            actions: vec![
                action(ActionKind::Issue, "new", "c0"),
                action(ActionKind::Revoke, "a", "c1"),
                action(ActionKind::Retire, "a", "c1"),
                action(ActionKind::Revoke, "b", "c2"),
                action(ActionKind::Retire, "b", "c2"),
                action(ActionKind::Retire, "old", "c9"),
            ],
            safety_valve: SafetyReport {
                tripped,
                allowed: false,
                revoked_users: 2,
                holders: 2,
                limits: SafetyLimits::default(),
            },
            conflicts: vec![],
            errors: vec![],
            withheld_revocations: 0,
        }
    }

    #[test]
    fn a_tripped_plan_runs_without_its_revocations_and_their_wipes() {
        let (out, held) = hold_revocations(&plan(true), &BTreeSet::new());
        let kinds: Vec<(ActionKind, &str)> = out
            .actions
            .iter()
            .map(|a| (a.kind, a.user.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![(ActionKind::Issue, "new"), (ActionKind::Retire, "old")]
        );
        assert_eq!(
            held.iter().map(|h| h.user.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn superseded_revocations_are_never_held() {
        let mut p = plan(true);
        let mut sup = action(ActionKind::Revoke, "c", "c3");
        sup.reason.code = ReasonCode::Superseded;
        p.actions.push(sup.clone());
        let (out, held) = hold_revocations(&p, &BTreeSet::new());
        assert!(out.actions.contains(&sup));
        assert!(held.iter().all(|h| h.user != "c"));
    }

    #[test]
    fn approved_revocations_run_and_an_untripped_plan_runs_whole() {
        let p = plan(true);
        let approved: BTreeSet<String> = [p.actions[1].id()].into();
        let (out, held) = hold_revocations(&p, &approved);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].user, "b");
        assert_eq!(out.actions.len(), 4);
        let (whole, none) = hold_revocations(&plan(false), &BTreeSet::new());
        assert_eq!(whole, plan(false));
        assert!(none.is_empty());
    }

    #[test]
    fn approvals_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_approvals(dir.path()).unwrap().is_empty());
        let ids: BTreeSet<String> = ["revoke:a:t:c1:".to_string()].into();
        save_approvals(dir.path(), &ids).unwrap();
        assert_eq!(load_approvals(dir.path()).unwrap(), ids);
        std::fs::write(dir.path().join(APPROVALS_FILE), b"{").unwrap();
        assert!(matches!(
            load_approvals(dir.path()),
            Err(ApprovalError::Decode { .. })
        ));
    }
}
