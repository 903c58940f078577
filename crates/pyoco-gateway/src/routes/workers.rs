//! The worker registry seen over HTTP: `GET /workers` lists it, `PATCH /workers/{worker_id}`
//! hides or shows a worker (contract §3.2, §2.4, §4.3). Behind the API key when auth is on
//! (0.5.1 left both open, §14-14).
//!
//! Records are read through `pyoco-wire`'s normalisation and the state shown is the derived one:
//! a worker not seen for `PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC` is `DISCONNECTED`. That only
//! works while the dead worker's record is still in the bucket, i.e. when the bucket's TTL is
//! longer than the disconnect timeout — not the case with 0.5.1's 15 s (§14-10). Our default TTL
//! is a day; a bucket created earlier with a shorter TTL keeps it (a TTL is fixed when the
//! bucket is created), and the first `GET /workers` logs how to fix that
//! ([`warn_if_registry_ttl_hides_disconnected`]). The check is lazy so it needs no hook in the
//! gateway's startup, and it costs nothing: the TTL comes from the stream info read when the
//! store opened the bucket.
//!
//! Writes are compare-and-set: a `PATCH` that races with a worker's registry write reads again
//! instead of overwriting the worker's fresh record with a stale copy.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection},
        Path, RawQuery, State,
    },
    http::{HeaderMap, StatusCode},
    routing::get,
    Router,
};
use pyoco_store::{Bucket, Store, StoreError, Versioned};
use pyoco_wire::{
    python::{self, py_strip},
    WorkerRecord, WorkerState,
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use utoipa::{IntoParams, ToSchema};

use super::components::{
    BadRequest, NatsUnavailable, PayloadTooLarge, Unprocessable, WorkerNotFound,
    WorkerRecord as WorkerRecordSchema,
};
use super::stored::is_valid_kv_key;
use super::submit_request::read_json_body;
use crate::{
    error::{log_refusal, ApiError, FieldError},
    json::PyJson,
    AppState,
};

/// Most worker records read at the same time by `GET /workers`.
const READ_CONCURRENCY: usize = 32;

/// How many times a `PATCH` re-reads a record after losing a compare-and-set to the worker.
const MAX_ATTEMPTS: u32 = 20;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/workers", get(list_workers))
        .route("/workers/{worker_id}", axum::routing::patch(patch_worker))
}

