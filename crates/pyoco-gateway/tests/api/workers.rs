//! `GET /workers` and `PATCH /workers/{worker_id}`, over records written straight into the
//! registry bucket the way workers write them.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use pyoco_store::StoreError;
use pyoco_testkit::{status_json, AppOptions, TestApp};
use pyoco_wire::{python, WheelSyncStatus, WorkerRecord, WorkerState};
use serde_json::{json, Value};

/// A record as a worker writes it, last seen `age` seconds ago, with a key from a newer version.
fn worker(id: &str, state: WorkerState, age: f64) -> WorkerRecord {
    let mut rec = WorkerRecord::starting(
        id,
        "9f0c3b6e2d8a4f5b8c7d6e5f4a3b2c1d",
        vec!["cpu".into()],
        python::time() - 60.0,
        WheelSyncStatus::initial(false),
    );
    rec.touch(python::time() - age);
    rec.state = state;
    if state == WorkerState::StoppedGraceful {
        rec.stopped_at = Some(rec.last_seen_at);
        rec.stop_reason = Some("graceful_shutdown".into());
    }
    rec.extra.insert("build".into(), json!("rs-0.1"));
    rec
}

async fn register(app: &TestApp, rec: &WorkerRecord) {
    app.store()
        .workers()
        .put(&rec.worker_id, rec.to_json())
        .await
        .unwrap();
}

async fn list(app: &TestApp, query: &str) -> (u16, Value) {
    status_json(app.get(&format!("/workers{query}")).await).await
}

/// The worker ids of a successful listing, in order.
async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = list(app, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap().to_string())
        .collect()
}

async fn patch(app: &TestApp, worker_id: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = app.http().patch(app.url(&format!("/workers/{worker_id}")));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    status_json(request.send().await.unwrap()).await
}

#[tokio::test]
async fn an_empty_registry_lists_no_workers() {
    let app = TestApp::gateway_only().await;
    for query in ["", "?scope=all", "?include_hidden=true&state=IDLE"] {
        assert_eq!(list(&app, query).await, (200, json!([])), "{query}");
    }
}

#[tokio::test]
async fn live_workers_are_listed_newest_first_with_every_stored_field() {
    let app = TestApp::gateway_only().await;
    let mut busy = worker("w-busy", WorkerState::Running, 2.0);
    busy.current_run_id = Some("c0000000-0000-4000-8000-000000000001".into());
    register(&app, &busy).await;
    register(&app, &worker("w-idle", WorkerState::Idle, 1.0)).await;

    let (status, body) = list(&app, "").await;
    assert_eq!(status, 200, "{body}");
    let listed = body.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["worker_id"], json!("w-idle"));
    assert_eq!(listed[0]["state"], json!("IDLE"));
    // The stored record, every field of it, with the state derived for display.
    let expected = serde_json::to_value(&busy).unwrap();
    assert_eq!(listed[1], expected);
    assert_eq!(listed[1]["state"], json!("RUNNING"));
    assert_eq!(listed[1]["build"], json!("rs-0.1"));
    assert_eq!(listed[1]["wheel_sync"]["last_result"], json!("disabled"));
    assert_eq!(listed[1]["heartbeat_at"], listed[1]["last_heartbeat_at"]);
}

#[tokio::test]
async fn a_silent_worker_shows_disconnected_and_a_stopped_one_stays_stopped() {
    let app = TestApp::gateway_only().await;
    register(&app, &worker("w-live", WorkerState::Idle, 1.0)).await;
    register(&app, &worker("w-silent", WorkerState::Running, 30.0)).await;
    register(
        &app,
        &worker("w-stopped", WorkerState::StoppedGraceful, 3600.0),
    )
    .await;

    let (status, body) = list(&app, "?scope=all").await;
    assert_eq!(status, 200, "{body}");
    let states: Vec<(&str, &str)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker_id"].as_str().unwrap(),
                w["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("w-live", "IDLE"),
            ("w-silent", "DISCONNECTED"),
            ("w-stopped", "STOPPED_GRACEFUL")
        ]
    );
    // The stored state is left as the worker wrote it.
    let stored = app
        .store()
        .workers()
        .get("w-silent")
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored["state"], json!("RUNNING"));

    assert_eq!(ids(&app, "").await, ["w-live"], "scope=active");
    assert_eq!(ids(&app, "?state=disconnected").await, Vec::<String>::new());
    assert_eq!(
        ids(&app, "?scope=all&state=%20Disconnected%20").await,
        ["w-silent"]
    );
    assert_eq!(
        ids(&app, "?scope=ALL&state=stopped_graceful").await,
        ["w-stopped"]
    );
}

