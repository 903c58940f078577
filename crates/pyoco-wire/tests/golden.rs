//! Records written by Python 0.5.1 (fixtures made by `fixtures/make_fixtures.py`) read and
//! written back by this crate.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Map, Value};

use pyoco_wire::{
    compact_snapshot, compact_snapshot_value, to_python_json, JobMessage, NewRun, RunSnapshot,
    RunStatus, RunSummary, TaskState, WheelSyncResult, WorkerRecord, WorkerState, WorkflowDigest,
    WorkflowUpload,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The top-level keys of a JSON object, in the order they appear in the bytes.
fn top_level_keys(bytes: &[u8]) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(Keys).unwrap()
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn initial_pending_snapshot_round_trips_byte_exact() {
    let raw = fixture("snapshot_initial_pending.json");
    let snap = RunSnapshot::from_json(&raw).unwrap();
    assert_eq!(snap.status, RunStatus::Pending);
    assert_eq!(snap.params["city"], json!("Zürich"));
    assert_eq!(snap.cancel_requested_at, None, "absent stays absent");
    assert_eq!(snap.workflow_yaml_sha256, None);
    assert_eq!(snap.to_json(), raw);
}

#[test]
fn gateway_writes_the_initial_snapshot_python_writes() {
    let run = NewRun {
        run_id: "3f1c8a52-6a0e-4a36-9a8e-2b7c1d0e9f11".into(),
        flow_name: "main".into(),
        tag: "default".into(),
        tags: vec![],
        tenant_id: Some("acme".into()),
        api_key_id: Some("0123456789abcdef01234567".into()),
        params: params(json!({"city": "Zürich", "greeting": "こんにちは 😀", "n": 3})),
        workflow: None,
    };
    let ours = RunSnapshot::pending(&run, 1712345678.123456).to_json();
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        String::from_utf8(fixture("snapshot_initial_pending.json")).unwrap()
    );
}

#[test]
fn yaml_run_initial_snapshot_and_job_match_python_bytes() {
    let yaml = fixture("flow.yaml");
    let run = NewRun {
        run_id: "3f1c8a52-6a0e-4a36-9a8e-2b7c1d0e9f11".into(),
        flow_name: "etl".into(),
        tag: "cpu".into(),
        tags: vec![],
        tenant_id: None,
        api_key_id: None,
        params: params(json!({"n": 3})),
        workflow: Some(WorkflowUpload {
            text: String::from_utf8(yaml.clone()).unwrap(),
            digest: WorkflowDigest::of(&yaml),
        }),
    };
    let snap = RunSnapshot::pending(&run, 1712345678.123456);
    assert_eq!(
        snap.to_json(),
        fixture("snapshot_initial_pending_yaml.json")
    );
    assert_eq!(
        top_level_keys(&snap.to_json()),
        keys(&[
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "workflow_yaml_sha256",
            "workflow_yaml_bytes",
            "status",
            "params",
            "tasks",
            "task_records",
            "start_time",
            "end_time",
            "heartbeat_at",
            "updated_at",
            "error"
        ])
    );
    let job = JobMessage::for_new_run(&run, 1712345678.123456);
    assert_eq!(
        String::from_utf8(job.to_json()).unwrap(),
        String::from_utf8(fixture("job_yaml.json")).unwrap()
    );
}

#[test]
fn worker_running_snapshot_round_trips_byte_exact() {
    let raw = fixture("snapshot_worker_running.json");
    let snap = RunSnapshot::from_json(&raw).unwrap();
    assert_eq!(snap.status, RunStatus::Running);
    assert_eq!(snap.worker_id.as_deref(), Some("worker-1"));
    assert_eq!(
        snap.cancel_requested_at,
        Some(None),
        "present null stays present"
    );
    let order: Vec<&str> = snap.tasks.keys().map(String::as_str).collect();
    assert_eq!(
        order,
        ["extract", "transform", "load"],
        "task order is kept"
    );
    assert_eq!(snap.tasks["load"], TaskState::Pending);
    let extract = &snap.task_records["extract"];
    assert_eq!(extract.state, TaskState::Succeeded);
    assert_eq!(extract.duration_ms, Some(249.0));
    assert_eq!(extract.output, json!({"rows": 42, "sample": ["a", "é"]}));
    assert!(snap.extra.is_empty());
    assert_eq!(snap.to_json(), raw);
}

