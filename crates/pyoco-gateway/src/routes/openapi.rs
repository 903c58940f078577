//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, for client generators and API
//! fuzzers (the `openapi` integration test runs Schemathesis against a live gateway with it).
//!
//! The document is derived from the `#[utoipa::path]` annotation on each handler, in the
//! handler's own module; [`ApiDoc`] lists them, with the components several routes share
//! (error responses, records answered as stored: `components.rs`). Handlers that read their
//! query or body by hand (to answer FastAPI's exact 422 lists) document their parameters with a
//! doc-only `IntoParams`/`ToSchema` type next to their parser.
//!
//! Only this module names the handlers, and no handler names this module (what they share is
//! in `components.rs`), so assembling the document adds no import cycle.
//!
//! A route without an annotation is a route the document does not describe: the `openapi`
//! integration test lists every served route and fails when one is missing from the document,
//! or when the document names one the router does not serve.

use std::sync::OnceLock;

use axum::{extract::State, http::StatusCode, response::Response, routing::get, Router};
use utoipa::OpenApi;

use super::components::{
    BadRequest, CorruptRecord, NatsUnavailable, PayloadTooLarge, RunNotFound, RunPage, RunSnapshot,
    TaskRecord, Unprocessable, WheelSync, WorkerNotFound, WorkerRecord, WorkerStateDoc,
};
use super::{
    cancel, dlq, health, list, logs, metrics, runs, schedules, watch, wheel_history, wheels,
    workers,
};
use crate::{
    error::{json_bytes_response, DetailBody, FieldError, Loc, ValidationBody},
    AppState,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// The document, as served.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pyoco-server (HTTP gateway)",
        description = "Submit, read, watch and cancel pyoco workflow runs, and inspect the workers \
that run them, through NATS JetStream. Wire-compatible with pyoco-server 0.5.1: the same \
endpoints, bodies and error texts (`{\"detail\": …}`); deliberate differences are listed in \
the gateway crate's DIFFERENCES.md. Every error body is JSON with a `detail`: a string \
(plus `reason` where this gateway says more than 0.5.1 did), or FastAPI's list of pydantic \
errors for a malformed request. NATS-backed endpoints answer 503 `nats unavailable: <kind>` \
while NATS is away.",
    ),
    paths(
        health::health,
        openapi_json,
        metrics::metrics,
        workers::list_workers,
        workers::patch_worker,
        runs::submit,
        runs::submit_yaml,
        runs::check_yaml,
        list::list_runs,
        runs::get_run,
        runs::get_tasks,
        watch::watch_run,
        cancel::cancel_run,
        wheels::list_wheels,
        wheels::upload_wheel,
        wheel_history::wheel_history,
        wheels::download_wheel,
        wheels::delete_wheel,
        dlq::list_dlq,
        dlq::get_dlq,
        dlq::delete_dlq,
        dlq::replay_dlq,
        logs::run_logs,
        logs::watch_logs,
        schedules::create_schedule,
        schedules::list_schedules,
        schedules::schedule_runs,
        schedules::patch_schedule,
        schedules::delete_schedule,
    ),
    components(
        schemas(
            DetailBody,
            ValidationBody,
            FieldError,
            Loc,
            RunSnapshot,
            TaskRecord,
            RunPage,
            WorkerRecord,
            WheelSync,
            WorkerStateDoc,
            workers::WorkersScope,
            watch::WatchEvent,
            watch::SnapshotEvent,
            watch::HeartbeatEvent,
        ),
        responses(
            BadRequest,
            RunNotFound,
            WorkerNotFound,
            PayloadTooLarge,
            Unprocessable,
            CorruptRecord,
            NatsUnavailable,
            wheels::WheelNotFound,
            wheels::WheelConflict,
            wheels::WheelStagingFailed,
        ),
    ),
    tags(
        (name = "runs", description = "Submit, list, read, watch and cancel runs (contract §3.2)"),
        (name = "workers", description = "The worker registry (behind the API key when auth is on; 0.5.1 left it open)"),
        (name = "wheels", description = "The wheel registry workers install plugin tasks from, and its history (contract §3.2, §7)"),
        (name = "dlq", description = "The dead-letter queue: list, read and delete entries (ours; 0.5.1 only writes it)"),
        (name = "schedules", description = "Runs of an uploaded flow.yaml at a time, every N seconds or on a cron (pyoco-server 0.7; cron, pause and catch-up are ours)"),
        (name = "service", description = "Health, metrics and this document"),
    ),
)]
pub(crate) struct ApiDoc;

