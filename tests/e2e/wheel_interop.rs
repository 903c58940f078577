//! Wheel registry interop (contract §1.4, §2.8, §6.10): a wheel uploaded through our gateway is
//! synced by the real Python pyoco-server 0.5.1 worker (`pyoco-worker --tags cpu --wheel-sync`),
//! which installs it and runs a flow with its task.
//!
//! The Python worker runs on a throwaway venv on top of the interop venv: 0.5.1 installs with
//! `sys.executable -m pip`, so the package lands in the throwaway venv and the shared interop
//! venv stays clean (a stale install there could make a later run pass without any sync).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use pyoco_testkit::{
    interop_bin, python_worker_with_python, task_wheel, task_wheel_name, upload_wheel, AppOptions,
    PyocoProcess, TestApp, ThrowawayVenv,
};
use serde_json::{json, Value};

use crate::{RUN_TIMEOUT, TERMINAL};

/// Tagged `cpu`: the Python worker (tags `cpu`) installs it.
const CPU_MODULE: &str = "pyoco_e2e_interop_cpu_tasks";
/// Tagged `gpu`: the Python worker must leave it alone.
const GPU_MODULE: &str = "pyoco_e2e_interop_gpu_tasks";

const WORKER_ID: &str = "py-wheels";

/// How long the Python worker may take to sync (interval 1 s; pip on a busy machine).
const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

fn tasks_source(version: &str) -> String {
    format!(
        r#""""Tasks shipped as a wheel by the interop test."""

VERSION = "{version}"


def greet(name="world"):
    return "hello " + str(name) + " from " + VERSION
"#
    )
}

fn flow() -> String {
    format!(
        "version: 1\nflow:\n  graph: |\n    greet\n  defaults:\n    name: python\n\
         tasks:\n  greet:\n    callable: {CPU_MODULE}:greet\n"
    )
}

/// PEP 503 normalisation, what 0.5.1 (`packaging.utils.parse_wheel_filename`) records as
/// `package_name`.
fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The Python worker's manifest (§2.8), `None` while missing or unparsable.
fn manifest(sync_dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(sync_dir.join(".installed.json")).ok()?).ok()
}

