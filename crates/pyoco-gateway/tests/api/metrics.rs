//! `GET /metrics`: the Prometheus text of 0.5.1's four gauges plus process metrics.

use std::time::Duration;

use bytes::Bytes;
use chrono::{Local, TimeZone};
use pyoco_testkit::{eventually, TestApp};
use pyoco_wire::python;
use serde_json::json;

use crate::runs_list::{app_with, put, snapshot};

/// Epoch seconds of today's local midnight.
fn local_midnight() -> f64 {
    let today = Local::now().date_naive().and_hms_opt(0, 0, 0).unwrap();
    Local
        .from_local_datetime(&today)
        .earliest()
        .unwrap()
        .timestamp() as f64
}

async fn metrics(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(body.ends_with('\n'), "{body:?}");
    body
}

/// The sample lines of `name` (with labels), in order.
fn samples<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .collect()
}

#[tokio::test]
async fn an_empty_store_answers_200_with_zeros() {
    let app = TestApp::gateway_only().await;
    let body = metrics(&app).await;
    for name in [
        "pyoco_runs_total",
        "pyoco_runs_today_total",
        "pyoco_workers_alive_total",
        "pyoco_dlq_messages_total",
    ] {
        let help = format!("# HELP {name} ");
        let kind = format!("# TYPE {name} gauge");
        let at = body
            .find(&help)
            .unwrap_or_else(|| panic!("{help} in {body}"));
        assert!(body[at..].starts_with(&help));
        assert!(body.contains(&kind), "{kind}");
    }
    assert!(samples(&body, "pyoco_runs_total").is_empty(), "{body}");
    assert!(samples(&body, "pyoco_runs_today_total").is_empty());
    assert_eq!(
        samples(&body, "pyoco_workers_alive_total"),
        ["pyoco_workers_alive_total 0"]
    );
    assert_eq!(
        samples(&body, "pyoco_dlq_messages_total"),
        ["pyoco_dlq_messages_total 0"]
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert_eq!(samples(&body, name).len(), 1, "{name} in {body}");
    }
}