/// The document as JSON, built once.
pub(crate) fn document() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_vec(&ApiDoc::openapi()).expect("the OpenAPI document serializes")
    })
}

/// The document of a gateway with `PYOCO_HTTP_AUTH_MODE=api_key` and the key in `header`: the
/// `ApiKey` security scheme, required by every operation but `/health` and `/openapi.json`,
/// each of which may then also answer 401 `api key required` and 403 `invalid api key`.
pub(crate) fn secured_document(header: &str) -> Vec<u8> {
    static JSON: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    let build = || {
        let mut doc: serde_json::Value =
            serde_json::from_slice(document()).expect("the document is JSON");
        doc["components"]["securitySchemes"] = serde_json::json!({
            "ApiKey": {
                "type": "apiKey",
                "in": "header",
                "name": header,
                "description": "`pyoco_<key_id>.<secret>`, made by `pyoco-server-admin api-key create --tenant T`",
            }
        });
        let detail = |text: &str| {
            serde_json::json!({
                "description": format!("`{text}`"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
            })
        };
        if let Some(paths) = doc["paths"].as_object_mut() {
            for (path, item) in paths.iter_mut() {
                if path == "/health" || path == "/openapi.json" {
                    continue;
                }
                for operation in item
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|i| i.values_mut())
                {
                    operation["security"] = serde_json::json!([{"ApiKey": []}]);
                    operation["responses"]["401"] = detail("api key required");
                    operation["responses"]["403"] = detail("invalid api key");
                }
            }
        }
        (
            header.to_string(),
            serde_json::to_vec(&doc).expect("the document serializes"),
        )
    };
    match JSON.get_or_init(build) {
        (built_for, json) if built_for == header => json.clone(),
        _ => build().1,
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1); with auth on, the `ApiKey` \
security scheme is required by every operation but `/health` and this one", content_type = "application/json",
         body = inline(Object)),
    ),
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = match state.auth().header_name() {
        Some(header) => secured_document(header),
        None => document().to_vec(),
    };
    json_bytes_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_slice(document()).unwrap()
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let secured: Value = serde_json::from_slice(&secured_document("X-API-Key")).unwrap();
        for doc in [doc(), secured] {
            let mut found = Vec::new();
            refs(&doc, &mut found);
            assert!(!found.is_empty());
            for r in found {
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("external ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
            }
        }
    }

    #[test]
    fn with_auth_on_every_operation_but_the_public_ones_requires_the_key() {
        let secured: Value = serde_json::from_slice(&secured_document("X-Pyoco-Token")).unwrap();
        assert_eq!(
            secured["components"]["securitySchemes"]["ApiKey"]["name"],
            "X-Pyoco-Token"
        );
        let mut count = 0;
        for (path, item) in secured["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = path == "/health" || path == "/openapi.json";
                assert_eq!(op["security"].is_null(), public, "{method} {path}");
                assert_eq!(op["responses"]["401"].is_null(), public, "{method} {path}");
                count += usize::from(!public);
            }
        }
        assert!(count >= 13, "{count}");
        assert!(
            doc()["components"]["securitySchemes"].is_null(),
            "auth off: no scheme"
        );
    }

    #[test]
    fn every_link_names_an_operation_and_its_parameters() {
        let doc = doc();
        let mut operations = std::collections::HashMap::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(id) = op["operationId"].as_str() {
                    let params: Vec<&str> = op["parameters"]
                        .as_array()
                        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                        .unwrap_or_default();
                    assert!(operations.insert(id, params).is_none(), "{id} twice");
                }
            }
        }
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let Some(responses) = op["responses"].as_object() else {
                    continue;
                };
                for response in responses.values() {
                    let Some(map) = response["links"].as_object() else {
                        continue;
                    };
                    for (name, link) in map {
                        links += 1;
                        let target = link["operationId"]
                            .as_str()
                            .unwrap_or_else(|| panic!("link {name} has no operationId: {link}"));
                        let params = operations
                            .get(target)
                            .unwrap_or_else(|| panic!("link {name}: no operation {target}"));
                        for param in link["parameters"].as_object().unwrap().keys() {
                            assert!(params.contains(&param.as_str()), "{name}: {param}");
                        }
                    }
                }
            }
        }
        assert!(links > 0);
    }
}
