//! The one error type of the gateway, and how it becomes an HTTP answer.
//!
//! Every error body is JSON with a `detail` (contract §3): a string for the errors the 0.5.1
//! gateway raises itself (§3.3), or the list of pydantic v2 error objects FastAPI answers for a
//! malformed request body. Where 0.5.1 only logged why a request was refused (the flow.yaml
//! reason, which tag rule failed), we add a `reason` string next to `detail`; a client that
//! reads only `detail` sees exactly what 0.5.1 sent.

use std::borrow::Cow;

use axum::{
    extract::rejection::{BytesRejection, PathRejection},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use pyoco_store::StoreError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Log why a client's request is refused, as 0.5.1 does (contract §12): one INFO line with
/// `err_id = "ERR-PYOCO-<code>"`, `msg_id = "MSG-PYOCO-<code>"`, the context fields and the
/// message, e.g. `log_refusal!("0005", "run not found", run_id = %id)`. Mark the error
/// [`ApiError::logged`] so the answer adds no second line.
macro_rules! log_refusal {
    ($code:literal, $message:literal $(, $($field:tt)+)?) => {
        tracing::info!(
            err_id = concat!("ERR-PYOCO-", $code),
            msg_id = concat!("MSG-PYOCO-", $code),
            $($($field)+ ,)?
            $message
        )
    };
}
pub(crate) use log_refusal;

/// Why a request failed. Handlers return `Result<_, ApiError>`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `{"detail": "<detail>"}`, plus `"reason"` when there is one.
    #[error("{status}: {detail}")]
    Detail {
        status: StatusCode,
        detail: Cow<'static, str>,
        reason: Option<String>,
        /// Already logged where it was raised (with its `err_id`/`msg_id`, contract §12):
        /// the answer adds no second line.
        logged: bool,
    },
    /// 422 with a pydantic-v2-shaped list as `detail` (request body validation).
    #[error("422: request validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// `503 nats unavailable: <kind>`.
    #[error("503: nats unavailable: {kind}: {message}")]
    Unavailable { kind: String, message: String },
}

impl ApiError {
    /// `{"detail": detail}` with `status`.
    pub fn detail(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Detail {
            status,
            detail: detail.into(),
            reason: None,
            logged: false,
        }
    }

