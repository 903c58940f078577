//! Schedules (pyoco-server 0.7, contract §15.1): `POST /schedules/yaml`, `GET /schedules`,
//! `GET /schedules/{id}/runs`, `DELETE /schedules/{id}`, and ours: `PATCH /schedules/{id}`
//! (pause, resume), `cron` + `timezone`, `catch_up`.
//!
//! Records are 0.7's (see `crate::schedule`), written to the `pyoco_yaml_schedules` bucket
//! that a 0.7 gateway may share. Lists are answered from the dispatcher's memory of the bucket
//! (one KV watch), which also counts the schedules per tenant for the cap.

use axum::{
    body::Bytes,
    extract::{
        multipart::MultipartRejection,
        rejection::{BytesRejection, PathRejection},
        DefaultBodyLimit, Multipart, Path, RawQuery, State,
    },
    http::StatusCode,
    response::Response,
    routing::{get, patch, post},
    Router,
};
use pyoco_wire::python::{self, py_strip};
use serde_json::{json, Map, Value};
use std::time::Duration;
use utoipa::ToSchema;

use super::components::{NatsUnavailable, PayloadTooLarge, Unprocessable};
use super::yaml_form::{body_limit, YamlForm};
use crate::{
    auth::Caller,
    error::ApiError,
    json::PyJson,
    schedule::{slots, CatchUp, CronSpec, Kind, Schedule, STATUS_ACTIVE, STATUS_COMPLETED},
    AppState,
};

/// Schedules one tenant may hold (with auth off: all of them together).
pub(crate) const MAX_SCHEDULES_PER_TENANT: usize = 1000;
/// `interval_seconds` bounds (ours; 0.7 takes any positive number).
pub(crate) const MIN_INTERVAL_SECONDS: f64 = 1.0;
pub(crate) const MAX_INTERVAL_SECONDS: f64 = 366.0 * 86_400.0;
/// How far ahead `run_at` and `start_at` may be (ours): ten years.
pub(crate) const MAX_AHEAD_SECONDS: f64 = 10.0 * 366.0 * 86_400.0;
/// The longest `PATCH /schedules/{id}` body.
const MAX_PATCH_BYTES: usize = 1024;
/// How long a request waits for the schedules to be loaded before answering 503.
const READY_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/schedules/yaml",
            post(create_schedule).layer(DefaultBodyLimit::max(body_limit(
                state.workflow_yaml_max_bytes(),
            ))),
        )
        .route("/schedules", get(list_schedules))
        .route("/schedules/{schedule_id}/runs", get(schedule_runs))
        .route(
            "/schedules/{schedule_id}",
            patch(patch_schedule)
                .delete(delete_schedule)
                .layer(DefaultBodyLimit::max(MAX_PATCH_BYTES)),
        )
}

// The `POST /schedules/yaml` form as `/openapi.json` describes it.
/// A flow.yaml to run on a schedule: exactly one of `run_at`, `interval_seconds` or `cron`.
#[derive(ToSchema)]
#[schema(as = ScheduleYamlForm)]
#[allow(dead_code)] // documentation only
pub(crate) struct ScheduleUpload {
    /// The flow.yaml file (contract §8), at most PYOCO_WORKFLOW_YAML_MAX_BYTES.
    #[schema(value_type = String, format = Binary)]
    workflow: (),
    /// The runs' flow name (stripped; must not be blank; at most 1024 bytes).
    #[schema(min_length = 1, example = "main")]
    flow_name: String,
    /// The routing tag (empty: PYOCO_DEFAULT_TAG).
    #[schema(nullable = false, max_length = 64, pattern = "^[A-Za-z0-9_-]*$")]
    tag: Option<String>,
    /// One run at this instant: ISO 8601 with an offset (`Z` allowed), in the future, at most
    /// ten years ahead.
    #[schema(nullable = false, example = "2030-01-01T09:00:00+00:00")]
    run_at: Option<String>,
    /// A run every this many seconds (1 to 31622400).
    #[schema(nullable = false, example = "60")]
    interval_seconds: Option<String>,
    /// With `interval_seconds`: the grid's first slot (ISO 8601 with an offset; default: now +
    /// interval).
    #[schema(nullable = false)]
    start_at: Option<String>,
    /// Ours: a cron expression, 5 fields or 6 with seconds first (at most 256 bytes).
    #[schema(nullable = false, example = "0 9 * * 1-5")]
    cron: Option<String>,
    /// Ours, with `cron`: the IANA time zone it is read in (default UTC).
    #[schema(nullable = false, example = "Europe/Berlin")]
    timezone: Option<String>,
    /// Ours, for interval and cron schedules: `none` (default: slots missed while no gateway
    /// ran are skipped) or `one` (one run for them at once, then on the grid).
    #[schema(nullable = false, example = "none")]
    catch_up: Option<String>,
}

