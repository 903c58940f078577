//! Live task logs end to end (real nats-server, real pyoco): lines a task prints every 100 ms
//! are followed through `/logs/watch` while the run is RUNNING and are all kept after it ends
//! (pages with `after`, resume with `Last-Event-ID`); a task printing a million lines completes
//! with the worker's memory bounded, its stored lines under the per-run cap and the marker
//! visible, while another run goes on; the API's limits and its 404s.

use std::time::{Duration, Instant};

use pyoco_testkit::{procfs, python_worker, write_task_module, AppOptions, TestApp};
use serde_json::{json, Value};

use crate::{RUN_TIMEOUT, TERMINAL};

const LOG_TASKS: &str = r#"
import subprocess, sys, time

def ticker(n=20, every=0.1):
    for i in range(n):
        print("tick %d" % i)
        time.sleep(every)
    print("ticker done", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
    return n

def many(n=1000000):
    for i in range(n):
        print("line %d of many" % i)
    return n

def quick():
    print("quick run")
    return "ok"
"#;

fn flow(task: &str) -> String {
    format!(
        "version: 1\nflow:\n  graph: |\n    {task}\ntasks:\n  {task}:\n    callable: log_tasks:{task}\n"
    )
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    id: Option<String>,
    data: Value,
    /// When it arrived (epoch seconds).
    at: f64,
}

fn now() -> f64 {
    pyoco_wire::python::time()
}

/// A `text/event-stream` response read event by event.
struct Sse {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app.http().get(app.url(path));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            response,
            buf: Vec::new(),
        }
    }

    /// The next event (heartbeats skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(frame).unwrap();
                let (mut name, mut id, mut data) = (String::new(), None, Value::Null);
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                if name == "heartbeat" {
                    continue;
                }
                return Some(Event {
                    name,
                    id,
                    data,
                    at: now(),
                });
            }
            match tokio::time::timeout(Duration::from_secs(30), self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) => return None,
                Ok(Err(err)) => panic!("reading the event stream: {err}"),
                Err(_) => panic!("no event for 30 s"),
            }
        }
    }

    /// Every event up to the end of the stream.
    async fn rest(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev);
        }
        out
    }
}

