//! Live task logs (ours): `GET /runs/{run_id}/logs` pages through the lines a run's tasks
//! wrote (stream `PYOCO_TASK_LOGS`, one message per line, the item's `seq` its stream
//! sequence), `GET /runs/{run_id}/logs/watch` follows them as server-sent events, resumable
//! with `Last-Event-ID`, and ends after the run is terminal and its lines are delivered (the
//! worker publishes every line before it writes the terminal snapshot).
//!
//! Both read from `after + 1` with a subject filter: a page never reads the run's log from the
//! start. A run executed by a 0.5.1 worker has no lines: an empty page, a watch that ends when
//! the run is terminal.

use std::{convert::Infallible, pin::Pin, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{rejection::PathRejection, Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
    Router,
};
use futures::{Stream, StreamExt};
use pyoco_store::{LogItem, StoreError};
use pyoco_wire::{python, RunStatus};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use super::components::{CorruptRecord, NatsUnavailable, RunNotFound, Unprocessable};
use super::stored::load_run;
use super::watch::{sse_response, KeyWatch};
use crate::{auth::Caller, error::ApiError, json::PyJson, pydantic, AppState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: i128 = 1000;
/// Longest `task` filter (task names are at most this long in practice; flow names are too).
const MAX_TASK_BYTES: usize = 1024;
/// A `heartbeat` event goes out when nothing was sent for this long (like `/watch`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
const TIMEOUT_SEC_DEFAULT: u64 = 600;
const TIMEOUT_SEC_MAX: i128 = 3600;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{run_id}/logs", get(run_logs))
        .route("/runs/{run_id}/logs/watch", get(watch_logs))
}

// The query of `GET /runs/{run_id}/logs` as `/openapi.json` describes it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct LogsParams {
    /// Only lines of this task (lines written outside any task have none).
    #[param(max_length = 1024)]
    task: Option<String>,
    /// Only `stdout` or only `stderr` lines.
    #[param(pattern = "^(stdout|stderr)$")]
    stream: Option<String>,
    /// Lines after this `seq` (the previous page's `next`).
    #[param(minimum = 0, default = 0)]
    after: Option<i64>,
    /// Items per page.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

// The query of `GET /runs/{run_id}/logs/watch`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct LogsWatchParams {
    /// Start after this `seq` (else `Last-Event-ID`, else from the first line).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// End the stream after this many seconds even if the run goes on (reconnect with
    /// `Last-Event-ID`).
    #[param(minimum = 1, maximum = 3600, default = 600)]
    timeout_sec: Option<i64>,
}

/// One line a task wrote.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct LogLine {
    /// Increasing within a run (the stream sequence; not contiguous).
    #[schema(example = 42)]
    seq: u64,
    /// The task that wrote it; null for output outside any task (or of a child process while
    /// several tasks ran).
    task: Option<String>,
    #[schema(example = "stdout")]
    stream: String,
    /// The line, without its newline (at most 16 KiB; longer ones are cut with a marker).
    line: String,
    /// When it was written (epoch seconds).
    ts: f64,
}

/// A page of log lines, oldest first.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct LogPage {
    items: Vec<LogLine>,
    /// Pass as `after` for the next page; null when this page reached the current end.
    next: Option<u64>,
}

/// The `data` of the `end` event.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct LogEnd {
    #[schema(example = "COMPLETED")]
    status: String,
}

#[derive(Debug, PartialEq)]
struct LogsQuery {
    task: Option<String>,
    stream: Option<&'static str>,
    after: u64,
    limit: usize,
    timeout: Duration,
}

