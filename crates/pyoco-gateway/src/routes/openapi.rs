//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, for client generators and API
//! fuzzers (the `openapi` integration test runs Schemathesis against a live gateway with it).
//!
//! The document is derived from the `#[utoipa::path]` annotation on each handler, in the
//! handler's own module; [`ApiDoc`] lists them and adds what several routes share: the error
//! responses, and the records the gateway answers as stored (run snapshots, worker records),
//! which live in `pyoco-wire` and so are described here. Handlers that read their query or body
//! by hand (to answer FastAPI's exact 422 lists) document their parameters with a doc-only
//! `IntoParams`/`ToSchema` type next to their parser.
//!
//! A route without an annotation is a route the document does not describe: the `openapi`
//! integration test lists every served route and fails when one is missing from the document,
//! or when the document names one the router does not serve.

use std::{borrow::Cow, sync::OnceLock};

use axum::{http::StatusCode, response::Response, routing::get, Router};
use serde_json::json;
use utoipa::{
    openapi::{
        extensions::Extensions,
        schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type},
        ContentBuilder, Ref, RefOr, ResponseBuilder,
    },
    OpenApi, PartialSchema, ToResponse, ToSchema,
};

use super::{cancel, health, list, metrics, runs, watch, wheel_history, wheels, workers};
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
            WatchEvent,
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
        (name = "workers", description = "The worker registry (not authenticated, like 0.5.1)"),
        (name = "wheels", description = "The wheel registry workers install plugin tasks from, and its history (contract §3.2, §7)"),
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

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json",
         body = inline(Object)),
    ),
)]
async fn openapi_json() -> Response {
    json_bytes_response(StatusCode::OK, document().to_vec())
}

// ---------------------------------------------------------------------------------------------
// Shared error responses
// ---------------------------------------------------------------------------------------------

fn error_response(
    name: &'static str,
    description: &str,
) -> (&'static str, RefOr<utoipa::openapi::Response>) {
    (
        name,
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorDetail")))
                    .build(),
            )
            .build()
            .into(),
    )
}

/// 400: the request body could not be read, or the path is not valid UTF-8.
pub(crate) struct BadRequest;

impl<'r> ToResponse<'r> for BadRequest {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "BadRequest",
            "The request could not be read: a body that broke off (`There was an error parsing \
             the body`), or a path that is not UTF-8 once percent-decoded",
        )
    }
}

/// 404 `run not found`.
pub(crate) struct RunNotFound;

impl<'r> ToResponse<'r> for RunNotFound {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "RunNotFound",
            "`run not found`: no run has this id (or it is another tenant's run)",
        )
    }
}

/// 404 `worker not found`.
pub(crate) struct WorkerNotFound;

impl<'r> ToResponse<'r> for WorkerNotFound {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "WorkerNotFound",
            "`worker not found`: no worker is registered under this id",
        )
    }
}

/// 413: the body is over the limit.
pub(crate) struct PayloadTooLarge;

impl<'r> ToResponse<'r> for PayloadTooLarge {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "PayloadTooLarge",
            "The request body is over the limit (`request body too large`, or for \
             `POST /runs/yaml` `workflow too large`: PYOCO_WORKFLOW_YAML_MAX_BYTES)",
        )
    }
}

/// 422: either the gateway's own refusal (`{"detail": "invalid tag", "reason": …}`) or
/// FastAPI's list for a malformed request.
pub(crate) struct Unprocessable;

impl<'r> ToResponse<'r> for Unprocessable {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        let either = OneOfBuilder::new()
            .item(Ref::from_schema_name("ErrorDetail"))
            .item(Ref::from_schema_name("ValidationErrors"))
            .build();
        (
            "Unprocessable",
            ResponseBuilder::new()
                .description(
                    "The request is not acceptable: a malformed query or body gets FastAPI's \
                     list of pydantic errors as `detail`; a rule of the gateway's own gets its \
                     0.5.1 text as `detail` (contract §3.3) and the rule that failed as `reason`",
                )
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Schema::OneOf(either)))
                        .build(),
                )
                .build()
                .into(),
        )
    }
}

/// 500: a stored record that is not a JSON object.
pub(crate) struct CorruptRecord;

impl<'r> ToResponse<'r> for CorruptRecord {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "CorruptRecord",
            "The run's stored snapshot is not a JSON object (`run record is corrupt`; the \
             reason names the run and the problem)",
        )
    }
}