#[tokio::test]
async fn run_counts_follow_the_stored_statuses_and_the_local_day() {
    let today = python::time();
    let yesterday = local_midnight() - 60.0;
    let tomorrow = local_midnight() + 86_400.0 * 1.5;
    let app = app_with(vec![
        snapshot("c1", "COMPLETED", today),
        snapshot("c2", "COMPLETED", today),
        snapshot("f1", "FAILED", today),
        snapshot("r1", "RUNNING", yesterday),
        snapshot("p1", "PENDING", tomorrow),
    ])
    .await;
    // A snapshot without a status counts as UNKNOWN.
    app.store()
        .runs()
        .put(
            "x1",
            serde_json::to_vec(&json!({"run_id": "x1", "updated_at": today})).unwrap(),
        )
        .await
        .unwrap();
    // Corrupt ones are not counted and do not fail the scrape.
    app.store()
        .runs()
        .put("bad", Bytes::from_static(b"{oops"))
        .await
        .unwrap();

    let want_total = [
        r#"pyoco_runs_total{status="COMPLETED"} 2"#,
        r#"pyoco_runs_total{status="FAILED"} 1"#,
        r#"pyoco_runs_total{status="PENDING"} 1"#,
        r#"pyoco_runs_total{status="RUNNING"} 1"#,
        r#"pyoco_runs_total{status="UNKNOWN"} 1"#,
    ];
    let body = eventually(Duration::from_secs(10), "UNKNOWN counted", || async {
        let body = metrics(&app).await;
        (samples(&body, "pyoco_runs_total") == want_total).then_some(body)
    })
    .await;
    assert_eq!(
        samples(&body, "pyoco_runs_today_total"),
        [
            r#"pyoco_runs_today_total{status="COMPLETED"} 2"#,
            r#"pyoco_runs_today_total{status="FAILED"} 1"#,
            r#"pyoco_runs_today_total{status="UNKNOWN"} 1"#,
        ]
    );

    // Changes are counted as they happen.
    put(app.store(), &snapshot("r1", "COMPLETED", python::time())).await;
    app.store().runs().delete("f1").await.unwrap();
    eventually(Duration::from_secs(10), "the new counts", || async {
        let body = metrics(&app).await;
        (samples(&body, "pyoco_runs_total")
            == [
                r#"pyoco_runs_total{status="COMPLETED"} 3"#,
                r#"pyoco_runs_total{status="PENDING"} 1"#,
                r#"pyoco_runs_total{status="UNKNOWN"} 1"#,
            ]
            && samples(&body, "pyoco_runs_today_total")
                == [
                    r#"pyoco_runs_today_total{status="COMPLETED"} 3"#,
                    r#"pyoco_runs_today_total{status="UNKNOWN"} 1"#,
                ])
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn workers_alive_counts_recent_running_and_idle_workers() {
    let app = TestApp::gateway_only().await;
    let t = python::time();
    let worker = |id: &str, state: &str, seen: f64| {
        json!({"worker_id": id, "instance_id": "0123456789abcdef0123456789abcdef",
               "state": state, "hidden": false, "tags": ["default"],
               "last_seen_at": seen, "last_heartbeat_at": seen, "heartbeat_at": seen,
               "updated_at": seen})
    };
    for (id, record) in [
        ("w-running", worker("w-running", "RUNNING", t)),
        ("w-idle", worker("w-idle", "IDLE", t)),
        ("w-stopped", worker("w-stopped", "STOPPED_GRACEFUL", t)),
        // Not seen for longer than PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC (20 s): DISCONNECTED.
        ("w-silent", worker("w-silent", "RUNNING", t - 100.0)),
    ] {
        app.store()
            .workers()
            .put(id, serde_json::to_vec(&record).unwrap())
            .await
            .unwrap();
    }
    app.store()
        .workers()
        .put("w-garbage", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    let body = metrics(&app).await;
    assert_eq!(
        samples(&body, "pyoco_workers_alive_total"),
        ["pyoco_workers_alive_total 2"]
    );
}

#[tokio::test]
async fn dlq_messages_are_counted() {
    let app = TestApp::gateway_only().await;
    for tag in ["default", "gpu", "default"] {
        app.store()
            .publish_dlq(tag, Bytes::from_static(br#"{"reason":"invalid_job"}"#))
            .await
            .unwrap();
    }
    let body = metrics(&app).await;
    assert_eq!(
        samples(&body, "pyoco_dlq_messages_total"),
        ["pyoco_dlq_messages_total 3"]
    );
    // Ours: by reason, following new entries and deletions.
    assert_eq!(
        samples(&body, "pyoco_dlq_messages_by_reason"),
        ["pyoco_dlq_messages_by_reason{reason=\"invalid_job\"} 3"]
    );
    app.store()
        .publish_dlq(
            "default",
            Bytes::from_static(br#"{"reason":"execution_error"}"#),
        )
        .await
        .unwrap();
    let response = app.http().delete(app.url("/dlq/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        samples(&metrics(&app).await, "pyoco_dlq_messages_by_reason"),
        [
            "pyoco_dlq_messages_by_reason{reason=\"execution_error\"} 1",
            "pyoco_dlq_messages_by_reason{reason=\"invalid_job\"} 2"
        ]
    );
}

#[tokio::test]
async fn queued_jobs_are_counted_per_tag() {
    let app = TestApp::gateway_only().await;
    assert!(samples(&metrics(&app).await, "pyoco_queue_depth").is_empty());
    for tag in ["default", "gpu", "default"] {
        app.store()
            .publish_job(tag, Bytes::from_static(br#"{"run_id":"r"}"#))
            .await
            .unwrap();
    }
    assert_eq!(
        samples(&metrics(&app).await, "pyoco_queue_depth"),
        [
            "pyoco_queue_depth{tag=\"default\"} 2",
            "pyoco_queue_depth{tag=\"gpu\"} 1"
        ]
    );
}

#[tokio::test]
async fn every_metric_has_help_and_type_before_its_samples() {
    let app = app_with(vec![snapshot("a", "RUNNING", python::time())]).await;
    let body = metrics(&app).await;
    let mut described: Vec<String> = Vec::new();
    let mut typed: Vec<String> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            described.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap();
            assert!(matches!(kind, "gauge" | "counter"), "{line}");
            if name.starts_with("pyoco_") {
                assert_eq!(kind, "gauge", "{line}");
            }
            assert_eq!(described.last(), Some(&name), "HELP then TYPE: {line}");
            typed.push(name);
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    assert_eq!(
        samples(&body, "pyoco_runs_total"),
        [r#"pyoco_runs_total{status="RUNNING"} 1"#]
    );
}
