//! Wheel sync (§6.10) end to end: a real nats-server, wheels built here and uploaded through
//! the registry, real `pip` installing into a throwaway venv per test, real pyoco runs.
//!
//! The throwaway venv is created from the test interpreter's base Python without pip; a
//! `.pth` file adds the test venv's site-packages (pyoco, pip) after its own, so the runners
//! import pyoco and `python -m pip` works, while everything pip installs lands in the
//! throwaway venv and disappears with the test.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::Harness;
use pyoco_store::StoreConfig;
use pyoco_testkit::{eventually, task_wheel, task_wheel_name, ThrowawayVenv};
use pyoco_wire::{wheel_manifest_from_json, RunStatus, WheelManifest};
use pyoco_worker::{RunnerPool, RunnerSpec, WorkerConfig, MANIFEST_FILE_NAME};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// A throwaway venv

/// A throwaway venv over the test venv (see [`ThrowawayVenv`]): the syncing worker pip-installs
/// into it, and it disappears with the test.
struct Venv(ThrowawayVenv);

impl Venv {
    fn new() -> Venv {
        Venv(ThrowawayVenv::on_top_of(&pyoco_testkit::python()))
    }

    /// The `VERSION` of an installed demo package, `None` when it does not import.
    fn imported_version(&self, module: &str) -> Option<String> {
        self.0
            .run(&format!("import {module}; print({module}.VERSION)"))
    }
}

// ---------------------------------------------------------------------------------------------
// Wheels built here

/// A pure-Python wheel of `module` (distribution name = module name) version `version`, with
/// `hello()` and `nap(seconds)` tasks that report the version they come from.
fn demo_wheel(module: &str, version: &str) -> Vec<u8> {
    let code = format!(
        r#"import time

VERSION = "{version}"

def hello(name="world"):
    return "hello " + str(name) + " from " + VERSION

def nap(seconds=1.0):
    time.sleep(float(seconds))
    return "napped in " + VERSION
"#
    );
    task_wheel(module, version, &code)
}

async fn upload(h: &Harness, name: &str, tags: &[&str], bytes: Vec<u8>) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    h.store
        .wheels()
        .upload(name, None, &tags, bytes.as_slice())
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// The worker

fn sync_dir(h: &Harness) -> PathBuf {
    h.dir.path().join("synced-wheels")
}

/// Start the harness worker with sync on (interval `interval`), the venv's python and `tags`.
async fn start_syncing_worker(h: &mut Harness, venv: &Venv, tags: &[&str], interval: Duration) {
    start_syncing_worker_with(h, venv, tags, interval, |_| {}).await;
}

async fn start_syncing_worker_with(
    h: &mut Harness,
    venv: &Venv,
    tags: &[&str],
    interval: Duration,
    adjust: impl FnOnce(&mut WorkerConfig),
) {
    let dir = sync_dir(h);
    let python = venv.0.python().to_path_buf();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    h.start_worker(move |cfg: &mut WorkerConfig| {
        cfg.python = python;
        cfg.tags = tags;
        cfg.wheel_sync.enabled = true;
        cfg.wheel_sync.dir = dir;
        cfg.wheel_sync.interval = interval;
        cfg.wheel_sync.install_timeout = Duration::from_secs(60);
        adjust(cfg);
    })
    .await;
}

/// A worker with two runners and demo 0.1.0 installed; a 5 s nap running on one runner and
/// 0.2.0 uploaded meanwhile. Returns the nap's run id.
async fn two_runners_napping_while_0_2_0_arrives(
    h: &mut Harness,
    venv: &Venv,
    max_pause: Duration,
) -> String {
    let v1 = task_wheel_name("pyoco_demo_tasks", "0.1.0");
    upload(h, &v1, &[], demo_wheel("pyoco_demo_tasks", "0.1.0")).await;
    start_syncing_worker_with(h, venv, &["default"], Duration::from_millis(300), |cfg| {
        cfg.concurrency = 2;
        cfg.wheel_sync.max_pause = max_pause;
    })
    .await;
    wait_wheel_sync(h, "0.1.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [v1.clone()]
    })
    .await;
    let nap = h
        .submit_yaml(&one_task("pyoco_demo_tasks:nap", "{seconds: 5}"), json!({}))
        .await;
    h.wait_for(&nap, T, "the nap running", |s| {
        s.status == RunStatus::Running
    })
    .await;
    let v2 = task_wheel_name("pyoco_demo_tasks", "0.2.0");
    upload(h, &v2, &[], demo_wheel("pyoco_demo_tasks", "0.2.0")).await;
    // A check notices it and the install is due.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    nap
}

