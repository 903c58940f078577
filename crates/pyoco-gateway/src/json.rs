//! JSON responses written like the rest of pyoco: compact, with Python's float formatting.
//!
//! FastAPI writes responses with `json.dumps(..., separators=(",", ":"))`; we use pyoco-wire's
//! writer (the one that writes KV values), which also escapes non-ASCII characters. Both are
//! the same JSON to any reader.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::{json_bytes_response, ApiError};

/// A `200 application/json` response of `T`.
#[derive(Debug, Clone)]
pub struct PyJson<T>(pub T);

impl<T: Serialize> IntoResponse for PyJson<T> {
    fn into_response(self) -> Response {
        match pyoco_wire::try_to_python_json(&self.0) {
            Ok(body) => json_bytes_response(StatusCode::OK, body),
            Err(err) => ApiError::with_reason(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                format!("encoding the response failed: {err}"),
            )
            .into_response(),
        }
    }
}
