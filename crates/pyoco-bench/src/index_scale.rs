//! `--index-scale N`: the gateway's memory per stored run and how fast its run index comes back
//! after a restart (Rust only).
//!
//! On a fresh nats-server: the Rust gateway (`pyoco-server up`), one run submitted with
//! `POST /runs/yaml` (its PENDING snapshot is the template), then N finished runs written
//! straight into the runs bucket — each a copy of the template made COMPLETED the way the
//! worker leaves it (`worker_id`, `start_time`, `end_time`, two task states and two full task
//! records) — until `GET /metrics` counts them all. Then the gateway is stopped and a new one
//! started on the same data. Reported:
//!
//! * index complete: from spawning the new gateway until `GET /runs?limit=1` answers 200 (the
//!   gateway answers `503 IndexLoading` until its index has read the whole bucket);
//! * gateway RSS (`VmRSS`) once it is idle after that, and its peak (`VmHWM`); the RSS of the
//!   first gateway (which indexed the runs one write at a time) is shown too;
//! * `GET /runs?limit=100` latency (sequential, after 10 warm-up requests).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::procs::{self, ChildProc, Spawn};
use crate::scale::{self, Seeder};

/// Flows, tags and workers the seeded runs spread over (repeated strings, as in a real bucket).
const FLOWS: [&str; 4] = ["bench", "etl-daily", "report", "train"];
const WORKERS: [&str; 3] = ["worker-a", "worker-b", "worker-c"];

