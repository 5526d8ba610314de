//! Archived encryption keys as operators see them: the list (never key material) for holders
//! of `recover-key` or `view-inventory`, and recovery, always a `recover-key` request under
//! two-person control (see [`crate::policy::model::OperationKind::required_approvals`]).

use serde_json::Value;

use super::roles::{Grants, Scope};
use super::service::{OpError, Operations, Outcome};
use crate::archive::{self, ArchivedKey, RecoverParameters};
use crate::policy::model::{OperationKind, Permission};

impl Operations<'_> {
    /// `keyfleet keys list [--user UID]`: the archive's records the caller may see (their
    /// `recover-key` or `view-inventory` template scope), newest first.
    pub fn keys(&self, g: &Grants, user: Option<&str>) -> Result<Vec<ArchivedKey>, OpError> {
        let kind = "view-keys";
        let target = user.unwrap_or("keys");
        // Either permission reads it, each within its scope; a refusal names recover-key.
        let permission = if !g.has(Permission::RecoverKey) && g.has(Permission::ViewInventory) {
            Permission::ViewInventory
        } else {
            Permission::RecoverKey
        };
        self.allow(g, permission, kind, target, None)?;
        self.log(g.name(), kind, target, "allowed", Value::Null)?;
        let scope = g.scope(permission).cloned().unwrap_or(Scope::All);
        let records = archive::records(self.store).map_err(|e| OpError::Store(e.to_string()))?;
        let inventory = self.store.inventory()?;
        Ok(archive::with_certificates(&records, &inventory)
            .into_iter()
            .filter(|(r, _)| user.is_none_or(|u| r.user == u) && scope.allows(&r.template))
            .map(|(r, c)| archive::view(r, c))
            .collect())
    }

    /// `keyfleet keys recover --user UID …`: a `recover-key` request (it needs approvals
    /// whatever `approvals` says: 2 when it is not listed).
    pub fn recover_key(
        &self,
        g: &Grants,
        user: &str,
        parameters: &RecoverParameters,
        reason: &str,
    ) -> Result<Outcome<Value>, OpError> {
        let kind = OperationKind::RecoverKey;
        let invalid = match (&parameters.pkcs12, &parameters.to_card) {
            (Some(p), None) if !p.is_absolute() => Some(format!(
                "the PKCS#12 file {} must be an absolute path on the controller's machine",
                p.display()
            )),
            (Some(_), None) | (None, Some(_)) => None,
            _ => Some("give exactly one of pkcs12 (a file) and toCard (a card)".into()),
        };
        if let Some(why) = invalid {
            self.allow(g, kind.permission(), kind.as_str(), user, None)?;
            return self.refuse(g, kind.as_str(), user, OpError::Invalid(why));
        }
        let extra =
            serde_json::to_value(parameters).map_err(|e| OpError::Invalid(e.to_string()))?;
        self.operate_with(g, kind, user, reason, extra)
    }
}
