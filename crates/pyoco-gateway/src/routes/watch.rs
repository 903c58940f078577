//! `GET /runs/{run_id}/watch`: a run's snapshots as Server-Sent Events (contract §3.2, §14-23).
//!
//! 0.5.1 polls the KV key every 0.5 s; here each stream follows the gateway's one **KV watch**
//! of the runs bucket (the run index's, `index.rs`), so a change reaches the client within
//! milliseconds and an idle stream costs nothing but a timer and a channel: no JetStream
//! consumer per stream (0.5.1's polling aside, a consumer each ran into the server's limit at
//! about 1,000 watchers). A stream subscribes to its key first, then reads the current value:
//! no change between "read" and "watch" can fall through the gap, and no revision is sent
//! twice (older ones, from the index catching up, are skipped). A watcher that falls behind
//! skips to the newest snapshot.
//!
//! The frames are the ones old clients parse (`event:` and one `data:` line of compact,
//! ASCII-safe JSON); `snapshot` frames add an `id: <KV revision>` line, which the Python client
//! and the dashboard ignore and which lets a reconnecting client say what it already has
//! (`Last-Event-ID`). Opt-in, invisible to old clients: `until_terminal=true` ends the stream
//! right after a terminal snapshot. The deliberate differences are listed in `DIFFERENCES.md`.
//!
//! The OpenAPI description of the frames ([`WatchEvent`]) is here too, next to the code that
//! writes them; only this route sends them.

use std::{borrow::Cow, convert::Infallible, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{rejection::PathRejection, Path, RawQuery, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use pyoco_store::Store;
use pyoco_wire::{python, RunStatus};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use utoipa::{
    openapi::{
        extensions::Extensions,
        schema::{ObjectBuilder, OneOfBuilder, Schema, Type},
        RefOr,
    },
    IntoParams, PartialSchema, ToSchema,
};

use super::components::{
    BadRequest, CorruptRecord, NatsUnavailable, RunNotFound, RunSnapshot, Unprocessable,
};
use super::stored::{load_run, Include, IncludeParams};
use crate::{
    auth::Caller,
    error::{ApiError, FieldError},
    index::KeySubscription,
    AppState,
};

/// A `heartbeat` event goes out when nothing was sent for this long (0.5.1: 5 s).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// `timeout_sec` bounds and default (0.5.1: `Query(default=60, ge=1, le=600)`).
const TIMEOUT_SEC_MIN: i64 = 1;
const TIMEOUT_SEC_MAX: i64 = 600;
const TIMEOUT_SEC_DEFAULT: u64 = 60;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/runs/{run_id}/watch", get(watch_run))
}

/// `GET /runs/{run_id}/watch`: validate, check the run exists and is the caller's, open the KV
/// watch, then stream. Anything that fails before the first byte is an ordinary JSON error.
#[utoipa::path(
    get,
    path = "/runs/{run_id}/watch",
    operation_id = "watch_run",
    tag = "runs",
    summary = "Follow a run as server-sent events",
    description = "A `snapshot` event with the current snapshot at once (unless `since` or \
`Last-Event-ID` says the client has it), then one per change, each with `id: <KV revision>`; a \
`heartbeat` event 5 s after the last event. The stream ends after `timeout_sec`, when the run \
is deleted, on NATS trouble, or (`until_terminal=true`) after a terminal snapshot. Errors before \
the stream starts are ordinary JSON answers.",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        IncludeParams,
        WatchParams,
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
         description = "The `id` of the last event the client has (`last_event_id` wins)"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream",
         body = WatchEvent),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn watch_run(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(run_id) = run_id?;
    let query = WatchQuery::parse(query.as_deref(), &headers)?;
    let store = state.store()?;
    // 404 `run not found` (also for another tenant's run), 503, or 500 for a corrupt record.
    load_run(store, &caller, &run_id).await?;
    let watch = KeyWatch::open(&state, store, &run_id).await?;
    tracing::debug!(%run_id, "watch started");

    let stream = RunEvents::new(
        store.clone(),
        watch,
        run_id,
        caller,
        query,
        state.shutting_down(),
    );
    let body = Body::from_stream(futures::stream::unfold(stream, |mut events| async move {
        let frame = events.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), events))
    }));
    Ok(sse_response(body))
}