#[tokio::test]
async fn hidden_and_limit_filters() {
    let app = TestApp::gateway_only().await;
    for i in 0..5 {
        let mut rec = worker(&format!("w{i}"), WorkerState::Idle, f64::from(i));
        rec.hidden = i == 1;
        register(&app, &rec).await;
    }
    assert_eq!(ids(&app, "").await, ["w0", "w2", "w3", "w4"]);
    assert_eq!(
        ids(&app, "?include_hidden=on").await,
        ["w0", "w1", "w2", "w3", "w4"]
    );
    assert_eq!(
        ids(&app, "?include_hidden=0").await,
        ["w0", "w2", "w3", "w4"]
    );
    assert_eq!(ids(&app, "?limit=2").await, ["w0", "w2"]);
    assert_eq!(ids(&app, "?limit=1.0&include_hidden=YES").await, ["w0"]);
    assert_eq!(ids(&app, "?limit=500").await.len(), 4);
    assert_eq!(ids(&app, "?state=idle&limit=3").await, ["w0", "w2", "w3"]);
}

#[tokio::test]
async fn legacy_and_unreadable_records() {
    let app = TestApp::gateway_only().await;
    let seen = python::time() - 1.0;
    // A v0.4 record: liveness only.
    app.store()
        .workers()
        .put("w-legacy", format!("{{\"heartbeat_at\":{seen}}}"))
        .await
        .unwrap();
    app.store()
        .workers()
        .put("w-broken", "{not json")
        .await
        .unwrap();

    let (status, body) = list(&app, "?scope=all").await;
    assert_eq!(status, 200, "{body}");
    let listed = body.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["worker_id"], json!("w-legacy"));
    assert_eq!(listed[0]["state"], json!("IDLE"));
    assert_eq!(listed[0]["last_seen_at"], json!(seen));
    assert_eq!(listed[0]["tags"], json!([]));
    assert_eq!(listed[0]["hidden"], json!(false));
}

