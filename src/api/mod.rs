//! The operator API's transport (`keyfleet run --api ADDR`): HTTPS with client
//! certificates, the error shape, rate limiting and the OpenAPI document.
//!
//! ```text
//!   TcpListener ─► server::serve ─ TLS (tls::server_config, ClientTrust roots, client cert
//!                  │                optional at the TLS layer) ─ hyper (HTTP/1.1, 2)
//!                  ▼
//!   axum::Router (handlers, elsewhere) sees PeerCertificates + ConnectInfo<SocketAddr>
//!                  │  identity: ClientTrust::external_chains, the inventory (crate::operators)
//!                  ▼
//!   error::ApiError / JsonBody   ratelimit::RateLimiter   openapi::document
//! ```
//!
//! The routes ([`routes`]) identify the caller from the verified certificate and hand every
//! call to the operator service, which authorises, audits and does it; the controller is
//! reached through [`backend::Backend`].

pub mod backend;
pub mod error;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod tls;

pub use error::{ApiError, ErrorBody, JsonBody};
pub use openapi::{RouteDoc, document, write_openapi};
pub use ratelimit::RateLimiter;
pub use server::{PeerCertificates, serve};
pub use tls::{ApiSetupError, ClientTrust, client_trust, ensure_operator_cas, server_config};
