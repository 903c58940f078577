//! The whole application for one end-to-end test, the way zero-to-production's `spawn_app()`
//! does it: a fresh nats-server, the real appliance in-process (gateway on a free port, an
//! optional local worker running the real pyoco), a real HTTP client, and a direct store
//! connection for looking at what was written on the wire.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pyoco_appliance::{Appliance, ApplianceOptions};
use pyoco_config::{LoadOptions, Settings};
use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_worker::WorkerConfig;
use serde_json::Value;

use crate::{eventually, python, TestNats};

/// Name of the task module every [`TestApp`] puts on its workers' `PYTHONPATH`.
pub const TASKS_MODULE: &str = "e2e_tasks";

/// The task functions the end-to-end flows call (module [`TASKS_MODULE`]).
pub const TASKS_PY: &str = r#""""Task functions of the end-to-end tests."""
import time


def hello(name):
    print(f"saying hello to {name}")
    return f"hello {name}"


def shout(hello):
    return hello.upper() + "!"


def boom():
    raise RuntimeError("disk on fire")


def mark(marker):
    with open(marker, "a") as fh:
        fh.write("ran\n")
    return "marked"


def nap(seconds=0.2):
    time.sleep(float(seconds))
    return seconds
"#;

/// Write `source` as the Python module `<dir>/<module>.py` (creating `dir`); returns the file.
pub fn write_task_module(dir: &Path, module: &str, source: &str) -> PathBuf {
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("creating task dir {}: {e}", dir.display()));
    let file = dir.join(format!("{module}.py"));
    std::fs::write(&file, source)
        .unwrap_or_else(|e| panic!("writing task module {}: {e}", file.display()));
    file
}

/// A free TCP port on 127.0.0.1 (bound, then released: the caller binds it again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Now, as Unix epoch seconds (the contract's timestamp format).
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// What [`TestApp::start`] runs besides NATS and the gateway.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Run the appliance's local worker.
    pub worker: bool,
    /// The local worker's id (`PYOCO_WORKER_ID`).
    pub worker_id: String,
    /// The tags the local worker serves (`PYOCO_WORKER_TAGS`).
    pub worker_tags: Vec<String>,
}

impl Default for AppOptions {
    /// Gateway and a local worker `e2e-worker` serving `default`.
    fn default() -> Self {
        AppOptions {
            worker: true,
            worker_id: "e2e-worker".into(),
            worker_tags: vec!["default".into()],
        }
    }
}

impl AppOptions {
    /// The gateway alone: jobs wait in the queue until some worker comes.
    pub fn gateway_only() -> Self {
        AppOptions {
            worker: false,
            ..Self::default()
        }
    }
}

/// A running application against its own nats-server.
pub struct TestApp {
    nats: TestNats,
    /// Servers stopped by [`TestApp::stop_nats`]: kept, because they own the JetStream store
    /// the restarted server reuses.
    stopped_nats: Vec<TestNats>,
    appliance: Option<Appliance>,
    extra_workers: Vec<Appliance>,
    options: AppOptions,
    base_url: String,
    http: reqwest::Client,
    store: Store,
    dir: tempfile::TempDir,
}