/// A schedule as the API shows it: 0.7's keys, then ours.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct ScheduleView {
    #[schema(format = "uuid")]
    schedule_id: String,
    flow_name: String,
    tag: String,
    /// `ACTIVE`, `COMPLETED` (a one-shot that ran) or `PAUSED` (ours).
    #[schema(example = "ACTIVE")]
    status: String,
    /// `once`, `interval` or `cron` (ours).
    #[schema(example = "interval")]
    schedule_type: String,
    workflow_yaml_sha256: Option<String>,
    workflow_yaml_bytes: u64,
    tenant_id: Option<String>,
    api_key_id: Option<String>,
    created_at: f64,
    updated_at: f64,
    run_at: Option<f64>,
    /// When it runs next (epoch seconds); null when completed or paused.
    next_run_at: Option<f64>,
    interval_seconds: Option<f64>,
    start_at: Option<f64>,
    last_submitted_at: Option<f64>,
    last_run_id: Option<String>,
    dispatch_count: u64,
    last_error: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    #[schema(example = "none")]
    catch_up: String,
    paused: bool,
}

/// `PATCH /schedules/{id}` body.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct SchedulePatch {
    /// true: pause (no runs until resumed); false: resume, the next slot counted from now.
    paused: bool,
}

fn unprocessable(detail: impl Into<String>) -> ApiError {
    ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, detail.into())
}

fn schedule_not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "schedule not found")
}

/// 0.7's `parse_schedule_datetime`: ISO 8601 with an offset (`Z` allowed).
pub(crate) fn parse_datetime(raw: &str, field: &str) -> Result<f64, ApiError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(unprocessable(format!("{field} is required")));
    }
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(dt) => Ok(dt.timestamp() as f64 + f64::from(dt.timestamp_subsec_nanos()) / 1e9),
        Err(_) => {
            // A valid datetime without an offset, or not a datetime at all?
            let naive = [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(text, f).is_ok())
                || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
            if naive {
                Err(unprocessable(format!(
                    "{field} must include timezone offset"
                )))
            } else {
                Err(unprocessable(format!("{field} must be ISO 8601 datetime")))
            }
        }
    }
}

/// What the timing parts ask for, validated.
#[derive(Debug, PartialEq)]
enum Timing {
    Once {
        run_at: f64,
    },
    Interval {
        interval: f64,
        start_at: Option<f64>,
    },
    Cron {
        cron: String,
        timezone: String,
        first: f64,
    },
}

