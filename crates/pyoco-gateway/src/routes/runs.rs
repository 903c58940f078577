//! Runs: submit (`POST /runs`, `POST /runs/yaml`), read (`GET /runs/{run_id}`) and read the
//! task view (`GET /runs/{run_id}/tasks`). Contract §3.2, §2.1, §2.2, §8.
//!
//! A submission is two JetStream writes: the KV **create** of the PENDING snapshot, then the
//! job publish on `pyoco.work.<tag>`. Both must succeed or the client gets a 503 and the
//! snapshot is deleted again (best effort), so a failed submit leaves no PENDING orphan.

use axum::{
    body::Bytes,
    extract::{
        multipart::MultipartRejection,
        rejection::{BytesRejection, PathRejection},
        DefaultBodyLimit, Multipart, Path, RawQuery, State,
    },
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Router,
};
use pyoco_store::{Store, StoreError};
use pyoco_wire::{
    python::{self, py_strip, truthy},
    JobMessage, NewRun, RunSnapshot, WorkerRecord, WorkflowUpload,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::components::{
    BadRequest, CorruptRecord, NatsUnavailable, PayloadTooLarge, RunNotFound,
    RunSnapshot as RunSnapshotSchema, TaskRecord, Unprocessable,
};
use super::stored::{load_run, Include, IncludeParams};
use super::submit_request::{RunSubmitBody, RunSubmitRequest};
use super::yaml_form::{body_limit, Upload, YamlForm, YamlUpload};
use crate::{
    auth::Caller,
    error::{log_refusal, ApiError, FieldError},
    json::PyJson,
    AppState,
};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/runs", post(submit))
        .route(
            "/runs/yaml",
            post(submit_yaml).layer(DefaultBodyLimit::max(body_limit(
                state.workflow_yaml_max_bytes(),
            ))),
        )
        .route(
            "/flows/check",
            post(check_yaml).layer(DefaultBodyLimit::max(body_limit(
                state.workflow_yaml_max_bytes(),
            ))),
        )
        .route("/runs/{run_id}", get(get_run))
        .route("/runs/{run_id}/tasks", get(get_tasks))
}

/// The answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Submitted {
    /// The new run's id (`str(uuid4())`).
    #[schema(format = "uuid")]
    run_id: String,
    #[schema(value_type = String, example = "PENDING")]
    status: &'static str,
}

impl Submitted {
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }
}

