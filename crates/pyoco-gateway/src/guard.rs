//! Requests a browser makes on a web page's behalf: the `Host` and `Origin` checks, and CORS
//! for the origins the operator lists.
//!
//! Without them, with auth off (the appliance's local default), any web page the developer
//! opens could make the browser `POST /runs/yaml` to `http://127.0.0.1:8000` (a multipart form
//! needs no CORS preflight) and run a flow, and a DNS-rebinding page could even read the
//! answers. So, for every route:
//!
//! - **`Host`** must be an IP address, `localhost` (or a `*.localhost` name), or a name in
//!   `PYOCO_HTTP_ALLOWED_HOSTS` (`*.domain` for its subdomains, `*` for any). A rebinding page
//!   always comes with its own DNS name, never an IP. When the list is empty and the gateway
//!   listens on a non-loopback address (a server behind a proxy or a DNS name), any `Host` is
//!   accepted; on a loopback address only the above. Otherwise: 403 `host not allowed`.
//! - **`Origin`**, on `POST`, `PUT`, `PATCH` and `DELETE`: when present (browsers send it),
//!   it must be the gateway's own origin (`http(s)://<Host>`), the desktop window's
//!   ([`DESKTOP_ORIGINS`]), or one in `PYOCO_HTTP_ALLOWED_ORIGINS`. Otherwise: 403 `origin not
//!   allowed`. Clients that are not browsers send no `Origin` and are not affected.
//! - **CORS**: preflights and answers carry `Access-Control-Allow-*` for those origins only,
//!   so no other page can read an answer.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use pyoco_config::Settings;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{error::ApiError, AppState};

/// The desktop app's window (Tauri 2 on Linux/macOS, and on Windows), always allowed.
pub const DESKTOP_ORIGINS: [&str; 3] = [
    "tauri://localhost",
    "http://tauri.localhost",
    "https://tauri.localhost",
];

/// The Host/Origin settings and the address the gateway serves. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    allowed_hosts: Vec<String>,
    /// Listed origins and the desktop window's.
    allowed_origins: Vec<String>,
    /// Set by `serve` once the listener is bound; unset counts as loopback (the strict rule).
    served: OnceLock<SocketAddr>,
    /// `PYOCO_HTTP_API_KEY_HEADER`, which a preflight may ask for.
    api_key_header: String,
}

impl Guard {
    pub(crate) fn new(settings: &Settings) -> Guard {
        let mut allowed_origins = settings.http_allowed_origins.clone();
        allowed_origins.extend(DESKTOP_ORIGINS.iter().map(|o| o.to_string()));
        Guard {
            inner: Arc::new(Inner {
                allowed_hosts: settings.http_allowed_hosts.clone(),
                allowed_origins,
                served: OnceLock::new(),
                api_key_header: settings.http_api_key_header.clone(),
            }),
        }
    }

    /// The address the gateway listens on (decides the default `Host` rule).
    pub(crate) fn set_served(&self, addr: SocketAddr) {
        let _ = self.inner.served.set(addr);
    }

    /// `None` when `host` (a `Host` header value) may be served, else the reason.
    fn host_refusal(&self, host: &str) -> Option<String> {
        let name = host_name(host);
        let allowed = name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.inner.allowed_hosts.iter().any(|allowed| {
                allowed == "*"
                    || *allowed == name
                    || allowed
                        .strip_prefix('*')
                        .is_some_and(|suffix| name.ends_with(suffix))
            })
            || (self.inner.allowed_hosts.is_empty()
                && self
                    .inner
                    .served
                    .get()
                    .is_some_and(|addr| !addr.ip().is_loopback()));
        (!allowed).then(|| {
            format!(
                "Host {host:?} is not an address of this gateway (a page using DNS rebinding \
                 looks like this); if it is yours, add {name:?} to PYOCO_HTTP_ALLOWED_HOSTS"
            )
        })
    }

    /// `None` when a state-changing request from the page at `origin` may go on.
    fn origin_refusal(&self, origin: &str, host: Option<&str>) -> Option<String> {
        let origin = origin.to_ascii_lowercase();
        let same_origin = host.is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        let allowed = same_origin || self.inner.allowed_origins.contains(&origin);
        (!allowed).then(|| {
            format!(
                "a web page from {origin} may not change anything here; if that page is yours, \
                 add {origin} to PYOCO_HTTP_ALLOWED_ORIGINS"
            )
        })
    }

