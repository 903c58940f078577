//! `GET /runs`: runs newest first, filtered and paged (contract §3.2), answered from the
//! [`RunIndex`](crate::index::RunIndex) instead of reading every snapshot (§14-19).
//!
//! The query is validated as FastAPI validates 0.5.1's signature (`updated_after: float`,
//! `limit: int` 1..=200, last value wins), with pydantic's 422 list for bad values. Both
//! response shapes are kept: a bare array (compat) unless `updated_after`, `cursor` (even
//! empty) or a non-empty `workflow_yaml_sha256` asks for `{"items", "next_cursor"}` (vNext).
//! Summary items come pre-encoded from the index; `include=full|all` reads the full snapshots
//! of the page's runs only, concurrently, and keeps the page order.

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
    routing::get,
    Router,
};
use futures::future::join_all;
use pyoco_store::Store;
use pyoco_wire::RunsCursor;
use serde_json::{json, Value};
use utoipa::IntoParams;

use super::components::{NatsUnavailable, RunList, Unprocessable};
use crate::pydantic;
use crate::{
    auth::Caller,
    error::{json_bytes_response, log_refusal, ApiError, FieldError},
    index::{PageQuery, READY_WAIT},
    AppState,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/runs", get(list_runs))
}

/// The page size when `limit` is absent.
const DEFAULT_LIMIT: usize = 50;
/// `limit` bounds (`Query(ge=1, le=200)`).
const MIN_LIMIT: i128 = 1;
const MAX_LIMIT: i128 = 200;

/// `GET /runs`.
#[utoipa::path(
    get,
    path = "/runs",
    operation_id = "list_runs",
    tag = "runs",
    summary = "List runs, newest first",
    description = "Sorted by `(updated_at, run_id)`, newest first, filtered and paged. The \
answer is a bare array (0.5.1's shape) unless `updated_after`, `cursor` (even empty) or a \
non-empty `workflow_yaml_sha256` asks for a page `{\"items\", \"next_cursor\"}`. Items are \
summaries (the summary keys present in the snapshot) unless `include=full|all`.",
    params(ListRunsParams),
    responses(
        (status = 200, description = "The runs", body = RunList),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(query.as_deref())?;
    respond(&state, &caller, &params).await
}

/// `GET /schedules/{id}/runs` (pyoco-server 0.7): the runs of one schedule as a bare array,
/// newest first; the query is read as `GET /runs`'s (`limit`, `include`), other filters
/// ignored.
pub(super) async fn list_schedule_runs(
    state: &AppState,
    caller: &Caller,
    schedule_id: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut params = ListParams::parse(query)?;
    params.status = None;
    params.flow = None;
    params.tag = None;
    params.workflow_yaml_sha256 = None;
    params.updated_after = None;
    params.cursor = None;
    params.vnext = false;
    params.schedule_id = Some(schedule_id.to_string());
    respond(state, caller, &params).await
}

async fn respond(
    state: &AppState,
    caller: &Caller,
    params: &ListParams,
) -> Result<Response, ApiError> {
    let cursor = params.cursor()?;
    let store = state.store()?;
    let index = state.run_index();
    index.ready(READY_WAIT).await?;

    let query = PageQuery {
        status: params.status.as_deref(),
        flow_name: params.flow.as_deref(),
        tag: params.tag.as_deref(),
        workflow_yaml_sha256: params.workflow_yaml_sha256.as_deref(),
        schedule_id: params.schedule_id.as_deref(),
        tenant_id: caller.tenant_id.as_deref(),
        updated_after: params.updated_after,
        cursor: cursor.as_ref(),
        limit: params.limit,
    };
    let mut body = Vec::with_capacity(256 * params.limit.min(64) + 64);
    body.extend_from_slice(if params.vnext { b"{\"items\":[" } else { b"[" });
    let next_cursor = if params.full {
        let page = index.page(&query, |run| run.key());
        write_full_snapshots(store, caller, &page.items, &mut body).await?;
        page.next_cursor
    } else {
        let mut first = true;
        let page = index.page(&query, |run| {
            if !std::mem::take(&mut first) {
                body.push(b',');
            }
            if params.times {
                run.write_summary_with_times(&mut body);
            } else {
                run.write_summary(&mut body);
            }
        });
        page.next_cursor
    };
    body.push(b']');
    if params.vnext {
        body.extend_from_slice(b",\"next_cursor\":");
        match next_cursor {
            Some(cursor) => body.extend_from_slice(&pyoco_wire::to_python_json(&cursor.encode())),
            None => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
    }
    Ok(json_bytes_response(StatusCode::OK, body))
}

/// The stored snapshots of `keys`, read concurrently, written in `keys` order. A run deleted
/// since the index saw it, or now unreadable, is left out.
async fn write_full_snapshots(
    store: &Store,
    caller: &Caller,
    keys: &[String],
    body: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let runs = store.runs();
    let entries = join_all(keys.iter().map(|key| runs.get(key))).await;
    let mut first = true;
    for (key, entry) in keys.iter().zip(entries) {
        let Some(entry) = entry? else { continue };
        let snapshot = match pyoco_wire::value_from_python_json(&entry.value) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                tracing::warn!(run_id = %key, "skipping a corrupt run snapshot: not a JSON object");
                continue;
            }
            Err(err) => {
                tracing::warn!(run_id = %key, "skipping a corrupt run snapshot: {err}");
                continue;
            }
        };
        if !caller.can_see(&snapshot) {
            continue;
        }
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        body.extend_from_slice(&pyoco_wire::to_python_json(&snapshot));
    }
    Ok(())
}

