//! Resources are created exactly as pyoco-server 0.5.1 creates them, kept when they exist,
//! and the typed stores behave (empty means empty, compare-and-set detects concurrent writers).

use std::time::Duration;

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use pyoco_store::{Store, StoreConfig, StoreError, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::TestNats;

async fn store(nats: &TestNats) -> Store {
    Store::connect(
        &nats.url(),
        "test",
        StoreConfig::default(),
        DEFAULT_CONNECT_TIMEOUT,
    )
    .await
    .expect("store connects")
}

#[tokio::test]
async fn every_resource_is_created_with_the_contract_config() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let js = store.jetstream();

    let work = js.get_stream("PYOCO_WORK").await.unwrap();
    let cfg = &work.cached_info().config;
    assert_eq!(cfg.subjects, vec!["pyoco.work.>".to_string()]);
    assert_eq!(cfg.retention, RetentionPolicy::WorkQueue);
    assert_eq!(cfg.storage, StorageType::File);

    let dlq = js.get_stream("PYOCO_DLQ").await.unwrap();
    let cfg = &dlq.cached_info().config;
    assert_eq!(cfg.subjects, vec!["pyoco.dlq.>".to_string()]);
    assert_eq!(cfg.retention, RetentionPolicy::Limits);
    assert_eq!(cfg.max_age, Duration::from_secs(604_800));
    assert_eq!(cfg.max_messages, 100_000);
    assert_eq!(cfg.max_bytes, 536_870_912);

    let logs = js.get_stream("PYOCO_TASK_LOGS").await.unwrap();
    let cfg = &logs.cached_info().config;
    assert_eq!(cfg.subjects, vec!["pyoco.logs.>".to_string()]);
    assert_eq!(cfg.retention, RetentionPolicy::Limits);
    assert_eq!(cfg.max_age, Duration::from_secs(604_800));
    assert_eq!(cfg.max_bytes, 1_073_741_824);
    assert_eq!(cfg.discard, DiscardPolicy::Old);

    for (bucket, ttl) in [
        ("pyoco_runs", Duration::ZERO),
        ("pyoco_workers", Duration::from_secs(86_400)),
        ("pyoco_auth", Duration::ZERO),
        ("pyoco_wheel_history", Duration::from_secs(7_776_000)),
    ] {
        let s = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        let cfg = &s.cached_info().config;
        assert_eq!(cfg.subjects, vec![format!("$KV.{bucket}.>")], "{bucket}");
        assert_eq!(cfg.max_messages_per_subject, 1, "{bucket} history");
        assert_eq!(cfg.max_age, ttl, "{bucket} ttl");
        assert!(
            cfg.allow_rollup && cfg.deny_delete,
            "{bucket} rollup/deny_delete"
        );
        assert!(
            !cfg.allow_direct,
            "{bucket}: nats-py does not set allow_direct"
        );
        assert_eq!(cfg.discard, DiscardPolicy::New, "{bucket} discard");
        let window = if ttl.is_zero() {
            Duration::from_secs(120)
        } else {
            ttl.min(Duration::from_secs(120))
        };
        assert_eq!(cfg.duplicate_window, window, "{bucket} duplicate window");
    }
}

#[tokio::test]
async fn consumer_uses_the_shared_durable_name_and_settings() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let consumer = store.work_consumer("gpu").await.unwrap();
    let info = consumer.cached_info();
    assert_eq!(info.name, "pyoco_workers_gpu");
    assert_eq!(info.config.filter_subject, "pyoco.work.gpu");
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.config.max_deliver, 20);
    assert_eq!(info.config.max_ack_pending, 200);
}

