//! Issue 6's "done when": a user uploads a task wheel from the CLI, and a flow that uses it runs
//! on the appliance's local worker without any restart by hand — with wheel sync on because the
//! appliance turns it on by default, not because the test set `PYOCO_WHEEL_SYNC_ENABLED`.
//!
//! The appliance is started in-process the way the desktop app starts it (managed nats-server
//! on a free port with its store in a temporary data dir, gateway, local worker whose
//! configuration the appliance derives from the settings itself); the wheel is uploaded with
//! the built `pyoco-client wheel-upload`. The local worker's interpreter is a throwaway venv
//! on top of the test venv, so the package it installs leaves no trace.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pyoco_appliance::{Appliance, ApplianceOptions};
use pyoco_config::{LoadOptions, Settings, Source};
use pyoco_testkit::{
    eventually, nats_server_bin, python, status_json, submit_yaml, task_wheel_name, upload_wheel,
    wait_status, workspace_binary, write_task_wheel, ThrowawayVenv,
};
use pyoco_worker::MANIFEST_FILE_NAME;
use serde_json::{json, Value};

use crate::{RUN_TIMEOUT, TERMINAL};

/// The module (and distribution) the test's wheels contain.
const MODULE: &str = "pyoco_e2e_appliance_tasks";

/// The local worker's id.
const WORKER_ID: &str = "wheel-appliance";

/// How long a sync may take to show up (interval 1 s; pip and a runner restart on a busy
/// 2-core machine included).
const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// The task module of version `version`: `greet` says which version it comes from.
fn tasks_source(version: &str) -> String {
    format!(
        r#""""Tasks shipped as a wheel by the end-to-end test."""

VERSION = "{version}"


def greet(name="world"):
    return "hello " + str(name) + " from " + VERSION
"#
    )
}

/// A one-task flow calling the wheel's `greet`.
fn flow() -> String {
    format!(
        "version: 1\nflow:\n  graph: |\n    greet\n  defaults:\n    name: wheels\n\
         tasks:\n  greet:\n    callable: {MODULE}:greet\n"
    )
}

