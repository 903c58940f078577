//! The routes, one module per feature, composed into the public and the protected parts.
//!
//! Each handler module serves one feature (`runs`: submit and read; `list`: `GET /runs`;
//! `watch`; `cancel`; `workers`; `metrics`; `health`; `dashboard`; `wheels` and `wheel_history`)
//! and keeps its request parsing beside it (`submit_request`, `yaml_form`, `wheel_form`,
//! `wheel_archive`). What several of them need lives in modules that import no handler:
//! `stored` (reading runs, the KV key rule) and `components` (the OpenAPI error responses
//! and record schemas). `openapi` assembles the document from the handlers' annotations and is
//! imported by none of them, so the imports between these modules form no cycle.

use axum::{http::StatusCode, middleware, Router};

use crate::{auth, error::ApiError, AppState};

mod cancel;
mod components;
mod dashboard;
mod dlq;
#[cfg(test)]
mod form_fuzz;
mod health;
mod list;
mod logs;
mod metrics;
mod openapi;
mod runs;
mod schedules;
mod stored;
mod submit_request;
mod watch;
mod wheel_archive;
mod wheel_form;
mod wheel_history;
mod wheels;
mod workers;
mod yaml_form;

/// Routes anyone may call: `GET /health`, the dashboard page and the OpenAPI document.
pub(crate) fn public() -> Router<AppState> {
    health::routes()
        .merge(dashboard::routes())
        .merge(openapi::routes())
}

/// Every other route, behind the one auth layer ([`auth::require_api_key`], §9). Unlike 0.5.1,
/// `GET /workers`, `PATCH /workers/{id}` and `GET /metrics` are protected too, as its own
/// specification says (§14-14). The layer runs before any body is read, so a request without
/// a valid key gets 401/403, never a 422 about its body.
pub(crate) fn protected(state: &AppState) -> Router<AppState> {
    runs::routes(state)
        .merge(watch::routes())
        .merge(cancel::routes())
        .merge(list::routes())
        .merge(wheels::routes(state))
        .merge(workers::routes())
        .merge(metrics::routes())
        .merge(dlq::routes())
        .merge(logs::routes())
        .merge(schedules::routes(state))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
}

pub(crate) use runs::submit_scheduled_run;

/// 404 `{"detail":"Not Found"}` for unknown paths, like Starlette.
pub(crate) async fn not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "Not Found")
}

/// 405 `{"detail":"Method Not Allowed"}` for a known path with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