fn invalid(detail: String) -> ApiError {
    ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

impl LogsQuery {
    fn parse(query: Option<&str>, headers: Option<&HeaderMap>) -> Result<LogsQuery, ApiError> {
        let mut q = LogsQuery {
            task: None,
            stream: None,
            after: 0,
            limit: DEFAULT_LIMIT,
            timeout: Duration::from_secs(TIMEOUT_SEC_DEFAULT),
        };
        let mut after_given = false;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "task" => {
                    if value.len() > MAX_TASK_BYTES {
                        return Err(invalid(format!(
                            "task: at most {MAX_TASK_BYTES} bytes ({} given)",
                            value.len()
                        )));
                    }
                    q.task = (!value.is_empty()).then(|| value.into_owned());
                }
                "stream" => {
                    q.stream = match value.trim() {
                        "" => None,
                        "stdout" => Some("stdout"),
                        "stderr" => Some("stderr"),
                        other => {
                            return Err(invalid(format!(
                                "stream must be stdout or stderr, got {other:?}"
                            )))
                        }
                    }
                }
                "after" => {
                    after_given = true;
                    q.after = match pydantic::int(value.trim()) {
                        Ok(n) if (0..=i128::from(i64::MAX)).contains(&n) => n as u64,
                        _ => {
                            return Err(invalid(format!(
                                "after must be an integer ≥ 0 (a seq), got {value:?}"
                            )))
                        }
                    }
                }
                "limit" => {
                    q.limit = match pydantic::int(value.trim()) {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n as usize,
                        _ => {
                            return Err(invalid(format!(
                                "limit must be an integer from 1 to {MAX_LIMIT}, got {value:?}"
                            )))
                        }
                    }
                }
                "timeout_sec" => {
                    q.timeout = match pydantic::int(value.trim()) {
                        Ok(n) if (1..=TIMEOUT_SEC_MAX).contains(&n) => {
                            Duration::from_secs(n as u64)
                        }
                        _ => {
                            return Err(invalid(format!(
                        "timeout_sec must be an integer from 1 to {TIMEOUT_SEC_MAX}, got {value:?}"
                    )))
                        }
                    }
                }
                _ => {}
            }
        }
        if !after_given {
            // A reconnecting EventSource says what it has; an id we did not hand out is ignored.
            if let Some(id) = headers
                .and_then(|h| h.get("last-event-id"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                q.after = id;
            }
        }
        Ok(q)
    }
}

/// `GET /runs/{run_id}/logs`.
#[utoipa::path(
    get,
    path = "/runs/{run_id}/logs",
    operation_id = "run_logs",
    tag = "runs",
    summary = "The lines the run's tasks wrote (ours)",
    description = "Lines written to stdout/stderr by the run's tasks (Python-level and \
file-descriptor-level, child processes included), oldest first, after `after`. `next` is the \
`after` of the next page, null when the page reached the current end. With `task`, one request \
reads at most 10,000 lines: a page can hold fewer than `limit` items and still have a `next`. \
Beyond the per-run cap (`PYOCO_TASK_LOG_MAX_BYTES_PER_RUN`) lines are dropped and a marker \
line says so. A run executed by a 0.5.1 worker has none.",
    params(("run_id" = String, Path, description = "The run's id"), LogsParams),
    responses(
        (status = 200, description = "A page", body = LogPage),
        (status = 404, response = RunNotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn run_logs(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<PyJson<Value>, ApiError> {
    let Path(run_id) = run_id?;
    let q = LogsQuery::parse(query.as_deref(), None)?;
    let store = state.store()?;
    load_run(store, &caller, &run_id).await?;
    let page = store
        .task_log_page(&run_id, q.after, q.limit, q.stream, q.task.as_deref())
        .await?;
    Ok(PyJson(json!({"items": page.items, "next": page.next})))
}

/// `GET /runs/{run_id}/logs/watch`.
#[utoipa::path(
    get,
    path = "/runs/{run_id}/logs/watch",
    operation_id = "watch_run_logs",
    tag = "runs",
    summary = "Follow the run's log lines as server-sent events (ours)",
    description = "One `log` event per line (`id: <seq>`, `data`: the line as in `GET \
/runs/{run_id}/logs`), from after `after` / `Last-Event-ID`: the stored lines first, then new \
ones as they are written. A `heartbeat` event 5 s after the last event. After the run is \
terminal and all its lines were sent, an `end` event (`{\"status\": …}`) closes the stream; it \
also ends after `timeout_sec`, when the run is deleted, or on NATS trouble (reconnect with \
`Last-Event-ID`). Errors before the stream starts are ordinary JSON answers.",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        LogsWatchParams,
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
         description = "The `id` (seq) of the last line the client has (`after` wins)"),
    ),
    responses(
        (status = 200, description = "The event stream: `log` (data LogLine), `heartbeat`, `end` (data LogEnd)",
         content_type = "text/event-stream", body = String),
        (status = 404, response = RunNotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn watch_logs(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(run_id) = run_id?;
    let q = LogsQuery::parse(query.as_deref(), Some(&headers))?;
    let store = state.store()?;
    load_run(store, &caller, &run_id).await?;
    // The run's changes first, then the lines: a terminal status seen later is one whose lines
    // were all published before it.
    let watch = KeyWatch::open(&state, store, &run_id).await?;
    let lines = store.task_log_follow(&run_id, q.after).await?;
    let now = Instant::now();
    let events = LogEvents {
        store: store.clone(),
        run_id,
        caller,
        watch,
        lines: Box::new(lines),
        last: q.after,
        end_at: None,
        status: None,
        deadline: now + q.timeout,
        next_heartbeat: now + HEARTBEAT_INTERVAL,
        done: false,
        shutdown: Box::pin(state.shutting_down()),
    };
    let body = Body::from_stream(futures::stream::unfold(events, |mut events| async move {
        let frame = events.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), events))
    }));
    Ok(sse_response(body))
}

