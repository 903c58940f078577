//! `GET /health`: the process is up. Never touches NATS, so it answers while NATS is down.

use axum::{routing::get, Router};
use utoipa::ToSchema;

use crate::{json::PyJson, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// `{"status": "ok"}`.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// The gateway process is up. Does not touch NATS: it answers while NATS is down.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health)),
)]
async fn health() -> PyJson<Health> {
    PyJson(Health { status: "ok" })
}