#[test]
fn snapshot_from_a_newer_python_keeps_unknown_keys_and_status() {
    let raw = fixture("snapshot_head_extra_fields.json");
    let mut snap = RunSnapshot::from_json(&raw).unwrap();
    assert_eq!(snap.status, RunStatus::Other("PENDING_APPROVAL".into()));
    assert!(!snap.status.is_terminal());
    assert_eq!(
        snap.extra.get("schedule_id"),
        Some(&json!("7d0e4c4e-0d43-4b0c-9f4e-3d7a7b8c9d10"))
    );
    assert_eq!(
        snap.task_records["extract"].extra.get("stdout"),
        Some(&json!("hello\n"))
    );
    // A gateway cancel: read, modify, write. Everything else survives unchanged.
    snap.status = RunStatus::Cancelling;
    snap.cancel_requested_at = Some(Some(1712345699.0));
    let mut written = value(&snap.to_json());
    let mut expected = value(&raw);
    expected["status"] = json!("CANCELLING");
    expected["cancel_requested_at"] = json!(1712345699.0);
    assert_eq!(written, expected);
    // Every key of the original is still there.
    for key in top_level_keys(&raw) {
        assert!(
            written.as_object_mut().unwrap().remove(&key).is_some(),
            "{key}"
        );
    }
}

#[test]
fn compacted_snapshot_round_trips_with_its_flag() {
    let raw = fixture("snapshot_compacted.json");
    let snap = RunSnapshot::from_json(&raw).unwrap();
    assert_eq!(snap.task_records_truncated, Some(true));
    assert!(snap.status.is_terminal());
    assert_eq!(snap.to_json(), raw);
}

#[test]
fn compaction_over_the_limit_matches_python_bytes() {
    let raw = fixture("snapshot_worker_running.json");
    let snap = RunSnapshot::from_json(&raw).unwrap();
    let limit = raw.len() as i64;
    assert_eq!(
        compact_snapshot(&snap, limit),
        raw,
        "exactly at the limit fits"
    );
    assert_eq!(
        compact_snapshot(&snap, limit - 1),
        fixture("snapshot_worker_running_compacted.json")
    );
    // Raw-JSON variant: same value and size (key order follows serde_json's Map).
    let as_map = value(&raw).as_object().unwrap().clone();
    let out = compact_snapshot_value(&as_map, limit - 1);
    let want = fixture("snapshot_worker_running_compacted.json");
    assert_eq!(value(&out), value(&want));
    assert_eq!(out.len(), want.len());
    assert_eq!(compact_snapshot_value(&as_map, limit).len(), raw.len());
}

#[test]
fn compaction_within_the_limit_drops_a_stale_flag() {
    let snap = RunSnapshot::from_json(&fixture("snapshot_compacted.json")).unwrap();
    let out = value(&compact_snapshot(&snap, 262_144));
    assert!(out.get("task_records_truncated").is_none());
    let as_map = value(&fixture("snapshot_compacted.json"))
        .as_object()
        .unwrap()
        .clone();
    assert!(value(&compact_snapshot_value(&as_map, 262_144))
        .get("task_records_truncated")
        .is_none());
}

#[test]
fn compaction_disabled_by_a_non_positive_limit() {
    let snap = RunSnapshot::from_json(&fixture("snapshot_compacted.json")).unwrap();
    for limit in [0, -1] {
        assert_eq!(compact_snapshot(&snap, limit), snap.to_json());
    }
    let big = RunSnapshot::from_json(&fixture("snapshot_worker_running.json")).unwrap();
    assert_eq!(compact_snapshot(&big, 0), big.to_json());
}

#[test]
fn compaction_keeps_the_flag_even_when_still_too_large() {
    let snap = RunSnapshot::from_json(&fixture("snapshot_worker_running.json")).unwrap();
    let out = value(&compact_snapshot(&snap, 10));
    assert_eq!(out["task_records"], json!({}));
    assert_eq!(out["task_records_truncated"], json!(true));
    assert_eq!(
        out["tasks"]["extract"],
        json!("SUCCEEDED"),
        "task states stay"
    );
}

