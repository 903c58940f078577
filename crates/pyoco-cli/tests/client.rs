//! The `pyoco-client` binary against a real gateway (in-process) on a real nats-server.
//!
//! Each test starts a fresh nats-server and gateway, runs the built binary as a user would, and
//! checks its stdout (byte for byte where 0.5.1's format matters), stderr and exit code.

use std::{ops::Deref, process::Stdio, time::Duration};

use pyoco_store::{SharedStore, StoreConfig};
use pyoco_testkit::{settings_for, Gateway, TestApp};
use pyoco_wire::python;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A minimal valid flow.yaml (no worker runs it here: runs stay PENDING).
const FLOW_YAML: &str = "\
version: 1
flow:
  graph: |
    t1 >> t2
  defaults:
    x: 1
tasks:
  t1:
    callable: my_tasks:t1
  t2:
    callable: my_tasks:t2
";

/// The test kit's app (a fresh nats-server and the gateway, no worker: runs stay PENDING),
/// with what these tests do to it.
struct App(TestApp);

impl Deref for App {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl App {
    async fn start() -> App {
        App(TestApp::gateway_only().await)
    }

    /// `pyoco-client --server <this gateway> <args>`.
    async fn client(&self, args: &[&str]) -> Output {
        let mut all = vec!["--server", self.base_url()];
        all.extend_from_slice(args);
        client(&all).await
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Write `status` into the run's snapshot, as a worker would.
    async fn set_status(&self, run_id: &str, status: &str) {
        let entry = self
            .store()
            .runs()
            .get(run_id)
            .await
            .unwrap()
            .expect("snapshot");
        let mut snapshot: Value = serde_json::from_slice(&entry.value).unwrap();
        snapshot["status"] = json!(status);
        snapshot["updated_at"] = json!(python::time());
        self.store()
            .runs()
            .put(run_id, serde_json::to_vec(&snapshot).unwrap())
            .await
            .unwrap();
    }

    /// Submit the flow.yaml; returns the run id.
    async fn submit_yaml(&self) -> String {
        let flow = self.write("flow.yaml", FLOW_YAML);
        let out = self
            .client(&[
                "submit-yaml",
                "--workflow-file",
                &flow,
                "--flow-name",
                "main",
                "--tag",
                "default",
            ])
            .await
            .success();
        out.json()["run_id"].as_str().expect("run_id").to_string()
    }
}

/// What the binary did.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn success(self) -> Output {
        assert_eq!(self.code, 0, "pyoco-client failed: {self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {:?}", self.stdout))
    }
}