/// 200 with the headers 0.5.1 (Starlette) sends.
pub(crate) fn sse_response(body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

// The query of a watch (besides `include`) as `/openapi.json` describes it; `WatchQuery::parse`
// reads it, the last of repeated values winning.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct WatchParams {
    /// Leave out snapshots whose `updated_at` is older.
    since: Option<f64>,
    /// End the stream after this many seconds.
    #[param(minimum = 1, maximum = 600, default = 60)]
    timeout_sec: Option<i64>,
    /// End the stream right after a `COMPLETED`, `FAILED` or `CANCELLED` snapshot.
    #[param(default = false)]
    until_terminal: Option<bool>,
    /// The `id` of the last event the client has (else the `Last-Event-ID` header): when it is
    /// the run's current revision, the current snapshot is not sent again. A value that is not
    /// a revision (a decimal number) is ignored.
    #[param(example = "42")]
    last_event_id: Option<String>,
}

/// The query of a watch, validated like FastAPI validates 0.5.1's signature
/// (`include: list[str]`, `since: float | None`, `timeout_sec: int = Query(60, ge=1, le=600)`),
/// plus this version's opt-ins.
#[derive(Debug, Clone, PartialEq)]
struct WatchQuery {
    include: Include,
    /// Snapshots whose `updated_at` is older are not sent.
    since: Option<f64>,
    timeout: Duration,
    /// `until_terminal=true`: end the stream after a terminal snapshot.
    until_terminal: bool,
    /// `last_event_id` query, else the `Last-Event-ID` header: the revision the client has.
    last_event_id: Option<u64>,
}

