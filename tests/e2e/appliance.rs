//! The appliance (gateway + local worker on one NATS) running flows submitted over HTTP.

use pyoco_testkit::{AppOptions, TestApp};
use pyoco_wire::WorkflowDigest;
use serde_json::json;

use crate::{assert_readme_flow_records, sorted_keys, README_FLOW, RUN_TIMEOUT, TERMINAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_runs_the_readme_flow() {
    let app = TestApp::start(AppOptions::default()).await;

    let run_id = app.submit_yaml(README_FLOW, "readme", "default").await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["run_id"], json!(run_id));
    assert_eq!(run["flow_name"], "readme");
    assert_eq!(run["tag"], "default");
    assert_eq!(run["tags"], json!(["default"]));
    assert_eq!(
        run["params"],
        json!({"name": "world"}),
        "params = the defaults"
    );
    assert_eq!(
        run["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );
    assert_eq!(run["error"], json!(null));
    let digest = WorkflowDigest::of(README_FLOW.as_bytes());
    assert_eq!(run["workflow_yaml_sha256"], json!(digest.sha256));
    assert_eq!(run["workflow_yaml_bytes"], json!(digest.bytes));
    let (start, end) = (run["start_time"].as_f64(), run["end_time"].as_f64());
    assert!(
        matches!((start, end), (Some(s), Some(e)) if s <= e),
        "{run}"
    );
    // The run names its worker, and the gateway says that worker is alive.
    assert_eq!(run["worker_id"], "e2e-worker");
    assert_eq!(run["worker_alive"], true, "{run}");
    assert_eq!(run["worker_tags"], json!(["default"]));
    assert!(run.get("task_records").is_none(), "records only on request");

    let full = app.run_with_records(&run_id).await;
    assert_readme_flow_records(&full["task_records"]);
    // Our addition to the records: what the task printed.
    assert_eq!(
        full["task_records"]["hello"]["stdout"],
        "saying hello to world\n"
    );

    let (status, tasks) = app.get_json(&format!("/runs/{run_id}/tasks")).await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(
        tasks,
        json!({
            "run_id": run_id,
            "flow_name": "readme",
            "status": "COMPLETED",
            "tasks": full["tasks"],
            "task_records": full["task_records"],
            "task_records_truncated": false,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_task_fails_the_run_with_its_error_and_a_dlq_record() {
    let app = TestApp::start(AppOptions {
        worker_tags: vec!["batch".into()],
        ..AppOptions::default()
    })
    .await;
    let yaml = "\
version: 1
flow:
  graph: |
    hello >> boom
  defaults:
    name: world
tasks:
  hello:
    callable: e2e_tasks:hello
  boom:
    callable: e2e_tasks:boom
";

    let run_id = app.submit_yaml(yaml, "fragile", "batch").await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"], "disk on fire", "the exception's text");
    assert_eq!(
        run["tasks"],
        json!({"hello": "SUCCEEDED", "boom": "FAILED"})
    );
    assert_eq!(run["tag"], "batch");
    let boom = &app.run_with_records(&run_id).await["task_records"]["boom"];
    assert_eq!(boom["error"], "disk on fire");
    let traceback = boom["traceback"].as_str().unwrap_or_default();
    assert!(
        traceback.contains("RuntimeError: disk on fire"),
        "{traceback}"
    );

    // The DLQ record is published before the terminal snapshot, so it is there already.
    let dlq = app.dlq_messages().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let (subject, record) = &dlq[0];
    assert_eq!(subject, "pyoco.dlq.batch");
    assert_eq!(
        sorted_keys(record),
        [
            "api_key_id",
            "error",
            "flow_name",
            "reason",
            "run_id",
            "tag",
            "tags",
            "tenant_id",
            "timestamp",
            "worker_id"
        ]
    );
    assert_eq!(record["reason"], "execution_error");
    assert_eq!(record["error"], "disk on fire");
    assert_eq!(record["run_id"], json!(run_id));
    assert_eq!(record["flow_name"], "fragile");
    assert_eq!(record["tag"], "batch");
    assert_eq!(record["tags"], json!(["batch"]));
    assert_eq!(record["tenant_id"], json!(null));
    assert_eq!(record["worker_id"], "e2e-worker");
    assert!(record["timestamp"].as_f64().is_some(), "{record}");
    // A failed run is still a handled job: acknowledged, not redelivered.
    app.wait_queue_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_callable_fails_with_an_import_error_that_names_the_module() {
    let app = TestApp::start(AppOptions::default()).await;
    let marker = app.path("hello-ran.txt");
    let yaml = format!(
        "\
version: 1
flow:
  graph: |
    first >> ghost
  defaults:
    marker: {marker}
tasks:
  first:
    callable: e2e_tasks:mark
  ghost:
    callable: e2e_missing:run
",
        marker = marker.display()
    );

    let run_id = app.submit_yaml(&yaml, "broken", "default").await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "FAILED", "{run}");
    // 0.5.1 said `name 'ghost' is not defined` and printed the import error on its stdout.
    assert_eq!(
        run["error"],
        "import_error: task 'ghost': cannot import module 'e2e_missing' \
         (callable 'e2e_missing:run'): ModuleNotFoundError: No module named 'e2e_missing'"
    );
    assert!(
        !marker.exists(),
        "no task of a flow that cannot be built runs"
    );
    // The run keeps what the gateway stored (0.5.1 wiped it, §14-6).
    assert_eq!(run["tag"], "default");
    assert_eq!(run["params"]["marker"], json!(marker.display().to_string()));
    assert_eq!(run["worker_id"], "e2e-worker");
    // A dead letter to replay once the module exists (0.5.1's "any other exception" row wrote
    // none).
    let dlq = app.dlq_messages().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "execution_error");
    assert!(
        dlq[0].1["error"].as_str().unwrap().contains("e2e_missing"),
        "{dlq:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_pickup_is_honoured() {
    let mut app = TestApp::start(AppOptions::gateway_only()).await;
    let marker = app.path("ran.txt");
    let yaml = format!(
        "\
version: 1
flow:
  graph: |
    mark
  defaults:
    marker: {}
tasks:
  mark:
    callable: e2e_tasks:mark
",
        marker.display()
    );
    let run_id = app.submit_yaml(&yaml, "cancel-me", "default").await;

    // No worker yet: cancel the way 0.5.1's gateway does, a plain put of the snapshot with
    // CANCELLING and the request time (no compare-and-set, no `cancel_requested_by` without
    // auth).
    let mut snapshot = app.stored_snapshot(&run_id).await;
    assert_eq!(snapshot["status"], "PENDING");
    let requested_at = pyoco_wire::python::time();
    snapshot.insert("status".into(), json!("CANCELLING"));
    snapshot.insert("cancel_requested_at".into(), json!(requested_at));
    snapshot.insert("updated_at".into(), json!(requested_at));
    app.store()
        .runs()
        .put(&run_id, serde_json::to_vec(&snapshot).unwrap())
        .await
        .expect("cancel write");
    let (_, pending) = app.get_json(&format!("/runs/{run_id}")).await;
    assert_eq!(pending["status"], "CANCELLING");

    app.start_worker().await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;

    // 0.5.1 ran it anyway, or left it CANCELLING forever.
    assert_eq!(run["status"], "CANCELLED", "{run}");
    assert_eq!(run["cancel_requested_at"], json!(requested_at));
    assert_eq!(run["tasks"], json!({}), "nothing was started");
    assert_eq!(run["error"], json!(null));
    assert_eq!(run["worker_id"], "e2e-worker");
    // The job was taken and acknowledged: it will not run later either.
    app.wait_queue_drained().await;
    assert!(!marker.exists(), "the cancelled task never ran");
}
