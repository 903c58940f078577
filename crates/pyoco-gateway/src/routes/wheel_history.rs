//! The wheel history (KV `pyoco_wheel_history`, contract §2.5): the record every upload and
//! delete appends, where the request came from, and `GET /wheels/history`.
//!
//! Appending is best effort, like 0.5.1: a failure is logged and the upload or delete it records
//! still succeeds. Reading lists the keys (stream subjects, no values), then reads records
//! newest key first, concurrently, filtering, until no unread record can enter the page: a page
//! of `limit` costs about `limit` reads, not the whole bucket (0.5.1 read every record). The
//! answer is sorted by `(occurred_at, event_id)` newest first, records as stored. An empty bucket
//! is `[]` (0.5.1: `503 NoKeysError`, §14-4).

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, RawQuery, State},
    http::{request::Parts, HeaderMap, StatusCode},
    response::Response,
};
use futures::{stream, StreamExt};
use pyoco_store::Store;
use pyoco_wire::{
    is_valid_wheel_name,
    python::{self, py_strip},
    WheelHistoryAction, WheelHistoryActor, WheelHistoryRecord, WheelHistorySource,
};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::components::{NatsUnavailable, Unprocessable};
use crate::{
    auth::Caller,
    error::{json_bytes_response, log_refusal, ApiError, FieldError},
    pydantic, AppState,
};

/// Records read from the bucket at once.
const READ_CONCURRENCY: usize = 64;

/// The page size when `limit` is absent, and its bounds (`Query(default=100, ge=1, le=500)`).
const DEFAULT_LIMIT: usize = 100;
const MIN_LIMIT: i128 = 1;
const MAX_LIMIT: i128 = 500;

/// Where a request came from, as the history records it (§2.5 `source`): the peer address and
/// the `X-Forwarded-For`, `X-Real-IP`, `User-Agent` and `Host` headers (each `null` when
/// missing or empty), and the URL scheme.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestSource(pub WheelHistorySource);

impl<S: Send + Sync> FromRequestParts<S> for RequestSource {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let headers = &parts.headers;
        Ok(RequestSource(WheelHistorySource {
            remote_addr,
            x_forwarded_for: header_text(headers, "x-forwarded-for"),
            x_real_ip: header_text(headers, "x-real-ip"),
            user_agent: header_text(headers, "user-agent"),
            host: header_text(headers, "host"),
            // The gateway serves plain HTTP (TLS ends at a proxy in front of it, if any).
            scheme: Some(parts.uri.scheme_str().unwrap_or("http").to_string()),
        }))
    }
}

/// The first value of a header as Starlette reads it (Latin-1), `None` when absent or empty.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?;
    let text: String = value.as_bytes().iter().map(|&b| char::from(b)).collect();
    (!text.is_empty()).then_some(text)
}

/// A new record of `action` on `wheel_name`, now, by `caller`, from `source`.
pub(crate) fn new_record(
    action: WheelHistoryAction,
    wheel_name: &str,
    caller: &Caller,
    source: &RequestSource,
) -> WheelHistoryRecord {
    WheelHistoryRecord {
        event_id: uuid::Uuid::new_v4().simple().to_string(),
        occurred_at: python::time(),
        action,
        wheel_name: wheel_name.to_string(),
        tags: Vec::new(),
        size_bytes: None,
        sha256_hex: None,
        replace: None,
        actor: WheelHistoryActor {
            tenant_id: caller.tenant_id.clone(),
            api_key_id: caller.api_key_id.clone(),
        },
        source: source.0.clone(),
        worker_id: None,
        error: None,
    }
}

/// Append `record` (best effort: a failure is logged, not returned).
pub(crate) async fn append(store: &Store, record: &WheelHistoryRecord) {
    let key = record.key();
    if let Err(err) = store.wheel_history().put(&key, record.to_json()).await {
        tracing::warn!(
            wheel_name = %record.wheel_name,
            action = record.action.as_str(),
            %key,
            "append wheel history failed: {err}"
        );
    }
}