/// Run the measurement; the JSON result.
pub(crate) async fn run(
    rust_dir: &Path,
    nats_bin: &Path,
    runs: usize,
    keep_tmp: bool,
) -> Result<Value> {
    let tmp = tempfile::Builder::new()
        .prefix("pyoco-bench-index-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let result = measure(rust_dir, nats_bin, runs, &dir).await;
    if keep_tmp {
        eprintln!("pyoco-bench: kept {}", tmp.keep().display());
    }
    result
}

fn spawn_gateway(
    rust_dir: &Path,
    nats_url: &str,
    dir: &Path,
    label: &str,
) -> Result<(ChildProc, String)> {
    let port = procs::free_port()?;
    let gateway = ChildProc::spawn(Spawn {
        name: format!("rust-gateway-{label}"),
        program: rust_dir.join("pyoco-server"),
        args: procs::gateway_up_args(port, nats_url),
        env: vec![],
        cwd: dir,
        log: dir.join(format!("gateway-{label}.log")),
    })?;
    Ok((gateway, format!("http://127.0.0.1:{port}")))
}

/// Poll `GET /runs?limit=1` until it answers 200; the time since the gateway was spawned.
async fn wait_index(
    http: &reqwest::Client,
    base: &str,
    gateway: &mut ChildProc,
) -> Result<Duration> {
    let url = format!("{base}/runs?limit=1");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = gateway.exited() {
            bail!("the gateway exited ({st}):\n{}", gateway.log_tail(15));
        }
        let last = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(gateway.started.elapsed()),
            Ok(r) => {
                let st = r.status();
                let body = r.text().await.unwrap_or_default();
                format!("HTTP {st}: {}", body.chars().take(200).collect::<String>())
            }
            Err(e) => format!("{e}"),
        };
        if Instant::now() > deadline {
            bail!("the index was not complete within 120 s (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Idle (CPU), then 1 s more: the RSS after the load settles, in MiB.
async fn settled_rss_mib(pid: u32) -> Result<f64> {
    procs::wait_quiet(pid, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    procs::rss_mib(pid).ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

async fn measure(rust_dir: &Path, nats_bin: &Path, runs: usize, dir: &Path) -> Result<Value> {
    let nats = crate::start_nats(nats_bin, &dir.join("nats")).await?;
    let nats_url = nats.client_url().to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;

    let (mut first, base) = spawn_gateway(rust_dir, &nats_url, dir, "first")?;
    let empty_rss = {
        let _ = wait_index(&http, &base, &mut first).await?;
        settled_rss_mib(first.pid).await?
    };
    let template = crate::post_yaml_when_ready(&http, &base, crate::FLOW_YAML.as_bytes()).await?;
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(nats_url.as_str()),
    )
    .await
    .map_err(|_| anyhow!("connecting to nats timed out"))??;
    let seeder = Seeder::new(&client, "pyoco_runs", &template).await?;
    let t = Instant::now();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    seeder
        .put_copies(runs, |snap, at| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            finish(snap, at, i);
        })
        .await?;
    let put_s = t.elapsed().as_secs_f64();
    let counted =
        scale::wait_counted(&http, &base, runs as u64 + 1, Duration::from_secs(600)).await?;
    eprintln!(
        "index-scale: wrote {runs} finished runs into KV in {put_s:.1} s; counted {:.0} ms later",
        counted.as_secs_f64() * 1e3
    );
    let first_rss = settled_rss_mib(first.pid).await?;
    first.stop(Duration::from_secs(5)).await;

    let (mut gateway, base) = spawn_gateway(rust_dir, &nats_url, dir, "restarted")?;
    let complete = wait_index(&http, &base, &mut gateway).await?;
    let body = scale::get_text(&http, &format!("{base}/metrics")).await?;
    let total = scale::runs_total(&body).unwrap_or(0);
    if total != runs as u64 + 1 {
        bail!(
            "the restarted gateway counts {total} runs, not {}",
            runs + 1
        );
    }
    let rss = settled_rss_mib(gateway.pid).await?;
    let hwm = vm_kib(gateway.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;

    let url = format!("{base}/runs?limit=100");
    let get = || async {
        let text = scale::get_text(&http, &url).await?;
        if !text.starts_with('[') {
            bail!("GET /runs: not a JSON array");
        }
        Ok(())
    };
    let page: Value = serde_json::from_str(&scale::get_text(&http, &url).await?)?;
    let items = page.as_array().map_or(0, Vec::len);
    if items != 100 {
        bail!("GET /runs?limit=100 answered {items} runs");
    }
    for _ in 0..10 {
        get().await?;
    }
    let sampled = scale::sample(200, 200, Duration::from_secs(60), get).await?;
    let rss_after_list = procs::rss_mib(gateway.pid).unwrap_or(0.0);
    gateway.stop(Duration::from_secs(5)).await;
    nats.stop().await;

    let per_run_b = (rss - empty_rss) * 1024.0 * 1024.0 / runs as f64;
    println!("index-scale: {runs} finished runs (2 task records each) in the runs bucket");
    println!("  gateway RSS, empty bucket, idle        {empty_rss:8.1} MiB");
    println!("  gateway RSS after indexing the writes  {first_rss:8.1} MiB");
    println!(
        "  restart: index complete after          {:8.0} ms",
        complete.as_secs_f64() * 1e3
    );
    println!("  restarted gateway RSS, idle            {rss:8.1} MiB  (peak {hwm:.1} MiB; {per_run_b:.0} bytes/run over empty)");
    println!(
        "  GET /runs?limit=100                    p50 {:.2} ms, p99 {:.2} ms ({} samples, {} errors); RSS after {rss_after_list:.1} MiB",
        sampled.stats.p50, sampled.stats.p99, sampled.stats.n, sampled.errors
    );
    Ok(json!({
        "runs": runs,
        "seed_seconds": put_s,
        "empty_rss_mib": empty_rss,
        "first_gateway_rss_mib": first_rss,
        "index_complete_ms": complete.as_secs_f64() * 1e3,
        "rss_mib": rss,
        "peak_rss_mib": hwm,
        "bytes_per_run_over_empty": per_run_b,
        "list_100_p50_ms": sampled.stats.p50,
        "list_100_p99_ms": sampled.stats.p99,
        "rss_after_list_mib": rss_after_list,
    }))
}

/// Make a copy of the PENDING template the finished run a worker leaves: COMPLETED, its worker,
/// start and end, and two task records as the runner writes them.
fn finish(snap: &mut serde_json::Map<String, Value>, at: f64, i: usize) {
    let start = at - 0.25;
    let worker = WORKERS[i % WORKERS.len()];
    snap.insert("flow_name".into(), FLOWS[i % FLOWS.len()].into());
    snap.insert("status".into(), "COMPLETED".into());
    snap.insert("worker_id".into(), worker.into());
    snap.insert("start_time".into(), start.into());
    snap.insert("end_time".into(), at.into());
    snap.insert("tasks".into(), json!({"a": "SUCCEEDED", "b": "SUCCEEDED"}));
    let record = |started: f64, ended: f64, inputs: Value, output: Value| {
        json!({
            "state": "SUCCEEDED", "started_at": started, "ended_at": ended,
            "duration_ms": (ended - started) * 1e3, "error": null, "traceback": null,
            "inputs": inputs, "output": output, "artifacts": {},
            "stdout": "", "stderr": ""
        })
    };
    snap.insert(
        "task_records".into(),
        json!({
            "a": record(start + 0.01, start + 0.1, json!({"x": 1}), json!(2)),
            "b": record(start + 0.11, at - 0.01, json!({"a": 2}), json!(4)),
        }),
    );
}