/// 503: NATS is not there (yet, or any more), or the run index is still loading.
pub(crate) struct NatsUnavailable;

impl<'r> ToResponse<'r> for NatsUnavailable {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        error_response(
            "NatsUnavailable",
            "NATS could not serve the request: `nats unavailable: <kind>` (`NotConnected` \
             before the first connection, `Disconnected`, `TimedOut`, `IndexLoading`, …). \
             Retry later; the gateway reconnects by itself",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Records answered as stored (documentation only: the gateway answers them as they are stored)
// ---------------------------------------------------------------------------------------------

/// A run snapshot as stored in KV `pyoco_runs` (contract §2.2). Every stored key is answered,
/// also keys this version does not know, so the object is open and no key is guaranteed:
/// snapshots written by the gateway and the workers have `run_id`, `flow_name`, `status`,
/// `updated_at` and the rest. In a `GET /runs` list without `include=full`, only the summary
/// keys present (`run_id, flow_name, tag, tags, tenant_id, api_key_id, status, updated_at,
/// heartbeat_at, worker_id, error`).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: snapshots are answered as stored
pub(crate) struct RunSnapshot {
    #[schema(required = false, example = "0b6e5c1e-2f0a-4d4e-9a8b-1c2d3e4f5a6b")]
    run_id: String,
    #[schema(required = false)]
    flow_name: String,
    /// The routing tag: the work subject is `pyoco.work.<tag>`.
    #[schema(required = false)]
    tag: String,
    #[schema(required = false)]
    tags: Vec<String>,
    tenant_id: Option<String>,
    api_key_id: Option<String>,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLING` or `CANCELLED` (contract §4.1).
    #[schema(required = false, example = "PENDING")]
    status: String,
    /// The flow's parameters (`flow.defaults` for a flow.yaml run).
    #[schema(required = false, value_type = Object)]
    params: (),
    /// Task name → `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    #[schema(required = false, value_type = HashMap<String, String>)]
    tasks: (),
    /// Task name → record; only with `include=records|task_records|full|all`.
    #[schema(required = false, value_type = HashMap<String, TaskRecord>)]
    task_records: (),
    /// `true` when compaction dropped task records.
    #[schema(required = false)]
    task_records_truncated: bool,
    workflow_yaml_sha256: Option<String>,
    workflow_yaml_bytes: Option<i64>,
    cancel_requested_at: Option<f64>,
    cancel_requested_by: Option<String>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    #[schema(required = false)]
    heartbeat_at: f64,
    /// Seconds since the epoch; the list's sort and cursor key.
    #[schema(required = false)]
    updated_at: f64,
    error: Option<String>,
    /// The worker that took the run (only in the first worker write, contract §2.2).
    #[schema(required = false)]
    worker_id: String,
    /// `GET /runs/{run_id}` only, when the snapshot names a worker: whether its derived
    /// state is `RUNNING` or `IDLE`.
    #[schema(required = false)]
    worker_alive: bool,
    /// `GET /runs/{run_id}` only: the worker's derived state (contract §4.3).
    #[schema(required = false, example = "RUNNING")]
    worker_state: String,
    /// `GET /runs/{run_id}` only.
    worker_heartbeat_at: Option<f64>,
    /// `GET /runs/{run_id}` only.
    #[schema(required = false)]
    worker_hidden: bool,
    /// `GET /runs/{run_id}` only.
    #[schema(required = false)]
    worker_tags: Vec<String>,
}

/// One task's record, as pyoco serialises it (contract §2.3).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct TaskRecord {
    #[schema(required = false)]
    state: String,
    started_at: Option<f64>,
    ended_at: Option<f64>,
    duration_ms: Option<f64>,
    error: Option<String>,
    traceback: Option<String>,
    #[schema(required = false, value_type = Object)]
    inputs: (),
    /// The task's return value (its `repr` when it is not JSON).
    #[schema(required = false, value_type = Value)]
    output: (),
    #[schema(required = false, value_type = Object)]
    artifacts: (),
}

/// The vNext shape of `GET /runs`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the page is written by hand
pub(crate) struct RunPage {
    items: Vec<RunSnapshot>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A `GET /runs` answer: a bare array (0.5.1's compat shape) unless `updated_after`, `cursor`
/// (even empty) or a non-empty `workflow_yaml_sha256` asks for a page.
pub(crate) struct RunList;

impl PartialSchema for RunList {
    fn schema() -> RefOr<Schema> {
        Schema::OneOf(
            OneOfBuilder::new()
                .item(
                    ArrayBuilder::new()
                        .items(Ref::from_schema_name(RunSnapshot::name()))
                        .description(Some("The compat shape (0.5.1)")),
                )
                .item(Ref::from_schema_name(RunPage::name()))
                .build(),
        )
        .into()
    }
}

impl ToSchema for RunList {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RunSnapshot::name().into(), RunSnapshot::schema()));
        RunSnapshot::schemas(schemas);
        schemas.push((RunPage::name().into(), RunPage::schema()));
    }
}

