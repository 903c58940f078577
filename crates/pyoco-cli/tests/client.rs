//! The `pyoco-client` binary against a real gateway (in-process) on a real nats-server.
//!
//! Each test starts a fresh nats-server and gateway, runs the built binary as a user would, and
//! checks its stdout (byte for byte where 0.5.1's format matters), stderr and exit code.

use std::{collections::HashMap, net::SocketAddr, process::Stdio, time::Duration};

use pyoco_config::{LoadOptions, Settings};
use pyoco_gateway::AppState;
use pyoco_store::{SharedStore, Store, StoreConfig};
use pyoco_testkit::TestNats;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::oneshot};

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

fn settings(nats_url: &str) -> Settings {
    let opts = LoadOptions {
        env: HashMap::from([
            ("PYOCO_LOAD_DOTENV".to_string(), "0".to_string()),
            ("PYOCO_NATS_URL".to_string(), nats_url.to_string()),
        ]),
        cwd: std::env::temp_dir(),
        home: None,
    };
    Settings::load(&opts).expect("default settings load")
}

/// A gateway on 127.0.0.1:0 in front of `store`, stopped when dropped.
struct Gateway {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Gateway {
    async fn start(settings: &Settings, store: SharedStore) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(settings, store);
        tokio::spawn(pyoco_gateway::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            _shutdown: tx,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A fresh nats-server and a gateway using it.
struct App {
    gateway: Gateway,
    store: Store,
    _nats: TestNats,
    dir: tempfile::TempDir,
}

impl App {
    async fn start() -> App {
        let nats = TestNats::start().await;
        let settings = settings(&nats.url());
        let shared = SharedStore::connect_in_background(
            &settings.nats_url,
            "pyoco-http-api",
            StoreConfig::from(&settings),
        );
        let store = shared
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("store ready");
        let gateway = Gateway::start(&settings, shared).await;
        App {
            gateway,
            store,
            _nats: nats,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `pyoco-client --server <this gateway> <args>`.
    async fn client(&self, args: &[&str]) -> Output {
        let server = self.gateway.url();
        let mut all = vec!["--server", server.as_str()];
        all.extend_from_slice(args);
        client(&all).await
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Write `status` into the run's snapshot, as a worker would.
    async fn set_status(&self, run_id: &str, status: &str) {
        let entry = self
            .store
            .runs()
            .get(run_id)
            .await
            .unwrap()
            .expect("snapshot");
        let mut snapshot: Value = serde_json::from_slice(&entry.value).unwrap();
        snapshot["status"] = json!(status);
        snapshot["updated_at"] = json!(pyoco_testkit_now());
        self.store
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

fn pyoco_testkit_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
        Value::Number(n) if n.is_f64() => {
            out.push_str(&pyoco_wire::python_float_repr(n.as_f64().unwrap()))
        }
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
    let server = app.gateway.url();
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
    let server = app.gateway.url();
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
    let missing = app.dir.path().join("missing.yaml");
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
    let settings = settings(&dead_url);
    let store = SharedStore::connect_in_background(&dead_url, "test", StoreConfig::from(&settings));
    let gateway = Gateway::start(&settings, store).await;
    let out = client(&["--server", &gateway.url(), "get", "r1"]).await;
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
    let server = app.gateway.url();
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

#[tokio::test]
async fn wheel_commands_say_they_are_not_available_yet() {
    let out = client(&["wheels"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("not available in this version yet"),
        "{}",
        out.stderr
    );
}
