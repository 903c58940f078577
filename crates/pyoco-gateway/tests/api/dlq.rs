//! `GET /dlq`, `GET /dlq/{id}`, `DELETE /dlq/{id}` (ours) over records as 0.5.1's worker and
//! ours write them.

use bytes::Bytes;
use pyoco_testkit::{AppOptions, TestApp};
use serde_json::{json, Value};

use crate::helpers::FLOW_YAML;

/// Publish `record` on `pyoco.dlq.<tag>`.
async fn dead_letter(app: &TestApp, tag: &str, record: Value) {
    app.store()
        .publish_dlq(tag, Bytes::from(serde_json::to_vec(&record).unwrap()))
        .await
        .unwrap();
}

fn run_record(reason: &str, run_id: &str, tenant: Option<&str>, t: f64) -> Value {
    json!({
        "reason": reason, "error": format!("{reason} of {run_id}"), "timestamp": t,
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "tenant_id": tenant, "api_key_id": null, "worker_id": "w1",
    })
}

async fn ids(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let (status, page) = app.get_json(&format!("/dlq{query}")).await;
    assert_eq!(status, 200, "{page}");
    let ids = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["run_id"].as_str().unwrap_or("-").to_string())
        .collect();
    (ids, page["next_cursor"].clone())
}

#[tokio::test]
async fn dead_letters_are_listed_newest_first_filtered_paged_shown_and_deleted() {
    let app = TestApp::gateway_only().await;
    assert_eq!(
        app.get_json("/dlq").await,
        (200, json!({"items": [], "next_cursor": null}))
    );
    // A run whose snapshot is still there, so its entry shows the job.
    let run_id = app.submit_yaml(FLOW_YAML, "main", "default").await;
    dead_letter(
        &app,
        "default",
        run_record("flow_not_found", &run_id, None, 1.0),
    )
    .await;
    dead_letter(
        &app,
        "default",
        run_record("execution_error", "r2", None, 2.0),
    )
    .await;
    dead_letter(
        &app,
        "gpu",
        json!({"reason": "invalid_job", "error": "invalid json", "timestamp": 3.0,
               "subject": "pyoco.work.gpu", "worker_id": "w2", "num_delivered": 1,
               "payload": "{\"run_id\": \"r3\", \"flow_name\": \"x\"}"}),
    )
    .await;
    dead_letter(
        &app,
        "default",
        run_record("execution_error", "r4", None, 4.0),
    )
    .await;

    let (all, next) = ids(&app, "").await;
    assert_eq!(all, ["r4", "-", "r2", run_id.as_str()]);
    assert_eq!(next, Value::Null);
    let (_, page) = app.get_json("/dlq?limit=1").await;
    assert_eq!(
        page["items"][0],
        json!({"id": "4", "run_id": "r4", "flow_name": "main", "tag": "default",
               "reason": "execution_error", "error": "execution_error of r4", "timestamp": 4.0,
               "worker_id": "w1", "num_delivered": null})
    );
    assert_eq!(page["next_cursor"], "4");
    // Filters; the invalid job's tag is its subject's.
    assert_eq!(ids(&app, "?reason=execution_error").await.0, ["r4", "r2"]);
    assert_eq!(ids(&app, "?tag=gpu").await.0, ["-"]);
    assert_eq!(ids(&app, "?run_id=r2").await.0, ["r2"]);
    // Paging with the cursor walks every entry once.
    let (first, cursor) = ids(&app, "?limit=3").await;
    assert_eq!(first.len(), 3);
    let (rest, end) = ids(
        &app,
        &format!("?limit=3&cursor={}", cursor.as_str().unwrap()),
    )
    .await;
    assert_eq!(rest, [run_id.as_str()]);
    assert_eq!(end, Value::Null);

    // One entry, with its job: from the run's snapshot, or the invalid job's stored body.
    let (status, entry) = app.get_json("/dlq/1").await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["record"]["reason"], "flow_not_found");
    assert_eq!(entry["subject"], "pyoco.dlq.default");
    assert_eq!(entry["job"]["run_id"], json!(run_id));
    assert_eq!(entry["job"]["params"], json!({"x": 1, "debug": true}));
    assert!(entry["job"]["workflow_yaml_sha256"].is_string());
    let (_, entry) = app.get_json("/dlq/3").await;
    assert_eq!(entry["job"], json!({"run_id": "r3", "flow_name": "x"}));
    let (_, entry) = app.get_json("/dlq/2").await;
    assert_eq!(entry["job"], Value::Null, "run r2 does not exist");

    // Delete: gone from the list; unknown ids are 404.
    let response = app.http().delete(app.url("/dlq/2")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "2", "deleted": true})
    );
    assert_eq!(ids(&app, "").await.0, ["r4", "-", run_id.as_str()]);
    for id in ["2", "99", "abc", "0"] {
        assert_eq!(
            app.get_json(&format!("/dlq/{id}")).await,
            (404, json!({"detail": "dlq entry not found"})),
            "{id}"
        );
    }
    let response = app.http().delete(app.url("/dlq/2")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        app.get_json("/dlq?limit=0").await.1["detail"],
        "invalid dlq query"
    );
}

#[tokio::test]
async fn with_auth_a_tenant_sees_only_its_own_dead_letters() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
    })
    .await;
    // The kit's key is tenant `testkit`.
    dead_letter(
        &app,
        "default",
        run_record("execution_error", "mine", Some("testkit"), 1.0),
    )
    .await;
    dead_letter(
        &app,
        "default",
        run_record("execution_error", "theirs", Some("other"), 2.0),
    )
    .await;
    assert_eq!(ids(&app, "").await.0, ["mine"]);
    assert_eq!(app.get_json("/dlq/2").await.0, 404);
    let response = app.http().delete(app.url("/dlq/2")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(app.get_json("/dlq/1").await.0, 200);
    // And without a key: 401 like every protected route.
    let anonymous = reqwest::get(app.url("/dlq")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
