//! `GET /health`: the process is up. Never waits for NATS: it answers 200 while an established
//! connection is down and the client reconnects (as 0.5.1 does), but 503 while this gateway has
//! never connected (a wrong URL, TLS setting or credential would otherwise look healthy while
//! every API call fails).

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use utoipa::ToSchema;

use crate::{json::PyJson, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// `{"status": "ok"}`, or `{"status": "unavailable", "detail": …}` before the first
/// connection to NATS.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// Why the gateway is not connected to NATS yet (only with `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The gateway process is up. 200 once it has connected to NATS (also while a later outage
/// lasts: the client reconnects by itself); 503 while it never has, with the reason.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = Health),
        (status = 503, description = "Never connected to NATS: `{\"status\": \"unavailable\", \"detail\": \"cannot connect to NATS …: check PYOCO_NATS_…\"}`", body = Health),
    ),
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match state.nats_problem() {
        None => (
            StatusCode::OK,
            PyJson(Health {
                status: "ok",
                detail: None,
            }),
        ),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            PyJson(Health {
                status: "unavailable",
                detail: Some(problem),
            }),
        ),
    }
}