/// `POST /runs`: JSON body, resolver path.
#[utoipa::path(
    post,
    path = "/runs",
    operation_id = "submit_run",
    tag = "runs",
    summary = "Submit a run of a flow the workers resolve by name",
    description = "Stores the PENDING snapshot, then queues the job on `pyoco.work.<tag>`. \
When either NATS write fails, the snapshot is deleted again and the answer is 503.",
    request_body(content = RunSubmitBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Queued", body = Submitted, links(
            ("get_run" = (operation_id = "get_run",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Read the run")),
            ("get_run_tasks" = (operation_id = "get_run_tasks",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Read the run's tasks")),
            ("watch_run" = (operation_id = "watch_run",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Follow the run")),
            ("cancel_run" = (operation_id = "cancel_run",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Cancel the run")),
        )),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PyJson<Submitted>, ApiError> {
    let req = RunSubmitRequest::from_body(&headers, &body?)?;
    let tag = req.tag.unwrap_or_else(|| state.default_tag().to_string());
    let run = NewRun {
        run_id: new_run_id(),
        flow_name: req.flow_name,
        tag,
        tags: req.tags,
        tenant_id: caller.tenant_id,
        api_key_id: caller.api_key_id,
        params: req.params,
        workflow: None,
    };
    submit_new_run(&state, run).await
}

/// `POST /runs/yaml`: multipart form with a flow.yaml; checks in the 0.5.1 order (§3.2).
#[utoipa::path(
    post,
    path = "/runs/yaml",
    operation_id = "submit_run_yaml",
    tag = "runs",
    summary = "Submit a run of an uploaded flow.yaml",
    description = "Checks, in 0.5.1's order: the parts (422 list), the tag (422 `invalid tag`), \
the size (413 `workflow too large`), the flow.yaml rules (422 `invalid workflow yaml`, the rule \
in `reason`), `flow_name` (422 `missing flow_name`); then stores and queues like `POST /runs`, \
with `params` = the flow's `defaults`.",
    request_body(content = YamlUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Queued", body = Submitted, links(
            ("get_run" = (operation_id = "get_run",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Read the run")),
            ("watch_run" = (operation_id = "watch_run",
                parameters(("run_id" = "$response.body#/run_id")),
                description = "Follow the run")),
        )),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn submit_yaml(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<PyJson<Submitted>, ApiError> {
    let multipart = multipart.unwrap_or_else(|rejection| {
        tracing::debug!("unreadable multipart request, read as an empty form: {rejection}");
        None
    });
    let max = state.workflow_yaml_max_bytes();
    let form = YamlForm::read(multipart, max).await?;
    form.check_text()?;

    // 1. Missing parts: FastAPI's 422 list.
    let (upload, flow_name) = match (form.workflow, form.flow_name) {
        (Some(upload), Some(flow_name)) => (upload, flow_name),
        (upload, flow_name) => {
            return Err(missing_form_parts(upload.is_none(), flow_name.is_none()))
        }
    };
    // 3. Routing tag (2. is auth, not here yet).
    let tag = form_tag(&state, form.tag.as_deref())?;
    // 4. Size; 5. flow.yaml rules (§8) and the allowed modules.
    let (raw, workflow) = checked_workflow(&state, upload).await?;
    // 7. flow_name.
    let flow_name = py_strip(&flow_name);
    if flow_name.is_empty() {
        log_refusal!("0002", "submit yaml failed: missing flow_name", tag = %tag);
        return Err(
            ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, "missing flow_name").logged(),
        );
    }
    // `parse_workflow_yaml` succeeded, so the bytes are UTF-8.
    let text = String::from_utf8(raw).map_err(|_| {
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            "invalid_utf8",
        )
    })?;
    // Ours: params given with the form replace the defaults' keys.
    let mut params = workflow.flow.defaults;
    if let Some(given) = form.params.as_deref() {
        params.extend(form_params(given)?);
    }
    let keep = keep_workflow(&state, &workflow.digest.sha256, &text);
    let run = NewRun {
        run_id: new_run_id(),
        flow_name: flow_name.to_string(),
        tag: tag.clone(),
        tags: vec![tag],
        tenant_id: caller.tenant_id,
        api_key_id: caller.api_key_id,
        params,
        workflow: Some(WorkflowUpload {
            text,
            digest: workflow.digest,
        }),
    };
    // 8. Submit (and keep the flow.yaml meanwhile).
    let (submitted, ()) = tokio::join!(submit_new_run(&state, run), keep);
    submitted
}

/// Steps 4 and 5 of `POST /runs/yaml` (also all of `POST /flows/check`): the size limit, the
/// flow.yaml rules (§8; parsed on a blocking thread, a few at a time, so a hard document never
/// holds up the other requests) and, not in 0.5.1, `PYOCO_TASK_MODULES`. Returns the bytes and
/// the parsed flow.
pub(super) async fn checked_workflow(
    state: &AppState,
    upload: Upload,
) -> Result<(Vec<u8>, pyoco_wire::Workflow), ApiError> {
    let max = state.workflow_yaml_max_bytes();
    let raw = match upload {
        Upload::Fits(raw) => raw,
        Upload::TooLarge { bytes } => {
            log_refusal!(
                "0016",
                "submit yaml failed: workflow too large",
                size_bytes = bytes,
                max_bytes = max
            );
            return Err(ApiError::with_reason(
                StatusCode::PAYLOAD_TOO_LARGE,
                "workflow too large",
                format!("{bytes} bytes; PYOCO_WORKFLOW_YAML_MAX_BYTES is {max}"),
            )
            .logged());
        }
    };
    let (raw, parsed) = state.parse_workflow_yaml(raw).await?;
    let workflow = parsed.map_err(|err| {
        // 0.5.1's reason, and for YAML errors the parser's message (ours).
        let reason = match err.detail() {
            Some(detail) => format!("{}: {detail}", err.reason()),
            None => err.reason(),
        };
        log_refusal!("0002", "submit yaml failed: invalid workflow yaml", reason = %reason);
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            reason,
        )
        .logged()
    })?;
    if let Some((task, module)) = workflow.disallowed_module(state.task_modules()) {
        let reason = format!(
            "task_module_not_allowed: task {task} calls module {module}; this gateway's \
             PYOCO_TASK_MODULES allows only {}",
            state.task_modules().join(", ")
        );
        log_refusal!("0002", "submit yaml failed: invalid workflow yaml", reason = %reason);
        return Err(ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            reason,
        )
        .logged());
    }
    Ok((raw, workflow))
}

/// What `POST /flows/check` answers: the flow.yaml as the gateway reads it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckedFlow {
    /// Always 1.
    version: i64,
    /// `flow.graph`.
    graph: String,
    /// `flow.defaults`: a run's params, unless the submit's `params` part replaces some keys.
    #[schema(value_type = Object)]
    defaults: Map<String, Value>,
    /// Each task (document order) with its `callable` (null when discovered by name).
    #[schema(value_type = Object, example = json!({"hello": {"callable": "my_tasks:hello"}}))]
    tasks: Map<String, Value>,
    /// What a run of it would store as `workflow_yaml_sha256`.
    workflow_yaml_sha256: String,
    workflow_yaml_bytes: u64,
}

/// `POST /flows/check` (ours): read a flow.yaml exactly as `POST /runs/yaml` would, without
/// running it.
#[utoipa::path(
    post,
    path = "/flows/check",
    operation_id = "check_flow_yaml",
    tag = "runs",
    summary = "Check a flow.yaml without running it (ours)",
    description = "The `workflow` part (other parts are ignored) goes through the same checks as \
`POST /runs/yaml`: the size (413 `workflow too large`), the flow.yaml rules and the allowed \
modules (422 `invalid workflow yaml`, the rule in `reason`). Answers what a run would get: \
its `defaults` (the params), its tasks and its digest. Nothing is stored.",
    request_body(content = YamlUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The flow as read", body = CheckedFlow),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
    ),
)]
async fn check_yaml(
    State(state): State<AppState>,
    _caller: Caller,
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<PyJson<CheckedFlow>, ApiError> {
    let multipart = multipart.unwrap_or_else(|rejection| {
        tracing::debug!("unreadable multipart request, read as an empty form: {rejection}");
        None
    });
    let form = YamlForm::read(multipart, state.workflow_yaml_max_bytes()).await?;
    form.check_text()?;
    let Some(upload) = form.workflow else {
        return Err(missing_form_parts(true, false));
    };
    let (_, workflow) = checked_workflow(&state, upload).await?;
    let tasks = workflow
        .tasks
        .iter()
        .map(|(name, task)| (name.clone(), serde_json::json!({"callable": task.callable})))
        .collect();
    Ok(PyJson(CheckedFlow {
        version: workflow.version,
        graph: workflow.flow.graph,
        defaults: workflow.flow.defaults,
        tasks,
        workflow_yaml_sha256: workflow.digest.sha256,
        workflow_yaml_bytes: workflow.digest.bytes,
    }))
}

/// Keep a submitted flow.yaml by its digest, so a dead letter of the run can be replayed
/// (`PYOCO_WORKFLOW_KEEP_SEC`; ours). Runs beside the submit's own writes and is best effort: a
/// submit never fails because of it. Every submit rewrites it, which restarts its time to live.
fn keep_workflow(
    state: &AppState,
    sha256: &str,
    text: &str,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let store = state
        .store()
        .ok()
        .filter(|s| s.keeps_workflows() && text.len() <= s.max_record_bytes())
        .cloned();
    let key = sha256.to_string();
    let value = Bytes::copy_from_slice(text.as_bytes());
    async move {
        let Some(store) = store else {
            return;
        };
        if let Err(err) = store.workflows().put(&key, value).await {
            tracing::warn!(sha256 = %key, "keeping the flow.yaml for replays failed: {err}");
        }
    }
}

/// The `params` part of `POST /runs/yaml`: a JSON object, else 422 `invalid params`. (At most
/// the form overhead, 64 KiB: parsed in place.)
fn form_params(text: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    let invalid = |reason: String| {
        ApiError::with_reason(StatusCode::UNPROCESSABLE_ENTITY, "invalid params", reason)
    };
    match pyoco_wire::from_python_json::<Value>(text.as_bytes()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the params part must be a JSON object".into())),
        Err(err) => Err(invalid(format!("the params part is not JSON: {err}"))),
    }
}

/// FastAPI's 422 for absent `workflow` / `flow_name` parts.
pub(super) fn missing_form_parts(workflow: bool, flow_name: bool) -> ApiError {
    let mut errors = Vec::new();
    for (absent, name) in [(workflow, "workflow"), (flow_name, "flow_name")] {
        if absent {
            errors.push(FieldError {
                kind: "missing",
                loc: vec!["body".into(), name.into()],
                msg: "Field required".into(),
                input: Value::Null,
                ctx: None,
            });
        }
    }
    ApiError::Validation(errors)
}

/// KV create of the PENDING snapshot, then the job publish; when either fails on NATS, the
/// snapshot is deleted again (best effort, like 0.5.1) and the client gets the 503.
async fn submit_new_run(state: &AppState, run: NewRun) -> Result<PyJson<Submitted>, ApiError> {
    submit_new_run_with(state, run, Map::new()).await
}

/// [`submit_new_run`], with `extra` keys in the PENDING snapshot (e.g. `replayed_from`).
pub(super) async fn submit_new_run_with(
    state: &AppState,
    run: NewRun,
    extra: Map<String, Value>,
) -> Result<PyJson<Submitted>, ApiError> {
    submit_with_extras(state, run, extra, Map::new(), false).await
}

/// A run a schedule dispatches (pyoco-server 0.7): the job and every snapshot carry
/// `schedule_id`, and (ours) `scheduled_at`, the slot it was dispatched for (epoch seconds).
/// Same writes as `POST /runs/yaml`.
pub(crate) async fn submit_scheduled_run(
    state: &AppState,
    run: NewRun,
    schedule_id: &str,
    slot: f64,
) -> Result<Submitted, ApiError> {
    let mut extra = Map::new();
    extra.insert("schedule_id".into(), Value::String(schedule_id.to_string()));
    extra.insert("scheduled_at".into(), python::float_value(slot));
    let PyJson(submitted) = submit_with_extras(state, run, extra.clone(), extra, true).await?;
    Ok(submitted)
}

/// [`submit_new_run`] with `extra` keys in the PENDING snapshot and `job_extra` in the job.
/// `slot_run`: the run id is a schedule slot's (the same on every gateway), so finding it
/// taken means the slot was dispatched already: the job is published again, deduplicated by
/// the stream, instead of a 409.
async fn submit_with_extras(
    state: &AppState,
    run: NewRun,
    extra: Map<String, Value>,
    job_extra: Map<String, Value>,
    slot_run: bool,
) -> Result<PyJson<Submitted>, ApiError> {
    if run.flow_name.len() > pyoco_wire::MAX_FLOW_NAME_BYTES {
        return Err(ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid flow_name",
            format!(
                "flow_name is {} bytes; the limit is {} bytes",
                run.flow_name.len(),
                pyoco_wire::MAX_FLOW_NAME_BYTES
            ),
        ));
    }
    let store = state.store()?;
    let now = python::time();
    let mut pending = RunSnapshot::pending(&run, now);
    pending.extra = extra;
    let snapshot = Bytes::from(pending.to_json());
    let mut job = JobMessage::for_new_run(&run, now);
    job.extra = job_extra;
    let job = job.to_json();
    check_fits_a_message(store, snapshot.len().max(job.len()))?;
    let NewRun {
        run_id,
        flow_name,
        tag,
        ..
    } = run;

    let revision = match store.runs().create_new(&run_id, snapshot.clone()).await {
        Ok(revision) => Some(revision),
        // A schedule slot's run id is the same on every gateway: another gateway dispatched
        // this slot and may have died before it published the job or advanced the schedule.
        // Publish again (the stream keeps one job per run id) and report the run.
        Err(StoreError::Conflict(_)) if slot_run => None,
        Err(err) => {
            tracing::warn!(%run_id, %flow_name, %tag, "submit failed writing the snapshot: {err}");
            if err.unavailable_kind().is_some() {
                // A timed-out write may still have landed; the run id is ours alone.
                forget_snapshot(store, &run_id).await;
            }
            return Err(err.into());
        }
    };
    if let Err(err) = store.publish_new_job(&tag, &run_id, Bytes::from(job)).await {
        tracing::warn!(%run_id, %flow_name, %tag, "submit failed publishing the job: {err}");
        if revision.is_some() {
            forget_snapshot(store, &run_id).await;
        }
        return Err(err.into());
    }
    // Read-your-writes: the submitter's next `GET /runs` lists it, watch or no watch yet.
    if let Some(revision) = revision {
        state
            .run_index()
            .insert_submitted(&run_id, &snapshot, revision);
    }
    tracing::debug!(%run_id, %flow_name, %tag, "run submitted");
    Ok(PyJson(Submitted {
        run_id,
        status: "PENDING",
    }))
}

/// 413 when the run's snapshot or job (`bytes`) cannot be one NATS message: the write would
/// fail on NATS (a 503 that no retry fixes) although it is the request that is too large.
fn check_fits_a_message(store: &Store, bytes: usize) -> Result<(), ApiError> {
    let max_payload = store.client().max_payload();
    if bytes <= store.max_record_bytes() {
        return Ok(());
    }
    Err(ApiError::with_reason(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large",
        format!(
            "the run's snapshot or job would be {bytes} bytes; the NATS server takes messages \
             of at most {max_payload} bytes (max_payload)"
        ),
    ))
}

/// Best-effort delete of the snapshot of a failed submit. Connected: now, so the
/// client's 503 means "nothing was stored". Disconnected: in the background, where the
/// client's reconnect buffer may still deliver it.
async fn forget_snapshot(store: &Store, run_id: &str) {
    if store.check_connected().is_ok() {
        if let Err(err) = store.runs().delete(run_id).await {
            tracing::warn!(%run_id, "could not delete the snapshot of a failed submit: {err}");
        }
    } else {
        let store = store.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            if let Err(err) = store.runs().delete(&run_id).await {
                tracing::warn!(%run_id, "could not delete the snapshot of a failed submit: {err}");
            }
        });
    }
}

