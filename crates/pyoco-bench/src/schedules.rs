//! `--schedules N`: how late a scheduled run is (Rust only; 0.5.1 has no schedules, 0.7 polls
//! every second).
//!
//! On a fresh nats-server: the Rust gateway (`pyoco-server up`) and one worker, 3 warm-up runs
//! completed, then a cron schedule firing every second (`* * * * * *`) until N of its runs
//! completed (the schedule is deleted then). A KV watch over the runs bucket (started before
//! the schedule) sees each run's PENDING snapshot, which carries `scheduled_at` (the slot) and
//! `updated_at` (when the gateway wrote it), and its RUNNING snapshot (`start_time`). All three
//! are the same machine's clock. Reported: dispatch lateness = PENDING `updated_at` − slot, and
//! start lateness = `start_time` − slot, p50 / p99 / max in ms; slots that ran twice or were
//! skipped are counted.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::procs::{self, ChildProc, Spawn};

#[derive(Debug, Default, Clone)]
struct Seen {
    schedule_id: Option<String>,
    slot: Option<f64>,
    pending_at: Option<f64>,
    start_time: Option<f64>,
    completed: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn wait_http(url: &str, what: &str, proc_: &mut ChildProc) -> Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = proc_.exited() {
            bail!("{what} exited ({st}):\n{}", proc_.log_tail(15));
        }
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                let body = r.text().await.unwrap_or_default();
                if !url.ends_with("/workers") || body.contains("bench-sched") {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("{what} not ready within 30 s:\n{}", proc_.log_tail(15));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run the measurement; the JSON result.
pub(crate) async fn run(
    rust_dir: &Path,
    nats_bin: &Path,
    rust_python: Option<&Path>,
    slots: usize,
    keep_tmp: bool,
) -> Result<Value> {
    let tmp = tempfile::Builder::new()
        .prefix("pyoco-bench-schedules-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let result = measure(rust_dir, nats_bin, rust_python, slots, &dir).await;
    if keep_tmp {
        eprintln!("pyoco-bench: kept {}", tmp.keep().display());
    }
    result
}

async fn measure(
    rust_dir: &Path,
    nats_bin: &Path,
    rust_python: Option<&Path>,
    slots: usize,
    dir: &Path,
) -> Result<Value> {
    let nats = crate::start_nats(nats_bin, &dir.join("nats")).await?;
    let nats_url = nats.client_url().to_string();
    let tasks_dir = dir.join("tasks");
    std::fs::create_dir_all(&tasks_dir)?;
    std::fs::write(tasks_dir.join("bench_tasks.py"), crate::TASKS_PY)?;

    let port = procs::free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut gateway = ChildProc::spawn(Spawn {
        name: "rust-gateway-schedules".into(),
        program: rust_dir.join("pyoco-server"),
        args: procs::gateway_up_args(port, &nats_url),
        env: vec![],
        cwd: dir,
        log: dir.join("gateway.log"),
    })?;
    wait_http(&format!("{base}/health"), "the gateway", &mut gateway).await?;
    let wdir = dir.join("work");
    std::fs::create_dir_all(&wdir)?;
    let mut env = vec![("PYTHONPATH".to_string(), tasks_dir.display().to_string())];
    if let Some(p) = rust_python {
        env.push(("PYOCO_PYTHON".to_string(), p.display().to_string()));
    }
    let mut worker = ChildProc::spawn(Spawn {
        name: "rust-worker-schedules".into(),
        program: rust_dir.join("pyoco-worker"),
        args: vec![
            "--nats-url".into(),
            nats_url.clone(),
            "--tags".into(),
            "default".into(),
            "--worker-id".into(),
            "bench-sched".into(),
        ],
        env,
        cwd: &wdir,
        log: dir.join("worker.log"),
    })?;
    wait_http(&format!("{base}/workers"), "the worker", &mut worker).await?;

    // The watch first: it must see every run's first (PENDING) value.
    let client = async_nats::connect(&nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("pyoco_runs").await?;
    let mut watch = kv.watch_all().await?;
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let s = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            let Ok(v) = serde_json::from_slice::<Value>(&entry.value) else {
                continue;
            };
            let mut map = s.lock().unwrap();
            let run = map.entry(entry.key.clone()).or_default();
            let status = v["status"].as_str().unwrap_or("");
            run.schedule_id = v["schedule_id"].as_str().map(str::to_string);
            run.slot = v["scheduled_at"].as_f64().or(run.slot);
            if status == "PENDING" && run.pending_at.is_none() {
                run.pending_at = v["updated_at"].as_f64();
            }
            if run.start_time.is_none() {
                run.start_time = v["start_time"].as_f64();
            }
            run.completed |= status == "COMPLETED";
        }
    });

    let http = reqwest::Client::builder().no_proxy().build()?;
    let form = || {
        reqwest::multipart::Form::new()
            .part(
                "workflow",
                reqwest::multipart::Part::bytes(crate::FLOW_YAML.as_bytes().to_vec())
                    .file_name("flow.yaml"),
            )
            .text("flow_name", "bench")
            .text("tag", "default")
    };
    // Warm-up: 3 plain runs completed (the worker's runner started).
    for _ in 0..3 {
        let r: Value = http
            .post(format!("{base}/runs/yaml"))
            .multipart(form())
            .send()
            .await?
            .json()
            .await?;
        let id = r["run_id"].as_str().context("warm-up submit")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.lock().unwrap().get(&id).is_some_and(|r| r.completed) {
            if Instant::now() > deadline {
                bail!("warm-up run did not complete:\n{}", worker.log_tail(15));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let created: Value = http
        .post(format!("{base}/schedules/yaml"))
        .multipart(form().text("cron", "* * * * * *"))
        .send()
        .await?
        .json()
        .await?;
    let sid = created["schedule_id"]
        .as_str()
        .with_context(|| format!("creating the schedule: {created}"))?
        .to_string();
    eprintln!("pyoco-bench: schedule {sid}: every second until {slots} runs completed");
    let deadline = Instant::now() + Duration::from_secs(slots as u64 * 2 + 30);
    loop {
        let done = seen
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.schedule_id.as_deref() == Some(sid.as_str()) && r.completed)
            .count();
        if done >= slots {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {slots} scheduled runs completed in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http.delete(format!("{base}/schedules/{sid}"))
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watcher.abort();

    let runs: Vec<Seen> = seen
        .lock()
        .unwrap()
        .values()
        .filter(|r| r.schedule_id.as_deref() == Some(sid.as_str()))
        .cloned()
        .collect();
    let mut slots_seen: Vec<f64> = runs.iter().filter_map(|r| r.slot).collect();
    slots_seen.sort_by(f64::total_cmp);
    let total = slots_seen.len();
    slots_seen.dedup();
    let twice = total - slots_seen.len();
    let skipped = match (slots_seen.first(), slots_seen.last()) {
        (Some(a), Some(b)) => ((b - a).round() as usize + 1).saturating_sub(slots_seen.len()),
        _ => 0,
    };
    let mut dispatch: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some((r.pending_at? - r.slot?) * 1e3))
        .collect();
    let mut start: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some((r.start_time? - r.slot?) * 1e3))
        .collect();
    dispatch.sort_by(f64::total_cmp);
    start.sort_by(f64::total_cmp);
    let stats = |v: &[f64]| {
        json!({"n": v.len(), "p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0),
               "min_ms": v.first(), "max_ms": v.last()})
    };
    let out = json!({
        "runs": total, "slots_run_twice": twice, "slots_skipped": skipped,
        "dispatch_lateness": stats(&dispatch),
        "start_lateness": stats(&start),
    });
    eprintln!(
        "\n| schedule lateness, every-second cron, {} runs | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|\n| dispatch: PENDING snapshot written − slot | {:.2} | {:.2} | {:.2} |\n| start: run's `start_time` − slot | {:.2} | {:.2} | {:.2} |\n\nslots run twice: {twice}; slots skipped: {skipped}",
        total,
        percentile(&dispatch, 50.0),
        percentile(&dispatch, 99.0),
        dispatch.last().copied().unwrap_or(f64::NAN),
        percentile(&start, 50.0),
        percentile(&start, 99.0),
        start.last().copied().unwrap_or(f64::NAN),
    );
    drop(worker);
    drop(gateway);
    drop(nats);
    Ok(out)
}
