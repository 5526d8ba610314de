//! The operator API's OpenAPI 3.1 document, generated from the Rust types of the routes'
//! bodies: the route table ([`RouteDoc`], supplied by whoever builds the router) goes in,
//! one JSON document comes out.
//!
//! ```text
//!   RouteDoc { method, path "/api/v1/cards/{id}/unblock", permission, request, response, errors }
//!      │  one schemars generator for every route: definitions → #/components/schemas/
//!      ▼
//!   { openapi: 3.1.0, info, security: [{mutualTLS: []}],
//!     paths: { "/api/v1/cards/{id}/unblock": { post: { parameters: [id], requestBody,
//!              responses: { 200, 401, 403, ... → ErrorBody } } } },
//!     components: { schemas, securitySchemes: { mutualTLS } } }
//! ```
//!
//! This module serves nothing and checks no route: the router and its table live with the
//! handlers; a test there compares the table with the router and `schemas/openapi.json`.

use std::collections::BTreeSet;
use std::path::Path;

use axum::http::{Method, StatusCode};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::error::ErrorBody;
use crate::policy::model::Permission;

/// Where the generator puts referenced schemas (a JSON pointer into the document).
const COMPONENTS: &str = "/components/schemas";

/// One operation of the API, as documented.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// The HTTP method.
    pub method: Method,
    /// The full path, with `{name}` for each path parameter (`/api/v1/cards/{id}`).
    pub path: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// The permission the caller needs (absent: any authenticated operator).
    pub permission: Option<Permission>,
    /// The JSON request body's schema, if the operation takes one
    /// (`|g| g.subschema_for::<T>()`).
    pub request: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// The 200 response's schema.
    pub response: fn(&mut SchemaGenerator) -> Schema,
    /// The error statuses the operation returns (each documented with [`ErrorBody`]).
    pub errors: &'static [u16],
}

/// The schema of `T` through the generator (a `$ref` for named types): the usual value of
/// [`RouteDoc::request`] and [`RouteDoc::response`], as `schema::<T>`.
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The `{name}` parameters of `path`, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .filter(|name| !name.is_empty())
        .collect()
}

/// A stable operation id: the method and the path's words (`post_cards_id_unblock`).
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for word in path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        id.push('_');
        id.push_str(word);
    }
    id
}

fn description(route: &RouteDoc) -> String {
    match route.permission {
        Some(p) => format!(
            "{} Requires the `{p}` permission (a role granting it, within its template scope).",
            route.summary
        ),
        None => format!("{} Any authenticated operator may call it.", route.summary),
    }
}

fn error_description(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let why = match status {
        401 => "no client certificate, or one that identifies no operator",
        403 => "the operator lacks the permission (the message names it)",
        404 => "no such object",
        409 => "the object's state does not allow it",
        422 => "the body or a parameter is not acceptable",
        429 => "too many calls from this identity (see Retry-After)",
        _ => "see the error code and message",
    };
    format!("{reason}: {why}.")
}

/// The OpenAPI 3.1 document of `routes` for Keyfleet `version`.
pub fn document(routes: &[RouteDoc], version: &str) -> Value {
    let mut settings = SchemaSettings::draft2020_12().for_serialize();
    settings.definitions_path = COMPONENTS.into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let error_schema = schema::<ErrorBody>(&mut generator).to_value();

    let mut paths = Map::new();
    for route in routes {
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(operation_id(&route.method, route.path)),
        );
        op.insert("summary".into(), json!(route.summary));
        op.insert("description".into(), json!(description(route)));
        if let Some(p) = route.permission {
            op.insert("x-keyfleet-permission".into(), json!(p.as_str()));
        }
        let params: Vec<Value> = path_parameters(route.path)
            .into_iter()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(request) = route.request {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": request(&mut generator).to_value()}},
                }),
            );
        }
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({
                "description": "OK.",
                "content": {"application/json": {"schema": (route.response)(&mut generator).to_value()}},
            }),
        );
        let statuses: BTreeSet<u16> = route.errors.iter().copied().collect();
        for status in statuses {
            responses.insert(
                status.to_string(),
                json!({
                    "description": error_description(status),
                    "content": {"application/json": {"schema": error_schema.clone()}},
                }),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(
                route.method.as_str().to_ascii_lowercase(),
                Value::Object(op),
            );
        }
    }

    let mut schemas = generator.take_definitions(true);
    for s in schemas.values_mut() {
        if let Some(obj) = s.as_object_mut() {
            obj.remove("$schema");
        }
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Keyfleet operator API",
            "version": version,
            "description": "The operator API of `keyfleet run --api ADDR`. Every call needs a \
                TLS client certificate that identifies an operator (a Keyfleet-issued \
                certificate of an operator template, or an external identity). Errors are \
                `{\"error\": {\"code\", \"message\"}}`.",
        },
        "security": [{"mutualTLS": []}],
        "paths": Value::Object(paths),
        "components": {
            "schemas": Value::Object(schemas),
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A TLS client certificate: an operator's card (a certificate \
                        Keyfleet issued under a template in Settings.spec.operators.templates) \
                        or an external identity (Settings.spec.operators.external).",
                },
            },
        },
    });
    rewrite_refs(&mut doc);
    doc
}

