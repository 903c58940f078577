//! `POST /schedules/yaml`, `GET /schedules`, `GET /schedules/{id}/runs`, `PATCH` and
//! `DELETE /schedules/{id}`: every refusal with its status and detail, the record as stored
//! (0.7's shape), tenants. The timing itself is tested end to end (`tests/e2e/schedules.rs`).

use pyoco_testkit::{AppOptions, TestApp};
use serde_json::{json, Value};

use crate::helpers::FLOW_YAML;

/// `POST /schedules/yaml` with the flow.yaml, `flow_name=main` and `parts`.
async fn create(app: &TestApp, parts: &[(&str, &str)]) -> (u16, Value) {
    create_with(app, Some(FLOW_YAML.as_bytes()), Some("main"), parts).await
}

async fn create_with(
    app: &TestApp,
    workflow: Option<&[u8]>,
    flow_name: Option<&str>,
    parts: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    if let Some(workflow) = workflow {
        form = form.part(
            "workflow",
            reqwest::multipart::Part::bytes(workflow.to_vec()).file_name("flow.yaml"),
        );
    }
    if let Some(flow_name) = flow_name {
        form = form.text("flow_name", flow_name.to_string());
    }
    for (k, v) in parts {
        form = form.text(k.to_string(), v.to_string());
    }
    let response = app
        .http()
        .post(app.url("/schedules/yaml"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn patch(app: &TestApp, id: &str, body: &[u8]) -> (u16, Value) {
    let response = app
        .http()
        .patch(app.url(&format!("/schedules/{id}")))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn delete(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app
        .http()
        .delete(app.url(&format!("/schedules/{id}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_bad_form_gets_its_422_and_detail() {
    let app = TestApp::gateway_only().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "specify either run_at or interval_seconds"),
        (
            &[
                ("run_at", "2030-01-01T00:00:00Z"),
                ("interval_seconds", "5"),
            ],
            "specify either run_at or interval_seconds",
        ),
        (
            &[
                ("run_at", "2030-01-01T00:00:00Z"),
                ("start_at", "2030-01-01T00:00:00Z"),
            ],
            "start_at is only valid with interval_seconds",
        ),
        (
            &[("run_at", "next tuesday")],
            "run_at must be ISO 8601 datetime",
        ),
        (
            &[("run_at", "2030-01-01T00:00:00")],
            "run_at must include timezone offset",
        ),
        (
            &[("run_at", "2001-01-01T00:00:00Z")],
            "run_at must be in the future",
        ),
        (
            &[("run_at", "2999-01-01T00:00:00Z")],
            "run_at must be within ten years",
        ),
        (
            &[("interval_seconds", "0")],
            "interval_seconds must be positive",
        ),
        (
            &[("interval_seconds", "ten")],
            "interval_seconds must be a number",
        ),
        (
            &[("interval_seconds", "0.2")],
            "interval_seconds must be at least 1",
        ),
        (
            &[("interval_seconds", "99999999")],
            "interval_seconds must be at most 31622400",
        ),
        (
            &[("interval_seconds", "5"), ("start_at", "later")],
            "start_at must be ISO 8601 datetime",
        ),
        (
            &[("cron", "* * * * *"), ("run_at", "2030-01-01T00:00:00Z")],
            "specify either run_at, interval_seconds or cron",
        ),
        (
            &[("interval_seconds", "5"), ("timezone", "UTC")],
            "timezone is only valid with cron",
        ),
        (&[("cron", "every minute")], "invalid cron"),
        (&[("cron", "0 0 31 2 *")], "invalid cron"),
        (
            &[("cron", "* * * * *"), ("timezone", "Europe/Atlantis")],
            "invalid timezone",
        ),
        (
            &[("interval_seconds", "5"), ("catch_up", "all")],
            "invalid catch_up",
        ),
        (
            &[("interval_seconds", "5"), ("tag", "bad tag!")],
            "invalid tag",
        ),
    ];
    for (parts, want) in cases {
        let (status, body) = create(&app, parts).await;
        assert_eq!(status, 422, "{parts:?}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(want),
            "{parts:?}: {body} is not {want:?}"
        );
    }
    // The /runs/yaml checks come first, with their answers.
    let (status, body) = create_with(&app, Some(b"version: 2\n"), Some("main"), &[]).await;
    assert_eq!(
        (status, &body["detail"]),
        (422, &json!("invalid workflow yaml"))
    );
    let (status, body) = create_with(
        &app,
        Some(FLOW_YAML.as_bytes()),
        Some("  "),
        &[("interval_seconds", "5")],
    )
    .await;
    assert_eq!(
        (status, &body["detail"]),
        (422, &json!("missing flow_name")),
        "{body}"
    );
    let (status, body) = create_with(&app, None, None, &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "workflow"]));
    let big = format!("{FLOW_YAML}#{}\n", "x".repeat(300_000));
    let (status, body) = create_with(
        &app,
        Some(big.as_bytes()),
        Some("main"),
        &[("interval_seconds", "5")],
    )
    .await;
    assert_eq!(
        (status, &body["detail"]),
        (413, &json!("workflow too large"))
    );
    // Nothing was stored.
    assert_eq!(app.get_json("/schedules").await, (200, json!([])));
}

#[tokio::test]
async fn a_schedule_is_stored_as_0_7_stores_it_listed_paused_resumed_and_deleted() {
    let app = TestApp::gateway_only().await;
    let (status, view) = create(
        &app,
        &[
            ("interval_seconds", "3600"),
            ("start_at", "2030-01-01T00:00:00+00:00"),
            ("tag", "cpu"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let id = view["schedule_id"].as_str().unwrap().to_string();
    assert_eq!(view["status"], "ACTIVE");
    assert_eq!(view["schedule_type"], "interval");
    assert_eq!(view["tag"], "cpu");
    assert_eq!(view["next_run_at"], 1_893_456_000.0);
    assert_eq!(view["interval_seconds"], 3600.0);
    assert_eq!(view["dispatch_count"], 0);
    assert_eq!(view["catch_up"], "none");
    assert_eq!(view["paused"], false);
    assert!(
        view.get("workflow_yaml").is_none(),
        "the view leaves the flow.yaml out"
    );

    // The record: 0.7's keys and types, the flow.yaml and its defaults as params.
    let stored = app.store().schedules().get(&id).await.unwrap().unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    for key in [
        "schedule_id",
        "flow_name",
        "tag",
        "status",
        "schedule_type",
        "workflow_yaml",
        "workflow_yaml_sha256",
        "workflow_yaml_bytes",
        "params",
        "tenant_id",
        "api_key_id",
        "created_at",
        "updated_at",
        "last_submitted_at",
        "last_run_id",
        "dispatch_count",
        "last_error",
        "lease_until",
        "run_at",
        "next_run_at",
        "interval_seconds",
        "start_at",
    ] {
        assert!(record.get(key).is_some(), "{key} missing from {record}");
    }
    assert_eq!(record["workflow_yaml"], FLOW_YAML);
    assert_eq!(record["params"], json!({"x": 1, "debug": true}));
    assert_eq!(record["start_at"], 1_893_456_000.0);

    // Cron: next_run_at null in the record (0.7 must not dispatch it), due time in the view.
    let (status, cron) = create(
        &app,
        &[("cron", "0 9 * * 1-5"), ("timezone", "Europe/Berlin")],
    )
    .await;
    assert_eq!(status, 200, "{cron}");
    assert_eq!(cron["schedule_type"], "cron");
    assert_eq!(cron["timezone"], "Europe/Berlin");
    assert!(cron["next_run_at"].as_f64().unwrap() > pyoco_wire::python::time());
    let cron_id = cron["schedule_id"].as_str().unwrap();
    let stored = app.store().schedules().get(cron_id).await.unwrap().unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(record["next_run_at"], Value::Null);
    assert_eq!(record["cron_next_run_at"], cron["next_run_at"]);

    let (_, list) = app.get_json("/schedules").await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Pause, resume.
    let (status, paused) = patch(&app, &id, br#"{"paused": true}"#).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (&paused["status"], &paused["paused"], &paused["next_run_at"]),
        (&json!("PAUSED"), &json!(true), &Value::Null)
    );
    let (_, list) = app.get_json("/schedules").await;
    assert_eq!(
        list[1]["schedule_id"],
        json!(id),
        "ACTIVE ones first: {list}"
    );
    let (status, resumed) = patch(&app, &id, br#"{"paused": false}"#).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "ACTIVE");
    assert_eq!(resumed["next_run_at"], 1_893_456_000.0);
    for bad in [
        &b"{}"[..],
        br#"{"paused": 1}"#,
        br#"{"paused": true, "tag": "x"}"#,
        b"[",
        b"",
    ] {
        let (status, body) = patch(&app, &id, bad).await;
        assert_eq!(
            (status, &body["detail"]),
            (422, &json!("invalid schedule patch")),
            "{body}"
        );
    }
    let (status, body) = patch(&app, &id, &vec![b' '; 4096]).await;
    assert_eq!(status, 413, "{body}");

    // Runs of a schedule: none yet; unknown ids 404.
    assert_eq!(
        app.get_json(&format!("/schedules/{id}/runs")).await,
        (200, json!([]))
    );
    let (status, body) = app.get_json(&format!("/schedules/{id}/runs?limit=0")).await;
    assert_eq!(status, 422, "{body}");
    for path in ["/schedules/nope/runs", "/schedules/a.b%2Fc/runs"] {
        assert_eq!(
            app.get_json(path).await,
            (404, json!({"detail": "schedule not found"}))
        );
    }
    assert_eq!(
        patch(&app, "nope", br#"{"paused": true}"#).await,
        (404, json!({"detail": "schedule not found"}))
    );

    // Delete.
    assert_eq!(
        delete(&app, &id).await,
        (200, json!({"schedule_id": id, "deleted": true}))
    );
    assert_eq!(
        delete(&app, &id).await,
        (404, json!({"detail": "schedule not found"}))
    );
    let (_, list) = app.get_json("/schedules").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_completed_one_shot_cannot_be_paused() {
    let app = TestApp::gateway_only().await;
    let (status, view) = create(&app, &[("run_at", "2031-01-01T00:00:00Z")]).await;
    assert_eq!(status, 200);
    let id = view["schedule_id"].as_str().unwrap();
    let stored = app.store().schedules().get(id).await.unwrap().unwrap();
    let mut record: Value = serde_json::from_slice(&stored.value).unwrap();
    record["status"] = json!("COMPLETED");
    record["next_run_at"] = Value::Null;
    app.store()
        .schedules()
        .put(id, serde_json::to_vec(&record).unwrap())
        .await
        .unwrap();
    assert_eq!(
        patch(&app, id, br#"{"paused": true}"#).await,
        (409, json!({"detail": "schedule is completed"}))
    );
}

#[tokio::test]
async fn with_auth_a_tenant_sees_and_touches_only_its_own_schedules() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
    })
    .await;
    let (status, mine) = create(&app, &[("interval_seconds", "3600")]).await;
    assert_eq!(status, 200);
    assert_eq!(mine["tenant_id"], "testkit");
    // Another tenant's record, as a 0.7 gateway writes it.
    let theirs = json!({"schedule_id": "theirs", "flow_name": "main", "tag": "default",
        "status": "ACTIVE", "schedule_type": "interval", "workflow_yaml": FLOW_YAML,
        "workflow_yaml_sha256": "x", "workflow_yaml_bytes": 1, "params": {}, "tenant_id": "other",
        "api_key_id": "k", "created_at": 1.0, "updated_at": 1.0, "last_submitted_at": null,
        "last_run_id": null, "dispatch_count": 0, "last_error": null, "lease_until": null,
        "run_at": null, "next_run_at": 4_000_000_000.0, "interval_seconds": 3600.0, "start_at": 1.0});
    app.store()
        .schedules()
        .put("theirs", serde_json::to_vec(&theirs).unwrap())
        .await
        .unwrap();
    let (_, list) = app.get_json("/schedules").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schedule_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine["schedule_id"].as_str().unwrap()]);
    let not_found = json!({"detail": "schedule not found"});
    assert_eq!(
        app.get_json("/schedules/theirs/runs").await,
        (404, not_found.clone())
    );
    assert_eq!(delete(&app, "theirs").await, (404, not_found.clone()));
    assert_eq!(
        patch(&app, "theirs", br#"{"paused": true}"#).await,
        (404, not_found)
    );
    assert!(app
        .store()
        .schedules()
        .get("theirs")
        .await
        .unwrap()
        .is_some());
    // And without a key: 401 like every protected route.
    let anonymous = reqwest::get(app.url("/schedules")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
