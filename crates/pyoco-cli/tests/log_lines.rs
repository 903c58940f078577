//! The log lines of the real gateway (`pyoco-server up`) and worker (`pyoco-worker`) binaries
//! against a real nats-server and the real pyoco: with `PYOCO_LOG_FORMAT=json` every stdout
//! line is a JSON object shaped as pyoco-server 0.5.1's (contract §12), the error paths carry
//! their `err_id`/`msg_id`, and the text format matches §12's pattern.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use pyoco_testkit::{python, TestNats};
use serde_json::{Map, Value};

const PEPPER: &str = "log-test-pepper";
const TASKS_PY: &str =
    "def hello():\n    return 'hi'\n\ndef boom():\n    raise ValueError('kaboom')\n";
const FLOW_YAML: &str =
    "version: 1\nflow:\n  graph: |\n    t1\ntasks:\n  t1:\n    callable: log_tasks:hello\n";
const FAILING_YAML: &str =
    "version: 1\nflow:\n  graph: |\n    t1\ntasks:\n  t1:\n    callable: log_tasks:boom\n";
/// Small enough that a padded flow.yaml is over it (ERR-PYOCO-0016).
const YAML_MAX_BYTES: usize = 400;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A child process stopped (SIGTERM, then killed) when dropped.
struct Proc(Child);