#[test]
fn compaction_measures_ascii_escaped_bytes() {
    // "é" is 2 bytes of UTF-8 but 6 bytes escaped: the limit applies to the escaped form.
    let mut snap = RunSnapshot::from_json(&fixture("snapshot_initial_pending.json")).unwrap();
    snap.params = params(json!({"s": "é".repeat(100)}));
    snap.task_records
        .insert("t".into(), pyoco_wire::TaskRecord::new(TaskState::Running));
    let escaped_len = to_python_json(&snap).len() as i64;
    let utf8_len = serde_json::to_vec(&snap).unwrap().len() as i64;
    assert_eq!(
        escaped_len - utf8_len,
        400,
        "each é: 6 escaped bytes instead of 2"
    );
    // A limit the UTF-8 form would fit in still compacts.
    let out = value(&compact_snapshot(&snap, utf8_len));
    assert_eq!(out["task_records_truncated"], json!(true));
    let out = value(&compact_snapshot(&snap, escaped_len));
    assert!(out.get("task_records_truncated").is_none());
}

#[test]
fn run_summary_keeps_only_present_summary_keys() {
    let initial = RunSnapshot::from_json(&fixture("snapshot_initial_pending.json")).unwrap();
    let summary = initial.summary();
    assert_eq!(
        summary.0.keys().cloned().collect::<Vec<_>>(),
        // 0.5.1's order: its summary is a dict comprehension over the summary keys.
        keys(&[
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
        ]),
        "no worker_id in a gateway snapshot"
    );
    assert_eq!(summary.0["error"], Value::Null, "present null stays");
    let running = value(&fixture("snapshot_worker_running.json"));
    let summary = RunSummary::from_snapshot(running.as_object().unwrap());
    assert_eq!(summary.0["worker_id"], json!("worker-1"));
    assert!(!summary.0.contains_key("params"));
    assert!(!summary.0.contains_key("task_records"));
}

#[test]
fn cancel_request_is_read_like_the_run_heartbeat() {
    let mut snap = RunSnapshot::from_json(&fixture("snapshot_worker_running.json")).unwrap();
    assert_eq!(snap.cancel_request(50.0), None);
    snap.status = RunStatus::Cancelling;
    assert_eq!(
        snap.cancel_request(50.0),
        Some((50.0, None)),
        "timestamp defaults to now"
    );
    snap.cancel_requested_at = Some(Some(42.0));
    snap.cancel_requested_by = Some(Some("api_key:k1".into()));
    snap.status = RunStatus::Running;
    assert_eq!(
        snap.cancel_request(50.0),
        Some((42.0, Some("api_key:k1".into())))
    );
}

