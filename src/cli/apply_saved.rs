//! `keyfleet apply PLANFILE`: carry out a plan saved by `keyfleet plan -out PLANFILE`, exactly,
//! or refuse it when what it was computed from changed (`crate::saved_plan`).
//!
//! Recovery of interrupted work runs first, as in every apply; then the policy, the inventory
//! and every directory are observed again and compared with the plan's basis. A difference
//! refuses the plan (exit 1), naming each input that changed. Otherwise the plan is computed
//! again from those same inputs at the plan's time, to check that the file holds what they
//! give (an edited file is refused), and to have the desired state its actions carry out and
//! the safety valve's verdict under this apply's `--allow-mass-revocation`. The saved actions
//! are then confirmed and applied as any plan is.

use std::path::Path;

use super::EXIT_FAILURE;
use super::apply::{Args, PassOutcome, confirm_and_apply, os_user, recover};
use crate::apply::{self, Context, CrashPoint};
use crate::runtime;
use crate::saved_plan::{Basis, SavedPlan};
use crate::store::Store;

/// What an apply has connected before its passes.
pub(super) struct Connected<'a> {
    /// The loaded policy.
    pub(super) env: &'a runtime::Environment,
    /// The open store.
    pub(super) store: &'a Store,
    /// The master key.
    pub(super) master: &'a crate::secrets::MasterKey,
    /// The audit log.
    pub(super) audit: &'a crate::audit::AuditLog,
    /// The certificate authorities.
    pub(super) cas: &'a apply::CaRegistry,
    /// The card providers.
    pub(super) cards: &'a apply::Cards,
}

fn refused(message: &str) -> PassOutcome {
    eprintln!("{message}");
    PassOutcome {
        stop: Some(EXIT_FAILURE),
        declined: false,
        failed: 0,
        pending: 0,
    }
}

/// Recovery, the staleness check, confirmation and apply of the saved plan in `file`.
pub(super) fn run(c: &Connected<'_>, file: &Path, args: &Args) -> anyhow::Result<PassOutcome> {
    let saved = SavedPlan::read(file)?;
    let clock = time::OffsetDateTime::now_utc;
    let pre = crate::desired::from_policy(&c.env.policy);
    let ctx = Context {
        store: c.store,
        master: c.master,
        cas: c.cas,
        cards: c.cards,
        desired: &pre,
        clock: &clock,
        actor: args.operator.clone().unwrap_or_else(os_user),
        pin_mailer_dir: c.env.state_dir.join("pin-mailer"),
        crash: CrashPoint::from_env(),
        audit: c.audit,
        holder_pins: Default::default(),
        archive: crate::archive::ArchiveKeys::new(&c.env.policy, &c.env.state_dir),
    };
    recover(&ctx)?;

    let inventory = c.store.inventory()?;
    let observed = runtime::observe_environment(c.env);
    let now = Basis::of(c.env, &observed, &inventory);
    let changes = saved.basis.changes(&now);
    if !changes.is_empty() {
        let names: Vec<String> = changes.iter().map(ToString::to_string).collect();
        return Ok(refused(&format!(
            "Refusing to apply the saved plan {}: changed since it was planned at {}: {}. Plan again.",
            file.display(),
            saved
                .planned_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            names.join(", ")
        )));
    }
    for e in observed.values().filter_map(|o| o.as_ref().err()) {
        eprintln!("keyfleet: {e}");
    }
    let pass = runtime::plan_observed(
        c.env,
        &observed,
        inventory,
        c.cards,
        saved.planned_at,
        args.allow_mass_revocation,
        saved.targets.clone(),
    )?;
    if let Some(why) = saved.mismatch(&pass.plan) {
        return Ok(refused(&format!(
            "Refusing to apply the saved plan {}: {why}; the file was edited, or written by another Keyfleet version ({}). Plan again.",
            file.display(),
            saved.keyfleet_version
        )));
    }
    // Exactly the saved actions, under this apply's verdict of the safety valve. Whether an
    // action waits (for its card, for the holder) is what the cards attached now say: taken
    // from the plan computed again, for the actions on the same card.
    let mut actions = saved.actions;
    for (a, fresh) in actions.iter_mut().zip(&pass.plan.actions) {
        if a.card == fresh.card && a.stock == fresh.stock {
            a.waiting_for_card = fresh.waiting_for_card;
            a.waiting_for_holder = fresh.waiting_for_holder;
            a.card_suspect = fresh.card_suspect;
        }
    }
    let plan = crate::plan::Plan {
        actions,
        ..pass.plan
    };
    println!(
        "Saved plan {} (planned at {}): policy, inventory and directories unchanged.",
        file.display(),
        saved
            .planned_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    print!("{}", super::plan::plan_text(&plan));
    let pending = plan.actions.iter().filter(|a| a.waiting_for_card).count();
    if plan.refused() {
        return Ok(refused(
            "Refusing to apply: the safety valve tripped (see above).",
        ));
    }
    confirm_and_apply(ctx, &pass.desired, &plan, args.yes, pending)
}
