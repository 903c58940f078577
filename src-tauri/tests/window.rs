//! The built desktop app in a real window under Xvfb, driven through WebDriver (`tauri-driver`
//! in front of WebKitWebDriver), the way a user uses it: wait until the three components are
//! green, run a flow, change a setting in the window and save it, export for production (and
//! load the export with our loader and with Python pyoco-server 0.5.1's), quit, and find no
//! child process left. A `kill -9` of the app leaves nothing behind either.
//!
//! Screenshots of each step go to `artifacts/desktop/` at the workspace root (CI keeps them).
//! Needs `scripts/setup.sh --with-desktop-tests` (Xvfb, WebKitWebDriver, tauri-driver).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use pyoco_config::{LoadOptions, Settings};
use pyoco_testkit::{
    free_port, interop_venv, nats_server_bin, python, submit_yaml, wait_status, workspace_root,
    write_task_module,
};
use serde_json::{json, Value};

const APP: &str = env!("CARGO_BIN_EXE_pyoco-desktop");

const TASKS_PY: &str =
    "from pyoco import task\n\n@task\ndef double(ctx, x: int = 0):\n    return x * 2\n";
const FLOW: &str = "version: 1\nflow:\n  graph: |\n    double\n  defaults:\n    x: 21\ntasks:\n  double:\n    callable: window_tasks:double\n";

// ----- processes ---------------------------------------------------------------------------

/// A child killed with its whole process group when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, what: &str) -> Proc {
    // Own process group (`Proc` kills it as a group), and killed with the test process.
    pyoco_process::tie_to_parent(&mut cmd);
    Proc(cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start {what}: {e} — run `bash scripts/setup.sh --with-desktop-tests`")
    }))
}

/// An Xvfb display of its own (the first free number from 90).
struct Xvfb {
    _proc: Proc,
    display: String,
}

fn xvfb() -> Xvfb {
    for n in 90..250 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let mut cmd = Command::new("Xvfb");
        cmd.args([
            &format!(":{n}"),
            "-screen",
            "0",
            "1280x860x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut proc = spawn(cmd, "Xvfb");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                // The socket may be another test's Xvfb that won the race for this number:
                // ours then exits at once ("server is already active").
                std::thread::sleep(Duration::from_millis(200));
                if !matches!(proc.0.try_wait(), Ok(None)) {
                    break;
                }
                return Xvfb {
                    _proc: proc,
                    display: format!(":{n}"),
                };
            }
            if let Ok(Some(_)) = proc.0.try_wait() {
                break; // lost a race for this number: try the next
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free X display for Xvfb");
}

fn tauri_driver() -> PathBuf {
    if let Some(p) = std::env::var_os("PYOCO_TEST_TAURI_DRIVER") {
        return p.into();
    }
    let data =
        pyoco_config::AppDirs::new(std::env::var_os("PYOCO_DATA_DIR").as_deref().map(Path::new))
            .unwrap()
            .data_dir()
            .join("tools/bin/tauri-driver");
    assert!(
        data.exists(),
        "tauri-driver not found at {} — run `bash scripts/setup.sh --with-desktop-tests`",
        data.display()
    );
    data
}

/// The app's environment: its own `.env` and data dir in `dir`, the test tools.
fn app_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "PYOCO_ENV_FILE",
            dir.join("config/.env").display().to_string(),
        ),
        ("PYOCO_DATA_DIR", dir.join("data").display().to_string()),
        (
            "PYOCO_NATS_SERVER_BIN",
            nats_server_bin().display().to_string(),
        ),
        ("PYOCO_PYTHON", python().display().to_string()),
        ("NO_AT_BRIDGE", "1".into()),
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1".into()),
    ]
}

fn write_env(dir: &Path, http_port: u16) -> String {
    let text = format!(
        "# desktop e2e settings — this comment stays\nPYOCO_HTTP_PORT={http_port}\n\
         PYOCO_NATS_CLIENT_PORT=0\nUNKNOWN_KEY=stays # and so does this comment\n\
         PYOCO_TASKS_PATH={}\n",
        dir.join("tasks").display()
    );
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/.env"), &text).unwrap();
    write_task_module(&dir.join("tasks"), "window_tasks", TASKS_PY);
    text
}

/// Live (not zombie) processes whose command line mentions `marker`: what the app started
/// (nats-server's store and the runners live under the test's temp dir).
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie && !cmdline.contains("cargo") {
            found.push(format!("{} {}", name.to_string_lossy(), cmdline.trim()));
        }
    }
    found
}

