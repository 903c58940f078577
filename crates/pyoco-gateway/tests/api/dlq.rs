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
               "worker_id": "w1", "num_delivered": null, "replayed_run_id": null})
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

#[tokio::test]
async fn a_dead_letter_is_replayed_as_a_new_run_and_each_replay_is_recorded() {
    let app = TestApp::gateway_only().await;
    // A flow.yaml run (its flow.yaml kept at submit) and a JSON run.
    let yaml_run = app.submit_yaml(FLOW_YAML, "main", "default").await;
    let response = app
        .post_json(
            "/runs",
            &json!({"flow_name": "by-name", "params": {"n": 3}, "tag": "cpu"}),
        )
        .await;
    let json_run = response.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    dead_letter(
        &app,
        "default",
        run_record("execution_error", &yaml_run, None, 1.0),
    )
    .await;
    dead_letter(
        &app,
        "cpu",
        run_record("flow_not_found", &json_run, None, 2.0),
    )
    .await;
    dead_letter(
        &app,
        "default",
        run_record("execution_error", "gone", None, 3.0),
    )
    .await;
    dead_letter(
        &app,
        "gpu",
        json!({"reason": "invalid_job", "error": "x", "timestamp": 4.0, "subject": "pyoco.work.gpu",
               "worker_id": "w", "num_delivered": 1, "payload": "{}"}),
    )
    .await;

    let replay = |id: &'static str| {
        let app = &app;
        async move {
            let response = app
                .http()
                .post(app.url(&format!("/dlq/{id}/replay")))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    // The flow.yaml run: same flow, params, tag and flow.yaml; a new run id.
    let (status, body) = replay("1").await;
    assert_eq!(status, 200, "{body}");
    let new_run = body["run_id"].as_str().unwrap().to_string();
    assert_ne!(new_run, yaml_run);
    assert_eq!(
        body,
        json!({"run_id": new_run, "status": "PENDING", "replayed_from": "1"})
    );
    let original = app.stored_snapshot(&yaml_run).await;
    let replayed = app.stored_snapshot(&new_run).await;
    for key in [
        "flow_name",
        "tag",
        "tags",
        "params",
        "workflow_yaml_sha256",
        "workflow_yaml_bytes",
    ] {
        assert_eq!(replayed[key], original[key], "{key}");
    }
    assert_eq!(replayed["replayed_from"], "1");
    assert_eq!(replayed["status"], "PENDING");
    // The job carries the whole flow.yaml again.
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(app.next_job("default").await.0);
    }
    let job = jobs
        .iter()
        .find(|j| j["run_id"] == json!(new_run))
        .expect("the replay's job");
    assert_eq!(job["workflow_yaml"], FLOW_YAML);

    // The JSON run, twice: both recorded, the latest shown.
    let (_, first) = replay("2").await;
    let (status, second) = replay("2").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.stored_snapshot(first["run_id"].as_str().unwrap()).await["params"],
        json!({"n": 3})
    );
    let (_, entry) = app.get_json("/dlq/2").await;
    assert_eq!(entry["replayed_run_id"], second["run_id"]);
    assert_eq!(entry["replays"].as_array().unwrap().len(), 2);
    let (_, page) = app.get_json("/dlq").await;
    let listed: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["replayed_run_id"].clone())
        .collect();
    assert_eq!(
        listed,
        [
            Value::Null,
            Value::Null,
            second["run_id"].clone(),
            json!(new_run)
        ]
    );

    // What cannot be replayed says why.
    let (status, body) = replay("3").await;
    assert_eq!(
        (status, &body["detail"]),
        (409, &json!("dlq entry cannot be replayed"))
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("run gone is gone"),
        "{body}"
    );
    let (status, body) = replay("4").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(replay("99").await.0, 404);
}

#[tokio::test]
async fn a_flow_yaml_that_was_not_kept_is_not_replayed() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.workflow_keep_sec = 0.0;
    })
    .await;
    let run = app.submit_yaml(FLOW_YAML, "main", "default").await;
    dead_letter(
        &app,
        "default",
        run_record("execution_error", &run, None, 1.0),
    )
    .await;
    let response = app
        .http()
        .post(app.url("/dlq/1/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("was not kept"),
        "{body}"
    );
}
