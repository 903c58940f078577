//! `GET /`: where pyoco-server 0.5.1 serves its dashboard. Until ours exists, a small page that
//! says the server runs and links the API, so "Open dashboard" (desktop app, `up`'s banner)
//! never lands on a bare 404. Not part of the OpenAPI document (0.5.1's page is not either).

use axum::{extract::State, response::Html, routing::get, Router};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/", get(home))
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyoco-server</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { max-width: 40rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5; }
  code, a { font-family: ui-monospace, monospace; }
  li { margin: .25rem 0; }
  .muted { opacity: .7; }
</style>
</head>
<body>
<h1>pyoco-server is running</h1>
<p>This is the HTTP gateway (version __VERSION__). The web dashboard is not part of this
version yet; the API is:</p>
<ul>
  <li><a href="/runs?limit=50">/runs</a> — runs, newest first (<code>POST /runs/yaml</code> submits a flow.yaml)</li>
  <li><a href="/workers">/workers</a> — workers and their state</li>
  <li><a href="/wheels">/wheels</a> — task packages</li>
  <li><a href="/metrics">/metrics</a> — Prometheus metrics</li>
  <li><a href="/health">/health</a> — liveness</li>
  <li><a href="/openapi.json">/openapi.json</a> — the API description</li>
</ul>
__AUTH__<p class="muted">From the command line: <code>pyoco-client --server http://HOST:PORT list</code>.</p>
</body>
</html>
"#;

/// Said on the page when the API needs a key (`/health` and `/openapi.json` do not).
const AUTH_NOTE: &str = r#"<p><strong>This gateway requires an API key</strong> on every link above but
/health and /openapi.json: send it in the <code>__HEADER__</code> header
(<code>pyoco-client --api-key KEY</code>). An administrator creates keys with
<code>pyoco-server-admin api-key create --tenant T</code>.</p>
"#;

async fn home(State(state): State<AppState>) -> Html<String> {
    Html(page(state.auth().header_name()))
}

/// The page; `auth_header` is the API key header when auth is on.
fn page(auth_header: Option<&str>) -> String {
    let auth = auth_header
        .map(|header| AUTH_NOTE.replace("__HEADER__", header))
        .unwrap_or_default();
    PAGE.replace("__VERSION__", env!("CARGO_PKG_VERSION"))
        .replace("__AUTH__", &auth)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_home_page_links_the_api_and_names_the_version() {
        let text = super::page(None);
        assert!(text.contains("pyoco-server is running"));
        assert!(text.contains(r#"href="/openapi.json""#));
        assert!(text.contains(env!("CARGO_PKG_VERSION")));
        assert!(!text.contains("__"), "no placeholder left");
        assert!(!text.contains("API key"));
    }

    #[test]
    fn with_auth_on_the_page_says_a_key_is_needed_and_in_which_header() {
        let text = super::page(Some("x-pyoco-token"));
        assert!(text.contains("requires an API key"));
        assert!(text.contains("<code>x-pyoco-token</code>"));
        assert!(!text.contains("__"), "no placeholder left");
    }
}
