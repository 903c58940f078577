//! The real `pyoco-server` binary, started the way the README says: `pyoco-server up
//! --with-nats` in the directory that holds the user's `flow.yaml` and task module.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use pyoco_testkit::{
    free_port, nats_server_bin, python, submit_yaml, wait_status, workspace_binary,
    write_task_module, TASKS_PY,
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

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&*needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The binary's process group, killed if the test ends before the binary does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyoco_server_up_binary_runs_a_flow() {
    let Some(binary) = workspace_binary("pyoco-server") else {
        eprintln!(
            "\n\n*** SKIPPED pyoco_server_up_binary_runs_a_flow: no pyoco-server binary under \
             the target dir. Run `cargo build -p pyoco-cli` first. ***\n"
        );
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("pyoco-e2e-up-")
        .tempdir()
        .unwrap();
    let launch = tmp.path().join("project");
    let data = tmp.path().join("data");
    write_task_module(&launch, "tasks", TASKS_PY);
    std::fs::write(launch.join("flow.yaml"), FLOW_NEXT_TO_TASKS).unwrap();
    let log = tmp.path().join("pyoco-server.log");
    let out = std::fs::File::create(&log).unwrap();
    let port = free_port();
    let mut cmd = Command::new(&binary);
    // Own process group (`Running` kills it as a group), and killed with the test process.
    pyoco_process::tie_to_parent(&mut cmd);
    let child = cmd
        .args(["up", "--with-nats", "--nats-client-port", "0"])
        .args(["--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .env("PYOCO_DATA_DIR", &data)
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_LOG_FORMAT", "text")
        .env("PYOCO_NATS_SERVER_BIN", nats_server_bin())
        .env("PYOCO_PYTHON", python())
        .current_dir(&launch)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let mut server = Running(child);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();

    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("pyoco-server exited ({status}):\n{}", output());
        }
        // `/health` answers before the gateway's NATS connection is ready; an unknown run's
        // 404 `run not found` comes from NATS.
        let probe = format!("{base_url}/runs/00000000-0000-4000-8000-000000000000");
        if let Ok(response) = http.get(probe).send().await {
            if response.status() == 404 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pyoco-server's gateway did not answer from NATS within 30 s:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let yaml = std::fs::read_to_string(launch.join("flow.yaml")).unwrap();
    let run_id = submit_yaml(&http, &base_url, &yaml, "readme", "default").await;
    let run = wait_status(&http, &base_url, &run_id, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{}", output());
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
    kill(Pid::from_raw(server.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pyoco-server still running 30 s after SIGINT:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", output());
    assert!(output().contains("pyoco-server: stopped"), "{}", output());
    let left = processes_mentioning(&data);
    assert!(
        left.is_empty(),
        "processes left running with the data dir {}: {left:?}",
        data.display()
    );
}
