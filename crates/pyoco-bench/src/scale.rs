//! Measurements at scale: more stored runs (and wheel-history records) written straight into
//! their KV buckets, the time-bounded sequential sampler used for `GET /runs`, `GET /metrics`
//! and `GET /wheels/history`, and the latency of a KV write until the `snapshot` event of
//! `GET /runs/{id}/watch` arrives.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use pyoco_wire::python;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::load;

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
        self.put_copies(n, |_, _| {}).await
    }

    /// As [`Seeder::put_runs`], each copy changed by `edit(snapshot, updated_at)` after its
    /// `run_id`, `updated_at` and `heartbeat_at` are set (e.g. to make it a finished run).
    pub async fn put_copies<F>(&self, n: usize, edit: F) -> Result<()>
    where
        F: Fn(&mut Map<String, Value>, f64),
    {
        put_all(&self.kv, n, |_, at| {
            let mut snap = self.template.clone();
            let id = uuid::Uuid::new_v4().to_string();
            snap.insert("run_id".into(), Value::String(id.clone()));
            snap.insert("updated_at".into(), at.into());
            snap.insert("heartbeat_at".into(), at.into());
            edit(&mut snap, at);
            Ok((id, serde_json::to_vec(&snap)?))
        })
        .await
    }

    /// Store `snap` as the snapshot of its `run_id`.
    pub async fn put_snapshot(&self, snap: &Map<String, Value>) -> Result<()> {
        let id = snap
            .get("run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("a snapshot without run_id"))?;
        self.kv
            .put(id, serde_json::to_vec(snap)?.into())
            .await
            .map_err(|e| anyhow!("KV put {id}: {e}"))?;
        Ok(())
    }
}