// The query of `GET /wheels/history` as `/openapi.json` describes it; `HistoryQuery::parse`
// reads it, the last of repeated values winning.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct WheelHistoryParams {
    /// Records to answer, newest first.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// Only this wheel file (trimmed; must be a wheel file name, else 422 `invalid wheel
    /// name`; empty: no filter).
    #[param(example = "demo_pkg-0.1.0-py3-none-any.whl")]
    wheel_name: Option<String>,
    /// `upload`, `delete` or `install_failed` (ours), any case (else 422 `invalid action`;
    /// empty: no filter).
    #[param(example = "upload")]
    action: Option<String>,
}

/// One history record as stored (contract §2.5); keys written by other versions are kept.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: records are answered as stored
pub(crate) struct WheelHistoryEntry {
    /// UUID4 hex.
    event_id: String,
    /// Seconds since the epoch.
    occurred_at: f64,
    /// `upload` or `delete`; `install_failed` when a worker's pip refused the wheel (ours).
    #[schema(example = "upload")]
    action: String,
    wheel_name: String,
    /// The upload's tags; for a delete, the tags the wheel had.
    tags: Vec<String>,
    size_bytes: Option<u64>,
    sha256_hex: Option<String>,
    /// The upload's `replace` form value; `null` for a delete.
    replace: Option<bool>,
    /// Who (both `null` while authentication is off).
    #[schema(value_type = Object)]
    actor: (),
    /// Where from: `remote_addr`, `x_forwarded_for`, `x_real_ip`, `user_agent`, `host`,
    /// `scheme` (each `null` when unknown).
    #[schema(value_type = Object)]
    source: (),
    /// `install_failed` only: the worker whose `pip install` failed.
    worker_id: Option<String>,
    /// `install_failed` only: pip's error (at most 2,000 characters).
    error: Option<String>,
}

/// The validated query of `GET /wheels/history`.
#[derive(Debug, Clone, PartialEq)]
struct HistoryQuery {
    limit: usize,
    wheel_name: Option<String>,
    action: Option<WheelHistoryAction>,
}

impl HistoryQuery {
    /// FastAPI's `limit` validation first (its 422 list), then the filters in 0.5.1's order.
    fn parse(query: Option<&str>) -> Result<HistoryQuery, ApiError> {
        let (mut limit, mut wheel_name, mut action) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "limit" => limit = Some(value.into_owned()),
                "wheel_name" => wheel_name = Some(value.into_owned()),
                "action" => action = Some(value.into_owned()),
                _ => {}
            }
        }
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => check_limit(&text)?,
        };
        let wheel_name = match wheel_name.as_deref().map(py_strip) {
            None | Some("") => None,
            Some(name) if is_valid_wheel_name(name) => Some(name.to_string()),
            Some(name) => {
                log_refusal!(
                    "0002",
                    "wheel history failed: invalid wheel name filter",
                    wheel_name = %name
                );
                return Err(ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid wheel name",
                    format!("wheel_name {name:?}: only letters, digits and `._+-`, ending in .whl"),
                )
                .logged());
            }
        };
        let action = match action.as_deref().map(py_strip) {
            None | Some("") => None,
            Some(raw) => Some(WheelHistoryAction::parse(raw).ok_or_else(|| {
                log_refusal!(
                    "0002",
                    "wheel history failed: invalid action filter",
                    action = %raw
                );
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid action",
                    format!("action {raw:?}: use upload, delete or install_failed"),
                )
                .logged()
            })?),
        };
        Ok(HistoryQuery {
            limit,
            wheel_name,
            action,
        })
    }

    fn keeps(&self, record: &Map<String, Value>) -> bool {
        let text = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or("");
        self.wheel_name
            .as_deref()
            .is_none_or(|name| text("wheel_name") == name)
            && self
                .action
                .is_none_or(|action| text("action").to_lowercase() == action.as_str())
    }
}

