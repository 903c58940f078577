//! `GET /runs/{run_id}/watch` (SSE): events driven by KV writes made directly with the store,
//! read from a real HTTP stream the way the Python client reads them.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use pyoco_testkit::{status_json, TestApp};
use pyoco_wire::python;
use serde_json::{json, Value};

const RUN: &str = "0b6e5c1e-2f0a-4d4e-9a8b-1c2d3e4f5a6b";

/// A snapshot as a worker writes it.
fn snapshot(status: &str, updated_at: f64) -> Value {
    json!({
        "run_id": RUN, "flow_name": "main", "tag": "default", "tags": ["default"],
        "tenant_id": null, "api_key_id": null, "status": status, "params": {"x": "é"},
        "tasks": {"t1": "SUCCEEDED"},
        "task_records": {"t1": {"state": "SUCCEEDED", "output": 2}},
        "start_time": 1712345678.5, "end_time": null,
        "heartbeat_at": updated_at, "updated_at": updated_at, "error": null
    })
}

/// Write the run's snapshot; returns its KV revision.
async fn put(app: &TestApp, status: &str, updated_at: f64) -> u64 {
    app.store()
        .runs()
        .put(
            RUN,
            serde_json::to_vec(&snapshot(status, updated_at)).unwrap(),
        )
        .await
        .unwrap()
}

/// One parsed event.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    id: Option<u64>,
    data: Value,
    /// The whole frame as sent, blank line included.
    raw: String,
}

impl Event {
    fn status(&self) -> &str {
        self.data["snapshot"]["status"].as_str().unwrap_or("")
    }
}

/// An open SSE stream, parsed like the Python client does (`event:`/`data:` lines, a blank
/// line ends an event), plus `id:`.
struct Sse {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(app: &TestApp, query: &str) -> Sse {
        Self::open_with(app, query, None).await
    }