/// Every line of `run_id` through `GET /logs` pages of `limit` (asserting `next` chains).
async fn all_pages(app: &TestApp, run_id: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = 0u64;
    loop {
        let (status, page) = app
            .get_json(&format!(
                "/runs/{run_id}/logs?after={after}&limit={limit}{query}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let got = page["items"].as_array().unwrap().clone();
        assert!(got.len() <= limit);
        items.extend(got);
        match page["next"].as_u64() {
            Some(next) => {
                assert!(next > after, "{page}");
                after = next;
            }
            None => return items,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_followed_live_while_running_and_all_kept_after() {
    let app = TestApp::start(AppOptions::default()).await;
    write_task_module(&app.tasks_dir(), "log_tasks", LOG_TASKS);
    let run_id = app.submit_yaml(&flow("ticker"), "ticker", "default").await;
    let submitted = now();
    let mut sse = Sse::open(&app, &format!("/runs/{run_id}/logs/watch"), None).await;

    // The first five lines arrive while the run is still RUNNING, with their `ts`.
    let mut events = Vec::new();
    while events.len() < 5 {
        let ev = sse.next().await.expect("a log event");
        assert_eq!(ev.name, "log", "{ev:?}");
        events.push(ev);
    }
    let (_, run) = app.get_json(&format!("/runs/{run_id}")).await;
    assert_eq!(run["status"], "RUNNING", "{run}");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.data["line"], format!("tick {i}"));
        assert_eq!(ev.data["task"], "ticker");
        assert_eq!(ev.data["stream"], "stdout");
        assert_eq!(ev.id.as_deref(), Some(&*ev.data["seq"].to_string()));
        let ts = ev.data["ts"].as_f64().unwrap();
        assert!(ts >= submitted - 1.0 && ts <= ev.at + 0.01, "{ev:?}");
    }
    // Followed live: the 5th line came ~0.4 s after the 1st, not in one batch at the end.
    let spread = events[4].at - events[0].at;
    assert!(spread > 0.25, "events arrived together ({spread} s apart)");

    let rest = sse.rest().await;
    let end = rest.last().expect("an end event");
    assert_eq!(end.name, "end", "{rest:?}");
    assert_eq!(end.data, json!({"status": "COMPLETED"}));
    events.extend(rest[..rest.len() - 1].iter().cloned());
    let lines: Vec<&str> = events
        .iter()
        .map(|e| e.data["line"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = (0..20).map(|i| format!("tick {i}")).collect();
    want.push("ticker done".into());
    want.push("from a child process".into());
    assert_eq!(lines, want);
    let child = events.last().unwrap();
    assert_eq!(
        child.data["task"], "ticker",
        "fd-level output is attributed"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // print → SSE event latency (same machine, so the clocks agree).
    let mut latency: Vec<f64> = events
        .iter()
        .take(20)
        .map(|e| (e.at - e.data["ts"].as_f64().unwrap()) * 1000.0)
        .collect();
    latency.sort_by(f64::total_cmp);
    eprintln!(
        "print -> SSE latency: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        percentile(&latency, 0.5),
        percentile(&latency, 0.9),
        latency[latency.len() - 1]
    );
    assert!(percentile(&latency, 0.5) < 500.0, "{latency:?}");

    // All kept after the end: pages of 7 chained by `next` give the same lines.
    let run = app.wait_status(&run_id, TERMINAL, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED");
    let paged = all_pages(&app, &run_id, "", 7).await;
    let streamed: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(paged, streamed);
    // Filters: stream (server side) and task.
    let stderr = all_pages(&app, &run_id, "&stream=stderr", 100).await;
    assert_eq!(stderr.len(), 1);
    assert_eq!(stderr[0]["line"], "ticker done");
    assert_eq!(all_pages(&app, &run_id, "&task=ticker", 5).await.len(), 22);
    assert_eq!(all_pages(&app, &run_id, "&task=nope", 5).await.len(), 0);
    // The snapshot's stdout keeps working as for 0.5.1 clients (Python-level output only).
    let records = app.run_with_records(&run_id).await;
    let stdout = records["task_records"]["ticker"]["stdout"]
        .as_str()
        .unwrap();
    assert!(stdout.starts_with("tick 0\ntick 1\n"), "{stdout}");

    // Resume with Last-Event-ID: the lines after it, then the end.
    let tenth = seqs[9].to_string();
    let mut resumed = Sse::open(&app, &format!("/runs/{run_id}/logs/watch"), Some(&tenth)).await;
    let again = resumed.rest().await;
    assert_eq!(again.last().unwrap().name, "end");
    let again: Vec<u64> = again[..again.len() - 1]
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(again, seqs[10..].to_vec());
    // `after` wins over Last-Event-ID.
    let mut resumed = Sse::open(
        &app,
        &format!("/runs/{run_id}/logs/watch?after={}", seqs[20]),
        Some(&tenth),
    )
    .await;
    let again = resumed.rest().await;
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].data["seq"], seqs[21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_complete_under_the_cap_with_bounded_memory() {
    const CAP: u64 = 1024 * 1024;
    let mut app = TestApp::start_with(AppOptions::default(), |s| {
        s.task_log_max_bytes_per_run = CAP;
    })
    .await;
    app.start_worker().await; // a second worker, for the run that goes on meanwhile
    write_task_module(&app.tasks_dir(), "log_tasks", LOG_TASKS);
    // The gateway and the local workers run in this process.
    let me = std::process::id() as i32;
    let rss_before = procfs::rss_kib(me).unwrap();

    let big = app.submit_yaml(&flow("many"), "many", "default").await;
    app.wait_status(&big, &["RUNNING"], RUN_TIMEOUT).await;
    // Meanwhile another run completes.
    let small = app.submit_yaml(&flow("quick"), "quick", "default").await;
    let started = Instant::now();
    let mut peak = rss_before;
    let mut runner_peak = 0u64;
    let mut small_done_while_big_ran = false;
    loop {
        peak = peak.max(procfs::rss_kib(me).unwrap_or(0));
        // The runners (Python) are children of this process.
        for pid in procfs::descendants(me) {
            if procfs::cmdline(pid).contains("pyoco_runner") {
                runner_peak = runner_peak.max(procfs::rss_kib(pid).unwrap_or(0));
            }
        }
        let (_, s) = app.get_json(&format!("/runs/{small}")).await;
        let (_, b) = app.get_json(&format!("/runs/{big}")).await;
        if s["status"] == "COMPLETED" && b["status"] == "RUNNING" {
            small_done_while_big_ran = true;
        }
        if TERMINAL.contains(&b["status"].as_str().unwrap_or("")) {
            assert_eq!(b["status"], "COMPLETED", "{b}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the million-line run hangs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    assert!(
        small_done_while_big_ran,
        "the other run waited for the big one"
    );
    let growth_mib = (peak.saturating_sub(rss_before)) / 1024;
    eprintln!(
        "million lines: {took:?}, worker process RSS {} -> peak {} MiB",
        rss_before / 1024,
        peak / 1024
    );
    assert!(growth_mib < 150, "RSS grew by {growth_mib} MiB");
    eprintln!(
        "million lines: largest runner RSS {} MiB",
        runner_peak / 1024
    );
    assert!(runner_peak > 0, "no runner process seen");
    assert!(
        runner_peak / 1024 < 150,
        "a runner grew to {} MiB",
        runner_peak / 1024
    );

    let items = all_pages(&app, &big, "", 1000).await;
    let stored: u64 = items
        .iter()
        .map(|i| {
            serde_json::to_vec(&json!({"task": i["task"], "stream": i["stream"], "line": i["line"], "ts": i["ts"]}))
                .unwrap()
                .len() as u64
        })
        .sum();
    assert!(stored <= CAP, "{stored} stored bytes over the cap {CAP}");
    assert!(stored > CAP / 2, "{stored}");
    let n = items.len();
    assert_eq!(items[0]["line"], "line 0 of many");
    assert_eq!(items[n - 2]["line"], pyoco_store::LOG_LIMIT_MARKER);
    let last = items[n - 1]["line"].as_str().unwrap();
    let dropped = 1_000_000 - (n as u64 - 2);
    assert!(
        last.starts_with(&format!("\u{2026}[log limit reached: {dropped} lines (")),
        "{last}"
    );
    // The snapshot stays within its own limit, untouched by the live log.
    let records = app.run_with_records(&big).await;
    let out = records["task_records"]["many"]["stdout"].as_str().unwrap();
    assert!(out.contains("\u{2026}[truncated "));
    assert!(out.len() < 70 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_a_clear_422_and_other_tenants_a_404() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |s| {
        s.http_auth_mode = pyoco_config::AuthMode::ApiKey;
    })
    .await;
    let run_id = app.submit_yaml(&flow("quick"), "quick", "default").await;
    // A run no worker took (or a 0.5.1 worker ran) has no lines.
    let (status, page) = app.get_json(&format!("/runs/{run_id}/logs")).await;
    assert_eq!((status, page), (200, json!({"items": [], "next": null})));

    for (query, words) in [
        ("limit=0", "limit must be an integer from 1 to 1000"),
        ("limit=1001", "limit must be an integer from 1 to 1000"),
        ("limit=ten", "limit must be an integer from 1 to 1000"),
        ("after=-1", "after must be an integer"),
        ("after=1.5", "after must be an integer"),
        ("stream=stdin", "stream must be stdout or stderr"),
        (
            "timeout_sec=0",
            "timeout_sec must be an integer from 1 to 3600",
        ),
    ] {
        for path in ["logs", "logs/watch"] {
            if query.starts_with("timeout") && path == "logs" {
                continue;
            }
            let (status, body) = app
                .get_json(&format!("/runs/{run_id}/{path}?{query}"))
                .await;
            assert_eq!(status, 422, "{path}?{query}: {body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(words), "{path}?{query}: {detail}");
        }
    }
    let long = "t".repeat(1025);
    let (status, body) = app
        .get_json(&format!("/runs/{run_id}/logs?task={long}"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("at most 1024 bytes"));

    for path in ["logs", "logs/watch"] {
        let (status, body) = app.get_json(&format!("/runs/no-such-run/{path}")).await;
        assert_eq!((status, body), (404, json!({"detail": "run not found"})));
    }
    // A run that ended without lines (as one a 0.5.1 worker executed): the watch sends `end`.
    let entry = app.store().runs().get(&run_id).await.unwrap().unwrap();
    let mut snapshot: Value = serde_json::from_slice(&entry.value).unwrap();
    snapshot["status"] = json!("FAILED");
    app.store()
        .runs()
        .put(&run_id, serde_json::to_vec(&snapshot).unwrap())
        .await
        .unwrap();
    let mut sse = Sse::open(&app, &format!("/runs/{run_id}/logs/watch"), None).await;
    let events = sse.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].name.as_str(), &events[0].data),
        ("end", &json!({"status": "FAILED"}))
    );

    // Another tenant's key sees no such run.
    let made = pyoco_wire::new_api_key(
        "other",
        app.settings().auth_pepper.as_deref().unwrap_or_default(),
        std::num::NonZeroU32::new(1000).unwrap(),
        now(),
    )
    .unwrap();
    app.store()
        .auth()
        .create(
            &pyoco_wire::ApiKeyRecord::kv_key(&made.record.key_id),
            made.record.to_json(),
        )
        .await
        .unwrap();
    let header = &app.settings().http_api_key_header;
    for path in ["logs", "logs/watch"] {
        let response = reqwest::Client::new()
            .get(app.url(&format!("/runs/{run_id}/{path}")))
            .header(header.as_str(), &made.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"detail": "run not found"}));
        // and no key at all: the one auth layer answers first
        let response = reqwest::Client::new()
            .get(app.url(&format!("/runs/{run_id}/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_python_0_5_1_worker_has_no_lines_and_its_watch_ends() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    write_task_module(&app.tasks_dir(), "log_tasks", LOG_TASKS);
    let mut py = python_worker(
        &app.nats_url(),
        "py",
        "default",
        &app.tasks_dir(),
        &app.path("py-worker"),
    );
    app.wait_worker_registered("py").await;
    let run_id = app.submit_yaml(&flow("quick"), "quick", "default").await;
    let mut sse = Sse::open(&app, &format!("/runs/{run_id}/logs/watch"), None).await;
    let events = sse.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, "end");
    assert_eq!(events[0].data, json!({"status": "COMPLETED"}));
    let (status, page) = app.get_json(&format!("/runs/{run_id}/logs")).await;
    assert_eq!((status, page), (200, json!({"items": [], "next": null})));
    py.assert_running();
}