impl WatchQuery {
    /// A repeated parameter counts with its last value (Starlette). Every invalid parameter is
    /// reported in one FastAPI-style 422 list, in declaration order.
    fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<WatchQuery, ApiError> {
        let mut since = None;
        let mut timeout_sec = None;
        let mut until_terminal = None;
        let mut last_event_id = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*key {
                "since" => &mut since,
                "timeout_sec" => &mut timeout_sec,
                "until_terminal" => &mut until_terminal,
                "last_event_id" => &mut last_event_id,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }

        let mut errors = Vec::new();
        let since = since.and_then(|raw| match crate::pydantic::float(&raw) {
            Some(f) => Some(f),
            None => {
                errors.push(invalid(
                    "float_parsing",
                    "since",
                    "Input should be a valid number, unable to parse string as a number",
                    raw,
                ));
                None
            }
        });
        let timeout_sec = match timeout_sec {
            None => TIMEOUT_SEC_DEFAULT,
            Some(raw) => match crate::pydantic::int_opt(&raw) {
                None => {
                    errors.push(invalid(
                        "int_parsing",
                        "timeout_sec",
                        "Input should be a valid integer, unable to parse string as an integer",
                        raw,
                    ));
                    TIMEOUT_SEC_DEFAULT
                }
                Some(n) if n < i128::from(TIMEOUT_SEC_MIN) => {
                    errors.push(FieldError {
                        ctx: Some(serde_json::json!({ "ge": TIMEOUT_SEC_MIN })),
                        ..invalid(
                            "greater_than_equal",
                            "timeout_sec",
                            "Input should be greater than or equal to 1",
                            raw,
                        )
                    });
                    TIMEOUT_SEC_DEFAULT
                }
                Some(n) if n > i128::from(TIMEOUT_SEC_MAX) => {
                    errors.push(FieldError {
                        ctx: Some(serde_json::json!({ "le": TIMEOUT_SEC_MAX })),
                        ..invalid(
                            "less_than_equal",
                            "timeout_sec",
                            "Input should be less than or equal to 600",
                            raw,
                        )
                    });
                    TIMEOUT_SEC_DEFAULT
                }
                // In range, so it fits.
                Some(n) => n as u64,
            },
        };
        let until_terminal = match until_terminal {
            None => false,
            Some(raw) => crate::pydantic::boolean(&raw).unwrap_or_else(|| {
                errors.push(invalid(
                    "bool_parsing",
                    "until_terminal",
                    "Input should be a valid boolean, unable to interpret input",
                    raw,
                ));
                false
            }),
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }

        // An id we did not hand out (not a revision) is ignored, as SSE ids are opaque to
        // the client: the client then simply gets the current snapshot.
        let last_event_id = last_event_id
            .or_else(|| {
                headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .and_then(|raw| raw.trim().parse::<u64>().ok());

        Ok(WatchQuery {
            include: Include::parse(query),
            since,
            timeout: Duration::from_secs(timeout_sec),
            until_terminal,
            last_event_id,
        })
    }
}

/// A pydantic v2 error for the query parameter `name`.
fn invalid(kind: &'static str, name: &'static str, msg: &'static str, raw: String) -> FieldError {
    FieldError {
        kind,
        loc: vec!["query".into(), name.into()],
        msg: msg.into(),
        input: Value::String(raw),
        ctx: None,
    }
}

/// The changes of one run for one stream: its value when the stream starts, then what the
/// gateway's one watch of the runs bucket (the run index's) delivers for the key. No
/// JetStream consumer per stream: 10,000 streams cost memory, not NATS resources.
pub(crate) struct KeyWatch {
    /// Subscribed before the current value was read, so no change falls into the gap.
    subscription: KeySubscription,
    /// The current value when the stream started; handed out first.
    first: Option<Change>,
    /// The last revision handed out: an older one (the index catching up) is skipped.
    last_revision: u64,
}

impl KeyWatch {
    pub(crate) async fn open(
        state: &AppState,
        store: &Store,
        key: &str,
    ) -> Result<KeyWatch, ApiError> {
        let subscription = state.run_index().subscribe(key);
        let current = store.runs().get(key).await?;
        let first = current.map(|entry| Change {
            revision: entry.revision,
            value: Some(entry.value),
        });
        Ok(KeyWatch {
            subscription,
            first,
            last_revision: 0,
        })
    }

    /// The next change of the key: `None` when the watch broke.
    pub(crate) async fn next(&mut self) -> Option<Result<Change, String>> {
        if let Some(first) = self.first.take() {
            self.last_revision = first.revision;
            return Some(Ok(first));
        }
        loop {
            let change = self.subscription.changed().await?;
            if change.revision <= self.last_revision {
                continue;
            }
            self.last_revision = change.revision;
            return Some(Ok(Change {
                revision: change.revision,
                value: change.value,
            }));
        }
    }
}

/// One revision of the watched key; `value` is `None` for a delete or purge marker.
pub(crate) struct Change {
    pub(crate) revision: u64,
    pub(crate) value: Option<Bytes>,
}

/// The `data` of a `snapshot` event.
#[derive(Serialize, ToSchema)]
pub(crate) struct SnapshotEvent<'a> {
    #[schema(value_type = String)]
    run_id: &'a str,
    /// Filtered like `GET /runs/{run_id}` (`include`), without worker liveness.
    #[schema(value_type = RunSnapshot)]
    snapshot: &'a Map<String, Value>,
    /// When the event was sent (seconds since the epoch).
    ts: f64,
}

/// The `data` of a `heartbeat` event (5 s after the last event sent).
#[derive(Serialize, ToSchema)]
pub(crate) struct HeartbeatEvent<'a> {
    #[schema(value_type = String)]
    run_id: &'a str,
    ts: f64,
}

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

