//! `GET /runs`: filters, both response shapes, cursor paging, validation, and the run index
//! behind it (corrupt records, deletes, restarts, read-your-writes).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pyoco_store::{SharedStore, Store, StoreConfig};
use pyoco_testkit::{
    eventually, settings_for, status_json, AppOptions, Gateway, TestApp, TestNats,
};
use pyoco_wire::{python, NewRun, RunSnapshot, RunStatus, RunsCursor};
use serde_json::{json, Value};

/// A snapshot as our gateway writes it, with `status` and `updated_at` set.
pub fn snapshot(run_id: &str, status: &str, updated_at: f64) -> RunSnapshot {
    let run = NewRun {
        run_id: run_id.to_string(),
        flow_name: "main".to_string(),
        tag: "default".to_string(),
        tags: vec![],
        tenant_id: None,
        api_key_id: None,
        params: serde_json::Map::new(),
        workflow: None,
    };
    let mut snapshot = RunSnapshot::pending(&run, updated_at);
    snapshot.status = RunStatus::parse(status);
    snapshot
}

pub async fn put(store: &Store, snapshot: &RunSnapshot) {
    store
        .runs()
        .put(&snapshot.run_id, snapshot.to_json())
        .await
        .unwrap();
}

/// A fresh NATS with `snapshots` stored *before* the gateway starts, so its index reads them
/// as the watch's history (the first request waits for that).
pub async fn app_with(snapshots: Vec<RunSnapshot>) -> TestApp {
    let stored_runs = snapshots
        .iter()
        .map(|s| (s.run_id.clone(), s.to_json()))
        .collect();
    TestApp::start(AppOptions {
        stored_runs,
        ..AppOptions::gateway_only()
    })
    .await
}

async fn list(app: &TestApp, query: &str) -> (u16, Value) {
    status_json(app.get(&format!("/runs{query}")).await).await
}

/// The `run_id`s of a list of items.
fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|i| i["run_id"].as_str().unwrap().to_string())
        .collect()
}