/// `limit` as `Query(default=100, ge=1, le=500)` validates it.
fn check_limit(text: &str) -> Result<usize, ApiError> {
    let error = |kind, msg: &'static str, ctx| {
        ApiError::Validation(vec![FieldError {
            kind,
            loc: vec!["query".into(), "limit".into()],
            msg: msg.into(),
            input: Value::String(text.to_string()),
            ctx,
        }])
    };
    match pydantic::int(text) {
        Ok(value) if value < MIN_LIMIT => Err(error(
            "greater_than_equal",
            "Input should be greater than or equal to 1",
            Some(json!({"ge": MIN_LIMIT as i64})),
        )),
        Ok(value) if value > MAX_LIMIT => Err(error(
            "less_than_equal",
            "Input should be less than or equal to 500",
            Some(json!({"le": MAX_LIMIT as i64})),
        )),
        Ok(value) => Ok(usize::try_from(value).unwrap_or(DEFAULT_LIMIT)),
        Err(pydantic::IntError::TooLong) => Err(error(
            "int_parsing_size",
            "Unable to parse input string as an integer, exceeded maximum size",
            None,
        )),
        Err(pydantic::IntError::Invalid) => Err(error(
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
            None,
        )),
    }
}

/// `GET /wheels/history`.
#[utoipa::path(
    get,
    path = "/wheels/history",
    operation_id = "wheel_history",
    tag = "wheels",
    summary = "List wheel uploads and deletes, newest first",
    description = "Every record of the history bucket (kept for PYOCO_WHEEL_HISTORY_TTL_SEC), \
filtered, sorted by `(occurred_at, event_id)` newest first, the first `limit` answered as stored. \
Deletes made by the retention rule (PYOCO_WHEEL_KEEP_VERSIONS) are recorded with the uploader \
as actor. An empty history is `[]`.",
    params(WheelHistoryParams),
    responses(
        (status = 200, description = "The records", body = Vec<WheelHistoryEntry>),
        (status = 422, response = Unprocessable),
        (status = 503, response = NatsUnavailable),
    ),
)]
pub(crate) async fn wheel_history(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = HistoryQuery::parse(query.as_deref())?;
    let store = state.store()?;
    let bucket = store.wheel_history();
    // Stream info only: `keys()` would leave a consumer behind per call.
    let keys = bucket.key_candidates().await?;
    let page = read_page(keys, &query, |key| async move {
        Ok(bucket.get(&key).await?.map(|entry| entry.value))
    })
    .await?;
    Ok(json_bytes_response(
        StatusCode::OK,
        pyoco_wire::to_python_json(&page),
    ))
}

/// The millisecond prefix of a history key (`<epoch ms, ≥13 digits>_<event_id>`, §2.5).
fn key_millis(key: &str) -> Option<u64> {
    let (millis, _) = key.split_once('_')?;
    if millis.len() < 13 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    millis.parse().ok()
}

