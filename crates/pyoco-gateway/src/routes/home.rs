//! `GET /`: where pyoco-server 0.5.1 serves its dashboard. Until ours exists, a small page that
//! says the server runs and links the API, so "Open dashboard" (desktop app, `up`'s banner)
//! never lands on a bare 404. Not part of the OpenAPI document (0.5.1's page is not either).

use axum::{response::Html, routing::get, Router};

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
<p class="muted">From the command line: <code>pyoco-client --server http://HOST:PORT list</code>.</p>
</body>
</html>
"#;

async fn home() -> Html<String> {
    Html(PAGE.replace("__VERSION__", env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_home_page_links_the_api_and_names_the_version() {
        let axum::response::Html(text) = super::home().await;
        assert!(text.contains("pyoco-server is running"));
        assert!(text.contains(r#"href="/openapi.json""#));
        assert!(text.contains(env!("CARGO_PKG_VERSION")));
        assert!(!text.contains("__VERSION__"));
    }
}
