//! The connector's error type and how it maps to [`CaError`].

use crate::ca::CaError;
use crate::ca::remote::RemoteError;

/// Failures talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The credential, trust bundle, a certificate or the request log failed.
    #[error(transparent)]
    Local(#[from] RemoteError),
    /// The HTTP client or its runtime could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The gateway could not be reached, or the connection failed, after every attempt.
    #[error("{method} {url}: {message} (after {attempts} attempt(s))")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What failed.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The TLS handshake failed on a certificate: the gateway refused our client certificate,
    /// or its own certificate is not trusted by the trust bundle.
    #[error("{url}: TLS authentication failed: {message}")]
    TlsAuth {
        /// The URL.
        url: String,
        /// Which side and why.
        message: String,
    },
    /// The gateway answered with an error status.
    #[error("{method} {url}: gateway answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Gateway {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The gateway's error code (`cagw-4018`), when given.
        code: Option<String>,
        /// The gateway's message (or the raw body when it is not JSON).
        message: String,
    },
    /// A success response did not have the expected shape.
    #[error("{url}: unexpected response: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The enrolment was accepted but no certificate was issued (pending approval).
    #[error("enrolment {id} not issued: status {status:?}")]
    NotIssued {
        /// The gateway's enrolment id.
        id: String,
        /// Its status.
        status: String,
    },
    /// The certificate returned does not certify the key of the CSR.
    #[error("certificate {serial} does not certify the requested public key")]
    KeyMismatch {
        /// Its serial.
        serial: String,
    },
    /// An action was rejected by the gateway in a success response.
    #[error("{action} on {serial}: the gateway answered {status}")]
    ActionRejected {
        /// The action type.
        action: &'static str,
        /// The serial.
        serial: String,
        /// `action.status`.
        status: String,
    },
    /// An action got a 2xx answer that is not the documented success (`action.status`
    /// `COMPLETED`), and the certificate read back is not in the requested state: it is not
    /// done, and is tried again.
    #[error(
        "{action} on {serial}: not confirmed: the gateway answered {answered}, and the certificate reads back as {read_back}"
    )]
    ActionUnconfirmed {
        /// The action type.
        action: &'static str,
        /// The serial.
        serial: String,
        /// What the answer said (its `action.status`, or that it could not be read).
        answered: String,
        /// The certificate's status as read back, or why it could not be read.
        read_back: String,
    },
}

impl GatewayError {
    /// The HTTP status, for errors the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GatewayError::Gateway { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<GatewayError> for CaError {
    fn from(e: GatewayError) -> Self {
        match &e {
            GatewayError::Gateway { status, .. } if (400..500).contains(status) => {
                CaError::Rejected(e.to_string())
            }
            GatewayError::KeyMismatch { .. } | GatewayError::ActionRejected { .. } => {
                CaError::Rejected(e.to_string())
            }
            GatewayError::ActionUnconfirmed { .. } => CaError::Unavailable(e.to_string()),
            _ => CaError::Unavailable(e.to_string()),
        }
    }
}
