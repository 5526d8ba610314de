//! The operator API's error responses: one JSON shape for every failure,
//! `{"error": {"code": "...", "message": "..."}}`, with the HTTP status that says who is to
//! blame (401 no or unknown identity, 403 not permitted, 404, 405, 409 state conflict,
//! 422 bad input, 429 too many calls, 500). Also the JSON body extractor whose every
//! rejection is a 422 in that shape, and the fallbacks for unknown paths and methods.
//!
//! This module does not decide who may do what (`crate::operators` does); it only renders.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::policy::model::Permission;

/// The largest request body [`JsonBody`] accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A failed API call: its status, a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`unauthorized`, `forbidden`, ...).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// With 429: how long to wait before calling again.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error of any status with its code (what an operator service refusal maps to).
    pub fn of(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, code, message)
    }

    /// 401: the call carries no identity, or one Keyfleet does not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the identity lacks `permission` (named in the message), or separation of duties
    /// forbids the call (`detail` says why).
    pub fn forbidden(permission: Permission, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let message = if detail.is_empty() {
            format!("not permitted: needs the `{permission}` permission")
        } else {
            format!("not permitted: needs the `{permission}` permission: {detail}")
        };
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such card, user, request or path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            message,
        )
    }

    /// 409: the target's state does not allow the call (already decided, not blocked, ...).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422: the request's body or parameters are not acceptable.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 429 with `Retry-After` (whole seconds, rounded up, at least 1).
    pub fn too_many_requests(retry_after: std::time::Duration) -> Self {
        let secs = retry_after_secs(retry_after);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            format!("rate limit exceeded: retry in {secs} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 500: Keyfleet failed (the audit log cannot be written, the store cannot be read, ...).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The response body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

fn retry_after_secs(d: std::time::Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(d) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
        response
    }
}

/// The body of every error response (also the schema the OpenAPI document gives errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code: `unauthorized`, `forbidden`, `not-found`, `method-not-allowed`,
    /// `conflict`, `unprocessable`, `too-many-requests` or `internal`.
    pub code: String,
    /// For humans; a 403's names the missing permission.
    pub message: String,
}

/// A JSON request body. Unlike `axum::Json`, every rejection (no `application/json`
/// content type, a body over [`MAX_BODY_BYTES`], malformed JSON, a wrong field type or a
/// missing field) is a 422 [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unprocessable(
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|e| {
                ApiError::unprocessable(format!(
                    "the body cannot be read or is over {} KiB: {e}",
                    MAX_BODY_BYTES / 1024
                ))
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::unprocessable(format!("invalid JSON body: {e}")))
    }
}

/// `application/json`, or `application/<x>+json`, with any parameters.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// The router's fallback (`Router::fallback`): a 404 in the error shape for unknown paths.
pub async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