/// The checks of 0.7, in its order, then ours.
fn timing(parts: &super::yaml_form::ScheduleParts, now: f64) -> Result<Timing, ApiError> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let (has_run_at, has_interval, has_cron) = (
        given(&parts.run_at),
        given(&parts.interval_seconds),
        given(&parts.cron),
    );
    if has_cron {
        if has_run_at || has_interval {
            return Err(unprocessable(
                "specify either run_at, interval_seconds or cron",
            ));
        }
        if given(&parts.start_at) {
            return Err(unprocessable(
                "start_at is only valid with interval_seconds",
            ));
        }
        let cron = parts.cron.as_deref().unwrap_or("").trim().to_string();
        let timezone = parts
            .timezone
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("UTC")
            .to_string();
        if let Err(why) = slots::parse_timezone(&timezone) {
            return Err(ApiError::with_reason(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid timezone",
                why,
            ));
        }
        let spec = CronSpec::parse(&cron, &timezone).map_err(|why| {
            ApiError::with_reason(StatusCode::UNPROCESSABLE_ENTITY, "invalid cron", why)
        })?;
        let first = spec
            .next_after(now)
            .filter(|t| *t - now <= MAX_AHEAD_SECONDS)
            .ok_or_else(|| {
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid cron",
                    "the expression matches no time in the next ten years",
                )
            })?;
        return Ok(Timing::Cron {
            cron,
            timezone,
            first,
        });
    }
    if given(&parts.timezone) {
        return Err(unprocessable("timezone is only valid with cron"));
    }
    if has_run_at == has_interval {
        return Err(unprocessable("specify either run_at or interval_seconds"));
    }
    if has_run_at {
        if given(&parts.start_at) {
            return Err(unprocessable(
                "start_at is only valid with interval_seconds",
            ));
        }
        let run_at = parse_datetime(parts.run_at.as_deref().unwrap_or(""), "run_at")?;
        if run_at <= now {
            return Err(unprocessable("run_at must be in the future"));
        }
        if run_at - now > MAX_AHEAD_SECONDS {
            return Err(unprocessable("run_at must be within ten years"));
        }
        return Ok(Timing::Once { run_at });
    }
    let text = parts.interval_seconds.as_deref().unwrap_or("").trim();
    let interval = python::float_of_str(text)
        .ok()
        .filter(|f| !f.is_nan())
        .ok_or_else(|| unprocessable("interval_seconds must be a number"))?;
    if interval <= 0.0 {
        return Err(unprocessable("interval_seconds must be positive"));
    }
    if interval < MIN_INTERVAL_SECONDS {
        return Err(unprocessable(format!(
            "interval_seconds must be at least {MIN_INTERVAL_SECONDS}"
        )));
    }
    if interval > MAX_INTERVAL_SECONDS {
        return Err(unprocessable(format!(
            "interval_seconds must be at most {MAX_INTERVAL_SECONDS}"
        )));
    }
    let start_at = match parts.start_at.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(raw) => {
            let t = parse_datetime(raw, "start_at")?;
            if (t - now).abs() > MAX_AHEAD_SECONDS {
                return Err(unprocessable("start_at must be within ten years of now"));
            }
            Some(t)
        }
    };
    Ok(Timing::Interval { interval, start_at })
}