    /// CORS for the allowed origins: the methods of the API, the API key header, JSON bodies and
    /// SSE's `Last-Event-ID`.
    pub(crate) fn cors(&self) -> CorsLayer {
        let origins = self.inner.allowed_origins.clone();
        let mut headers = vec![
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ];
        if let Ok(name) = HeaderName::from_bytes(self.inner.api_key_header.trim().as_bytes()) {
            headers.push(name);
        }
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| {
                    origins
                        .iter()
                        .any(|allowed| allowed.eq_ignore_ascii_case(o))
                })
            }))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers(headers)
            .max_age(Duration::from_secs(600))
    }
}

/// The host name of a `Host` value: without the port, without IPv6 brackets, lower-case.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The middleware: `Host` on every request, `Origin` on state-changing ones.
pub(crate) async fn check_browser_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let guard = state.guard();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if let Some(reason) = host.as_deref().and_then(|host| guard.host_refusal(host)) {
        tracing::info!("refused: {reason}");
        return ApiError::with_reason(StatusCode::FORBIDDEN, "host not allowed", reason)
            .into_response();
    }
    let changes_state = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes_state {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            if let Some(reason) = guard.origin_refusal(&origin, host.as_deref()) {
                tracing::info!(method = %request.method(), path = %request.uri().path(), "refused: {reason}");
                return ApiError::with_reason(StatusCode::FORBIDDEN, "origin not allowed", reason)
                    .into_response();
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str], origins: &[&str], served: Option<&str>) -> Guard {
        let guard = Guard {
            inner: Arc::new(Inner {
                allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                allowed_origins: origins
                    .iter()
                    .map(|o| o.to_string())
                    .chain(DESKTOP_ORIGINS.iter().map(|o| o.to_string()))
                    .collect(),
                served: OnceLock::new(),
                api_key_header: "X-API-Key".into(),
            }),
        };
        if let Some(addr) = served {
            guard.set_served(addr.parse().unwrap());
        }
        guard
    }

    #[test]
    fn a_loopback_gateway_answers_to_ips_localhost_and_listed_names_only() {
        let g = guard(
            &["dev.example", "*.corp.example"],
            &[],
            Some("127.0.0.1:8000"),
        );
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST",
            "app.localhost:8000",
            "[::1]:8000",
            "10.1.2.3",
            "dev.example:8000",
            "a.corp.example",
            "localhost.",
        ] {
            assert_eq!(g.host_refusal(ok), None, "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "corp.example",
            "localhost.evil.example",
            "xcorp.example",
        ] {
            let reason = g
                .host_refusal(bad)
                .unwrap_or_else(|| panic!("{bad} allowed"));
            assert!(reason.contains("PYOCO_HTTP_ALLOWED_HOSTS"), "{reason}");
        }
        // Not bound yet: the strict rule.
        assert!(guard(&[], &[], None).host_refusal("evil.example").is_some());
    }

    #[test]
    fn a_gateway_on_another_address_answers_to_any_name_unless_names_are_listed() {
        let open = guard(&[], &[], Some("0.0.0.0:8000"));
        assert_eq!(open.host_refusal("pyoco.example.com"), None);
        let listed = guard(&["pyoco.example.com"], &[], Some("0.0.0.0:8000"));
        assert_eq!(listed.host_refusal("pyoco.example.com:443"), None);
        assert!(listed.host_refusal("evil.example").is_some());
        assert_eq!(
            guard(&["*"], &[], Some("127.0.0.1:1")).host_refusal("any.where"),
            None
        );
    }

    #[test]
    fn only_the_own_desktop_and_listed_origins_may_change_state() {
        let g = guard(&[], &["https://ops.example.com"], Some("127.0.0.1:8000"));
        for (origin, host) in [
            ("http://127.0.0.1:8000", Some("127.0.0.1:8000")),
            ("HTTP://LOCALHOST:8000", Some("localhost:8000")),
            ("tauri://localhost", Some("127.0.0.1:8000")),
            ("http://tauri.localhost", None),
            ("https://ops.example.com", Some("127.0.0.1:8000")),
        ] {
            assert_eq!(g.origin_refusal(origin, host), None, "{origin}");
        }
        for (origin, host) in [
            ("https://evil.example", Some("127.0.0.1:8000")),
            ("http://127.0.0.1:8001", Some("127.0.0.1:8000")),
            ("null", Some("127.0.0.1:8000")),
            ("http://127.0.0.1:8000", None),
        ] {
            let reason = g
                .origin_refusal(origin, host)
                .unwrap_or_else(|| panic!("{origin} allowed"));
            assert!(reason.contains("PYOCO_HTTP_ALLOWED_ORIGINS"), "{reason}");
        }
    }
}
