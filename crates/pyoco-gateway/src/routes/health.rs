//! `GET /health`: the process is up. Never touches NATS, so it answers while NATS is down.

use axum::{routing::get, Router};

use crate::{json::PyJson, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

async fn health() -> PyJson<Health> {
    PyJson(Health { status: "ok" })
}
