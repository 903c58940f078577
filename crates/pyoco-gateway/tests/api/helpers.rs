//! One real gateway per test: a fresh nats-server, the gateway on 127.0.0.1:0, a real HTTP
//! client, and a direct store handle for looking at what the gateway wrote.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use futures::StreamExt;
use pyoco_config::{LoadOptions, Settings};
use pyoco_gateway::AppState;
use pyoco_store::{SharedStore, Store, StoreConfig};
use pyoco_testkit::TestNats;
use serde_json::{Map, Value};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Settings as a fresh install has them (no `.env`), pointing at `nats_url`.
pub fn settings(nats_url: &str) -> Settings {
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

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Start a gateway on a free port with `settings` and `store`.
    pub async fn start(settings: &Settings, store: SharedStore) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(settings, store);
        let server = tokio::spawn(pyoco_gateway::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// `POST /runs/yaml` with the parts the Python client sends (`workflow` as `flow.yaml`,
    /// `application/x-yaml`), `None` leaving a part out.
    pub async fn post_yaml(
        &self,
        workflow: Option<&[u8]>,
        flow_name: Option<&str>,
        tag: Option<&str>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        if let Some(bytes) = workflow {
            let part = reqwest::multipart::Part::bytes(bytes.to_vec())
                .file_name("flow.yaml")
                .mime_str("application/x-yaml")
                .unwrap();
            form = form.part("workflow", part);
        }
        if let Some(name) = flow_name {
            form = form.text("flow_name", name.to_string());
        }
        if let Some(tag) = tag {
            form = form.text("tag", tag.to_string());
        }
        self.http
            .post(self.url("/runs/yaml"))
            .multipart(form)
            .send()
            .await
            .expect("POST /runs/yaml")
    }

    /// Stop serving and wait for the server task to end.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("gateway stops within 10 s")
                .expect("server task")
                .expect("serve returns Ok");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh nats-server, a gateway in front of it, and a store for assertions.
pub struct TestApp {
    pub gateway: Gateway,
    pub store: Store,
    pub settings: Settings,
    pub _nats: TestNats,
}

impl TestApp {
    /// Gateway with default settings.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Gateway with settings adjusted by the test.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let nats = TestNats::start().await;
        let mut settings = settings(&nats.url());
        adjust(&mut settings);
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
        TestApp {
            gateway,
            store,
            settings,
            _nats: nats,
        }
    }

    /// The stored snapshot of `run_id`, keys in stored order, and its raw bytes.
    pub async fn stored_snapshot(&self, run_id: &str) -> (Map<String, Value>, Vec<u8>) {
        let entry = self
            .store
            .runs()
            .get(run_id)
            .await
            .expect("KV get")
            .expect("snapshot exists");
        let map = serde_json::from_slice(&entry.value).expect("snapshot is JSON");
        (map, entry.value.to_vec())
    }

    /// The next job queued for `tag` (acked), keys in message order, and its raw bytes.
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
        let map = serde_json::from_slice(&message.payload).expect("job is JSON");
        (map, message.payload.to_vec())
    }

    /// Number of jobs waiting in the work stream (all tags).
    pub async fn queued_jobs(&self) -> u64 {
        let mut stream = self
            .store
            .jetstream()
            .get_stream("PYOCO_WORK")
            .await
            .expect("work stream");
        stream.info().await.expect("stream info").state.messages
    }
}

/// Keys of a JSON object, in order.
pub fn keys(map: &Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

/// Status and JSON body of a response.
pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// True for `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` (lower-case `str(uuid4())`).
pub fn is_uuid4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        && parts[2].starts_with('4')
}

/// A minimal valid flow.yaml.
pub const FLOW_YAML: &str = "\
version: 1
flow:
  graph: |
    t1 >> t2
  defaults:
    x: 1
    debug: yes
tasks:
  t1:
    callable: my_tasks:t1
  t2:
    callable: my_tasks:t2
";
