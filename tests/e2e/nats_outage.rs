//! NATS going away under a running appliance, and coming back on the same port and store.

use std::time::Duration;

use pyoco_testkit::{eventually, status_json, AppOptions, TestApp};

use crate::{README_FLOW, RUN_TIMEOUT, TERMINAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_gives_503_then_recovers() {
    let mut app = TestApp::start(AppOptions::default()).await;
    let before = app.submit_yaml(README_FLOW, "before", "default").await;
    let run = app.wait_status(&before, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");

    app.stop_nats().await;

    let (status, body) = eventually(
        Duration::from_secs(10),
        "a submit refused while NATS is down",
        || async {
            let response = app.post_yaml(README_FLOW, "during", "default").await;
            (response.status() != 200).then_some(status_json(response).await)
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("nats unavailable: "), "{body}");
    let (status, body) = app.get_json(&format!("/runs/{before}")).await;
    assert_eq!(status, 503, "reads need NATS too: {body}");
    let (status, body) = app.get_json("/health").await;
    assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));

    app.restart_nats().await;

    // Nobody restarts the gateway or the worker: both reconnect by themselves.
    let after = eventually(
        Duration::from_secs(30),
        "a submit accepted after NATS came back",
        || async {
            let response = app.post_yaml(README_FLOW, "after", "default").await;
            if response.status() != 200 {
                return None;
            }
            let (_, body) = status_json(response).await;
            Some(body["run_id"].as_str()?.to_string())
        },
    )
    .await;
    let run = app.wait_status(&after, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["worker_id"], "e2e-worker");
    // Same store: the run from before the outage is still there.
    let (status, run) = app.get_json(&format!("/runs/{before}")).await;
    assert_eq!(
        (status, &run["status"]),
        (200, &serde_json::json!("COMPLETED"))
    );
}