async fn wheel_sync(h: &Harness) -> Value {
    h.worker_record("test-worker")
        .await
        .map(|r| r["wheel_sync"].clone())
        .unwrap_or(Value::Null)
}

/// Wait until the worker record's `wheel_sync` satisfies `pred`.
async fn wait_wheel_sync(h: &Harness, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    eventually(T, what, || async move {
        let ws = wheel_sync(h).await;
        pred(&ws).then_some(ws)
    })
    .await
}

fn manifest(h: &Harness) -> WheelManifest {
    std::fs::read(sync_dir(h).join(MANIFEST_FILE_NAME))
        .map(|b| wheel_manifest_from_json(&b))
        .unwrap_or_default()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| i["wheel_name"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn one_task(callable: &str, defaults: &str) -> String {
    let mut y = "version: 1\nflow:\n  graph: |\n    t1\n".to_string();
    if !defaults.is_empty() {
        y.push_str(&format!("  defaults: {defaults}\n"));
    }
    y.push_str(&format!("tasks:\n  t1:\n    callable: {callable}\n"));
    y
}

/// Run `callable` on `tag` and return the task's output.
async fn run_task(h: &Harness, tag: &str, callable: &str) -> Value {
    let run_id = h
        .submit_yaml_to(tag, &one_task(callable, ""), json!({}))
        .await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    s.task_records["t1"].output.clone()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_worker_installs_the_cpu_wheel_not_the_gpu_one_and_a_flow_uses_it() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let cpu = task_wheel_name("pyoco_demo_tasks", "0.1.0");
    let gpu = task_wheel_name("pyoco_gpu_tasks", "0.1.0");
    let everywhere = task_wheel_name("pyoco_common_tasks", "1.0.0");
    // A newer version the interpreter cannot install: reported, and 0.1.0 stays the choice.
    let windows_only = "pyoco_demo_tasks-0.3.0-py3-none-win_amd64.whl";
    upload(&h, &cpu, &["cpu"], demo_wheel("pyoco_demo_tasks", "0.1.0")).await;
    upload(&h, &gpu, &["gpu"], demo_wheel("pyoco_gpu_tasks", "0.1.0")).await;
    upload(
        &h,
        &everywhere,
        &[],
        demo_wheel("pyoco_common_tasks", "1.0.0"),
    )
    .await;
    upload(
        &h,
        windows_only,
        &["cpu"],
        demo_wheel("pyoco_demo_tasks", "0.3.0"),
    )
    .await;

    start_syncing_worker(&mut h, &venv, &["cpu"], Duration::from_secs(10)).await;
    let ws = wait_wheel_sync(&h, "the first sync", |ws| ws["last_result"] == "ok").await;

    assert_eq!(ws["enabled"], json!(true));
    assert_eq!(ws["last_error"], Value::Null);
    assert_eq!(
        names(&ws["selected_wheels"]),
        vec![everywhere.clone(), cpu.clone()]
    );
    assert_eq!(
        names(&ws["updated_wheels"]),
        vec![everywhere.clone(), cpu.clone()]
    );
    assert_eq!(ws["selected_count"], json!(2));
    assert_eq!(ws["skipped_incompatible_count"], json!(1));
    assert_eq!(
        ws["skipped_incompatible"],
        json!([{
            "wheel_name": windows_only,
            "package_name": "pyoco-demo-tasks",
            "package_version": "0.3.0",
            "reason": "unsupported_wheel_tags",
        }])
    );
    assert_eq!(
        names(&ws["installed_wheels"]),
        vec![everywhere.clone(), cpu.clone()]
    );
    assert!(ws["last_success_at"].as_f64().is_some());

    let m = manifest(&h);
    assert_eq!(
        m.keys().cloned().collect::<Vec<_>>(),
        vec![everywhere.clone(), cpu.clone()]
    );
    assert_eq!(m[&cpu].package_name, "pyoco-demo-tasks");
    assert_eq!(m[&cpu].package_version, "0.1.0");
    assert_eq!(m[&cpu].tags, vec!["cpu".to_string()]);
    assert_eq!(m[&cpu].sha256_hex.len(), 64);
    let info = h.store.wheels().info(&cpu).await.unwrap().unwrap();
    assert_eq!(m[&cpu].nuid, info.nuid);
    assert_eq!(m[&cpu].size_bytes, info.size);
    assert!(sync_dir(&h).join(&cpu).is_file());
    assert!(!sync_dir(&h).join(&gpu).exists());

    assert_eq!(
        venv.imported_version("pyoco_demo_tasks").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(
        venv.imported_version("pyoco_common_tasks").as_deref(),
        Some("1.0.0")
    );
    assert_eq!(venv.imported_version("pyoco_gpu_tasks"), None);

    assert_eq!(
        run_task(&h, "cpu", "pyoco_demo_tasks:hello").await,
        json!("hello world from 0.1.0")
    );
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_uploaded_during_a_run_is_installed_only_after_it_and_the_next_run_sees_it() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let v1 = task_wheel_name("pyoco_demo_tasks", "0.1.0");
    let v2 = task_wheel_name("pyoco_demo_tasks", "0.2.0");
    upload(&h, &v1, &[], demo_wheel("pyoco_demo_tasks", "0.1.0")).await;
    start_syncing_worker(&mut h, &venv, &["default"], Duration::from_millis(300)).await;
    wait_wheel_sync(&h, "0.1.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [v1.clone()]
    })
    .await;
    assert_eq!(
        run_task(&h, "default", "pyoco_demo_tasks:hello").await,
        json!("hello world from 0.1.0")
    );

    let run_id = h
        .submit_yaml_to(
            "default",
            &one_task("pyoco_demo_tasks:nap", "{seconds: 3}"),
            json!({}),
        )
        .await;
    h.wait_for(&run_id, T, "the nap running", |s| {
        s.status == RunStatus::Running
    })
    .await;
    upload(&h, &v2, &[], demo_wheel("pyoco_demo_tasks", "0.2.0")).await;
    // Several sync intervals pass during the run: nothing may change under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        manifest(&h).keys().cloned().collect::<Vec<_>>(),
        vec![v1.clone()]
    );
    assert_eq!(
        venv.imported_version("pyoco_demo_tasks").as_deref(),
        Some("0.1.0")
    );

    let done = h.wait_terminal(&run_id, T).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.task_records["t1"].output, json!("napped in 0.1.0"));
    let ws = wait_wheel_sync(&h, "0.2.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [v2.clone()]
    })
    .await;
    assert_eq!(names(&ws["updated_wheels"]), vec![v2.clone()]);
    assert_eq!(names(&ws["removed_wheels"]), vec![v1.clone()]);
    let m = manifest(&h);
    let end = done.end_time.expect("end_time");
    assert!(
        m[&v2].installed_at > end,
        "installed at {} before the run ended at {end}",
        m[&v2].installed_at
    );
    assert!(!sync_dir(&h).join(&v1).exists());
    assert_eq!(
        venv.imported_version("pyoco_demo_tasks").as_deref(),
        Some("0.2.0")
    );
    // The warm runner that had imported 0.1.0 was restarted.
    assert_eq!(
        run_task(&h, "default", "pyoco_demo_tasks:hello").await,
        json!("hello world from 0.2.0")
    );
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_runners_a_due_install_holds_new_jobs_until_the_running_one_ends() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let nap = two_runners_napping_while_0_2_0_arrives(&mut h, &venv, Duration::from_secs(60)).await;

    // The second runner is idle, but fetching is paused for the install.
    let hello = h
        .submit_yaml(&one_task("pyoco_demo_tasks:hello", ""), json!({}))
        .await;
    let hello = h.wait_terminal(&hello, T).await;
    let nap = h.wait_terminal(&nap, T).await;
    assert_eq!(nap.task_records["t1"].output, json!("napped in 0.1.0"));
    assert_eq!(hello.status, RunStatus::Completed, "{hello:?}");
    assert!(
        hello.start_time >= nap.end_time,
        "hello started at {:?}, before the nap ended at {:?}",
        hello.start_time,
        nap.end_time
    );
    assert_eq!(
        hello.task_records["t1"].output,
        json!("hello world from 0.2.0")
    );
    let v2 = task_wheel_name("pyoco_demo_tasks", "0.2.0");
    assert!(manifest(&h)[&v2].installed_at > nap.end_time.unwrap());
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pause_for_an_install_is_bounded_while_runners_sit_idle() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let nap =
        two_runners_napping_while_0_2_0_arrives(&mut h, &venv, Duration::from_millis(500)).await;

    // The pause gave up: the idle runner takes the job, still on the old code.
    let hello = h
        .submit_yaml(&one_task("pyoco_demo_tasks:hello", ""), json!({}))
        .await;
    let hello = h.wait_terminal(&hello, T).await;
    assert_eq!(hello.status, RunStatus::Completed, "{hello:?}");
    assert_eq!(
        hello.task_records["t1"].output,
        json!("hello world from 0.1.0")
    );
    let nap = h.wait_terminal(&nap, T).await;
    assert!(hello.end_time < nap.end_time, "hello waited for the nap");
    // The install comes once no run is left.
    let v2 = task_wheel_name("pyoco_demo_tasks", "0.2.0");
    wait_wheel_sync(&h, "0.2.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [v2.clone()]
    })
    .await;
    assert!(manifest(&h)[&v2].installed_at > nap.end_time.unwrap());
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_every_wheel_of_a_package_uninstalls_it() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let v1 = task_wheel_name("pyoco_demo_tasks", "0.1.0");
    upload(&h, &v1, &[], demo_wheel("pyoco_demo_tasks", "0.1.0")).await;
    start_syncing_worker(&mut h, &venv, &["default"], Duration::from_millis(300)).await;
    wait_wheel_sync(&h, "0.1.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [v1.clone()]
    })
    .await;
    assert_eq!(
        venv.imported_version("pyoco_demo_tasks").as_deref(),
        Some("0.1.0")
    );
    run_task(&h, "default", "pyoco_demo_tasks:hello").await;

    h.store.wheels().delete(&v1).await.unwrap();
    let ws = wait_wheel_sync(&h, "the package removed", |ws| {
        names(&ws["removed_wheels"]) == [v1.clone()]
    })
    .await;
    // The registry is empty now: still a successful sync (0.5.1: NotFoundError).
    assert_eq!(ws["last_result"], "ok");
    assert_eq!(ws["selected_count"], json!(0));
    assert_eq!(ws["installed_wheels"], json!([]));
    assert!(manifest(&h).is_empty());
    assert!(!sync_dir(&h).join(&v1).exists());
    assert_eq!(venv.imported_version("pyoco_demo_tasks"), None);
    // Runners restarted: the module is gone for flows too.
    let run_id = h
        .submit_yaml(&one_task("pyoco_demo_tasks:hello", ""), json!({}))
        .await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_registry_is_a_successful_sync() {
    let mut h = Harness::new(StoreConfig::default()).await;
    let dir = sync_dir(&h);
    h.start_worker(move |cfg| {
        cfg.wheel_sync.enabled = true;
        cfg.wheel_sync.dir = dir;
    })
    .await;
    let ws = wait_wheel_sync(&h, "the first sync", |ws| ws["last_result"] != "idle").await;
    assert_eq!(ws["last_result"], "ok", "{ws}");
    assert_eq!(ws["last_error"], Value::Null);
    assert_eq!(ws["selected_count"], json!(0));
    assert!(ws["last_synced_at"].as_f64().is_some());
    // Nothing changed: no manifest written, jobs run as usual.
    assert!(!sync_dir(&h).join(MANIFEST_FILE_NAME).exists());
    let run_id = h.submit_yaml(common::TWO_TASKS, json!({})).await;
    assert_eq!(
        h.wait_terminal(&run_id, T).await.status,
        RunStatus::Completed
    );
    h.stop_worker().await.unwrap();
}

