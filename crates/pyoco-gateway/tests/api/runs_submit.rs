//! `POST /runs`.

use pyoco_testkit::{status_json, AppOptions, TestApp};
use serde_json::{json, Value};

use crate::helpers::{is_uuid4, keys};

const INITIAL_SNAPSHOT_KEYS: [&str; 15] = [
    "run_id",
    "flow_name",
    "tag",
    "tags",
    "tenant_id",
    "api_key_id",
    "status",
    "params",
    "tasks",
    "task_records",
    "start_time",
    "end_time",
    "heartbeat_at",
    "updated_at",
    "error",
];

const JOB_KEYS: [&str; 8] = [
    "run_id",
    "flow_name",
    "tag",
    "tags",
    "tenant_id",
    "api_key_id",
    "params",
    "submitted_at",
];

#[tokio::test]
async fn submit_stores_a_pending_snapshot_and_queues_the_job() {
    let app = TestApp::gateway_only().await;
    let response = app
        .post_json(
            "/runs",
            &json!({"flow_name": "hello", "params": {"x": 1, "s": "caf\u{e9}"}, "tag": "cpu",
                    "tags": ["a", "b"], "ignored": true}),
        )
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    assert!(is_uuid4(&run_id), "{run_id}");
    assert_eq!(body, json!({"run_id": run_id, "status": "PENDING"}));

    let (snapshot, raw) = app.stored_snapshot_with_bytes(&run_id).await;
    assert_eq!(keys(&snapshot), INITIAL_SNAPSHOT_KEYS);
    assert_eq!(snapshot["run_id"], json!(run_id));
    assert_eq!(snapshot["flow_name"], json!("hello"));
    assert_eq!(snapshot["tag"], json!("cpu"));
    assert_eq!(snapshot["tags"], json!(["a", "b"]));
    assert_eq!(snapshot["tenant_id"], Value::Null);
    assert_eq!(snapshot["api_key_id"], Value::Null);
    assert_eq!(snapshot["status"], json!("PENDING"));
    assert_eq!(snapshot["params"], json!({"x": 1, "s": "caf\u{e9}"}));
    assert_eq!(snapshot["tasks"], json!({}));
    assert_eq!(snapshot["task_records"], json!({}));
    assert_eq!(snapshot["start_time"], Value::Null);
    assert_eq!(snapshot["heartbeat_at"], snapshot["updated_at"]);
    assert!(snapshot["updated_at"].as_f64().unwrap() > 1.7e9);
    // Written like Python's json.dumps(..., separators=(",", ":"), ensure_ascii=True).
    let text = String::from_utf8(raw).unwrap();
    assert!(
        text.is_ascii() && text.contains(r#""s":"caf\u00e9""#),
        "{text}"
    );
    assert!(text.starts_with(&format!(r#"{{"run_id":"{run_id}","flow_name":"hello","#)));

    let (job, _) = app.next_job("cpu").await;
    assert_eq!(keys(&job), JOB_KEYS);
    assert_eq!(job["run_id"], json!(run_id));
    assert_eq!(job["flow_name"], json!("hello"));
    assert_eq!(job["tag"], json!("cpu"));
    assert_eq!(job["tags"], json!(["a", "b"]));
    assert_eq!(job["params"], json!({"x": 1, "s": "caf\u{e9}"}));
    assert_eq!(job["submitted_at"], snapshot["updated_at"]);
}

#[tokio::test]
async fn no_tag_means_the_configured_default_tag() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |s| {
        s.default_tag = "edge".into()
    })
    .await;
    let (status, body) =
        status_json(app.post_json("/runs", &json!({"flow_name": "f"})).await).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["run_id"].as_str().unwrap();
    let snapshot = app.stored_snapshot(run_id).await;
    assert_eq!(snapshot["tag"], json!("edge"));
    assert_eq!(snapshot["tags"], json!(["edge"]));
    assert_eq!(snapshot["params"], json!({}));
    let (job, _) = app.next_job("edge").await;
    assert_eq!(job["tags"], json!(["edge"]));

    // An explicit null is the default too.
    let (status, _) = status_json(
        app.post_json("/runs", &json!({"flow_name": "f", "tag": null}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    app.next_job("edge").await;
}

#[tokio::test]
async fn invalid_tag_is_422_with_the_reason_and_stores_nothing() {
    let app = TestApp::gateway_only().await;
    for tag in ["a.b", "gpu*", "", " cpu", "x/y", &"t".repeat(65)] {
        let (status, body) = status_json(
            app.post_json("/runs", &json!({"flow_name": "f", "tag": tag}))
                .await,
        )
        .await;
        assert_eq!(status, 422, "{tag:?}: {body}");
        assert_eq!(body["detail"], json!("invalid tag"), "{tag:?}");
        assert!(body["reason"].as_str().unwrap().contains("tag"), "{body}");
    }
    assert!(app.store().runs().keys().await.unwrap().is_empty());
    assert_eq!(app.queued_jobs().await, 0);
}

#[tokio::test]
async fn every_request_tag_must_be_a_subject_token_too() {
    let app = TestApp::gateway_only().await;
    let (status, body) = status_json(
        app.post_json(
            "/runs",
            &json!({"flow_name": "f", "tags": ["ok", "no.dots"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"], json!("invalid tags"));
    assert!(
        body["reason"].as_str().unwrap().starts_with("tags[1]: "),
        "{body}"
    );
    assert!(app.store().runs().keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn malformed_bodies_get_pydantic_shaped_422() {
    let app = TestApp::gateway_only().await;
    let cases = [
        (
            json!({"params": {}}),
            "missing",
            json!(["body", "flow_name"]),
        ),
        (
            json!({"flow_name": ""}),
            "string_too_short",
            json!(["body", "flow_name"]),
        ),
        (
            json!({"flow_name": 7}),
            "string_type",
            json!(["body", "flow_name"]),
        ),
        (
            json!({"flow_name": "f", "params": [1]}),
            "dict_type",
            json!(["body", "params"]),
        ),
        (
            json!({"flow_name": "f", "params": null}),
            "dict_type",
            json!(["body", "params"]),
        ),
        (
            json!({"flow_name": "f", "tag": 1}),
            "string_type",
            json!(["body", "tag"]),
        ),
        (
            json!({"flow_name": "f", "tags": "a"}),
            "list_type",
            json!(["body", "tags"]),
        ),
        (
            json!({"flow_name": "f", "tags": [1]}),
            "string_type",
            json!(["body", "tags", 0]),
        ),
        (
            json!(["flow_name"]),
            "model_attributes_type",
            json!(["body"]),
        ),
    ];
    for (request, kind, loc) in cases {
        let (status, body) = status_json(app.post_json("/runs", &request).await).await;
        assert_eq!(status, 422, "{request}: {body}");
        let first = &body["detail"][0];
        assert_eq!(first["type"], json!(kind), "{request}: {body}");
        assert_eq!(first["loc"], loc, "{request}: {body}");
        assert!(
            first["msg"].is_string() && first.get("input").is_some(),
            "{body}"
        );
    }

    // Not JSON at all.
    let response = app
        .http()
        .post(app.url("/runs"))
        .header("content-type", "application/json")
        .body("{\"flow_name\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], json!("json_invalid"));
    // What 0.5.1 answers, byte for byte in meaning.
    assert_eq!(
        body,
        json!({"detail": [{"type": "json_invalid", "loc": ["body", 14], "msg": "JSON decode error",
                           "input": {}, "ctx": {"error": "Expecting value"}}]})
    );

    // JSON sent as text/plain (what a cross-site form can send) is not accepted.
    let response = app
        .http()
        .post(app.url("/runs"))
        .header("content-type", "text/plain")
        .body(r#"{"flow_name": "f"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], json!("model_attributes_type"));

    // Empty body.
    let response = app
        .http()
        .post(app.url("/runs"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"],
        json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}])
    );

    assert!(app.store().runs().keys().await.unwrap().is_empty());
    assert_eq!(app.queued_jobs().await, 0);
}

#[tokio::test]
async fn identical_requests_create_two_runs() {
    let app = TestApp::gateway_only().await;
    let request = json!({"flow_name": "f"});
    let (_, a) = status_json(app.post_json("/runs", &request).await).await;
    let (_, b) = status_json(app.post_json("/runs", &request).await).await;
    assert_ne!(a["run_id"], b["run_id"]);
    assert_eq!(app.store().runs().keys().await.unwrap().len(), 2);
    assert_eq!(app.queued_jobs().await, 2);
}

#[tokio::test]
async fn a_run_too_large_for_one_nats_message_is_413_and_stores_nothing() {
    let app = TestApp::gateway_only().await;
    // Under the 2 MiB body limit, over NATS' default 1 MiB max payload (was a 503).
    let request = json!({"flow_name": "f", "params": {"blob": "x".repeat(1_500_000)}});
    let (status, body) = status_json(app.post_json("/runs", &request).await).await;
    assert_eq!(
        (status, &body["detail"]),
        (413, &json!("request body too large"))
    );
    assert!(
        body["reason"].as_str().unwrap().contains("max_payload"),
        "{}",
        body["reason"]
    );
    assert!(app.store().runs().keys().await.unwrap().is_empty());
    assert_eq!(app.queued_jobs().await, 0);
    // Just under the limit still goes through.
    let request = json!({"flow_name": "f", "params": {"blob": "x".repeat(1_000_000)}});
    let (status, body) = status_json(app.post_json("/runs", &request).await).await;
    assert_eq!(status, 200, "{body}");
}
