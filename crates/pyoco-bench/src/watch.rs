//! Observing run completion the same way for both systems: one KV watch over the whole
//! `pyoco_runs` bucket (new updates only), recording when each run key is first seen terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Terminal {
    pub status: String,
    pub at: Instant,
    pub error: Option<String>,
}

pub struct RunWatcher {
    seen: Arc<Mutex<HashMap<String, Terminal>>>,
    notify: Arc<Notify>,
    dead: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(value: &[u8]) -> Option<(String, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let status = v.get("status")?.as_str()?.to_owned();
    let error = v.get("error").and_then(|e| e.as_str()).map(str::to_owned);
    Some((status, error))
}

impl RunWatcher {
    /// Start watching `bucket` (which must exist) on `client`.
    pub async fn start(client: &async_nats::Client, bucket: &str) -> Result<RunWatcher> {
        let js = async_nats::jetstream::new(client.clone());
        let kv = js
            .get_key_value(bucket)
            .await
            .with_context(|| format!("opening KV bucket {bucket}"))?;
        let mut watch = kv.watch_all().await.context("starting the KV watch")?;
        let seen: Arc<Mutex<HashMap<String, Terminal>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let dead: Arc<Mutex<Option<String>>> = Arc::default();
        let (s, n, d) = (seen.clone(), notify.clone(), dead.clone());
        let task = tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                let entry = match item {
                    Ok(e) => e,
                    Err(e) => {
                        *d.lock().unwrap() = Some(format!("KV watch error: {e}"));
                        n.notify_waiters();
                        continue;
                    }
                };
                let at = Instant::now();
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    continue;
                }
                if let Some((status, error)) = parse(&entry.value) {
                    if matches!(status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED") {
                        let mut map = s.lock().unwrap();
                        map.entry(entry.key.clone())
                            .or_insert(Terminal { status, at, error });
                        drop(map);
                        n.notify_waiters();
                    }
                }
            }
            *d.lock().unwrap() = Some("KV watch ended".into());
            n.notify_waiters();
        });
        Ok(RunWatcher {
            seen,
            notify,
            dead,
            task,
        })
    }

    fn get(&self, id: &str) -> Option<Terminal> {
        self.seen.lock().unwrap().get(id).cloned()
    }

    /// Wait until `id` is terminal; error on timeout.
    pub async fn wait_one(&self, id: &str, timeout: Duration) -> Result<Terminal> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if let Some(t) = self.get(id) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                let extra = self.dead.lock().unwrap().clone().unwrap_or_default();
                bail!("run {id} not terminal after {timeout:?} {extra}");
            }
        }
    }

    /// Wait until every id is terminal; returns their terminal records.
    pub async fn wait_all(&self, ids: &[String], timeout: Duration) -> Result<Vec<Terminal>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing: Vec<&String> = ids.iter().collect();
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            {
                let map = self.seen.lock().unwrap();
                missing.retain(|id| !map.contains_key(id.as_str()));
            }
            if missing.is_empty() {
                let map = self.seen.lock().unwrap();
                return Ok(ids.iter().map(|id| map[id.as_str()].clone()).collect());
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                bail!(
                    "{} of {} runs not terminal after {timeout:?}",
                    missing.len(),
                    ids.len()
                );
            }
        }
    }
}
