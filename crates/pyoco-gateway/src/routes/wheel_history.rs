//! The wheel history (KV `pyoco_wheel_history`, contract §2.5): the record every upload and
//! delete appends, where the request came from, and `GET /wheels/history`.
//!
//! Appending is best effort, like 0.5.1: a failure is logged and the upload or delete it records
//! still succeeds. Reading reads every record (the bucket's TTL, 90 days by default, bounds
//! them), concurrently, filters, sorts by `(occurred_at, event_id)` newest first and answers the
//! first `limit` records as stored. An empty bucket is `[]` (0.5.1: `503 NoKeysError`, §14-4).

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, RawQuery, State},
    http::{request::Parts, HeaderMap, StatusCode},
    response::Response,
};
use futures::{stream, StreamExt};
use pyoco_store::Store;
use pyoco_wire::{
    is_valid_wheel_name, python::py_strip, WheelHistoryAction, WheelHistoryActor,
    WheelHistoryRecord, WheelHistorySource,
};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{NatsUnavailable, Unprocessable};
use crate::{
    auth::Caller,
    error::{json_bytes_response, ApiError, FieldError},
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
        occurred_at: super::runs::epoch_now(),
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
    /// `upload` or `delete`, any case (else 422 `invalid action`; empty: no filter).
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
    /// `upload` or `delete`.
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
                return Err(ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid wheel name",
                    format!("wheel_name {name:?}: only letters, digits and `._+-`, ending in .whl"),
                ))
            }
        };
        let action = match action.as_deref().map(py_strip) {
            None | Some("") => None,
            Some(raw) => Some(WheelHistoryAction::parse(raw).ok_or_else(|| {
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid action",
                    format!("action {raw:?}: use upload or delete"),
                )
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
    let mut records: Vec<(f64, String, Map<String, Value>)> = Vec::with_capacity(keys.len());
    let mut reads = stream::iter(keys)
        .map(|key| async move { (bucket.get(&key).await, key) })
        .buffer_unordered(READ_CONCURRENCY);
    while let Some((entry, key)) = reads.next().await {
        // Expired or deleted since listed: skip it, as 0.5.1 does.
        let Some(entry) = entry? else { continue };
        let record = match pyoco_wire::value_from_python_json(&entry.value) {
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
        records.push((occurred_at, event_id, record));
    }
    records.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    records.truncate(query.limit);
    let page: Vec<Map<String, Value>> = records.into_iter().map(|(_, _, r)| r).collect();
    Ok(json_bytes_response(
        StatusCode::OK,
        pyoco_wire::to_python_json(&page),
    ))
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