// The query of `GET /runs` as `/openapi.json` describes it; `ListParams::parse` reads it, the
// last of repeated values winning.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
struct ListRunsParams {
    /// Exact, case-sensitive match on `status` (empty: no filter).
    status: Option<String>,
    /// Exact match on `flow_name` (empty: no filter).
    flow: Option<String>,
    /// Exact match on the routing `tag` (empty: no filter).
    tag: Option<String>,
    /// Exact match; a non-empty value asks for the page shape.
    workflow_yaml_sha256: Option<String>,
    /// Exact match on `schedule_id`: the runs a schedule dispatched (pyoco-server 0.7; empty:
    /// no filter).
    schedule_id: Option<String>,
    /// Only runs with `updated_at` strictly greater; asks for the page shape.
    updated_after: Option<f64>,
    /// `next_cursor` of the previous page; present (even empty) asks for the page shape. One
    /// that does not decode: 422 `invalid list query`.
    cursor: Option<String>,
    /// Repeatable: `full` or `all` answer full snapshots instead of summaries; `times` (ours)
    /// adds `start_time` and `end_time` to summary items.
    #[param(explode, style = Form)]
    include: Option<Vec<String>>,
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
}

/// The validated query of `GET /runs`.
#[derive(Debug, Clone, PartialEq)]
struct ListParams {
    status: Option<String>,
    flow: Option<String>,
    tag: Option<String>,
    workflow_yaml_sha256: Option<String>,
    schedule_id: Option<String>,
    updated_after: Option<f64>,
    /// The raw `cursor`; `Some("")` switches to vNext without positioning.
    cursor: Option<String>,
    /// `include` named `full` or `all`.
    full: bool,
    /// `include` named `times` (ours).
    times: bool,
    limit: usize,
    /// vNext response shape.
    vnext: bool,
}

impl ListParams {
    /// Read the query like FastAPI: the last of repeated scalar parameters wins, empty filter
    /// values filter nothing, bad `updated_after`/`limit` values give pydantic's 422 list (in
    /// parameter order).
    fn parse(query: Option<&str>) -> Result<ListParams, ApiError> {
        let mut raw = RawParams::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.into_owned();
            match &*key {
                "status" => raw.status = Some(value),
                "flow" => raw.flow = Some(value),
                "tag" => raw.tag = Some(value),
                "updated_after" => raw.updated_after = Some(value),
                "cursor" => raw.cursor = Some(value),
                "workflow_yaml_sha256" => raw.workflow_yaml_sha256 = Some(value),
                "schedule_id" => raw.schedule_id = Some(value),
                "include" => {
                    raw.full |= matches!(&*value, "full" | "all");
                    raw.times |= value == "times";
                }
                "limit" => raw.limit = Some(value),
                _ => {}
            }
        }