/// Settings of a fresh install (no `.env`) in `dir`: managed NATS on any free port, the test
/// venv's nats-server, the throwaway venv's Python, a 1 s sync interval — and nothing about
/// `PYOCO_WHEEL_SYNC_ENABLED`.
fn settings(dir: &Path, python: &Path) -> Settings {
    let env = HashMap::from([
        ("PYOCO_LOAD_DOTENV".to_string(), "0".to_string()),
        (
            "PYOCO_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        ),
        ("PYOCO_NATS_CLIENT_PORT".to_string(), "0".to_string()),
        (
            "PYOCO_NATS_SERVER_BIN".to_string(),
            nats_server_bin().display().to_string(),
        ),
        ("PYOCO_PYTHON".to_string(), python.display().to_string()),
        ("PYOCO_WORKER_ID".to_string(), WORKER_ID.to_string()),
        ("PYOCO_WHEEL_SYNC_INTERVAL_SEC".to_string(), "1".to_string()),
    ]);
    Settings::load(&LoadOptions {
        env,
        cwd: dir.to_path_buf(),
        home: None,
    })
    .expect("test settings load")
}

/// Upload `path` with the built `pyoco-client wheel-upload` (strict preflight, as a user runs
/// it); returns its JSON answer. Without a built binary (only this package's tests were
/// built), the same multipart request is sent directly and a warning says so.
async fn cli_upload(base_url: &str, path: &Path, bytes: &[u8]) -> Value {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let Some(client) = workspace_binary("pyoco-client") else {
        eprintln!(
            "\n*** WARNING: no pyoco-client binary under the target dir (run `cargo build -p \
             pyoco-cli`): uploading {name} with a direct POST /wheels instead ***\n"
        );
        let (status, body) = upload_wheel(
            &reqwest::Client::new(),
            base_url,
            &name,
            bytes.to_vec(),
            &[],
        )
        .await;
        assert_eq!(status, 200, "POST /wheels {name}: {body}");
        return body;
    };
    let output = tokio::process::Command::new(&client)
        .args(["--server", base_url, "wheel-upload", "--wheel-file"])
        .arg(path)
        .env_remove("PYOCO_SERVER_URL")
        .env_remove("PYOCO_API_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", client.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pyoco-client wheel-upload {name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("pyoco-client wheel-upload printed no JSON ({e}): {stdout}"))
}

/// The local worker's manifest (§2.8), `None` while it does not exist or does not parse.
fn manifest(sync_dir: &Path) -> Option<Value> {
    let bytes = std::fs::read(sync_dir.join(MANIFEST_FILE_NAME)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Wait until the manifest lists exactly `wheel` (at `version`); returns the time it took
/// from `since`.
async fn wait_installed(sync_dir: &Path, wheel: &str, version: &str, since: Instant) -> Duration {
    eventually(
        SYNC_TIMEOUT,
        &format!("{wheel} alone in {}", sync_dir.display()),
        || async {
            let m = manifest(sync_dir)?;
            let entries = m.as_object()?;
            (entries.len() == 1 && entries.get(wheel)?["package_version"] == version)
                .then(|| since.elapsed())
        },
    )
    .await
}

/// The local worker's registry record as our gateway lists it.
async fn worker_record(http: &reqwest::Client, base_url: &str) -> Option<Value> {
    let response = http
        .get(format!("{base_url}/workers?scope=all"))
        .send()
        .await
        .ok()?;
    let (status, body) = status_json(response).await;
    if status != 200 {
        return None;
    }
    body.as_array()?
        .iter()
        .find(|w| w["worker_id"] == WORKER_ID)
        .cloned()
}

/// Submit the flow, wait for the end, and return (status, greet's output, time taken).
async fn run_greet(http: &reqwest::Client, base_url: &str) -> (Value, Value, Duration) {
    let started = Instant::now();
    let run_id = submit_yaml(http, base_url, &flow(), "wheel-greet", "default").await;
    let run = wait_status(http, base_url, &run_id, TERMINAL, RUN_TIMEOUT).await;
    let took = started.elapsed();
    let full: Value = http
        .get(format!("{base_url}/runs/{run_id}?include=records"))
        .send()
        .await
        .expect("GET run with records")
        .json()
        .await
        .expect("JSON");
    let record = full["task_records"]["greet"].clone();
    assert_eq!(run["worker_id"], WORKER_ID, "{run}");
    (run, record, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_wheel_runs_on_the_appliances_local_worker_without_a_restart() {
    let venv = ThrowawayVenv::on_top_of(&python());
    let tmp = tempfile::Builder::new()
        .prefix("pyoco-e2e-wheels-")
        .tempdir()
        .unwrap();
    let settings = settings(tmp.path(), venv.python());
    assert_eq!(
        settings.source("PYOCO_WHEEL_SYNC_ENABLED"),
        Some(&Source::Default),
        "the test must not set PYOCO_WHEEL_SYNC_ENABLED: the appliance's default is under test"
    );
    assert!(!settings.wheel_sync_enabled, "0.5.1's default stays off");
    // The appliance keeps synced wheels under its data dir.
    let sync_dir: PathBuf = tmp.path().join("data").join("wheels");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gateway");
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let appliance = Appliance::start(ApplianceOptions {
        http_listener: Some(listener),
        ..ApplianceOptions::all_in_one(settings)
    })
    .await
    .expect("the appliance starts");
    let nats_url = appliance.status().borrow().nats_url.clone();
    assert!(
        !nats_url.ends_with(":4222"),
        "a managed nats-server on a free port, not the machine's: {nats_url}"
    );
    let http = reqwest::Client::new();

    // Sync is on without being asked for: the worker reports it and its first (empty) sync
    // (`idle` = enabled but not attempted yet; `disabled` = off).
    let record = eventually(
        Duration::from_secs(60),
        "the local worker's registry record after its first wheel sync",
        || async {
            let record = worker_record(&http, &base_url).await?;
            (record["wheel_sync"]["last_result"] != "idle").then_some(record)
        },
    )
    .await;
    assert_eq!(record["wheel_sync"]["enabled"], true, "{record}");
    assert_eq!(record["wheel_sync"]["last_result"], "ok", "{record}");
    assert_eq!(record["wheel_sync"]["installed_wheels"], json!([]));
    assert!(sync_dir.is_dir(), "sync dir {}", sync_dir.display());

    // 1. Upload 0.1.0 from the CLI; a flow using it then runs.
    let v1 = task_wheel_name(MODULE, "0.1.0");
    let (path, bytes) = write_task_wheel(
        &tmp.path().join("dist"),
        MODULE,
        "0.1.0",
        &tasks_source("0.1.0"),
    );
    let upload_started = Instant::now();
    let uploaded = cli_upload(&base_url, &path, &bytes).await;
    let upload_took = upload_started.elapsed();
    assert_eq!(uploaded["name"], v1, "{uploaded}");
    assert_eq!(uploaded["size_bytes"], bytes.len(), "{uploaded}");
    let installed_v1 = wait_installed(&sync_dir, &v1, "0.1.0", upload_started).await;
    assert_eq!(
        std::fs::read(sync_dir.join(&v1)).expect("the synced wheel file"),
        bytes,
        "the worker keeps the uploaded bytes"
    );
    let (run, record, run_took) = run_greet(&http, &base_url).await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{record}");
    assert_eq!(record["output"], "hello wheels from 0.1.0", "{record}");
    let first_run_v1 = upload_started.elapsed();
    eprintln!(
        "wheel sync latency (appliance, interval 1 s), 0.1.0: CLI upload {upload_took:.2?}; \
         upload start → installed (manifest) {installed_v1:.2?}; run {run_took:.2?}; upload \
         start → first run with the new code COMPLETED {first_run_v1:.2?}"
    );

    // 2. Upload 0.2.0: the warm runners, which imported 0.1.0, are restarted by the worker;
    //    the next run gets the new code.
    let v2 = task_wheel_name(MODULE, "0.2.0");
    let (path, bytes) = write_task_wheel(
        &tmp.path().join("dist"),
        MODULE,
        "0.2.0",
        &tasks_source("0.2.0"),
    );
    let upload_started = Instant::now();
    let uploaded = cli_upload(&base_url, &path, &bytes).await;
    let upload_took = upload_started.elapsed();
    assert_eq!(uploaded["name"], v2, "{uploaded}");
    let installed_v2 = wait_installed(&sync_dir, &v2, "0.2.0", upload_started).await;
    assert!(
        !sync_dir.join(&v1).exists(),
        "the 0.1.0 file left the sync dir"
    );
    let (run, record, run_took) = run_greet(&http, &base_url).await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{record}");
    assert_eq!(
        record["output"], "hello wheels from 0.2.0",
        "the runners were restarted with the new code: {record}"
    );
    let first_run_v2 = upload_started.elapsed();
    eprintln!(
        "wheel sync latency (appliance, interval 1 s), 0.2.0 over 0.1.0: CLI upload \
         {upload_took:.2?}; upload start → installed (manifest) {installed_v2:.2?}; run \
         {run_took:.2?}; upload start → first run with the new code COMPLETED {first_run_v2:.2?}"
    );

    // What was installed went into the local worker's interpreter, and the registry says so.
    assert_eq!(
        venv.run(&format!("import {MODULE}; print({MODULE}.VERSION)"))
            .as_deref(),
        Some("0.2.0")
    );
    let record = eventually(
        Duration::from_secs(30),
        "0.2.0 in the worker's registry record",
        || async {
            let record = worker_record(&http, &base_url).await?;
            let installed = record["wheel_sync"]["installed_wheels"].as_array()?;
            (installed.len() == 1 && installed[0]["wheel_name"] == v2.as_str()).then_some(record)
        },
    )
    .await;
    assert_eq!(record["wheel_sync"]["enabled"], true, "{record}");
    assert_eq!(
        record["wheel_sync"]["installed_wheels"][0]["package_version"],
        "0.2.0"
    );

    appliance.stop().await;
}