#[tokio::test]
async fn an_existing_resource_is_kept_as_it_is() {
    let nats = TestNats::start().await;
    let first = StoreConfig {
        consumer_ack_wait: Duration::from_secs(5),
        workers_ttl: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let s1 = Store::connect(&nats.url(), "first", first, DEFAULT_CONNECT_TIMEOUT)
        .await
        .unwrap();
    s1.work_consumer("default").await.unwrap();

    // A second process with other settings connects: it must not change anything.
    let s2 = store(&nats).await;
    let consumer = s2.work_consumer("default").await.unwrap();
    assert_eq!(
        consumer.cached_info().config.ack_wait,
        Duration::from_secs(5)
    );
    let workers = s2.jetstream().get_stream("KV_pyoco_workers").await.unwrap();
    assert_eq!(
        workers.cached_info().config.max_age,
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn empty_buckets_list_as_empty() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    assert!(store.runs().keys().await.unwrap().is_empty());
    assert!(store.workers().keys().await.unwrap().is_empty());
    store
        .runs()
        .put("r1", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    store.runs().delete("r1").await.unwrap();
    assert!(
        store.runs().keys().await.unwrap().is_empty(),
        "deleted keys are not listed"
    );
    assert!(
        store.runs().get("r1").await.unwrap().is_none(),
        "deleted key reads as missing"
    );
}

#[tokio::test]
async fn compare_and_set_detects_a_concurrent_writer() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let runs = store.runs();
    let rev = runs
        .create("run-1", Bytes::from_static(b"{\"status\":\"PENDING\"}"))
        .await
        .unwrap();
    assert!(matches!(
        runs.create("run-1", Bytes::from_static(b"{}")).await,
        Err(StoreError::Conflict(_))
    ));
    // Someone else (e.g. a Python 0.5.1 gateway doing a plain put) writes meanwhile.
    runs.put("run-1", Bytes::from_static(b"{\"status\":\"CANCELLING\"}"))
        .await
        .unwrap();
    assert!(matches!(
        runs.update(
            "run-1",
            Bytes::from_static(b"{\"status\":\"RUNNING\"}"),
            rev
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let current = runs.get("run-1").await.unwrap().unwrap();
    assert_eq!(&current.value[..], b"{\"status\":\"CANCELLING\"}");
    let new_rev = runs
        .update(
            "run-1",
            Bytes::from_static(b"{\"status\":\"CANCELLED\"}"),
            current.revision,
        )
        .await
        .unwrap();
    assert!(new_rev > current.revision);
}

#[tokio::test]
async fn jobs_land_on_the_tag_subject_and_dlq_counts() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    store
        .publish_job("default", Bytes::from_static(b"{\"run_id\":\"x\"}"))
        .await
        .unwrap();
    let consumer = store.work_consumer("default").await.unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.expect("one message").unwrap();
    assert_eq!(msg.subject.as_str(), "pyoco.work.default");
    assert_eq!(&msg.payload[..], b"{\"run_id\":\"x\"}");
    msg.ack().await.unwrap();

    assert_eq!(store.dlq_message_count().await.unwrap(), 0);
    store
        .publish_dlq("default", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(store.dlq_message_count().await.unwrap(), 1);
}

#[tokio::test]
async fn operations_fail_fast_while_nats_is_down() {
    let mut nats = TestNats::start().await;
    let store = store(&nats).await;
    nats.stop().await;
    pyoco_testkit::eventually(
        Duration::from_secs(5),
        "client notices the disconnect",
        || async { store.check_connected().is_err().then_some(()) },
    )
    .await;
    let started = std::time::Instant::now();
    let err = store
        .publish_job("default", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err.unavailable_kind(), Some("Disconnected"));
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn shared_store_waits_for_nats_and_becomes_ready() {
    // Pick a port, start nothing there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shared = pyoco_store::SharedStore::connect_in_background(
        &format!("nats://127.0.0.1:{port}"),
        "test",
        StoreConfig::default(),
    );
    assert_eq!(
        shared.get().unwrap_err().unavailable_kind(),
        Some("NotConnected")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _nats = TestNats::start_with(|c| c.port = Some(port)).await;
    let store = shared
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready once NATS is up");
    assert!(store.runs().keys().await.unwrap().is_empty());
    assert!(shared.get().is_ok());
}

#[tokio::test]
async fn task_log_pages_start_after_a_seq_and_the_per_run_cap_holds() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    // Two runs interleaved: a page of one never shows the other's lines.
    let mut a = store.task_log_publisher("run-a", 4096);
    let mut b = store.task_log_publisher("run-b", 1 << 20);
    for i in 0..10 {
        a.push(Some("t"), "stdout", &format!("a{i}"), 1.0).await;
        b.push(None, "stderr", &format!("b{i}"), 1.0).await;
    }
    b.finish((0, 0), 2.0).await;
    let page = store
        .task_log_page("run-a", 0, 4, None, None)
        .await
        .unwrap();
    let lines: Vec<&str> = page.items.iter().map(|i| i.line.as_str()).collect();
    assert_eq!(lines, ["a0", "a1", "a2", "a3"]);
    assert_eq!(page.next, Some(page.items[3].seq));
    let rest = store
        .task_log_page("run-a", page.next.unwrap(), 100, None, None)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 6);
    assert_eq!(rest.next, None);
    assert!(rest.items.windows(2).all(|w| w[0].seq < w[1].seq));
    // stream filter (subject) and task filter
    assert!(store
        .task_log_page("run-a", 0, 100, Some("stderr"), None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        store
            .task_log_page("run-b", 0, 100, None, Some("t"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    // Over the cap: one marker at once, the count at the end, stored bytes within the cap.
    let long = "x".repeat(500);
    for _ in 0..20 {
        a.push(Some("t"), "stdout", &long, 1.0).await;
    }
    a.finish((3, 30), 2.0).await;
    let all = store
        .task_log_page("run-a", 0, 1000, None, None)
        .await
        .unwrap();
    let n = all.items.len();
    assert_eq!(all.items[n - 2].line, pyoco_store::LOG_LIMIT_MARKER);
    let kept = n - 2 - 10;
    let dropped = 20 - kept;
    assert_eq!(
        all.items[n - 1].line,
        format!(
            "\u{2026}[log limit reached: {} lines ({} bytes) of output dropped]",
            dropped + 3,
            dropped * 500 + 30
        )
    );
    let stored: usize = all
        .items
        .iter()
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({"task": i.task, "stream": i.stream, "line": i.line, "ts": i.ts}))
                .unwrap()
                .len()
        })
        .sum();
    assert!(stored <= 4096, "{stored}");
    assert_eq!(
        store.task_log_last_seq("run-a").await.unwrap(),
        all.items[n - 1].seq
    );
    assert_eq!(store.task_log_last_seq("run-none").await.unwrap(), 0);
}