/// The `install_failed` records of the wheel history, oldest first.
async fn install_failures(h: &Harness) -> Vec<Value> {
    let history = h.store.wheel_history();
    let mut keys = history.keys().await.unwrap_or_default();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        if let Ok(Some(v)) = history.get(&key).await {
            let record: Value = serde_json::from_slice(&v.value).unwrap();
            if record["action"] == "install_failed" {
                out.push(record);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wheel_pip_refuses_is_skipped_until_replaced_and_never_blocks_the_others() {
    let venv = Venv::new();
    let mut h = Harness::new(StoreConfig::default()).await;
    let good = task_wheel_name("pyoco_demo_tasks", "0.1.0");
    upload(&h, &good, &[], demo_wheel("pyoco_demo_tasks", "0.1.0")).await;
    start_syncing_worker(&mut h, &venv, &["default"], Duration::from_millis(300)).await;
    let ok = wait_wheel_sync(&h, "0.1.0 installed", |ws| {
        names(&ws["installed_wheels"]) == [good.clone()]
    })
    .await;
    let manifest_before = std::fs::read(sync_dir(&h).join(MANIFEST_FILE_NAME)).unwrap();

    // 0.5.1: this upload made every later sync stop at it.
    let broken = task_wheel_name("pyoco_broken_tasks", "1.0.0");
    upload(&h, &broken, &[], b"this is not a zip file".to_vec()).await;
    let ws = wait_wheel_sync(&h, "the failed install", |ws| ws["last_result"] == "error").await;
    let err = ws["last_error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!("wheel install failed (code=1): {broken}: ")),
        "{err}"
    );
    assert!(err.chars().count() <= 2000 + 100);
    assert_eq!(names(&ws["failed_wheels"]), [broken.as_str()], "{ws}");
    assert_eq!(ws["failed_wheels"][0]["error"], ws["last_error"]);
    assert_eq!(ws["failed_wheels"][0]["package_name"], "pyoco-broken-tasks");
    assert!(ws["failed_wheels"][0]["nuid"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    // The failed attempt is not a success; what was installed stays.
    let success = ws["last_success_at"].as_f64().unwrap();
    assert!(success >= ok["last_success_at"].as_f64().unwrap(), "{ws}");
    assert!(success < ws["last_attempt_at"].as_f64().unwrap(), "{ws}");
    assert_eq!(ws["installed_wheels"], ok["installed_wheels"]);
    assert_eq!(
        std::fs::read(sync_dir(&h).join(MANIFEST_FILE_NAME)).unwrap(),
        manifest_before
    );
    assert!(!sync_dir(&h).join(&broken).exists());

    // A valid wheel uploaded after it is installed; a failed upgrade keeps the version that
    // works.
    let other = task_wheel_name("pyoco_other_tasks", "1.0.0");
    upload(&h, &other, &[], demo_wheel("pyoco_other_tasks", "1.0.0")).await;
    let bad_upgrade = task_wheel_name("pyoco_demo_tasks", "0.2.0");
    upload(&h, &bad_upgrade, &[], b"not a zip either".to_vec()).await;
    let ws = wait_wheel_sync(&h, "the other installed, the upgrade failed", |ws| {
        names(&ws["installed_wheels"]) == [good.clone(), other.clone()]
            && names(&ws["failed_wheels"]).len() == 2
    })
    .await;
    assert_eq!(ws["last_result"], "error");
    assert_eq!(names(&ws["selected_wheels"]), [good.clone(), other.clone()]);
    assert_eq!(
        venv.imported_version("pyoco_demo_tasks").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(
        run_task(&h, "default", "pyoco_other_tasks:hello").await,
        json!("hello world from 1.0.0")
    );
    assert_eq!(
        run_task(&h, "default", "pyoco_demo_tasks:hello").await,
        json!("hello world from 0.1.0")
    );

    // Later syncs do not run pip on them again: one history record per failed upload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failures = install_failures(&h).await;
    let failed_names: Vec<&str> = failures
        .iter()
        .map(|r| r["wheel_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed_names,
        [broken.as_str(), bad_upgrade.as_str()],
        "{failures:?}"
    );
    assert_eq!(failures[0]["worker_id"], "test-worker");
    assert!(failures[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("wheel install failed (code=1): "));
    assert_eq!(failures[0]["size_bytes"], json!(22));

    // Replaced by a good upload (a new object): installed, no longer listed as failed.
    h.store.wheels().delete(&bad_upgrade).await.unwrap();
    upload(
        &h,
        &bad_upgrade,
        &[],
        demo_wheel("pyoco_demo_tasks", "0.2.0"),
    )
    .await;
    let ws = wait_wheel_sync(&h, "the replaced upgrade installed", |ws| {
        names(&ws["installed_wheels"]).contains(&bad_upgrade)
    })
    .await;
    assert_eq!(names(&ws["failed_wheels"]), [broken.as_str()], "{ws}");
    assert_eq!(
        run_task(&h, "default", "pyoco_demo_tasks:hello").await,
        json!("hello world from 0.2.0")
    );
    // And the last failure gone too: the sync is clean again.
    h.store.wheels().delete(&broken).await.unwrap();
    let ws = wait_wheel_sync(&h, "a clean sync", |ws| ws["last_result"] == "ok").await;
    assert_eq!(ws["last_error"], Value::Null);
    assert!(ws.get("failed_wheels").is_none(), "{ws}");
    h.stop_worker().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_restart_replaces_idle_runners_and_retires_busy_ones_when_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let script = pyoco_worker::install_runner_script(dir.path()).unwrap();
    let spec = RunnerSpec {
        python: pyoco_testkit::python(),
        script,
        cwd: dir.path().to_path_buf(),
        env: vec![],
        ready_timeout: Duration::from_secs(60),
    };
    let pool = RunnerPool::start(spec, 2).await.unwrap();
    let mut leases = pool.take_idle();
    let mut busy = leases.pop().unwrap();
    let busy_pid = busy.runner().pid();
    leases.pop().unwrap().give_back();
    let idle_before = pool.idle_pids();
    assert_eq!(idle_before.len(), 1);

    assert_eq!(pool.restart_idle().await, 1);
    let idle_after = pool.idle_pids();
    assert_eq!(idle_after.len(), 1);
    assert_ne!(idle_after, idle_before);
    assert!(busy.runner().is_alive(), "a busy runner is never killed");

    busy.give_back();
    let started = Instant::now();
    let pids = eventually(T, "the busy runner replaced", || {
        let pool = pool.clone();
        async move { (pool.idle_count() == 2).then(|| pool.idle_pids()) }
    })
    .await;
    assert!(!pids.contains(&busy_pid), "{pids:?} still holds {busy_pid}");
    eprintln!(
        "busy runner retired and replaced in {:?}",
        started.elapsed()
    );
    pool.shutdown().await;
}

/// Upload → installed, as seen in the worker record, for the default 10 s interval and a 1 s
/// one. Prints the numbers; run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, ~1 min"]
async fn measure_upload_to_installed_latency() {
    for (interval, samples) in [(Duration::from_secs(10), 3), (Duration::from_secs(1), 5)] {
        let venv = Venv::new();
        let mut h = Harness::new(StoreConfig::default()).await;
        start_syncing_worker(&mut h, &venv, &["default"], interval).await;
        wait_wheel_sync(&h, "first sync", |ws| ws["last_result"] == "ok").await;
        let mut took = Vec::new();
        for i in 0..samples {
            // Land at a different phase of the interval each time.
            tokio::time::sleep(Duration::from_millis(317 * (i + 1))).await;
            let version = format!("0.{}.0", i + 1);
            let name = task_wheel_name("pyoco_demo_tasks", &version);
            let t0 = Instant::now();
            upload(&h, &name, &[], demo_wheel("pyoco_demo_tasks", &version)).await;
            wait_wheel_sync(&h, "installed", |ws| {
                names(&ws["installed_wheels"]) == [name.clone()]
            })
            .await;
            took.push(t0.elapsed());
        }
        let install: Vec<_> = took
            .iter()
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .collect();
        eprintln!("interval {interval:?}: upload → installed {install:?}");
        h.stop_worker().await.unwrap();
    }
}