/// `POST /schedules/yaml`.
#[utoipa::path(
    post,
    path = "/schedules/yaml",
    operation_id = "create_schedule_yaml",
    tag = "schedules",
    summary = "Run an uploaded flow.yaml on a schedule (pyoco-server 0.7)",
    description = "Same checks as `POST /runs/yaml` (tag, size, flow.yaml rules, flow_name), \
then the timing: exactly one of `run_at` (one run), `interval_seconds` (every N seconds on the \
`start_at` grid) or, ours, `cron` (+ `timezone`). 422 details: `specify either run_at or \
interval_seconds`, `specify either run_at, interval_seconds or cron`, `start_at is only valid \
with interval_seconds`, `timezone is only valid with cron`, `run_at must be in the future`, \
`run_at must be within ten years`, `interval_seconds must be positive` / `must be a number` / \
`must be at least 1.0` / `must be at most 31622400.0`, `<field> must be ISO 8601 datetime`, \
`<field> must include timezone offset`, `invalid cron`, `invalid timezone`, `invalid catch_up`. \
409 `too many schedules` past 1000 per tenant.",
    request_body(content = ScheduleUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Created", body = ScheduleView),
        (status = 409, description = "`too many schedules`", body = Object),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<PyJson<Map<String, Value>>, ApiError> {
    let multipart = multipart.unwrap_or_else(|rejection| {
        tracing::debug!("unreadable multipart request, read as an empty form: {rejection}");
        None
    });
    let form = YamlForm::read(multipart, state.workflow_yaml_max_bytes()).await?;
    form.check_text()?;
    let (upload, flow_name) = match (form.workflow, form.flow_name) {
        (Some(upload), Some(flow_name)) => (upload, flow_name),
        (upload, flow_name) => {
            return Err(super::runs::missing_form_parts(
                upload.is_none(),
                flow_name.is_none(),
            ))
        }
    };
    let tag = super::runs::form_tag(&state, form.tag.as_deref())?;
    let (raw, workflow) = super::runs::checked_workflow(&state, upload).await?;
    let flow_name = py_strip(&flow_name).to_string();
    if flow_name.is_empty() {
        return Err(unprocessable("missing flow_name"));
    }
    if flow_name.len() > pyoco_wire::MAX_FLOW_NAME_BYTES {
        return Err(ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid flow_name",
            format!(
                "flow_name is {} bytes; the limit is {} bytes",
                flow_name.len(),
                pyoco_wire::MAX_FLOW_NAME_BYTES
            ),
        ));
    }
    let now = python::time();
    let timing = timing(&form.schedule, now)?;
    let catch_up = match form.schedule.catch_up.as_deref() {
        None => CatchUp::None,
        Some(text) => CatchUp::parse(text).ok_or_else(|| {
            ApiError::with_reason(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid catch_up",
                "catch_up must be none or one",
            )
        })?,
    };
    let text = String::from_utf8(raw).map_err(|_| {
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid workflow yaml",
            "invalid_utf8",
        )
    })?;
    let store = state.store()?;
    if !state.schedules().ready(READY_WAIT).await {
        return Err(ApiError::Unavailable {
            kind: "ScheduleIndexLoading".into(),
            message: "the schedules are still loading".into(),
        });
    }
    if state
        .schedules()
        .count_for_tenant(caller.tenant_id.as_deref())
        >= MAX_SCHEDULES_PER_TENANT
    {
        return Err(ApiError::with_reason(
            StatusCode::CONFLICT,
            "too many schedules",
            format!("a tenant may hold {MAX_SCHEDULES_PER_TENANT} schedules; delete some first"),
        ));
    }

    let schedule_id = super::runs::new_run_id();
    let mut map = Map::new();
    let f = python::float_value;
    map.insert("schedule_id".into(), json!(schedule_id));
    map.insert("flow_name".into(), json!(flow_name));
    map.insert("tag".into(), json!(tag));
    map.insert("status".into(), json!(STATUS_ACTIVE));
    let kind = match &timing {
        Timing::Once { .. } => Kind::Once,
        Timing::Interval { .. } => Kind::Interval,
        Timing::Cron { .. } => Kind::Cron,
    };
    map.insert("schedule_type".into(), json!(kind.as_str()));
    map.insert("workflow_yaml".into(), json!(text));
    map.insert("workflow_yaml_sha256".into(), json!(workflow.digest.sha256));
    map.insert("workflow_yaml_bytes".into(), json!(workflow.digest.bytes));
    map.insert("params".into(), Value::Object(workflow.flow.defaults));
    map.insert("tenant_id".into(), json!(caller.tenant_id));
    map.insert("api_key_id".into(), json!(caller.api_key_id));
    map.insert("created_at".into(), f(now));
    map.insert("updated_at".into(), f(now));
    map.insert("last_submitted_at".into(), Value::Null);
    map.insert("last_run_id".into(), Value::Null);
    map.insert("dispatch_count".into(), json!(0));
    map.insert("last_error".into(), Value::Null);
    map.insert("lease_until".into(), Value::Null);
    match timing {
        Timing::Once { run_at } => {
            map.insert("run_at".into(), f(run_at));
            map.insert("next_run_at".into(), f(run_at));
            map.insert("interval_seconds".into(), Value::Null);
            map.insert("start_at".into(), Value::Null);
        }
        Timing::Interval { interval, start_at } => {
            let anchor = start_at.unwrap_or(now + interval);
            map.insert("run_at".into(), Value::Null);
            map.insert("interval_seconds".into(), f(interval));
            map.insert("start_at".into(), f(anchor));
            map.insert(
                "next_run_at".into(),
                f(slots::interval_next(anchor, interval, now - 0.000_001)),
            );
        }
        Timing::Cron {
            cron,
            timezone,
            first,
        } => {
            map.insert("run_at".into(), Value::Null);
            // Null for 0.7 gateways sharing the bucket: they must never dispatch a cron
            // schedule (they would read it as a one-shot and complete it).
            map.insert("next_run_at".into(), Value::Null);
            map.insert("interval_seconds".into(), Value::Null);
            map.insert("start_at".into(), Value::Null);
            map.insert("cron".into(), json!(cron));
            map.insert("timezone".into(), json!(timezone));
            map.insert("cron_next_run_at".into(), f(first));
        }
    }
    map.insert("catch_up".into(), json!(catch_up.as_str()));
    map.insert("paused".into(), Value::Bool(false));
    let schedule = Schedule {
        id: schedule_id.clone(),
        map,
    };
    let bytes = schedule.to_json();
    if bytes.len() > store.max_record_bytes() {
        return Err(ApiError::with_reason(
            StatusCode::PAYLOAD_TOO_LARGE,
            "workflow too large",
            format!(
                "the schedule record would be {} bytes; the NATS server takes at most {}",
                bytes.len(),
                store.max_record_bytes()
            ),
        ));
    }
    let revision = store.schedules().create(&schedule_id, bytes).await?;
    let view = schedule.view();
    state.schedules().note(schedule, revision);
    Ok(PyJson(view))
}