/// Put `n` entries made by `entry(i, at)` (key, value) into `kv`, 64 puts in flight. Entry `i`
/// gets `at` = now − (n − i) ms: the last `n` ms before now, one ms apart, newest last.
async fn put_all<F>(kv: &async_nats::jetstream::kv::Store, n: usize, entry: F) -> Result<()>
where
    F: Fn(usize, f64) -> Result<(String, Vec<u8>)>,
{
    let now = python::time();
    let puts = futures::stream::iter(0..n)
        .map(|i| {
            let made = entry(i, now - (n - i) as f64 * 1e-3);
            let kv = kv.clone();
            async move {
                let (key, body) = made?;
                kv.put(key.as_str(), body.into())
                    .await
                    .map_err(|e| anyhow!("KV put {key}: {e}"))?;
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

/// The wheel-history bucket both gateways create at start-up.
pub const HISTORY_BUCKET: &str = "pyoco_wheel_history";

/// Write `n` wheel-history records (contract §2.5: an upload each, as 0.5.1 records it) straight
/// into [`HISTORY_BUCKET`], keyed `f"{int(occurred_at*1000):013d}_{event_id}"` like both
/// gateways key them; `occurred_at` 1 ms apart just before now. The `event_id` of the newest.
pub async fn put_wheel_history(client: &async_nats::Client, n: usize) -> Result<String> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js
        .get_key_value(HISTORY_BUCKET)
        .await
        .with_context(|| format!("opening KV bucket {HISTORY_BUCKET}"))?;
    let newest = std::sync::OnceLock::new();
    put_all(&kv, n, |i, at| {
        let (key, record) = history_record(i, at);
        if i + 1 == n {
            let _ = newest.set(record["event_id"].as_str().unwrap_or_default().to_owned());
        }
        Ok((key, serde_json::to_vec(&record)?))
    })
    .await?;
    newest
        .into_inner()
        .ok_or_else(|| anyhow!("no wheel-history record written"))
}

/// History record number `i`, occurred at `at`, and its key.
fn history_record(i: usize, at: f64) -> (String, Value) {
    let event_id = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("{:013}_{event_id}", (at * 1000.0) as u64);
    let sha256_hex = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let record = serde_json::json!({
        "event_id": event_id,
        "occurred_at": at,
        "action": "upload",
        "wheel_name": format!("demo_pkg{}-1.0-py3-none-any.whl", i % 50),
        "tags": ["cpu"],
        "size_bytes": 1234 + i,
        "sha256_hex": sha256_hex,
        "replace": true,
        "actor": {"tenant_id": null, "api_key_id": null},
        "source": {"remote_addr": "127.0.0.1", "x_forwarded_for": null, "x_real_ip": null,
                   "user_agent": "bench", "host": "127.0.0.1:8000", "scheme": "http"},
    });
    (key, record)
}

/// Check a `GET /wheels/history?limit={limit}` answer: a JSON array of exactly `limit` records,
/// the first one `newest` (the newest record written). The number of records.
pub fn check_history_page(body: &str, limit: usize, newest: &str) -> Result<usize> {
    let v: Value = serde_json::from_str(body).context("GET /wheels/history: not JSON")?;
    let Value::Array(items) = v else {
        bail!(
            "GET /wheels/history: not a JSON array: {}",
            body.chars().take(300).collect::<String>()
        );
    };
    if items.len() != limit {
        bail!(
            "GET /wheels/history: {} records, expected {limit}",
            items.len()
        );
    }
    let first = items[0].get("event_id").and_then(Value::as_str);
    if first != Some(newest) {
        bail!(
            "GET /wheels/history: the first record is {first:?}, not the newest written ({newest})"
        );
    }
    Ok(items.len())
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
        let mut snap = stored_snapshot(kv, run_id).await?;
        let mut lat = Vec::new();
        let mut last_written = 0.0;
        for i in 0..warmup + changes {
            tokio::time::sleep(Duration::from_millis((i as u64 * 37 % 50) * 10)).await;
            // Strictly increasing, at least 1 ms apart.
            let at = python::time().max(last_written + 1e-3);
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

/// What [`many_watchers`] measured.
pub struct WatchersResult {
    /// Watch streams that answered 200 and sent their first `snapshot` event.
    pub opened: usize,
    /// Seconds to open them all.
    pub open_s: f64,
    /// The first refusal (status line and the start of the body), if the gateway refused one.
    pub refused: Option<String>,
    /// Gateway RSS (MiB) with every stream open, before the change.
    pub rss_open_mib: Option<f64>,
    /// One KV write → its `snapshot` event on each open stream (ms): p50, p99, max.
    pub fanout: load::Stats,
    /// `GET /health` on a new connection while the streams are open (ms).
    pub health_ms: f64,
}

/// Raise this process's open-file limit to its hard limit (the bench holds one socket per
/// watcher).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Open `n` `GET /runs/{run_id}/watch` streams on the gateway at `addr` (raw sockets, 200 being
/// opened at a time), measure the gateway's RSS with all of them open, then write one change
/// to the run and time its `snapshot` event on every stream. Stops opening at the first
/// refusal (0.5.1 creates a JetStream consumer per stream and runs out of them).
pub async fn many_watchers(
    addr: std::net::SocketAddr,
    kv: &async_nats::jetstream::kv::Store,
    run_id: &str,
    n: usize,
    gateway_pid: u32,
) -> Result<WatchersResult> {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    raise_nofile();
    let marker = format!("bench-fanout-{}", uuid_like());
    let request = format!(
        "GET /runs/{run_id}/watch?timeout_sec=600 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let t_open = Instant::now();
    // Each stream: connect, request, wait for its first snapshot event, then report and keep
    // reading until the marker shows up.
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<bool>();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, marker) = (request.clone(), marker.clone());
        let (refused, stop, seen, opened_tx, gate) = (
            refused.clone(),
            stop.clone(),
            seen.clone(),
            opened_tx.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut permit = gate.acquire_owned().await.ok();
            if stop.load(Ordering::Relaxed) {
                let _ = opened_tx.send(false);
                return;
            }
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                *refused.lock().unwrap() = Some("connect failed".into());
                stop.store(true, Ordering::Relaxed);
                let _ = opened_tx.send(false);
                return;
            };
            let _ = s.set_nodelay(true);
            if s.write_all(request.as_bytes()).await.is_err() {
                let _ = opened_tx.send(false);
                return;
            }
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            let mut open = false;
            loop {
                let got =
                    match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => 0,
                        Ok(Ok(k)) => k,
                    };
                if got == 0 {
                    if !open {
                        let text = String::from_utf8_lossy(&buf)
                            .chars()
                            .take(300)
                            .collect::<String>();
                        refused.lock().unwrap().get_or_insert(if text.is_empty() {
                            "closed without an answer".into()
                        } else {
                            text
                        });
                        stop.store(true, Ordering::Relaxed);
                        let _ = opened_tx.send(false);
                    }
                    return;
                }
                let at = Instant::now();
                buf.extend_from_slice(&chunk[..got]);
                if !open {
                    if buf.len() >= 12 && !buf.starts_with(b"HTTP/1.1 200") {
                        // Read the rest of a short error answer, then report it.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk))
                                .await;
                        let text = String::from_utf8_lossy(&buf)
                            .chars()
                            .take(300)
                            .collect::<String>();
                        refused.lock().unwrap().get_or_insert(text);
                        stop.store(true, Ordering::Relaxed);
                        let _ = opened_tx.send(false);
                        return;
                    }
                    if contains(&buf, b"event: snapshot") || contains(&buf, b"event:snapshot") {
                        open = true;
                        buf.clear();
                        permit.take();
                        let _ = opened_tx.send(true);
                        continue;
                    }
                } else if contains(&buf, marker.as_bytes()) {
                    seen.lock().unwrap().push(at);
                    // Keep the connection open until the bench ends the phase.
                    loop {
                        if matches!(s.read(&mut chunk).await, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                } else if buf.len() > 1 << 20 {
                    buf.drain(..buf.len() - 4096);
                }
            }
        }));
    }
    drop(opened_tx);
    let mut opened = 0usize;
    // One answer per stream (the open ones keep their sender while they read on).
    for _ in 0..n {
        match opened_rx.recv().await {
            Some(true) => opened += 1,
            Some(false) => {}
            None => break,
        }
    }
    let open_s = t_open.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open_mib = crate::procs::rss_mib(gateway_pid);

    let t_health = Instant::now();
    let health = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{addr}/health"))
        .send()
        .await;
    let health_ms = t_health.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = health {
        bail!("GET /health with {opened} watchers open: {e}");
    }

    let mut fanout = load::Stats::default();
    if opened > 0 {
        let mut snap = stored_snapshot(kv, run_id).await?;
        let at = python::time();
        snap.insert("updated_at".into(), at.into());
        snap.insert("heartbeat_at".into(), at.into());
        snap.insert("bench_marker".into(), marker.clone().into());
        let t0 = Instant::now();
        kv.put(run_id, serde_json::to_vec(&snap)?.into())
            .await
            .map_err(|e| anyhow!("KV put {run_id}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().len() < opened && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lat: Vec<f64> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1e3)
            .collect();
        fanout = load::stats_ms(lat);
    }
    for t in tasks {
        t.abort();
    }
    let refused = refused.lock().unwrap().clone();
    Ok(WatchersResult {
        opened,
        open_s,
        refused,
        rss_open_mib,
        fanout,
        health_ms,
    })
}

/// The run's snapshot as stored in the runs bucket.
async fn stored_snapshot(
    kv: &async_nats::jetstream::kv::Store,
    run_id: &str,
) -> Result<Map<String, Value>> {
    let entry = kv
        .get(run_id)
        .await
        .map_err(|e| anyhow!("KV get {run_id}: {e}"))?
        .ok_or_else(|| anyhow!("no snapshot stored for {run_id}"))?;
    Ok(serde_json::from_slice(&entry)?)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
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
    fn history_records_and_pages() {
        let (key, rec) = history_record(7, 1712345678.901);
        let id = rec["event_id"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(key, format!("1712345678901_{id}"));
        assert_eq!(rec["sha256_hex"].as_str().unwrap().len(), 64);
        let page = |ids: &[&str]| {
            Value::Array(
                ids.iter()
                    .map(|i| serde_json::json!({"event_id": i}))
                    .collect(),
            )
            .to_string()
        };
        assert_eq!(check_history_page(&page(&["a", "b"]), 2, "a").unwrap(), 2);
        assert!(check_history_page(&page(&["b", "a"]), 2, "a").is_err());
        assert!(check_history_page(&page(&["a"]), 2, "a").is_err());
        assert!(check_history_page("{\"detail\":\"x\"}", 2, "a").is_err());
        assert!(check_history_page("oops", 2, "a").is_err());
    }

    #[test]
    fn frames() {
        assert_eq!(find_frame_end(b"event: a\ndata: {}\n\nrest"), Some((17, 2)));
        assert_eq!(find_frame_end(b"event: a\r\n\r\n"), Some((8, 4)));
        assert_eq!(find_frame_end(b"event: a\n"), None);
    }
}