impl TestApp {
    /// Start NATS and the appliance (gateway, plus the local worker if asked), and return once
    /// the gateway answers from NATS and the worker has registered.
    pub async fn start(options: AppOptions) -> TestApp {
        let nats = TestNats::start().await;
        let dir = tempfile::Builder::new()
            .prefix("pyoco-e2e-")
            .tempdir()
            .expect("temp dir");
        write_task_module(&dir.path().join("tasks"), TASKS_MODULE, TASKS_PY);
        let store = Store::connect(
            &nats.url(),
            "pyoco-e2e-test",
            StoreConfig::default(),
            DEFAULT_CONNECT_TIMEOUT,
        )
        .await
        .expect("the test's own store connects");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gateway");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let mut app = TestApp {
            nats,
            stopped_nats: Vec::new(),
            appliance: None,
            extra_workers: Vec::new(),
            options: options.clone(),
            base_url,
            http: reqwest::Client::new(),
            store,
            dir,
        };
        let settings = app.settings();
        let worker_config = options.worker.then(|| app.worker_config(&settings));
        let appliance = Appliance::start(ApplianceOptions {
            settings,
            managed_nats: false,
            gateway: true,
            worker: options.worker,
            http_listener: Some(listener),
            worker_config,
            nats_config: None,
        })
        .await
        .expect("the appliance starts");
        app.appliance = Some(appliance);
        app.wait_gateway_ready().await;
        if options.worker {
            app.wait_worker_registered(&options.worker_id).await;
        }
        app
    }

    /// Start one more local worker (a worker-only appliance with this app's worker settings)
    /// and wait until it has registered.
    pub async fn start_worker(&mut self) {
        let settings = self.settings();
        let config = self.worker_config(&settings);
        let worker_id = config.worker_id.clone();
        let appliance = Appliance::start(ApplianceOptions {
            settings,
            managed_nats: false,
            gateway: false,
            worker: true,
            http_listener: None,
            worker_config: Some(config),
            nats_config: None,
        })
        .await
        .expect("the worker-only appliance starts");
        self.extra_workers.push(appliance);
        self.wait_worker_registered(&worker_id).await;
    }

    /// Settings as a fresh install has them (no `.env`), pointing at this app's NATS and data
    /// dir, with the test venv's Python.
    pub fn settings(&self) -> Settings {
        let env = HashMap::from([
            ("PYOCO_LOAD_DOTENV".to_string(), "0".to_string()),
            ("PYOCO_NATS_URL".to_string(), self.nats.url()),
            (
                "PYOCO_DATA_DIR".to_string(),
                self.dir.path().join("data").display().to_string(),
            ),
            ("PYOCO_PYTHON".to_string(), python().display().to_string()),
            (
                "PYOCO_WORKER_ID".to_string(),
                self.options.worker_id.clone(),
            ),
            (
                "PYOCO_WORKER_TAGS".to_string(),
                self.options.worker_tags.join(","),
            ),
        ]);
        Settings::load(&LoadOptions {
            env,
            cwd: self.dir.path().to_path_buf(),
            home: None,
        })
        .expect("test settings load")
    }

    fn worker_config(&self, settings: &Settings) -> WorkerConfig {
        let mut config = WorkerConfig::from_settings(settings).expect("worker config");
        config
            .set_pythonpath(Some(self.tasks_dir().as_os_str()), self.dir.path(), false)
            .expect("PYTHONPATH");
        config.stop_timeout = Duration::from_secs(5);
        config
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The test's own connection to this app's NATS.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The directory of the task modules (on the local workers' `PYTHONPATH`).
    pub fn tasks_dir(&self) -> PathBuf {
        self.dir.path().join("tasks")
    }

    /// This app's temporary directory (removed with the app).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in this app's temporary directory (removed with the app).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `GET path`: status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        status_json(response).await
    }

    /// `POST /runs/yaml` as the Python client sends it (`workflow` part named `flow.yaml`).
    pub async fn post_yaml(&self, yaml: &str, flow_name: &str, tag: &str) -> reqwest::Response {
        post_yaml(&self.http, &self.base_url, yaml, flow_name, tag).await
    }

    /// Submit a flow.yaml; asserts the gateway's `{"run_id", "status": "PENDING"}` answer and
    /// returns the run id.
    pub async fn submit_yaml(&self, yaml: &str, flow_name: &str, tag: &str) -> String {
        submit_yaml(&self.http, &self.base_url, yaml, flow_name, tag).await
    }

    /// Poll `GET /runs/{run_id}` until its status is one of `statuses`; returns that body.
    pub async fn wait_status(&self, run_id: &str, statuses: &[&str], timeout: Duration) -> Value {
        wait_status(&self.http, &self.base_url, run_id, statuses, timeout).await
    }

    /// `GET /runs/{run_id}?include=records`, asserting 200.
    pub async fn run_with_records(&self, run_id: &str) -> Value {
        let (status, body) = self
            .get_json(&format!("/runs/{run_id}?include=records"))
            .await;
        assert_eq!(status, 200, "GET /runs/{run_id}?include=records: {body}");
        body
    }

    /// The stored snapshot of `run_id`, straight from the KV bucket.
    pub async fn stored_snapshot(&self, run_id: &str) -> serde_json::Map<String, Value> {
        let entry = self
            .store
            .runs()
            .get(run_id)
            .await
            .expect("KV get")
            .unwrap_or_else(|| panic!("no snapshot stored for {run_id}"));
        serde_json::from_slice(&entry.value).expect("the snapshot is a JSON object")
    }

    /// Every message of the DLQ stream, oldest first, as (subject, JSON).
    pub async fn dlq_messages(&self) -> Vec<(String, Value)> {
        let mut stream = self
            .store
            .jetstream()
            .get_stream(&self.store.config().dlq_stream)
            .await
            .expect("the DLQ stream exists");
        let info = stream.info().await.expect("DLQ stream info");
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return out;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                let record = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
                    panic!("DLQ message {seq} is not JSON ({e}): {:?}", message.payload)
                });
                out.push((message.subject.to_string(), record));
            }
        }
        out
    }

    /// Jobs still in the work stream (WorkQueue: acknowledged jobs are removed).
    pub async fn queued_jobs(&self) -> u64 {
        let mut stream = self
            .store
            .jetstream()
            .get_stream(&self.store.config().work_stream)
            .await
            .expect("the work stream exists");
        stream
            .info()
            .await
            .expect("work stream info")
            .state
            .messages
    }

    /// Wait until every job has been acknowledged (a terminal snapshot is written just before
    /// its job's ACK).
    pub async fn wait_queue_drained(&self) {
        eventually(
            Duration::from_secs(10),
            "every job acknowledged",
            || async { (self.queued_jobs().await == 0).then_some(()) },
        )
        .await;
    }

    /// Wait until the worker registry has a record for `worker_id`.
    pub async fn wait_worker_registered(&self, worker_id: &str) -> Value {
        let workers = self.store.workers().clone();
        eventually(
            Duration::from_secs(60),
            &format!("worker {worker_id:?} in the registry"),
            || {
                let workers = workers.clone();
                async move {
                    let entry = workers.get(worker_id).await.ok().flatten()?;
                    serde_json::from_slice(&entry.value).ok()
                }
            },
        )
        .await
    }

    /// Stop the nats-server (its JetStream store is kept for [`TestApp::restart_nats`]).
    pub async fn stop_nats(&mut self) {
        self.nats.stop().await;
    }

    /// Start a nats-server again on the same port with the same JetStream store.
    pub async fn restart_nats(&mut self) {
        let port = self.nats.port();
        let store_dir = self.nats.store_dir().to_path_buf();
        let restarted = TestNats::start_with(|c| {
            c.port = Some(port);
            c.store_dir = store_dir;
        })
        .await;
        let stopped = std::mem::replace(&mut self.nats, restarted);
        self.stopped_nats.push(stopped);
    }

    /// Stop the workers (runs in progress may finish), then the gateway.
    pub async fn stop(mut self) {
        for worker in self.extra_workers.drain(..) {
            worker.stop().await;
        }
        if let Some(appliance) = self.appliance.take() {
            appliance.stop().await;
        }
    }

    async fn wait_gateway_ready(&self) {
        // A run id nobody has: 404 `run not found` means the gateway reads from NATS.
        let probe = format!(
            "{}/runs/00000000-0000-4000-8000-000000000000",
            self.base_url
        );
        eventually(
            Duration::from_secs(20),
            "the gateway to answer from NATS",
            || async {
                let response = self.http.get(&probe).send().await.ok()?;
                (response.status() == 404).then_some(())
            },
        )
        .await;
    }
}

