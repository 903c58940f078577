//! `POST /runs/{run_id}/cancel`: what a cancel writes, what it leaves alone, and that it is
//! never lost (nor loses another writer's update) when a worker rewrites the run at the same time.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use pyoco_store::{Store, StoreError};
use pyoco_testkit::{status_json, TestApp};
use pyoco_wire::{python, NewRun, RunSnapshot, RunStatus, TaskRecord, TaskState};
use serde_json::{json, Map, Value};

use crate::helpers::keys;

/// A snapshot as a gateway wrote it at submit, plus a task record and a key from a newer
/// version, so the test sees what a cancel keeps.
fn pending_snapshot(run_id: &str) -> RunSnapshot {
    let run = NewRun {
        run_id: run_id.to_string(),
        flow_name: "main".into(),
        tag: "cpu".into(),
        tags: vec![],
        tenant_id: None,
        api_key_id: None,
        params: [("x".to_string(), json!(1.25))].into_iter().collect(),
        workflow: None,
    };
    let mut snapshot = RunSnapshot::pending(&run, 1712345678.125);
    snapshot
        .task_records
        .insert("t1".into(), TaskRecord::new(TaskState::Pending));
    snapshot
        .extra
        .insert("schedule_id".into(), json!("nightly"));
    snapshot
}

async fn put(app: &TestApp, snapshot: &RunSnapshot) -> u64 {
    app.store()
        .runs()
        .put(&snapshot.run_id, snapshot.to_json())
        .await
        .unwrap()
}

async fn cancel(app: &TestApp, run_id: &str) -> (u16, Value) {
    status_json(
        app.post_json(&format!("/runs/{run_id}/cancel"), &json!({}))
            .await,
    )
    .await
}

#[tokio::test]
async fn cancel_of_a_pending_run_marks_it_cancelling_and_keeps_everything_else() {
    let app = TestApp::gateway_only().await;
    let run_id = "c0000000-0000-4000-8000-000000000001";
    put(&app, &pending_snapshot(run_id)).await;
    let before = app.stored_snapshot(run_id).await;

    let t0 = python::time();
    let (status, body) = cancel(&app, run_id).await;
    assert_eq!(status, 200, "{body}");
    let after = app.stored_snapshot(run_id).await;

    assert_eq!(after["status"], json!("CANCELLING"));
    let requested_at = after["cancel_requested_at"].as_f64().unwrap();
    assert!(
        requested_at >= t0 && requested_at <= python::time(),
        "{requested_at}"
    );
    assert_eq!(after["updated_at"], after["cancel_requested_at"]);
    // Auth is off: no `cancel_requested_by` is added (0.5.1 adds it only for an API key).
    assert!(!after.contains_key("cancel_requested_by"));
    // Every other key keeps its value and its place; the new key comes last.
    let mut expected_keys = keys(&before);
    expected_keys.push("cancel_requested_at");
    assert_eq!(keys(&after), expected_keys);
    for (key, value) in &before {
        if !["status", "updated_at"].contains(&key.as_str()) {
            assert_eq!(&after[key], value, "{key}");
        }
    }

    // The answer is the stored snapshot without records, like `GET /runs/{id}`.
    let mut expected = after.clone();
    expected.shift_remove("task_records");
    assert_eq!(body, Value::Object(expected));
}

#[tokio::test]
async fn a_second_cancel_keeps_the_time_of_the_first() {
    let app = TestApp::gateway_only().await;
    let run_id = "c0000000-0000-4000-8000-000000000002";
    put(&app, &pending_snapshot(run_id)).await;

    let (_, first) = cancel(&app, run_id).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, second) = cancel(&app, run_id).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], json!("CANCELLING"));
    assert_eq!(second["cancel_requested_at"], first["cancel_requested_at"]);
    assert!(second["updated_at"].as_f64() > first["updated_at"].as_f64());
}

#[tokio::test]
async fn cancel_of_a_finished_run_changes_nothing() {
    let app = TestApp::gateway_only().await;
    for (i, status) in ["COMPLETED", "FAILED", "CANCELLED", "completed"]
        .into_iter()
        .enumerate()
    {
        let run_id = format!("c0000000-0000-4000-8000-00000000010{i}");
        let mut snapshot = pending_snapshot(&run_id);
        snapshot.status = match status {
            "COMPLETED" => RunStatus::Completed,
            "FAILED" => RunStatus::Failed,
            "CANCELLED" => RunStatus::Cancelled,
            other => RunStatus::Other(other.into()),
        };
        let revision = put(&app, &snapshot).await;
        let (before, before_bytes) = app.stored_snapshot_with_bytes(&run_id).await;

        let (code, body) = cancel(&app, &run_id).await;
        assert_eq!(code, 200, "{status}: {body}");
        let mut expected = before.clone();
        expected.shift_remove("task_records");
        assert_eq!(body, Value::Object(expected), "{status}");

        let entry = app.store().runs().get(&run_id).await.unwrap().unwrap();
        assert_eq!(entry.revision, revision, "{status}: nothing was written");
        assert_eq!(entry.value.to_vec(), before_bytes);
    }
}

