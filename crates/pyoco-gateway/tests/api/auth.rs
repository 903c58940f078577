//! API-key authentication (`PYOCO_HTTP_AUTH_MODE=api_key`, contract §9) and tenant scoping
//! (§3.1): every route but the public ones needs a key, a revoked key stops working within a
//! second even while remembered, and one tenant never sees another's runs.

use std::{num::NonZeroU32, time::Duration};

use pyoco_config::AuthMode;
use pyoco_testkit::{post_yaml, status_json, AppOptions, TestApp};
use pyoco_wire::{new_api_key, python, ApiKeyRecord};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::FLOW_YAML;

/// The only routes anyone may call with auth on.
const PUBLIC: &[(&str, &str)] = &[("GET", "/health"), ("GET", "/openapi.json")];
const PEPPER: &str = "test-pepper";

/// A gateway (no worker) with auth on and the test pepper.
async fn auth_app() -> TestApp {
    TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = AuthMode::ApiKey;
        settings.auth_pepper = Some(PEPPER.into());
    })
    .await
}

/// Store a new key for `tenant` (1000 rounds: the gateway uses the record's count) and return
/// the plain key and its id.
async fn add_key(app: &TestApp, tenant: &str) -> (String, String) {
    let rounds = NonZeroU32::new(1000).unwrap();
    let made = new_api_key(tenant, PEPPER, rounds, python::time()).unwrap();
    app.store()
        .auth()
        .create(
            &ApiKeyRecord::kv_key(&made.record.key_id),
            made.record.to_json(),
        )
        .await
        .unwrap();
    (made.api_key, made.record.key_id)
}

/// Mark a key revoked in the bucket, as either admin CLI does.
async fn revoke(app: &TestApp, key_id: &str) {
    let bucket = app.store().auth();
    let kv_key = ApiKeyRecord::kv_key(key_id);
    let entry = bucket.get(&kv_key).await.unwrap().unwrap();
    let mut record = ApiKeyRecord::from_json(&entry.value).unwrap();
    record.revoked_at = Some(python::time());
    bucket.put(&kv_key, record.to_json()).await.unwrap();
}

/// An HTTP client that sends `key` in `header` with every request.
fn client_with(header: &'static str, key: &str) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert(header, HeaderValue::from_str(key).unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn get(http: &reqwest::Client, app: &TestApp, path: &str) -> (u16, Value) {
    status_json(http.get(app.url(path)).send().await.unwrap()).await
}

/// `(METHOD, path)` of every operation the OpenAPI document lists (the openapi tests check it
/// is exactly what the router serves), with sample path parameters.
async fn every_operation(app: &TestApp) -> Vec<(String, String, String)> {
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{run_id}", "no-such-run")
                .replace("{worker_id}", "no-such-worker")
                .replace("{wheel_name}", "no_such_wheel-1.0-py3-none-any.whl");
            operations.push((method.to_uppercase(), path.clone(), concrete));
        }
    }
    assert!(operations.len() >= 15, "{operations:?}");
    operations
}