/// `pyoco-client` with `args` and a clean environment, not started yet.
fn client_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pyoco-client"));
    cmd.args(args)
        .env_remove("PYOCO_SERVER_URL")
        .env_remove("PYOCO_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Run the built `pyoco-client` with `args` and a clean environment.
async fn client(args: &[&str]) -> Output {
    let output = client_command(args)
        .output()
        .await
        .expect("run pyoco-client");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Python's `json.dumps(obj, ensure_ascii=True)` layout: `", "` and `": "` separators.
fn assert_python_layout(stdout: &str) {
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    let value: Value = serde_json::from_str(stdout).unwrap();
    let mut expected = String::new();
    python_dumps(&value, &mut expected);
    assert_eq!(stdout.trim_end(), expected);
}

/// A reference `json.dumps` for ASCII test values (strings via serde_json, separators by hand).
fn python_dumps(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_dumps(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                python_dumps(v, out);
            }
            out.push('}');
        }
        Value::Number(n) if n.is_f64() => out.push_str(&python::float_repr(n.as_f64().unwrap())),
        other => out.push_str(&other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_yaml_prints_the_run_id_and_pending() {
    let app = App::start().await;
    let flow = app.write("flow.yaml", FLOW_YAML);
    let out = app
        .client(&[
            "submit-yaml",
            "--workflow-file",
            &flow,
            "--flow-name",
            "main",
            "--tag",
            "default",
        ])
        .await
        .success();
    assert_python_layout(&out.stdout);
    let body = out.json();
    let run_id = body["run_id"].as_str().unwrap();
    assert_eq!(
        out.stdout,
        format!("{{\"run_id\": \"{run_id}\", \"status\": \"PENDING\"}}\n")
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_yaml_sends_lf_newlines_like_pythons_read_text() {
    let app = App::start().await;
    let flow = app.write("crlf.yaml", &FLOW_YAML.replace('\n', "\r\n"));
    let out = app
        .client(&[
            "submit-yaml",
            "--workflow-file",
            &flow,
            "--flow-name",
            "main",
            "--tag",
            "default",
        ])
        .await
        .success();
    let run_id = out.json()["run_id"].as_str().unwrap().to_string();
    let snapshot = app.client(&["get", &run_id]).await.success().json();
    let digest = pyoco_wire::WorkflowDigest::of(FLOW_YAML.as_bytes());
    assert_eq!(snapshot["workflow_yaml_sha256"], json!(digest.sha256));
    assert_eq!(snapshot["workflow_yaml_bytes"], json!(digest.bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_the_snapshot_and_records_on_request() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;

    let out = app.client(&["get", &run_id]).await.success();
    assert_python_layout(&out.stdout);
    let snapshot = out.json();
    assert_eq!(snapshot["run_id"], json!(run_id));
    assert_eq!(snapshot["status"], json!("PENDING"));
    assert_eq!(snapshot["params"], json!({"x": 1}));
    assert!(snapshot.get("task_records").is_none(), "{snapshot}");

    let with_records = app
        .client(&["get", &run_id, "--records"])
        .await
        .success()
        .json();
    assert_eq!(with_records["task_records"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_prints_the_tasks_shape() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;
    let out = app.client(&["tasks", &run_id]).await.success();
    assert_python_layout(&out.stdout);
    assert_eq!(
        out.json(),
        json!({"run_id": run_id, "flow_name": "main", "status": "PENDING", "tasks": {},
               "task_records": {}, "task_records_truncated": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_builds_params_from_file_then_params_then_param() {
    let app = App::start().await;
    let file = app.write("params.yaml", "a: 1\nb: file\nname: caf\u{e9}\n");
    let out = app
        .client(&[
            "submit",
            "--flow-name",
            "hello",
            "--params-file",
            &file,
            "--params",
            r#"{"b": "params", "c": [1]}"#,
            "--param",
            "c=2",
            "--param",
            "d=",
            "--param",
            "e=text",
            "--tag",
            "blue",
            "--tags",
            "x, y",
        ])
        .await
        .success();
    let run_id = out.json()["run_id"].as_str().unwrap().to_string();
    let get = app.client(&["get", &run_id]).await.success();
    // Non-ASCII is escaped the way json.dumps(ensure_ascii=True) does.
    assert!(
        get.stdout.contains(r#""name": "caf\u00e9""#),
        "{}",
        get.stdout
    );
    let snapshot = get.json();
    assert_eq!(
        snapshot["params"],
        json!({"a": 1, "b": "params", "name": "café", "c": 2, "d": "", "e": "text"})
    );
    assert_eq!(snapshot["flow_name"], json!("hello"));
    assert_eq!(snapshot["tag"], json!("blue"));
    assert_eq!(snapshot["tags"], json!(["x", "y"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_json_and_table() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;

    let out = app.client(&["list"]).await;
    let out = out.success();
    assert_python_layout(&out.stdout);
    let items = out.json();
    assert_eq!(items[0]["run_id"], json!(run_id));
    assert_eq!(items.as_array().unwrap().len(), 1);

    let table = app
        .client(&["list", "--output", "table"])
        .await
        .success()
        .stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("run_id"), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cells[..4], [run_id.as_str(), "PENDING", "main", "default"]);

    let none = app
        .client(&["list", "--status", "FAILED", "--output", "table"])
        .await
        .success();
    assert_eq!(none.stdout, "(no items)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_vnext_pages_with_a_cursor() {
    let app = App::start().await;
    let first = app.submit_yaml().await;
    let second = app.submit_yaml().await;

    let out = app
        .client(&["list-vnext", "--limit", "1", "--updated-after", "0"])
        .await;
    let page = out.success().json();
    assert_eq!(page["items"][0]["run_id"], json!(second));
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();

    let table = app
        .client(&[
            "list-vnext",
            "--limit",
            "1",
            "--cursor",
            &cursor,
            "--output",
            "table",
        ])
        .await
        .success()
        .stdout;
    assert!(table.lines().nth(1).unwrap().starts_with(&first), "{table}");
    assert!(!table.contains("next_cursor:"), "{table}");

    // Without a vNext parameter the compat array is wrapped client-side.
    let wrapped = app.client(&["list-vnext"]).await.success().json();
    assert_eq!(wrapped["next_cursor"], Value::Null);
    assert_eq!(wrapped["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_first_snapshot_event() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;

    let out = app
        .client(&["watch", &run_id, "--max-events", "1", "--timeout-sec", "5"])
        .await;
    let out = out.success();
    assert_python_layout(&out.stdout);
    let event = out.json();
    assert_eq!(event["event"], json!("snapshot"));
    assert_eq!(event["data"]["run_id"], json!(run_id));
    assert_eq!(event["data"]["snapshot"]["status"], json!("PENDING"));

    // Piped, `--output status` is 0.5.1's tab-separated line.
    let status = app
        .client(&["watch", &run_id, "--max-events", "1", "--output", "status"])
        .await
        .success()
        .stdout;
    let fields: Vec<&str> = status.trim_end().split('\t').collect();
    assert_eq!(
        &fields[1..],
        ["snapshot", "PENDING", run_id.as_str()],
        "{status:?}"
    );
    assert!(fields[0].parse::<f64>().is_ok(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_marks_the_run_and_wait_times_out_without_a_worker() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;

    let out = app.client(&["cancel", "--run-id", &run_id]).await;
    let out = out.success();
    assert_python_layout(&out.stdout);
    assert_eq!(out.json()["status"], json!("CANCELLING"));

    // No worker will ever stop it: --wait gives up after --timeout-sec.
    let started = std::time::Instant::now();
    let out = app
        .client(&[
            "cancel",
            "--run-id",
            &run_id,
            "--wait",
            "--timeout-sec",
            "1",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "ERR-PYOCO-CANCEL: wait timeout\n- reason: cancel wait timeout for run_id={run_id}\n- hint: "
        )),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_until_terminal_stops_at_the_first_terminal_snapshot() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = App::start().await;
    let run_id = app.submit_yaml().await;
    let server = app.base_url().to_string();
    let mut child = client_command(&[
        "--server",
        &server,
        "watch",
        &run_id,
        "--until-terminal",
        "--output",
        "status",
        "--timeout-sec",
        "60",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a first event")
        .unwrap()
        .unwrap();
    assert!(
        first.ends_with(&format!("\tsnapshot\tPENDING\t{run_id}")),
        "{first:?}"
    );

    app.set_status(&run_id, "COMPLETED").await;
    let second = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the terminal event")
        .unwrap()
        .unwrap();
    assert!(
        second.ends_with(&format!("\tsnapshot\tCOMPLETED\t{run_id}")),
        "{second:?}"
    );
    // It stops by itself, long before the gateway's 60 s stream timeout.
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("watch exits after the terminal snapshot")
        .unwrap();
    assert!(status.success());
    assert_eq!(lines.next_line().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wait_prints_the_final_snapshot() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;
    let server = app.base_url().to_string();
    let cancel = tokio::spawn({
        let run_id = run_id.clone();
        async move {
            client(&[
                "--server",
                &server,
                "cancel",
                "--run-id",
                &run_id,
                "--wait",
                "--timeout-sec",
                "20",
            ])
            .await
        }
    });
    // The worker's part: the run stops a moment later.
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.set_status(&run_id, "CANCELLED").await;
    let out = cancel.await.unwrap().success();
    assert_python_layout(&out.stdout);
    let snapshot = out.json();
    assert_eq!(snapshot["status"], json!("CANCELLED"));
    assert_eq!(snapshot["run_id"], json!(run_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_prints_json_and_tables() {
    let app = App::start().await;
    let out = app.client(&["workers", "--scope", "all"]).await;
    assert_eq!(out.success().stdout, "[]\n");
    let table = app
        .client(&["workers", "--output", "table"])
        .await
        .success();
    assert_eq!(table.stdout, "(no items)\n");
    let plugins = app
        .client(&["workers", "--output", "plugins", "--include-hidden"])
        .await
        .success();
    assert_eq!(plugins.stdout, "(no items)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_prints_the_prometheus_text() {
    let app = App::start().await;
    app.submit_yaml().await;
    let out = app.client(&["metrics"]).await;
    let out = out.success();
    assert!(
        out.stdout
            .contains("pyoco_runs_total{status=\"PENDING\"} 1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_run_is_an_http_error_with_0_5_1s_reason_line() {
    let app = App::start().await;
    let out = app.client(&["get", "no-such-run"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines[0], "ERR-PYOCO-HTTP: request failed");
    assert_eq!(
        lines[1],
        r#"- reason: HTTP 404 GET /runs/no-such-run: {"detail":"run not found"}"#
    );
    assert!(
        lines[2].starts_with("- hint: check the run id with `pyoco-client list`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_tag_shows_the_gateways_reason() {
    let app = App::start().await;
    let flow = app.write("flow.yaml", FLOW_YAML);
    let out = app
        .client(&[
            "submit-yaml",
            "--workflow-file",
            &flow,
            "--flow-name",
            "main",
            "--tag",
            "bad.tag",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("ERR-PYOCO-HTTP: request failed\n- reason: HTTP 422 POST /runs/yaml: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("- hint: the gateway rejected the request (invalid tag)"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_workflow_file_is_a_file_io_error() {
    let app = App::start().await;
    let missing = app.dir().join("missing.yaml");
    let out = app
        .client(&[
            "submit-yaml",
            "--workflow-file",
            &missing.to_string_lossy(),
            "--flow-name",
            "m",
            "--tag",
            "t",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("ERR-PYOCO-0018: file I/O error\n- reason: "),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_nats_says_to_check_the_nats_server() {
    // A store that never connects: the gateway answers 503 `nats unavailable: NotConnected`.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("nats://{}", dead.local_addr().unwrap());
    drop(dead);
    let settings = settings_for(&dead_url);
    let store = SharedStore::connect_in_background(&dead_url, "test", StoreConfig::from(&settings));
    let gateway = Gateway::start(&settings, store).await;
    let out = client(&["--server", &gateway.url(""), "get", "r1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines[0], "ERR-PYOCO-HTTP: request failed");
    assert!(
        lines[1].starts_with("- reason: HTTP 503 GET /runs/r1: "),
        "{}",
        out.stderr
    );
    assert!(lines[2].contains("check the nats-server"), "{}", out.stderr);
}

/// The real 0.5.1 `pyoco-client` (from the interop venv) with `args`.
async fn python_client(server: &str, args: &[&str]) -> Output {
    let bin = pyoco_testkit::interop_venv()
        .join("bin")
        .join("pyoco-client");
    let output = tokio::process::Command::new(bin)
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the Python pyoco-client");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_what_the_python_0_5_1_client_prints() {
    let app = App::start().await;
    let server = app.base_url().to_string();
    let run_id = app.submit_yaml().await;
    let params = app.write(
        "params.yaml",
        "n: 1\nratio: 0.25\nname: \"caf\u{e9} \u{65e5}\u{672c}\"\nlist: [1, two, {k: null}]\nempty:\n",
    );
    let submit = [
        "submit",
        "--flow-name",
        "f",
        "--params-file",
        &params,
        "--params",
        r#"{"n": 2, "big": 1e16}"#,
        "--param",
        "x=1.5",
        "--param",
        "s=text",
        "--param",
        "e=",
        "--tag",
        "t1",
        "--tags",
        "a, b",
    ];
    let ours = client(&[&["--server", server.as_str()][..], &submit[..]].concat())
        .await
        .success();
    let theirs = python_client(&server, &submit).await;
    assert_eq!(theirs.code, 0, "{theirs:?}");
    let (ours_id, theirs_id) = (
        ours.json()["run_id"].clone(),
        theirs.json()["run_id"].clone(),
    );
    assert_eq!(
        ours.stdout.replace(ours_id.as_str().unwrap(), "ID"),
        theirs.stdout.replace(theirs_id.as_str().unwrap(), "ID")
    );
    // Both clients sent the same params and tags.
    for field in ["params", "tag", "tags", "flow_name"] {
        let a = app
            .client(&["get", ours_id.as_str().unwrap()])
            .await
            .success()
            .json()[field]
            .clone();
        let b = app
            .client(&["get", theirs_id.as_str().unwrap()])
            .await
            .success()
            .json()[field]
            .clone();
        assert_eq!(a, b, "{field}");
    }

    let same = [
        vec!["get", run_id.as_str()],
        vec!["get", run_id.as_str(), "--records"],
        vec!["tasks", run_id.as_str()],
        vec!["list"],
        vec!["list", "--output", "table"],
        vec!["list", "--status", "NOPE", "--output", "table"],
        vec!["list-vnext", "--limit", "1", "--updated-after", "0"],
        vec![
            "list-vnext",
            "--limit",
            "1",
            "--updated-after",
            "0",
            "--output",
            "table",
        ],
        vec!["list-vnext", "--full"],
        vec!["workers", "--scope", "all"],
        vec!["workers", "--output", "table"],
        vec!["workers", "--output", "plugins"],
        // `metrics` is passed through as is (and has process gauges that change between calls).
    ];
    for args in same {
        let ours = app.client(&args).await;
        let theirs = python_client(&server, &args).await;
        assert_eq!(ours.code, theirs.code, "{args:?}: {ours:?} vs {theirs:?}");
        assert_eq!(ours.stdout, theirs.stdout, "{args:?}");
    }

    // Errors: the same first two lines (the hints differ on purpose).
    let errors = [
        vec!["get", "no-such-run"],
        vec![
            "submit-yaml",
            "--workflow-file",
            "/nonexistent/flow.yaml",
            "--flow-name",
            "m",
            "--tag",
            "t",
        ],
        vec!["submit", "--param", "novalue"],
        vec!["submit", "--params", "[1]"],
    ];
    for args in errors {
        let ours = app.client(&args).await;
        let theirs = python_client(&server, &args).await;
        assert_eq!(
            (ours.code, theirs.code),
            (1, 1),
            "{args:?}: {ours:?} vs {theirs:?}"
        );
        let first = |s: &str, n: usize| s.lines().take(n).collect::<Vec<_>>().join("\n");
        // The file I/O reason is the OS error, worded by each language.
        let n = if args[0] == "submit-yaml" { 1 } else { 2 };
        assert_eq!(first(&ours.stderr, n), first(&theirs.stderr, n), "{args:?}");
    }
}

/// A one-shot HTTP server: answers `response` to the first request and returns its head.
async fn one_shot_server(response: impl Into<String>) -> (String, tokio::task::JoinHandle<String>) {
    let response = response.into();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    (url, handle)
}

#[tokio::test]
async fn the_api_key_goes_in_the_named_header() {
    let (url, request) =
        one_shot_server("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
    let out = client(&[
        "--server",
        &url,
        "--api-key",
        "pyoco_abc.secret",
        "--api-key-header",
        "X-Custom-Key",
        "tasks",
        "r 1",
    ])
    .await
    .success();
    assert_eq!(out.stdout, "{}\n");
    let head = request.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /runs/r%201/tasks http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-custom-key: pyoco_abc.secret\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn sse_split_across_chunks_and_events_without_a_name() {
    // Chunked body: an event split mid-line, a nameless event, a non-JSON one, CRLF endings.
    let chunks = [
        "event: sna",
        "pshot\r\ndata: {\"run_id\": \"r\"}\r\n\r",
        "\ndata: {\"x\": 1}\n\n",
        "data: oops\n\n",
    ];
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n",
    );
    for chunk in chunks {
        response.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    response.push_str("0\r\n\r\n");
    let (url, _request) = one_shot_server(response).await;
    let out = client(&["--server", &url, "watch", "r"]).await.success();
    assert_eq!(
        out.stdout,
        "{\"event\": \"snapshot\", \"data\": {\"run_id\": \"r\"}}\n\
         {\"event\": \"message\", \"data\": {\"x\": 1}}\n\
         {\"event\": \"message\", \"data\": {\"raw\": \"oops\"}}\n"
    );
}

#[tokio::test]
async fn connection_refused_says_to_start_the_gateway() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = client(&["--server", &server, "tasks", "r1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines[0], "ERR-PYOCO-HTTP: connection error");
    assert!(
        lines[1].starts_with(&format!("- reason: GET {server}/runs/r1/tasks: ")),
        "{}",
        out.stderr
    );
    assert!(
        lines[2].contains("pyoco-server up --with-nats"),
        "{}",
        out.stderr
    );
    assert!(lines[2].contains("--server"), "{}", out.stderr);
}

#[tokio::test]
async fn usage_errors_exit_1_with_the_0018_message() {
    let out = client(&["cancel"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("ERR-PYOCO-0018: "), "{}", out.stderr);
    assert!(out.stderr.contains("--run-id"), "{}", out.stderr);
    assert!(
        out.stderr.contains("- hint: pyoco-client cancel -h"),
        "{}",
        out.stderr
    );

    let out = client(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("- reason: the following arguments are required: command"),
        "{}",
        out.stderr
    );

    let out = client(&["submit", "--param", "novalue"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("- reason: --param must be key=value ('novalue')"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn help_exits_0_and_lists_the_subcommands() {
    let out = client(&["--help"]).await.success();
    for sub in [
        "submit-yaml",
        "list-vnext",
        "watch",
        "cancel",
        "workers",
        "metrics",
    ] {
        assert!(
            out.stdout.contains(sub),
            "{sub} missing from:\n{}",
            out.stdout
        );
    }
    client(&["watch", "--help"]).await.success();
}

// ---------------------------------------------------------------------------------------------
// The wheel registry: `wheels`, `wheel-history`, `wheel-upload`, `wheel-delete`.

/// A long description: enough usage documentation for the strict preflight (80+ characters).
const WHEEL_README: &str =
    "Demo plugin for pyoco workers. After the worker synced it, use the tasks \
                            demo_plugin.tasks:add and demo_plugin.tasks:mul in a flow.yaml.\n";

/// Write a zip with `files` (name, text) at `path`, deflate-compressed like a real wheel.
fn write_zip(path: &std::path::Path, files: &[(&str, &str)]) {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in files {
        writer.start_file(*name, options).unwrap();
        writer.write_all(text.as_bytes()).unwrap();
    }
    writer.finish().unwrap();
}

/// A wheel of `demo_plugin` `version` in `dir` that passes the strict preflight (with
/// `complete`), or one without entry points and usage documentation; returns its path.
fn demo_wheel(dir: &std::path::Path, version: &str, complete: bool) -> String {
    let name = format!("demo_plugin-{version}-py3-none-any.whl");
    let dist_info = format!("demo_plugin-{version}.dist-info");
    let metadata = format!(
        "Metadata-Version: 2.1\nName: demo-plugin\nVersion: {version}\nSummary: Demo tasks\n\n{}",
        if complete { WHEEL_README } else { "Short.\n" }
    );
    let mut files = vec![
        ("demo_plugin/__init__.py".to_string(), String::new()),
        (
            "demo_plugin/tasks.py".to_string(),
            "def add(a, b):\n    return a + b\n".to_string(),
        ),
        (format!("{dist_info}/METADATA"), metadata),
        (
            format!("{dist_info}/WHEEL"),
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_string(),
        ),
        (format!("{dist_info}/RECORD"), String::new()),
    ];
    if complete {
        files.push((
            format!("{dist_info}/entry_points.txt"),
            "[pyoco.tasks]\ndemo_plugin = demo_plugin.tasks\n".to_string(),
        ));
    }
    let path = dir.join(name);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    write_zip(&path, &files);
    path.to_string_lossy().into_owned()
}

/// A server URL where nothing listens: a command that gets to send a request fails.
async fn nowhere() -> String {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// A one-shot HTTP server that reads the whole request (head and body, by Content-Length or
/// chunked) before it answers `response`; returns the request's bytes.
async fn capture_server(response: impl Into<String>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let response = response.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 65536];
        let complete = |request: &[u8]| -> bool {
            let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let body = &request[end + 4..];
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                body.len() >= len
            } else if head.contains("transfer-encoding: chunked") {
                body.ends_with(b"0\r\n\r\n")
            } else {
                true
            }
        };
        while !complete(&request) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        request
    });
    (url, handle)
}

/// An HTTP/1.1 response with a JSON body.
fn json_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The head (lower-cased) and the multipart parts (their lower-cased headers and content) of a
/// captured `multipart/form-data` request with a Content-Length body.
fn multipart_parts(request: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let boundary = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
        .expect("a multipart request")
        .trim()
        .to_string();
    let body = &request[end + 4..];
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let rest_part = &rest[2..]; // CRLF after the delimiter
        let next = find(rest_part, delimiter.as_bytes()).expect("a closing delimiter");
        let part = &rest_part[..next - 2]; // CRLF before the next delimiter
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        parts.push((
            String::from_utf8_lossy(&part[..split]).to_ascii_lowercase(),
            part[split + 4..].to_vec(),
        ));
        rest = &rest_part[next..];
    }
    (head, parts)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn wheel_upload_streams_0_5_1s_multipart_form() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo_wheel(dir.path(), "1.0.0", true);
    let stored =
        r#"{"name":"demo_plugin-1.0.0-py3-none-any.whl","size_bytes":3,"tags":["cpu","gpu"]}"#;
    let (url, request) = capture_server(json_response("200 OK", stored)).await;
    let out = client(&[
        "--server",
        &url,
        "wheel-upload",
        "--wheel-file",
        &wheel,
        "--tags",
        " cpu, ,gpu ",
        "--no-replace",
    ])
    .await
    .success();
    assert_eq!(
        out.stdout,
        "{\"name\": \"demo_plugin-1.0.0-py3-none-any.whl\", \"size_bytes\": 3, \"tags\": [\"cpu\", \"gpu\"]}\n"
    );
    assert_eq!(
        out.stderr, "",
        "a complete wheel passes the preflight silently"
    );

    let request = request.await.unwrap();
    let (head, parts) = multipart_parts(&request);
    assert!(head.starts_with("post /wheels http/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-length: "),
        "sized, not chunked: {head}"
    );
    let names: Vec<&str> = parts
        .iter()
        .map(|(h, _)| {
            h.split("name=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["replace", "tags", "wheel"]);
    assert_eq!(parts[0].1, b"false");
    assert_eq!(parts[1].1, b"cpu,gpu");
    assert!(
        parts[2]
            .0
            .contains("filename=\"demo_plugin-1.0.0-py3-none-any.whl\""),
        "{}",
        parts[2].0
    );
    assert!(
        parts[2]
            .0
            .contains("content-type: application/octet-stream"),
        "{}",
        parts[2].0
    );
    assert_eq!(
        parts[2].1,
        std::fs::read(&wheel).unwrap(),
        "the file, byte for byte"
    );
}

#[tokio::test]
async fn wheel_upload_replaces_by_default_and_sends_no_tags_without_tags() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo_wheel(dir.path(), "1.0.0", true);
    let (url, request) = capture_server(json_response("200 OK", "{}")).await;
    client(&[
        "--server",
        &url,
        "wheel-upload",
        "--wheel-file",
        &wheel,
        "--tags",
        " , ",
    ])
    .await
    .success();
    let (_, parts) = multipart_parts(&request.await.unwrap());
    assert_eq!(parts.len(), 2, "replace and wheel only");
    assert!(parts[0].0.contains("name=\"replace\""));
    assert_eq!(parts[0].1, b"true");
}

#[tokio::test]
async fn strict_preflight_stops_a_bad_wheel_before_sending_it() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo_wheel(dir.path(), "1.0.0", false);
    // Nothing listens there: getting past the preflight would be a connection error.
    let out = client(&[
        "--server",
        &nowhere().await,
        "wheel-upload",
        "--wheel-file",
        &wheel,
    ])
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[0],
        "ERR-PYOCO-0018: CLI引数が不正です（入力形式を確認してください）"
    );
    assert_eq!(
        lines[1],
        "- reason: wheel preflight failed: usage documentation is missing (need METADATA \
         description>=80 chars or Project-URL: Documentation,...); entry_points are missing \
         (dist-info/entry_points.txt)"
    );
    assert!(
        lines[2].starts_with(
            "- detail: 1) demo_plugin-1.0.0.dist-info/METADATA: the long description is 6 characters"
        ),
        "{}",
        out.stderr
    );
    assert!(
        lines[2].contains("; 2) ") && lines[2].ends_with("has no *.dist-info/entry_points.txt"),
        "{}",
        out.stderr
    );
    assert!(lines[3].starts_with("- hint: "), "{}", out.stderr);
    assert!(
        lines[3].contains("--allow-missing-usage-doc"),
        "{}",
        out.stderr
    );
    assert!(
        lines[3].contains("--allow-no-entry-points"),
        "{}",
        out.stderr
    );
    assert!(
        lines[3].ends_with("--preflight warn (or off)"),
        "{}",
        out.stderr
    );
    assert_eq!(lines.len(), 4, "{}", out.stderr);
}

#[tokio::test]
async fn preflight_warn_and_allow_flags_upload_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo_wheel(dir.path(), "1.0.0", false);
    for flags in [
        vec!["--preflight", "warn"],
        vec!["--allow-no-entry-points", "--allow-missing-usage-doc"],
    ] {
        let (url, request) = capture_server(json_response("200 OK", "{\"ok\": true}")).await;
        let mut args = vec![
            "--server",
            url.as_str(),
            "wheel-upload",
            "--wheel-file",
            &wheel,
        ];
        args.extend(&flags);
        let out = client(&args).await.success();
        assert_eq!(out.stdout, "{\"ok\": true}\n");
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("[pyoco-client][preflight][warn] "))
            .collect();
        assert_eq!(warnings.len(), 2, "{flags:?}: {}", out.stderr);
        assert!(out.stderr.contains("  - fix: "), "{}", out.stderr);
        request.await.unwrap();
    }

    // --preflight off does not even open the archive.
    let not_a_zip = dir.path().join("junk-1.0-py3-none-any.whl");
    std::fs::write(&not_a_zip, "not a zip").unwrap();
    let (url, request) = capture_server(json_response("200 OK", "{}")).await;
    let out = client(&[
        "--server",
        &url,
        "wheel-upload",
        "--wheel-file",
        &not_a_zip.to_string_lossy(),
        "--preflight",
        "off",
    ])
    .await
    .success();
    assert_eq!(out.stderr, "");
    let (_, parts) = multipart_parts(&request.await.unwrap());
    assert_eq!(parts[1].1, b"not a zip");
}

#[tokio::test]
async fn a_wheel_that_is_not_a_zip_or_not_there_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = nowhere().await;
    let junk = dir.path().join("junk-1.0-py3-none-any.whl");
    std::fs::write(&junk, "not a zip").unwrap();
    let out = client(&[
        "--server",
        &server,
        "wheel-upload",
        "--wheel-file",
        &junk.to_string_lossy(),
    ])
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("- reason: wheel preflight failed: wheel file is not a valid zip archive\n"),
        "{}",
        out.stderr
    );

    // A missing file and a directory: file I/O errors, checked or not.
    let missing = dir.path().join("missing-1.0-py3-none-any.whl");
    let unreadable = [missing.as_path(), dir.path()];
    for (path, preflight) in unreadable.iter().flat_map(|p| [(p, "strict"), (p, "off")]) {
        let out = client(&[
            "--server",
            &server,
            "wheel-upload",
            "--wheel-file",
            &path.to_string_lossy(),
            "--preflight",
            preflight,
        ])
        .await;
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr
                .starts_with("ERR-PYOCO-0018: file I/O error\n- reason: "),
            "{path:?} {preflight}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--wheel-file"), "{}", out.stderr);
    }
}

#[tokio::test]
async fn upload_errors_keep_0_5_1s_lines_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo_wheel(dir.path(), "1.0.0", true);
    for (status, detail, hint) in [
        (
            "409 Conflict",
            "wheel version already exists; bump version",
            "bump the version in your package and rebuild the wheel",
        ),
        (
            "413 Payload Too Large",
            "wheel too large",
            "the wheel is larger than PYOCO_WHEEL_MAX_BYTES on the server",
        ),
        (
            "422 Unprocessable Entity",
            "invalid wheel filename",
            "the gateway rejected the request (invalid wheel filename)",
        ),
    ] {
        let body = format!("{{\"detail\":\"{detail}\"}}");
        let (url, request) = capture_server(json_response(status, &body)).await;
        let out = client(&["--server", &url, "wheel-upload", "--wheel-file", &wheel]).await;
        assert_eq!(out.code, 1, "{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines[0], "ERR-PYOCO-HTTP: request failed");
        let code = &status[..3];
        assert_eq!(
            lines[1],
            format!("- reason: HTTP {code} POST /wheels: {body}")
        );
        assert!(lines[2].starts_with("- hint: "), "{}", out.stderr);
        assert!(lines[2].contains(hint), "{}", out.stderr);
        request.await.unwrap();
    }
}

#[tokio::test]
async fn wheels_history_and_delete_send_0_5_1s_requests() {
    let listing = r#"[{"name":"a-1.0-py3-none-any.whl","tags":[]}]"#;
    let (url, request) = capture_server(json_response("200 OK", listing)).await;
    let out = client(&["--server", &url, "wheels"]).await.success();
    assert_eq!(
        out.stdout,
        "[{\"name\": \"a-1.0-py3-none-any.whl\", \"tags\": []}]\n"
    );
    let head = String::from_utf8(request.await.unwrap()).unwrap();
    assert!(head.starts_with("GET /wheels HTTP/1.1\r\n"), "{head}");

    let (url, request) = capture_server(json_response("200 OK", "[]")).await;
    client(&["--server", &url, "wheel-history"]).await.success();
    let head = String::from_utf8(request.await.unwrap()).unwrap();
    assert!(
        head.starts_with("GET /wheels/history?limit=100 HTTP/1.1\r\n"),
        "{head}"
    );

    let (url, request) = capture_server(json_response("200 OK", "[]")).await;
    client(&[
        "--server",
        &url,
        "wheel-history",
        "--limit",
        "3",
        "--wheel-name",
        "a-1.0-py3-none-any.whl",
        "--action",
        "upload",
    ])
    .await
    .success();
    let head = String::from_utf8(request.await.unwrap()).unwrap();
    assert!(
        head.starts_with(
            "GET /wheels/history?limit=3&wheel_name=a-1.0-py3-none-any.whl&action=upload HTTP/1.1\r\n"
        ),
        "{head}"
    );

    let deleted = r#"{"name":"a-1.0-py3-none-any.whl","deleted":true}"#;
    let (url, request) = capture_server(json_response("200 OK", deleted)).await;
    let out = client(&[
        "--server",
        &url,
        "wheel-delete",
        "--name",
        "a-1.0-py3-none-any.whl",
    ])
    .await
    .success();
    assert_eq!(
        out.stdout,
        "{\"name\": \"a-1.0-py3-none-any.whl\", \"deleted\": true}\n"
    );
    let head = String::from_utf8(request.await.unwrap()).unwrap();
    assert!(
        head.starts_with("DELETE /wheels/a-1.0-py3-none-any.whl HTTP/1.1\r\n"),
        "{head}"
    );

    let (url, _request) = capture_server(json_response(
        "404 Not Found",
        r#"{"detail":"wheel not found"}"#,
    ))
    .await;
    let out = client(&["--server", &url, "wheel-delete", "--name", "nope.whl"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("- hint: check the wheel file name with `pyoco-client wheels`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_fails_like_the_python_0_5_1_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = nowhere().await;
    let bad = demo_wheel(dir.path(), "1.0.0", false);
    let junk = dir.path().join("junk-1.0-py3-none-any.whl");
    std::fs::write(&junk, "not a zip").unwrap();
    let no_metadata = dir.path().join("bare-1.0-py3-none-any.whl");
    write_zip(&no_metadata, &[("bare/__init__.py", "")]);
    let no_name = dir.path().join("noname-1.0-py3-none-any.whl");
    write_zip(
        &no_name,
        &[(
            "noname-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nSummary: \n\nshort\n",
        )],
    );
    for wheel in [
        bad.clone(),
        junk.to_string_lossy().into_owned(),
        no_metadata.to_string_lossy().into_owned(),
        no_name.to_string_lossy().into_owned(),
    ] {
        let args = ["wheel-upload", "--wheel-file", &wheel];
        let ours = client(&[&["--server", server.as_str()][..], &args[..]].concat()).await;
        let theirs = python_client(&server, &args).await;
        assert_eq!((ours.code, theirs.code), (1, 1), "{ours:?} vs {theirs:?}");
        // 0.5.1's warnings, then the same first two lines of the error.
        let strip = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("  - "))
                .take_while(|l| !l.starts_with("- detail:") && !l.starts_with("- hint:"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(strip(&ours.stderr), strip(&theirs.stderr), "{wheel}");
    }

    // `warn`: the same warning lines, then both try to upload (nothing listens: exit 1).
    let args = [
        "wheel-upload",
        "--wheel-file",
        bad.as_str(),
        "--preflight",
        "warn",
    ];
    let ours = client(&[&["--server", server.as_str()][..], &args[..]].concat()).await;
    let theirs = python_client(&server, &args).await;
    let warnings = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("[pyoco-client]"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(warnings(&ours.stderr), warnings(&theirs.stderr));
    assert_eq!(warnings(&ours.stderr).len(), 2, "{}", ours.stderr);
    assert_eq!((ours.code, theirs.code), (1, 1));
    assert!(
        ours.stderr.contains("ERR-PYOCO-HTTP: connection error"),
        "{}",
        ours.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wheel_registry_round_trip_through_the_gateway() {
    let app = App::start().await;
    let wheel = demo_wheel(app.dir(), "1.0.0", true);
    let name = "demo_plugin-1.0.0-py3-none-any.whl";

    let stored = app
        .client(&["wheel-upload", "--wheel-file", &wheel, "--tags", "cpu,gpu"])
        .await
        .success();
    assert_python_layout(&stored.stdout);
    let stored = stored.json();
    assert_eq!(stored["name"], name);
    assert_eq!(stored["tags"], json!(["cpu", "gpu"]));
    assert_eq!(
        stored["size_bytes"],
        json!(std::fs::metadata(&wheel).unwrap().len())
    );

    let listed = app.client(&["wheels"]).await.success();
    assert_python_layout(&listed.stdout);
    let listed = listed.json();
    let items = listed.as_array().expect("a list");
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["name"], name);
    assert_eq!(items[0]["tags"], json!(["cpu", "gpu"]));

    let history = app.client(&["wheel-history"]).await.success().json();
    assert_eq!(history[0]["action"], "upload", "{history}");
    assert_eq!(history[0]["wheel_name"], name);
    assert_eq!(history[0]["tags"], json!(["cpu", "gpu"]));

    // The same version again: the gateway refuses it, and the hint says what to do.
    let again = app.client(&["wheel-upload", "--wheel-file", &wheel]).await;
    assert_eq!(again.code, 1, "{again:?}");
    let lines: Vec<&str> = again.stderr.lines().collect();
    assert_eq!(lines[0], "ERR-PYOCO-HTTP: request failed");
    assert_eq!(
        lines[1],
        r#"- reason: HTTP 409 POST /wheels: {"detail":"wheel version already exists; bump version"}"#
    );
    assert!(
        lines[2].contains("bump the version in your package and rebuild the wheel"),
        "{}",
        again.stderr
    );

    let deleted = app
        .client(&["wheel-delete", "--name", name])
        .await
        .success();
    assert_eq!(
        deleted.stdout,
        format!("{{\"name\": \"{name}\", \"deleted\": true}}\n")
    );
    assert_eq!(app.client(&["wheels"]).await.success().stdout, "[]\n");

    let history = app
        .client(&["wheel-history", "--wheel-name", name])
        .await
        .success()
        .json();
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["delete", "upload"], "newest first: {history}");
    let deletes = app
        .client(&["wheel-history", "--action", "delete"])
        .await
        .success()
        .json();
    assert_eq!(deletes.as_array().unwrap().len(), 1, "{deletes}");

    let gone = app.client(&["wheel-delete", "--name", name]).await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(
        gone.stderr.contains(&format!(
            "- reason: HTTP 404 DELETE /wheels/{name}: {{\"detail\":\"wheel not found\"}}"
        )),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn dlq_list_show_replay_and_delete() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;
    let record = json!({
        "reason": "execution_error", "error": "boom", "timestamp": 1.0, "run_id": run_id,
        "flow_name": "main", "tag": "default", "tags": ["default"], "tenant_id": null,
        "api_key_id": null, "worker_id": "w1",
    });
    app.store()
        .publish_dlq("default", serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    let list = app.client(&["dlq", "list"]).await.success().json();
    assert_eq!(list["items"][0]["id"], "1");
    assert_eq!(list["items"][0]["run_id"], json!(run_id));
    let table = app
        .client(&[
            "dlq",
            "list",
            "--output",
            "table",
            "--reason",
            "execution_error",
        ])
        .await
        .success();
    assert!(
        table.stdout.contains("execution_error") && table.stdout.contains(&run_id),
        "{}",
        table.stdout
    );
    let shown = app.client(&["dlq", "show", "1"]).await.success().json();
    assert_eq!(shown["job"]["params"], json!({"x": 1}));
    let replayed = app.client(&["dlq", "replay", "1"]).await.success().json();
    assert_eq!(replayed["replayed_from"], "1");
    assert_ne!(replayed["run_id"], json!(run_id));
    let deleted = app.client(&["dlq", "delete", "1"]).await.success().json();
    assert_eq!(deleted, json!({"id": "1", "deleted": true}));
    // An unknown entry: the gateway's 404, exit 1, with a hint.
    let missing = app.client(&["dlq", "show", "1"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("dlq entry not found"),
        "{}",
        missing.stderr
    );
}

/// Publish `lines` (task, stream, line) as a worker does.
async fn publish_lines(app: &App, run_id: &str, lines: &[(&str, &str, String)]) {
    let mut publisher = app.store().task_log_publisher(run_id, 1 << 20);
    for (task, stream, line) in lines {
        publisher
            .push(Some(task), stream, line, python::time())
            .await;
    }
    let (published, failed) = publisher.finish((0, 0), python::time()).await;
    assert_eq!((published, failed), (lines.len() as u64, 0));
}

#[tokio::test]
async fn logs_prints_the_lines_and_follows_them_until_the_run_ends() {
    let app = App::start().await;
    let run_id = app.submit_yaml().await;
    let mut lines: Vec<(&str, &str, String)> = (0..1500)
        .map(|i| ("t1", "stdout", format!("out {i}")))
        .collect();
    lines.push(("t2", "stderr", "err line".to_string()));
    publish_lines(&app, &run_id, &lines).await;

    // Two pages: every stdout line on stdout, the stderr line on stderr.
    let out = app.client(&["logs", &run_id]).await.success();
    let printed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(printed.len(), 1500);
    assert_eq!((printed[0], printed[1499]), ("out 0", "out 1499"));
    assert_eq!(out.stderr, "err line\n");
    let json_out = app
        .client(&["logs", &run_id, "--output", "json", "--stream", "stderr"])
        .await
        .success()
        .json();
    assert_eq!(json_out["task"], "t2");
    assert_eq!(json_out["line"], "err line");
    assert_eq!(json_out["seq"], 1501);
    let only_t2 = app
        .client(&["logs", &run_id, "--task", "t2"])
        .await
        .success();
    assert_eq!(
        (only_t2.stdout.as_str(), only_t2.stderr.as_str()),
        ("", "err line\n")
    );

    // -f: the stored lines after --after, then new ones, until the run has ended.
    let child = client_command(&[
        "--server",
        app.base_url(),
        "logs",
        &run_id,
        "-f",
        "--after",
        "1498",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_lines(
        &app,
        &run_id,
        &[
            ("t3", "stdout", "late 1".into()),
            ("t3", "stdout", "late 2".into()),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.set_status(&run_id, "COMPLETED").await;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("logs -f ends once the run has ended")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "out 1498\nout 1499\nlate 1\nlate 2\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err line\n");

    // An unknown run: the gateway's 404, exit 1.
    let missing = app.client(&["logs", "no-such-run"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("run not found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn schedule_yaml_schedules_runs_pause_resume_and_delete() {
    let app = App::start().await;
    let flow = app.write("flow.yaml", FLOW_YAML);
    let base = [
        "schedule-yaml",
        "--workflow-file",
        &flow,
        "--flow-name",
        "main",
        "--tag",
        "default",
    ];
    // Every second: it fires while the test runs (no worker: the runs stay PENDING).
    let created = app
        .client(&[&base[..], &["--interval-seconds", "1", "--catch-up", "one"]].concat())
        .await
        .success()
        .json();
    assert_eq!(created["schedule_type"], "interval");
    assert_eq!(created["catch_up"], "one");
    let id = created["schedule_id"].as_str().unwrap().to_string();
    let cron = app
        .client(
            &[
                &base[..],
                &["--cron", "0 9 * * 1-5", "--timezone", "Asia/Tokyo"],
            ]
            .concat(),
        )
        .await
        .success()
        .json();
    assert_eq!(cron["timezone"], "Asia/Tokyo");

    let listed = app.client(&["schedules"]).await.success().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let mut runs = Value::Null;
    for _ in 0..50 {
        runs = app
            .client(&["schedule-runs", "--schedule-id", &id, "--limit", "5"])
            .await
            .success()
            .json();
        if !runs.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(runs[0]["schedule_id"], json!(id), "{runs}");
    let full = app
        .client(&["schedule-runs", "--schedule-id", &id, "--records"])
        .await
        .success()
        .json();
    assert!(full[0]["scheduled_at"].is_number(), "{full}");

    let paused = app
        .client(&["schedule-pause", "--schedule-id", &id])
        .await
        .success()
        .json();
    assert_eq!(paused["status"], "PAUSED");
    let resumed = app
        .client(&["schedule-resume", "--schedule-id", &id])
        .await
        .success()
        .json();
    assert_eq!(resumed["status"], "ACTIVE");
    let deleted = app
        .client(&["schedule-delete", "--schedule-id", &id])
        .await
        .success()
        .json();
    assert_eq!(deleted, json!({"schedule_id": id, "deleted": true}));

    // Refusals: the gateway's 422/404 (exit 1), and clap's for two timings at once.
    let bad = app
        .client(&[&base[..], &["--interval-seconds", "0"]].concat())
        .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("interval_seconds must be positive"),
        "{}",
        bad.stderr
    );
    let missing = app.client(&["schedule-delete", "--schedule-id", &id]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("schedule not found"),
        "{}",
        missing.stderr
    );
    let both = app
        .client(
            &[
                &base[..],
                &["--interval-seconds", "5", "--cron", "* * * * *"],
            ]
            .concat(),
        )
        .await;
    assert_eq!(both.code, 1, "{both:?}");
}
