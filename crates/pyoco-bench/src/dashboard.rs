//! Row 19 (`--dashboard`): the web dashboard each gateway serves at `/`, in headless Chromium.
//! Ours is crates/pyoco-gateway/dashboard; 0.5.1's is its "Control Deck"
//! (`pyoco_server/static/`). Both list runs and keep the list live by polling
//! `GET /runs?updated_after=…` (ours every second, one page of 200 first; 0.5.1 every 2 s, after
//! following `next_cursor` through up to 8 pages of 50 before it shows anything).
//!
//! Each system gets a fresh nats-server and gateway holding exactly N finished runs (written
//! straight into the runs bucket, 1 ms apart) and one RUNNING run of flow `bench-live`, newest
//! of all. Then, with the same browser flags and timing method for both:
//!
//! - navigation → first runs rendered: a new Chromium per load (fresh profile: nothing cached,
//!   empty `localStorage`), `about:blank` first, then the time from just before
//!   `goto("/")` until the list has a row (`tr.run-row`, or 0.5.1's `#runsList li.run-item`),
//!   seen by polling the DOM every ~5 ms; median over the loads;
//! - page weight of that first visit (Resource Timing: the document, every file, the first
//!   `GET /runs` pages and the first request of every other API path, not the live polls);
//! - requests per minute of the open page while nothing changes, the bytes they move and the
//!   gateway's CPU meanwhile;
//! - KV change → shown: the `bench-live` snapshot is written as COMPLETED straight into KV and
//!   timed from just before the `put` until its row shows COMPLETED; flipped back to RUNNING
//!   (and waited for) between samples.
//!
//! The selectors work on both pages, so a system is measured by the page its gateway serves.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::Client;
use pyoco_wire::python;
use serde_json::{json, Map, Value};

use crate::browser::{self, Browser};
use crate::procs::{self, ChildProc};
use crate::report::SystemResult;
use crate::scale::{self, Seeder};
use crate::{log, start_gateway_with, Ctx, Plan, SystemSpec};

/// The flow name of the one unfinished run, whose state the bench changes.
pub const LIVE_FLOW: &str = "bench-live";

/// What the dashboard measurement does.
#[derive(Debug, Clone)]
pub struct DashPlan {
    /// Finished runs stored (plus the `bench-live` one).
    pub runs: usize,
    /// Fresh page loads timed (median reported).
    pub loads: usize,
    /// KV changes timed (median and max reported).
    pub changes: usize,
    /// How long the open page is watched for its idle request rate.
    pub idle: Duration,
}

/// Rows of either dashboard's runs list: their number, when they were first seen and how the
/// page got there (page clock, ms since its navigation started). Without rows: null, or the
/// first `GET /runs` that failed.
const ROWS_JS: &str = r##"
const n = document.querySelectorAll("tr.run-row, #runsList li.run-item").length;
const runs = performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname === "/runs");
if (n === 0) {
  const bad = runs.find((e) => e.responseStatus >= 400);
  return bad ? { rows: 0, failed: bad.responseStatus, url: bad.name } : null;
}
const nav = performance.getEntriesByType("navigation")[0];
return { rows: n, page_ms: performance.now(), visibility: document.visibilityState,
         control_deck: !!document.getElementById("runsList"),
         document_ms: nav.responseEnd, dom_content_loaded_ms: nav.domContentLoadedEventEnd || null,
         runs_requests: runs.length, first_runs_start_ms: runs.length ? runs[0].startTime : null,
         last_runs_end_ms: runs.length ? runs[runs.length - 1].responseEnd : null };
"##;

/// Does the run (`arguments[0]` = id, `[1]` = flow name) show status `[2]`? Ours: the row's
/// `data-status`; 0.5.1: the `status-<lowercase>` class of the item with that flow name
/// (its `getStatusMeta`).
const LIVE_JS: &str = r##"
const [id, flow, status] = arguments;
const tr = document.querySelector(`tr.run-row[data-run-id="${CSS.escape(id)}"]`);
if (tr) return tr.dataset.status === status;
for (const li of document.querySelectorAll("#runsList li.run-item")) {
  const name = li.querySelector(".run-flow-name");
  if (name && name.textContent === flow) return li.classList.contains("status-" + status.toLowerCase());
}
return false;
"##;

