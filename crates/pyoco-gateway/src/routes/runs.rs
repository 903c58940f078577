//! Runs: submit (`POST /runs`, `POST /runs/yaml`), read (`GET /runs/{run_id}`) and read the
//! task view (`GET /runs/{run_id}/tasks`). Contract §3.2, §2.1, §2.2, §8.
//!
//! A submission is two JetStream writes: the KV **create** of the PENDING snapshot, then the
//! job publish on `pyoco.work.<tag>`. Both must succeed or the client gets a 503 and the
//! snapshot is deleted again (best effort), so a failed submit leaves no PENDING orphan.

use std::time::{SystemTime, UNIX_EPOCH};

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
pub(crate) use pyoco_wire::is_valid_kv_key;
use pyoco_wire::python::{py_strip, truthy};
use pyoco_wire::{
    parse_workflow_yaml, JobMessage, NewRun, RunSnapshot, WorkerRecord, WorkflowUpload,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::submit_request::RunSubmitRequest;
use super::yaml_form::{body_limit, Upload, YamlForm};
use crate::{
    auth::Caller,
    error::{ApiError, FieldError},
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
        .route("/runs/{run_id}", get(get_run))
        .route("/runs/{run_id}/tasks", get(get_tasks))
}

#[derive(Debug, Serialize)]
struct Submitted {
    run_id: String,
    status: &'static str,
}

/// `POST /runs`: JSON body, resolver path.
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

    // 1. Missing parts: FastAPI's 422 list.
    let (upload, flow_name) = match (form.workflow, form.flow_name) {
        (Some(upload), Some(flow_name)) => (upload, flow_name),
        (upload, flow_name) => {
            return Err(missing_form_parts(upload.is_none(), flow_name.is_none()))
        }
    };
    // 3. Routing tag (2. is auth, not here yet).
    let tag = match form.tag.as_deref().map(py_strip) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => state.default_tag().to_string(),
    };
    pyoco_wire::validate_tag(&tag).map_err(|err| {
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid tag",
            err.to_string(),
        )
    })?;
    // 4. Size.
    let raw = match upload {
        Upload::Fits(raw) => raw,
        Upload::TooLarge { bytes } => {
            return Err(ApiError::with_reason(
                StatusCode::PAYLOAD_TOO_LARGE,
                "workflow too large",
                format!("{bytes} bytes; PYOCO_WORKFLOW_YAML_MAX_BYTES is {max}"),
            ))
        }
    };
    // 5. flow.yaml rules (§8); 6. params = flow.defaults.
    let workflow = parse_workflow_yaml(&raw).map_err(|err| {
        if let Some(detail) = err.detail() {
            tracing::debug!(reason = %err.reason(), "invalid workflow yaml: {detail}");
        }
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            err.reason(),
        )
    })?;
    // 7. flow_name.
    let flow_name = py_strip(&flow_name);
    if flow_name.is_empty() {
        return Err(ApiError::detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing flow_name",
        ));
    }
    // `parse_workflow_yaml` succeeded, so the bytes are UTF-8.
    let text = String::from_utf8(raw).map_err(|_| {
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            "invalid_utf8",
        )
    })?;
    let run = NewRun {
        run_id: new_run_id(),
        flow_name: flow_name.to_string(),
        tag: tag.clone(),
        tags: vec![tag],
        tenant_id: caller.tenant_id,
        api_key_id: caller.api_key_id,
        params: workflow.flow.defaults,
        workflow: Some(WorkflowUpload {
            text,
            digest: workflow.digest,
        }),
    };
    // 8. Submit.
    submit_new_run(&state, run).await
}

