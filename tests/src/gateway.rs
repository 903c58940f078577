//! Our gateway on its own, and the HTTP requests tests send to a gateway (ours or the Python
//! one).
//!
//! [`Gateway`] runs `pyoco_gateway::serve` in-process in front of a [`SharedStore`] the test
//! made, for what a whole [`TestApp`](crate::TestApp) cannot set up: a gateway whose NATS is not
//! there (yet), two gateways on one NATS, a store whose streams the test created first. Every
//! other test takes a `TestApp`.

use std::{net::SocketAddr, time::Duration};

use pyoco_config::{LoadOptions, Settings};
use pyoco_gateway::AppState;
use pyoco_store::SharedStore;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Settings as a fresh install has them (no `.env`, no environment), pointing at `nats_url`.
pub fn settings_for(nats_url: &str) -> Settings {
    load_settings(
        [("PYOCO_NATS_URL".to_string(), nats_url.to_string())].into(),
        std::env::temp_dir(),
    )
}

/// `Settings::load` from `env` only (plus `PYOCO_LOAD_DOTENV=0`), relative paths against `cwd`.
pub(crate) fn load_settings(
    mut env: std::collections::HashMap<String, String>,
    cwd: std::path::PathBuf,
) -> Settings {
    env.insert("PYOCO_LOAD_DOTENV".to_string(), "0".to_string());
    Settings::load(&LoadOptions {
        env,
        cwd,
        home: None,
    })
    .expect("test settings load")
}

/// Our gateway serving on a free loopback port, in-process, stopped when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Start a gateway on 127.0.0.1:0 with `settings` in front of `store` (which may still be
    /// connecting: the gateway answers 503 until it is ready).
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

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        post_json(&self.http, &self.url(path), body).await
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

/// Status and JSON body of a response (panics with the raw body if it is not JSON).
pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// `POST url` with a JSON body.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST {base_url}/runs/yaml` with the parts the Python client sends.
pub async fn post_yaml(
    http: &reqwest::Client,
    base_url: &str,
    yaml: &str,
    flow_name: &str,
    tag: &str,
) -> reqwest::Response {
    post_yaml_form(
        http,
        base_url,
        Some(yaml.as_bytes()),
        Some(flow_name),
        Some(tag),
    )
    .await
}

/// `POST {base_url}/runs/yaml` with the parts the Python client sends (`workflow` as
/// `flow.yaml`, `application/x-yaml`), `None` leaving a part out.
pub async fn post_yaml_form(
    http: &reqwest::Client,
    base_url: &str,
    workflow: Option<&[u8]>,
    flow_name: Option<&str>,
    tag: Option<&str>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    if let Some(bytes) = workflow {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name("flow.yaml")
            .mime_str("application/x-yaml")
            .expect("mime type");
        form = form.part("workflow", part);
    }
    if let Some(name) = flow_name {
        form = form.text("flow_name", name.to_string());
    }
    if let Some(tag) = tag {
        form = form.text("tag", tag.to_string());
    }
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
