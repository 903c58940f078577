//! Mixed fleet (contract Appendix A): the real Python pyoco-server 0.5.1 and ours on one NATS,
//! each side reading what the other wrote.

use pyoco_testkit::{
    pyoco_client, python_worker, submit_yaml, wait_status, AppOptions, PythonGateway, TestApp,
};
use serde_json::{json, Value};

use crate::{assert_readme_flow_records, sorted_keys, README_FLOW, RUN_TIMEOUT, TERMINAL};

/// The keys of a task record as pyoco's `serialize_task_records` writes them (0.5.1's worker);
/// ours adds `stdout` and `stderr`.
const PYOCO_RECORD_KEYS: [&str; 9] = [
    "artifacts",
    "duration_ms",
    "ended_at",
    "error",
    "inputs",
    "output",
    "started_at",
    "state",
    "traceback",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_gateway_python_worker() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    let mut py = python_worker(
        &app.nats_url(),
        "py",
        "default",
        &app.tasks_dir(),
        &app.path("py-worker"),
    );
    let record = app.wait_worker_registered("py").await;
    assert_eq!(record["tags"], json!(["default"]), "{record}");

    let run_id = app.submit_yaml(README_FLOW, "readme", "default").await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;
    py.assert_running();

    assert_eq!(run["status"], "COMPLETED", "{run}\n{}", py.log());
    assert_eq!(
        run["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );
    assert_eq!(run["params"], json!({"name": "world"}));
    let full = app.run_with_records(&run_id).await;
    let records = &full["task_records"];
    assert_readme_flow_records(records);
    assert_eq!(
        sorted_keys(&records["hello"]),
        PYOCO_RECORD_KEYS,
        "the Python worker ran it"
    );
    // Our gateway passes the Python-written snapshot through untouched (0.5.1 keeps
    // `worker_id` only in its first write, so there is nothing to enrich either).
    let (status, everything) = app.get_json(&format!("/runs/{run_id}?include=full")).await;
    assert_eq!(status, 200);
    let stored = Value::Object(app.stored_snapshot(&run_id).await);
    assert_eq!(everything, stored);

    let (status, tasks) = app.get_json(&format!("/runs/{run_id}/tasks")).await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks["status"], "COMPLETED");
    assert_eq!(tasks["tasks"], full["tasks"]);
    assert_eq!(tasks["task_records"], full["task_records"]);
    assert_eq!(tasks["task_records_truncated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gateway_our_worker() {
    let app = TestApp::start(AppOptions::default()).await;
    let py = PythonGateway::start(&app.nats_url(), &app.path("py-gateway")).await;
    let http = app.http();

    let run_id = submit_yaml(http, py.base_url(), README_FLOW, "readme", "default").await;
    let run = wait_status(http, py.base_url(), &run_id, TERMINAL, RUN_TIMEOUT).await;

    // What the Python gateway makes of our worker's snapshot and registry record.
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );
    assert_eq!(run["flow_name"], "readme");
    assert_eq!(run["params"], json!({"name": "world"}));
    assert_eq!(run["worker_id"], "e2e-worker");
    assert_eq!(run["worker_alive"], true, "{run}");
    assert!(
        matches!(run["worker_state"].as_str(), Some("IDLE" | "RUNNING")),
        "{run}"
    );
    assert_eq!(run["worker_tags"], json!(["default"]));

    let tasks_url = format!("{}/runs/{run_id}/tasks", py.base_url());
    let response = http.get(&tasks_url).send().await.expect("GET tasks");
    assert_eq!(response.status(), 200);
    let py_tasks: Value = response.json().await.expect("JSON");
    assert_eq!(py_tasks["run_id"], json!(run_id));
    assert_eq!(py_tasks["status"], "COMPLETED");
    assert_eq!(py_tasks["task_records_truncated"], false);
    assert_readme_flow_records(&py_tasks["task_records"]);

    // Our gateway reads the same snapshot the same way.
    let (status, ours) = app.get_json(&format!("/runs/{run_id}/tasks")).await;
    assert_eq!(status, 200);
    assert_eq!(ours, py_tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_drives_our_gateway() {
    let app = TestApp::start(AppOptions::default()).await;
    let flow_file = app.path("flow.yaml");
    std::fs::write(&flow_file, README_FLOW).unwrap();
    let cwd = app.dir();
    let server = app.base_url();

    let submitted = pyoco_client(
        server,
        &[
            "submit-yaml",
            "--workflow-file",
            &flow_file.display().to_string(),
            "--flow-name",
            "readme",
            "--tag",
            "default",
        ],
        cwd,
    )
    .await
    .json();
    assert_eq!(submitted["status"], "PENDING", "{submitted}");
    let run_id = submitted["run_id"].as_str().expect("run_id").to_string();
    app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;

    let get = ["get", run_id.as_str()];
    let get_records = ["get", run_id.as_str(), "--records"];
    let get_tasks = ["tasks", run_id.as_str()];
    let (got, got_records, tasks) = tokio::join!(
        pyoco_client(server, &get, cwd),
        pyoco_client(server, &get_records, cwd),
        pyoco_client(server, &get_tasks, cwd),
    );
    let got = got.json();
    assert_eq!(got["run_id"], json!(run_id));
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(
        got["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );
    assert!(got.get("task_records").is_none(), "{got}");
    assert_readme_flow_records(&got_records.json()["task_records"]);
    let tasks = tasks.json();
    assert_eq!(tasks["status"], "COMPLETED");
    assert_readme_flow_records(&tasks["task_records"]);
}
