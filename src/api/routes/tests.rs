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
    fn status(&self) -> Option<crate::statedir::status::ControllerStatus> {
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

/// A valid body for a route that takes one.
fn sample_body(r: &RouteDoc) -> Body {
    match (r.request.is_some(), r.path) {
        (true, "/api/v1/requests") => Body::from(r#"{"kind": "unblock", "target": "x"}"#),
        (true, "/api/v1/cards/{id}/incidents") => Body::from(r#"{"kind": "lost"}"#),
        (true, "/api/v1/cards/{id}/retire") => Body::from(r#"{"foundLost": true}"#),
        (true, "/api/v1/keys/recover") => {
            Body::from(r#"{"user": "alice", "pkcs12": "/tmp/alice.p12"}"#)
        }
        (true, "/api/v1/self-service/sessions/{id}") => Body::from(r#"{"response": "9000"}"#),
        (true, _) => Body::from("{}"),
        (false, _) => Body::empty(),
    }
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    for r in &ROUTES {
        let body = sample_body(r);
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

/// A controller with a real store and audit log, whose host does nothing.
struct Running(CallContext);

struct NoHost;

impl crate::operators::service::Host for NoHost {
    fn unblock(&self, _: &str, _: &str) -> Result<Value, String> {
        Ok(serde_json::json!({}))
    }
    fn held_revocations(&self) -> Result<Vec<crate::statedir::status::HeldRevocation>, String> {
        Ok(Vec::new())
    }
    fn unblock_code(&self, _: &str, _: &str, _: bool) -> Result<serde_json::Value, String> {
        Err("no card here".into())
    }
    fn retire_found_lost(&self, _: &str, _: &str, _: &str) -> Result<serde_json::Value, String> {
        Err("no card here".into())
    }
    fn recover_key(
        &self,
        _: &str,
        _: &str,
        _: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        Err("no archive here".into())
    }
    fn approve_held(
        &self,
        _: &str,
        _: &[crate::statedir::status::HeldRevocation],
    ) -> Result<(), String> {
        Ok(())
    }
}

impl Backend for Running {
    fn context(&self) -> Option<CallContext> {
        Some(self.0.clone())
    }
    fn last_plan(&self) -> Option<Arc<crate::plan::Plan>> {
        None
    }
    fn status(&self) -> Option<crate::statedir::status::ControllerStatus> {
        None
    }
    fn count_call(&self, _: &str) {}
    fn open_requests(&self, _: usize) {}
}

#[tokio::test]
async fn every_permission_is_required_by_its_routes_and_enough_for_them() {
    use crate::policy::model::Permission;
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    // An automation CA and one operator per permission (`p-<permission>`), plus `nobody`.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Automation");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(policy_dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = rcgen::Issuer::new(params, &key);
    let mut certs = std::collections::BTreeMap::new();
    let mut yaml = String::from(
        "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata: {name: s}\nspec:\n  operators:\n    external:\n",
    );
    let names: Vec<String> = Permission::ALL
        .iter()
        .map(|p| format!("p-{p}"))
        .chain(["nobody".to_string()])
        .collect();
    for name in &names {
        yaml.push_str(&format!(
            "      - {{name: {name}, caFile: ca.pem, subject: CN={name}}}\n"
        ));
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut lp = rcgen::CertificateParams::default();
        lp.distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let leaf = lp.signed_by(&k, &issuer).unwrap();
        certs.insert(name.clone(), leaf.der().clone());
    }
    for p in Permission::ALL {
        yaml.push_str(&format!(
            "---\napiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {{name: r-{p}}}\nspec:\n  permissions: [{p}]\n  members: [p-{p}]\n"
        ));
    }
    std::fs::write(policy_dir.join("operators.yaml"), yaml).unwrap();
    let state = dir.path().join("state");
    crate::fsutil::ensure_private_dir(&state).unwrap();
    let env = crate::runtime::load(&policy_dir, Some(&state)).unwrap();
    let master = crate::secrets::MasterKey::load_or_create(&state).unwrap();
    let audit = crate::runtime::audit_log(&env, &master).unwrap();
    let store = crate::store::Store::open(&state).unwrap();
    let trust = Arc::new(super::super::tls::client_trust(&env.policy, &state).unwrap());
    let ctx = CallContext {
        env: Arc::new(env),
        groups: Arc::default(),
        store: Arc::new(store),
        audit: Arc::new(audit),
        master: Arc::new(master),
        host: Arc::new(NoHost),
    };
    let app = router(Arc::new(ApiState {
        backend: Arc::new(Running(ctx.clone())),
        trust,
        limiter: RateLimiter::new(10_000),
    }));
    let call = |who: &str, r: &RouteDoc| {
        let body = sample_body(r);
        let mut req = Request::builder()
            .method(r.method.clone())
            .uri(concrete(r.path))
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        req.extensions_mut()
            .insert(PeerCertificates(Arc::new(vec![certs[who].clone()])));
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let mut checked = 0;
    for r in ROUTES.iter() {
        let Some(p) = r.permission else {
            continue;
        };
        let (status, body) = call("nobody", r).await;
        assert_eq!(status, 403, "{} {} without {p}: {body}", r.method, r.path);
        assert!(body.contains(&format!("`{p}`")), "{body}");
        for q in Permission::ALL {
            let (status, body) = call(&format!("p-{q}"), r).await;
            if q == p {
                assert_ne!(status, 403, "{} {} with {p}: {body}", r.method, r.path);
                assert_ne!(status, 401, "{body}");
            } else if (p, q) != (Permission::Approve, Permission::ManageRequests)
                // The archive's list is open to view-inventory too (scoped the same way).
                && !(r.path == "/api/v1/keys" && q == Permission::ViewInventory)
            {
                assert_eq!(status, 403, "{} {} with only {q}: {body}", r.method, r.path);
            }
        }
        checked += 1;
    }
    assert!(checked >= 10);
    // Every one of those calls is in the audit log, the refusals as `denied`.
    let entries = ctx.audit.entries().unwrap();
    assert!(
        entries
            .iter()
            .filter(|e| e.actor == "nobody" && e.outcome == "denied")
            .count()
            >= checked
    );
    // whoami needs no permission.
    let (status, body) = call("nobody", &ROUTES[0]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"operator\":\"nobody\""), "{body}");
}
