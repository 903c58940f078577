use pyoco_store::{SharedStore, StoreConfig};
use pyoco_testkit::{settings_for, status_json, Gateway};
use serde_json::json;

/// A gateway whose NATS is nowhere (nothing listens on port 1).
async fn gateway_without_nats() -> Gateway {
    let settings = settings_for("nats://127.0.0.1:1");
    let store = SharedStore::connect_in_background(
        &settings.nats_url,
        "pyoco-http-api",
        StoreConfig::from(&settings),
    );
    Gateway::start(&settings, store).await
}

#[tokio::test]
async fn health_is_ok_once_connected_without_touching_nats() {
    let nats = pyoco_testkit::TestNats::start().await;
    let settings = settings_for(&nats.url());
    let store = SharedStore::connect_in_background(
        &settings.nats_url,
        "pyoco-http-api",
        StoreConfig::from(&settings),
    );
    store
        .wait_ready(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let gateway = Gateway::start(&settings, store).await;
    let response = gateway.get("/health").await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let (status, body) = status_json(response).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn health_is_503_with_the_reason_while_nats_never_connected() {
    let gateway = gateway_without_nats().await;
    let (status, body) = status_json(gateway.get("/health").await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("nats://127.0.0.1:1"),
        "the URL it tries: {detail}"
    );
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let gateway = gateway_without_nats().await;
    let (status, body) = status_json(gateway.get("/nope").await).await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    let gateway = gateway_without_nats().await;
    let response = gateway
        .http
        .delete(gateway.url("/health"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, body),
        (405, json!({"detail": "Method Not Allowed"}))
    );
    let response = gateway
        .http
        .delete(gateway.url("/runs"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, body),
        (405, json!({"detail": "Method Not Allowed"}))
    );
}

#[tokio::test]
async fn nats_endpoints_say_not_connected_before_nats_is_there() {
    let gateway = gateway_without_nats().await;
    let (status, body) = status_json(gateway.get("/runs/abc").await).await;
    assert_eq!(
        (status, body),
        (503, json!({"detail": "nats unavailable: NotConnected"}))
    );
    let (status, body) =
        status_json(gateway.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    assert_eq!(
        (status, body),
        (503, json!({"detail": "nats unavailable: NotConnected"}))
    );
}

#[tokio::test]
async fn graceful_shutdown_returns() {
    let mut gateway = gateway_without_nats().await;
    assert_eq!(gateway.get("/health").await.status(), 503);
    gateway.stop().await;
    assert!(gateway
        .http
        .get(gateway.url("/health"))
        .send()
        .await
        .is_err());
}
