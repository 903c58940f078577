//! NATS not there yet, NATS going away and coming back, and a publish that fails.

use std::time::Duration;

use pyoco_store::{SharedStore, Store, StoreConfig};
use pyoco_testkit::{eventually, settings_for, status_json, Gateway, TestNats};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shared_store(url: &str) -> (pyoco_config::Settings, SharedStore) {
    let settings = settings_for(url);
    let store = SharedStore::connect_in_background(
        &settings.nats_url,
        "pyoco-http-api",
        StoreConfig::from(&settings),
    );
    (settings, store)
}

/// Submit until it works; returns the run id.
async fn submit_eventually(gateway: &Gateway, what: &str) -> String {
    eventually(Duration::from_secs(30), what, || async {
        let response = gateway
            .http
            .post(gateway.url("/runs"))
            .json(&json!({"flow_name": "f"}))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        Some(body["run_id"].as_str()?.to_string())
    })
    .await
}

#[tokio::test]
async fn a_gateway_started_before_nats_answers_503_then_works() {
    let port = free_port();
    let (settings, store) = shared_store(&format!("nats://127.0.0.1:{port}"));
    let gateway = Gateway::start(&settings, store).await;

    // Never connected: /health says so, with what to check (not 200 while every call fails).
    let detail = eventually(
        Duration::from_secs(10),
        "/health naming the problem",
        || async {
            let (status, body) = status_json(gateway.get("/health").await).await;
            assert_eq!(
                (status, &body["status"]),
                (503, &json!("unavailable")),
                "{body}"
            );
            let detail = body["detail"].as_str()?.to_string();
            detail.contains("cannot reach NATS").then_some(detail)
        },
    )
    .await;
    assert!(
        detail.contains(&format!("nats://127.0.0.1:{port}")) && detail.contains("PYOCO_NATS_URL"),
        "{detail}"
    );
    let (status, body) =
        status_json(gateway.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    assert_eq!(
        (status, body),
        (503, json!({"detail": "nats unavailable: NotConnected"}))
    );

    let _nats = TestNats::start_with(|c| c.port = Some(port)).await;
    let run_id = submit_eventually(&gateway, "the gateway to submit once NATS is up").await;
    let (status, body) = status_json(gateway.get("/health").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = status_json(gateway.get(&format!("/runs/{run_id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], json!("PENDING"));
}

#[tokio::test]
async fn nats_going_away_is_503_and_the_gateway_recovers_by_itself() {
    let mut nats = TestNats::start().await;
    let port = nats.supervisor().port();
    let store_dir = nats.supervisor().store_dir().to_path_buf();
    let (settings, store) = shared_store(&nats.url());
    store.wait_ready(Duration::from_secs(20)).await.unwrap();
    let gateway = Gateway::start(&settings, store).await;
    let before = submit_eventually(&gateway, "a submit with NATS up").await;

    nats.stop().await;
    let detail = eventually(
        Duration::from_secs(10),
        "a 503 while NATS is down",
        || async {
            let response = gateway.get(&format!("/runs/{before}")).await;
            if response.status() != 503 {
                return None;
            }
            let body: serde_json::Value = response.json().await.ok()?;
            Some(body["detail"].as_str()?.to_string())
        },
    )
    .await;
    assert!(detail.starts_with("nats unavailable: "), "{detail}");
    let (status, body) =
        status_json(gateway.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(gateway.get("/health").await.status(), 200);

    // Same port, same JetStream store: the gateway reconnects without a restart.
    let _nats2 = TestNats::start_with(|c| {
        c.port = Some(port);
        c.store_dir = store_dir.clone();
    })
    .await;
    let after = submit_eventually(&gateway, "a submit after NATS came back").await;
    for run_id in [before, after] {
        let (status, _) = status_json(gateway.get(&format!("/runs/{run_id}")).await).await;
        assert_eq!(status, 200);
    }
}

/// A work stream that does not capture `pyoco.work.>` (first creator wins, so the store keeps
/// it): every job publish fails after the snapshot was created.
#[tokio::test]
async fn a_failed_publish_deletes_the_snapshot_and_answers_503() {
    let nats = TestNats::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PYOCO_WORK".into(),
        subjects: vec!["elsewhere.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .unwrap();

    let (settings, shared) = shared_store(&nats.url());
    let store: Store = shared.wait_ready(Duration::from_secs(20)).await.unwrap();
    let gateway = Gateway::start(&settings, shared).await;

    let (status, body) =
        status_json(gateway.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("nats unavailable: "),
        "{body}"
    );
    // The snapshot was written (stream sequence 1) and deleted again (sequence 2).
    assert!(store.runs().keys().await.unwrap().is_empty());
    let mut kv_stream = store.jetstream().get_stream("KV_pyoco_runs").await.unwrap();
    assert_eq!(kv_stream.info().await.unwrap().state.last_sequence, 2);
}