/// `GET /workers?scope=&state=&include_hidden=&limit=`: the registry, newest `last_seen_at`
/// first, each record with every stored field and the derived `state`.
#[utoipa::path(
    get,
    path = "/workers",
    operation_id = "list_workers",
    tag = "workers",
    summary = "List the worker registry, most recently seen first",
    description = "Each record normalised (contract §2.4) with its derived `state` (§4.3). An \
empty registry is `[]`. Needs the API key when auth is on (0.5.1 left it open).",
    params(ListWorkersParams),
    responses(
        (status = 200, description = "The workers", body = Vec<WorkerRecordSchema>, links(
            ("patch_worker" = (operation_id = "patch_worker",
                parameters(("worker_id" = "$response.body#/0/worker_id")),
                description = "Hide or show the first worker listed")),
        )),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn list_workers(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<PyJson<Vec<WorkerRecord>>, ApiError> {
    let query = WorkersQuery::parse(query.as_deref())?;
    let store = state.store()?;
    let timeout = state.worker_disconnect_timeout_sec();
    warn_if_registry_ttl_hides_disconnected(store, timeout);

    let bucket = store.workers();
    let keys = bucket.key_candidates().await?;
    let mut entries: Vec<(&String, Versioned<Bytes>)> = keys
        .iter()
        .zip(read_all(bucket, &keys).await?)
        // `None`: deleted (a delete marker), or since it was listed.
        .filter_map(|(key, entry)| Some((key, entry?)))
        .collect();
    // The bucket's key order (as `kv.keys()` gives it): by the revision of each key's value.
    entries.sort_by_key(|(_, entry)| entry.revision);
    let now = python::time();
    let mut workers: Vec<WorkerRecord> = entries
        .into_iter()
        .filter_map(
            |(key, entry)| match WorkerRecord::from_json(&entry.value, key) {
                Ok(record) => Some(record.for_display(now, timeout)),
                Err(err) => {
                    tracing::debug!(worker_id = %key, "unreadable worker record skipped: {err}");
                    None
                }
            },
        )
        .filter(|w| query.keeps(w))
        .collect();
    // Stable, like Python's `sort`: ties keep the bucket's key order.
    workers.sort_by(|a, b| b.last_seen_at.total_cmp(&a.last_seen_at));
    workers.truncate(query.limit);
    Ok(PyJson(workers))
}

/// The entries of `keys` (in that order; `None` for a key without a value), read
/// [`READ_CONCURRENCY`] at a time, so a hundred workers cost a few round trips, not a hundred.
async fn read_all(
    bucket: &Bucket,
    keys: &[String],
) -> Result<Vec<Option<Versioned<Bytes>>>, StoreError> {
    let bucket = Arc::new(bucket.clone());
    let mut values: Vec<Option<Versioned<Bytes>>> = vec![None; keys.len()];
    let mut pending = keys.iter().cloned().enumerate();
    let mut reads = JoinSet::new();
    loop {
        while reads.len() < READ_CONCURRENCY {
            let Some((i, key)) = pending.next() else {
                break;
            };
            let bucket = bucket.clone();
            reads.spawn(async move { (i, bucket.get(&key).await) });
        }
        let Some(done) = reads.join_next().await else {
            return Ok(values);
        };
        match done {
            Ok((i, Ok(entry))) => values[i] = entry,
            // Dropping `reads` aborts the reads still in flight.
            Ok((_, Err(err))) => return Err(err),
            Err(err) => return Err(StoreError::unavailable("JoinError", err)),
        }
    }
}

// The query of `GET /workers` as `/openapi.json` describes it; `WorkersQuery::parse` reads it,
// the last of repeated values winning.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
struct ListWorkersParams {
    /// `active`: only `RUNNING` and `IDLE` workers; `all`: every one (trimmed, any case;
    /// anything else: 422 `invalid workers request`).
    #[param(default = "active")]
    scope: Option<WorkersScope>,
    /// Only workers in this derived state (any case; blank: no filter; anything else: 422
    /// `invalid workers request`).
    state: Option<super::components::WorkerStateDoc>,
    /// List hidden workers too.
    #[param(default = false)]
    include_hidden: Option<bool>,
    /// At most this many workers.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
}

/// Which workers `GET /workers` lists: `active` (`RUNNING` or `IDLE`) or `all`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documentation only
pub(crate) enum WorkersScope {
    Active,
    All,
}

/// The query of `GET /workers`, checked in 0.5.1's order: FastAPI's type checks first (all
/// reported together, as a list), then the handler's own `invalid workers request`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkersQuery {
    /// `scope=active` (the default): only `RUNNING`/`IDLE` workers.
    active_only: bool,
    state: Option<WorkerState>,
    include_hidden: bool,
    limit: usize,
}

impl WorkersQuery {
    const MAX_LIMIT: i128 = 500;

    fn parse(query: Option<&str>) -> Result<WorkersQuery, ApiError> {
        // A repeated parameter: the last one counts (Starlette's `QueryParams`).
        let (mut scope, mut state, mut include_hidden, mut limit) = (None, None, None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*key {
                "scope" => &mut scope,
                "state" => &mut state,
                "include_hidden" => &mut include_hidden,
                "limit" => &mut limit,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }

        let mut errors = Vec::new();
        let include_hidden = match include_hidden {
            None => false,
            Some(raw) => crate::pydantic::boolean(&raw).unwrap_or_else(|| {
                errors.push(bool_parsing(
                    vec!["query".into(), "include_hidden".into()],
                    raw.into(),
                ));
                false
            }),
        };
        let limit = match limit {
            None => 100,
            Some(raw) => match crate::pydantic::int_opt(&raw) {
                None => {
                    errors.push(FieldError {
                        kind: "int_parsing",
                        loc: vec!["query".into(), "limit".into()],
                        msg:
                            "Input should be a valid integer, unable to parse string as an integer"
                                .into(),
                        input: raw.into(),
                        ctx: None,
                    });
                    0
                }
                Some(n) if n < 1 => {
                    errors.push(FieldError {
                        kind: "greater_than_equal",
                        loc: vec!["query".into(), "limit".into()],
                        msg: "Input should be greater than or equal to 1".into(),
                        input: raw.into(),
                        ctx: Some(json!({"ge": 1})),
                    });
                    0
                }
                Some(n) if n > Self::MAX_LIMIT => {
                    errors.push(FieldError {
                        kind: "less_than_equal",
                        loc: vec!["query".into(), "limit".into()],
                        msg: "Input should be less than or equal to 500".into(),
                        input: raw.into(),
                        ctx: Some(json!({"le": 500})),
                    });
                    0
                }
                Some(n) => n as usize,
            },
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }

        // `str(scope or "active").strip().lower()`.
        let active_only = match scope {
            None => true,
            Some(raw) if raw.is_empty() => true,
            Some(raw) => match py_strip(&raw).to_lowercase().as_str() {
                "active" => true,
                "all" => false,
                _ => {
                    log_refusal!("0019", "workers failed: invalid scope", scope = %raw);
                    return Err(
                        invalid_request(format!("scope {raw:?}: use active or all")).logged()
                    );
                }
            },
        };
        // Blank means "no filter"; otherwise `strip().upper()` must name a state.
        let state = match state.as_deref().map(py_strip).filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(WorkerState::parse(&raw.to_uppercase()).ok_or_else(|| {
                log_refusal!("0019", "workers failed: invalid state filter", state = %raw);
                invalid_request(format!(
                    "state {raw:?}: use RUNNING, IDLE, STOPPED_GRACEFUL or DISCONNECTED"
                ))
                .logged()
            })?),
        };
        Ok(WorkersQuery {
            active_only,
            state,
            include_hidden,
            limit,
        })
    }

    /// Whether a record (already showing its derived state) is listed.
    fn keeps(&self, worker: &WorkerRecord) -> bool {
        (self.include_hidden || !worker.hidden)
            && (!self.active_only || worker.state.is_active())
            && self.state.is_none_or(|s| s == worker.state)
    }
}

fn invalid_request(reason: String) -> ApiError {
    ApiError::with_reason(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid workers request",
        reason,
    )
}

fn bool_parsing(loc: Vec<crate::error::Loc>, input: Value) -> FieldError {
    FieldError {
        kind: "bool_parsing",
        loc,
        msg: "Input should be a valid boolean, unable to interpret input".into(),
        input,
        ctx: None,
    }
}

/// The answer to a `PATCH /workers/{worker_id}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WorkerPatched)]
pub(crate) struct Patched {
    worker_id: String,
    hidden: bool,
    /// When the flag was written (seconds since the epoch).
    updated_at: f64,
}

// The `PATCH /workers/{worker_id}` body as `/openapi.json` describes it; `hidden_from_body`
// reads it.
/// A worker's display flag. `hidden` is read like pydantic's lax booleans (also `"yes"`,
/// `"off"`, `1`, `0`, …).
#[derive(ToSchema)]
#[schema(as = WorkerPatchRequest)]
#[allow(dead_code)] // documentation only
struct WorkerPatchBody {
    /// Hide the worker from `GET /workers` (unless `include_hidden=true`), or show it again.
    hidden: bool,
}

/// `PATCH /workers/{worker_id}` with `{"hidden": bool}`: set the display flag the workers keep.
#[utoipa::path(
    patch,
    path = "/workers/{worker_id}",
    operation_id = "patch_worker",
    tag = "workers",
    summary = "Hide or show a worker",
    description = "Sets the display flag the worker keeps in its registry record. Needs \
the API key when auth is on (0.5.1 left it open).",
    params(("worker_id" = String, Path, description = "The worker's id")),
    request_body(content = WorkerPatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The flag was written", body = Patched),
        (status = 400, response = BadRequest),
        (status = 404, response = WorkerNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn patch_worker(
    State(state): State<AppState>,
    worker_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PyJson<Patched>, ApiError> {
    let Path(worker_id) = worker_id?;
    // FastAPI validates the body before the handler runs: a bad body is a 422 for any worker.
    let hidden = hidden_from_body(&headers, &body?)?;
    if !is_valid_kv_key(&worker_id) {
        // No worker can be registered under it; NATS would refuse the lookup.
        return Err(worker_not_found(&worker_id));
    }
    let store = state.store()?;
    let updated_at = set_hidden(store, &worker_id, hidden).await?;
    tracing::info!(%worker_id, hidden, "worker display flag set");
    Ok(PyJson(Patched {
        worker_id,
        hidden,
        updated_at,
    }))
}

/// Read (normalised), set `hidden` and `updated_at`, compare-and-set; again from the read when
/// the worker wrote in between. Returns the `updated_at` written.
async fn set_hidden(store: &Store, worker_id: &str, hidden: bool) -> Result<f64, ApiError> {
    let bucket = store.workers();
    for attempt in 0..MAX_ATTEMPTS {
        let entry = bucket
            .get(worker_id)
            .await?
            .ok_or_else(|| worker_not_found(worker_id))?;
        let mut record = WorkerRecord::from_json(&entry.value, worker_id).unwrap_or_else(|err| {
            // 0.5.1 does the same: an unreadable record is replaced by a bare one.
            tracing::warn!(%worker_id, "unreadable worker record replaced: {err}");
            WorkerRecord::from_value(json!({ "worker_id": worker_id }), worker_id)
        });
        let now = python::time();
        record.hidden = hidden;
        record.updated_at = now;
        match bucket
            .update(worker_id, record.to_json(), entry.revision)
            .await
        {
            Ok(_) => return Ok(now),
            Err(StoreError::Conflict(_)) => {
                tracing::debug!(%worker_id, attempt, "worker record changed meanwhile; reading again");
                tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Unavailable {
        kind: "Conflict".into(),
        message: format!(
            "worker {worker_id} kept changing: lost the compare-and-set {MAX_ATTEMPTS} times"
        ),
    })
}

/// The `WorkerPatchRequest` body (`{"hidden": bool}`, pydantic v2 lax), or FastAPI's 422 list.
fn hidden_from_body(headers: &HeaderMap, body: &[u8]) -> Result<bool, ApiError> {
    let value = read_json_body(headers, body)?;
    let Value::Object(obj) = value else {
        return Err(ApiError::Validation(vec![FieldError {
            kind: "model_attributes_type",
            loc: vec!["body".into()],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            input: value,
            ctx: None,
        }]));
    };
    let loc = || vec!["body".into(), "hidden".into()];
    let bool_type = |input: Value| FieldError {
        kind: "bool_type",
        loc: loc(),
        msg: "Input should be a valid boolean".into(),
        input,
        ctx: None,
    };
    let hidden = match obj.get("hidden") {
        None => {
            return Err(ApiError::Validation(vec![FieldError {
                kind: "missing",
                loc: loc(),
                msg: "Field required".into(),
                input: Value::Object(obj),
                ctx: None,
            }]))
        }
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => {
            crate::pydantic::boolean(s).ok_or_else(|| bool_parsing(loc(), s.as_str().into()))
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(0.0) => Ok(false),
            Some(1.0) => Ok(true),
            // Other whole numbers "cannot be interpreted"; fractions are not booleans at all.
            Some(f) if f.fract() == 0.0 => Err(bool_parsing(loc(), n.clone().into())),
            _ => Err(bool_type(n.clone().into())),
        },
        Some(other) => Err(bool_type(other.clone())),
    };
    hidden.map_err(|err| ApiError::Validation(vec![err]))
}

/// 404 `worker not found`, logged as 0.5.1 does (`ERR-PYOCO-0020`).
fn worker_not_found(worker_id: &str) -> ApiError {
    log_refusal!("0020", "worker not found", worker_id = %worker_id);
    ApiError::detail(StatusCode::NOT_FOUND, "worker not found").logged()
}

/// Set once the TTL warning has been logged: one warning per process.
static TTL_WARNED: AtomicBool = AtomicBool::new(false);

/// Log once (per process) when the registry bucket's TTL is not longer than the disconnect
/// timeout: then a dead worker's record expires before it can be shown `DISCONNECTED`,
/// `STOPPED_GRACEFUL` records vanish, and `hidden` is lost with them (§14-10). Such a bucket
/// was created by an older process (pyoco-server 0.5.1 creates it with 15 s). Free to call on
/// every request: it reads the stream info cached when the store opened the bucket.
pub(crate) fn warn_if_registry_ttl_hides_disconnected(store: &Store, disconnect_timeout: f64) {
    if TTL_WARNED.load(Ordering::Relaxed) {
        return;
    }
    let bucket = store.workers();
    let ttl = bucket.raw().stream.cached_info().config.max_age;
    if let Some(message) = ttl_warning(bucket.name(), ttl, disconnect_timeout) {
        if !TTL_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("{message}");
        }
    }
}

/// The warning for a registry bucket `bucket` whose TTL is `ttl`, if that TTL hides
/// disconnected workers (0 = no TTL; a disconnect timeout of 0 never shows them anyway).
fn ttl_warning(bucket: &str, ttl: Duration, disconnect_timeout: f64) -> Option<String> {
    if ttl.is_zero() || disconnect_timeout <= 0.0 || ttl.as_secs_f64() > disconnect_timeout {
        return None;
    }
    Some(format!(
        "the worker registry bucket {bucket} drops records after {ttl} s, which is not longer \
         than PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC ({disconnect_timeout} s): dead workers vanish \
         from GET /workers instead of showing DISCONNECTED, STOPPED_GRACEFUL workers vanish \
         {ttl} s after they stop, and their hidden flag is lost. A bucket keeps the TTL it was \
         created with (pyoco-server 0.5.1 creates it with 15 s). To fix it, recreate the \
         bucket: stop the gateways and workers, delete the stream KV_{bucket} (nats CLI: \
         `nats stream rm KV_{bucket}`), and start this gateway (or one of our workers) first; it \
         is created again with PYOCO_WORKERS_KV_TTL_SEC (default 86400 s) and workers register \
         again at their next heartbeat. Python processes that may create it should get \
         PYOCO_WORKERS_KV_TTL_SEC=86400 too.",
        ttl = ttl.as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_parse_like_pydantic() {
        for (raw, want) in [
            ("100", Some(100)),
            (" 7\t", Some(7)),
            ("+5", Some(5)),
            ("-0", Some(0)),
            ("1_0", Some(10)),
            ("1.0", Some(1)),
            ("2.000", Some(2)),
            ("1_0.0", Some(10)),
            ("00012", Some(12)),
            ("\u{a0}5", Some(5)),
        ] {
            assert_eq!(crate::pydantic::int_opt(raw), want, "{raw:?}");
        }
        for raw in [
            "", "abc", "1.5", "1.", ".0", "_1", "1_", "1__0", "1.0_0", "0x10", "1e2", "+-1", "- 1",
            "1 0", "\u{1c}5", "٣",
        ] {
            assert_eq!(crate::pydantic::int_opt(raw), None, "{raw:?}");
        }
        assert!(
            crate::pydantic::int_opt("10000000000000000000000000000000000000000").unwrap() > 500
        );
    }

    #[test]
    fn bools_parse_like_pydantic() {
        for raw in ["1", "on", "T", "true", "True", "y", "YeS"] {
            assert_eq!(crate::pydantic::boolean(raw), Some(true), "{raw:?}");
        }
        for raw in ["0", "OFF", "f", "false", "n", "no"] {
            assert_eq!(crate::pydantic::boolean(raw), Some(false), "{raw:?}");
        }
        for raw in ["", " true", "true ", "2", "1.0", "maybe", "\u{131}"] {
            assert_eq!(crate::pydantic::boolean(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn query_defaults_and_normalisation() {
        let q = WorkersQuery::parse(None).unwrap();
        assert_eq!(
            q,
            WorkersQuery {
                active_only: true,
                state: None,
                include_hidden: false,
                limit: 100
            }
        );
        let q = WorkersQuery::parse(Some(
            "scope=%20ALL%20&state=%C4%B1dle&include_hidden=yes&limit=5&limit=7",
        ))
        .unwrap();
        // Python's `upper()` maps the dotless ı to I, so "ıdle" is IDLE.
        assert_eq!(
            q,
            WorkersQuery {
                active_only: false,
                state: Some(WorkerState::Idle),
                include_hidden: true,
                limit: 7
            }
        );
        assert!(
            WorkersQuery::parse(Some("scope=&state=+"))
                .unwrap()
                .active_only
        );
    }

    #[test]
    fn ttl_warning_only_when_the_ttl_hides_disconnected_workers() {
        let warn = |ttl: u64, timeout: f64| {
            ttl_warning("pyoco_workers", Duration::from_secs(ttl), timeout)
        };
        assert!(warn(15, 20.0).is_some());
        assert!(warn(20, 20.0).is_some());
        assert!(warn(21, 20.0).is_none());
        assert!(warn(86_400, 20.0).is_none());
        assert!(warn(0, 20.0).is_none(), "no TTL");
        assert!(
            warn(15, 0.0).is_none(),
            "DISCONNECTED is never shown anyway"
        );
        let text = warn(15, 20.0).unwrap();
        assert!(text.contains("nats stream rm KV_pyoco_workers"), "{text}");
    }
}