#[tokio::test]
async fn invalid_queries_are_422() {
    let app = TestApp::gateway_only().await;
    let invalid = |reason: &str| json!({"detail": "invalid workers request", "reason": reason});
    assert_eq!(
        list(&app, "?scope=bad").await,
        (422, invalid("scope \"bad\": use active or all"))
    );
    assert_eq!(
        list(&app, "?scope=%20").await,
        (422, invalid("scope \" \": use active or all"))
    );
    assert_eq!(
        list(&app, "?state=bogus").await,
        (
            422,
            invalid("state \"bogus\": use RUNNING, IDLE, STOPPED_GRACEFUL or DISCONNECTED")
        )
    );

    let bool_error = |input: &str| {
        json!({"type": "bool_parsing", "loc": ["query", "include_hidden"],
               "msg": "Input should be a valid boolean, unable to interpret input", "input": input})
    };
    let ge = json!({"type": "greater_than_equal", "loc": ["query", "limit"],
                    "msg": "Input should be greater than or equal to 1", "input": "0",
                    "ctx": {"ge": 1}});
    for (query, detail) in [
        ("?include_hidden=maybe", json!([bool_error("maybe")])),
        ("?include_hidden=", json!([bool_error("")])),
        ("?limit=0", json!([ge])),
        (
            "?limit=501",
            json!([{"type": "less_than_equal", "loc": ["query", "limit"],
                    "msg": "Input should be less than or equal to 500", "input": "501",
                    "ctx": {"le": 500}}]),
        ),
        (
            "?limit=5&limit=abc",
            json!([{"type": "int_parsing", "loc": ["query", "limit"],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": "abc"}]),
        ),
        // Every type error at once, and before the handler's own checks.
        (
            "?limit=0&include_hidden=x&scope=bad",
            json!([bool_error("x"), ge]),
        ),
    ] {
        assert_eq!(
            list(&app, query).await,
            (422, json!({ "detail": detail })),
            "{query}"
        );
    }
}

#[tokio::test]
async fn hiding_and_showing_a_worker() {
    let app = TestApp::gateway_only().await;
    let rec = worker("w-1", WorkerState::Idle, 1.0);
    register(&app, &rec).await;

    let t0 = python::time();
    let (status, body) = patch(&app, "w-1", Some(r#"{"hidden": true}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["worker_id"], json!("w-1"));
    assert_eq!(body["hidden"], json!(true));
    let updated_at = body["updated_at"].as_f64().unwrap();
    assert!(updated_at >= t0 && updated_at <= python::time());
    assert_eq!(body.as_object().unwrap().len(), 3);

    // Stored: the flag and `updated_at` changed, nothing else.
    let stored = app.store().workers().get("w-1").await.unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    let mut expected = serde_json::to_value(&rec).unwrap();
    expected["hidden"] = json!(true);
    expected["updated_at"] = json!(updated_at);
    assert_eq!(stored, expected);

    assert_eq!(ids(&app, "").await, Vec::<String>::new());
    let (_, listed) = list(&app, "?include_hidden=true").await;
    assert_eq!(listed[0]["hidden"], json!(true));

    // pydantic's lax booleans are accepted.
    let (status, body) = patch(&app, "w-1", Some(r#"{"hidden": "no", "extra": 1}"#)).await;
    assert_eq!((status, &body["hidden"]), (200, &json!(false)), "{body}");
    assert_eq!(ids(&app, "").await, ["w-1"]);
    let (status, _) = patch(&app, "w-1", Some(r#"{"hidden": 1}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&app, "").await, Vec::<String>::new());
}

#[tokio::test]
async fn patch_of_an_unknown_worker_is_404() {
    let app = TestApp::gateway_only().await;
    for worker_id in ["nobody", "a*b", "a%20b", ".dot", "a..b"] {
        let (status, body) = patch(&app, worker_id, Some(r#"{"hidden": true}"#)).await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "worker not found"})),
            "{worker_id}"
        );
    }
    // Nothing was created.
    assert!(app.store().workers().keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn patch_with_a_bad_body_is_422_even_for_an_unknown_worker() {
    let app = TestApp::gateway_only().await;
    register(&app, &worker("w-1", WorkerState::Idle, 1.0)).await;
    let bool_type = |input: Value| {
        json!([{"type": "bool_type", "loc": ["body", "hidden"],
                "msg": "Input should be a valid boolean", "input": input}])
    };
    let bool_parsing = |input: Value| {
        json!([{"type": "bool_parsing", "loc": ["body", "hidden"],
                "msg": "Input should be a valid boolean, unable to interpret input",
                "input": input}])
    };
    for worker_id in ["w-1", "nobody"] {
        for (body, detail) in [
            (
                None,
                json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]),
            ),
            (
                Some("{}"),
                json!([{"type": "missing", "loc": ["body", "hidden"], "msg": "Field required",
                        "input": {}}]),
            ),
            (Some(r#"{"hidden":"x"}"#), bool_parsing(json!("x"))),
            (Some(r#"{"hidden":2}"#), bool_parsing(json!(2))),
            (Some(r#"{"hidden":null}"#), bool_type(json!(null))),
            (Some(r#"{"hidden":1.5}"#), bool_type(json!(1.5))),
            (Some(r#"{"hidden":[true]}"#), bool_type(json!([true]))),
            (
                Some("[1]"),
                json!([{"type": "model_attributes_type", "loc": ["body"],
                        "msg": "Input should be a valid dictionary or object to extract fields from",
                        "input": [1]}]),
            ),
            (
                Some(r#"{"hidden":"#),
                json!([{"type": "json_invalid", "loc": ["body", 10], "msg": "JSON decode error",
                        "input": {}, "ctx": {"error": "Expecting value"}}]),
            ),
        ] {
            let (status, got) = patch(&app, worker_id, body).await;
            assert_eq!(
                (status, got),
                (422, json!({ "detail": detail })),
                "{worker_id} {body:?}"
            );
        }
    }
}

/// What a worker's registry task does (§6.1): read the record, keep what others own (`hidden`),
/// refresh its liveness, compare-and-set; on a conflict read again. `beat` counts its writes.
async fn registry_writer(
    app: &TestApp,
    worker_id: &str,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) {
    let bucket = app.store().workers();
    while !stop.load(Ordering::SeqCst) {
        let entry = bucket.get(worker_id).await.unwrap().unwrap();
        let mut rec = WorkerRecord::from_json(&entry.value, worker_id).unwrap();
        let beat = rec.extra.get("beat").and_then(Value::as_u64).unwrap_or(0) + 1;
        rec.extra.insert("beat".into(), beat.into());
        rec.touch(python::time());
        match bucket
            .update(worker_id, rec.to_json(), entry.revision)
            .await
        {
            Ok(_) => {
                writes.fetch_add(1, Ordering::SeqCst);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(err) => panic!("registry write: {err}"),
        }
    }
}

#[tokio::test]
async fn a_patch_racing_with_the_workers_own_writes_keeps_both() {
    let app = TestApp::gateway_only().await;
    register(&app, &worker("w-1", WorkerState::Idle, 0.0)).await;
    for round in 0..10 {
        let hidden = round % 2 == 0;
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let before: u64 = {
            let entry = app.store().workers().get("w-1").await.unwrap().unwrap();
            let v: Value = serde_json::from_slice(&entry.value).unwrap();
            v["beat"].as_u64().unwrap_or(0)
        };
        let (patched, ()) = tokio::join!(
            async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let body = format!(r#"{{"hidden": {hidden}}}"#);
                let answer = patch(&app, "w-1", Some(&body)).await;
                stop.store(true, Ordering::SeqCst);
                answer
            },
            registry_writer(&app, "w-1", stop.clone(), writes.clone()),
        );
        assert_eq!(patched.0, 200, "{}", patched.1);
        let entry = app.store().workers().get("w-1").await.unwrap().unwrap();
        let stored: Value = serde_json::from_slice(&entry.value).unwrap();
        assert_eq!(stored["hidden"], json!(hidden), "round {round}");
        assert_eq!(
            stored["beat"].as_u64().unwrap_or(0),
            before + writes.load(Ordering::SeqCst),
            "round {round}: a worker write was lost"
        );
    }
}

#[tokio::test]
async fn the_registry_bucket_is_created_with_a_one_day_ttl() {
    let app = TestApp::gateway_only().await;
    let mut stream = app
        .store()
        .jetstream()
        .get_stream("KV_pyoco_workers")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(86_400));
    // So a worker gone for longer than the disconnect timeout is still there to be shown.
    register(&app, &worker("w-gone", WorkerState::Idle, 600.0)).await;
    assert_eq!(ids(&app, "?state=DISCONNECTED&scope=all").await, ["w-gone"]);
}

/// Log lines written while it is the thread's subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_registry_bucket_with_0_5_1s_ttl_is_reported_once() {
    // The gateway's store finds the bucket with 0.5.1's 15 s TTL (here created by the test's own
    // store, which has the app's settings).
    let app =
        TestApp::start_with(AppOptions::gateway_only(), |s| s.workers_kv_ttl_sec = 15.0).await;
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    // The test runtime is single-threaded: the gateway's tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    for _ in 0..3 {
        assert_eq!(list(&app, "").await.0, 200);
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("worker registry bucket"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("drops records after 15 s"), "{text}");
    assert!(
        warnings[0].contains("nats stream rm KV_pyoco_workers"),
        "{text}"
    );
}

#[tokio::test]
async fn listing_opens_no_jetstream_consumer_and_skips_deleted_workers() {
    let app = TestApp::gateway_only().await;
    let mut first = worker("w-b", WorkerState::Idle, 1.0);
    let mut second = worker("w-a", WorkerState::Idle, 1.0);
    second.last_seen_at = first.last_seen_at;
    first.extra.clear();
    second.extra.clear();
    register(&app, &first).await;
    register(&app, &second).await;
    register(&app, &worker("w-gone", WorkerState::Idle, 1.0)).await;
    app.store().workers().delete("w-gone").await.unwrap();

    // Equal `last_seen_at`: the bucket's order (the order they were written), like `kv.keys()`.
    assert_eq!(ids(&app, "").await, ["w-b", "w-a"]);

    // Listing used to open a JetStream consumer per request (async-nats' `keys()`), left to
    // the server's inactivity threshold: under load they hit the per-stream limit and every
    // listing answered 503.
    let stream = &app.store().workers().raw().stream_name;
    let consumers = || async {
        let mut info = app.store().jetstream().get_stream(stream).await.unwrap();
        info.info().await.unwrap().state.consumer_count
    };
    let before = consumers().await;
    for _ in 0..20 {
        assert_eq!(ids(&app, "?scope=all").await.len(), 2);
        let metrics = app.get("/metrics").await;
        assert_eq!(metrics.status(), 200);
    }
    assert_eq!(consumers().await, before);
}