/// A worker registry record, normalised (contract §2.4) and with the **derived** `state`
/// (§4.3). Keys this version does not know are passed through.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: records come from pyoco-wire
pub(crate) struct WorkerRecord {
    worker_id: String,
    /// UUID4 hex, new per worker process.
    instance_id: String,
    #[schema(inline)]
    state: WorkerStateDoc,
    /// Display flag set by `PATCH /workers/{worker_id}`.
    hidden: bool,
    tags: Vec<String>,
    last_seen_at: f64,
    last_heartbeat_at: f64,
    /// Legacy alias of `last_heartbeat_at`.
    heartbeat_at: f64,
    current_run_id: Option<String>,
    last_run_id: Option<String>,
    last_run_status: Option<String>,
    last_run_started_at: Option<f64>,
    last_run_finished_at: Option<f64>,
    stopped_at: Option<f64>,
    /// `graceful_shutdown` after a graceful stop.
    stop_reason: Option<String>,
    updated_at: f64,
    #[schema(required = false)]
    wheel_sync: WheelSync,
}

/// A worker's state as shown: stored (`RUNNING`, `IDLE`, `STOPPED_GRACEFUL`) or derived
/// (`DISCONNECTED`: not seen for PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC).
#[derive(ToSchema)]
#[schema(as = WorkerState)]
#[allow(dead_code, clippy::upper_case_acronyms, non_camel_case_types)] // documentation only
pub(crate) enum WorkerStateDoc {
    RUNNING,
    IDLE,
    STOPPED_GRACEFUL,
    DISCONNECTED,
}

/// The worker's wheel synchronisation status (contract §2.4; lists capped at 50 items).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct WheelSync {
    enabled: bool,
    /// `disabled`, `idle`, `ok` or `error`.
    #[schema(example = "idle")]
    last_result: String,
    last_attempt_at: Option<f64>,
    last_success_at: Option<f64>,
    last_synced_at: Option<f64>,
    last_error: Option<String>,
    selected_count: u64,
    updated_count: u64,
    removed_count: u64,
    skipped_incompatible_count: u64,
    selected_wheels: Vec<String>,
    updated_wheels: Vec<String>,
    removed_wheels: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    skipped_incompatible: (),
    #[schema(value_type = Vec<Object>)]
    installed_wheels: (),
}

// ---------------------------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------------------------

/// The events of `GET /runs/{run_id}/watch`, one schema per event (OpenAPI 3.1's reading of a
/// `text/event-stream` schema): `{"event": …, "data": <JSON text>, "id"?: …}`, the `data` text
/// described with JSON Schema's `contentMediaType`/`contentSchema`.
pub(crate) struct WatchEvent;

impl PartialSchema for WatchEvent {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, payload: &str, with_id: bool| {
            let mut object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .required("event")
                .property("data", json_text(payload))
                .required("data");
            if with_id {
                object = object.property(
                    "id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$"))
                        .description(Some("The KV revision of the snapshot")),
                );
            }
            object.build()
        };
        Schema::OneOf(
            OneOfBuilder::new()
                .item(event("snapshot", "SnapshotEvent", true))
                .item(event("heartbeat", "HeartbeatEvent", false))
                .build(),
        )
        .into()
    }
}

impl ToSchema for WatchEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WatchEvent")
    }
}

/// A string holding JSON that matches the schema named `schema` (JSON Schema 2020-12
/// `contentMediaType` + `contentSchema`; utoipa 5 has a field for the first only, so the second
/// goes through the object's flattened extension map, which serialises keys as given).
fn json_text(schema: &str) -> Schema {
    let mut object = ObjectBuilder::new().schema_type(Type::String).build();
    object.content_media_type = "application/json".into();
    let mut keywords = Extensions::default();
    keywords.insert(
        "contentSchema".into(),
        json!({ "$ref": format!("#/components/schemas/{schema}") }),
    );
    object.extensions = Some(keywords);
    Schema::Object(object)
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
        let doc = doc();
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