/// The page `query` asks for, reading records through `read` newest key first and stopping as
/// soon as no unread record can make the page.
///
/// Every writer (ours and 0.5.1) keys a record by `int(occurred_at * 1000)`, so a record under a
/// key of millisecond `m` has `occurred_at * 1000 < m + 1`. Once the page is full and its oldest
/// record is at or after `(m + 1) / 1000` for the next unread key `m`, nothing left can enter it.
/// Keys without that prefix (not written by a pyoco gateway) are read first, always.
async fn read_page<F, Fut>(
    keys: Vec<String>,
    query: &HistoryQuery,
    read: F,
) -> Result<Vec<Map<String, Value>>, ApiError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<bytes::Bytes>, ApiError>>,
{
    let mut order: Vec<(Option<u64>, String)> = keys
        .into_iter()
        .map(|key| (key_millis(&key), key))
        .collect();
    // `None` (unprefixed) sorts last ascending, so first here: descending puts it first.
    order.sort_unstable_by(|a, b| match (a.0, b.0) {
        (None, None) => a.1.cmp(&b.1),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.1.cmp(&a.1)),
    });
    let mut page: Vec<(f64, String, Map<String, Value>)> = Vec::new();
    let mut next = 0;
    while next < order.len() {
        if let (Some(millis), Some(oldest)) = (order[next].0, page.get(query.limit.wrapping_sub(1)))
        {
            if oldest.0 * 1000.0 >= (millis + 1) as f64 {
                break;
            }
        }
        let end = order.len().min(next + READ_CONCURRENCY);
        let batch: Vec<String> = order[next..end].iter().map(|(_, k)| k.clone()).collect();
        next = end;
        let read = &read;
        let mut reads = stream::iter(batch)
            .map(|key| async move { (read(key.clone()).await, key) })
            .buffer_unordered(READ_CONCURRENCY);
        while let Some((value, key)) = reads.next().await {
            // Expired or deleted since listed: skip it, as 0.5.1 does.
            let Some(value) = value? else { continue };
            let record = match pyoco_wire::value_from_python_json(&value) {
                Ok(Value::Object(record)) => record,
                Ok(_) | Err(_) => {
                    tracing::debug!(%key, "skipping a wheel history record that is not a JSON object");
                    continue;
                }
            };
            if !query.keeps(&record) {
                continue;
            }
            let occurred_at = record
                .get("occurred_at")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let event_id = match record.get("event_id") {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            page.push((occurred_at, event_id, record));
        }
        page.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        page.truncate(query.limit);
    }
    Ok(page.into_iter().map(|(_, _, record)| record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(err: ApiError) -> String {
        match err {
            ApiError::Detail { detail, .. } => detail.into_owned(),
            other => panic!("not a detail error: {other:?}"),
        }
    }

    /// A bucket of `n` records, two per millisecond, every tenth a delete; and a reader of it
    /// that counts its reads.
    fn bucket(n: usize) -> std::collections::HashMap<String, bytes::Bytes> {
        (0..n)
            .map(|i| {
                let millis = 1_712_345_678_000u64 + (i / 2) as u64;
                let event_id = format!("{:032x}", i * 7919 % 1000);
                let action = if i % 10 == 0 { "delete" } else { "upload" };
                let record = json!({
                    "event_id": event_id,
                    "occurred_at": millis as f64 / 1000.0 + 0.0004,
                    "action": action,
                    "wheel_name": format!("pkg{}-1.0-py3-none-any.whl", i % 3),
                });
                (
                    format!("{millis:013}_{event_id}"),
                    bytes::Bytes::from(record.to_string()),
                )
            })
            .collect()
    }

    /// What 0.5.1 answers: every record read, filtered, sorted, cut to `limit`.
    fn everything(
        records: &std::collections::HashMap<String, bytes::Bytes>,
        query: &HistoryQuery,
    ) -> Vec<Map<String, Value>> {
        let mut all: Vec<Map<String, Value>> = records
            .values()
            .map(|v| serde_json::from_slice::<Map<String, Value>>(v).unwrap())
            .filter(|r| query.keeps(r))
            .collect();
        all.sort_by(|a, b| {
            let t = |r: &Map<String, Value>| r["occurred_at"].as_f64().unwrap();
            let id = |r: &Map<String, Value>| r["event_id"].as_str().unwrap().to_string();
            t(b).total_cmp(&t(a)).then_with(|| id(b).cmp(&id(a)))
        });
        all.truncate(query.limit);
        all
    }

    async fn page_and_reads(
        records: &std::collections::HashMap<String, bytes::Bytes>,
        query: &str,
    ) -> (Vec<Map<String, Value>>, usize) {
        let query = HistoryQuery::parse(Some(query)).unwrap();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let page = read_page(records.keys().cloned().collect(), &query, |key| {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let value = records.get(&key).cloned();
            async move { Ok(value) }
        })
        .await
        .unwrap();
        assert_eq!(page, everything(records, &query), "{query:?}");
        (page, reads.into_inner())
    }

    #[tokio::test]
    async fn a_page_reads_about_its_size_not_the_bucket() {
        let records = bucket(20_000);
        let (page, reads) = page_and_reads(&records, "limit=100").await;
        assert_eq!(page.len(), 100);
        assert!(reads <= 100 + 2 * READ_CONCURRENCY, "{reads} reads");
        let (page, reads) = page_and_reads(&records, "limit=1").await;
        assert_eq!(page.len(), 1);
        assert_eq!(reads, READ_CONCURRENCY);
        // A filter reads on until the page is full: every tenth record is a delete.
        let (page, reads) = page_and_reads(&records, "limit=50&action=delete").await;
        assert_eq!(page.len(), 50);
        assert!(reads <= 500 + 2 * READ_CONCURRENCY, "{reads} reads");
        // A filter nothing matches reads everything, and answers nothing.
        let (page, reads) = page_and_reads(&records, "wheel_name=other-1.0-py3-none-any.whl").await;
        assert!(page.is_empty());
        assert_eq!(reads, 20_000);
        // A page larger than the bucket.
        let small = bucket(30);
        let (page, reads) = page_and_reads(&small, "limit=500").await;
        assert_eq!((page.len(), reads), (30, 30));
    }

    #[tokio::test]
    async fn records_under_foreign_keys_are_always_read() {
        let mut records = bucket(1_000);
        // Newer than everything, under a key no pyoco writes; and an old one.
        for (key, at) in [("zz-manual", 1_999_999_999.0), ("a_manual", 1.0)] {
            let record = json!({"event_id": key, "occurred_at": at, "action": "upload"});
            records.insert(key.to_string(), bytes::Bytes::from(record.to_string()));
        }
        let (page, _) = page_and_reads(&records, "limit=3").await;
        assert_eq!(page[0]["event_id"], "zz-manual");
        let (page, _) = page_and_reads(&records, "limit=500").await;
        assert_eq!(page.len(), 500);
        assert_eq!(key_millis("1712345678901_9f0c"), Some(1_712_345_678_901));
        assert_eq!(key_millis("171234567890_9f0c"), None);
        assert_eq!(key_millis("17123456789x1_9f0c"), None);
        assert_eq!(key_millis("a_manual"), None);
    }

    #[test]
    fn query_defaults_and_filters() {
        assert_eq!(
            HistoryQuery::parse(None).unwrap(),
            HistoryQuery {
                limit: 100,
                wheel_name: None,
                action: None
            }
        );
        let q = HistoryQuery::parse(Some(
            "limit=5&limit=7&wheel_name=%20a-1.0-py3-none-any.whl%20&action=DELETE",
        ))
        .unwrap();
        assert_eq!(q.limit, 7);
        assert_eq!(q.wheel_name.as_deref(), Some("a-1.0-py3-none-any.whl"));
        assert_eq!(q.action, Some(WheelHistoryAction::Delete));
        // Ours: the records a worker writes when pip refuses a wheel.
        let q = HistoryQuery::parse(Some("action=Install_Failed")).unwrap();
        assert_eq!(q.action, Some(WheelHistoryAction::InstallFailed));
        // Blank filters filter nothing.
        let q = HistoryQuery::parse(Some("wheel_name=%20&action=")).unwrap();
        assert_eq!((q.wheel_name, q.action), (None, None));
    }

    #[test]
    fn bad_queries_get_0_5_1_answers() {
        let err = HistoryQuery::parse(Some("wheel_name=../x.whl")).unwrap_err();
        assert_eq!(detail(err), "invalid wheel name");
        let err = HistoryQuery::parse(Some("action=replace")).unwrap_err();
        assert_eq!(detail(err), "invalid action");
        for (q, kind) in [
            ("limit=0", "greater_than_equal"),
            ("limit=501", "less_than_equal"),
            ("limit=x", "int_parsing"),
        ] {
            match HistoryQuery::parse(Some(q)).unwrap_err() {
                ApiError::Validation(errors) => assert_eq!(errors[0].kind, kind, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        // limit is validated before the filters (FastAPI validates before the handler runs).
        assert!(matches!(
            HistoryQuery::parse(Some("limit=0&action=x")),
            Err(ApiError::Validation(_))
        ));
    }
}
