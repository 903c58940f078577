//! Requests a browser sends for a web page (`guard.rs`): a foreign `Host` (DNS rebinding) and
//! a foreign `Origin` on a state-changing request are refused before anything runs; listed
//! origins get CORS.

use pyoco_testkit::{status_json, AppOptions, TestApp};
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, HOST, ORIGIN};
use serde_json::Value;

use crate::helpers::FLOW_YAML;

fn yaml_form() -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(FLOW_YAML.as_bytes().to_vec())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .unwrap();
    reqwest::multipart::Form::new()
        .part("workflow", part)
        .text("flow_name", "main")
        .text("tag", "default")
}

#[tokio::test]
async fn a_page_on_another_site_cannot_submit_a_flow() {
    let app = TestApp::gateway_only().await;
    let response = app
        .http()
        .post(app.url("/runs/yaml"))
        .header(ORIGIN, "https://evil.example")
        .multipart(yaml_form())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["detail"], "origin not allowed");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("PYOCO_HTTP_ALLOWED_ORIGINS"),
        "{body}"
    );
    assert_eq!(app.queued_jobs().await, 0, "nothing was queued");

    // The same request from the gateway's own page, the desktop window, or no browser at all.
    let own = format!("http://{}", app.addr());
    for origin in [Some(own.as_str()), Some("tauri://localhost"), None] {
        let mut request = app
            .http()
            .post(app.url("/runs/yaml"))
            .multipart(yaml_form());
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let (status, body) = status_json(request.send().await.unwrap()).await;
        assert_eq!(status, 200, "{origin:?}: {body}");
    }
    // Reading is not changing: a foreign GET goes through (the browser hides the answer).
    let response = app
        .http()
        .get(app.url("/runs"))
        .header(ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_and_listed_names_are_served() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_allowed_hosts = vec!["pyoco.test".into()];
    })
    .await;
    let port = app.addr().port();
    for path in ["/health", "/runs", "/"] {
        let response = app
            .http()
            .get(app.url(path))
            .header(HOST, format!("evil.example:{port}"))
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(response).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["detail"], "host not allowed");
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("PYOCO_HTTP_ALLOWED_HOSTS"),
            "{body}"
        );
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("pyoco.test:{port}"),
    ] {
        let response = app
            .http()
            .get(app.url("/health"))
            .header(HOST, &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn listed_origins_get_cors_and_others_do_not() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_allowed_origins = vec!["https://ops.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http()
            .request(reqwest::Method::OPTIONS, app.url("/runs/yaml"))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key")
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://ops.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("x-api-key"), "{headers}");

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

    // The listed origin may submit, and may read the answer.
    let response = app
        .http()
        .post(app.url("/runs/yaml"))
        .header(ORIGIN, "https://ops.example.com")
        .multipart(yaml_form())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://ops.example.com"
    );
    let (status, body): (u16, Value) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
}
