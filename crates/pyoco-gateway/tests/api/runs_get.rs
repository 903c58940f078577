//! `GET /runs/{run_id}` and `GET /runs/{run_id}/tasks`.

use pyoco_testkit::{status_json, TestApp};
use pyoco_wire::python;
use serde_json::{json, Value};

use crate::helpers::keys;

/// A snapshot as a 0.5.1 worker writes it, plus a key from a newer version.
fn worker_snapshot(run_id: &str, worker_id: Option<&str>) -> Value {
    let mut snapshot = json!({
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "tenant_id": null, "api_key_id": null, "workflow_yaml_sha256": null,
        "workflow_yaml_bytes": null, "cancel_requested_at": null, "cancel_requested_by": null,
        "status": "RUNNING", "params": {"x": 1},
        "tasks": {"t1": "SUCCEEDED", "t2": "RUNNING"},
        "task_records": {"t1": {"state": "SUCCEEDED", "output": 2}},
        "start_time": 1712345678.5, "end_time": null, "heartbeat_at": 1712345679.25,
        "updated_at": 1712345679.25, "error": null,
        "task_records_truncated": true, "schedule_id": "nightly"
    });
    if let Some(w) = worker_id {
        snapshot["worker_id"] = json!(w);
    }
    snapshot
}

async fn put_snapshot(app: &TestApp, run_id: &str, snapshot: &Value) {
    app.store()
        .runs()
        .put(run_id, serde_json::to_vec(snapshot).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn get_returns_the_stored_snapshot_without_records_by_default() {
    let app = TestApp::gateway_only().await;
    let run_id = "11111111-2222-4333-8444-555555555555";
    put_snapshot(&app, run_id, &worker_snapshot(run_id, None)).await;

    let (status, body) = status_json(app.get(&format!("/runs/{run_id}")).await).await;
    assert_eq!(status, 200, "{body}");
    let body = body.as_object().unwrap();
    assert_eq!(
        keys(body),
        [
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "workflow_yaml_sha256",
            "workflow_yaml_bytes",
            "cancel_requested_at",
            "cancel_requested_by",
            "status",
            "params",
            "tasks",
            "start_time",
            "end_time",
            "heartbeat_at",
            "updated_at",
            "error",
            "schedule_id"
        ]
    );
    assert_eq!(body["start_time"], json!(1712345678.5));
    assert_eq!(body["schedule_id"], json!("nightly"));

    for include in ["records", "task_records", "full", "all"] {
        let (status, body) = status_json(
            app.get(&format!("/runs/{run_id}?include=other&include={include}"))
                .await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body, worker_snapshot(run_id, None), "include={include}");
    }
    let (_, body) = status_json(app.get(&format!("/runs/{run_id}?include=nope")).await).await;
    assert!(body.get("task_records").is_none());
}

#[tokio::test]
async fn a_submitted_run_reads_back_as_pending() {
    let app = TestApp::gateway_only().await;
    let (_, submitted) =
        status_json(app.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    let run_id = submitted["run_id"].as_str().unwrap();
    let (status, body) = status_json(app.get(&format!("/runs/{run_id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], json!("PENDING"));
    assert_eq!(body["run_id"], json!(run_id));
    assert!(body.get("task_records").is_none());
    assert_eq!(body["tasks"], json!({}));
}

#[tokio::test]
async fn unknown_runs_are_404() {
    let app = TestApp::gateway_only().await;
    for path in [
        "/runs/00000000-0000-4000-8000-000000000000",
        "/runs/not*a*key",
        "/runs/.dot",
        "/runs/00000000-0000-4000-8000-000000000000/tasks",
        "/runs/a%20b/tasks",
        // Valid characters, but an empty subject token: NATS refuses the key (was a 503).
        "/runs/a..b",
        "/runs/a..b/tasks",
        "/runs/a..b/watch",
    ] {
        let (status, body) = status_json(app.get(path).await).await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "run not found"})),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_deleted_run_is_404() {
    let app = TestApp::gateway_only().await;
    put_snapshot(&app, "gone", &worker_snapshot("gone", None)).await;
    app.store().runs().delete("gone").await.unwrap();
    let (status, _) = status_json(app.get("/runs/gone").await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_corrupt_record_is_a_clear_500_not_a_crash() {
    let app = TestApp::gateway_only().await;
    app.store().runs().put("broken", "{not json").await.unwrap();
    app.store().runs().put("array", "[1,2]").await.unwrap();
    for path in ["/runs/broken", "/runs/broken/tasks", "/runs/array"] {
        let (status, body) = status_json(app.get(path).await).await;
        assert_eq!(status, 500, "{path}");
        assert_eq!(body["detail"], json!("run record is corrupt"), "{path}");
    }
    // The gateway goes on serving.
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn python_nan_tokens_in_a_snapshot_read_as_null() {
    let app = TestApp::gateway_only().await;
    app.store()
        .runs()
        .put(
            "nan",
            r#"{"run_id":"nan","status":"COMPLETED","task_records":{"t":{"output":NaN}},"tasks":{}}"#,
        )
        .await
        .unwrap();
    let (status, body) = status_json(app.get("/runs/nan?include=records").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["task_records"]["t"]["output"], Value::Null);
}

#[tokio::test]
async fn stored_floats_read_back_exactly() {
    let app = TestApp::gateway_only().await;
    // Values whose naive parse is one ULP off (found by this test's first version).
    let stored = r#"{"run_id":"f","status":"RUNNING","updated_at":1795759882.0273495,"heartbeat_at":1795759871.2675421,"start_time":1e+16}"#;
    app.store().runs().put("f", stored).await.unwrap();
    let text = app.get("/runs/f").await.text().await.unwrap();
    assert_eq!(text, stored);
}

#[tokio::test]
async fn a_named_worker_adds_its_liveness() {
    let app = TestApp::gateway_only().await;
    let t = python::time();
    app.store()
        .workers()
        .put(
            "w-alive",
            serde_json::to_vec(&json!({
                "worker_id": "w-alive", "instance_id": "abc", "state": "RUNNING", "hidden": true,
                "tags": ["cpu", "gpu"], "last_seen_at": t, "last_heartbeat_at": t - 1.0,
                "heartbeat_at": t - 1.0, "updated_at": t
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    app.store()
        .workers()
        .put(
            "w-stale",
            serde_json::to_vec(&json!({
                "worker_id": "w-stale", "state": "IDLE", "tags": ["cpu"],
                "last_seen_at": t - 60.0, "last_heartbeat_at": t - 60.0, "updated_at": t - 60.0
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    put_snapshot(
        &app,
        "r-alive",
        &worker_snapshot("r-alive", Some("w-alive")),
    )
    .await;
    put_snapshot(
        &app,
        "r-stale",
        &worker_snapshot("r-stale", Some("w-stale")),
    )
    .await;
    put_snapshot(&app, "r-gone", &worker_snapshot("r-gone", Some("w-gone"))).await;

    let (_, body) = status_json(app.get("/runs/r-alive").await).await;
    assert_eq!(body["worker_id"], json!("w-alive"));
    assert_eq!(body["worker_alive"], json!(true));
    assert_eq!(body["worker_state"], json!("RUNNING"));
    assert_eq!(body["worker_heartbeat_at"], json!(t - 1.0));
    assert_eq!(body["worker_hidden"], json!(true));
    assert_eq!(body["worker_tags"], json!(["cpu", "gpu"]));
    let order = keys(body.as_object().unwrap());
    assert_eq!(
        &order[order.len() - 6..],
        [
            "worker_id",
            "worker_alive",
            "worker_state",
            "worker_heartbeat_at",
            "worker_hidden",
            "worker_tags"
        ]
    );

    let (_, body) = status_json(app.get("/runs/r-stale").await).await;
    assert_eq!(body["worker_alive"], json!(false));
    assert_eq!(body["worker_state"], json!("DISCONNECTED"));
    assert_eq!(body["worker_hidden"], json!(false));

    let (_, body) = status_json(app.get("/runs/r-gone").await).await;
    assert_eq!(body["worker_alive"], json!(false));
    assert_eq!(body["worker_state"], json!("DISCONNECTED"));
    assert_eq!(body["worker_heartbeat_at"], Value::Null);
    assert!(body.get("worker_tags").is_none());
}

#[tokio::test]
async fn tasks_view_always_has_records() {
    let app = TestApp::gateway_only().await;
    put_snapshot(&app, "r1", &worker_snapshot("r1", None)).await;
    let (status, body) = status_json(app.get("/runs/r1/tasks").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(body.as_object().unwrap()),
        [
            "run_id",
            "flow_name",
            "status",
            "tasks",
            "task_records",
            "task_records_truncated"
        ]
    );
    assert_eq!(
        body,
        json!({
            "run_id": "r1", "flow_name": "main", "status": "RUNNING",
            "tasks": {"t1": "SUCCEEDED", "t2": "RUNNING"},
            "task_records": {"t1": {"state": "SUCCEEDED", "output": 2}},
            "task_records_truncated": true
        })
    );

    // A fresh submission: empty maps, not truncated.
    let (_, submitted) =
        status_json(app.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    let run_id = submitted["run_id"].as_str().unwrap();
    let (_, body) = status_json(app.get(&format!("/runs/{run_id}/tasks")).await).await;
    assert_eq!(
        body,
        json!({"run_id": run_id, "flow_name": "f", "status": "PENDING", "tasks": {},
               "task_records": {}, "task_records_truncated": false})
    );

    // Missing keys read as null / {} / false.
    app.store().runs().put("bare", "{}").await.unwrap();
    let (_, body) = status_json(app.get("/runs/bare/tasks").await).await;
    assert_eq!(
        body,
        json!({"run_id": null, "flow_name": null, "status": null, "tasks": {},
               "task_records": {}, "task_records_truncated": false})
    );
}