/// `GET /runs/{run_id}?include=…`: the stored snapshot, every stored key kept, with worker
/// liveness when the snapshot names a worker; `task_records` only on request.
#[utoipa::path(
    get,
    path = "/runs/{run_id}",
    operation_id = "get_run",
    tag = "runs",
    summary = "Read a run",
    description = "The stored snapshot with every stored key, without `task_records` unless \
asked for, plus the worker's liveness (`worker_alive`, `worker_state`, …) when the snapshot \
names a worker.",
    params(("run_id" = String, Path, description = "The run's id"), IncludeParams),
    responses(
        (status = 200, description = "The run's snapshot", body = RunSnapshotSchema),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<PyJson<Map<String, Value>>, ApiError> {
    let Path(run_id) = run_id?;
    let include = Include::parse(query.as_deref());
    let store = state.store()?;
    let mut snapshot = load_run(store, &caller, &run_id).await?;
    if let Some(worker_id) = snapshot
        .get("worker_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    {
        let worker_id = worker_id.to_string();
        add_worker_liveness(&state, store, &mut snapshot, &worker_id).await;
    }
    include.apply(&mut snapshot);
    Ok(PyJson(snapshot))
}

/// A run's task view; the first three are the snapshot's values (`null` when absent).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunTasks {
    #[schema(value_type = Option<String>, required = true)]
    run_id: Value,
    #[schema(value_type = Option<String>, required = true)]
    flow_name: Value,
    #[schema(value_type = Option<String>, required = true, example = "RUNNING")]
    status: Value,
    /// Task name → state (`{}` when there are none yet).
    #[schema(value_type = HashMap<String, String>)]
    tasks: Value,
    /// Task name → record (`{}` when there are none).
    #[schema(value_type = HashMap<String, TaskRecord>)]
    task_records: Value,
    task_records_truncated: bool,
}