/// Poll the compat list until its ids are `want`.
async fn wait_for_ids(app: &TestApp, query: &str, want: &[&str]) {
    eventually(
        Duration::from_secs(10),
        &format!("GET /runs{query} to list {want:?}"),
        || async {
            let (status, body) = list(app, query).await;
            (status == 200 && ids(&body) == want).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_empty_bucket_lists_nothing_in_both_shapes() {
    let app = TestApp::gateway_only().await;
    assert_eq!(list(&app, "").await, (200, json!([])));
    let empty_vnext = json!({"items": [], "next_cursor": null});
    for query in [
        "?cursor=",
        "?updated_after=0",
        "?workflow_yaml_sha256=abc",
        "?cursor=&include=full",
    ] {
        assert_eq!(
            list(&app, query).await,
            (200, empty_vnext.clone()),
            "{query}"
        );
    }
}

#[tokio::test]
async fn the_compat_list_is_a_bare_array_of_summaries_newest_first() {
    let mut with_worker = snapshot("b", "RUNNING", 300.0);
    with_worker.worker_id = Some("w1".into());
    with_worker.heartbeat_at = 299.5;
    with_worker.params.insert("x".into(), json!(1));
    let app = app_with(vec![
        snapshot("a", "PENDING", 100.0),
        with_worker,
        snapshot("c", "COMPLETED", 200.0),
        snapshot("d", "PENDING", 300.0),
    ])
    .await;

    let (status, body) = list(&app, "").await;
    assert_eq!(status, 200, "{body}");
    // (updated_at, run_id) descending: the tie at 300 goes to the larger run id.
    assert_eq!(ids(&body), ["d", "b", "c", "a"]);
    assert_eq!(
        body[1],
        json!({
            "run_id": "b", "flow_name": "main", "tag": "default", "tags": ["default"],
            "tenant_id": null, "api_key_id": null, "status": "RUNNING", "updated_at": 300.0,
            "heartbeat_at": 299.5, "worker_id": "w1", "error": null
        })
    );
    // Summary keys only, and only those the snapshot has (no worker_id here).
    let keys: Vec<&str> = body[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "status",
            "updated_at",
            "heartbeat_at",
            "error"
        ]
    );
}

#[tokio::test]
async fn each_filter_matches_its_field_exactly() {
    let r1 = snapshot("r1", "COMPLETED", 1.0);
    let mut r2 = snapshot("r2", "RUNNING", 2.0);
    r2.flow_name = "etl".into();
    r2.tag = Some("gpu".into());
    r2.tags = vec!["gpu".into(), "nightly".into()];
    let mut r3 = snapshot("r3", "RUNNING", 3.0);
    r3.tag = Some("cpu".into());
    r3.tags = vec!["gpu".into()];
    let mut r4 = snapshot("r4", "FAILED", 4.0);
    r4.flow_name = "etl".into();
    r4.workflow_yaml_sha256 = Some(Some("abc123".into()));
    let app = app_with(vec![r1, r2, r3, r4]).await;

    for (query, want) in [
        ("", vec!["r4", "r3", "r2", "r1"]),
        ("?status=RUNNING", vec!["r3", "r2"]),
        ("?status=running", vec![]),
        ("?status=UNKNOWN", vec![]),
        ("?flow=etl", vec!["r4", "r2"]),
        ("?flow=nope", vec![]),
        // `tag` is the routing tag, not `tags`.
        ("?tag=gpu", vec!["r2"]),
        ("?tag=nightly", vec![]),
        ("?status=RUNNING&flow=main", vec!["r3"]),
        ("?status=RUNNING&tag=cpu&flow=main", vec!["r3"]),
        // Empty values filter nothing.
        ("?status=&flow=&tag=", vec!["r4", "r3", "r2", "r1"]),
        // The last of repeated values wins.
        ("?status=FAILED&status=COMPLETED", vec!["r1"]),
    ] {
        let (status, body) = list(&app, query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), want, "{query}");
    }

    // A workflow digest filter answers the vNext shape.
    let (status, body) = list(&app, "?workflow_yaml_sha256=abc123").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body["items"]), ["r4"]);
    assert_eq!(body["next_cursor"], Value::Null);
    let (_, body) = list(&app, "?workflow_yaml_sha256=").await;
    assert_eq!(ids(&body), ["r4", "r3", "r2", "r1"], "empty digest: compat");
}

#[tokio::test]
async fn updated_after_is_strict_and_answers_the_vnext_shape() {
    let app = app_with(vec![
        snapshot("a", "PENDING", 100.0),
        snapshot("b", "PENDING", 200.0),
        snapshot("c", "PENDING", 300.5),
    ])
    .await;
    for (after, want) in [
        ("200", vec!["c"]),
        ("199.999", vec!["c", "b"]),
        ("1e2", vec!["c", "b"]),
        ("0", vec!["c", "b", "a"]),
        ("-inf", vec!["c", "b", "a"]),
        ("300.5", vec![]),
        ("inf", vec![]),
        ("nan", vec![]),
    ] {
        let (status, body) = list(&app, &format!("?updated_after={after}")).await;
        assert_eq!(status, 200, "{after}: {body}");
        assert_eq!(ids(&body["items"]), want, "updated_after={after}");
        assert_eq!(body["next_cursor"], Value::Null);
    }

    let (status, body) = list(&app, "?updated_after=yesterday").await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail": [{
            "type": "float_parsing", "loc": ["query", "updated_after"],
            "msg": "Input should be a valid number, unable to parse string as a number",
            "input": "yesterday"
        }]})
    );
}

