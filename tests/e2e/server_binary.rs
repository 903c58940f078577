//! The real `pyoco-server` binary, started the way the README says: `pyoco-server up
//! --with-nats` in the directory that holds the user's `flow.yaml` and task module.

use std::time::Duration;

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use pyoco_testkit::{
    procfs::processes_mentioning, pyoco_server_binary, submit_yaml, wait_status, write_task_module,
    UpServer, TASKS_PY,
};
use serde_json::json;

use crate::{assert_readme_flow_records, RUN_TIMEOUT, TERMINAL};

/// The README flow with the task module next to it (`tasks.py`, importable because the
/// launch directory is on the runner's `PYTHONPATH`).
const FLOW_NEXT_TO_TASKS: &str = "\
version: 1
flow:
  graph: |
    hello >> shout
  defaults:
    name: world
tasks:
  hello:
    callable: tasks:hello
  shout:
    callable: tasks:shout
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyoco_server_up_binary_runs_a_flow() {
    let Some(binary) = pyoco_server_binary("pyoco_server_up_binary_runs_a_flow") else {
        return;
    };
    let mut server = UpServer::start(
        &binary,
        "pyoco-e2e-up-",
        |launch| {
            write_task_module(launch, "tasks", TASKS_PY);
            std::fs::write(launch.join("flow.yaml"), FLOW_NEXT_TO_TASKS).unwrap();
        },
        &[],
    )
    .await;
    let base_url = server.base_url().to_string();
    let data = server.data_dir();
    let http = reqwest::Client::new();

    let yaml = std::fs::read_to_string(server.launch_dir().join("flow.yaml")).unwrap();
    let run_id = submit_yaml(&http, &base_url, &yaml, "readme", "default").await;
    let run = wait_status(&http, &base_url, &run_id, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{}", server.output());
    assert_eq!(run["worker_id"], "worker", "the default worker id");
    let records: serde_json::Value = http
        .get(format!("{base_url}/runs/{run_id}/tasks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_readme_flow_records(&records["task_records"]);
    assert_eq!(
        records["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );
    assert!(
        !processes_mentioning(&data).is_empty(),
        "its nats-server and runner use the data dir"
    );

    // Ctrl-C: a clean stop that takes everything it started with it.
    kill(Pid::from_raw(server.pid()), Signal::SIGINT).unwrap();
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", server.output());
    assert!(
        server.output().contains("pyoco-server: stopped"),
        "{}",
        server.output()
    );
    let left = processes_mentioning(&data);
    assert!(
        left.is_empty(),
        "processes left running with the data dir {}: {left:?}",
        data.display()
    );
}
