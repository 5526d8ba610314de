//! The machine's side of operator operations ([`crate::operators::service::Host`]): the
//! running controller's (held revocations as its last pass published them; approvals wake
//! the loop) and the one a command uses when no controller runs (it holds the state lock and
//! plans to find what the valve would hold).

use std::sync::Arc;

use time::OffsetDateTime;

use super::control_socket::Shared;
use super::triggers::Trigger;
use super::valve;
use crate::audit::AuditLog;
use crate::operators::service::Host;
use crate::runtime::{self, Environment};
use crate::secrets::MasterKey;
use crate::statedir::status::HeldRevocation;
use crate::store::Store;

/// The running controller's host.
pub struct RunningHost {
    pub(super) shared: Arc<Shared>,
    pub(super) env: Arc<Environment>,
    pub(super) master: Arc<MasterKey>,
}

impl RunningHost {
    /// Runs `f` with the cards to itself: no pass works on a card meanwhile.
    fn card_work<T>(&self, f: impl FnOnce(&runtime::CardWork<'_>) -> T) -> T {
        let _cards = self
            .shared
            .card_work
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&runtime::CardWork {
            env: &self.env,
            store: &self.shared.store,
            master: &self.master,
            audit: &self.shared.audit,
        })
    }
}

impl Host for RunningHost {
    fn unblock(&self, card: &str, actor: &str) -> Result<serde_json::Value, String> {
        let r = self.card_work(|w| w.unblock(card, actor))?;
        Ok(unblocked(&r))
    }

    fn held_revocations(&self) -> Result<Vec<HeldRevocation>, String> {
        Ok(self.shared.status().held)
    }

    fn unblock_code(
        &self,
        card: &str,
        actor: &str,
        to_mailer: bool,
    ) -> Result<serde_json::Value, String> {
        let v = self.card_work(|w| w.unblock_code(card, actor, to_mailer))?;
        // The card's next contact rotates the PUK: plan it now.
        self.wake();
        Ok(v)
    }

    fn wake(&self) {
        self.shared.triggers.fire(Trigger::Approved);
    }

    fn with_cards(&self, work: &mut dyn FnMut()) {
        self.card_work(|_| work());
    }

    fn recover_key(
        &self,
        requester: &str,
        user: &str,
        parameters: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.card_work(|w| w.recover_key(requester, user, parameters))
    }

    fn retire_found_lost(
        &self,
        card: &str,
        actor: &str,
        comment: &str,
    ) -> Result<serde_json::Value, String> {
        self.card_work(|w| w.retire_found_lost(card, actor, comment))
    }

    fn approve_held(&self, actor: &str, held: &[HeldRevocation]) -> Result<(), String> {
        if held.is_empty() {
            return Ok(());
        }
        {
            let _guard = self.shared.approvals_lock.lock();
            let mut ids =
                valve::load_approvals(&self.shared.state_dir).map_err(|e| e.to_string())?;
            ids.extend(held.iter().map(|h| h.id.clone()));
            valve::save_approvals(&self.shared.state_dir, &ids).map_err(|e| e.to_string())?;
        }
        tracing::warn!(
            actor,
            count = held.len(),
            "held revocations approved; they run in the next pass"
        );
        self.shared.triggers.fire(Trigger::Approved);
        Ok(())
    }
}

/// The host of a command that holds the state directory itself (no controller runs).
pub struct OfflineHost<'a> {
    /// The environment.
    pub env: &'a Environment,
    /// The store.
    pub store: &'a Store,
    /// The master key.
    pub master: &'a MasterKey,
    /// The audit log.
    pub audit: &'a AuditLog,
    /// What the valve would hold, planned once per command (asking whether an approval is
    /// needed and approving both read it).
    pub held: std::sync::OnceLock<Result<Vec<HeldRevocation>, String>>,
}

impl Host for OfflineHost<'_> {
    fn unblock(&self, card: &str, actor: &str) -> Result<serde_json::Value, String> {
        Ok(unblocked(&self.card_work().unblock(card, actor)?))
    }

    fn held_revocations(&self) -> Result<Vec<HeldRevocation>, String> {
        self.held.get_or_init(|| self.plan_held()).clone()
    }

    fn unblock_code(
        &self,
        card: &str,
        actor: &str,
        to_mailer: bool,
    ) -> Result<serde_json::Value, String> {
        self.card_work().unblock_code(card, actor, to_mailer)
    }

    fn retire_found_lost(
        &self,
        card: &str,
        actor: &str,
        comment: &str,
    ) -> Result<serde_json::Value, String> {
        self.card_work().retire_found_lost(card, actor, comment)
    }

    fn recover_key(
        &self,
        requester: &str,
        user: &str,
        parameters: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.card_work().recover_key(requester, user, parameters)
    }

    fn approve_held(&self, _actor: &str, held: &[HeldRevocation]) -> Result<(), String> {
        let mut ids = valve::load_approvals(&self.env.state_dir).map_err(|e| e.to_string())?;
        ids.extend(held.iter().map(|h| h.id.clone()));
        valve::save_approvals(&self.env.state_dir, &ids).map_err(|e| e.to_string())
    }
}

impl OfflineHost<'_> {
    fn card_work(&self) -> runtime::CardWork<'_> {
        runtime::CardWork {
            env: self.env,
            store: self.store,
            master: self.master,
            audit: self.audit,
        }
    }

    /// Plans, and splits off what the valve would hold.
    fn plan_held(&self) -> Result<Vec<HeldRevocation>, String> {
        let inventory = self.store.inventory().map_err(|e| e.to_string())?;
        let cards = runtime::cards(self.env, &inventory);
        let pass = runtime::plan_pass_cards(
            self.env,
            inventory,
            &cards,
            OffsetDateTime::now_utc(),
            false,
            None,
        )
        .map_err(|e| e.to_string())?;
        let ids = valve::load_approvals(&self.env.state_dir).map_err(|e| e.to_string())?;
        Ok(valve::hold_revocations(&pass.plan, &ids).1)
    }
}

fn unblocked(r: &crate::apply::UnblockReport) -> serde_json::Value {
    serde_json::json!({
        "retriesBefore": r.retries_before,
        "pinMailer": r.pin_mailer.display().to_string(),
        "pukRotated": r.puk_rotated,
    })
}