        let mut errors = Vec::new();
        let updated_after = match raw.updated_after.as_deref() {
            None => None,
            Some(text) => match pydantic::float(text) {
                Some(f) => Some(f),
                None => {
                    errors.push(query_error(
                        "float_parsing",
                        "updated_after",
                        "Input should be a valid number, unable to parse string as a number",
                        text,
                        None,
                    ));
                    None
                }
            },
        };
        let limit = match raw.limit.as_deref() {
            None => Some(DEFAULT_LIMIT),
            Some(text) => check_limit(text, &mut errors),
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }

        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let workflow_yaml_sha256 = non_empty(raw.workflow_yaml_sha256);
        Ok(ListParams {
            vnext: updated_after.is_some()
                || raw.cursor.is_some()
                || workflow_yaml_sha256.is_some(),
            status: non_empty(raw.status),
            flow: non_empty(raw.flow),
            tag: non_empty(raw.tag),
            workflow_yaml_sha256,
            schedule_id: non_empty(raw.schedule_id),
            updated_after,
            cursor: raw.cursor,
            full: raw.full,
            times: raw.times,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }

    /// The decoded cursor; an empty one positions nothing. `422 invalid list query` when it
    /// does not decode.
    fn cursor(&self) -> Result<Option<RunsCursor>, ApiError> {
        match self.cursor.as_deref() {
            None | Some("") => Ok(None),
            Some(token) => RunsCursor::decode(token).map(Some).map_err(|err| {
                let reason = format!("cursor: {err}");
                log_refusal!("0017", "list_runs failed: invalid cursor", reason = %reason);
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid list query",
                    reason,
                )
                .logged()
            }),
        }
    }
}

#[derive(Debug, Default)]
struct RawParams {
    status: Option<String>,
    flow: Option<String>,
    tag: Option<String>,
    updated_after: Option<String>,
    cursor: Option<String>,
    workflow_yaml_sha256: Option<String>,
    schedule_id: Option<String>,
    full: bool,
    times: bool,
    limit: Option<String>,
}

fn query_error(
    kind: &'static str,
    name: &'static str,
    msg: &'static str,
    input: &str,
    ctx: Option<Value>,
) -> FieldError {
    FieldError {
        kind,
        loc: vec!["query".into(), name.into()],
        msg: msg.into(),
        input: Value::String(input.to_string()),
        ctx,
    }
}