#[tokio::test]
async fn limit_must_be_between_1_and_200() {
    let runs = (0..201)
        .map(|i| snapshot(&format!("run-{i:03}"), "COMPLETED", 1000.0 + f64::from(i)))
        .collect();
    let app = app_with(runs).await;

    for (limit, kind, msg, ctx) in [
        (
            "0",
            "greater_than_equal",
            "Input should be greater than or equal to 1",
            json!({"ge": 1}),
        ),
        (
            "201",
            "less_than_equal",
            "Input should be less than or equal to 200",
            json!({"le": 200}),
        ),
    ] {
        let (status, body) = list(&app, &format!("?limit={limit}")).await;
        assert_eq!(status, 422, "{limit}");
        assert_eq!(
            body,
            json!({"detail": [{"type": kind, "loc": ["query", "limit"], "msg": msg,
                               "input": limit, "ctx": ctx}]})
        );
    }
    let (status, body) = list(&app, "?limit=ten").await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "int_parsing");
    // Both errors, in parameter order.
    let (status, body) = list(&app, "?limit=0&updated_after=x").await;
    assert_eq!(status, 422);
    let kinds: Vec<&str> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["float_parsing", "greater_than_equal"]);

    let (_, body) = list(&app, "?limit=1").await;
    assert_eq!(ids(&body), ["run-200"]);
    let (_, body) = list(&app, "?limit=200").await;
    assert_eq!(ids(&body).len(), 200);
    assert_eq!(ids(&body)[199], "run-001");
    let (_, body) = list(&app, "").await;
    assert_eq!(ids(&body).len(), 50, "default limit");
    let (_, body) = list(&app, "?limit=200&cursor=").await;
    assert_eq!(ids(&body["items"]).len(), 200);
    assert!(body["next_cursor"].is_string());
}

#[tokio::test]
async fn a_cursor_that_does_not_decode_is_422_invalid_list_query() {
    let app = app_with(vec![snapshot("a", "PENDING", 1.0)]).await;
    // Not base64; JSON without "u"; "u" not a number.
    let no_u = "eyJyIjoiYSJ9"; // {"r":"a"}
    let bad_u = "eyJ1IjoieCIsInIiOiJhIn0"; // {"u":"x","r":"a"}
    for cursor in ["%21%21%21", no_u, bad_u] {
        let (status, body) = list(&app, &format!("?cursor={cursor}")).await;
        assert_eq!(status, 422, "{cursor}: {body}");
        assert_eq!(body["detail"], "invalid list query", "{cursor}");
    }
}

