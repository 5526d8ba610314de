//! The archive routes: the list of archived keys and a recovery request.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use serde::Deserialize;

use super::{Addr, ApiError, ApiState, Peer, Reply, call, change, ok, outcome, query};
use crate::api::error::JsonBody;
use crate::archive::RecoverParameters;

/// `GET /keys?user=UID`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeysQuery {
    user: Option<String>,
}

/// `{"user", "serial", "pkcs12", "notifyOwner", "reason"}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecoverBody {
    /// Whose keys.
    pub user: String,
    /// Which key (its certificate's serial, hex); all of the user's otherwise.
    #[serde(default)]
    pub serial: Option<String>,
    /// The PKCS#12 file to write: an absolute path on the controller's machine that does not
    /// exist yet (or `toCard`).
    #[serde(default)]
    pub pkcs12: Option<std::path::PathBuf>,
    /// The card of the key's owner whose retired slots get the keys (or `pkcs12`).
    #[serde(default)]
    pub to_card: Option<String>,
    /// Recorded in the audit entries for a mail gateway to tell the key's owner.
    #[serde(default)]
    pub notify_owner: bool,
    /// Why (recorded; shown to approvers).
    #[serde(default)]
    pub reason: String,
}

pub(super) async fn list(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    RawQuery(q): RawQuery,
) -> Result<Reply, ApiError> {
    let q: KeysQuery = query(q)?;
    call(s, peer, addr, move |ops, g, _| {
        Ok(ok(&ops.keys(g, q.user.as_deref())?))
    })
    .await
}

pub(super) async fn recover(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    JsonBody(body): JsonBody<RecoverBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        let parameters = RecoverParameters {
            serial: body.serial,
            pkcs12: body.pkcs12,
            to_card: body.to_card,
            notify_owner: body.notify_owner,
        };
        Ok(outcome(
            ops.recover_key(g, &body.user, &parameters, &body.reason)?,
            ops.now,
        ))
    })
    .await
}