/// Status and JSON body of a response (panics with the raw body if it is not JSON).
pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// `POST {base_url}/runs/yaml` with the parts the Python client sends.
pub async fn post_yaml(
    http: &reqwest::Client,
    base_url: &str,
    yaml: &str,
    flow_name: &str,
    tag: &str,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(yaml.as_bytes().to_vec())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .expect("mime type");
    let form = reqwest::multipart::Form::new()
        .part("workflow", part)
        .text("flow_name", flow_name.to_string())
        .text("tag", tag.to_string());
    http.post(format!("{base_url}/runs/yaml"))
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base_url}/runs/yaml: {e}"))
}

/// Submit a flow.yaml to the gateway at `base_url` (ours or Python's); asserts
/// `200 {"run_id": <uuid>, "status": "PENDING"}` and returns the run id.
pub async fn submit_yaml(
    http: &reqwest::Client,
    base_url: &str,
    yaml: &str,
    flow_name: &str,
    tag: &str,
) -> String {
    let (status, body) = status_json(post_yaml(http, base_url, yaml, flow_name, tag).await).await;
    assert_eq!(status, 200, "POST {base_url}/runs/yaml: {body}");
    assert_eq!(body["status"], "PENDING", "{body}");
    let run_id = body["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {body}"));
    assert_eq!(run_id.len(), 36, "a UUID with hyphens: {run_id}");
    run_id.to_string()
}

/// Poll `GET {base_url}/runs/{run_id}` every 50 ms until its status is one of `statuses`;
/// returns that body. On timeout the panic shows the last answer.
pub async fn wait_status(
    http: &reqwest::Client,
    base_url: &str,
    run_id: &str,
    statuses: &[&str],
    timeout: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    let url = format!("{base_url}/runs/{run_id}");
    loop {
        let last = match http.get(&url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status == 200 {
                    if let Ok(body) = serde_json::from_str::<Value>(&text) {
                        if body["status"]
                            .as_str()
                            .is_some_and(|s| statuses.contains(&s))
                        {
                            return body;
                        }
                    }
                }
                format!("HTTP {status} {text}")
            }
            Err(e) => format!("request failed: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("run {run_id} did not reach {statuses:?} within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