/// Both pages ask for `/metrics` while they start; once it has been answered the start-up
/// requests are done (0.5.1 asks after its runs pages and `/workers`).
const METRICS_SEEN_JS: &str = r##"
return performance.getEntriesByType("resource").some((e) => new URL(e.name).pathname === "/metrics");
"##;

/// Bytes and requests of the first visit: the document, every file, the first `GET /runs`
/// pages (`updated_after` 0 or absent) and the first request of each other API path.
const WEIGHT_JS: &str = r##"
const nav = performance.getEntriesByType("navigation")[0];
const out = { requests: 1, transfer: nav.transferSize, encoded: nav.encodedBodySize,
              decoded: nav.decodedBodySize, static_requests: 1, static_transfer: nav.transferSize,
              api_requests: 0, api_transfer: 0, polls_left_out: 0,
              entries: [[new URL(nav.name).pathname, nav.transferSize, "navigation"]] };
const seen = new Set();
for (const e of performance.getEntriesByType("resource")) {
  const u = new URL(e.name, location.href);
  const api = e.initiatorType === "fetch" || e.initiatorType === "xmlhttprequest";
  let boot = true;
  if (api && u.pathname === "/runs") {
    const after = u.searchParams.get("updated_after");
    boot = after === null || Number(after) === 0;
  } else if (api) {
    boot = !seen.has(u.pathname);
    seen.add(u.pathname);
  }
  if (!boot) { out.polls_left_out++; continue; }
  out.requests++;
  out.transfer += e.transferSize;
  out.encoded += e.encodedBodySize;
  out.decoded += e.decodedBodySize;
  if (api) { out.api_requests++; out.api_transfer += e.transferSize; }
  else { out.static_requests++; out.static_transfer += e.transferSize; }
  out.entries.push([u.pathname + u.search, e.transferSize, e.initiatorType]);
}
return out;
"##;

/// Requests the page started in `[arguments[0], arguments[1])` (page clock, ms), their bytes
/// and paths.
const IDLE_JS: &str = r##"
const [from, to] = arguments;
const es = performance.getEntriesByType("resource").filter((e) => e.startTime >= from && e.startTime < to);
const paths = {};
for (const e of es) { const p = new URL(e.name).pathname; paths[p] = (paths[p] || 0) + 1; }
return { requests: es.length, transfer: es.reduce((s, e) => s + e.transferSize, 0), paths };
"##;

/// Measure `spec`'s dashboard on its own nats-server and gateway (under `dir/dashboard`).
pub async fn phase(
    spec: &SystemSpec,
    plan: &Plan,
    dir: &Path,
    nats_bin: &Path,
    res: &mut SystemResult,
) -> Result<()> {
    let dp = plan
        .dashboard
        .clone()
        .ok_or_else(|| anyhow!("no dashboard plan"))?;
    let (driver, chromium) = browser::find()?;
    let ddir = dir.join("dashboard");
    std::fs::create_dir_all(&ddir)?;
    let nats = crate::start_nats(nats_bin, &ddir.join("js")).await?;
    let mut ctx = Ctx::new(
        spec,
        plan,
        &ddir,
        dir.join("tasks"),
        nats.client_url().to_string(),
    )?;
    log(
        spec.name,
        format!(
            "dashboard: nats-server at {}, {} finished runs + 1 running",
            ctx.nats_url, dp.runs
        ),
    );
    let result = async {
        let (gateway, _) = start_gateway_with(&mut ctx, "dashboard", vec![]).await?;
        res.ran = true;
        let r = with_gateway(&ctx, &dp, res, &gateway, nats.pid(), (&driver, &chromium)).await;
        gateway.stop(Duration::from_secs(5)).await;
        r
    }
    .await;
    nats.stop().await;
    result
}

async fn with_gateway(
    ctx: &Ctx<'_>,
    dp: &DashPlan,
    res: &mut SystemResult,
    gateway: &ChildProc,
    nats_pid: Option<u32>,
    (driver, chromium): (&Path, &Path),
) -> Result<()> {
    let name = ctx.spec.name;
    let (seeder, live) = seed(ctx, dp, res).await?;
    procs::wait_quiet(gateway.pid, Duration::from_secs(30)).await;
    let mut browser = Browser::start(driver, chromium, &ctx.dir)?;
    let r = measure(ctx, dp, res, &mut browser, &seeder, live, gateway, nats_pid).await;
    browser.stop().await;
    if r.is_ok() {
        log(name, "dashboard: done");
    }
    r
}