    async fn open_with(app: &TestApp, query: &str, last_event_id: Option<u64>) -> Sse {
        let mut request = app
            .http()
            .get(app.url(&format!("/runs/{RUN}/watch{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("GET watch");
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream. Panics after `within`.
    async fn next_within(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no event or end of stream within {within:?}"))
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(parse_event(String::from_utf8(raw).expect("UTF-8 frame")));
            }
            match self.response.chunk().await.expect("stream read") {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => {
                    assert!(self.buf.is_empty(), "partial frame at end: {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(event) = tokio::time::timeout(quiet, self.next()).await {
            panic!("expected nothing for {quiet:?}, got {event:?}");
        }
    }
}

fn parse_event(raw: String) -> Event {
    let mut name = "message".to_string();
    let mut id = None;
    let mut data = Vec::new();
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().expect("numeric id"));
        }
    }
    let data = serde_json::from_str(&data.join("\n")).expect("data is JSON");
    Event {
        name,
        id,
        data,
        raw,
    }
}

/// Watch consumers on the runs bucket's stream (each open watch holds one; other parts of
/// the gateway may hold consumers of their own).
async fn kv_consumers(app: &TestApp) -> usize {
    let stream = app
        .store()
        .jetstream()
        .get_stream("KV_pyoco_runs")
        .await
        .expect("KV stream");
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .expect("consumer names");
    // Every consumer: the run index's one watch, and whatever a watcher would add.
    names.len()
}

const SOON: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_current_snapshot_arrives_at_once_in_0_5_1_frames() {
    let app = TestApp::gateway_only().await;
    let revision = put(&app, "PENDING", 1712345679.25).await;

    let started = Instant::now();
    let mut sse = Sse::open(&app, "").await;
    let headers = sse.response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["connection"], "keep-alive");
    assert_eq!(headers["x-accel-buffering"], "no");

    let event = sse.next_within(SOON).await.expect("first event");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event.name, "snapshot");
    assert_eq!(event.id, Some(revision));
    // Records are filtered like GET /runs/{id}; everything else is the stored snapshot.
    let mut expected = snapshot("PENDING", 1712345679.25);
    expected.as_object_mut().unwrap().remove("task_records");
    assert_eq!(event.data["snapshot"], expected);
    assert_eq!(event.data["run_id"], RUN);
    let ts = event.data["ts"].as_f64().expect("ts is a float");
    assert!((ts - python::time()).abs() < 5.0);
    // Exactly `event:` + one compact, ASCII-safe `data:` line, then `id:`.
    let data = event
        .raw
        .strip_prefix("event: snapshot\ndata: ")
        .and_then(|rest| rest.strip_suffix(&format!("\nid: {revision}\n\n")))
        .unwrap_or_else(|| panic!("unexpected frame layout: {:?}", event.raw));
    assert!(!data.contains('\n') && !data.contains(", ") && data.is_ascii());
    assert!(data.starts_with(&format!(r#"{{"run_id":"{RUN}","snapshot":{{"run_id""#)));
    assert!(data.contains(r#""params":{"x":"\u00e9"}"#), "{data}");
}

#[tokio::test]
async fn every_status_transition_arrives_in_order() {
    let app = TestApp::gateway_only().await;
    let t = python::time();
    let first = put(&app, "PENDING", t).await;
    let mut sse = Sse::open(&app, "?include=records").await;
    let event = sse.next_within(SOON).await.unwrap();
    assert_eq!((event.status(), event.id), ("PENDING", Some(first)));
    assert_eq!(
        event.data["snapshot"]["task_records"],
        json!({"t1": {"state": "SUCCEEDED", "output": 2}})
    );

    let mut revisions = Vec::new();
    for (i, status) in ["RUNNING", "RUNNING", "COMPLETED"].iter().enumerate() {
        revisions.push(put(&app, status, t + 1.0 + i as f64).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let event = sse.next_within(SOON).await.expect("snapshot event");
        assert_eq!(event.name, "snapshot");
        got.push((event.status().to_string(), event.id.unwrap()));
    }
    let want: Vec<(String, u64)> = ["RUNNING", "RUNNING", "COMPLETED"]
        .iter()
        .map(|s| s.to_string())
        .zip(revisions)
        .collect();
    assert_eq!(got, want);
    // Without `until_terminal` the stream stays open after COMPLETED, like 0.5.1.
    sse.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn since_skips_snapshots_older_than_it() {
    let app = TestApp::gateway_only().await;
    put(&app, "PENDING", 100.0).await;
    let mut sse = Sse::open(&app, "?since=200").await;
    sse.expect_silence(Duration::from_millis(300)).await;

    put(&app, "RUNNING", 150.0).await; // still older: not sent
    let newer = put(&app, "RUNNING", 200.0).await; // `>=` since: sent
    let event = sse.next_within(SOON).await.unwrap();
    assert_eq!(event.id, Some(newer));
    assert_eq!(event.data["snapshot"]["updated_at"], json!(200.0));

    // A `since` at or before the current snapshot does not hide it.
    let mut sse = Sse::open(&app, "?since=200.0").await;
    assert_eq!(sse.next_within(SOON).await.unwrap().id, Some(newer));
}

#[tokio::test]
async fn a_heartbeat_follows_five_idle_seconds_and_the_stream_ends_at_timeout_sec() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let started = Instant::now();
    let mut sse = Sse::open(&app, "?timeout_sec=7").await;
    assert_eq!(sse.next_within(SOON).await.unwrap().name, "snapshot");

    let heartbeat = sse
        .next_within(Duration::from_secs(7))
        .await
        .expect("heartbeat");
    let at = started.elapsed();
    assert_eq!(heartbeat.name, "heartbeat");
    assert_eq!(heartbeat.id, None);
    assert!(
        at >= Duration::from_millis(4900) && at < Duration::from_millis(6500),
        "heartbeat after {at:?}"
    );
    assert!(
        heartbeat.raw.starts_with("event: heartbeat\ndata: {")
            && heartbeat.raw.ends_with("}\n\n")
            && heartbeat.raw.matches('\n').count() == 3,
        "{:?}",
        heartbeat.raw
    );
    let data = heartbeat.data.as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["run_id", "ts"]);
    assert_eq!(data["run_id"], RUN);

    assert!(sse.next_within(Duration::from_secs(4)).await.is_none());
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(6900) && ended < Duration::from_millis(8000),
        "ended after {ended:?}"
    );
}

#[tokio::test]
async fn the_stream_ends_when_timeout_sec_elapses_even_while_the_run_changes() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let started = Instant::now();
    let mut sse = Sse::open(&app, "?timeout_sec=1").await;
    let writer = async {
        for _ in 0..30 {
            put(&app, "RUNNING", python::time()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let reader = async {
        let mut events = 0;
        while sse.next_within(SOON).await.is_some() {
            events += 1;
        }
        (events, started.elapsed())
    };
    let ((), (events, ended)) = tokio::join!(writer, reader);
    assert!(events >= 10, "{events} events");
    assert!(
        ended >= Duration::from_millis(950) && ended < Duration::from_millis(1500),
        "ended after {ended:?}"
    );
}

#[tokio::test]
async fn until_terminal_ends_the_stream_right_after_the_terminal_snapshot() {
    let app = TestApp::gateway_only().await;
    put(&app, "PENDING", python::time()).await;
    let mut sse = Sse::open(&app, "?until_terminal=true").await;
    assert_eq!(sse.next_within(SOON).await.unwrap().status(), "PENDING");
    put(&app, "RUNNING", python::time()).await;
    assert_eq!(sse.next_within(SOON).await.unwrap().status(), "RUNNING");
    let done = put(&app, "FAILED", python::time()).await;
    let event = sse.next_within(SOON).await.unwrap();
    assert_eq!((event.status(), event.id), ("FAILED", Some(done)));
    assert!(sse.next_within(SOON).await.is_none(), "stream ends");

    // Already terminal: the snapshot, then the end.
    let mut sse = Sse::open(&app, "?until_terminal=1").await;
    assert_eq!(sse.next_within(SOON).await.unwrap().id, Some(done));
    assert!(sse.next_within(SOON).await.is_none());
    // The client already has the terminal revision: just the end.
    let mut sse = Sse::open_with(&app, "?until_terminal=true", Some(done)).await;
    assert!(sse.next_within(SOON).await.is_none());
}

#[tokio::test]
async fn last_event_id_never_resends_what_the_client_already_has() {
    let app = TestApp::gateway_only().await;
    let first = put(&app, "RUNNING", python::time()).await;

    // Header (EventSource) and query (fetch clients): the current revision is not resent.
    let mut by_header = Sse::open_with(&app, "", Some(first)).await;
    let mut by_query = Sse::open(&app, &format!("?last_event_id={first}")).await;
    by_header.expect_silence(Duration::from_millis(300)).await;
    by_query.expect_silence(Duration::from_millis(10)).await;
    let second = put(&app, "COMPLETED", python::time()).await;
    for sse in [&mut by_header, &mut by_query] {
        let event = sse.next_within(SOON).await.unwrap();
        assert_eq!((event.status(), event.id), ("COMPLETED", Some(second)));
    }

    // A client behind (it missed `second`) gets the current state at once.
    let mut behind = Sse::open_with(&app, "", Some(first)).await;
    assert_eq!(behind.next_within(SOON).await.unwrap().id, Some(second));
}

#[tokio::test]
async fn the_stream_ends_when_the_run_is_deleted() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let mut sse = Sse::open(&app, "").await;
    sse.next_within(SOON).await.unwrap();
    app.store().runs().delete(RUN).await.unwrap();
    assert!(sse.next_within(SOON).await.is_none());
}

#[tokio::test]
async fn unknown_runs_are_404_before_streaming() {
    let app = TestApp::gateway_only().await;
    for path in [
        format!("/runs/{RUN}/watch"),
        "/runs/not*a*key/watch".to_string(),
    ] {
        let (status, body) = status_json(app.get(&path).await).await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "run not found"})),
            "{path}"
        );
    }
}

#[tokio::test]
async fn timeout_sec_outside_1_to_600_is_fastapis_422() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    for (value, kind, bound) in [
        ("0", "greater_than_equal", json!({"ge": 1})),
        ("601", "less_than_equal", json!({"le": 600})),
    ] {
        let (status, body) = status_json(
            app.get(&format!("/runs/{RUN}/watch?timeout_sec={value}"))
                .await,
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["detail"][0]["type"], kind);
        assert_eq!(body["detail"][0]["loc"], json!(["query", "timeout_sec"]));
        assert_eq!(body["detail"][0]["input"], value);
        assert_eq!(body["detail"][0]["ctx"], bound);
    }
    let (status, body) =
        status_json(app.get(&format!("/runs/{RUN}/watch?since=yesterday")).await).await;
    assert_eq!(
        (status, &body["detail"][0]["type"]),
        (422, &json!("float_parsing"))
    );
    // Bounds themselves are fine.
    for ok in ["1", "600"] {
        let mut sse = Sse::open(&app, &format!("?timeout_sec={ok}")).await;
        assert!(sse.next_within(SOON).await.is_some());
    }
}