/// The event source of one stream.
struct RunEvents {
    store: Store,
    watch: KeyWatch,
    run_id: String,
    caller: Caller,
    query: WatchQuery,
    deadline: Instant,
    next_heartbeat: Instant,
    /// Whether the first revision (the value current when the watch started) is still ahead.
    first: bool,
    /// Set after the frame that ends the stream.
    done: bool,
    /// Resolves when the server shuts down: the stream ends so shutdown is not held up.
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl RunEvents {
    fn new(
        store: Store,
        watch: KeyWatch,
        run_id: String,
        caller: Caller,
        query: WatchQuery,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> RunEvents {
        let now = Instant::now();
        RunEvents {
            store,
            watch,
            run_id,
            caller,
            deadline: now + query.timeout,
            next_heartbeat: now + HEARTBEAT_INTERVAL,
            query,
            first: true,
            done: false,
            shutdown: Box::pin(shutdown),
        }
    }

    /// The next frame to send, or `None` when the stream ends.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            // Checked here too: a key changing non-stop must not keep the stream past it.
            if Instant::now() >= self.deadline {
                tracing::debug!(run_id = %self.run_id, "watch ended: timeout");
                return None;
            }
            let wake = self.next_heartbeat.min(self.deadline);
            tokio::select! {
                biased;
                () = &mut self.shutdown => {
                    tracing::debug!(run_id = %self.run_id, "watch ended: server shutting down");
                    return None;
                }
                change = self.watch.next() => {
                    let change = match change {
                        Some(Ok(change)) => change,
                        Some(Err(err)) => {
                            tracing::debug!(run_id = %self.run_id, "watch ended: {err}");
                            return None;
                        }
                        None => {
                            tracing::debug!(run_id = %self.run_id, "watch ended: subscription closed");
                            return None;
                        }
                    };
                    match self.on_change(change) {
                        Step::Send(frame) => {
                            self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                            return Some(frame);
                        }
                        Step::Skip => {}
                        Step::End => return None,
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= self.deadline {
                        tracing::debug!(run_id = %self.run_id, "watch ended: timeout");
                        return None;
                    }
                    // An ordered consumer waits out a NATS outage silently; end the stream
                    // like 0.5.1 does on a NATS error, so the client reconnects (and sees 503).
                    if let Err(err) = self.store.check_connected() {
                        tracing::debug!(run_id = %self.run_id, "watch ended: {err}");
                        return None;
                    }
                    self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                    return self.frame(
                        "heartbeat",
                        None,
                        &HeartbeatEvent { run_id: &self.run_id, ts: python::time() },
                    );
                }
            }
        }
    }

    /// What a new revision of the key means for the stream.
    fn on_change(&mut self, change: Change) -> Step {
        let first = std::mem::take(&mut self.first);
        let Some(value) = change.value else {
            tracing::debug!(run_id = %self.run_id, "watch ended: run deleted");
            return Step::End;
        };
        let mut snapshot = match pyoco_wire::value_from_python_json(&value) {
            Ok(Value::Object(map)) => map,
            _ => {
                tracing::warn!(run_id = %self.run_id, revision = change.revision, "watch ended: the run record is not a JSON object");
                return Step::End;
            }
        };
        if !self.caller.can_see(&snapshot) {
            tracing::debug!(run_id = %self.run_id, "watch ended: run moved to another tenant");
            return Step::End;
        }
        let terminal = snapshot
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| RunStatus::parse(s).is_terminal());
        let end_after = terminal && self.query.until_terminal;
        // The client said it holds this revision: nothing new to tell it.
        let already_has = first && self.query.last_event_id == Some(change.revision);
        let too_old = self
            .query
            .since
            .is_some_and(|since| updated_at(&snapshot) < since);
        if already_has || too_old {
            return if end_after { Step::End } else { Step::Skip };
        }
        self.query.include.apply(&mut snapshot);
        let event = SnapshotEvent {
            run_id: &self.run_id,
            snapshot: &snapshot,
            ts: python::time(),
        };
        match self.frame("snapshot", Some(change.revision), &event) {
            Some(frame) => {
                self.done = end_after;
                Step::Send(frame)
            }
            None => Step::End,
        }
    }

    /// `event: <name>\ndata: <json>\n[id: <revision>\n]\n`; the JSON has no raw newline (JSON
    /// escapes them), so it is always one `data:` line.
    fn frame(&self, name: &str, id: Option<u64>, data: &impl Serialize) -> Option<Bytes> {
        let json = match pyoco_wire::try_to_python_json(data) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(run_id = %self.run_id, "watch ended: encoding an event failed: {err}");
                return None;
            }
        };
        let mut frame = Vec::with_capacity(json.len() + name.len() + 40);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(name.as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        frame.extend_from_slice(&json);
        frame.push(b'\n');
        if let Some(id) = id {
            frame.extend_from_slice(format!("id: {id}\n").as_bytes());
        }
        frame.push(b'\n');
        Some(Bytes::from(frame))
    }
}

enum Step {
    Send(Bytes),
    Skip,
    End,
}