impl Proc {
    fn stop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A program with a clean environment: no `.env`, its data dir in `dir`.
fn command(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("PYOCO_DATA_DIR", dir.join("data"))
        .env("PYOCO_LOAD_DOTENV", "0")
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// `pyoco-server up` (gateway only) on `port`, stdout and stderr into files in `dir`.
fn gateway(dir: &Path, nats_url: &str, port: u16, env: &[(&str, &str)]) -> Proc {
    let mut cmd = command(env!("CARGO_BIN_EXE_pyoco-server"), dir);
    cmd.args(["up", "--nats-url", nats_url, "--port", &port.to_string()])
        .env("PYOCO_AUTH_PEPPER", PEPPER)
        .env("PYOCO_WORKFLOW_YAML_MAX_BYTES", YAML_MAX_BYTES.to_string())
        .stdout(std::fs::File::create(dir.join("gateway.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("gateway.err")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

/// `pyoco-worker` serving the default tag, its task module in `dir/tasks`.
fn worker(dir: &Path, nats_url: &str, env: &[(&str, &str)]) -> Proc {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::write(dir.join("tasks").join("log_tasks.py"), TASKS_PY).unwrap();
    let mut cmd = command(env!("CARGO_BIN_EXE_pyoco-worker"), dir);
    cmd.args(["--nats-url", nats_url, "--worker-id", "log-worker"])
        .env("PYOCO_PYTHON", python())
        .env("PYTHONPATH", dir.join("tasks"))
        .stdout(std::fs::File::create(dir.join("worker.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("worker.err")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until the gateway answers `/health`.
async fn wait_healthy(base: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not come up:\n{}",
            read(dir.join("gateway.err"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An API key made with the real admin CLI.
fn create_api_key(dir: &Path, nats_url: &str) -> String {
    let out = command(env!("CARGO_BIN_EXE_pyoco-server-admin"), dir)
        .args([
            "--nats-url",
            nats_url,
            "api-key",
            "create",
            "--tenant",
            "logs",
        ])
        .env("PYOCO_AUTH_PEPPER", PEPPER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["api_key"].as_str().unwrap().to_string()
}

fn yaml_form(yaml: String) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "workflow",
            reqwest::multipart::Part::text(yaml).file_name("flow.yaml"),
        )
        .text("flow_name", "main")
}

/// Submit `yaml` as flow `main` and wait for the run's status `want`; returns the run id.
async fn run_to(base: &str, key: Option<&str>, yaml: &str, want: &str, dir: &Path) -> String {
    let http = reqwest::Client::new();
    let with_key = |r: reqwest::RequestBuilder| match key {
        Some(k) => r.header("X-API-Key", k),
        None => r,
    };
    let submitted: Value = with_key(http.post(format!("{base}/runs/yaml")))
        .multipart(yaml_form(yaml.to_string()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = submitted["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snap: Value = with_key(http.get(format!("{base}/runs/{run_id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if snap["status"] == want {
            return run_id;
        }
        let terminal =
            ["COMPLETED", "FAILED", "CANCELLED"].contains(&snap["status"].as_str().unwrap_or(""));
        assert!(
            Instant::now() < deadline && !terminal,
            "run did not end {want}: {snap}\n{}",
            read(dir.join("worker.out"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every line of `text` as a JSON object; fails on any other line.
fn json_lines(text: &str, what: &str) -> Vec<Map<String, Value>> {
    text.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("a {what} stdout line is not a JSON object ({other:?}): {line:?}"),
        })
        .collect()
}

/// The line with this `err_id`, or a failure listing what was logged.
fn with_err<'a>(lines: &'a [Map<String, Value>], err_id: &str) -> &'a Map<String, Value> {
    lines
        .iter()
        .find(|l| l.get("err_id").and_then(Value::as_str) == Some(err_id))
        .unwrap_or_else(|| panic!("no line with {err_id}: {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_worker_write_0_5_1_json_lines_on_stdout() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let key = create_api_key(dir, &url);
    let json_env = [
        ("PYOCO_LOG_FORMAT", "json"),
        ("PYOCO_LOG_INCLUDE_TRACEBACK", "false"),
    ];
    let port = free_port();
    let mut gw_env = json_env.to_vec();
    gw_env.push(("PYOCO_HTTP_AUTH_MODE", "api_key"));
    let mut gw = gateway(dir, &url, port, &gw_env);
    let mut wk = worker(dir, &url, &json_env);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, dir).await;
    let http = reqwest::Client::new();

    // A run that completes, and one whose task raises.
    let run_id = run_to(&base, Some(&key), FLOW_YAML, "COMPLETED", dir).await;
    let failed_id = run_to(&base, Some(&key), FAILING_YAML, "FAILED", dir).await;

    // The error paths.
    let status = |r: reqwest::Response| r.status().as_u16();
    let missing = http
        .get(format!("{base}/runs/no-such-run"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(status(missing), 404);
    let bad_cursor = http
        .get(format!("{base}/runs?cursor=not-a-cursor"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(status(bad_cursor), 422);
    let padded = format!("{FLOW_YAML}#{}\n", "x".repeat(YAML_MAX_BYTES));
    let too_large = http
        .post(format!("{base}/runs/yaml"))
        .header("X-API-Key", &key)
        .multipart(yaml_form(padded))
        .send()
        .await
        .unwrap();
    assert_eq!(status(too_large), 413);
    let bad_yaml = http
        .post(format!("{base}/runs/yaml"))
        .header("X-API-Key", &key)
        .multipart(yaml_form("version: 1\nflow: [\n".to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(status(bad_yaml), 422);
    let bad_scope = http
        .get(format!("{base}/workers?scope=sideways"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(status(bad_scope), 422);
    let no_key = http.get(format!("{base}/runs")).send().await.unwrap();
    assert_eq!(status(no_key), 401);

    // Let the last lines be written, then stop both (SIGTERM: a graceful stop).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop();
    wk.stop();

    let gw_out = read(dir.join("gateway.out"));
    let wk_out = read(dir.join("worker.out"));
    let gw_lines = json_lines(&gw_out, "gateway");
    let wk_lines = json_lines(&wk_out, "worker");
    assert!(!gw_lines.is_empty() && !wk_lines.is_empty());
    // The banner is on stderr, not among the log lines.
    assert!(
        read(dir.join("gateway.err")).contains("pyoco-server: API and dashboard at "),
        "{}",
        read(dir.join("gateway.err"))
    );

    for (lines, service) in [
        (&gw_lines, "pyoco-server:http"),
        (&wk_lines, "pyoco-server:worker"),
    ] {
        for line in lines.iter() {
            let keys: Vec<&str> = line.keys().take(10).map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "ts", "service", "level", "logger", "message", "pathname", "lineno", "func",
                    "process", "thread"
                ],
                "{line:?}"
            );
            let ts = line["ts"].as_str().unwrap();
            assert!(
                ts.len() == 20 && ts.ends_with('Z'),
                "UTC second precision: {ts}"
            );
            assert!(
                ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
                    .contains(&line["level"].as_str().unwrap()),
                "{line:?}"
            );
            assert!(line["message"].is_string(), "{line:?}");
            assert!(line["pathname"].is_string(), "{line:?}");
            assert!(line["lineno"].is_u64(), "{line:?}");
            assert!(line["func"].is_string(), "{line:?}");
            assert!(
                line["process"].is_u64() && line["thread"].is_u64(),
                "{line:?}"
            );
            assert!(
                !line.contains_key("exc_traceback") && !line.contains_key("exc_origin"),
                "PYOCO_LOG_INCLUDE_TRACEBACK=false: {line:?}"
            );
        }
        assert!(
            lines.iter().any(|l| l["service"] == service),
            "{service}: {lines:#?}"
        );
    }
    // Each program's own lines name it; the gateway's code logs as 0.5.1's http_api logger.
    for line in &gw_lines {
        assert_ne!(line["service"], "pyoco-server:worker", "{line:?}");
    }
    for line in &wk_lines {
        assert_ne!(line["service"], "pyoco-server:http", "{line:?}");
    }

    let gateway_error = |err_id: &str| {
        let line = with_err(&gw_lines, err_id).clone();
        assert_eq!(line["msg_id"], err_id.replace("ERR-", "MSG-"), "{line:?}");
        assert_eq!(
            line["level"], "INFO",
            "a client error is INFO, as 0.5.1: {line:?}"
        );
        assert_eq!(line["service"], "pyoco-server:http");
        assert_eq!(line["logger"], "pyoco_server.http_api", "{line:?}");
        line
    };
    let not_found = gateway_error("ERR-PYOCO-0005");
    assert_eq!(not_found["run_id"], "no-such-run");
    assert_eq!(not_found["message"], "run not found");
    let cursor = gateway_error("ERR-PYOCO-0017");
    assert_eq!(cursor["message"], "list_runs failed: invalid cursor");
    let large = gateway_error("ERR-PYOCO-0016");
    assert_eq!(large["max_bytes"], YAML_MAX_BYTES as u64, "{large:?}");
    let yaml = gateway_error("ERR-PYOCO-0002");
    assert!(
        yaml["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{yaml:?}"
    );
    let scope = gateway_error("ERR-PYOCO-0019");
    assert_eq!(scope["scope"], "sideways");
    let missing_key = gateway_error("ERR-PYOCO-0014");
    assert_eq!(missing_key["message"], "auth failed: missing api key");
    // One line per refused request.
    for err_id in [
        "ERR-PYOCO-0005",
        "ERR-PYOCO-0017",
        "ERR-PYOCO-0016",
        "ERR-PYOCO-0019",
    ] {
        let n = gw_lines
            .iter()
            .filter(|l| l.get("err_id").and_then(Value::as_str) == Some(err_id))
            .count();
        assert_eq!(n, 1, "{err_id}: {gw_lines:#?}");
    }

    // The worker's lines about the run carry its context keys.
    let finished = wk_lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .unwrap_or_else(|| panic!("no `run finished` line: {wk_lines:#?}"));
    assert_eq!(finished["run_id"], run_id.as_str());
    assert_eq!(finished["flow_name"], "main");
    assert_eq!(finished["tag"], "default");
    assert_eq!(finished["worker_id"], "log-worker");
    assert_eq!(finished["logger"], "pyoco_server.worker");
    assert_eq!(finished["status"], "COMPLETED");

    // The failed task: 0.5.1's `execution error` with the Python exception, no traceback.
    let failed = with_err(&wk_lines, "ERR-PYOCO-0007");
    assert_eq!(failed["msg_id"], "MSG-PYOCO-0007");
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["message"], "execution error");
    assert_eq!(failed["run_id"], failed_id.as_str());
    assert_eq!(failed["worker_id"], "log-worker");
    assert_eq!(failed["exc_type"], "ValueError", "{failed:?}");
    assert!(
        failed["exc_message"].as_str().unwrap().contains("kaboom"),
        "{failed:?}"
    );
}

/// §12's text pattern: `<LEVEL> <service> <logger> <path>:<line> <func> - <message> (keys)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_format_is_0_5_1_s() {
    let nats = TestNats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let text = [("PYOCO_LOG_FORMAT", "text")];
    let mut gw = gateway(dir, &nats.url(), port, &text);
    let mut wk = worker(dir, &nats.url(), &text);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, dir).await;
    let r = reqwest::get(format!("{base}/runs/missing-run"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let failed_id = run_to(&base, None, FAILING_YAML, "FAILED", dir).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop();
    wk.stop();

    // The worker's execution error, with the Python traceback after it (the default
    // PYOCO_LOG_INCLUDE_TRACEBACK=true).
    let wk_out = read(dir.join("worker.out"));
    let lines: Vec<&str> = wk_out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("ERR-PYOCO-0007"))
        .unwrap_or_else(|| panic!("no ERR-PYOCO-0007 line:\n{wk_out}"));
    let line = lines[at];
    assert!(
        line.starts_with("ERROR pyoco-server:worker pyoco_server.worker "),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            " - execution error (err_id=ERR-PYOCO-0007, msg_id=MSG-PYOCO-0007, run_id={failed_id}, flow_name=main, tag=default, worker_id=log-worker"
        )),
        "{line}"
    );
    assert_eq!(
        lines[at + 1],
        "Traceback (most recent call last):",
        "{wk_out}"
    );
    let last = lines[at + 1..]
        .iter()
        .find(|l| l.starts_with("ValueError"))
        .unwrap_or_else(|| panic!("no ValueError line:\n{wk_out}"));
    assert!(last.contains("kaboom"), "{last}");

    let out = read(dir.join("gateway.out"));
    let line = out
        .lines()
        .find(|l| l.contains("ERR-PYOCO-0005"))
        .unwrap_or_else(|| panic!("no ERR-PYOCO-0005 line:\n{out}"));
    let (head, tail) = line.split_once(" - ").unwrap();
    let parts: Vec<&str> = head.split(' ').collect();
    assert_eq!(parts.len(), 5, "{line}");
    assert_eq!(
        parts[..3],
        ["INFO", "pyoco-server:http", "pyoco_server.http_api"],
        "{line}"
    );
    let (path, lineno) = parts[3].rsplit_once(':').unwrap();
    assert!(path.ends_with(".rs"), "{line}");
    assert!(lineno.parse::<u32>().unwrap() > 0, "{line}");
    assert!(parts[4].starts_with("pyoco_gateway::"), "{line}");
    assert_eq!(
        tail,
        "run not found (err_id=ERR-PYOCO-0005, msg_id=MSG-PYOCO-0005, run_id=missing-run)"
    );
    // Every stdout line starts with a level and the service: no JSON, no banner.
    for l in out.lines().filter(|l| !l.starts_with(' ')) {
        let mut words = l.split(' ');
        let level = words.next().unwrap();
        if ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level) {
            assert!(words.next().unwrap().starts_with("pyoco-server:"), "{l}");
        }
    }
}
