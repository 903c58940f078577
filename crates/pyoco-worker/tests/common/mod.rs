//! A worker against a real nats-server and the real pyoco, for the integration tests.
//!
//! Runs are submitted the way a gateway does it (PENDING snapshot, then the job on
//! `pyoco.work.<tag>`), with `pyoco-wire` building both.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use pyoco_config::{LoadOptions, Settings};
use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::{eventually, TestNats};
use pyoco_wire::{parse_workflow_yaml, JobMessage, NewRun, RunSnapshot, RunStatus, WorkflowUpload};
use pyoco_worker::{Worker, WorkerConfig, WorkerError, WorkerProbe};
use serde_json::{Map, Value};
use tokio::{sync::oneshot, task::JoinHandle};

/// Task modules importable by the runners (`PYTHONPATH` = the harness's task dir).
pub const TASKS_PY: &str = r#"
import time

def add_one(x):
    return x + 1

def double(t1):
    return t1 * 2

def boom():
    raise ValueError("kaboom")

def mark(marker, label="ran"):
    with open(marker, "a") as fh:
        fh.write(str(label) + "\n")
    return label

def slow(marker, label="ran", seconds=5.0):
    mark(marker, label)
    time.sleep(float(seconds))
    return label

def stubborn(marker, label="ran", seconds=5.0):
    # Ignores the runner's interrupt (it catches BaseException) until `seconds` have passed:
    # only the worker's grace-period kill stops it.
    mark(marker, label)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        try:
            time.sleep(max(0.0, min(0.2, end - time.monotonic())))
        except BaseException:
            pass
    return label

def spawn_setsid(pidfile, seconds=300):
    # A child in its own session (setsid), which the runner's process-group kill misses.
    import subprocess
    p = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    with open(pidfile, "w") as fh:
        fh.write(str(p.pid))
    time.sleep(float(seconds))
    return p.pid

def spawn_setsid_stubborn(pidfile, seconds=300):
    # The same, ignoring the cancel's interrupt: the worker kills the runner after the grace.
    try:
        spawn_setsid(pidfile, seconds)
    except BaseException:
        pass
    stubborn(pidfile + ".mark", seconds=seconds)

def const_a():
    return "a"

def noisy(n):
    import sys
    sys.stdout.write("x" * int(n))
    print("to stderr", file=sys.stderr)
    return int(n)

def const_b(t1):
    return t1 + "b"
"#;

/// `t1 >> t2`: `x + 1`, then doubled; `defaults: {x: 1}`.
pub const TWO_TASKS: &str = "version: 1
flow:
  graph: |
    t1 >> t2
  defaults:
    x: 1
tasks:
  t1:
    callable: wtasks:add_one
  t2:
    callable: wtasks:double
";

/// The trivial 2-task flow of the benchmarks (both tasks return constants).
pub const TRIVIAL: &str = "version: 1
flow:
  graph: |
    t1 >> t2
tasks:
  t1:
    callable: wtasks:const_a
  t2:
    callable: wtasks:const_b
";

/// A running worker: its stop signal and its task.
pub type RunningWorker = (oneshot::Sender<()>, JoinHandle<Result<(), WorkerError>>);

pub struct Harness {
    pub nats: TestNats,
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub probe: WorkerProbe,
    worker: Option<RunningWorker>,
}

/// Settings for a test worker: no `.env`, data dir in `data_dir`, the test venv's python.
pub fn test_config(data_dir: &Path, tasks_dir: &Path) -> WorkerConfig {
    let mut env = std::collections::HashMap::new();
    env.insert("PYOCO_LOAD_DOTENV".to_string(), "0".to_string());
    env.insert("PYOCO_DATA_DIR".to_string(), data_dir.display().to_string());
    env.insert(
        "PYOCO_PYTHON".to_string(),
        pyoco_testkit::python().display().to_string(),
    );
    env.insert("PYOCO_WORKER_ID".to_string(), "test-worker".to_string());
    let settings = Settings::load(&LoadOptions {
        env,
        cwd: data_dir.to_path_buf(),
        home: None,
    })
    .expect("test settings");
    let mut cfg = WorkerConfig::from_settings(&settings).expect("worker config");
    cfg.set_runner_env("PYTHONPATH", &tasks_dir.display().to_string());
    cfg.run_heartbeat_interval = Duration::from_millis(200);
    cfg.stop_timeout = Duration::from_secs(5);
    cfg
}

