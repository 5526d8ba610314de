//! Every documented route reaches its handler (which refuses a call without an identity with
//! the error shape's 401), undocumented ones do not, and the document declares them all.

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::*;

struct Starting;

impl Backend for Starting {
    fn context(&self) -> Option<CallContext> {
        None
    }
    fn last_plan(&self) -> Option<Arc<crate::plan::Plan>> {
        None
    }
    fn count_call(&self, _: &str) {}
    fn open_requests(&self, _: usize) {}
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// A router whose controller is still starting (every call that reaches a handler: 503),
/// trusting one external CA made here.
fn app(dir: &std::path::Path) -> Router {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut policy = crate::policy::PolicySet::empty(dir);
    policy
        .settings
        .spec
        .operators
        .external
        .push(crate::policy::model::ExternalOperator {
            name: "ticketing".into(),
            ca_file,
            subject: "CN=ticketing".into(),
        });
    let trust = Arc::new(super::super::tls::client_trust(&policy, dir).unwrap());
    router(Arc::new(ApiState {
        backend: Arc::new(Starting),
        trust,
        limiter: RateLimiter::new(1000),
    }))
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    for r in &ROUTES {
        let body = match (r.request.is_some(), r.path) {
            (true, "/api/v1/requests") => Body::from(r#"{"kind": "unblock", "target": "x"}"#),
            (true, _) => Body::from("{}"),
            (false, _) => Body::empty(),
        };
        let req = Request::builder()
            .method(r.method.clone())
            .uri(concrete(r.path))
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(
            res.status().as_u16(),
            503,
            "{} {} is not routed to a handler",
            r.method,
            r.path
        );
    }
    for (method, path, status) in [
        (Method::GET, "/api/v1/nothing", 404),
        (Method::DELETE, "/api/v1/requests", 405),
        (Method::GET, "/api/v1/cards/x/unblock", 405),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{method} {path}");
    }
}

#[tokio::test]
async fn the_document_declares_every_route_and_is_served_without_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    let req = Request::builder()
        .uri("/api/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let res = app(dir.path()).oneshot(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc, openapi());
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = 0;
    for r in &ROUTES {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the document",
            r.method,
            r.path
        );
        assert!(
            op["responses"]["200"].is_object(),
            "{} {}",
            r.method,
            r.path
        );
        for e in r.errors {
            assert!(
                op["responses"][e.to_string()].is_object(),
                "{} {} {e}",
                r.method,
                r.path
            );
        }
        documented += 1;
    }
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            p.as_object()
                .unwrap()
                .keys()
                .filter(|k| k.as_str() != "parameters")
                .count()
        })
        .sum();
    assert_eq!(
        operations, documented,
        "the document has operations no route serves"
    );
}