#[tokio::test]
async fn cancel_of_an_unknown_run_is_404() {
    let app = TestApp::gateway_only().await;
    for run_id in [
        "c0000000-0000-4000-8000-0000000000ff",
        "a*b",
        "has%20space",
        "a..b",
    ] {
        let (status, body) = cancel(&app, run_id).await;
        assert_eq!(status, 404, "{run_id}");
        assert_eq!(body, json!({"detail": "run not found"}));
    }
}

#[tokio::test]
async fn the_request_body_is_ignored() {
    let app = TestApp::gateway_only().await;
    let run_id = "c0000000-0000-4000-8000-000000000003";
    put(&app, &pending_snapshot(run_id)).await;
    let url = app.url(&format!("/runs/{run_id}/cancel"));
    for request in [
        app.http().post(&url),
        app.http().post(&url).body("not json at all"),
        app.http()
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"reason\": [1, 2"),
    ] {
        let (status, body) = status_json(request.send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], json!("CANCELLING"));
    }
}

/// What a worker does every second (§6.8), written as our worker writes: read the snapshot,
/// keep what is there (the cancel fields included), bump a heartbeat, compare-and-set; on a
/// conflict read again. `beat` counts its writes, so a lost write shows as a gap.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(store: Store, run_id: String) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let conflicts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, writes, conflicts) = (stop.clone(), writes.clone(), conflicts.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let entry = store.runs().get(&run_id).await.unwrap().unwrap();
                    let mut snap: Map<String, Value> =
                        serde_json::from_slice(&entry.value).unwrap();
                    let beat = snap.get("beat").and_then(Value::as_u64).unwrap_or(0) + 1;
                    let cancelled = snap
                        .get("cancel_requested_at")
                        .is_some_and(|at| !at.is_null());
                    let t = python::time();
                    snap.insert("beat".into(), beat.into());
                    snap.insert(
                        "status".into(),
                        if cancelled { "CANCELLING" } else { "RUNNING" }.into(),
                    );
                    snap.insert("heartbeat_at".into(), t.into());
                    snap.insert("updated_at".into(), t.into());
                    let bytes = serde_json::to_vec(&snap).unwrap();
                    match store.runs().update(&run_id, bytes, entry.revision).await {
                        Ok(_) => {
                            writes.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Conflict(_)) => {
                            conflicts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => panic!("heartbeat write: {err}"),
                    }
                }
            }
        });
        Heartbeat {
            stop,
            writes,
            conflicts,
            task,
        }
    }

    async fn wait_for_writes(&self, at_least: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.writes.load(Ordering::SeqCst) < at_least {
            assert!(tokio::time::Instant::now() < deadline, "heartbeat stalled");
            tokio::task::yield_now().await;
        }
    }

    /// Stop; the number of writes that landed and of conflicts seen.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.writes.load(Ordering::SeqCst),
            self.conflicts.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test]
async fn a_cancel_racing_with_worker_heartbeats_is_never_lost_and_loses_nothing() {
    let app = TestApp::gateway_only().await;
    let mut racer_conflicts = 0;
    for i in 0..50 {
        let run_id = format!("c0000000-0000-4000-8000-{i:012}");
        let mut snapshot = pending_snapshot(&run_id);
        snapshot.status = RunStatus::Running;
        snapshot.cancel_requested_at = Some(None);
        snapshot.cancel_requested_by = Some(None);
        put(&app, &snapshot).await;

        let heartbeat = Heartbeat::start(app.store().clone(), run_id.clone());
        heartbeat.wait_for_writes(3).await;
        let (status, body) = cancel(&app, &run_id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], json!("CANCELLING"));
        let requested_at = body["cancel_requested_at"].clone();
        assert!(requested_at.is_f64(), "{body}");
        // The worker goes on writing on top of the cancel.
        let after_cancel = heartbeat.writes.load(Ordering::SeqCst);
        heartbeat.wait_for_writes(after_cancel + 2).await;
        let (writes, conflicts) = heartbeat.stop().await;
        racer_conflicts += conflicts;

        let stored = app.stored_snapshot(&run_id).await;
        assert_eq!(stored["status"], json!("CANCELLING"), "run {i}");
        assert_eq!(stored["cancel_requested_at"], requested_at, "run {i}");
        // No heartbeat was overwritten by a stale copy: every write the worker made counts.
        assert_eq!(
            stored["beat"],
            json!(writes),
            "run {i}: a worker write was lost"
        );
    }
    // The cancels really landed between the worker's reads and writes.
    assert!(racer_conflicts > 0, "the race never happened");
}
