//! The whole application for one test, the way zero-to-production's `spawn_app()` does it: a
//! fresh nats-server, the real appliance in-process (the gateway on a free port and, when
//! asked, a local worker running the real pyoco), a real HTTP client, and the test's own store
//! connection for putting and looking at what is on the wire.
//!
//! One app for every crate's tests: the gateway's API tests take it gateway-only with their
//! settings adjusted, the CLI's run the `pyoco-client` binary against it, and the end-to-end
//! tests run flows on its worker. Tests of a gateway the app cannot set up (no NATS yet, two
//! gateways on one NATS) take a bare [`Gateway`](crate::Gateway).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt;
use pyoco_appliance::{Appliance, ApplianceOptions};
use pyoco_config::{AuthMode, Settings};
use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_worker::WorkerConfig;
use serde_json::{Map, Value};

use crate::{
    eventually,
    gateway::{load_settings, post_json, post_yaml, post_yaml_form, status_json},
    python, submit_yaml, wait_status, TestNats,
};

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

/// What [`TestApp::start`] runs besides NATS and the gateway, and what it stores first.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Run the appliance's local worker.
    pub worker: bool,
    /// The local worker's id (`PYOCO_WORKER_ID`).
    pub worker_id: String,
    /// The tags the local worker serves (`PYOCO_WORKER_TAGS`).
    pub worker_tags: Vec<String>,
    /// Values put into the runs bucket (key, stored bytes) before the gateway starts, so its
    /// run index reads them as the bucket's history.
    pub stored_runs: Vec<(String, Vec<u8>)>,
}