impl Harness {
    /// NATS and a store, no worker yet.
    pub async fn new(store_cfg: StoreConfig) -> Harness {
        let nats = TestNats::start().await;
        let store = Store::connect(&nats.url(), "test", store_cfg, DEFAULT_CONNECT_TIMEOUT)
            .await
            .expect("store connects");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("tasks")).unwrap();
        std::fs::write(dir.path().join("tasks").join("wtasks.py"), TASKS_PY).unwrap();
        Harness {
            nats,
            store,
            dir,
            probe: WorkerProbe::default(),
            worker: None,
        }
    }

    /// NATS, a store and a running worker with the default test config.
    pub async fn start() -> Harness {
        Self::start_with(StoreConfig::default(), |_| {}).await
    }

    pub async fn start_with(
        store_cfg: StoreConfig,
        adjust: impl FnOnce(&mut WorkerConfig),
    ) -> Harness {
        let mut h = Harness::new(store_cfg).await;
        h.start_worker(adjust).await;
        h
    }

    pub fn config(&self) -> WorkerConfig {
        test_config(
            &self.dir.path().join("data"),
            &self.dir.path().join("tasks"),
        )
    }

    /// Start the worker and wait until its registry record says it is up.
    pub async fn start_worker(&mut self, adjust: impl FnOnce(&mut WorkerConfig)) {
        let mut cfg = self.config();
        adjust(&mut cfg);
        let worker_id = cfg.worker_id.clone();
        let worker = Worker::new(cfg);
        self.probe = worker.probe();
        let (tx, rx) = oneshot::channel::<()>();
        let store = self.store.clone();
        let handle = tokio::spawn(async move {
            worker
                .run(store, async {
                    let _ = rx.await;
                })
                .await
        });
        self.worker = Some((tx, handle));
        let workers = self.store.workers().clone();
        eventually(Duration::from_secs(30), "worker registered", || {
            let workers = workers.clone();
            let id = worker_id.clone();
            async move { workers.get(&id).await.ok().flatten().map(|_| ()) }
        })
        .await;
    }

    /// Start one more worker (its own id and runners) beside the harness's; stop it by sending
    /// on the returned channel.
    pub async fn spawn_worker(
        &self,
        adjust: impl FnOnce(&mut WorkerConfig),
    ) -> (WorkerProbe, RunningWorker) {
        let mut cfg = self.config();
        adjust(&mut cfg);
        let worker_id = cfg.worker_id.clone();
        let worker = Worker::new(cfg);
        let probe = worker.probe();
        let (tx, rx) = oneshot::channel::<()>();
        let store = self.store.clone();
        let handle = tokio::spawn(async move {
            worker
                .run(store, async {
                    let _ = rx.await;
                })
                .await
        });
        let workers = self.store.workers().clone();
        eventually(Duration::from_secs(30), "extra worker registered", || {
            let workers = workers.clone();
            let id = worker_id.clone();
            async move { workers.get(&id).await.ok().flatten().map(|_| ()) }
        })
        .await;
        (probe, (tx, handle))
    }

    /// Stop the worker gracefully and return what `run` returned.
    pub async fn stop_worker(&mut self) -> Result<(), WorkerError> {
        let (tx, handle) = self.worker.take().expect("worker running");
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic")
    }

    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn marker_lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.marker(name))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Submit `yaml` like `POST /runs/yaml`: params = defaults + `extra_params`.
    pub async fn submit_yaml(&self, yaml: &str, extra_params: Value) -> String {
        self.submit_yaml_to("default", yaml, extra_params).await
    }

    /// [`Harness::submit_yaml`] with routing tag `tag`.
    pub async fn submit_yaml_to(&self, tag: &str, yaml: &str, extra_params: Value) -> String {
        let wf = parse_workflow_yaml(yaml.as_bytes()).expect("valid flow.yaml");
        let mut params = wf.flow.defaults.clone();
        if let Value::Object(extra) = extra_params {
            params.extend(extra);
        }
        self.submit(NewRun {
            run_id: uuid::Uuid::new_v4().to_string(),
            flow_name: "main".into(),
            tag: tag.into(),
            tags: vec![],
            tenant_id: None,
            api_key_id: None,
            params,
            workflow: Some(WorkflowUpload {
                text: yaml.to_string(),
                digest: wf.digest,
            }),
        })
        .await
    }

    /// Submit a resolver-path run (no flow.yaml).
    pub async fn submit_named(&self, flow_name: &str) -> String {
        self.submit(NewRun {
            run_id: uuid::Uuid::new_v4().to_string(),
            flow_name: flow_name.into(),
            tag: "default".into(),
            tags: vec![],
            tenant_id: Some("tenant-1".into()),
            api_key_id: None,
            params: Map::new(),
            workflow: None,
        })
        .await
    }

    pub async fn submit(&self, run: NewRun) -> String {
        let t = now();
        let snapshot = RunSnapshot::pending(&run, t);
        self.store
            .runs()
            .create(&run.run_id, snapshot.to_json())
            .await
            .expect("create PENDING snapshot");
        self.store
            .publish_job(&run.tag, JobMessage::for_new_run(&run, t).to_json().into())
            .await
            .expect("publish job");
        run.run_id
    }

    pub async fn snapshot(&self, run_id: &str) -> Option<RunSnapshot> {
        let v = self.store.runs().get(run_id).await.expect("kv get")?;
        Some(RunSnapshot::from_json(&v.value).expect("snapshot JSON"))
    }

    pub async fn wait_for(
        &self,
        run_id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&RunSnapshot) -> bool,
    ) -> RunSnapshot {
        let runs = self.store.runs().clone();
        let pred = &pred;
        eventually(timeout, what, || {
            let runs = runs.clone();
            async move {
                let v = runs.get(run_id).await.ok().flatten()?;
                let s = RunSnapshot::from_json(&v.value).ok()?;
                pred(&s).then_some(s)
            }
        })
        .await
    }

    pub async fn wait_terminal(&self, run_id: &str, timeout: Duration) -> RunSnapshot {
        self.wait_for(run_id, timeout, "a terminal snapshot", |s| {
            s.status.is_terminal()
        })
        .await
    }

    /// Write a cancel request the way the 0.5.1 gateway does (blind put).
    pub async fn cancel(&self, run_id: &str) {
        let mut s = self.snapshot(run_id).await.expect("run exists");
        let t = now();
        if !s.status.is_terminal() {
            s.status = RunStatus::Cancelling;
        }
        s.cancel_requested_at = Some(Some(t));
        s.cancel_requested_by = Some(Some("api_key:test".into()));
        s.updated_at = t;
        self.store
            .runs()
            .put(run_id, s.to_json())
            .await
            .expect("cancel write");
    }

    /// Every DLQ record, oldest first, with its subject.
    pub async fn dlq(&self) -> Vec<(String, Value)> {
        let mut stream = self
            .store
            .jetstream()
            .get_stream("PYOCO_DLQ")
            .await
            .expect("DLQ stream");
        let info = stream.info().await.expect("DLQ info");
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if seq == 0 {
                continue;
            }
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((
                    m.subject.to_string(),
                    serde_json::from_slice(&m.payload).expect("DLQ JSON"),
                ));
            }
        }
        out
    }

    /// The stored worker record as JSON.
    pub async fn worker_record(&self, worker_id: &str) -> Option<Value> {
        let v = self.store.workers().get(worker_id).await.ok()??;
        serde_json::from_slice(&v.value).ok()
    }

    /// Messages still in the work stream (WorkQueue: acked/terminated ones are removed).
    pub async fn work_messages(&self) -> u64 {
        let mut stream = self
            .store
            .jetstream()
            .get_stream("PYOCO_WORK")
            .await
            .expect("work stream");
        stream.info().await.expect("work info").state.messages
    }
}

pub use pyoco_wire::python::time as now;

pub fn json(v: &RunSnapshot) -> Value {
    serde_json::to_value(v).unwrap()
}