/// `GET /schedules`.
#[utoipa::path(
    get,
    path = "/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    summary = "The caller's schedules (pyoco-server 0.7)",
    description = "ACTIVE first, then by next run time (or creation time), then by id.",
    responses(
        (status = 200, description = "The schedules", body = Vec<ScheduleView>),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<PyJson<Vec<Map<String, Value>>>, ApiError> {
    state.store()?;
    if !state.schedules().ready(READY_WAIT).await {
        return Err(ApiError::Unavailable {
            kind: "ScheduleIndexLoading".into(),
            message: "the schedules are still loading".into(),
        });
    }
    let mut items: Vec<Schedule> = state
        .schedules()
        .all()
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| caller.tenant_id.is_none() || s.tenant_id() == caller.tenant_id.as_deref())
        .collect();
    let key = |s: &Schedule| {
        (
            u8::from(s.status() != STATUS_ACTIVE),
            s.due_at().or_else(|| s.f64("created_at")).unwrap_or(0.0),
        )
    };
    items.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(PyJson(items.iter().map(Schedule::view).collect()))
}

/// The caller's schedule `id` as stored now, with its revision; 404 for others' and unknown.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<(Schedule, u64), ApiError> {
    if id.is_empty() || id.len() > 256 || !pyoco_wire::is_valid_kv_key(id) {
        return Err(schedule_not_found());
    }
    let store = state.store()?;
    let entry = store
        .schedules()
        .get(id)
        .await?
        .ok_or_else(schedule_not_found)?;
    let schedule = Schedule::parse(id, &entry.value).ok_or_else(schedule_not_found)?;
    if caller.tenant_id.is_some() && schedule.tenant_id() != caller.tenant_id.as_deref() {
        return Err(schedule_not_found());
    }
    Ok((schedule, entry.revision))
}