#[tokio::test]
async fn next_cursor_names_the_last_item_and_is_null_on_the_last_page() {
    let app = app_with(vec![
        snapshot("a", "PENDING", 1.0),
        snapshot("b", "PENDING", 2.0),
        snapshot("c", "PENDING", 3.0),
        snapshot("d", "PENDING", 3.0),
        snapshot("e", "PENDING", 4.25),
    ])
    .await;

    let (_, page1) = list(&app, "?limit=2&cursor=").await;
    assert_eq!(ids(&page1["items"]), ["e", "d"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    assert_eq!(
        cursor,
        RunsCursor {
            updated_at: 3.0,
            run_id: "d".into()
        }
        .encode()
    );
    let (_, page2) = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page2["items"]), ["c", "b"]);
    let cursor = page2["next_cursor"].as_str().unwrap();
    let (_, page3) = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page3["items"]), ["a"]);
    assert_eq!(page3["next_cursor"], Value::Null);

    // A page that exactly reaches the end has no cursor.
    let (_, body) = list(&app, "?limit=5&cursor=").await;
    assert_eq!(body["next_cursor"], Value::Null);
    // A cursor as Python pads it, and one between items.
    let padded = format!(
        "{}==",
        RunsCursor {
            updated_at: 3.5,
            run_id: "x".into()
        }
        .encode()
    );
    let (status, body) = list(&app, &format!("?cursor={padded}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["items"]), ["d", "c", "b", "a"]);
    // Combined with a filter: positions are still taken from the cursor.
    let (_, body) = list(&app, "?limit=1&cursor=&updated_after=2").await;
    assert_eq!(ids(&body["items"]), ["e"]);
    let cursor = body["next_cursor"].as_str().unwrap();
    let (_, body) = list(&app, &format!("?limit=5&cursor={cursor}&updated_after=2")).await;
    assert_eq!(ids(&body["items"]), ["d", "c"]);
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn include_full_returns_the_stored_snapshots_in_page_order() {
    let mut a = snapshot("a", "COMPLETED", 10.0);
    a.params.insert("x".into(), json!(1));
    a.extra.insert("schedule_id".into(), json!("nightly"));
    let mut b = snapshot("b", "FAILED", 20.0);
    b.error = Some("boom".into());
    let c = snapshot("c", "PENDING", 5.0);
    let app = app_with(vec![a, b, c]).await;
    // Task records as a worker writes them.
    let raw_a = br#"{"run_id":"a","flow_name":"main","tag":"default","tags":["default"],"tenant_id":null,"api_key_id":null,"status":"COMPLETED","params":{"x":1},"tasks":{"t1":"SUCCEEDED"},"task_records":{"t1":{"state":"SUCCEEDED","output":2}},"start_time":9.5,"end_time":10.0,"heartbeat_at":10.0,"updated_at":10.0,"error":null,"schedule_id":"nightly"}"#;
    app.store().runs().put("a", raw_a.to_vec()).await.unwrap();
    eventually(Duration::from_secs(5), "the rewrite of a", || async {
        let (_, body) = list(&app, "?include=full&status=COMPLETED").await;
        body[0].get("task_records").map(|_| ())
    })
    .await;

    for include in ["full", "all"] {
        let (status, body) = list(&app, &format!("?include={include}&limit=2")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids(&body), ["b", "a"]);
        let stored_b = app.stored_snapshot("b").await;
        assert_eq!(body[0], Value::Object(stored_b));
        let stored_a: Value = serde_json::from_slice(raw_a).unwrap();
        assert_eq!(body[1], stored_a);
    }
    let (_, body) = list(&app, "?include=full&limit=2&cursor=").await;
    assert_eq!(ids(&body["items"]), ["b", "a"]);
    assert!(body["next_cursor"].is_string());
    // Anything else: summaries.
    let (_, body) = list(&app, "?include=records").await;
    assert!(body[1].get("task_records").is_none());
    assert!(body[1].get("params").is_none());
}

/// Pages over 1,000 runs while a writer keeps moving random runs to the top. Every run the
/// writer never touched is listed exactly once, and the whole walk is strictly descending.
#[tokio::test]
async fn cursor_paging_lists_every_untouched_run_once_while_runs_change() {
    let base = 1_700_000_000.0;
    let runs = (0..1000)
        .map(|i| snapshot(&format!("run-{i:04}"), "RUNNING", base + f64::from(i) * 0.5))
        .collect();
    let app = app_with(runs).await;

    let touched: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = app.store().clone();
        let touched = touched.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut writes = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let run_id = format!("run-{:04}", seed % 1000);
                touched.lock().unwrap().insert(run_id.clone());
                put(&store, &snapshot(&run_id, "COMPLETED", python::time())).await;
                writes += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            writes
        })
    };

    let mut seen: Vec<(f64, String)> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, body) = list(&app, &format!("?limit=37&cursor={cursor}")).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for item in body["items"].as_array().unwrap() {
            seen.push((
                item["updated_at"].as_f64().unwrap(),
                item["run_id"].as_str().unwrap().to_string(),
            ));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let touched = touched.lock().unwrap().clone();
    assert!(
        writes > 10 && !touched.is_empty(),
        "the writer ran ({writes} writes)"
    );

    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.0 > b.0 || (a.0 == b.0 && a.1 > b.1),
            "not strictly descending: {a:?} then {b:?}"
        );
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, run_id) in &seen {
        *counts.entry(run_id).or_default() += 1;
    }
    for i in 0..1000 {
        let run_id = format!("run-{i:04}");
        let n = counts.get(run_id.as_str()).copied().unwrap_or(0);
        if touched.contains(&run_id) {
            assert!(n <= 1, "{run_id} listed {n} times");
        } else {
            assert_eq!(n, 1, "{run_id} (never updated) listed {n} times");
        }
    }
    assert!(pages >= 1000 / 37, "{pages} pages");
}