/// N finished runs and the running `bench-live` one (the newest), all counted by the gateway.
/// The snapshots are copies of one this gateway wrote for a submitted run (its own JSON shape);
/// that run itself becomes `bench-live`.
async fn seed(
    ctx: &Ctx<'_>,
    dp: &DashPlan,
    res: &mut SystemResult,
) -> Result<(Seeder, Map<String, Value>)> {
    let name = ctx.spec.name;
    let template = crate::post_yaml_when_ready(&ctx.http, &ctx.base, ctx.yaml).await?;
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(ctx.nats_url.as_str()),
    )
    .await
    .map_err(|_| anyhow!("connecting to nats timed out"))??;
    let seeder = Seeder::new(&client, "pyoco_runs", &template).await?;
    let t = Instant::now();
    seeder
        .put_copies(dp.runs, |snap, at| {
            snap.insert("status".into(), "COMPLETED".into());
            snap.insert("start_time".into(), (at - 0.05).into());
            snap.insert("end_time".into(), at.into());
        })
        .await?;
    let mut live = seeder.template().clone();
    let now = python::time();
    live.insert("flow_name".into(), LIVE_FLOW.into());
    live.insert("status".into(), "RUNNING".into());
    live.insert("start_time".into(), now.into());
    live.insert("updated_at".into(), now.into());
    live.insert("heartbeat_at".into(), now.into());
    seeder.put_snapshot(&live).await?;
    let put_s = t.elapsed().as_secs_f64();
    let counted = scale::wait_counted(
        &ctx.http,
        &ctx.base,
        dp.runs as u64 + 1,
        Duration::from_secs(180),
    )
    .await?;
    log(
        name,
        format!(
            "dashboard: wrote {} finished runs and `{LIVE_FLOW}` into KV in {put_s:.1} s; counted {:.0} ms later",
            dp.runs,
            counted.as_secs_f64() * 1e3
        ),
    );
    res.detail(
        "dashboard_seed",
        json!({"finished_runs": dp.runs, "live_run": live.get("run_id"), "seconds": put_s,
               "counted_after_ms": counted.as_secs_f64() * 1e3}),
    );
    Ok((seeder, live))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    ctx: &Ctx<'_>,
    dp: &DashPlan,
    res: &mut SystemResult,
    browser: &mut Browser,
    seeder: &Seeder,
    live: Map<String, Value>,
    gateway: &ChildProc,
    nats_pid: Option<u32>,
) -> Result<()> {
    let name = ctx.spec.name;
    let url = format!("{}/", ctx.base);
    // Page loads: a new browser each, the last one stays open for the rest.
    let mut firsts = Vec::new();
    let mut loads = Vec::new();
    let mut failed = Vec::new();
    let mut page = None;
    // A load that never shows runs is noted and replaced by another, up to `loads` times.
    let mut attempts = 0;
    while firsts.len() < dp.loads && attempts < 2 * dp.loads {
        attempts += 1;
        let client = browser.session().await?;
        match first_rows(&client, &url).await {
            Ok(Ok((ms, seen))) => {
                log(
                    name,
                    format!(
                        "dashboard: load {}/{}: navigation → first runs rendered {ms:.0} ms ({} rows; in the page: document {:.0} ms, first GET /runs started {:.0} ms, {} GET /runs answered by {:.0} ms, rows seen {:.0} ms)",
                        firsts.len() + 1,
                        dp.loads,
                        seen["rows"],
                        seen["document_ms"].as_f64().unwrap_or(f64::NAN),
                        seen["first_runs_start_ms"].as_f64().unwrap_or(f64::NAN),
                        seen["runs_requests"],
                        seen["last_runs_end_ms"].as_f64().unwrap_or(f64::NAN),
                        seen["page_ms"].as_f64().unwrap_or(f64::NAN),
                    ),
                );
                firsts.push(ms);
                loads.push(json!({"ms": ms, "page": seen}));
            }
            Ok(Err(why)) => {
                log(name, format!("dashboard: load attempt {attempts}: {why}"));
                failed.push(why);
            }
            Err(e) => {
                let _ = client.close().await;
                return Err(e);
            }
        }
        if firsts.len() == dp.loads && page.is_none() {
            page = Some(client);
        } else {
            let _ = client.close().await;
            // A closed page may leave requests running in the gateway (0.5.1 reads every run
            // for each): the next load starts on a quiet gateway.
            procs::wait_quiet(gateway.pid, Duration::from_secs(30)).await;
        }
    }
    if !failed.is_empty() {
        res.note(format!(
            "dashboard: {} of {attempts} page loads never showed a run (not timed; replaced by another load), first: {}",
            failed.len(),
            failed[0]
        ));
    }
    res.detail("dashboard_failed_loads", json!(failed));
    if firsts.is_empty() {
        bail!("no page load showed the runs list");
    }
    let first_ms = crate::load::median(firsts.clone());
    log(
        name,
        format!("dashboard: navigation → first runs rendered, median {first_ms:.0} ms (all: {firsts:.0?})"),
    );
    res.set("dash_first_rows_ms", first_ms);
    res.detail("dashboard_loads", json!(loads));
    let Some(page) = page else {
        return Ok(());
    };
    let r = open_page(ctx, dp, res, &page, seeder, live, gateway, nats_pid).await;
    let _ = page.close().await;
    r
}