/// The router's `method_not_allowed_fallback`: a 405 in the error shape for a known path
/// called with a method it does not serve.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower_service_shim::call;

    /// Runs one request through a router without a network.
    mod tower_service_shim {
        use axum::Router;
        use axum::body::Body;
        use axum::http::Request;
        use hyper::service::Service as _;

        pub(super) async fn call(router: &Router, req: Request<Body>) -> (u16, serde_json::Value) {
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            let resp = svc.call(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            (status, json)
        }
    }

    async fn body_of(e: ApiError) -> (u16, Option<String>, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_constructor_renders_its_status_and_the_error_shape() {
        let cases = [
            (ApiError::unauthorized("no identity"), 401, "unauthorized"),
            (
                ApiError::forbidden(Permission::Unblock, "card c1"),
                403,
                "forbidden",
            ),
            (ApiError::not_found("no card c9"), 404, "not-found"),
            (ApiError::conflict("already decided"), 409, "conflict"),
            (ApiError::unprocessable("bad"), 422, "unprocessable"),
            (ApiError::internal("disk"), 500, "internal"),
            (
                ApiError::method_not_allowed("GET"),
                405,
                "method-not-allowed",
            ),
        ];
        for (e, status, code) in cases {
            let message = e.message.clone();
            let (s, retry, json) = body_of(e).await;
            assert_eq!(s, status);
            assert_eq!(retry, None);
            assert_eq!(
                json,
                serde_json::json!({"error": {"code": code, "message": message}})
            );
        }
    }

    #[tokio::test]
    async fn forbidden_names_the_permission() {
        let (_, _, json) = body_of(ApiError::forbidden(Permission::RecoverKey, "")).await;
        let msg = json["error"]["message"].as_str().unwrap();
        assert!(msg.contains("`recover-key`"), "{msg}");
        let (_, _, json) = body_of(ApiError::forbidden(
            Permission::Approve,
            "you made this request",
        ))
        .await;
        let msg = json["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("`approve`") && msg.contains("you made this request"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn too_many_requests_sets_retry_after_rounded_up() {
        let (s, retry, json) = body_of(ApiError::too_many_requests(
            std::time::Duration::from_millis(1500),
        ))
        .await;
        assert_eq!(s, 429);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(json["error"]["code"], "too-many-requests");
        let (_, retry, _) = body_of(ApiError::too_many_requests(std::time::Duration::ZERO)).await;
        assert_eq!(retry.as_deref(), Some("1"));
    }

    #[derive(Debug, Deserialize)]
    struct Input {
        reason: String,
        count: u32,
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/things",
                post(|JsonBody(i): JsonBody<Input>| async move {
                    axum::Json(serde_json::json!({"reason": i.reason, "count": i.count}))
                }),
            )
            .route("/known", get(|| async { "ok" }))
            .fallback(fallback)
            .method_not_allowed_fallback(method_not_allowed)
    }

    fn post_req(content_type: Option<&str>, body: impl Into<Body>) -> axum::http::Request<Body> {
        let mut b = axum::http::Request::post("/things");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(body.into()).unwrap()
    }

    #[tokio::test]
    async fn json_body_accepts_good_input() {
        let (s, json) = call(
            &router(),
            post_req(
                Some("application/json; charset=utf-8"),
                r#"{"reason":"lost","count":2}"#,
            ),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(json, serde_json::json!({"reason": "lost", "count": 2}));
    }

    #[tokio::test]
    async fn every_json_body_rejection_is_a_422_in_the_error_shape() {
        let big = format!(
            r#"{{"reason":"{}","count":1}}"#,
            "x".repeat(MAX_BODY_BYTES + 1)
        );
        let cases: Vec<(&str, axum::http::Request<Body>)> = vec![
            ("malformed", post_req(Some("application/json"), "{not json")),
            (
                "wrong type",
                post_req(Some("application/json"), r#"{"reason":"x","count":"two"}"#),
            ),
            (
                "missing field",
                post_req(Some("application/json"), r#"{"reason":"x"}"#),
            ),
            (
                "no content type",
                post_req(None, r#"{"reason":"x","count":1}"#),
            ),
            (
                "wrong content type",
                post_req(Some("text/plain"), r#"{"reason":"x","count":1}"#),
            ),
            ("too big", post_req(Some("application/json"), big)),
        ];
        for (what, req) in cases {
            let (s, json) = call(&router(), req).await;
            assert_eq!(s, 422, "{what}: {json}");
            assert_eq!(json["error"]["code"], "unprocessable", "{what}");
            assert!(json["error"]["message"].is_string(), "{what}");
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405_in_the_error_shape() {
        let req = axum::http::Request::get("/nothing-here")
            .body(Body::empty())
            .unwrap();
        let (s, json) = call(&router(), req).await;
        assert_eq!(s, 404);
        assert_eq!(json["error"]["code"], "not-found");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/nothing-here")
        );
        let req = axum::http::Request::delete("/known")
            .body(Body::empty())
            .unwrap();
        let (s, json) = call(&router(), req).await;
        assert_eq!(s, 405);
        assert_eq!(json["error"]["code"], "method-not-allowed");
    }
}