#[test]
fn snapshot_with_python_nan_output_is_readable() {
    let raw = String::from_utf8(fixture("snapshot_worker_running.json"))
        .unwrap()
        .replace(r#""rows":42"#, r#""rows":NaN"#);
    let snap = RunSnapshot::from_json(raw.as_bytes()).unwrap();
    assert_eq!(snap.task_records["extract"].output["rows"], Value::Null);
}

#[test]
fn worker_record_round_trips_byte_exact() {
    let raw = fixture("worker_record.json");
    let rec = WorkerRecord::from_json(&raw, "worker-1").unwrap();
    assert_eq!(rec.state, WorkerState::Running);
    let ws = rec.wheel_sync.as_ref().unwrap();
    assert_eq!(ws.last_result, WheelSyncResult::Ok);
    assert_eq!(
        ws.installed_wheels[0].package_name.as_deref(),
        Some("demo-pkg")
    );
    assert_eq!(ws.skipped_incompatible[0].reason, "unsupported_wheel_tags");
    assert_eq!(rec.to_json(), raw);
}

#[test]
fn legacy_worker_record_normalises_like_python() {
    let rec = WorkerRecord::from_json(&fixture("worker_record_legacy.json"), "key-w").unwrap();
    // normalize_worker_registry_record(raw, worker_id="key-w") of 0.5.1, run on the fixture.
    let python = json!({"worker_id":"w-old","heartbeat_at":1712345000.5,"tags":[],"hidden":true,
        "owner":"ops","instance_id":"w-old","state":"IDLE","last_seen_at":1712345000.5,
        "last_heartbeat_at":1712345000.5,"current_run_id":null,"last_run_id":null,
        "last_run_status":null,"last_run_started_at":null,"last_run_finished_at":null,
        "stopped_at":null,"stop_reason":null,"updated_at":0.0});
    assert_eq!(value(&rec.to_json()), python);
}

#[test]
fn worker_record_normalisation_fallbacks() {
    let rec = WorkerRecord::from_value(json!({"state": "weird", "last_seen_at": 7.0}), "k");
    assert_eq!(rec.worker_id, "k");
    assert_eq!(rec.instance_id, "k");
    assert_eq!(rec.state, WorkerState::Idle);
    assert_eq!(rec.last_heartbeat_at, 7.0, "falls back to last_seen_at");
    assert_eq!(rec.heartbeat_at, 7.0);
    let rec = WorkerRecord::from_value(json!({"state": " running ", "tags": ["a", " ", 5]}), "k");
    assert_eq!(rec.state, WorkerState::Running);
    assert_eq!(rec.tags, vec!["a".to_string(), "5".to_string()]);
    let rec = WorkerRecord::from_value(json!([1, 2]), "k");
    assert_eq!(rec.worker_id, "k");
    assert_eq!(rec.last_seen_at, 0.0);
    assert!(WorkerRecord::from_json(b"{nope", "k").is_err());
}

#[test]
fn worker_state_derivation_cases() {
    let at = |state: &str, last_seen: f64| {
        WorkerRecord::from_value(json!({"state": state, "last_seen_at": last_seen}), "w")
    };
    // python: derive_worker_effective_state(...) of 0.5.1
    assert_eq!(
        at("RUNNING", 100.0).derived_state(121.0, 20.0),
        WorkerState::Disconnected
    );
    assert_eq!(
        at("RUNNING", 100.0).derived_state(120.0, 20.0),
        WorkerState::Running
    );
    assert_eq!(
        at("IDLE", 100.0).derived_state(150.0, 20.0),
        WorkerState::Disconnected
    );
    assert_eq!(
        at("stopped_graceful", 0.0).derived_state(1e9, 20.0),
        WorkerState::StoppedGraceful,
        "graceful stop is never shown as disconnected"
    );
    assert_eq!(
        at("DISCONNECTED", 1e9).derived_state(1e9, 20.0),
        WorkerState::Disconnected
    );
    assert_eq!(
        at("weird", 0.0).derived_state(5.0, 0.0),
        WorkerState::Idle,
        "timeout 0 disables"
    );
    assert_eq!(
        at("RUNNING", 0.0).derived_state(1e9, -1.0),
        WorkerState::Running
    );
    assert!(WorkerState::Idle.is_active());
    assert!(!WorkerState::Disconnected.is_active());
    let shown = at("RUNNING", 100.0).for_display(200.0, 20.0);
    assert_eq!(value(&shown.to_json())["state"], json!("DISCONNECTED"));
}

#[test]
fn worker_record_keeps_unknown_keys_through_a_patch() {
    let mut raw = value(&fixture("worker_record.json"));
    raw["plugins"] = json!({"x": 1});
    raw["wheel_sync"]["future_field"] = json!(true);
    let mut rec = WorkerRecord::from_value(raw.clone(), "worker-1");
    rec.hidden = true;
    rec.updated_at = 1712345700.0;
    let mut expected = raw;
    expected["hidden"] = json!(true);
    expected["updated_at"] = json!(1712345700.0);
    assert_eq!(value(&rec.to_json()), expected);
}

#[test]
fn jobs_from_python_writers_decode() {
    let job = JobMessage::decode(&fixture("job_yaml.json"), "default").unwrap();
    assert!(job.is_yaml());
    assert_eq!(job.workflow_yaml_bytes, Some(63));
    assert_eq!(job.to_json(), fixture("job_yaml.json"));
    let lib = JobMessage::decode(&fixture("job_library_client.json"), "default").unwrap();
    assert_eq!(lib.tenant_id, None);
    assert_eq!(lib.params, params(json!({"x": 1})));
}