#[tokio::test]
async fn a_hundred_watchers_of_one_run_all_see_the_same_sequence() {
    let app = TestApp::gateway_only().await;
    let t = python::time();
    let mut revisions = vec![put(&app, "PENDING", t).await];
    let baseline = kv_consumers(&app).await;

    let opening = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut sse = Sse::open(&app, "?until_terminal=true").await;
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = sse.next_within(Duration::from_secs(10)).await {
                seen.push((
                    event.status().to_string(),
                    event.id.unwrap(),
                    Instant::now(),
                ));
            }
            seen
        }));
    }
    let opened = opening.elapsed();
    // They share the gateway's one watch of the bucket: no consumer each (0.5.1's way of
    // one consumer per watcher ran into the server's limit at about 1,000).
    assert_eq!(kv_consumers(&app).await, baseline);

    let mut written_at = Vec::new();
    for (i, status) in ["RUNNING", "RUNNING", "RUNNING", "COMPLETED"]
        .iter()
        .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        written_at.push(Instant::now());
        revisions.push(put(&app, status, t + 1.0 + i as f64).await);
    }
    let want: Vec<(String, u64)> = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "COMPLETED"]
        .iter()
        .map(|s| s.to_string())
        .zip(revisions)
        .collect();

    let mut fan_out = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let seen = reader.await.expect("reader task");
        let sequence: Vec<(String, u64)> = seen.iter().map(|(s, id, _)| (s.clone(), *id)).collect();
        assert_eq!(sequence, want, "watcher {i}");
        for (event, written) in seen[1..].iter().zip(&written_at) {
            fan_out.push(event.2 - *written);
        }
    }
    fan_out.sort();
    println!(
        "100 watchers: opened in {opened:?}; KV write -> event at all 100: p50 {:?}, max {:?}",
        fan_out[fan_out.len() / 2],
        fan_out[fan_out.len() - 1]
    );
    assert_eq!(kv_consumers(&app).await, baseline);
}