    /// `{"detail": detail, "reason": reason}` with `status`.
    pub fn with_reason(
        status: StatusCode,
        detail: impl Into<Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Self {
        ApiError::Detail {
            status,
            detail: detail.into(),
            reason: Some(reason.into()),
            logged: false,
        }
    }

    /// This error, marked as logged at its origin (see [`log_refusal!`]):
    /// turning it into a response writes no other line.
    pub fn logged(mut self) -> Self {
        if let ApiError::Detail { logged, .. } = &mut self {
            *logged = true;
        }
        self
    }

    /// 404 `run not found` (also what another tenant's run looks like, §3.1).
    pub fn run_not_found() -> Self {
        Self::detail(StatusCode::NOT_FOUND, "run not found")
    }

    /// 400 for a body that cannot be parsed at all (what Starlette says for a broken form).
    pub fn unparsable_body() -> Self {
        Self::detail(
            StatusCode::BAD_REQUEST,
            "There was an error parsing the body",
        )
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Detail { status, .. } => *status,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for ApiError {
    /// The generic mapping; handlers turn `NotFound` into the 404 of the resource at hand
    /// before it gets here.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable { kind, message } => ApiError::Unavailable { kind, message },
            StoreError::NotFound(what) => {
                ApiError::with_reason(StatusCode::NOT_FOUND, "Not Found", what)
            }
            StoreError::Conflict(key) => ApiError::with_reason(
                StatusCode::CONFLICT,
                "conflict",
                format!("{key} was changed concurrently; retry"),
            ),
            StoreError::Corrupt { key, message } => ApiError::with_reason(
                StatusCode::INTERNAL_SERVER_ERROR,
                "record is corrupt",
                format!("{key}: {message}"),
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::detail(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::detail(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::unparsable_body()
        }
    }
}

/// One pydantic v2 validation error as FastAPI reports it: `type`, `loc`, `msg`, `input` and,
/// for some types, `ctx`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// The pydantic error type (`missing`, `string_type`, `json_invalid`, …).
    #[serde(rename = "type")]
    #[schema(example = "missing")]
    pub kind: &'static str,
    /// Where: `body` or `query`, then field names and list indexes.
    #[schema(example = json!(["body", "flow_name"]))]
    pub loc: Vec<Loc>,
    /// What is wrong, in pydantic's words.
    #[schema(value_type = String, example = "Field required")]
    pub msg: Cow<'static, str>,
    /// The value that was refused (`null` for a missing one).
    #[schema(value_type = Value)]
    pub input: Value,
    /// The rule's parameters (`{"ge": 1}`, `{"error": "Expecting value"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub ctx: Option<Value>,
}

/// One step of a `loc`: a key or a list index.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Loc {
    Key(Cow<'static, str>),
    Index(usize),
}

impl From<&'static str> for Loc {
    fn from(key: &'static str) -> Self {
        Loc::Key(Cow::Borrowed(key))
    }
}

impl From<usize> for Loc {
    fn from(index: usize) -> Self {
        Loc::Index(index)
    }
}

/// The body of every error but request validation: `{"detail": "…"}`, with `reason` where we
/// say more than 0.5.1 did.
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
pub(crate) struct DetailBody<'a> {
    /// The 0.5.1 error text (contract §3.3), e.g. `run not found`,
    /// `nats unavailable: NotConnected`.
    #[schema(value_type = String, example = "run not found")]
    detail: &'a str,
    /// Why, when the gateway knows more than `detail` says (not sent by 0.5.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    reason: Option<&'a str>,
}

/// The body of a request-validation 422: FastAPI's list of pydantic errors.
#[derive(Serialize, ToSchema)]
#[schema(as = ValidationErrors)]
pub(crate) struct ValidationBody<'a> {
    #[schema(value_type = Vec<FieldError>)]
    detail: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Detail {
                detail,
                reason,
                logged,
                ..
            } => {
                if *logged {
                    // Logged where it was raised.
                } else if status.is_server_error() {
                    tracing::error!(
                        err_id = "ERR-PYOCO-0007",
                        msg_id = "MSG-PYOCO-0007",
                        %status,
                        detail = %detail,
                        reason = reason.as_deref(),
                        "request failed"
                    );
                } else {
                    tracing::debug!(%status, detail = %detail, reason = reason.as_deref(), "request refused");
                }
                pyoco_wire::to_python_json(&DetailBody {
                    detail,
                    reason: reason.as_deref(),
                })
            }
            ApiError::Validation(errors) => {
                tracing::debug!(?errors, "request body invalid");
                pyoco_wire::to_python_json(&ValidationBody { detail: errors })
            }
            ApiError::Unavailable { kind, message } if kind.ends_with("IndexLoading") => {
                // Not a NATS failure: the gateway has just started and is still reading the
                // bucket (a second or two); the client is told to retry.
                tracing::warn!(kind = %kind, "request answered 503 while the index loads: {message}");
                let detail = format!("nats unavailable: {kind}");
                pyoco_wire::to_python_json(&DetailBody {
                    detail: &detail,
                    reason: None,
                })
            }
            ApiError::Unavailable { kind, message } => {
                // 0.5.1 logs these with logger.exception: ERROR, the exception's class and text.
                tracing::error!(
                    err_id = "ERR-PYOCO-0003",
                    msg_id = "MSG-PYOCO-0003",
                    exc_type = %kind,
                    error = %message,
                    "request failed: nats unavailable"
                );
                let detail = format!("nats unavailable: {kind}");
                pyoco_wire::to_python_json(&DetailBody {
                    detail: &detail,
                    reason: None,
                })
            }
        };
        json_bytes_response(status, body)
    }
}

/// A JSON response from already-encoded bytes.
pub(crate) fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
