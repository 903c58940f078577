//! The pyoco-server HTTP gateway: the HTTP API of contract §3 over NATS JetStream, wire-
//! compatible with the Python 0.5.1 gateway (a Python worker can run what this gateway
//! submits, and the other way round).
//!
//! What it is: an axum [`router`] and a [`serve`] function that runs it on a listener you bind
//! (port 0 in tests) until a shutdown future resolves. It serves `GET /health`, `POST /runs`,
//! `POST /runs/yaml`, `GET /runs` (from an in-memory index fed by one KV watch, `index.rs`),
//! `GET /runs/{run_id}`, `/tasks`, `/watch` (SSE driven by a KV watch), `/cancel`
//! (compare-and-set), `GET /workers`, `PATCH /workers/{worker_id}`, `GET /metrics`, and the
//! wheel registry (`GET`/`POST /wheels`, `GET /wheels/history`, `GET`/`DELETE
//! /wheels/{wheel_name}`: uploads staged on disk and checked as wheels, downloads streamed),
//! pyoco-server 0.7's schedules (`/schedules…`, dispatched at their due time by `schedule/`),
//! and `GET /openapi.json`, the OpenAPI 3.1 document of all of them (`routes/openapi.rs`);
//! every error is JSON with a `detail` ([`ApiError`]). It starts while NATS is down (NATS-backed
//! endpoints answer `503 nats unavailable: NotConnected` until the [`SharedStore`] is ready,
//! and recover by themselves), turns a handler panic into a 500 JSON answer, and reads an
//! upload only up to the configured limit.
//!
//! What it is not: it does not read the environment (the caller passes [`Settings`]), does not
//! bind sockets or install signal handlers (the CLI and the appliance do), does not know JSON
//! shapes (`pyoco-wire`) or JetStream details (`pyoco-store`), and runs no work. With
//! `PYOCO_HTTP_AUTH_MODE=api_key`, every route but `/health`, `/` and `/openapi.json` needs an
//! API key (§9, `auth.rs`), and each key's [`Caller`] sees only its tenant's runs.
//! Deliberate differences from 0.5.1 are listed in `DIFFERENCES.md` next to this crate.
//!
//! ```no_run
//! # async fn run(settings: pyoco_config::Settings) -> std::io::Result<()> {
//! let store = pyoco_store::SharedStore::connect_in_background(
//!     &settings.nats_url,
//!     "pyoco-http-api",
//!     pyoco_store::StoreConfig::from(&settings),
//! );
//! let state = pyoco_gateway::AppState::new(&settings, store);
//! let listener = tokio::net::TcpListener::bind((settings.http_host.as_str(), settings.http_port)).await?;
//! pyoco_gateway::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod auth;
mod conn;
mod error;
mod guard;
mod index;
mod json;
mod pydantic;
mod routes;
mod schedule;
mod state;

use std::{any::Any, future::Future, io, net::SocketAddr};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

pub use auth::Caller;
pub use conn::{ConnLimits, REJECTING_AT_ONCE};
pub use error::{ApiError, FieldError, Loc};
pub use guard::DESKTOP_ORIGINS;
pub use state::AppState;

#[doc(no_inline)]
pub use pyoco_config::Settings;
#[doc(no_inline)]
pub use pyoco_store::SharedStore;

/// The gateway's routes with their layers: the `Host`/`Origin` checks and CORS (`guard.rs`), a
/// debug-level tracing span per request (free when debug logging is off) and panic-to-500
/// conversion.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(routes::public())
        .merge(routes::protected(&state));
    with_layers(routes, &state).with_state(state)
}

/// JSON fallbacks for unknown paths and methods, the browser checks, CORS, panic-to-500, and
/// the tracing span.
fn with_layers(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_browser_request,
        ))
        .layer(state.guard().cors())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // `ApiError` already logs server errors with their reason.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
}

/// Serve the gateway on `listener` until `shutdown` resolves, then finish the requests in
/// flight and return.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // The schedule dispatcher, if the state was made outside a runtime.
    state.start_background();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP gateway listening");
        state.guard().set_served(addr);
        warn_about_auth(&state, addr);
    }
    // The peer address is recorded in the wheel history (`source.remote_addr`).
    let limits = state.conn_limits();
    let app = router(state.clone());
    conn::serve(listener, app, limits, shutdown, move || {
        // End SSE streams now; in-flight requests still finish.
        state.begin_shutdown();
    })
    .await
}

/// The start-up warnings of an unsafe auth setup: a gateway reachable from other machines with
/// auth off, or API keys hashed without a pepper.
fn warn_about_auth(state: &AppState, addr: SocketAddr) {
    let auth = state.auth();
    if !auth.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the gateway listens beyond this machine with PYOCO_HTTP_AUTH_MODE=none: anyone who \
             can reach it can run flows; set PYOCO_HTTP_AUTH_MODE=api_key and create a key with \
             `pyoco-server-admin api-key create --tenant T`"
        );
    }
    if auth.enabled() && !auth.has_pepper() {
        tracing::warn!(
            "PYOCO_HTTP_AUTH_MODE=api_key without PYOCO_AUTH_PEPPER: a copy of the auth bucket \
             is enough to attack the key hashes offline; set the same secret pepper for the \
             gateway and pyoco-server-admin"
        );
    }
}

/// A handler panicked: answer 500 JSON instead of dropping the connection.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(
        err_id = "ERR-PYOCO-0007",
        msg_id = "MSG-PYOCO-0007",
        exc_type = "panic",
        error = %message,
        "request handler panicked"
    );
    ApiError::detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        .logged()
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn state() -> AppState {
        let opts = pyoco_config::LoadOptions {
            env: [("PYOCO_LOAD_DOTENV".to_string(), "0".to_string())].into(),
            cwd: std::env::temp_dir(),
            home: None,
        };
        let settings = Settings::load(&opts).unwrap();
        // Nothing listens on port 1: the store never becomes ready.
        let store = SharedStore::connect_in_background(
            "nats://127.0.0.1:1",
            "test",
            pyoco_store::StoreConfig::default(),
        );
        AppState::new(&settings, store)
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_the_server_lives_on() {
        let state = state();
        let app = with_layers(
            Router::new().route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                }),
            ),
            &state,
        )
        .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = reqwest::Client::new();
        for _ in 0..2 {
            let response = client
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 500);
            assert_eq!(
                response.text().await.unwrap(),
                r#"{"detail":"Internal Server Error"}"#
            );
        }
    }
}