/// Poll the Python worker's manifest until `done` accepts it (panics with the worker's log
/// when the worker exits or `SYNC_TIMEOUT` passes).
async fn wait_manifest(
    py: &mut PyocoProcess,
    sync_dir: &Path,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        py.assert_running();
        if let Some(m) = manifest(sync_dir).filter(|m| done(m)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "the Python worker's manifest never showed {what}; manifest: {:?}\nworker log:\n{}",
            manifest(sync_dir),
            py.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Upload through our gateway; returns its answer (asserting 200).
async fn upload(app: &TestApp, module: &str, version: &str, tags: &[&str]) -> (Value, Vec<u8>) {
    let name = task_wheel_name(module, version);
    let bytes = task_wheel(module, version, &tasks_source(version));
    let (status, body) = upload_wheel(app.http(), app.base_url(), &name, bytes.clone(), tags).await;
    assert_eq!(status, 200, "POST /wheels {name}: {body}");
    assert_eq!(body["name"], name.as_str(), "{body}");
    assert_eq!(body["tags"], json!(tags), "{body}");
    (body, bytes)
}

/// Run the flow on tag `cpu` and return (run, greet's task record).
async fn run_greet(app: &TestApp) -> (Value, Value) {
    let run_id = app.submit_yaml(&flow(), "wheel-greet", "cpu").await;
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;
    let full = app.run_with_records(&run_id).await;
    (run, full["task_records"]["greet"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_0_5_1_worker_syncs_a_wheel_uploaded_through_our_gateway() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    let cpu_v1 = task_wheel_name(CPU_MODULE, "0.1.0");
    let gpu_v1 = task_wheel_name(GPU_MODULE, "0.1.0");
    let (cpu_answer, cpu_bytes) = upload(&app, CPU_MODULE, "0.1.0", &["cpu"]).await;
    upload(&app, GPU_MODULE, "0.1.0", &["gpu"]).await;
    // The nuid our gateway reports is the one the Python worker records (change detection).
    let cpu_nuid = cpu_answer["nuid"].as_str().expect("nuid").to_string();

    let venv = ThrowawayVenv::on_top_of(&interop_bin("python"));
    let sync_dir = app.path("py-sync");
    let sync_dir_arg = sync_dir.display().to_string();
    let started = Instant::now();
    let mut py = python_worker_with_python(
        venv.python(),
        "py-wheel-worker",
        &app.nats_url(),
        &[
            "--tags",
            "cpu",
            "--worker-id",
            WORKER_ID,
            "--wheel-sync",
            "--wheel-sync-dir",
            &sync_dir_arg,
            "--wheel-sync-interval-sec",
            "1",
        ],
        &app.path("py-worker"),
    );

    // 1. It downloads and installs the `cpu` wheel (its startup sync), not the `gpu` one.
    let m = wait_manifest(&mut py, &sync_dir, &cpu_v1, |m| m.get(&cpu_v1).is_some()).await;
    eprintln!(
        "Python 0.5.1 worker: start → {cpu_v1} installed (manifest) in {:.2?}",
        started.elapsed()
    );
    let entry = &m[&cpu_v1];
    assert_eq!(
        m.as_object().unwrap().len(),
        1,
        "only the cpu wheel is for a cpu worker: {m}"
    );
    assert_eq!(entry["nuid"], cpu_nuid.as_str(), "{entry}");
    assert_eq!(entry["package_name"], canonical(CPU_MODULE), "{entry}");
    assert_eq!(entry["package_version"], "0.1.0", "{entry}");
    assert_eq!(entry["size_bytes"], cpu_bytes.len(), "{entry}");
    assert_eq!(entry["sha256_hex"], cpu_answer["sha256_hex"], "{entry}");
    assert_eq!(
        entry["tags"],
        json!(["cpu"]),
        "our tags header, read by 0.5.1"
    );
    assert!(entry["installed_at"].is_f64(), "{entry}");
    assert_eq!(
        std::fs::read(sync_dir.join(&cpu_v1)).expect("the synced wheel file"),
        cpu_bytes,
        "the Python worker downloaded the bytes we stored"
    );
    assert!(
        !sync_dir.join(&gpu_v1).exists(),
        "the gpu wheel was skipped"
    );
    assert_eq!(
        venv.run(&format!("import {CPU_MODULE}; print({CPU_MODULE}.VERSION)"))
            .as_deref(),
        Some("0.1.0"),
        "pip installed it into the worker's interpreter"
    );
    assert_eq!(venv.run(&format!("import {GPU_MODULE}")), None);

    // Our gateway lists the Python worker's sync report (§2.4).
    let record = app.wait_worker_registered(WORKER_ID).await;
    assert_eq!(record["tags"], json!(["cpu"]), "{record}");
    let (status, workers) = app.get_json("/workers?scope=all").await;
    assert_eq!(status, 200, "{workers}");
    let ours = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == WORKER_ID)
        .unwrap_or_else(|| panic!("{WORKER_ID} in {workers}"));
    let ws = &ours["wheel_sync"];
    assert_eq!(ws["enabled"], true, "{ws}");
    assert_eq!(ws["last_result"], "ok", "{ws}");
    assert_eq!(ws["selected_wheels"], json!([cpu_v1]), "{ws}");
    assert_eq!(ws["installed_wheels"][0]["wheel_name"], cpu_v1.as_str());
    assert_eq!(ws["installed_wheels"][0]["nuid"], cpu_nuid.as_str());

    // 2. A flow using the wheel's task runs on the Python worker.
    let (run, record) = run_greet(&app).await;
    py.assert_running();
    assert_eq!(run["status"], "COMPLETED", "{run}\n{record}\n{}", py.log());
    assert_eq!(record["output"], "hello python from 0.1.0", "{record}");

    // 3. A new version uploaded through our gateway replaces the old one in the Python
    //    worker's sync dir and interpreter.
    let cpu_v2 = task_wheel_name(CPU_MODULE, "0.2.0");
    let upload_started = Instant::now();
    let (cpu2_answer, cpu2_bytes) = upload(&app, CPU_MODULE, "0.2.0", &["cpu"]).await;
    let m = wait_manifest(&mut py, &sync_dir, &cpu_v2, |m| {
        m.get(&cpu_v2).is_some() && m.get(&cpu_v1).is_none()
    })
    .await;
    eprintln!(
        "Python 0.5.1 worker (interval 1 s): upload start → {cpu_v2} installed (manifest) in \
         {:.2?}",
        upload_started.elapsed()
    );
    assert_eq!(m[&cpu_v2]["nuid"], cpu2_answer["nuid"], "{m}");
    assert_eq!(
        std::fs::read(sync_dir.join(&cpu_v2)).expect("the synced wheel file"),
        cpu2_bytes
    );
    assert!(
        !sync_dir.join(&cpu_v1).exists(),
        "0.5.1 removes the stale file"
    );
    assert_eq!(
        venv.run(&format!("import {CPU_MODULE}; print({CPU_MODULE}.VERSION)"))
            .as_deref(),
        Some("0.2.0")
    );
    // 0.5.1 runs tasks in the worker process itself and never reloads a module an earlier run
    // imported (contract §6.10 [quirk]): until that worker restarts, its runs still get the
    // 0.1.0 code although 0.2.0 is installed. Ours restarts its runners instead (see
    // wheel_appliance.rs). Asserted so that this note is checked, not just claimed.
    let (run, record) = run_greet(&app).await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{record}\n{}", py.log());
    assert_eq!(record["output"], "hello python from 0.1.0", "{record}");

    // The interop venv itself was never touched.
    let out = std::process::Command::new(interop_bin("python"))
        .args(["-c", &format!("import {CPU_MODULE}")])
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{CPU_MODULE} must not be importable from the interop venv"
    );
}
