//! `PYOCO_TASK_MODULES`: a flow calling a module outside the list is refused by the gateway
//! (422) and, when its job reaches a worker another way (published straight to NATS), failed
//! by the worker with a DLQ record; flows inside the list run.

use std::time::Duration;

use pyoco_testkit::{status_json, AppOptions, TestApp, TASKS_MODULE};

use crate::helpers::nested_merge_defaults;
use serde_json::json;

const OS_SYSTEM: &str = "version: 1\nflow:\n  graph: |\n    boom\ntasks:\n  boom:\n    callable: os:system\n    inputs:\n      command: touch /tmp/pyoco-task-modules-should-not-exist\n";

fn allowed_flow() -> String {
    format!(
        "version: 1\nflow:\n  graph: |\n    hello\n  defaults:\n    name: world\ntasks:\n  hello:\n    callable: {TASKS_MODULE}:hello\n"
    )
}

async fn app() -> TestApp {
    TestApp::start_with(AppOptions::default(), |settings| {
        settings.task_modules = vec![TASKS_MODULE.to_string(), "corp.etl".to_string()];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_a_flow_calling_another_module() {
    let app = app().await;
    let (status, body) = status_json(app.post_yaml(OS_SYSTEM, "main", "default").await).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"], "invalid workflow yaml");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("task_module_not_allowed: task boom calls module os;")
            && reason.contains("PYOCO_TASK_MODULES")
            && reason.contains(TASKS_MODULE),
        "{reason}"
    );
    assert_eq!(app.queued_jobs().await, 0, "nothing was queued");

    let run_id = app.submit_yaml(&allowed_flow(), "main", "default").await;
    let run = app
        .wait_status(&run_id, &["COMPLETED", "FAILED"], Duration::from_secs(45))
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
}

/// Store a PENDING run and publish its job straight to NATS, as a foreign producer could.
async fn publish_straight(app: &TestApp, run_id: &str, workflow_yaml: &str) {
    let pending = json!({
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "tenant_id": null, "api_key_id": null, "status": "PENDING", "params": {},
        "tasks": {}, "task_records": {}, "start_time": null, "end_time": null,
        "heartbeat_at": 1.0, "updated_at": 1.0, "error": null,
    });
    app.store()
        .runs()
        .create(run_id, serde_json::to_vec(&pending).unwrap())
        .await
        .unwrap();
    let job = json!({
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "params": {}, "workflow_yaml": workflow_yaml, "submitted_at": 1.0,
    });
    app.store()
        .publish_job("default", serde_json::to_vec(&job).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_fails_a_job_calling_another_module_and_dead_letters_it() {
    let app = app().await;
    let run_id = "task-modules-run-1";
    publish_straight(&app, run_id, OS_SYSTEM).await;

    let run = app
        .wait_status(run_id, &["COMPLETED", "FAILED"], Duration::from_secs(45))
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.starts_with("invalid_job: task_module_not_allowed: task boom calls module os"),
        "{error}"
    );
    assert!(!std::path::Path::new("/tmp/pyoco-task-modules-should-not-exist").exists());
    let dlq = app.dlq_messages().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "invalid_job");
    assert!(
        dlq[0].1["error"]
            .as_str()
            .unwrap()
            .starts_with("task_module_not_allowed"),
        "{dlq:?}"
    );
    app.wait_queue_drained().await;
}

/// A merge bomb published straight to NATS never reaches the Python runner (PyYAML would copy
/// billions of pairs): the run FAILED `invalid_job: workflow_too_large: …`, DLQ `invalid_job`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_a_merge_bomb_before_the_runner_sees_it() {
    let app = TestApp::start(AppOptions::default()).await;
    let bomb = format!(
        "version: 1\nflow:\n  graph: |\n    hello\n  defaults:\n{}tasks:\n  hello:\n    callable: {TASKS_MODULE}:hello\n",
        nested_merge_defaults(8)
    );
    let run_id = "merge-bomb-run";
    publish_straight(&app, run_id, &bomb).await;
    let run = app
        .wait_status(run_id, &["COMPLETED", "FAILED"], Duration::from_secs(45))
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_job: workflow_too_large: too_large: merge keys"),
        "{run}"
    );
    let dlq = app.dlq_messages().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "invalid_job");
    // The worker and its runner are fine: the next run completes.
    let ok = app.submit_yaml(&allowed_flow(), "main", "default").await;
    let run = app
        .wait_status(&ok, &["COMPLETED", "FAILED"], Duration::from_secs(45))
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
}