/// Points every `$ref` the generator may still have written to its default `$defs` at the
/// components instead.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#{COMPONENTS}/{name}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Writing the document failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// The file (or its folder) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The document could not be serialised (should not happen).
    #[error("cannot serialise the OpenAPI document: {0}")]
    Serialise(#[source] serde_json::Error),
}

/// Writes `doc` to `path` as pretty JSON with a final newline (as the other schemas in
/// `schemas/`), creating its folder.
pub fn write_openapi(doc: &Value, path: &Path) -> Result<(), OpenApiError> {
    let mut text = serde_json::to_string_pretty(doc).map_err(OpenApiError::Serialise)?;
    text.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenApiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| OpenApiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Whoami {
        operator: String,
        roles: Vec<String>,
        permissions: Vec<Permission>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct UnblockRequest {
        reason: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Outcome {
        card: Card,
        request: Option<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Card {
        id: String,
        holder: Option<String>,
    }

    fn table() -> Vec<RouteDoc> {
        vec![
            RouteDoc {
                method: Method::GET,
                path: "/api/v1/whoami",
                summary: "Who the caller is.",
                permission: None,
                request: None,
                response: schema::<Whoami>,
                errors: &[401, 429],
            },
            RouteDoc {
                method: Method::GET,
                path: "/api/v1/cards/{id}",
                summary: "One card.",
                permission: Some(Permission::ViewInventory),
                request: None,
                response: schema::<Card>,
                errors: &[401, 403, 404, 429],
            },
            RouteDoc {
                method: Method::POST,
                path: "/api/v1/cards/{id}/unblock",
                summary: "Unblock a card's PIN.",
                permission: Some(Permission::Unblock),
                request: Some(schema::<UnblockRequest>),
                response: schema::<Outcome>,
                errors: &[401, 403, 404, 409, 422, 429],
            },
            RouteDoc {
                method: Method::POST,
                path: "/api/v1/requests/{id}/approve",
                summary: "Approve a request.",
                permission: Some(Permission::Approve),
                request: None,
                response: schema::<Outcome>,
                errors: &[401, 403, 404, 409],
            },
        ]
    }

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_the_document() {
        let doc = document(&table(), "1.2.3");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() >= 4, "{all:?}");
        for r in &all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(
                pointer.starts_with("/components/schemas/"),
                "{r} not under components"
            );
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        // Nested types are components too, and the error body is one.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "Whoami",
            "Card",
            "Outcome",
            "UnblockRequest",
            "ErrorBody",
            "Permission",
        ] {
            assert!(schemas.contains_key(name), "{name} missing: {schemas:?}");
        }
        assert!(!doc.to_string().contains("$defs"));
    }

    #[test]
    fn document_structure_is_openapi_3_1_with_mutual_tls() {
        let doc = document(&table(), "1.2.3");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        assert_eq!(doc["security"], json!([{"mutualTLS": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["mutualTLS"]["type"],
            "mutualTLS"
        );
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 4);
        let unblock = &doc["paths"]["/api/v1/cards/{id}/unblock"]["post"];
        assert_eq!(
            unblock["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/UnblockRequest"
        );
        assert_eq!(
            unblock["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Outcome"
        );
        let codes: Vec<&String> = unblock["responses"].as_object().unwrap().keys().collect();
        assert_eq!(codes, ["200", "401", "403", "404", "409", "422", "429"]);
        for code in ["401", "403", "404", "409", "422", "429"] {
            assert_eq!(
                unblock["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{code}"
            );
        }
        let desc = unblock["description"].as_str().unwrap();
        assert!(desc.contains("`unblock` permission"), "{desc}");
        assert!(
            doc["paths"]["/api/v1/whoami"]["get"]["description"]
                .as_str()
                .unwrap()
                .contains("Any authenticated operator")
        );
        assert!(
            doc["paths"]["/api/v1/whoami"]["get"]
                .get("requestBody")
                .is_none()
        );
        assert_eq!(unblock["operationId"], "post_api_v1_cards_id_unblock");
        // The error body's own shape.
        let eb = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(eb["required"], json!(["error"]));
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = document(&table(), "0");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                assert_eq!(p["in"], "path");
                                assert_eq!(p["required"], true);
                                p["name"].as_str().unwrap()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(declared, path_parameters(path), "{method} {path}");
            }
        }
        assert_eq!(path_parameters("/a/{id}/b/{uid}"), ["id", "uid"]);
        assert!(path_parameters("/a/b").is_empty());
    }

    #[test]
    fn write_openapi_writes_pretty_json_with_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/openapi.json");
        let doc = document(&table(), "0");
        write_openapi(&doc, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(
            text.starts_with("{\n  \"openapi\": \"3.1.0\""),
            "{}",
            &text[..40]
        );
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }
}
