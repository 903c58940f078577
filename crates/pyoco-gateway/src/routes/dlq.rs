//! The dead-letter queue (stream `PYOCO_DLQ`, §2.7), which 0.5.1 only writes: `GET /dlq` lists
//! entries newest first, `GET /dlq/{id}` shows one with the job it came from, `POST
//! /dlq/{id}/replay` submits that job again as a new run, `DELETE /dlq/{id}` removes one. An
//! entry's id is its stream sequence, as a string.
//!
//! A replay rebuilds the job from the run's snapshot (flow name, tag, tags, params) and, for a
//! flow.yaml run, the flow.yaml the gateway kept by its digest (`PYOCO_WORKFLOW_KEEP_SEC`); the
//! new run's snapshot says `replayed_from`, and the replay is recorded (bucket
//! `PYOCO_DLQ_REPLAYS_KV_BUCKET`) so the entry shows `replayed_run_id`. An `invalid_job` entry,
//! a run that is gone, or a flow.yaml that was not kept (submitted through a 0.5.1 gateway, or
//! expired) cannot be replayed: `409 dlq entry cannot be replayed` with the reason.
//!
//! Listing walks the stream backwards from the newest entry (or from the cursor), reading
//! entries a batch at a time concurrently, keeping those that pass the filters and the caller's
//! tenant, and stops at `limit` items — or after [`MAX_SCANNED`] entries, so a filter that
//! matches nothing costs a bounded walk; `next_cursor` then continues below. Entries written by
//! 0.5.1 workers and by ours read the same; a record that is not a JSON object is listed with
//! its `reason` as `unreadable`.

use axum::{
    extract::{rejection::PathRejection, Path, RawQuery, State},
    http::StatusCode,
    routing::get,
    Router,
};
use futures::{stream, StreamExt};
use std::sync::Arc;

use pyoco_store::{DlqEntry, DlqState, Store};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::components::{NatsUnavailable, Unprocessable};
use super::runs::{checked_workflow, new_run_id, submit_new_run_with};
use super::yaml_form::Upload;
use crate::{auth::Caller, error::ApiError, json::PyJson, pydantic, AppState};

/// Entries read from the stream at once.
const READ_CONCURRENCY: usize = 64;
/// Most entries one listing request walks past before answering with a cursor.
pub(crate) const MAX_SCANNED: u64 = 5_000;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: i128 = 500;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dlq", get(list_dlq))
        .route("/dlq/{id}", get(get_dlq).delete(delete_dlq))
        .route("/dlq/{id}/replay", axum::routing::post(replay_dlq))
}

// The query of `GET /dlq` as `/openapi.json` describes it; `DlqQuery::parse` reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct DlqParams {
    /// Only entries of this job tag.
    tag: Option<String>,
    /// Only this reason (`invalid_job`, `flow_not_found`, `execution_error`,
    /// `max_deliver_exceeded`, `snapshot_too_large`, …).
    reason: Option<String>,
    /// Only entries of this run.
    run_id: Option<String>,
    /// Only entries stored at or after this time (epoch seconds).
    since: Option<f64>,
    /// Items per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of dead letters, newest first.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct DlqPage {
    items: Vec<DlqItem>,
    /// Continue with `cursor=<this>`; null when nothing older is left.
    next_cursor: Option<String>,
}

/// One dead letter.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct DlqItem {
    /// Its id (the stream sequence).
    #[schema(example = "42")]
    id: String,
    run_id: Option<String>,
    flow_name: Option<String>,
    /// The job's tag (for `invalid_job`: the last token of the job's subject).
    tag: Option<String>,
    #[schema(example = "execution_error")]
    reason: String,
    error: Option<String>,
    /// When the worker wrote it (epoch seconds).
    timestamp: Option<f64>,
    worker_id: Option<String>,
    num_delivered: Option<u64>,
    /// The run of the latest replay of this entry, if any.
    replayed_run_id: Option<String>,
}

/// The validated query.
#[derive(Debug, Default, PartialEq)]
struct DlqQuery {
    tag: Option<String>,
    reason: Option<String>,
    run_id: Option<String>,
    since: Option<f64>,
    limit: usize,
    /// Continue below this sequence.
    before: Option<u64>,
}