impl Default for AppOptions {
    /// Gateway and a local worker `e2e-worker` serving `default`.
    fn default() -> Self {
        AppOptions {
            worker: true,
            worker_id: "e2e-worker".into(),
            worker_tags: vec!["default".into()],
            stored_runs: Vec::new(),
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
    settings: Settings,
    addr: SocketAddr,
    base_url: String,
    http: reqwest::Client,
    /// The key `http` sends, when auth is on.
    api_key: Option<String>,
    store: Store,
    dir: tempfile::TempDir,
}

impl TestApp {
    /// The gateway alone with the settings of a fresh install.
    pub async fn gateway_only() -> TestApp {
        Self::start(AppOptions::gateway_only()).await
    }

    /// Start NATS and the appliance (gateway, plus the local worker if asked) with the settings
    /// of a fresh install, and return once the gateway answers from NATS and the worker has
    /// registered.
    pub async fn start(options: AppOptions) -> TestApp {
        Self::start_with(options, |_| {}).await
    }

    /// Like [`TestApp::start`], with the settings adjusted by the test first (they are in
    /// force for the gateway, the local worker and the test's own store).
    pub async fn start_with(options: AppOptions, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let nats = TestNats::start().await;
        let dir = tempfile::Builder::new()
            .prefix("pyoco-test-app-")
            .tempdir()
            .expect("temp dir");
        let mut settings = app_settings(&nats.url(), dir.path(), &options);
        adjust(&mut settings);
        let store = Store::connect(
            &settings.nats_url,
            "pyoco-test",
            StoreConfig::from(&settings),
            DEFAULT_CONNECT_TIMEOUT,
        )
        .await
        .expect("the test's own store connects");
        // 64 writes in flight: some tests store thousands.
        futures::stream::iter(&options.stored_runs)
            .for_each_concurrent(64, |(key, value)| {
                let store = &store;
                async move {
                    store
                        .runs()
                        .put(key, value.clone())
                        .await
                        .unwrap_or_else(|e| panic!("storing run {key}: {e}"));
                }
            })
            .await;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gateway");
        let addr = listener.local_addr().expect("local addr");
        let api_key = match settings.http_auth_mode {
            AuthMode::None => None,
            AuthMode::ApiKey => Some(kit_api_key(&store, &settings).await),
        };
        let http = match &api_key {
            None => reqwest::Client::new(),
            Some(key) => client_with_key(&settings.http_api_key_header, key),
        };
        let mut app = TestApp {
            nats,
            stopped_nats: Vec::new(),
            appliance: None,
            extra_workers: Vec::new(),
            settings,
            addr,
            base_url: format!("http://{addr}"),
            http,
            api_key,
            store,
            dir,
        };
        write_task_module(&app.tasks_dir(), TASKS_MODULE, TASKS_PY);
        let worker_config = options.worker.then(|| app.worker_config());
        let appliance = Appliance::start(ApplianceOptions {
            settings: app.settings.clone(),
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
        let config = self.worker_config();
        let worker_id = config.worker_id.clone();
        let appliance = Appliance::start(ApplianceOptions {
            settings: self.settings.clone(),
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

    /// The settings the app runs with: a fresh install's (no `.env`), pointing at this app's
    /// NATS and data dir, with the worker options, adjusted by the test.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The local workers' configuration: the test venv's Python, the task modules on
    /// `PYTHONPATH`.
    pub fn worker_config(&self) -> WorkerConfig {
        let mut settings = self.settings.clone();
        settings.python.get_or_insert_with(python);
        let mut config = WorkerConfig::from_settings(&settings).expect("worker config");
        config
            .set_pythonpath(Some(self.tasks_dir().as_os_str()), self.dir.path(), false)
            .expect("PYTHONPATH");
        config.stop_timeout = Duration::from_secs(5);
        config
    }

    /// Where the gateway listens (127.0.0.1, a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The gateway's URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// With auth on, the app's own API key (what [`TestApp::http`] sends).
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The test's own connection to this app's NATS (the app's store settings).
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

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path`: status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        status_json(self.get(path).await).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        post_json(&self.http, &self.url(path), body).await
    }

    /// `POST /runs/yaml` as the Python client sends it (`workflow` part named `flow.yaml`).
    pub async fn post_yaml(&self, yaml: &str, flow_name: &str, tag: &str) -> reqwest::Response {
        post_yaml(&self.http, &self.base_url, yaml, flow_name, tag).await
    }

    /// `POST /runs/yaml` with the parts the Python client sends, `None` leaving a part out.
    pub async fn post_yaml_form(
        &self,
        workflow: Option<&[u8]>,
        flow_name: Option<&str>,
        tag: Option<&str>,
    ) -> reqwest::Response {
        post_yaml_form(&self.http, &self.base_url, workflow, flow_name, tag).await
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

    /// The stored snapshot of `run_id`, straight from the KV bucket, keys in stored order.
    pub async fn stored_snapshot(&self, run_id: &str) -> Map<String, Value> {
        self.stored_snapshot_with_bytes(run_id).await.0
    }

    /// The stored snapshot of `run_id`, keys in stored order, and its raw bytes.
    pub async fn stored_snapshot_with_bytes(&self, run_id: &str) -> (Map<String, Value>, Vec<u8>) {
        let entry = self
            .store
            .runs()
            .get(run_id)
            .await
            .expect("KV get")
            .unwrap_or_else(|| panic!("no snapshot stored for {run_id}"));
        let map = serde_json::from_slice(&entry.value).expect("the snapshot is a JSON object");
        (map, entry.value.to_vec())
    }

    /// Take the next job queued for `tag` (acknowledged): keys in message order, and its raw
    /// bytes.
    pub async fn next_job(&self, tag: &str) -> (Map<String, Value>, Vec<u8>) {
        let consumer = self.store.work_consumer(tag).await.expect("work consumer");
        let mut messages = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .expect("fetch");
        let message = messages
            .next()
            .await
            .unwrap_or_else(|| panic!("no job queued for tag {tag}"))
            .expect("message");
        assert_eq!(message.subject.as_str(), format!("pyoco.work.{tag}"));
        message.ack().await.expect("ack");
        let map = serde_json::from_slice(&message.payload).expect("the job is JSON");
        (map, message.payload.to_vec())
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

    /// Jobs still in the work stream, all tags (WorkQueue: acknowledged jobs are removed).
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

    /// Stop the workers (runs in progress may finish), then the gateway; NATS and the test's
    /// store stay.
    pub async fn stop(&mut self) {
        for worker in self.extra_workers.drain(..) {
            worker.stop().await;
        }
        if let Some(appliance) = self.appliance.take() {
            appliance.stop().await;
        }
    }

    async fn wait_gateway_ready(&self) {
        // A run id nobody has: 404 `run not found` means the gateway reads from NATS.
        let probe = self.url("/runs/00000000-0000-4000-8000-000000000000");
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

/// With auth on, the app's own key: tenant `testkit`, stored in the app's auth bucket with the
/// app's pepper (1000 rounds, as the gateway reads the count from the record, to keep tests
/// fast). Requests through [`TestApp::http`] and the helpers carry it.
async fn kit_api_key(store: &Store, settings: &Settings) -> String {
    let rounds = std::num::NonZeroU32::new(1000).expect("not zero");
    let pepper = settings.auth_pepper.as_deref().unwrap_or_default();
    let made = pyoco_wire::new_api_key("testkit", pepper, rounds, pyoco_wire::python::time())
        .expect("a valid tenant");
    store
        .auth()
        .create(
            &pyoco_wire::ApiKeyRecord::kv_key(&made.record.key_id),
            made.record.to_json(),
        )
        .await
        .expect("storing the test kit's API key");
    made.api_key
}

/// An HTTP client that sends `key` in the header `name` with every request.
fn client_with_key(name: &str, key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
        reqwest::header::HeaderValue::from_str(key).expect("a key is a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// A fresh install's settings (no `.env`) for an app in `dir` on the NATS at `nats_url`.
fn app_settings(nats_url: &str, dir: &Path, options: &AppOptions) -> Settings {
    let mut env = HashMap::from([
        ("PYOCO_NATS_URL".to_string(), nats_url.to_string()),
        (
            "PYOCO_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        ),
        ("PYOCO_WORKER_ID".to_string(), options.worker_id.clone()),
        (
            "PYOCO_WORKER_TAGS".to_string(),
            options.worker_tags.join(","),
        ),
    ]);
    if options.worker {
        env.insert("PYOCO_PYTHON".to_string(), python().display().to_string());
    }
    load_settings(env, dir.to_path_buf())
}