/// The pid of the app process started with `.env` `env_file`.
fn app_pid(env_file: &str) -> Option<i32> {
    let want = format!("PYOCO_ENV_FILE={env_file}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            if exe != Path::new(APP).canonicalize().ok()? {
                return None;
            }
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|kv| kv == want.as_bytes())
                .then_some(pid)
        })
}

/// Resident memory of `pid` and its children (the WebKit processes), in MiB.
fn rss_mib(pid: i32) -> (f64, f64) {
    let rss = |p: i32| -> f64 {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let children: f64 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pid)
        })
        .map(rss)
        .sum();
    (rss(pid), children)
}

fn wait_gone(marker: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_mentioning(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the app's API answers and its local worker has registered.
async fn wait_worker_registered(http_port: u16, app: &mut Proc) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let workers = http
            .get(format!("http://127.0.0.1:{http_port}/workers"))
            .send()
            .await;
        if let Ok(r) = workers {
            if let Ok(v) = r.json::<Value>().await {
                if v.as_array().is_some_and(|a| !a.is_empty()) {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "the app's stack did not come up");
        assert!(app.0.try_wait().unwrap().is_none(), "the app exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----- the window ----------------------------------------------------------------------------

fn shots_dir() -> PathBuf {
    let dir = workspace_root().join("artifacts/desktop");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Save a screenshot of the window as `artifacts/desktop/<name>`, with `focus` (a CSS
/// selector) scrolled into the middle of the view first.
async fn shot(client: &Client, name: &str, focus: Option<&str>) {
    if let Some(css) = focus {
        client
            .execute(
                "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
                vec![json!(css)],
            )
            .await
            .expect("scroll into view");
    }
    // A screenshot right after a change can show the previous frame.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let png = client.screenshot().await.expect("screenshot");
    let path = shots_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn find(client: &Client, css: &str) -> Element {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(e) => return e,
            Err(e) if Instant::now() >= deadline => panic!("{css} not found: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn text(client: &Client, css: &str) -> String {
    find(client, css).await.text().await.unwrap_or_default()
}

/// Poll until `css`'s text satisfies `ok`; returns it.
async fn wait_text(
    client: &Client,
    css: &str,
    ok: impl Fn(&str) -> bool,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let t = text(client, css).await;
        if ok(&t) {
            return t;
        }
        if Instant::now() >= deadline {
            panic!("{css}: text {t:?} not as expected after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn states(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for id in ["nats", "gateway", "worker"] {
        let state = client
            .find(Locator::Css(&format!("#component-{id}")))
            .await
            .ok();
        let state = match state {
            Some(e) => e
                .attr("data-state")
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
            None => String::new(),
        };
        out.push(state);
    }
    out
}

async fn type_into(client: &Client, css: &str, value: &str) {
    let input = find(client, css).await;
    input.clear().await.unwrap();
    input.send_keys(value).await.unwrap();
}

async fn connect(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("wry"));
    caps.insert("tauri:options".into(), json!({ "application": APP }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() >= deadline => panic!("WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What Python pyoco-server 0.5.1 reads from the `.env` at `path`.
fn python_config(path: &Path) -> Value {
    let mut cmd = Command::new(interop_venv().join("bin/python"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYOCO_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("PYOCO_ENV_FILE", path)
        .args([
            "-c",
            "import dataclasses, json; from pyoco_server.config import NatsBackendConfig; \
             print(json.dumps(dataclasses.asdict(NatsBackendConfig.from_env())))",
        ])
        .output()
        .expect("the interop venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_runs_a_flow_saves_settings_exports_and_quits_clean() {
    pyoco_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display().to_string();
    let http_port = free_port();
    let original_env = write_env(dir.path(), http_port);
    let app_log = dir.path().join("app.log");
    let x = xvfb();
    let (wd_port, native_port) = (free_port(), free_port());
    let mut driver = Command::new(tauri_driver());
    driver
        .args([
            "--port",
            &wd_port.to_string(),
            "--native-port",
            &native_port.to_string(),
        ])
        .env("DISPLAY", &x.display)
        .envs(app_env(dir.path()))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        // The app's own log (it inherits tauri-driver's stderr through WebKitWebDriver).
        .stderr(std::fs::File::create(&app_log).unwrap());
    let _driver = spawn(driver, "tauri-driver");

    let t0 = Instant::now();
    let client = connect(wd_port).await;

    // 1. All three components turn green.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = states(&client).await;
        if s == ["running", "running", "running"] {
            break;
        }
        assert!(
            !s.iter().any(|x| x == "failed"),
            "a component failed: {s:?}: {}",
            text(&client, "body").await
        );
        assert!(
            Instant::now() < deadline,
            "not all running after 90 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_green = t0.elapsed();
    let api = format!("http://127.0.0.1:{http_port}");
    assert_eq!(text(&client, "#url-api").await.trim(), api);
    let pid =
        app_pid(&dir.path().join("config/.env").display().to_string()).expect("the app's pid");
    let (app_rss, webkit_rss) = rss_mib(pid);
    eprintln!(
        "desktop e2e: window session + app start to all green: {:.2} s; RSS app {app_rss:.0} MiB + WebKit {webkit_rss:.0} MiB",
        all_green.as_secs_f64()
    );
    shot(&client, "01-all-running.png", None).await;

    // 2. A flow submitted through the API completes on the app's worker.
    let http = reqwest::Client::new();
    let run_id = submit_yaml(&http, &api, FLOW, "double", "default").await;
    let run = wait_status(
        &http,
        &api,
        &run_id,
        &["COMPLETED", "FAILED"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    shot(&client, "02-flow-completed.png", Some("#logs")).await;

    // 2b. The Runs tab: the gateway's dashboard, framed, lists that run (and nothing in the
    // window needs a browser).
    find(&client, "#nav-runs").await.click().await.unwrap();
    let frame = find(&client, "#dashboard-frame").await;
    let src = frame.attr("src").await.unwrap().unwrap_or_default();
    assert_eq!(src, format!("{api}/?embed=1#/runs"));
    frame.enter_frame().await.expect("into the dashboard frame");
    let row = format!(r#"tr[data-run-id="{run_id}"]"#);
    wait_text(
        &client,
        &format!("{row} td.flow a"),
        |t| t == "double",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        find(&client, &row)
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("COMPLETED")
    );
    client
        .enter_parent_frame()
        .await
        .expect("back to the window");
    shot(&client, "02b-runs-tab.png", None).await;

    // 3. Settings: a bad value is flagged as typed, a good one is saved to the .env.
    find(&client, "#nav-settings").await.click().await.unwrap();
    let port_field = "#field-PYOCO_HTTP_PORT";
    type_into(&client, port_field, "80a").await;
    let err = wait_text(
        &client,
        "#error-PYOCO_HTTP_PORT",
        |t| t.contains("expected a port number"),
        Duration::from_secs(10),
    )
    .await;
    assert!(err.contains("1..65535"), "{err}");
    let save = find(&client, "#save-settings").await;
    assert!(
        save.attr("disabled").await.unwrap().is_some(),
        "save is disabled while a field is invalid"
    );
    shot(
        &client,
        "03-settings-invalid.png",
        Some("#row-PYOCO_HTTP_PORT"),
    )
    .await;
    type_into(&client, port_field, &http_port.to_string()).await;
    wait_text(
        &client,
        "#error-PYOCO_HTTP_PORT",
        str::is_empty,
        Duration::from_secs(10),
    )
    .await;
    type_into(&client, "#field-PYOCO_CONSUMER_MAX_DELIVER", "7").await;
    // Save is enabled once the new values are checked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let save = loop {
        let save = find(&client, "#save-settings").await;
        if save.attr("disabled").await.unwrap().is_none() {
            break save;
        }
        assert!(Instant::now() < deadline, "Save stayed disabled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    save.click().await.unwrap();
    let saved = wait_text(
        &client,
        "#save-result",
        |t| t.contains("Saved"),
        Duration::from_secs(30),
    )
    .await;
    eprintln!("save result: {saved}");
    let env_now = std::fs::read_to_string(dir.path().join("config/.env")).unwrap();
    assert_eq!(
        env_now,
        format!("{original_env}PYOCO_CONSUMER_MAX_DELIVER=7\n"),
        "comments and unknown keys kept"
    );
    shot(
        &client,
        "04-settings-saved.png",
        Some("#row-PYOCO_CONSUMER_MAX_DELIVER"),
    )
    .await;

    // 4. Export for production, loaded by our loader and by Python pyoco-server 0.5.1.
    let export = dir.path().join("production.env");
    type_into(&client, "#export-path", &export.display().to_string()).await;
    find(&client, "#export-button").await.click().await.unwrap();
    let result = wait_text(
        &client,
        "#export-result",
        |t| t.contains("Exported"),
        Duration::from_secs(10),
    )
    .await;
    assert!(result.contains(&export.display().to_string()), "{result}");
    shot(&client, "05-exported.png", Some("#export-result")).await;
    let ours = Settings::load(&LoadOptions {
        env: HashMap::from([("PYOCO_ENV_FILE".into(), export.display().to_string())]),
        cwd: dir.path().to_path_buf(),
        home: None,
    })
    .expect("our loader reads the export");
    assert_eq!(ours.consumer_max_deliver, 7);
    assert_eq!(ours.http_port, http_port);
    assert_eq!(
        ours.nats_client_port, 4222,
        "local-only settings are not exported"
    );
    let py = python_config(&export);
    assert_eq!(py["consumer_max_deliver"], json!(7), "{py}");
    assert_eq!(py["nats_url"], json!(ours.nats_url), "{py}");
    assert_eq!(
        py["workers_kv_ttl_sec"].as_f64(),
        Some(ours.workers_kv_ttl_sec),
        "{py}"
    );
    assert_eq!(
        py["consumer_ack_wait_sec"].as_f64(),
        Some(ours.consumer_ack_wait_sec),
        "{py}"
    );
    assert_eq!(py["dlq_stream"], json!(ours.dlq_stream), "{py}");

    // 4b. Settings → Auth → API keys: create a key, see it once with a copy button, listed.
    type_into(&client, "#api-key-tenant", "demo").await;
    find(&client, "#api-key-create")
        .await
        .click()
        .await
        .unwrap();
    let created = wait_text(
        &client,
        "#api-keys-result",
        |t| t.contains("Created key"),
        Duration::from_secs(15),
    )
    .await;
    let key = find(&client, "#api-key-value")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(key.starts_with("pyoco_"), "{key} / {created}");
    let key_id = created
        .trim()
        .trim_start_matches("Created key ")
        .trim_end_matches('.')
        .to_string();
    assert!(
        key.starts_with(&format!("pyoco_{key_id}.")),
        "{key} / {created}"
    );
    let row = wait_text(
        &client,
        "#api-keys-table tbody",
        |t| t.contains(&key_id),
        Duration::from_secs(10),
    )
    .await;
    assert!(row.contains("demo") && row.contains("active"), "{row}");
    shot(&client, "06-api-key-created.png", Some("#api-keys")).await;

    // 5. Close the window (as the window manager's close button does): the app stops the
    // stack in order and exits; nothing is left.
    assert!(
        !processes_mentioning(&marker).is_empty(),
        "nats-server and runners run"
    );
    // Through Tauri's own window API: the same CloseRequested a window manager's close sends.
    // The window may be gone before WebDriver reads the script's result ("Could not parse
    // script result"): what counts is checked below (everything stopped, the app exited).
    if let Err(err) = client
        .execute("window.__TAURI__.window.getCurrentWindow().close()", vec![])
        .await
    {
        eprintln!("close the window: {err} (the window closed before answering)");
    }
    let left = wait_gone(&marker, Duration::from_secs(30));
    assert!(
        left.is_empty(),
        "left behind after closing the window: {left:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/exe")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !Path::new(&format!("/proc/{pid}/exe")).exists(),
        "the app exited"
    );
    let log = std::fs::read_to_string(&app_log).unwrap();
    assert!(
        log.contains("stopping the stack"),
        "a graceful stop, not a kill:\n{log}"
    );
    assert!(log.contains("stopped; bye"), "{log}");
    let _ = client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_app_leaves_no_nats_server_or_runner() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display().to_string();
    let http_port = free_port();
    write_env(dir.path(), http_port);
    let x = xvfb();
    let mut cmd = Command::new(APP);
    cmd.env("DISPLAY", &x.display)
        .envs(app_env(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut app = spawn(cmd, "the desktop app");
    wait_worker_registered(http_port, &mut app).await;
    eprintln!(
        "desktop: app start to API + worker registered: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let before = processes_mentioning(&marker);
    assert!(
        before.iter().any(|p| p.contains("nats-server")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|p| p.contains("pyoco_runner")),
        "{before:?}"
    );
    let (app_rss, webkit_rss) = rss_mib(app.0.id() as i32);
    eprintln!("desktop: RSS app {app_rss:.0} MiB + WebKit {webkit_rss:.0} MiB");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = app.0.wait();
    let left = wait_gone(&marker, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind after kill -9: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_stack_in_order_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display().to_string();
    let http_port = free_port();
    write_env(dir.path(), http_port);
    let x = xvfb();
    let log_path = dir.path().join("app.log");
    let mut cmd = Command::new(APP);
    cmd.env("DISPLAY", &x.display)
        .envs(app_env(dir.path()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut app = spawn(cmd, "the desktop app");
    wait_worker_registered(http_port, &mut app).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = app.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the app did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    // In order: the worker, then NATS, then the app says goodbye.
    let at = |s: &str| {
        log.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in the log:\n{log}"))
    };
    assert!(at("SIGTERM received") < at("worker stopped"));
    assert!(at("worker stopped") < at("nats-server stopped"));
    assert!(at("nats-server stopped") < at("stopped; bye"));
    assert!(processes_mentioning(&marker).is_empty());
}
