//! What the workstation and the server exchange under `/api/v1/self-service` (JSON). Shared
//! by both sides; the OpenAPI document is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/self-service`: the holder, their card and what waits for them on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfServiceView {
    /// The holder (directory uid).
    pub user: String,
    /// The card the certificate is on.
    pub card: String,
    /// The serial of the certificate that identified the holder.
    pub certificate: String,
    /// The card's template.
    pub template: String,
    /// The card's status in the inventory.
    pub status: String,
    /// The actions of the controller's last plan that wait for this holder on this card.
    pub waiting: Vec<WaitingAction>,
    /// Whether the PIN Keyfleet holds for the card is known not to be the card's.
    pub pin_unknown: bool,
    /// Whether the card's current PUK was released as an unblock code (it is rotated at the
    /// card's next contact).
    pub unblock_code_released: bool,
}

/// One action that waits for the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingAction {
    /// The action's id (as in the plan and the history).
    pub action: String,
    /// Its kind (`renew`, `reissue`).
    pub kind: String,
    /// The slot, when it concerns one.
    pub slot: Option<String>,
    /// Why it is planned and why it waits.
    pub reason: String,
}

/// One command for the card, relayed by the workstation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    /// The C-APDU, hex. With `pin`, only its header (CLA INS P1 P2 of a VERIFY): the
    /// workstation appends the PIN the holder typed.
    pub apdu: String,
    /// The command is a VERIFY of the PIN whose data the workstation fills in.
    pub pin: bool,
}

/// `POST /api/v1/self-service/sessions/{id}`: the card's answer to the last exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CardResponse {
    /// The R-APDU (data ‖ SW1 SW2), hex.
    pub response: String,
}

/// The answer to a session call: the next exchange, or how the session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStep {
    /// The session (to post the card's answer to); absent once it ended.
    pub session: Option<String>,
    /// The next command for the card, while the session runs.
    pub exchange: Option<Exchange>,
    /// How every action ended, once the session ended.
    pub outcome: Option<SessionOutcome>,
}

/// How a session ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutcome {
    /// Every action that waited for the holder on the card, in plan order.
    pub actions: Vec<ActionOutcome>,
    /// Why nothing ran at all, when the session could not run (the plan could not be made,
    /// the audit log cannot be written).
    pub error: Option<String>,
}

impl SessionOutcome {
    /// Whether some action failed or the session could not run.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self
                .actions
                .iter()
                .any(|a| a.result == ActionResult::Failed)
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionOutcome {
    /// The action's id.
    pub action: String,
    /// Its kind.
    pub kind: String,
    /// Done, failed or skipped.
    pub result: ActionResult,
    /// The certificates it created or changed (done).
    pub serials: Vec<String>,
    /// Why it failed or was skipped.
    pub message: Option<String>,
}

/// The end of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionResult {
    /// Done (the history records it).
    Done,
    /// Failed (the history records why).
    Failed,
    /// Not run.
    Skipped,
}

/// `POST /api/v1/self-service/pin-changed` and `.../unblocked`: what Keyfleet now knows of
/// the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactsChanged {
    /// The card.
    pub card: String,
    /// The PIN Keyfleet holds is no longer the card's: actions that need it wait for the
    /// holder (this client runs them).
    pub pin_unknown: bool,
    /// A new PUK is set at the card's next contact (`rotate-puk`).
    pub puk_rotation_planned: bool,
}
