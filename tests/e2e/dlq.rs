//! The dead-letter queue end to end: runs fail on a real worker (ours, and Python 0.5.1's),
//! their dead letters are listed, and replayed once what was missing is there.

use std::time::Duration;

use pyoco_testkit::{eventually, python_worker, write_task_module, AppOptions, TestApp};
use serde_json::{json, Value};

use crate::{RUN_TIMEOUT, TERMINAL};

/// A flow calling `late_tasks:hello`, a module that does not exist until the test writes it.
const LATE_FLOW: &str = "\
version: 1
flow:
  graph: |
    hello
  defaults:
    name: replay
tasks:
  hello:
    callable: late_tasks:hello
";

const LATE_TASKS: &str = "def hello(name):\n    return 'hello ' + name\n";

/// The dead letter of `run_id`, once it is listed.
async fn dead_letter_of(app: &TestApp, run_id: &str) -> Value {
    eventually(Duration::from_secs(20), "the dead letter", || async {
        let (status, page) = app.get_json(&format!("/dlq?run_id={run_id}")).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array()?.first().cloned()
    })
    .await
}

async fn replay(app: &TestApp, id: &str) -> Value {
    let response = app
        .http()
        .post(app.url(&format!("/dlq/{id}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A flow whose task raises until the file `flag` exists (a failure 0.5.1's worker
/// dead-letters: `execution_error`).
fn gate_flow(app: &TestApp, flag: &std::path::Path) -> String {
    write_task_module(
        &app.tasks_dir(),
        "gate_tasks",
        &format!(
            "import os\n\ndef hello(name):\n    if not os.path.exists({flag:?}):\n        raise RuntimeError('not yet')\n    return 'hello ' + name\n"
        ),
    );
    LATE_FLOW.replace("late_tasks:hello", "gate_tasks:hello")
}

/// Fail a run of `flow`, `fix` the cause, replay its dead letter: the new run completes with
/// the same params.
/// (A 0.5.1 worker rewrites the snapshot with its own keys, dropping `replayed_from`: with
/// `python_worker` the link is checked on the entry only.)
async fn fail_then_replay(app: &TestApp, flow: &str, fix: impl FnOnce(), python_worker: bool) {
    let failed = app.submit_yaml(flow, "late", "default").await;
    let run = app.wait_status(&failed, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    let entry = dead_letter_of(app, &failed).await;
    assert_eq!(entry["reason"], "execution_error", "{entry}");
    assert_eq!(entry["flow_name"], "late");
    assert_eq!(entry["replayed_run_id"], Value::Null);

    fix();
    let answer = replay(app, entry["id"].as_str().unwrap()).await;
    let new_run = answer["run_id"].as_str().unwrap();
    assert_eq!(answer["replayed_from"], entry["id"]);
    let run = app.wait_status(new_run, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["params"], json!({"name": "replay"}));
    if !python_worker {
        assert_eq!(run["replayed_from"], entry["id"]);
    }
    let records = app.run_with_records(new_run).await;
    assert_eq!(records["task_records"]["hello"]["output"], "hello replay");
    let (_, listed) = app
        .get_json(&format!("/dlq/{}", entry["id"].as_str().unwrap()))
        .await;
    assert_eq!(listed["replayed_run_id"], json!(new_run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_failed_for_a_missing_module_is_replayed_once_it_exists() {
    let app = TestApp::start(AppOptions::default()).await;
    let tasks = app.tasks_dir();
    fail_then_replay(
        &app,
        LATE_FLOW,
        || {
            write_task_module(&tasks, "late_tasks", LATE_TASKS);
        },
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_python_0_5_1_worker_are_listed_and_replayed() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    let mut py = python_worker(
        &app.nats_url(),
        "py",
        "default",
        &app.tasks_dir(),
        &app.path("py-worker"),
    );
    app.wait_worker_registered("py").await;
    let flag = app.path("flag");
    let flow = gate_flow(&app, &flag);
    fail_then_replay(&app, &flow, || std::fs::write(&flag, "go").unwrap(), true).await;
    py.assert_running();
}
