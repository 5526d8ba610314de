//! What the API's handlers work with: the running controller gives them, for each call, the
//! policy in force, the groups roles name, the store, the audit log and the host effects (the
//! same the control socket uses), and takes back the call's outcome for its metrics.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::operators::roles::RoleGroups;
use crate::operators::service::Host;
use crate::plan::Plan;
use crate::runtime::Environment;
use crate::secrets::MasterKey;
use crate::statedir::status::ControllerStatus;
use crate::store::Store;

/// Everything one API call is decided and done with.
#[derive(Clone)]
pub struct CallContext {
    /// The environment (policy) in force.
    pub env: Arc<Environment>,
    /// Members of the groups roles name, from the last observation.
    pub groups: Arc<RoleGroups>,
    /// The store.
    pub store: Arc<Store>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The master key (to reach the CAs for the drift report).
    pub master: Arc<MasterKey>,
    /// The machine's effects.
    pub host: Arc<dyn Host>,
}

/// The controller, as the API sees it.
pub trait Backend: Send + Sync + 'static {
    /// The context of a call now (None while the controller starts).
    fn context(&self) -> Option<CallContext>;
    /// The last pass's plan.
    fn last_plan(&self) -> Option<Arc<Plan>>;
    /// The controller's status, as the control socket's `Request::Status` (`keyfleet status`)
    /// answers it; None when there is none to give.
    fn status(&self) -> Option<ControllerStatus>;
    /// Counts an operator call by outcome (`ok` or the error code).
    fn count_call(&self, outcome: &str);
    /// The number of pending requests changed.
    fn open_requests(&self, n: usize);
}