#[tokio::test]
async fn a_corrupt_snapshot_is_skipped_and_the_list_still_answers() {
    let stored_runs = vec![
        ("a".to_string(), snapshot("a", "PENDING", 1.0).to_json()),
        ("b".to_string(), snapshot("b", "PENDING", 2.0).to_json()),
        ("bad1".to_string(), b"not json".to_vec()),
        ("bad2".to_string(), b"[1,2]".to_vec()),
    ];
    let app = TestApp::start(AppOptions {
        stored_runs,
        ..AppOptions::gateway_only()
    })
    .await;

    // In the history the index loads...
    assert_eq!(ids(&list(&app, "").await.1), ["b", "a"]);
    // ...and as a live change, replacing a good snapshot: the run leaves the list.
    app.store()
        .runs()
        .put("a", &b"{\"run_id\": \"a\", broken"[..])
        .await
        .unwrap();
    wait_for_ids(&app, "", &["b"]).await;
    let (status, body) = list(&app, "?include=full").await;
    assert_eq!((status, ids(&body)), (200, vec!["b".to_string()]));
    assert_eq!(app.get("/metrics").await.status(), 200);
    // Repaired, it is back.
    put(app.store(), &snapshot("a", "COMPLETED", 3.0)).await;
    wait_for_ids(&app, "", &["a", "b"]).await;
}

#[tokio::test]
async fn deleted_and_purged_runs_leave_the_list() {
    let app = app_with(vec![
        snapshot("a", "PENDING", 1.0),
        snapshot("b", "PENDING", 2.0),
        snapshot("c", "PENDING", 3.0),
    ])
    .await;
    assert_eq!(ids(&list(&app, "").await.1), ["c", "b", "a"]);
    app.store().runs().delete("b").await.unwrap();
    wait_for_ids(&app, "", &["c", "a"]).await;
    app.store().runs().raw().purge("c").await.unwrap();
    wait_for_ids(&app, "", &["a"]).await;
    // Re-created under the same key.
    put(app.store(), &snapshot("b", "PENDING", 5.0)).await;
    wait_for_ids(&app, "", &["b", "a"]).await;
}

#[tokio::test]
async fn a_new_gateway_on_the_same_nats_lists_every_run() {
    let runs = (0..120)
        .map(|i| snapshot(&format!("run-{i:03}"), "COMPLETED", f64::from(i)))
        .collect();
    let app = app_with(runs).await;
    let (_, first) = list(&app, "?limit=200").await;
    assert_eq!(ids(&first).len(), 120);

    let shared = SharedStore::connect_in_background(
        &app.settings().nats_url,
        "pyoco-http-api",
        StoreConfig::from(app.settings()),
    );
    shared.wait_ready(Duration::from_secs(20)).await.unwrap();
    let second = Gateway::start(app.settings(), shared).await;
    let (status, body) = status_json(second.get("/runs?limit=200").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, first);
}

#[tokio::test]
async fn a_submitted_run_is_listed_at_once() {
    let app = app_with(vec![snapshot("older", "COMPLETED", 1.0)]).await;
    for _ in 0..20 {
        let (status, body) =
            status_json(app.post_json("/runs", &json!({"flow_name": "f"})).await).await;
        assert_eq!(status, 200, "{body}");
        let run_id = body["run_id"].as_str().unwrap().to_string();
        let (status, body) = list(&app, "?limit=1&flow=f").await;
        assert_eq!(status, 200);
        assert_eq!(ids(&body), [run_id]);
        assert_eq!(body[0]["status"], "PENDING");
    }
}