async fn call(http: &reqwest::Client, app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = http
        .request(method, app.url(path))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if path.ends_with("/watch") && status == 200 {
        return (status, Value::Null);
    }
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_route_but_the_public_ones_needs_a_valid_key() {
    let app = auth_app().await;
    let (good, _) = add_key(&app, "acme").await;
    let (revoked, revoked_id) = add_key(&app, "acme").await;
    revoke(&app, &revoked_id).await;
    let anonymous = reqwest::Client::new();
    let with_good = client_with("x-api-key", &good);
    let with_revoked = client_with("X-API-Key", &revoked);
    let with_garbage = client_with("X-API-Key", "not-a-key");

    for (method, path, concrete) in every_operation(&app).await {
        let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
        let (status, body) = call(&anonymous, &app, &method, &concrete).await;
        if public {
            assert_eq!(status, 200, "{method} {path} is public: {body}");
            continue;
        }
        assert_eq!(
            (status, &body),
            (401, &json!({"detail": "api key required"})),
            "{method} {path} without a key"
        );
        for (what, http) in [("revoked", &with_revoked), ("malformed", &with_garbage)] {
            let (status, body) = call(http, &app, &method, &concrete).await;
            assert_eq!(
                (status, &body),
                (403, &json!({"detail": "invalid api key"})),
                "{method} {path} with a {what} key"
            );
        }
        let (status, body) = call(&with_good, &app, &method, &concrete).await;
        assert!(
            status != 401 && status != 403,
            "{method} {path} with a good key: {status} {body}"
        );
    }

    // The dashboard page stays open (its API calls carry the key).
    assert_ne!(
        anonymous.get(app.url("/")).send().await.unwrap().status(),
        401
    );
    // An empty header is no key; a key for a record of another key id is refused.
    let empty = client_with("X-API-Key", "");
    assert_eq!(get(&empty, &app, "/runs").await.0, 401);
    let (other, other_id) = add_key(&app, "acme").await;
    let forged = other.replace(&other_id, "0123456789abcdef01234567");
    assert_eq!(
        get(&client_with("X-API-Key", &forged), &app, "/runs")
            .await
            .0,
        403
    );
    // A body that would fail validation still gets 401 first (0.5.1 answered 422).
    let response = anonymous
        .post(app.url("/runs"))
        .json(&json!({"nonsense": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_header_name_is_the_configured_one_in_any_case() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = AuthMode::ApiKey;
        settings.auth_pepper = Some(PEPPER.into());
        settings.http_api_key_header = "X-Pyoco-Token".into();
    })
    .await;
    let (key, _) = add_key(&app, "acme").await;
    assert_eq!(
        get(&client_with("x-pyoco-token", &key), &app, "/runs")
            .await
            .0,
        200
    );
    assert_eq!(
        get(&client_with("X-API-Key", &key), &app, "/runs").await.0,
        401
    );
}

#[tokio::test]
async fn a_wrong_pepper_rejects_every_key() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = AuthMode::ApiKey;
        settings.auth_pepper = Some("another-pepper".into());
    })
    .await;
    let (key, _) = add_key(&app, "acme").await;
    let (status, body) = get(&client_with("X-API-Key", &key), &app, "/runs").await;
    assert_eq!((status, body), (403, json!({"detail": "invalid api key"})));
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second_while_remembered() {
    let app = auth_app().await;
    let (key, key_id) = add_key(&app, "acme").await;
    let http = client_with("X-API-Key", &key);
    // Warm: the first request verifies, the next ones are answered from memory.
    for _ in 0..3 {
        assert_eq!(get(&http, &app, "/runs").await.0, 200);
    }
    // Another key's change does not disturb this one.
    add_key(&app, "other").await;
    assert_eq!(get(&http, &app, "/runs").await.0, 200);

    // Five requests, one hash: the key was verified once and then remembered.
    let verifications = || async {
        let response = http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("pyoco_api_key_verifications_total "))
            .unwrap_or_else(|| panic!("no verification count in:\n{text}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let before = verifications().await;
    for _ in 0..5 {
        assert_eq!(get(&http, &app, "/runs").await.0, 200);
    }
    assert_eq!(
        verifications().await,
        before,
        "remembered keys are not hashed again"
    );

    let revoked_at = Instant::now();
    revoke(&app, &key_id).await;
    loop {
        let (status, body) = get(&http, &app, "/runs").await;
        if status == 403 {
            assert_eq!(body, json!({"detail": "invalid api key"}));
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the revoked key still worked after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("revocation took effect after {:?}", revoked_at.elapsed());
    // And it stays refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&http, &app, "/runs").await.0, 403);
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_runs() {
    let app = auth_app().await;
    let (key_a, id_a) = add_key(&app, "tenant-a").await;
    let (key_b, _) = add_key(&app, "tenant-b").await;
    let a = client_with("X-API-Key", &key_a);
    let b = client_with("X-API-Key", &key_b);

    let mut runs_a = Vec::new();
    for _ in 0..3 {
        let response = post_yaml(&a, app.base_url(), FLOW_YAML, "main", "default").await;
        let (status, body) = status_json(response).await;
        assert_eq!(status, 200, "{body}");
        runs_a.push(body["run_id"].as_str().unwrap().to_string());
    }
    let response = post_yaml(&b, app.base_url(), FLOW_YAML, "main", "default").await;
    let run_b = status_json(response).await.1["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Stamped with the tenant and the key.
    let stored = app.stored_snapshot(&runs_a[0]).await;
    assert_eq!(stored["tenant_id"], "tenant-a");
    assert_eq!(stored["api_key_id"], id_a.as_str());

    // Another tenant's run does not exist for b.
    let not_found = json!({"detail": "run not found"});
    for path in ["", "/tasks", "/watch?timeout_sec=1"] {
        let (status, body) = get(&b, &app, &format!("/runs/{}{path}", runs_a[0])).await;
        assert_eq!((status, body), (404, not_found.clone()), "GET {path}");
    }
    let response = b
        .post(app.url(&format!("/runs/{}/cancel", runs_a[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(response).await, (404, not_found.clone()));
    assert_eq!(
        app.stored_snapshot(&runs_a[0]).await["status"],
        "PENDING",
        "b's cancel changed nothing"
    );

    // Lists: each tenant sees its own runs only, in both shapes.
    let ids = |items: &Value| -> Vec<String> {
        let mut ids: Vec<String> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["run_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut want_a = runs_a.clone();
    want_a.sort();
    assert_eq!(ids(&get(&a, &app, "/runs").await.1), want_a);
    assert_eq!(ids(&get(&b, &app, "/runs").await.1), vec![run_b.clone()]);

    // A cursor a got, replayed by b, shows b nothing of a's.
    let (status, page) = get(&a, &app, "/runs?limit=1&cursor=").await;
    assert_eq!(status, 200, "{page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (status, a_next) = get(&a, &app, &format!("/runs?limit=10&cursor={cursor}")).await;
    assert_eq!(status, 200);
    assert_eq!(a_next["items"].as_array().unwrap().len(), 2);
    let (status, b_page) = get(&b, &app, &format!("/runs?limit=10&cursor={cursor}")).await;
    assert_eq!(status, 200, "{b_page}");
    for item in b_page["items"].as_array().unwrap() {
        assert_eq!(item["run_id"], run_b.as_str(), "b saw {item}");
    }

    // a's own cancel works and names the key.
    let response = a
        .post(app.url(&format!("/runs/{}/cancel", runs_a[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.stored_snapshot(&runs_a[0]).await["cancel_requested_by"],
        format!("api_key:{id_a}").as_str()
    );
}

#[tokio::test]
async fn wheel_history_names_the_key_that_uploaded() {
    let app = auth_app().await;
    let (key, key_id) = add_key(&app, "acme").await;
    let http = client_with("X-API-Key", &key);
    let wheel = pyoco_testkit::task_wheel("auth_tasks", "0.1.0", "def t():\n    return 1\n");
    let (status, body) = pyoco_testkit::upload_wheel(
        &http,
        app.base_url(),
        "auth_tasks-0.1.0-py3-none-any.whl",
        wheel,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, history) = get(&http, &app, "/wheels/history").await;
    assert_eq!(status, 200, "{history}");
    let actor = &history[0]["actor"];
    assert_eq!(actor, &json!({"tenant_id": "acme", "api_key_id": key_id}));
}