/// `GET /runs/{run_id}/tasks`: the task states and records of a run.
#[utoipa::path(
    get,
    path = "/runs/{run_id}/tasks",
    operation_id = "get_run_tasks",
    tag = "runs",
    summary = "Read a run's tasks and task records",
    params(("run_id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's tasks", body = RunTasks),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn get_tasks(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<RunTasks>, ApiError> {
    let Path(run_id) = run_id?;
    let store = state.store()?;
    let mut snapshot = load_run(store, &caller, &run_id).await?;
    let mut take = |key: &str| snapshot.remove(key).unwrap_or(Value::Null);
    let or_empty_object = |v: Value| {
        if truthy(&v) {
            v
        } else {
            Value::Object(Map::new())
        }
    };
    Ok(PyJson(RunTasks {
        run_id: take("run_id"),
        flow_name: take("flow_name"),
        status: take("status"),
        tasks: or_empty_object(take("tasks")),
        task_records: or_empty_object(take("task_records")),
        task_records_truncated: truthy(&take("task_records_truncated")),
    }))
}

/// Add `worker_alive`, `worker_state`, `worker_heartbeat_at`, `worker_hidden`, `worker_tags`
/// from the worker registry (§3.2). A missing record reads as a disconnected worker; a NATS
/// error or an unreadable record leaves the snapshot as it is.
async fn add_worker_liveness(
    state: &AppState,
    store: &Store,
    snapshot: &mut Map<String, Value>,
    worker_id: &str,
) {
    match store.workers().get(worker_id).await {
        Ok(Some(entry)) => match WorkerRecord::from_json(&entry.value, worker_id) {
            Ok(record) => {
                let derived =
                    record.derived_state(python::time(), state.worker_disconnect_timeout_sec());
                snapshot.insert("worker_alive".into(), derived.is_active().into());
                snapshot.insert("worker_state".into(), derived.as_str().into());
                snapshot.insert(
                    "worker_heartbeat_at".into(),
                    python::float_value(record.last_heartbeat_at),
                );
                snapshot.insert("worker_hidden".into(), record.hidden.into());
                snapshot.insert("worker_tags".into(), record.tags.into());
            }
            Err(err) => tracing::warn!(%worker_id, "unreadable worker record: {err}"),
        },
        Ok(None) => {
            snapshot.insert("worker_alive".into(), false.into());
            snapshot.insert("worker_state".into(), "DISCONNECTED".into());
            snapshot.insert("worker_heartbeat_at".into(), Value::Null);
        }
        Err(err) => tracing::debug!(%worker_id, "worker liveness skipped: {err}"),
    }
}

/// `str(uuid4())`.
pub(crate) fn new_run_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// The routing tag of a flow.yaml form: its `tag` part (whitespace stripped as Python does),
/// else the default tag; 422 `invalid tag` when it breaks the tag rules.
pub(super) fn form_tag(state: &AppState, tag: Option<&str>) -> Result<String, ApiError> {
    let tag = match tag.map(py_strip) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => state.default_tag().to_string(),
    };
    pyoco_wire::validate_tag(&tag).map_err(|err| {
        log_refusal!("0002", "submit yaml failed: invalid tag", tag = %tag, reason = %err);
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid tag",
            err.to_string(),
        )
        .logged()
    })?;
    Ok(tag)
}