#[tokio::test]
async fn the_list_follows_the_bucket_across_a_nats_restart() {
    let mut nats = TestNats::start().await;
    let port = nats.port();
    let store_dir = nats.store_dir().to_path_buf();
    let settings = settings_for(&nats.url());
    let shared = SharedStore::connect_in_background(
        &settings.nats_url,
        "pyoco-http-api",
        StoreConfig::from(&settings),
    );
    let store = shared.wait_ready(Duration::from_secs(20)).await.unwrap();
    put(&store, &snapshot("a", "PENDING", 1.0)).await;
    put(&store, &snapshot("b", "PENDING", 2.0)).await;
    let gateway = Gateway::start(&settings, shared).await;
    let (_, body) = status_json(gateway.get("/runs").await).await;
    assert_eq!(ids(&body), ["b", "a"]);

    nats.stop().await;
    // The list needs NATS like every run endpoint.
    eventually(
        Duration::from_secs(10),
        "a 503 while NATS is down",
        || async { (gateway.get("/runs").await.status() == 503).then_some(()) },
    )
    .await;
    let _nats = TestNats::start_with(|c| {
        c.port = Some(port);
        c.store_dir = store_dir.clone();
    })
    .await;
    let writer = Store::connect(
        &settings.nats_url,
        "writer",
        StoreConfig::from(&settings),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    writer.runs().delete("a").await.unwrap();
    put(&writer, &snapshot("c", "RUNNING", 3.0)).await;
    eventually(
        Duration::from_secs(20),
        "the list after the restart",
        || async {
            let (status, body) = status_json(gateway.get("/runs").await).await;
            (status == 200 && ids(&body) == ["c", "b"]).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_gateway_started_before_nats_lists_once_nats_is_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = settings_for(&format!("nats://127.0.0.1:{port}"));
    let shared = SharedStore::connect_in_background(
        &settings.nats_url,
        "pyoco-http-api",
        StoreConfig::from(&settings),
    );
    let gateway = Gateway::start(&settings, shared.clone()).await;
    for path in ["/runs", "/metrics"] {
        let (status, body) = status_json(gateway.get(path).await).await;
        assert_eq!(
            (status, body),
            (503, json!({"detail": "nats unavailable: NotConnected"})),
            "{path}"
        );
    }

    let _nats = TestNats::start_with(|c| c.port = Some(port)).await;
    let store = shared.wait_ready(Duration::from_secs(30)).await.unwrap();
    put(&store, &snapshot("a", "PENDING", 1.0)).await;
    eventually(Duration::from_secs(20), "the run listed", || async {
        let (status, body) = status_json(gateway.get("/runs").await).await;
        (status == 200 && ids(&body) == ["a"]).then_some(())
    })
    .await;
    assert_eq!(gateway.get("/metrics").await.status(), 200);
}

/// `MALLOC_ARENA_MAX=1 cargo test --release -p pyoco-gateway --test api -- --ignored --nocapture ten_thousand`
/// (the arena setting makes the heap figure cover every thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: seeds 10,000 runs"]
async fn ten_thousand_runs_list_and_metrics_p50() {
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
    /// Bytes the allocator has handed out and not taken back (glibc; counts the main arena
    /// only: run with `MALLOC_ARENA_MAX=1`).
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }
    let statuses = ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "RUNNING"];
    let base = python::time() - 5000.0;
    let runs: Vec<RunSnapshot> = (0..10_000)
        .map(|i| {
            let mut s = snapshot(
                &uuid_like(i),
                statuses[i as usize % statuses.len()],
                base + f64::from(i) * 0.25,
            );
            s.flow_name = format!("flow-{}", i % 7);
            s
        })
        .collect();
    let started = Instant::now();
    let app = app_with(runs).await;
    println!("seeded 10,000 runs in {:?}", started.elapsed());

    // A second gateway in this process: its index is the only new thing.
    let rss_before = rss_kib();
    let heap_before = heap_in_use();
    let shared = SharedStore::connect_in_background(
        &app.settings().nats_url,
        "bench",
        StoreConfig::from(app.settings()),
    );
    shared.wait_ready(Duration::from_secs(20)).await.unwrap();
    let started = Instant::now();
    let gateway = Gateway::start(app.settings(), shared).await;
    let response = gateway.get("/runs?limit=1").await;
    assert_eq!(response.status(), 200);
    let loaded_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "index loaded 10,000 runs in {loaded_in:?}; heap in use +{} KiB, process RSS +{} KiB \
         (a second NATS client and gateway, and the history's buffers, included)",
        (heap_in_use() - heap_before) / 1024,
        rss_kib() - rss_before
    );

    for path in [
        "/runs?limit=100",
        "/runs?limit=100&cursor=",
        "/runs?limit=100&status=FAILED&flow=flow-3",
        "/runs?limit=100&include=full",
        "/metrics",
    ] {
        let mut times = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            let response = gateway.get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            let _ = response.bytes().await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{path}: p50 {:?}, p90 {:?}, p99 {:?}",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() * 99 / 100]
        );
    }
}

fn uuid_like(i: u32) -> String {
    format!("{i:08x}-2f0a-4d4e-9a8b-1c2d3e4f5a6b")
}
