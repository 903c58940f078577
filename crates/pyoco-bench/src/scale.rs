//! Measurements at scale: more stored runs written straight into the runs KV bucket, the
//! time-bounded sequential sampler used for `GET /runs` and `GET /metrics`, and the latency of
//! a KV write until the `snapshot` event of `GET /runs/{id}/watch` arrives.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::load;

pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes PENDING snapshots into the runs bucket: copies of one the gateway itself wrote, with
/// a fresh `run_id` and their own `updated_at` / `heartbeat_at`.
pub struct Seeder {
    kv: async_nats::jetstream::kv::Store,
    template: Map<String, Value>,
}

impl Seeder {
    /// `template_run` must be a run the gateway under test has just written (PENDING).
    pub async fn new(
        client: &async_nats::Client,
        bucket: &str,
        template_run: &str,
    ) -> Result<Seeder> {
        let js = async_nats::jetstream::new(client.clone());
        let kv = js
            .get_key_value(bucket)
            .await
            .with_context(|| format!("opening KV bucket {bucket}"))?;
        let entry = kv
            .get(template_run)
            .await
            .with_context(|| format!("reading the snapshot of {template_run}"))?
            .ok_or_else(|| anyhow!("no snapshot stored for {template_run}"))?;
        let template: Map<String, Value> = serde_json::from_slice(&entry)
            .with_context(|| format!("the snapshot of {template_run} is not a JSON object"))?;
        if template.get("status").and_then(Value::as_str) != Some("PENDING") {
            bail!("the template run {template_run} is not PENDING: {template:?}");
        }
        Ok(Seeder { kv, template })
    }

    /// The snapshot the gateway wrote (the template), as stored.
    pub fn template(&self) -> &Map<String, Value> {
        &self.template
    }

    pub fn kv(&self) -> &async_nats::jetstream::kv::Store {
        &self.kv
    }

    /// Put `n` new runs (64 puts in flight). Their `updated_at` lie in the last `n` ms before
    /// now, one ms apart, so every later submit is newer than all of them.
    pub async fn put_runs(&self, n: usize) -> Result<()> {
        let now = epoch_now();
        let puts = futures::stream::iter(0..n)
            .map(|i| {
                let mut snap = self.template.clone();
                let id = uuid::Uuid::new_v4().to_string();
                let at = now - (n - i) as f64 * 1e-3;
                snap.insert("run_id".into(), Value::String(id.clone()));
                snap.insert("updated_at".into(), at.into());
                snap.insert("heartbeat_at".into(), at.into());
                let kv = self.kv.clone();
                async move {
                    let body = serde_json::to_vec(&snap)?;
                    kv.put(id.as_str(), body.into())
                        .await
                        .map_err(|e| anyhow!("KV put {id}: {e}"))?;
                    Ok::<(), anyhow::Error>(())
                }
            })
            .buffer_unordered(64);
        tokio::pin!(puts);
        while let Some(r) = puts.next().await {
            r?;
        }
        Ok(())
    }
}

/// The sum of every `pyoco_runs_total{status=…}` sample of a `/metrics` body.
pub fn runs_total(metrics: &str) -> Option<u64> {
    let mut seen = false;
    let mut sum = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("pyoco_runs_total{") {
            let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            sum += v;
            seen = true;
        }
    }
    seen.then_some(sum as u64)
}

/// `GET url`, body as text; error on any non-2xx.
pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String> {
    let r = http.get(url).send().await?;
    let st = r.status();
    let body = r.text().await?;
    if !st.is_success() {
        bail!("HTTP {st}: {}", body.chars().take(300).collect::<String>());
    }
    Ok(body)
}

/// Poll `GET /metrics` until the runs it counts reach `want`; how long that took.
pub async fn wait_counted(
    http: &reqwest::Client,
    base: &str,
    want: u64,
    timeout: Duration,
) -> Result<Duration> {
    let url = format!("{base}/metrics");
    let t0 = Instant::now();
    loop {
        let last = match get_text(http, &url).await {
            Ok(body) => match runs_total(&body) {
                Some(n) if n >= want => return Ok(t0.elapsed()),
                Some(n) => format!("{n} runs counted"),
                None => "no pyoco_runs_total samples".into(),
            },
            Err(e) => format!("{e:#}"),
        };
        if t0.elapsed() > timeout {
            bail!("the gateway did not count {want} runs within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sequential samples of one request: at least `min` and at most `max` requests, no new one
/// started once `budget` has passed (after `min`). Failed requests are counted, not timed.
pub struct Sampled {
    pub stats: load::Stats,
    pub errors: usize,
    pub first_error: Option<String>,
}

pub async fn sample<F, Fut>(min: usize, max: usize, budget: Duration, mut op: F) -> Result<Sampled>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut n = 0;
    while n < max && (n < min || t0.elapsed() < budget) {
        n += 1;
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(60), op()).await {
            Ok(Ok(())) => lat.push(t.elapsed().as_secs_f64() * 1e3),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Err(_) => bail!("a request took more than 60 s"),
        }
    }
    if lat.is_empty() {
        bail!(
            "every request failed, first: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(Sampled {
        stats: load::stats_ms(lat),
        errors,
        first_error,
    })
}

/// One server-sent event and when its last byte arrived.
struct Event {
    at: Instant,
    name: String,
    data: Value,
}

/// Read the SSE body into events (one task; ends with the connection).
fn spawn_reader(
    mut resp: reqwest::Response,
) -> (mpsc::UnboundedReceiver<Event>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = find_frame_end(&buf) {
                let frame: Vec<u8> = buf.drain(..end.0 + end.1).collect();
                let text = String::from_utf8_lossy(&frame[..end.0]).replace('\r', "");
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.trim().to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null);
                if tx.send(Event { at, name, data }).is_err() {
                    return;
                }
            }
        }
    });
    (rx, task)
}

