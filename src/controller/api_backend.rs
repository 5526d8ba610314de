//! The running controller as the operator API's [`Backend`]: calls are decided with the
//! operator context of the last pass and done through the same host as the control socket's.

use std::sync::Arc;

use super::control_socket::Shared;
use super::operator_host::RunningHost;
use crate::api::backend::{Backend, CallContext};
use crate::plan::Plan;
use crate::statedir::status::ControllerStatus;

/// The controller's state, for the API.
pub(super) struct ControllerBackend(pub(super) Arc<Shared>);

impl Backend for ControllerBackend {
    fn context(&self) -> Option<CallContext> {
        let ctx = self.0.operator_context()?;
        Some(CallContext {
            env: ctx.env.clone(),
            groups: ctx.groups.clone(),
            store: self.0.store.clone(),
            audit: self.0.audit.clone(),
            master: ctx.master.clone(),
            host: Arc::new(RunningHost {
                shared: self.0.clone(),
                env: ctx.env,
                master: ctx.master,
            }),
        })
    }

    fn last_plan(&self) -> Option<Arc<Plan>> {
        self.0.last_plan()
    }

    fn status(&self) -> Option<ControllerStatus> {
        // What the control socket's `Request::Status` answers.
        Some(self.0.status())
    }

    fn count_call(&self, outcome: &str) {
        self.0.metrics.operator_call(outcome);
    }

    fn open_requests(&self, n: usize) {
        self.0.metrics.open_requests(n);
    }
}
