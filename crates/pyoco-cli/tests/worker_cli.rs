//! The `pyoco-worker` binary against a real nats-server and the real pyoco.

use std::{path::Path, process::Stdio, time::Duration};

use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::{eventually, python, TestNats};

const TASKS_PY: &str = "def hello():\n    return 'hi'\n";
const FLOW_JSON: &str =
    r#""version: 1\nflow:\n  graph: |\n    t1\ntasks:\n  t1:\n    callable: cli_tasks:hello\n""#;

fn worker_command(dir: &Path, url: &str) -> tokio::process::Command {
    std::fs::create_dir_all(dir.join("cwd")).unwrap();
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::write(dir.join("tasks").join("cli_tasks.py"), TASKS_PY).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pyoco-worker"));
    cmd.args(["--nats-url", url, "--worker-id", "cli-worker"])
        .current_dir(dir.join("cwd"))
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_DATA_DIR", dir.join("data"))
        .env("PYOCO_PYTHON", python())
        .env("PYOCO_LOG_FORMAT", "text")
        // Relative on purpose: the worker makes it absolute for its runners.
        .env("PYTHONPATH", "../tasks")
        .env_remove("PYOCO_WORKER_TAGS")
        .env_remove("PYOCO_DEFAULT_TAG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn store(nats: &TestNats) -> Store {
    Store::connect(
        &nats.url(),
        "test",
        StoreConfig::default(),
        DEFAULT_CONNECT_TIMEOUT,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_executes_a_queued_job_and_exits_zero() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let run_id = "cli-run-1";
    let pending = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"tenant_id":null,"api_key_id":null,"status":"PENDING","params":{{}},"tasks":{{}},"task_records":{{}},"start_time":null,"end_time":null,"heartbeat_at":1.0,"updated_at":1.0,"error":null}}"#
    );
    store.runs().create(run_id, pending).await.unwrap();
    let job = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"params":{{}},"workflow_yaml":{FLOW_JSON},"submitted_at":1.0}}"#
    );
    store.publish_job("default", job.into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = worker_command(dir.path(), &nats.url())
        .args(["--run-once", "--poll-timeout", "5"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);

    let snap = store.runs().get(run_id).await.unwrap().unwrap();
    let snap = String::from_utf8_lossy(&snap.value);
    assert!(snap.contains(r#""status":"COMPLETED""#), "{snap}\n{stderr}");
    assert!(snap.contains(r#""output":"hi""#), "{snap}");
    assert!(snap.contains(r#""worker_id":"cli-worker""#), "{snap}");
    assert!(
        !dir.path().join("cwd").join("artifacts").exists(),
        "pyoco's ./artifacts landed in the user's directory"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_gracefully_with_exit_130() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = worker_command(dir.path(), &nats.url())
        .args(["--concurrency", "2"])
        .spawn()
        .unwrap();
    let workers = store.workers().clone();
    eventually(Duration::from_secs(30), "worker registered", || {
        let workers = workers.clone();
        async move { workers.get("cli-worker").await.ok().flatten().map(|_| ()) }
    })
    .await;

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("worker exits after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let rec = store.workers().get("cli-worker").await.unwrap().unwrap();
    let rec = String::from_utf8_lossy(&rec.value);
    assert!(rec.contains(r#""state":"STOPPED_GRACEFUL""#), "{rec}");
    assert!(rec.contains(r#""tags":["default"]"#), "{rec}");
}

#[test]
fn help_says_wheel_sync_is_not_implemented() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pyoco-worker"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--wheel-sync"), "{help}");
    assert!(help.contains("not implemented"), "{help}");
    assert!(help.contains("--concurrency"), "{help}");
}