/// FastAPI's 422 for absent `workflow` / `flow_name` parts.
fn missing_form_parts(workflow: bool, flow_name: bool) -> ApiError {
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
    let store = state.store()?;
    let now = epoch_now();
    let snapshot = Bytes::from(RunSnapshot::pending(&run, now).to_json());
    let job = JobMessage::for_new_run(&run, now).to_json();
    let NewRun {
        run_id,
        flow_name,
        tag,
        ..
    } = run;

    let revision = match store.runs().create(&run_id, snapshot.clone()).await {
        Ok(revision) => revision,
        Err(err) => {
            tracing::warn!(%run_id, %flow_name, %tag, "submit failed writing the snapshot: {err}");
            if err.unavailable_kind().is_some() {
                // A timed-out write may still have landed; the run id is ours alone.
                forget_snapshot(store, &run_id).await;
            }
            return Err(err.into());
        }
    };
    if let Err(err) = store.publish_job(&tag, Bytes::from(job)).await {
        tracing::warn!(%run_id, %flow_name, %tag, "submit failed publishing the job: {err}");
        forget_snapshot(store, &run_id).await;
        return Err(err.into());
    }
    // Read-your-writes: the submitter's next `GET /runs` lists it, watch or no watch yet.
    state
        .run_index()
        .insert_submitted(&run_id, &snapshot, revision);
    tracing::debug!(%run_id, %flow_name, %tag, "run submitted");
    Ok(PyJson(Submitted {
        run_id,
        status: "PENDING",
    }))
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

#[derive(Debug, Serialize)]
struct RunTasks {
    run_id: Value,
    flow_name: Value,
    status: Value,
    tasks: Value,
    task_records: Value,
    task_records_truncated: bool,
}

/// `GET /runs/{run_id}/tasks`: the task states and records of a run.
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

/// Read a run's snapshot as raw JSON (so keys this version does not know are kept), hidden
/// from other tenants. A value that is not a JSON object is a corrupt record: 500
/// `run record is corrupt` (a server-side data problem, logged with the run id).
pub(crate) async fn load_run(
    store: &Store,
    caller: &Caller,
    run_id: &str,
) -> Result<Map<String, Value>, ApiError> {
    if !is_valid_kv_key(run_id) {
        // No run can be stored under it; NATS would refuse the lookup.
        return Err(ApiError::run_not_found());
    }
    let entry = store
        .runs()
        .get(run_id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    let snapshot = match pyoco_wire::value_from_python_json(&entry.value) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(corrupt_run(run_id, "not a JSON object")),
        Err(err) => return Err(corrupt_run(run_id, err)),
    };
    if !caller.can_see(&snapshot) {
        return Err(ApiError::run_not_found());
    }
    Ok(snapshot)
}

pub(crate) fn corrupt_run(run_id: &str, why: impl std::fmt::Display) -> ApiError {
    let err = StoreError::Corrupt {
        key: run_id.to_string(),
        message: why.to_string(),
    };
    tracing::error!(%run_id, "{err}");
    ApiError::with_reason(
        StatusCode::INTERNAL_SERVER_ERROR,
        "run record is corrupt",
        err.to_string(),
    )
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
                    record.derived_state(epoch_now(), state.worker_disconnect_timeout_sec());
                snapshot.insert("worker_alive".into(), derived.is_active().into());
                snapshot.insert("worker_state".into(), derived.as_str().into());
                snapshot.insert(
                    "worker_heartbeat_at".into(),
                    float_value(record.last_heartbeat_at),
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

/// The `include` query of `GET /runs/{run_id}` (repeatable).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Include {
    records: bool,
}

impl Include {
    pub(crate) fn parse(query: Option<&str>) -> Include {
        let mut include = Include::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key == "include" {
                // `full`/`all` keep everything; only the records are ever removed.
                if matches!(&*value, "records" | "task_records" | "full" | "all") {
                    include.records = true;
                }
            }
        }
        include
    }

    pub(crate) fn apply(self, snapshot: &mut Map<String, Value>) {
        if !self.records {
            snapshot.shift_remove("task_records");
            snapshot.shift_remove("task_records_truncated");
        }
    }
}

/// `str(uuid4())`.
fn new_run_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Seconds since the epoch, like Python's `time.time()`.
pub(crate) fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_keeps_records_only_when_asked() {
        assert_eq!(Include::parse(None), Include { records: false });
        assert_eq!(
            Include::parse(Some("include=x&other=all")),
            Include { records: false }
        );
        for q in [
            "include=records",
            "include=task_records",
            "include=full",
            "a=1&include=all",
        ] {
            assert!(Include::parse(Some(q)).records, "{q}");
        }
        assert!(Include::parse(Some("include=x&include=records")).records);
    }

    #[test]
    fn python_strip_and_truthiness() {
        assert_eq!(py_strip(" \t flow \u{1f}\n"), "flow");
        assert!(!truthy(&Value::from(0.0)));
        assert!(truthy(&Value::from("x")));
        assert!(!truthy(&serde_json::json!({})));
    }

    #[test]
    fn run_ids_outside_the_kv_key_rule_are_rejected() {
        assert!(is_valid_kv_key("0b6e5c1e-2f0a-4d4e-9a8b-1c2d3e4f5a6b"));
        for bad in ["", ".a", "a.", "a b", "a*", "a>", "é"] {
            assert!(!is_valid_kv_key(bad), "{bad:?}");
        }
    }
}