/// `float(snapshot.get("updated_at") or 0.0)`, with anything `float()` would choke on read
/// as 0.
fn updated_at(snapshot: &Map<String, Value>) -> f64 {
    python::float_or_zero(snapshot.get("updated_at")).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<WatchQuery, ApiError> {
        WatchQuery::parse(Some(query), &HeaderMap::new())
    }

    fn errors(query: &str) -> Value {
        match parse(query) {
            Err(ApiError::Validation(errors)) => serde_json::to_value(errors).unwrap(),
            other => panic!("{query}: expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_those_of_0_5_1() {
        let q = parse("").unwrap();
        assert_eq!(q.timeout, Duration::from_secs(60));
        assert_eq!(q.since, None);
        assert!(!q.until_terminal);
        assert_eq!(q.last_event_id, None);
        assert_eq!(q.include, Include::parse(None));
    }

    #[test]
    fn query_values_parse_like_pydantic() {
        // Values checked against pydantic 2.14.
        for (raw, want) in [
            ("1.00", Some(1)),
            ("+0", Some(0)),
            ("0010", Some(10)),
            ("5 ", Some(5)),
            ("1_0", Some(10)),
            ("1.", None),
            ("0x10", None),
            (" ", None),
            ("1__0", None),
            ("_1", None),
            ("1e1", None),
            ("1.5", None),
        ] {
            assert_eq!(crate::pydantic::int_opt(raw), want, "{raw:?}");
        }
        for (raw, want) in [
            ("1_000.5", Some(1000.5)),
            (" 2 ", Some(2.0)),
            ("1.5e-3", Some(0.0015)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("+1", Some(1.0)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("0x1", None),
            ("1__0", None),
            ("", None),
        ] {
            assert_eq!(crate::pydantic::float(raw), want, "{raw:?}");
        }
        assert!(crate::pydantic::float("NaN").unwrap().is_nan());
        assert_eq!(crate::pydantic::boolean("TRUE"), Some(true));
        assert_eq!(crate::pydantic::boolean("off"), Some(false));
        assert_eq!(crate::pydantic::boolean("2"), None);
    }

    #[test]
    fn invalid_parameters_give_fastapis_422_list() {
        // Bodies recorded from the 0.5.1 app.
        assert_eq!(
            errors("since=abc&timeout_sec=0"),
            serde_json::json!([
                {"type":"float_parsing","loc":["query","since"],"msg":"Input should be a valid number, unable to parse string as a number","input":"abc"},
                {"type":"greater_than_equal","loc":["query","timeout_sec"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}
            ])
        );
        assert_eq!(
            errors("timeout_sec=5&timeout_sec=99999999999999999999999"),
            serde_json::json!([
                {"type":"less_than_equal","loc":["query","timeout_sec"],"msg":"Input should be less than or equal to 600","input":"99999999999999999999999","ctx":{"le":600}}
            ])
        );
        assert_eq!(
            errors("timeout_sec="),
            serde_json::json!([
                {"type":"int_parsing","loc":["query","timeout_sec"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":""}
            ])
        );
        assert_eq!(errors("until_terminal=maybe")[0]["type"], "bool_parsing");
    }

    #[test]
    fn last_event_id_comes_from_the_query_or_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static("41"));
        let q = WatchQuery::parse(None, &headers).unwrap();
        assert_eq!(q.last_event_id, Some(41));
        let q = WatchQuery::parse(Some("last_event_id=42"), &headers).unwrap();
        assert_eq!(q.last_event_id, Some(42));
        headers.insert("last-event-id", HeaderValue::from_static("not-ours"));
        assert_eq!(
            WatchQuery::parse(None, &headers).unwrap().last_event_id,
            None
        );
    }

    #[test]
    fn updated_at_reads_like_python_float_or_zero() {
        let snap = |v: Value| {
            let mut m = Map::new();
            m.insert("updated_at".into(), v);
            m
        };
        assert_eq!(updated_at(&snap(Value::from(12.5))), 12.5);
        assert_eq!(updated_at(&snap(Value::from("3.5"))), 3.5);
        assert_eq!(updated_at(&snap(Value::Null)), 0.0);
        assert_eq!(updated_at(&Map::new()), 0.0);
    }
}