impl DlqQuery {
    fn parse(query: Option<&str>) -> Result<DlqQuery, ApiError> {
        let mut q = DlqQuery {
            limit: DEFAULT_LIMIT,
            ..DlqQuery::default()
        };
        let invalid = |reason: String| {
            ApiError::with_reason(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid dlq query",
                reason,
            )
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.trim().to_string();
            let non_empty = (!value.is_empty()).then(|| value.clone());
            match &*key {
                "tag" => q.tag = non_empty,
                "reason" => q.reason = non_empty,
                "run_id" => q.run_id = non_empty,
                "since" => {
                    q.since = match non_empty {
                        None => None,
                        Some(text) => Some(pydantic::float(&text).ok_or_else(|| {
                            invalid(format!("since {text:?}: a number of seconds"))
                        })?),
                    }
                }
                "limit" => {
                    q.limit = match pydantic::int(&value) {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n as usize,
                        _ => return Err(invalid(format!("limit {value:?}: 1 to {MAX_LIMIT}"))),
                    }
                }
                "cursor" => {
                    q.before = match non_empty {
                        None => None,
                        Some(text) => {
                            Some(text.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                                invalid(format!("cursor {text:?}: not one of ours"))
                            })?)
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// An entry's record as an object (a record that is not one reads as `{"reason": "unreadable"}`).
fn record_of(entry: &DlqEntry) -> Map<String, Value> {
    match pyoco_wire::from_python_json::<Value>(&entry.payload) {
        Ok(Value::Object(map)) => map,
        _ => {
            let mut map = Map::new();
            map.insert("reason".into(), json!("unreadable"));
            map
        }
    }
}

fn text(record: &Map<String, Value>, key: &str) -> Option<String> {
    record.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The job tag: the record's `tag`, else the subject's last token.
fn tag_of(entry: &DlqEntry, record: &Map<String, Value>) -> Option<String> {
    text(record, "tag").or_else(|| entry.subject.rsplit('.').next().map(str::to_string))
}

/// The list item of an entry.
fn item(entry: &DlqEntry, record: &Map<String, Value>) -> Value {
    json!({
        "id": entry.seq.to_string(),
        "run_id": text(record, "run_id"),
        "flow_name": text(record, "flow_name"),
        "tag": tag_of(entry, record),
        "reason": text(record, "reason").unwrap_or_else(|| "unknown".into()),
        "error": text(record, "error"),
        "timestamp": record.get("timestamp").and_then(Value::as_f64).or(Some(entry.stored_at)),
        "worker_id": text(record, "worker_id"),
        "num_delivered": record.get("num_delivered").and_then(Value::as_u64),
    })
}

fn matches(q: &DlqQuery, caller: &Caller, entry: &DlqEntry, record: &Map<String, Value>) -> bool {
    caller.can_see(record)
        && q.tag
            .as_deref()
            .is_none_or(|t| tag_of(entry, record).as_deref() == Some(t))
        && q.reason
            .as_deref()
            .is_none_or(|r| record.get("reason").and_then(Value::as_str) == Some(r))
        && q.run_id
            .as_deref()
            .is_none_or(|r| record.get("run_id").and_then(Value::as_str) == Some(r))
}

/// `GET /dlq`.
#[utoipa::path(
    get,
    path = "/dlq",
    operation_id = "list_dlq",
    tag = "dlq",
    summary = "Dead letters, newest first (ours)",
    description = "Entries of the DLQ stream written by any worker (ours or 0.5.1's), newest \
first, filtered by `tag`, `reason`, `run_id` and `since`, and by the caller's tenant when auth is \
on. One request walks at most 5,000 entries: a page can hold fewer than `limit` items and still \
have a `next_cursor`.",
    params(DlqParams),
    responses(
        (status = 200, description = "A page", body = DlqPage),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn list_dlq(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<PyJson<Value>, ApiError> {
    let q = DlqQuery::parse(query.as_deref())?;
    let store = state.store()?;
    let DlqState { first, last, .. } = store.dlq_state().await?;
    let mut top = match q.before {
        Some(before) => last.min(before.saturating_sub(1)),
        None => last,
    };
    let floor = first.max(1);
    let mut items = Vec::new();
    let mut scanned = 0;
    let mut next_cursor = None;
    'walk: while top >= floor && last > 0 {
        let bottom = top.saturating_sub(READ_CONCURRENCY as u64 - 1).max(floor);
        let entries = read_range(store, bottom, top).await?;
        for entry in entries.into_iter().rev() {
            scanned += 1;
            if let Some(entry) = entry {
                if q.since.is_some_and(|since| entry.stored_at < since) {
                    // Stored in order: everything below is older still.
                    next_cursor = None;
                    break 'walk;
                }
                let record = record_of(&entry);
                if matches(&q, &caller, &entry, &record) {
                    items.push(item(&entry, &record));
                    if items.len() == q.limit {
                        next_cursor = (entry.seq > floor).then(|| entry.seq.to_string());
                        break 'walk;
                    }
                }
            }
        }
        if bottom == floor {
            break;
        }
        top = bottom - 1;
        if scanned >= MAX_SCANNED {
            next_cursor = Some(bottom.to_string());
            break;
        }
    }
    add_replays(store, &mut items).await;
    Ok(PyJson(json!({"items": items, "next_cursor": next_cursor})))
}

/// The replays recorded for entry `seq` (oldest first; none when unreadable).
async fn replays_of(store: &Store, seq: &str) -> Vec<Value> {
    match store.dlq_replays().get(seq).await {
        Ok(Some(v)) => pyoco_wire::from_python_json::<Value>(&v.value)
            .ok()
            .and_then(|v| v.get("replays").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Set each item's `replayed_run_id` (the latest replay's run), reading the replays
/// concurrently.
async fn add_replays(store: &Store, items: &mut [Value]) {
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let replays: Vec<Vec<Value>> = stream::iter(ids)
        .map(|id| async move { replays_of(store, &id).await })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    for (item, replays) in items.iter_mut().zip(replays) {
        item["replayed_run_id"] = replays
            .last()
            .and_then(|r| r.get("run_id").cloned())
            .unwrap_or(Value::Null);
    }
}

/// Most entries one `/metrics` scrape reads to learn their reasons (the rest, on later scrapes).
const MAX_REASONS_READ: u64 = 20_000;

/// Dead letters by reason, for `/metrics`, given the stream's state (`None`, unreadable: the
/// counts as they were). Reads only the entries added since the last call.
pub(crate) async fn reason_counts(
    state: &AppState,
    store: &Store,
    dlq: Option<DlqState>,
) -> Vec<(String, u64)> {
    let mut cache = state.dlq_reasons().lock().await;
    if let Some(DlqState { first, last, .. }) = dlq {
        cache.seen = cache.seen.split_off(&first);
        if last < cache.last_seq {
            // A new stream (purged, recreated): start over.
            cache.seen.clear();
            cache.last_seq = 0;
        }
        let from = cache.last_seq.max(first.saturating_sub(1)) + 1;
        let to = last.min(from.saturating_add(MAX_REASONS_READ - 1));
        let mut bottom = from;
        while bottom <= to && bottom > 0 {
            let top = to.min(bottom + READ_CONCURRENCY as u64 - 1);
            let Ok(entries) = read_range(store, bottom, top).await else {
                break;
            };
            for entry in entries.into_iter().flatten() {
                let reason = text(&record_of(&entry), "reason").unwrap_or_else(|| "unknown".into());
                cache.seen.insert(entry.seq, Arc::from(reason));
            }
            cache.last_seq = top;
            bottom = top + 1;
        }
    }
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for reason in cache.seen.values() {
        *counts.entry(reason).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect()
}

/// The entries `bottom..=top`, read concurrently, in sequence order (`None`: no entry there).
async fn read_range(
    store: &Store,
    bottom: u64,
    top: u64,
) -> Result<Vec<Option<DlqEntry>>, ApiError> {
    let reads: Vec<_> = stream::iter(bottom..=top)
        .map(|seq| async move { store.dlq_entry(seq).await })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    reads
        .into_iter()
        .map(|r| r.map_err(ApiError::from))
        .collect()
}

/// The id of a path (a positive sequence), else 404 like an unknown entry.
fn seq_of(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "dlq entry not found")
}

/// The entry `id` the caller may see.
async fn visible_entry(
    store: &Store,
    caller: &Caller,
    id: &str,
) -> Result<(DlqEntry, Map<String, Value>), ApiError> {
    let entry = store.dlq_entry(seq_of(id)?).await?.ok_or_else(not_found)?;
    let record = record_of(&entry);
    if !caller.can_see(&record) {
        return Err(not_found());
    }
    Ok((entry, record))
}

/// `GET /dlq/{id}`.
#[utoipa::path(
    get,
    path = "/dlq/{id}",
    operation_id = "get_dlq",
    tag = "dlq",
    summary = "One dead letter with the job it came from (ours)",
    description = "The list item's fields, the record as stored (`record`), and `job`: for \
`invalid_job` the stored job body when it is JSON; otherwise what the run's snapshot says of the \
job (`run_id`, `flow_name`, `tag`, `tags`, `params`, `workflow_yaml_sha256`, \
`workflow_yaml_bytes`), null when the run is gone.",
    params(("id" = String, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The entry", body = Object),
        (status = 404, description = "`dlq entry not found`", body = Object),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn get_dlq(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<Value>, ApiError> {
    let Path(id) = id.map_err(|_| not_found())?;
    let store = state.store()?;
    let (entry, record) = visible_entry(store, &caller, &id).await?;
    let job = match (
        record.get("reason").and_then(Value::as_str),
        record.get("payload"),
    ) {
        (Some("invalid_job"), Some(Value::String(payload))) => {
            pyoco_wire::from_python_json::<Value>(payload.as_bytes())
                .ok()
                .filter(Value::is_object)
        }
        _ => match text(&record, "run_id") {
            Some(run_id) => job_from_run(store, &run_id).await,
            None => None,
        },
    };
    let mut out = item(&entry, &record);
    let replays = replays_of(store, &entry.seq.to_string()).await;
    out["replayed_run_id"] = replays
        .last()
        .and_then(|r| r.get("run_id").cloned())
        .unwrap_or(Value::Null);
    out["replays"] = Value::Array(replays);
    out["subject"] = json!(entry.subject);
    out["stored_at"] = json!(entry.stored_at);
    out["record"] = Value::Object(record);
    out["job"] = job.unwrap_or(Value::Null);
    Ok(PyJson(out))
}

fn not_replayable(reason: impl Into<String>) -> ApiError {
    ApiError::with_reason(
        StatusCode::CONFLICT,
        "dlq entry cannot be replayed",
        reason.into(),
    )
}

/// `POST /dlq/{id}/replay`.
#[utoipa::path(
    post,
    path = "/dlq/{id}/replay",
    operation_id = "replay_dlq",
    tag = "dlq",
    summary = "Run a dead letter's job again, as a new run (ours)",
    description = "Rebuilds the job from the run's snapshot (flow name, tag, tags, params) and, \
for a flow.yaml run, the flow.yaml this gateway kept (`PYOCO_WORKFLOW_KEEP_SEC`), checks the \
flow.yaml again like a submit, and queues a new run whose snapshot says `replayed_from`. Each \
replay is recorded; replaying again is allowed. 409 `dlq entry cannot be replayed` (with the \
reason) for an `invalid_job` entry, a run that is gone, or a flow.yaml that was not kept.",
    params(("id" = String, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "Queued", body = Object,
         example = json!({"run_id": "5b0f…", "status": "PENDING", "replayed_from": "42"})),
        (status = 404, description = "`dlq entry not found`", body = Object),
        (status = 409, description = "`dlq entry cannot be replayed`", body = Object),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn replay_dlq(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<Value>, ApiError> {
    let Path(id) = id.map_err(|_| not_found())?;
    let store = state.store()?;
    let (entry, record) = visible_entry(store, &caller, &id).await?;
    let reason = record.get("reason").and_then(Value::as_str).unwrap_or("");
    if reason == "invalid_job" || reason == "unreadable" {
        return Err(not_replayable(
            "the job of this entry could not be read when it failed; there is nothing to run again",
        ));
    }
    let Some(run_id) = text(&record, "run_id") else {
        return Err(not_replayable("the entry names no run"));
    };
    let Some(Value::Object(job)) = job_from_run(store, &run_id).await else {
        return Err(not_replayable(format!(
            "run {run_id} is gone from the runs bucket, and with it the job's params"
        )));
    };
    let workflow = match job.get("workflow_yaml_sha256").and_then(Value::as_str) {
        None => None,
        Some(sha) => {
            let kept = store.workflows().get(sha).await?;
            let Some(kept) = kept else {
                return Err(not_replayable(format!(
                    "the flow.yaml of run {run_id} (sha256 {sha}) was not kept: it was submitted \
                     through a gateway that does not keep them, or more than \
                     PYOCO_WORKFLOW_KEEP_SEC ago"
                )));
            };
            let (raw, workflow) =
                checked_workflow(&state, Upload::Fits(kept.value.to_vec())).await?;
            let text = String::from_utf8(raw)
                .map_err(|_| not_replayable("the kept flow.yaml is not UTF-8"))?;
            Some(pyoco_wire::WorkflowUpload {
                text,
                digest: workflow.digest,
            })
        }
    };
    let tag = job
        .get("tag")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or(state.default_tag())
        .to_string();
    let run = pyoco_wire::NewRun {
        run_id: new_run_id(),
        flow_name: job
            .get("flow_name")
            .and_then(Value::as_str)
            .unwrap_or("main")
            .to_string(),
        tag,
        tags: job
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        tenant_id: caller.tenant_id.clone(),
        api_key_id: caller.api_key_id.clone(),
        params: job
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        workflow,
    };
    let id = entry.seq.to_string();
    let mut extra = Map::new();
    extra.insert("replayed_from".into(), json!(id));
    let submitted = submit_new_run_with(&state, run, extra).await?.0;
    let new_run = submitted.run_id().to_string();
    record_replay(store, &id, &new_run, &caller).await;
    tracing::info!(dlq_id = %id, from_run = %run_id, run_id = %new_run, "dead letter replayed");
    Ok(PyJson(
        json!({"run_id": new_run, "status": "PENDING", "replayed_from": id}),
    ))
}

/// Append a replay to the entry's record (best effort; a lost race drops a record, never the
/// run).
async fn record_replay(store: &Store, id: &str, run_id: &str, caller: &Caller) {
    let mut replays = replays_of(store, id).await;
    replays.push(json!({
        "run_id": run_id,
        "at": pyoco_wire::python::time(),
        "api_key_id": caller.api_key_id,
    }));
    let value = pyoco_wire::to_python_json(&json!({ "replays": replays }));
    if let Err(err) = store.dlq_replays().put(id, value).await {
        tracing::warn!(dlq_id = %id, %run_id, "recording the replay failed: {err}");
    }
}

/// What a run's snapshot says of the job that started it (`None` when the run is gone or
/// unreadable).
async fn job_from_run(store: &Store, run_id: &str) -> Option<Value> {
    let stored = store.runs().get(run_id).await.ok()??;
    let snapshot: Map<String, Value> = pyoco_wire::from_python_json(&stored.value).ok()?;
    let mut job = Map::new();
    for key in [
        "run_id",
        "flow_name",
        "tag",
        "tags",
        "params",
        "workflow_yaml_sha256",
        "workflow_yaml_bytes",
    ] {
        if let Some(v) = snapshot.get(key) {
            job.insert(key.into(), v.clone());
        }
    }
    Some(Value::Object(job))
}

/// `DELETE /dlq/{id}`.
#[utoipa::path(
    delete,
    path = "/dlq/{id}",
    operation_id = "delete_dlq",
    tag = "dlq",
    summary = "Delete a dead letter (ours)",
    params(("id" = String, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "Deleted", body = Object,
         example = json!({"id": "42", "deleted": true})),
        (status = 404, description = "`dlq entry not found`", body = Object),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn delete_dlq(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<Value>, ApiError> {
    let Path(id) = id.map_err(|_| not_found())?;
    let store = state.store()?;
    let (entry, _) = visible_entry(store, &caller, &id).await?;
    if !store.dlq_delete(entry.seq).await? {
        return Err(not_found());
    }
    state.dlq_reasons().lock().await.seen.remove(&entry.seq);
    Ok(PyJson(
        json!({"id": entry.seq.to_string(), "deleted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        assert_eq!(
            DlqQuery::parse(None).unwrap(),
            DlqQuery {
                limit: 50,
                ..Default::default()
            }
        );
        let q = DlqQuery::parse(Some(
            "tag=cpu&reason=%20x%20&run_id=&since=1.5&limit=7&cursor=9",
        ))
        .unwrap();
        assert_eq!(q.tag.as_deref(), Some("cpu"));
        assert_eq!(q.reason.as_deref(), Some("x"));
        assert_eq!(q.run_id, None);
        assert_eq!((q.since, q.limit, q.before), (Some(1.5), 7, Some(9)));
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "cursor=abc",
            "cursor=0",
            "since=soon",
        ] {
            match DlqQuery::parse(Some(bad)) {
                Err(ApiError::Detail { detail, status, .. }) => {
                    assert_eq!(
                        (status.as_u16(), &*detail),
                        (422, "invalid dlq query"),
                        "{bad}"
                    )
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