/// `GET /schedules/{schedule_id}/runs`.
#[utoipa::path(
    get,
    path = "/schedules/{schedule_id}/runs",
    operation_id = "list_schedule_runs",
    tag = "schedules",
    summary = "The runs a schedule dispatched, newest first (pyoco-server 0.7)",
    description = "Like `GET /runs?schedule_id=…` (summaries unless `include=full`), after \
checking the schedule exists and is the caller's (404 `schedule not found`).",
    params(
        ("schedule_id" = String, Path, description = "The schedule's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "At most this many (default 50)"),
        ("include" = Option<Vec<String>>, Query, explode, style = Form, description = "`full`/`all`: full snapshots"),
    ),
    responses(
        (status = 200, description = "The runs", body = Vec<Object>),
        (status = 404, description = "`schedule not found`", body = Object),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn schedule_runs(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|_| schedule_not_found())?;
    load(&state, &caller, &id).await?;
    super::list::list_schedule_runs(&state, &caller, &id, query.as_deref()).await
}

/// `DELETE /schedules/{schedule_id}`.
#[utoipa::path(
    delete,
    path = "/schedules/{schedule_id}",
    operation_id = "delete_schedule",
    tag = "schedules",
    summary = "Delete a schedule (pyoco-server 0.7)",
    description = "No further runs; runs it already dispatched stay.",
    params(("schedule_id" = String, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "Deleted", body = Object,
         example = json!({"schedule_id": "…", "deleted": true})),
        (status = 404, description = "`schedule not found`", body = Object),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<Value>, ApiError> {
    let Path(id) = id.map_err(|_| schedule_not_found())?;
    load(&state, &caller, &id).await?;
    state.store()?.schedules().delete(&id).await?;
    state.schedules().note_deleted(&id);
    Ok(PyJson(json!({"schedule_id": id, "deleted": true})))
}

/// `PATCH /schedules/{schedule_id}` (ours).
#[utoipa::path(
    patch,
    path = "/schedules/{schedule_id}",
    operation_id = "patch_schedule",
    tag = "schedules",
    summary = "Pause or resume a schedule (ours)",
    description = "Body `{\"paused\": true|false}` and nothing else (422 `invalid schedule \
patch` otherwise). A paused schedule is not dispatched (status `PAUSED`, `next_run_at` null); \
resuming computes the next slot from now (no catch-up of the paused time; a one-shot whose \
`run_at` passed while paused runs at once). 409 `schedule is completed` for a one-shot that \
already ran.",
    params(("schedule_id" = String, Path, description = "The schedule's id")),
    request_body(content = SchedulePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The schedule now", body = ScheduleView),
        (status = 404, description = "`schedule not found`", body = Object),
        (status = 409, description = "`schedule is completed`", body = Object),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn patch_schedule(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<PyJson<Map<String, Value>>, ApiError> {
    let Path(id) = id.map_err(|_| schedule_not_found())?;
    let body = body.map_err(|err| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::with_reason(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                format!("a schedule patch is at most {MAX_PATCH_BYTES} bytes"),
            )
        } else {
            unprocessable("invalid schedule patch")
        }
    })?;
    let paused = parse_patch(&body)?;
    let store = state.store()?;
    for _ in 0..5 {
        let (schedule, revision) = load(&state, &caller, &id).await?;
        if schedule.status() == STATUS_COMPLETED {
            return Err(ApiError::detail(
                StatusCode::CONFLICT,
                "schedule is completed",
            ));
        }
        if schedule.paused() == paused {
            return Ok(PyJson(schedule.view()));
        }
        let next = schedule.with_paused(paused, python::time());
        match store
            .schedules()
            .update(&id, next.to_json(), revision)
            .await
        {
            Ok(rev) => {
                let view = next.view();
                state.schedules().note_update(next, rev);
                return Ok(PyJson(view));
            }
            Err(pyoco_store::StoreError::Conflict(_)) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::detail(
        StatusCode::CONFLICT,
        "schedule changed concurrently; try again",
    ))
}

/// `{"paused": bool}` and nothing else.
fn parse_patch(body: &[u8]) -> Result<bool, ApiError> {
    let invalid = |why: &str| {
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid schedule patch",
            why.to_string(),
        )
    };
    let value: Value = pyoco_wire::from_python_json(body)
        .map_err(|_| invalid("the body must be the JSON object {\"paused\": true|false}"))?;
    let Value::Object(map) = value else {
        return Err(invalid(
            "the body must be the JSON object {\"paused\": true|false}",
        ));
    };
    if let Some(other) = map.keys().find(|k| *k != "paused") {
        return Err(invalid(&format!(
            "unknown field {other:?}: only \"paused\" can be changed"
        )));
    }
    match map.get("paused") {
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("paused must be true or false")),
        None => Err(invalid("paused is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml_form::ScheduleParts;
    use super::*;

    fn detail(err: ApiError) -> String {
        match err {
            ApiError::Detail { detail, .. } => detail.into_owned(),
            other => format!("{other:?}"),
        }
    }

    fn parts(pairs: &[(&str, &str)]) -> ScheduleParts {
        let mut p = ScheduleParts::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "run_at" => p.run_at = v,
                "interval_seconds" => p.interval_seconds = v,
                "start_at" => p.start_at = v,
                "cron" => p.cron = v,
                "timezone" => p.timezone = v,
                "catch_up" => p.catch_up = v,
                _ => unreachable!(),
            }
        }
        p
    }

    const NOW: f64 = 1_800_000_000.0; // 2027-01-15

    #[test]
    fn timing_errors_are_0_7s_then_ours() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "specify either run_at or interval_seconds"),
            (
                &[
                    ("run_at", "2030-01-01T00:00:00Z"),
                    ("interval_seconds", "5"),
                ],
                "specify either run_at or interval_seconds",
            ),
            (
                &[
                    ("run_at", "2030-01-01T00:00:00Z"),
                    ("start_at", "2030-01-01T00:00:00Z"),
                ],
                "start_at is only valid with interval_seconds",
            ),
            (
                &[("run_at", "tomorrow")],
                "run_at must be ISO 8601 datetime",
            ),
            (
                &[("run_at", "2030-01-01T00:00:00")],
                "run_at must include timezone offset",
            ),
            (
                &[("run_at", "2020-01-01T00:00:00Z")],
                "run_at must be in the future",
            ),
            (
                &[("run_at", "2099-01-01T00:00:00Z")],
                "run_at must be within ten years",
            ),
            (
                &[("interval_seconds", "0")],
                "interval_seconds must be positive",
            ),
            (
                &[("interval_seconds", "-3")],
                "interval_seconds must be positive",
            ),
            (
                &[("interval_seconds", "abc")],
                "interval_seconds must be a number",
            ),
            (
                &[("interval_seconds", "nan")],
                "interval_seconds must be a number",
            ),
            (
                &[("interval_seconds", "0.5")],
                "interval_seconds must be at least 1",
            ),
            (
                &[("interval_seconds", "1e9")],
                "interval_seconds must be at most 31622400",
            ),
            (
                &[("interval_seconds", "5"), ("start_at", "soon")],
                "start_at must be ISO 8601 datetime",
            ),
            (
                &[("cron", "* * * * *"), ("interval_seconds", "5")],
                "specify either run_at, interval_seconds or cron",
            ),
            (
                &[("cron", "* * * * *"), ("start_at", "2030-01-01T00:00:00Z")],
                "start_at is only valid with interval_seconds",
            ),
            (
                &[("interval_seconds", "5"), ("timezone", "UTC")],
                "timezone is only valid with cron",
            ),
            (&[("cron", "* * *")], "invalid cron"),
            (&[("cron", "0 0 30 2 *")], "invalid cron"),
            (
                &[("cron", "* * * * *"), ("timezone", "Nowhere/City")],
                "invalid timezone",
            ),
        ];
        for (given, want) in cases {
            let got = timing(&parts(given), NOW).expect_err(want);
            let got = detail(got);
            assert!(got.starts_with(want), "{given:?}: {got:?} is not {want:?}");
        }
    }

    #[test]
    fn timings_that_pass() {
        assert_eq!(
            timing(&parts(&[("run_at", "2027-01-15T10:00:00+01:00")]), NOW).unwrap(),
            Timing::Once {
                run_at: NOW + 3600.0
            }
        );
        assert_eq!(
            timing(&parts(&[("interval_seconds", " 2.5 ")]), NOW).unwrap(),
            Timing::Interval {
                interval: 2.5,
                start_at: None
            }
        );
        match timing(&parts(&[("cron", "*/2 * * * * *")]), NOW).unwrap() {
            Timing::Cron {
                timezone, first, ..
            } => {
                assert_eq!(timezone, "UTC");
                assert_eq!(first, NOW + 2.0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_datetime("2030-01-01T00:00:00Z", "x").unwrap(),
            1_893_456_000.0
        );
        assert_eq!(
            parse_datetime("2030-01-01T01:00:00.5+01:00", "x").unwrap(),
            1_893_456_000.5
        );
    }

    #[test]
    fn patch_bodies() {
        assert!(parse_patch(br#"{"paused": true}"#).unwrap());
        assert!(!parse_patch(br#"{"paused": false}"#).unwrap());
        for bad in [
            &b"{}"[..],
            br#"{"paused": "yes"}"#,
            br#"{"paused": true, "cron": "x"}"#,
            b"[true]",
            b"not json",
            b"",
        ] {
            assert_eq!(
                detail(parse_patch(bad).unwrap_err()),
                "invalid schedule patch"
            );
        }
    }
}