type LineStream = Box<dyn Stream<Item = Result<LogItem, StoreError>> + Send + Unpin>;

struct LogEvents {
    store: pyoco_store::Store,
    run_id: String,
    caller: Caller,
    watch: KeyWatch,
    lines: LineStream,
    /// The seq of the last line sent.
    last: u64,
    /// Once the run is terminal: the seq of its last line (end when it was sent).
    end_at: Option<u64>,
    status: Option<String>,
    deadline: Instant,
    next_heartbeat: Instant,
    done: bool,
    shutdown: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl LogEvents {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            if let (Some(end), Some(status)) = (self.end_at, &self.status) {
                if self.last >= end {
                    self.done = true;
                    return frame("end", None, &json!({ "status": status }));
                }
            }
            if Instant::now() >= self.deadline {
                return None;
            }
            let wake = self.next_heartbeat.min(self.deadline);
            let watching = self.status.is_none();
            tokio::select! {
                biased;
                () = &mut self.shutdown => return None,
                line = self.lines.next() => match line {
                    Some(Ok(item)) => {
                        if item.seq <= self.last {
                            continue;
                        }
                        self.last = item.seq;
                        self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                        return frame("log", Some(item.seq), &item);
                    }
                    Some(Err(err)) => {
                        tracing::debug!(run_id = %self.run_id, "log watch ended: {err}");
                        return None;
                    }
                    None => return None,
                },
                change = self.watch.next(), if watching => {
                    let Some(Ok(change)) = change else { return None };
                    let value = change.value?; // None: the run was deleted
                    let snapshot = match pyoco_wire::value_from_python_json(&value) {
                        Ok(Value::Object(map)) => map,
                        _ => return None,
                    };
                    if !self.caller.can_see(&snapshot) {
                        return None;
                    }
                    let status = snapshot.get("status").and_then(Value::as_str).unwrap_or("");
                    if RunStatus::parse(status).is_terminal() {
                        match self.store.task_log_last_seq(&self.run_id).await {
                            Ok(end) => {
                                self.status = Some(status.to_string());
                                self.end_at = Some(end);
                            }
                            Err(err) => {
                                tracing::debug!(run_id = %self.run_id, "log watch ended: {err}");
                                return None;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= self.deadline {
                        return None;
                    }
                    if self.store.check_connected().is_err() {
                        return None;
                    }
                    self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                    return frame("heartbeat", None, &json!({"run_id": self.run_id, "ts": python::time()}));
                }
            }
        }
    }
}

fn frame(name: &str, id: Option<u64>, data: &impl Serialize) -> Option<Bytes> {
    let json = pyoco_wire::try_to_python_json(data).ok()?;
    let mut out = Vec::with_capacity(json.len() + name.len() + 40);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json);
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.push(b'\n');
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(query: &str) -> String {
        match LogsQuery::parse(Some(query), None) {
            Err(ApiError::Detail { status, detail, .. }) => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                detail.into_owned()
            }
            other => panic!("{query}: expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_values() {
        let q = LogsQuery::parse(Some(""), None).unwrap();
        assert_eq!((q.after, q.limit, q.stream, q.task), (0, 100, None, None));
        let q = LogsQuery::parse(Some("after=7&limit=1000&stream=stderr&task=t1"), None).unwrap();
        assert_eq!(
            (q.after, q.limit, q.stream, q.task.as_deref()),
            (7, 1000, Some("stderr"), Some("t1"))
        );
    }

    #[test]
    fn limits_give_a_clear_422() {
        assert!(detail("limit=0").contains("limit must be an integer from 1 to 1000"));
        assert!(detail("limit=1001").contains("1 to 1000"));
        assert!(detail("limit=x").contains("\"x\""));
        assert!(detail("after=-1").contains("after must be an integer ≥ 0"));
        assert!(detail("stream=both").contains("stream must be stdout or stderr"));
        assert!(detail(&format!("task={}", "t".repeat(1025))).contains("at most 1024 bytes"));
        assert!(detail("timeout_sec=0").contains("timeout_sec"));
    }

    #[test]
    fn last_event_id_resumes_unless_after_is_given() {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "41".parse().unwrap());
        assert_eq!(LogsQuery::parse(None, Some(&h)).unwrap().after, 41);
        assert_eq!(
            LogsQuery::parse(Some("after=3"), Some(&h)).unwrap().after,
            3
        );
        h.insert("last-event-id", "nope".parse().unwrap());
        assert_eq!(LogsQuery::parse(None, Some(&h)).unwrap().after, 0);
    }
}
