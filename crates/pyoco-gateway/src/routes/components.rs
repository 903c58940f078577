//! The OpenAPI components several routes name in their `#[utoipa::path]` annotations: the
//! error responses they share (`BadRequest`, `NatsUnavailable`, …) and the records the gateway
//! answers as they are stored (run snapshots, task and worker records).
//!
//! Why a module of its own: every handler module names these, and [`super::openapi`] names
//! every handler to assemble the document. Were they defined in `openapi.rs`, each handler
//! would import the module that imports it; here they depend on nothing of the routes, so the
//! handlers and the document both build on them and nothing goes in a circle. A response or
//! schema only one route uses stays in that route's module (`wheels::WheelNotFound`,
//! `watch::WatchEvent`).
//!
//! The records live in `pyoco-wire` without OpenAPI derives, and the gateway answers them as
//! stored (every stored key, also keys this version does not know), so they are described
//! here by documentation-only types: nothing constructs them.

use utoipa::{
    openapi::{
        schema::{ArrayBuilder, OneOfBuilder, Schema},
        ContentBuilder, Ref, RefOr, ResponseBuilder,
    },
    PartialSchema, ToResponse, ToSchema,
};

// ---------------------------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------------------------

/// An error response named `name` whose body is `{"detail": …}` (the `ErrorDetail` schema).
pub(crate) fn error_response(
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