#[tokio::test]
async fn watchers_coming_and_going_cost_no_nats_consumer() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let baseline = kv_consumers(&app).await;
    assert!(baseline >= 1, "the run index's own watch");

    let mut sse = Sse::open(&app, "").await;
    sse.next_within(SOON).await.unwrap();
    assert_eq!(kv_consumers(&app).await, baseline);
    drop(sse);
    for _ in 0..100 {
        let mut sse = Sse::open(&app, "").await;
        sse.next_within(SOON).await.unwrap();
    }
    assert_eq!(kv_consumers(&app).await, baseline);
    // And a new watcher still gets the next change.
    let mut sse = Sse::open(&app, "").await;
    sse.next_within(SOON).await.unwrap();
    put(&app, "COMPLETED", python::time()).await;
    let event = sse.next_within(SOON).await.expect("the change");
    assert_eq!(event.status(), "COMPLETED");
}

#[tokio::test]
async fn the_stream_ends_when_nats_goes_away() {
    let mut app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let mut sse = Sse::open(&app, "").await;
    sse.next_within(SOON).await.unwrap();
    app.stop_nats().await;
    // Noticed at the latest when the next heartbeat is due (5 s).
    assert!(sse.next_within(Duration::from_secs(8)).await.is_none());
}

#[tokio::test]
async fn a_change_reaches_the_watcher_within_milliseconds() {
    let app = TestApp::gateway_only().await;
    put(&app, "RUNNING", python::time()).await;
    let mut sse = Sse::open(&app, "").await;
    sse.next_within(SOON).await.unwrap();

    let mut latencies = Vec::new();
    for _ in 0..50 {
        let written = Instant::now();
        let revision = put(&app, "RUNNING", python::time()).await;
        let event = sse.next_within(SOON).await.unwrap();
        latencies.push(written.elapsed());
        assert_eq!(event.id, Some(revision));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "KV write -> SSE event latency over 50 changes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies[latencies.len() - 1]
    );
    assert!(p50 < Duration::from_millis(200), "p50 {p50:?}");
}

#[tokio::test]
async fn an_open_watch_does_not_hold_up_gateway_shutdown() {
    let mut app = TestApp::gateway_only().await;
    put(&app, "RUNNING", 1712345679.25).await;
    let mut sse = Sse::open(&app, "?timeout_sec=600").await;
    sse.next_within(SOON).await.expect("first event");

    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for the open watch",
        started.elapsed()
    );
    // The stream ended cleanly (no more events, no hang).
    assert!(sse.next_within(Duration::from_secs(2)).await.is_none());
}