/// End of the first frame in `buf`: (frame length, separator length).
fn find_frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Result of the watch measurement.
pub struct SseResult {
    pub stats: load::Stats,
    pub warmup: usize,
    pub first_event_ms: f64,
}

/// Open `GET /runs/{run_id}/watch`, then `warmup + changes` times: wait a while (0–490 ms,
/// spread evenly, so a polling gateway is met at every phase of its poll), put a copy of the
/// stored snapshot with a new `updated_at` into the KV bucket, and time from just before the
/// put until the `snapshot` event carrying that `updated_at` arrives.
pub async fn sse_latency(
    base: &str,
    kv: &async_nats::jetstream::kv::Store,
    run_id: &str,
    warmup: usize,
    changes: usize,
) -> Result<SseResult> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("{base}/runs/{run_id}/watch?timeout_sec=600");
    let t_open = Instant::now();
    let resp = http.get(&url).send().await.context("GET …/watch")?;
    let st = resp.status();
    if !st.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "GET /runs/{{id}}/watch: HTTP {st}: {}",
            body.chars().take(300).collect::<String>()
        );
    }
    let (mut rx, reader) = spawn_reader(resp);
    let result = async {
        // The first event is the current snapshot.
        let first = loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .map_err(|_| anyhow!("no first snapshot event within 10 s"))?
                .ok_or_else(|| anyhow!("the watch stream ended before its first event"))?;
            if ev.name == "snapshot" {
                break ev;
            }
        };
        let first_event_ms = first.at.duration_since(t_open).as_secs_f64() * 1e3;
        let entry = kv
            .get(run_id)
            .await
            .map_err(|e| anyhow!("KV get {run_id}: {e}"))?
            .ok_or_else(|| anyhow!("no snapshot stored for {run_id}"))?;
        let mut snap: Map<String, Value> = serde_json::from_slice(&entry)?;
        let mut lat = Vec::new();
        let mut last_written = 0.0;
        for i in 0..warmup + changes {
            tokio::time::sleep(Duration::from_millis((i as u64 * 37 % 50) * 10)).await;
            // Strictly increasing, at least 1 ms apart.
            let at = epoch_now().max(last_written + 1e-3);
            last_written = at;
            snap.insert("updated_at".into(), at.into());
            snap.insert("heartbeat_at".into(), at.into());
            let body = serde_json::to_vec(&snap)?;
            let t0 = Instant::now();
            kv.put(run_id, body.into())
                .await
                .map_err(|e| anyhow!("KV put {run_id}: {e}"))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let got = loop {
                let ev = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .map_err(|_| {
                        anyhow!("change {i}: no snapshot event within 10 s of the KV put")
                    })?
                    .ok_or_else(|| anyhow!("change {i}: the watch stream ended"))?;
                if ev.name != "snapshot" {
                    continue;
                }
                let seen = ev.data["snapshot"]["updated_at"].as_f64().unwrap_or(0.0);
                if (seen - at).abs() < 1e-6 {
                    break ev;
                }
            };
            if i >= warmup {
                lat.push(got.at.saturating_duration_since(t0).as_secs_f64() * 1e3);
            }
        }
        Ok(SseResult {
            stats: load::stats_ms(lat),
            warmup,
            first_event_ms,
        })
    }
    .await;
    reader.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_runs_total() {
        let m = "# HELP pyoco_runs_total x\n# TYPE pyoco_runs_total gauge\npyoco_runs_total{status=\"PENDING\"} 9000\npyoco_runs_total{status=\"COMPLETED\"} 1000.0\npyoco_runs_today_total{status=\"PENDING\"} 5\n";
        assert_eq!(runs_total(m), Some(10000));
        assert_eq!(runs_total("pyoco_workers_alive_total 1\n"), None);
    }

    #[test]
    fn frames() {
        assert_eq!(find_frame_end(b"event: a\ndata: {}\n\nrest"), Some((17, 2)));
        assert_eq!(find_frame_end(b"event: a\r\n\r\n"), Some((8, 4)));
        assert_eq!(find_frame_end(b"event: a\n"), None);
    }
}