/// Navigate to `url` in a fresh session and time until the runs list has a row: (ms, what the
/// page reported then); `Ok(Err(why))` when the page showed no run: within 10 s of a failed
/// `GET /runs` (0.5.1 never retries its first pages: one failed page leaves its list empty
/// until a run changes) or within 3 minutes.
async fn first_rows(client: &Client, url: &str) -> Result<Result<(f64, Value), String>> {
    client.goto("about:blank").await.context("about:blank")?;
    let t0 = Instant::now();
    client
        .goto(url)
        .await
        .with_context(|| format!("goto {url}"))?;
    let mut deadline = t0 + Duration::from_secs(180);
    let mut failure: Option<Value> = None;
    loop {
        // Errors while the page is being replaced count as "not yet".
        if let Ok(v) = client.execute(ROWS_JS, vec![]).await {
            if v["rows"].as_u64().is_some_and(|n| n > 0) {
                return Ok(Ok((t0.elapsed().as_secs_f64() * 1e3, v)));
            }
            if failure.is_none() && v["failed"].is_number() {
                deadline = deadline.min(Instant::now() + Duration::from_secs(10));
                failure = Some(v);
            }
        }
        if Instant::now() >= deadline {
            return Ok(Err(match failure {
                Some(f) => format!(
                    "no run shown 10 s after GET /runs answered {} ({})",
                    f["failed"],
                    f["url"].as_str().unwrap_or_default()
                ),
                None => "no run shown within 180 s".into(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// On the page left open: its first-visit weight, its idle request rate, then the KV changes.
#[allow(clippy::too_many_arguments)]
async fn open_page(
    ctx: &Ctx<'_>,
    dp: &DashPlan,
    res: &mut SystemResult,
    page: &Client,
    seeder: &Seeder,
    mut live: Map<String, Value>,
    gateway: &ChildProc,
    nats_pid: Option<u32>,
) -> Result<()> {
    let name = ctx.spec.name;
    // Room for every request of the rest of the phase (the default buffer holds 250).
    browser::eval(
        page,
        "performance.setResourceTimingBufferSize(100000); return true;",
        &[],
        "resource timing buffer",
    )
    .await?;

    // Page weight, once the start-up requests are answered.
    match browser::poll_until(
        page,
        METRICS_SEEN_JS,
        &[],
        Duration::from_secs(120),
        "the page's first GET /metrics",
    )
    .await
    {
        Ok(_) => {}
        Err(e) => res.note(format!("dashboard: {e:#}; page weight taken without it")),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w = browser::eval(page, WEIGHT_JS, &[], "page weight").await?;
    let bytes = w["transfer"].as_f64().unwrap_or(0.0);
    let requests = w["requests"].as_f64().unwrap_or(0.0);
    log(
        name,
        format!(
            "dashboard: first visit {bytes:.0} bytes in {requests:.0} requests (files {} bytes / {}, API {} bytes / {})",
            w["static_transfer"], w["static_requests"], w["api_transfer"], w["api_requests"]
        ),
    );
    res.set("dash_first_bytes", bytes);
    res.set("dash_first_requests", requests);
    res.detail("dashboard_weight", w);

    // Idle: requests the open page makes while nothing changes.
    procs::wait_quiet(gateway.pid, Duration::from_secs(10)).await;
    let from = browser::eval(page, "return performance.now();", &[], "page clock")
        .await?
        .as_f64()
        .unwrap_or(0.0);
    let cpu0 = procs::cpu_seconds(gateway.pid);
    let nats0 = nats_pid.and_then(procs::cpu_seconds);
    tokio::time::sleep(dp.idle).await;
    let cpu1 = procs::cpu_seconds(gateway.pid);
    let nats1 = nats_pid.and_then(procs::cpu_seconds);
    let secs = dp.idle.as_secs_f64();
    // Requests still running at the end of the window are listed once they are answered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = browser::eval(
        page,
        IDLE_JS,
        &[json!(from), json!(from + secs * 1e3)],
        "idle requests",
    )
    .await?;
    let per_min = 60.0 / secs;
    let rpm = idle["requests"].as_f64().unwrap_or(0.0) * per_min;
    let bpm = idle["transfer"].as_f64().unwrap_or(0.0) * per_min;
    let cpu = cpu0.zip(cpu1).map(|(a, b)| 100.0 * (b - a) / secs);
    let nats_cpu = nats0.zip(nats1).map(|(a, b)| 100.0 * (b - a) / secs);
    log(
        name,
        format!(
            "dashboard: open and idle for {secs:.0} s: {rpm:.1} requests/min ({}), {bpm:.0} bytes/min; gateway CPU {:.1} %, nats-server {:.1} %",
            idle["paths"],
            cpu.unwrap_or(f64::NAN),
            nats_cpu.unwrap_or(f64::NAN)
        ),
    );
    res.set("dash_idle_rpm", rpm);
    res.set("dash_idle_bytes_per_min", bpm);
    if let Some(c) = cpu {
        res.set("dash_idle_cpu_pct", c);
    }
    res.detail(
        "dashboard_idle",
        json!({"seconds": secs, "requests": idle["requests"], "bytes": idle["transfer"],
               "paths": idle["paths"], "gateway_cpu_pct": cpu, "nats_cpu_pct": nats_cpu}),
    );

    // KV change → shown.
    let id = live
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let args = |status: &str| [json!(id), json!(LIVE_FLOW), json!(status)];
    browser::poll_until(
        page,
        LIVE_JS,
        &args("RUNNING"),
        Duration::from_secs(60),
        "the running bench-live run",
    )
    .await?;
    let mut last = live
        .get("updated_at")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mut stamp = |snap: &mut Map<String, Value>, status: &str| {
        let at = python::time().max(last + 1e-3);
        last = at;
        snap.insert("status".into(), status.into());
        snap.insert("updated_at".into(), at.into());
        snap.insert("heartbeat_at".into(), at.into());
        let end = if status == "RUNNING" {
            Value::Null
        } else {
            at.into()
        };
        snap.insert("end_time".into(), end);
    };
    let mut lat = Vec::new();
    for i in 0..dp.changes {
        // Meet the page's poll at different phases (0–1.8 s).
        tokio::time::sleep(Duration::from_millis((i as u64 * 7 % 10) * 200)).await;
        stamp(&mut live, "COMPLETED");
        let t0 = Instant::now();
        seeder.put_snapshot(&live).await?;
        let (at, _) = browser::poll_until(
            page,
            LIVE_JS,
            &args("COMPLETED"),
            Duration::from_secs(60),
            "bench-live shown COMPLETED",
        )
        .await?;
        let ms = at.duration_since(t0).as_secs_f64() * 1e3;
        log(
            name,
            format!(
                "dashboard: change {}/{}: KV put → shown COMPLETED {ms:.0} ms",
                i + 1,
                dp.changes
            ),
        );
        lat.push(ms);
        stamp(&mut live, "RUNNING");
        seeder.put_snapshot(&live).await?;
        browser::poll_until(
            page,
            LIVE_JS,
            &args("RUNNING"),
            Duration::from_secs(60),
            "bench-live shown RUNNING again",
        )
        .await?;
    }
    let median = crate::load::median(lat.clone());
    let max = lat.iter().copied().fold(f64::NAN, f64::max);
    log(
        name,
        format!(
            "dashboard: KV change → shown: median {median:.0} ms, max {max:.0} ms (all: {lat:.0?})"
        ),
    );
    res.set("dash_change_p50_ms", median);
    res.set("dash_change_max_ms", max);
    res.detail("dashboard_changes_ms", json!(lat));
    Ok(())
}