/// `limit` as `Query(default=50, ge=1, le=200)` validates it; a refusal goes to `errors`.
fn check_limit(text: &str, errors: &mut Vec<FieldError>) -> Option<usize> {
    let error = match pydantic::int(text) {
        Ok(value) if value < MIN_LIMIT => query_error(
            "greater_than_equal",
            "limit",
            "Input should be greater than or equal to 1",
            text,
            Some(json!({"ge": MIN_LIMIT as i64})),
        ),
        Ok(value) if value > MAX_LIMIT => query_error(
            "less_than_equal",
            "limit",
            "Input should be less than or equal to 200",
            text,
            Some(json!({"le": MAX_LIMIT as i64})),
        ),
        Ok(value) => return usize::try_from(value).ok(),
        Err(pydantic::IntError::TooLong) => query_error(
            "int_parsing_size",
            "limit",
            "Unable to parse input string as an integer, exceeded maximum size",
            text,
            None,
        ),
        Err(pydantic::IntError::Invalid) => query_error(
            "int_parsing",
            "limit",
            "Input should be a valid integer, unable to parse string as an integer",
            text,
            None,
        ),
    };
    errors.push(error);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(err: ApiError) -> Value {
        match err {
            ApiError::Validation(errors) => serde_json::to_value(errors).unwrap(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn floats_parse_like_pydantic() {
        // Probed against FastAPI 0.165 / pydantic 2.14.
        for (text, want) in [
            ("1.5", 1.5),
            (" 1.5 ", 1.5),
            ("\t5\n", 5.0),
            ("1e3", 1000.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("+.5", 0.5),
            ("1_0", 10.0),
            ("1_.5", 1.5),
            ("1e_5", 100000.0),
            ("inf", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("in_f", f64::INFINITY),
            ("1e400", f64::INFINITY),
        ] {
            assert_eq!(pydantic::float(text), Some(want), "{text:?}");
        }
        assert!(pydantic::float("NaN").unwrap().is_nan());
        for text in [
            "", "abc", "0x10", "1__0", "_1", "1_", "1.5_", " 1_0 ", "1 5", "1.5e", "nan(1)", "+-1",
            "١",
        ] {
            assert_eq!(pydantic::float(text), None, "{text:?}");
        }
    }

    #[test]
    fn ints_parse_like_pydantic() {
        for (text, want) in [
            ("5", 5),
            ("+5", 5),
            (" 5 ", 5),
            ("010", 10),
            ("1_0", 10),
            ("+0_5", 5),
            ("1.00", 1),
            ("1_0.0", 10),
            ("-0", 0),
            ("-5", -5),
        ] {
            assert_eq!(pydantic::int(text), Ok(want), "{text:?}");
        }
        for text in [
            "", " ", "abc", "1.5", "1.", ".0", "0.", "1e2", "1.0_0", "0x10", "1__0", "_1", "1_",
            "+", "-", "+-1", "٣",
        ] {
            assert_eq!(
                pydantic::int(text),
                Err(pydantic::IntError::Invalid),
                "{text:?}"
            );
        }
        assert_eq!(pydantic::int(&"1".repeat(40)), Ok(i128::MAX));
        assert_eq!(
            pydantic::int(&"1".repeat(5000)),
            Err(pydantic::IntError::TooLong)
        );
    }

    #[test]
    fn defaults_and_shapes() {
        let p = ListParams::parse(None).unwrap();
        assert_eq!((p.limit, p.vnext, p.full), (50, false, false));
        for q in [
            "cursor=",
            "updated_after=0",
            "workflow_yaml_sha256=abc",
            "cursor=&status=",
        ] {
            assert!(ListParams::parse(Some(q)).unwrap().vnext, "{q}");
        }
        for q in ["workflow_yaml_sha256=", "status=RUNNING", "include=full"] {
            assert!(!ListParams::parse(Some(q)).unwrap().vnext, "{q}");
        }
        let p = ListParams::parse(Some("status=&flow=&tag=&limit=7&limit=9")).unwrap();
        assert_eq!((p.status, p.flow, p.tag, p.limit), (None, None, None, 9));
        assert!(
            ListParams::parse(Some("include=records&include=all"))
                .unwrap()
                .full
        );
        let p = ListParams::parse(Some("include=times")).unwrap();
        assert!(p.times && !p.full && !p.vnext);
        assert!(!ListParams::parse(Some("include=records")).unwrap().full);
    }

    #[test]
    fn validation_errors_are_fastapi_lists_in_parameter_order() {
        let err = ListParams::parse(Some("limit=0&updated_after=x")).unwrap_err();
        assert_eq!(
            detail(err),
            json!([
                {"type": "float_parsing", "loc": ["query", "updated_after"],
                 "msg": "Input should be a valid number, unable to parse string as a number",
                 "input": "x"},
                {"type": "greater_than_equal", "loc": ["query", "limit"],
                 "msg": "Input should be greater than or equal to 1", "input": "0",
                 "ctx": {"ge": 1}}
            ])
        );
        let err = ListParams::parse(Some("limit=5&limit=300")).unwrap_err();
        assert_eq!(
            detail(err),
            json!([{"type": "less_than_equal", "loc": ["query", "limit"],
                    "msg": "Input should be less than or equal to 200", "input": "300",
                    "ctx": {"le": 200}}])
        );
        let err = ListParams::parse(Some("limit=")).unwrap_err();
        assert_eq!(detail(err)[0]["type"], "int_parsing");
    }

    #[test]
    fn cursors_decode_or_422() {
        let ok = RunsCursor {
            updated_at: 5.0,
            run_id: "r".into(),
        };
        let q = format!("cursor={}", ok.encode());
        let p = ListParams::parse(Some(&q)).unwrap();
        assert_eq!(p.cursor().unwrap(), Some(ok));
        let p = ListParams::parse(Some("cursor=")).unwrap();
        assert_eq!(p.cursor().unwrap(), None);
        let p = ListParams::parse(Some("cursor=%21%21%21")).unwrap();
        let err = p.cursor().unwrap_err();
        assert!(
            matches!(&err, ApiError::Detail { status, detail, .. }
                if *status == StatusCode::UNPROCESSABLE_ENTITY && detail == "invalid list query"),
            "{err:?}"
        );
    }
}
