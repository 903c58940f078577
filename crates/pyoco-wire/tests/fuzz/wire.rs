//! The wire decoders: job messages, run snapshots, worker records, API-key records, wheel
//! history and manifests, `GET /runs` cursors, wheel file names, tags and the Python-compat
//! helpers. None panics on arbitrary bytes or JSON; a record this crate writes reads back as
//! itself; a record read from anything reads back as itself once written.
//!
//! Seeds: `corpus/wire/` (bodies other writers could put on the wire: Python's `NaN` tokens,
//! deep nesting, wrong types, huge numbers), fed to every decoder before the generated cases.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use proptest::prelude::*;
use pyoco_wire::python::{
    dumps, float_of_json, float_of_str, float_repr, py_strip, repr_json, repr_str, str_of_json,
    truthy,
};
use pyoco_wire::{
    compact_snapshot, compact_snapshot_value, from_python_json, is_valid_kv_key,
    is_valid_wheel_name, new_api_key, parse_api_key, parse_tags_csv, parse_wheel_tags_csv,
    run_sort_key, sha256_from_header, to_python_json, validate_tag, value_from_python_json,
    wheel_manifest_from_json, wheel_manifest_to_json, wheel_tags_lenient, ApiKeyRecord, DlqMessage,
    InstalledWheel, JobMessage, NewRun, RunSnapshot, RunSummary, RunsCursor, SkippedWheel,
    WheelFilename, WheelHistoryAction, WheelHistoryActor, WheelHistoryRecord, WheelHistorySource,
    WheelManifestEntry, WheelSyncResult, WheelSyncStatus, WorkerRecord, WorkerState,
    WorkflowDigest, WorkflowUpload, MAX_TAG_LEN, WHEEL_SYNC_MAX_ERROR_CHARS, WHEEL_SYNC_MAX_ITEMS,
};
use serde_json::{json, Map, Value};

use crate::{config, corpus, finite_f64, json_number, json_object, json_value, text};

/// Feed `raw` to every decoder; whatever decodes must write and re-read without panicking.
fn decode_everything(raw: &[u8]) {
    let lossy = String::from_utf8_lossy(raw);

    match JobMessage::decode(raw, "default") {
        Ok(job) => {
            let again = JobMessage::decode(&job.to_json(), "default").expect("own job");
            if job.submitted_at.is_finite() {
                assert_eq!(again, job);
            }
        }
        Err(err) => {
            assert!(!err.reason().is_empty() && !err.message().is_empty());
            if let Some(id) = err.run_id() {
                assert!(is_valid_kv_key(id));
            }
        }
    }
    if let Ok(snapshot) = RunSnapshot::from_json(raw) {
        check_snapshot(&snapshot);
    }
    if let Ok(record) = WorkerRecord::from_json(raw, "key") {
        check_worker_record(&record);
    }
    if let Ok(record) = ApiKeyRecord::from_json(raw) {
        let again = ApiKeyRecord::from_json(&record.to_json()).expect("own record");
        if record.created_at.is_finite() && record.revoked_at.is_none_or(f64::is_finite) {
            assert_eq!(again, record);
        }
        if record.iterations <= 16 {
            let _ = record.verifies("secret", "pepper");
        }
    }
    if let Ok(record) = from_python_json::<WheelHistoryRecord>(raw) {
        let _ = record.key();
        if record.occurred_at.is_finite() {
            assert_eq!(
                from_python_json::<WheelHistoryRecord>(&record.to_json()).unwrap(),
                record
            );
        }
    }
    let manifest = wheel_manifest_from_json(raw);
    if manifest.values().all(|e| e.installed_at.is_finite()) {
        assert_eq!(
            wheel_manifest_from_json(&wheel_manifest_to_json(&manifest)),
            manifest
        );
    }
    if let Ok(value) = value_from_python_json(raw) {
        check_value(&value);
    }
    if let Ok(cursor) = RunsCursor::decode(&lossy) {
        check_cursor(&cursor);
    }
    check_text(&lossy);
}

/// Every string rule on `s`.
fn check_text(s: &str) {
    if let Ok(w) = WheelFilename::parse(s) {
        check_wheel_filename(&w);
    }
    let _ = is_valid_wheel_name(s);
    let _ = is_valid_kv_key(s);
    assert_eq!(validate_tag(s).is_ok(), is_tag(s), "{s:?}");
    if let Ok(tags) = parse_tags_csv(s) {
        assert!(tags.iter().all(|t| is_tag(t)));
        assert_eq!(tags, csv_items(s), "{s:?}");
    }
    if let Ok(tags) = parse_wheel_tags_csv(s) {
        assert!(tags.iter().all(|t| is_wheel_tag(t)));
        assert_eq!(tags, csv_items(s), "{s:?}");
    }
    let lenient = wheel_tags_lenient(s);
    assert!(lenient.windows(2).all(|w| w[0] < w[1]), "{lenient:?}");
    assert!(lenient.iter().all(|t| is_wheel_tag(t)));
    if let Some(sha) = sha256_from_header(s) {
        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Ok((key_id, secret)) = parse_api_key(s) {
        assert!(s.starts_with("pyoco_") && (8..=64).contains(&key_id.len()));
        assert!((16..=256).contains(&secret.len()));
    }
    match float_of_str(s) {
        Ok(f) if f.is_finite() => assert_eq!(float_of_str(&float_repr(f)), Ok(f)),
        Ok(_) => {}
        Err(msg) => assert!(msg.starts_with("could not convert string to float: ")),
    }
    let quoted = repr_str(s);
    assert!(
        quoted.len() >= 2 && quoted.ends_with(&quoted[..1]),
        "{quoted}"
    );
    let stripped = py_strip(s);
    assert_eq!(py_strip(stripped), stripped);
}

/// `^[A-Za-z0-9_-]{1,64}$`, the routing-tag rule.
fn is_tag(s: &str) -> bool {
    is_wheel_tag(s) && s.len() <= MAX_TAG_LEN
}

/// `^[A-Za-z0-9_-]+$`, the wheel-tag rule.
fn is_wheel_tag(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The items of a tag list: split on `,`, trimmed, empties and repeats dropped.
fn csv_items(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|t| t == item) {
            out.push(item.to_string());
        }
    }
    out
}

fn check_value(value: &Value) {
    // What Python's json.dumps writes (ours: compact and default separators) reads back.
    let compact = to_python_json(value);
    assert!(compact.is_ascii());
    assert_eq!(&value_from_python_json(&compact).unwrap(), value);
    assert_eq!(
        &serde_json::from_str::<Value>(&dumps(value)).unwrap(),
        value
    );
    let _ = (truthy(value), str_of_json(value), repr_json(value));
    match float_of_json(value) {
        Ok(_) => assert!(!matches!(
            value,
            Value::Null | Value::Array(_) | Value::Object(_)
        )),
        Err(msg) => assert!(msg.starts_with("float() argument") || msg.starts_with("could not")),
    }
    if let Value::Object(map) = value {
        let _ = run_sort_key(map);
        let _ = RunSummary::from_snapshot(map);
        for max in [-1, 0, 1, 64, 100_000] {
            let bytes = compact_snapshot_value(map, max);
            assert!(value_from_python_json(&bytes).is_ok());
        }
    }
    let record = WorkerRecord::from_value(value.clone(), "key");
    check_worker_record(&record);
    let sync = WheelSyncStatus::from_value(value);
    assert!(sync.selected_wheels.len() <= WHEEL_SYNC_MAX_ITEMS);
    assert!(sync
        .last_error
        .as_ref()
        .is_none_or(|e| e.chars().count() <= WHEEL_SYNC_MAX_ERROR_CHARS));
}

fn check_snapshot(snapshot: &RunSnapshot) {
    let raw = snapshot.to_json();
    let again = RunSnapshot::from_json(&raw).expect("own snapshot");
    assert_eq!(&again, snapshot);
    let _ = snapshot.summary();
    let _ = snapshot.cancel_request(1.0);
    let Ok(Value::Object(map)) = value_from_python_json(&raw) else {
        panic!("a snapshot writes a JSON object");
    };
    for max in [-1, 0, 1, raw.len() as i64 - 1, raw.len() as i64, 1 << 20] {
        let typed = compact_snapshot(snapshot, max);
        let untyped = compact_snapshot_value(&map, max);
        // Same keys and values; `task_records_truncated` may stand elsewhere in the untyped one.
        assert_eq!(typed.len(), untyped.len());
        assert_eq!(
            value_from_python_json(&typed).unwrap(),
            value_from_python_json(&untyped).unwrap()
        );
        let compacted = RunSnapshot::from_json(&typed).expect("compacted snapshot");
        if max > 0 && raw.len() as i64 > max {
            assert!(compacted.task_records.is_empty());
            assert_eq!(compacted.task_records_truncated, Some(true));
        } else if max > 0 {
            assert_eq!(compacted.task_records_truncated, None);
        }
    }
}

fn check_worker_record(record: &WorkerRecord) {
    // Normalising is idempotent once written: a second write changes nothing.
    let second = WorkerRecord::from_json(&record.to_json(), "key").expect("own record");
    let third = WorkerRecord::from_json(&second.to_json(), "key").expect("own record");
    assert_eq!(third.to_json(), second.to_json());
    assert!(record.tags.iter().all(|t| !py_strip(t).is_empty()));
    let shown = record.for_display(1e9, 10.0);
    assert_eq!(
        shown.state,
        record.derived_state(1e9, 10.0),
        "{:?}",
        record.state
    );
}

fn check_cursor(cursor: &RunsCursor) {
    if cursor.updated_at.is_finite() {
        assert_eq!(&RunsCursor::decode(&cursor.encode()).unwrap(), cursor);
    }
    let _ = cursor.admits(0.0, "");
}

/// `name-version[-build]-tags.whl` again, from what was read.
fn render_wheel_filename(w: &WheelFilename) -> String {
    let mut interpreters = Vec::new();
    let mut abis = Vec::new();
    let mut platforms = Vec::new();
    for tag in &w.tags {
        let parts: Vec<&str> = tag.splitn(3, '-').collect();
        for (list, part) in [&mut interpreters, &mut abis, &mut platforms]
            .into_iter()
            .zip(parts)
        {
            if !list.contains(&part) {
                list.push(part);
            }
        }
    }
    let build = match &w.build {
        Some((n, rest)) => format!("-{n}{rest}"),
        None => String::new(),
    };
    format!(
        "{}-{}{build}-{}-{}-{}.whl",
        w.name.replace('-', "_"),
        w.version,
        interpreters.join("."),
        abis.join("."),
        platforms.join(".")
    )
}

fn check_wheel_filename(w: &WheelFilename) {
    assert!(
        !w.tags.is_empty() && w.tags.len() <= 1024,
        "{}",
        w.tags.len()
    );
    assert!(!w.name.is_empty());
    if w.name.is_ascii() && w.tags.iter().all(|t| t.is_ascii()) {
        let again = render_wheel_filename(w);
        assert_eq!(
            WheelFilename::parse(&again).as_ref(),
            Ok(w),
            "re-rendered as {again}"
        );
    }
}

fn corpus_seeds() -> Vec<Vec<u8>> {
    corpus("wire").into_iter().map(|(_, raw)| raw).collect()
}

#[test]
fn corpus_seeds_decode_without_panicking() {
    for (name, raw) in corpus("wire") {
        let result = std::panic::catch_unwind(|| decode_everything(&raw));
        assert!(result.is_ok(), "corpus/wire/{name}");
    }
}

/// A field of a record: absent, a plausible value, or any JSON value.
fn field(
    name: &'static str,
    plausible: BoxedStrategy<Value>,
) -> BoxedStrategy<(&'static str, Option<Value>)> {
    prop_oneof![
        1 => Just(None),
        6 => plausible.prop_map(Some),
        1 => json_value().prop_map(Some),
    ]
    .prop_map(move |v| (name, v))
    .boxed()
}

/// An object with these fields (in this order, absent ones left out) and a few unknown keys.
fn record(
    fields: Vec<BoxedStrategy<(&'static str, Option<Value>)>>,
) -> impl Strategy<Value = Value> {
    (fields, json_object()).prop_map(|(fields, extra)| {
        let mut map = Map::new();
        for (k, v) in fields {
            if let Some(v) = v {
                map.insert(k.to_string(), v);
            }
        }
        for (k, v) in extra {
            map.entry(k).or_insert(v);
        }
        Value::Object(map)
    })
}

fn string() -> BoxedStrategy<Value> {
    text().prop_map(Value::String).boxed()
}

fn opt_string() -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 3 => string()].boxed()
}

fn number() -> BoxedStrategy<Value> {
    json_number().boxed()
}

fn opt_number() -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 3 => json_number()].boxed()
}

fn run_id() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[A-Za-z0-9_=/-][A-Za-z0-9_=/.-]{0,20}[A-Za-z0-9_=/-]".prop_map(Value::String),
        1 => string(),
    ]
    .boxed()
}

fn strings() -> BoxedStrategy<Value> {
    prop::collection::vec(string(), 0..4)
        .prop_map(Value::Array)
        .boxed()
}

fn object() -> BoxedStrategy<Value> {
    json_object().prop_map(Value::Object).boxed()
}

fn one_of(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(words).prop_map(|w| Value::String(w.to_string())),
        1 => string(),
    ]
    .boxed()
}

fn job_object() -> impl Strategy<Value = Value> {
    record(vec![
        field("run_id", run_id()),
        field("flow_name", string()),
        field("tag", string()),
        field("tags", strings()),
        field("tenant_id", opt_string()),
        field("api_key_id", opt_string()),
        field("params", object()),
        field("workflow_yaml", opt_string()),
        field("workflow_yaml_sha256", opt_string()),
        field("workflow_yaml_bytes", opt_number()),
        field("submitted_at", prop_oneof![number(), string()].boxed()),
    ])
}

const RUN_STATUSES: &[&str] = &[
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLING",
    "CANCELLED",
    "cancelled",
];
const TASK_STATES: &[&str] = &["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

fn task_record() -> BoxedStrategy<Value> {
    record(vec![
        field("state", one_of(TASK_STATES)),
        field("started_at", opt_number()),
        field("ended_at", opt_number()),
        field("duration_ms", opt_number()),
        field("error", opt_string()),
        field("traceback", opt_string()),
        field("inputs", object()),
        field("output", json_value().boxed()),
        field("artifacts", object()),
    ])
    .boxed()
}

fn snapshot_object() -> impl Strategy<Value = Value> {
    let tasks = prop::collection::vec((text(), one_of(TASK_STATES)), 0..4)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed();
    let records = prop::collection::vec((text(), task_record()), 0..3)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed();
    record(vec![
        field("run_id", run_id()),
        field("flow_name", string()),
        field("tag", opt_string()),
        field("tags", strings()),
        field("tenant_id", opt_string()),
        field("api_key_id", opt_string()),
        field("workflow_yaml_sha256", opt_string()),
        field("workflow_yaml_bytes", opt_number()),
        field("cancel_requested_at", opt_number()),
        field("cancel_requested_by", opt_string()),
        field("status", one_of(RUN_STATUSES)),
        field("params", object()),
        field("tasks", tasks),
        field("task_records", records),
        field("start_time", opt_number()),
        field("end_time", opt_number()),
        field("heartbeat_at", number()),
        field("updated_at", number()),
        field("error", opt_string()),
        field("worker_id", string()),
        field(
            "task_records_truncated",
            any::<bool>().prop_map(Value::Bool).boxed(),
        ),
    ])
}

fn wheel_sync_object() -> BoxedStrategy<Value> {
    let list = prop::collection::vec(json_value(), 0..4)
        .prop_map(Value::Array)
        .boxed();
    record(vec![
        field("enabled", json_value().boxed()),
        field(
            "last_result",
            one_of(&["disabled", "idle", "ok", "error", " OK "]),
        ),
        field("last_attempt_at", opt_number()),
        field("last_success_at", opt_number()),
        field("last_synced_at", opt_number()),
        field("last_error", opt_string()),
        field("selected_count", number()),
        field("updated_count", number()),
        field("removed_count", number()),
        field("skipped_incompatible_count", number()),
        field("selected_wheels", list.clone()),
        field("updated_wheels", list.clone()),
        field("removed_wheels", list.clone()),
        field("skipped_incompatible", list.clone()),
        field("installed_wheels", list),
    ])
    .boxed()
}

fn worker_object() -> impl Strategy<Value = Value> {
    record(vec![
        field("worker_id", string()),
        field("instance_id", string()),
        field(
            "state",
            one_of(&[
                "RUNNING",
                "IDLE",
                "STOPPED_GRACEFUL",
                "DISCONNECTED",
                " idle ",
            ]),
        ),
        field("hidden", json_value().boxed()),
        field("tags", strings()),
        field("last_seen_at", number()),
        field("last_heartbeat_at", number()),
        field("heartbeat_at", number()),
        field("current_run_id", opt_string()),
        field("last_run_id", opt_string()),
        field("last_run_status", opt_string()),
        field("last_run_started_at", opt_number()),
        field("last_run_finished_at", opt_number()),
        field("stopped_at", opt_number()),
        field("stop_reason", opt_string()),
        field("updated_at", number()),
        field("wheel_sync", wheel_sync_object()),
    ])
}

fn api_key_object() -> impl Strategy<Value = Value> {
    record(vec![
        field("key_id", string()),
        field("tenant_id", string()),
        field("kdf", string()),
        field("iterations", prop_oneof![number(), string()].boxed()),
        field("salt_b64", string()),
        field("hash_b64", string()),
        field("created_at", prop_oneof![number(), string()].boxed()),
        field("revoked_at", prop_oneof![opt_number(), string()].boxed()),
    ])
}

/// JSON text with Python's non-finite tokens where a value may stand.
#[derive(Debug, Clone)]
enum TokenJson {
    Plain(Value),
    Token(&'static str),
    Array(Vec<TokenJson>),
    Object(Vec<(String, TokenJson)>),
}

impl TokenJson {
    fn text(&self) -> String {
        match self {
            TokenJson::Plain(v) => serde_json::to_string(v).unwrap(),
            TokenJson::Token(t) => (*t).to_string(),
            TokenJson::Array(items) => {
                let items: Vec<String> = items.iter().map(TokenJson::text).collect();
                format!("[{}]", items.join(","))
            }
            TokenJson::Object(pairs) => {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", json!(k), v.text()))
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }
        }
    }

    /// The value Python's tokens are read as: `null`.
    fn expected(&self) -> Value {
        match self {
            TokenJson::Plain(v) => v.clone(),
            TokenJson::Token(_) => Value::Null,
            TokenJson::Array(items) => {
                Value::Array(items.iter().map(TokenJson::expected).collect())
            }
            TokenJson::Object(pairs) => {
                let mut map = Map::new();
                for (k, v) in pairs {
                    map.insert(k.clone(), v.expected());
                }
                Value::Object(map)
            }
        }
    }
}

fn token_json() -> impl Strategy<Value = TokenJson> {
    let leaf = prop_oneof![
        3 => json_value().prop_map(TokenJson::Plain),
        1 => prop::sample::select(vec!["NaN", "Infinity", "-Infinity"]).prop_map(TokenJson::Token),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(TokenJson::Array),
            prop::collection::vec((text(), inner), 0..5).prop_map(TokenJson::Object),
        ]
    })
}

/// `{key: 0}`: whether a record reader keeps `key` as unknown.
fn single(key: &str) -> Value {
    Value::Object(Map::from_iter([(key.to_string(), json!(0))]))
}

/// A time a writer puts in a record: positive and finite.
fn time() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1.0f64..4e9),
        Just(1712345678.123456),
        finite_f64().prop_filter("positive", |f| *f > 0.0),
    ]
}

fn non_blank() -> BoxedStrategy<String> {
    text()
        .prop_filter("not blank", |s| !py_strip(s).is_empty())
        .boxed()
}

fn wheel_sync() -> impl Strategy<Value = WheelSyncStatus> {
    let names = || prop::collection::vec(text(), 0..3);
    let opt_text = || prop::option::of(text());
    let skipped = prop::collection::vec(
        (text(), opt_text(), opt_text(), text()).prop_map(|(w, p, v, r)| SkippedWheel {
            wheel_name: w,
            package_name: p,
            package_version: v,
            reason: r,
        }),
        0..3,
    );
    let installed = prop::collection::vec(
        (
            text(),
            opt_text(),
            opt_text(),
            prop::option::of(time()),
            opt_text(),
        )
            .prop_map(|(w, p, v, at, nuid)| InstalledWheel {
                wheel_name: w,
                package_name: p,
                package_version: v,
                installed_at: at,
                nuid,
            }),
        0..3,
    );
    let counts = prop::array::uniform4(0..=i64::MAX as u64);
    let times = prop::array::uniform3(prop::option::of(time()));
    (
        any::<bool>(),
        prop::sample::select(vec![
            WheelSyncResult::Disabled,
            WheelSyncResult::Idle,
            WheelSyncResult::Ok,
            WheelSyncResult::Error,
        ]),
        times,
        prop::option::of(non_blank()),
        counts,
        (names(), names(), names()),
        (skipped, installed),
        json_object(),
    )
        .prop_map(
            |(
                enabled,
                last_result,
                times,
                last_error,
                counts,
                lists,
                (skipped, installed),
                extra,
            )| {
                let mut status = WheelSyncStatus::initial(enabled);
                status.last_result = last_result;
                [
                    status.last_attempt_at,
                    status.last_success_at,
                    status.last_synced_at,
                ] = times;
                status.last_error = last_error;
                [
                    status.selected_count,
                    status.updated_count,
                    status.removed_count,
                    status.skipped_incompatible_count,
                ] = counts;
                (
                    status.selected_wheels,
                    status.updated_wheels,
                    status.removed_wheels,
                ) = lists;
                status.skipped_incompatible = skipped;
                status.installed_wheels = installed;
                status.extra = extra
                    .into_iter()
                    .filter(|(k, _)| {
                        WheelSyncStatus::from_value(&single(k))
                            .extra
                            .contains_key(k)
                    })
                    .collect();
                status
            },
        )
}

/// A record as a worker writes it.
fn worker_record() -> impl Strategy<Value = WorkerRecord> {
    let ids = (non_blank(), non_blank());
    let state = prop::sample::select(vec![
        WorkerState::Running,
        WorkerState::Idle,
        WorkerState::StoppedGraceful,
    ]);
    let runs = prop::array::uniform4(prop::option::of(text()));
    let run_times = prop::array::uniform3(prop::option::of(time()));
    (
        ids,
        state,
        any::<bool>(),
        prop::collection::vec(non_blank(), 0..3),
        prop::array::uniform3(time()),
        (runs, run_times),
        prop::option::of(wheel_sync()),
        json_object(),
    )
        .prop_map(
            |(
                (worker_id, instance_id),
                state,
                hidden,
                tags,
                [seen, heartbeat, updated],
                (runs, run_times),
                wheel_sync,
                extra,
            )| {
                let mut record = WorkerRecord::starting(
                    &worker_id,
                    &instance_id,
                    tags,
                    seen,
                    WheelSyncStatus::initial(false),
                );
                record.state = state;
                record.hidden = hidden;
                record.last_heartbeat_at = heartbeat;
                record.heartbeat_at = heartbeat;
                record.updated_at = updated;
                [
                    record.current_run_id,
                    record.last_run_id,
                    record.last_run_status,
                    record.stop_reason,
                ] = runs;
                [
                    record.last_run_started_at,
                    record.last_run_finished_at,
                    record.stopped_at,
                ] = run_times;
                record.wheel_sync = wheel_sync;
                record.extra = extra
                    .into_iter()
                    .filter(|(k, _)| {
                        WorkerRecord::from_value(single(k), "x")
                            .extra
                            .contains_key(k)
                    })
                    .collect();
                record
            },
        )
}

fn new_run() -> impl Strategy<Value = NewRun> {
    let workflow = prop::option::of(text().prop_map(|text| {
        let digest = WorkflowDigest::of(text.as_bytes());
        WorkflowUpload { text, digest }
    }));
    (
        "[A-Za-z0-9_-]{1,36}",
        text(),
        "[A-Za-z0-9_-]{1,64}",
        prop::collection::vec(text(), 0..3),
        (prop::option::of(text()), prop::option::of(text())),
        json_object(),
        workflow,
    )
        .prop_map(
            |(run_id, flow_name, tag, tags, (tenant_id, api_key_id), params, workflow)| NewRun {
                run_id,
                flow_name,
                tag,
                tags,
                tenant_id,
                api_key_id,
                params,
                workflow: workflow.filter(|w| !w.text.is_empty()),
            },
        )
}

fn wheel_filename_text() -> impl Strategy<Value = String> {
    let name = "[A-Za-z0-9]([A-Za-z0-9._]{0,8}[A-Za-z0-9])?";
    let version = "([0-9]!)?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}((a|b|rc|alpha|c|pre)[0-9]{0,2})?(\\.?post[0-9]{0,2})?(\\.dev[0-9]{0,2})?(\\+[a-z0-9]{1,4}(\\.[a-z0-9]{1,3})?)?";
    let build = prop::option::of("[0-9]{1,4}[A-Za-z_]{0,3}");
    let component = |words: &'static [&'static str]| {
        prop::collection::vec(prop::sample::select(words), 1..4).prop_map(|w| w.join("."))
    };
    (
        name,
        version,
        build,
        component(&["py3", "py2", "cp311", "CP312", "pp39", "_x", "graalpy"]),
        component(&["none", "abi3", "cp311", "CP311d"]),
        component(&[
            "any",
            "manylinux_2_17_x86_64",
            "win_amd64",
            "macosx_11_0_ARM64",
            "linux",
        ]),
    )
        .prop_map(|(name, version, build, py, abi, platform)| {
            let build = build.map(|b| format!("-{b}")).unwrap_or_default();
            format!("{name}-{version}{build}-{py}-{abi}-{platform}.whl")
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_without_panicking(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&raw);
    }

    #[test]
    fn mutated_seeds_decode_without_panicking(
        seed in prop::sample::select(corpus_seeds()),
        at in any::<usize>(),
        bytes in prop::collection::vec(any::<u8>(), 0..4),
        cut in any::<bool>(),
    ) {
        let mut raw = seed;
        let i = if raw.is_empty() { 0 } else { at % raw.len() };
        if cut {
            raw.truncate(i);
        }
        raw.splice(i..i, bytes);
        decode_everything(&raw);
    }

    #[test]
    fn arbitrary_json_decodes_without_panicking(value in json_value(), python in any::<bool>()) {
        check_value(&value);
        let raw = if python { to_python_json(&value) } else { serde_json::to_vec(&value).unwrap() };
        decode_everything(&raw);
    }

    #[test]
    fn record_shaped_json_decodes_without_panicking(
        value in prop_oneof![
            job_object().boxed(),
            snapshot_object().boxed(),
            worker_object().boxed(),
            api_key_object().boxed(),
            task_record(),
        ],
    ) {
        let raw = to_python_json(&value);
        decode_everything(&raw);
        if let Some(Value::String(id)) = value.get("run_id") {
            if let Err(err) = JobMessage::decode(&raw, "default") {
                // An invalid job still names its run, so the run can be marked FAILED.
                prop_assert_eq!(err.run_id(), is_valid_kv_key(id).then_some(id.as_str()));
            }
        }
    }

    #[test]
    fn python_non_finite_tokens_read_as_null(doc in token_json()) {
        let text = doc.text();
        let value = value_from_python_json(text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
        prop_assert_eq!(value, doc.expected());
    }

    #[test]
    fn jobs_and_snapshots_of_a_new_run_read_back(run in new_run(), now in time()) {
        let job = JobMessage::for_new_run(&run, now);
        prop_assert_eq!(JobMessage::decode(&job.to_json(), "default"), Ok(job.clone()));
        let snapshot = RunSnapshot::pending(&run, now);
        prop_assert_eq!(&RunSnapshot::from_json(&snapshot.to_json()).unwrap(), &snapshot);
        check_snapshot(&snapshot);
        for message in [
            DlqMessage::flow_not_found(&job, "w1", now),
            DlqMessage::execution_error(&job, "w1", &run.flow_name, now),
            DlqMessage::invalid_job(&run.flow_name, "w1", Some(1), &job.to_json(), "invalid_json", now),
        ] {
            let written = value_from_python_json(&message.to_json()).unwrap();
            prop_assert_eq!(&written["reason"], &json!(message.reason()));
        }
    }

    #[test]
    fn invalid_job_records_keep_a_prefix_of_the_body(
        chunk in prop::collection::vec(any::<u8>(), 0..64),
        repeats in 0usize..120,
    ) {
        // Up to 7,680 bytes, around the 4,096 kept; a repeated chunk is cheap to generate.
        let body = chunk.repeat(repeats);
        let message = DlqMessage::invalid_job("pyoco.work.x", "w1", None, &body, "invalid_json", 1.0);
        let written = value_from_python_json(&message.to_json()).unwrap();
        let cut = &body[..body.len().min(pyoco_wire::INVALID_JOB_PAYLOAD_MAX_BYTES)];
        prop_assert_eq!(&written["payload"], &json!(String::from_utf8_lossy(cut)));
    }

    #[test]
    fn worker_records_read_back(record in worker_record()) {
        let again = WorkerRecord::from_json(&record.to_json(), "key").unwrap();
        prop_assert_eq!(again, record);
    }

    #[test]
    fn api_keys_read_back_and_verify(
        tenant in "[A-Za-z0-9_-]{1,64}",
        pepper in text(),
        created_at in time(),
        revoked_at in prop::option::of(time()),
        other in "[A-Za-z0-9_-]{16,64}",
    ) {
        let key = new_api_key(&tenant, &pepper, NonZeroU32::MIN, created_at).unwrap();
        let (key_id, secret) = parse_api_key(&key.api_key).unwrap();
        prop_assert_eq!(key_id, &key.record.key_id);
        prop_assert!(key.record.verifies(secret, &pepper));
        prop_assert_eq!(key.record.verifies(&other, &pepper), other == secret);
        let mut record = key.record.clone();
        record.revoked_at = revoked_at;
        prop_assert_eq!(ApiKeyRecord::from_json(&record.to_json()), Ok(record.clone()));
        prop_assert_eq!(record.verifies(secret, &pepper), revoked_at.is_none());
    }

    #[test]
    fn wheel_records_read_back(
        event_id in text(),
        occurred_at in time(),
        upload in any::<bool>(),
        wheel_name in text(),
        tags in prop::collection::vec(text(), 0..3),
        (size_bytes, sha256_hex, replace) in (prop::option::of(any::<u64>()), prop::option::of(text()), prop::option::of(any::<bool>())),
        actor in prop::array::uniform2(prop::option::of(text())),
        source in prop::array::uniform6(prop::option::of(text())),
        entries in prop::collection::vec((text(), text(), text(), text(), any::<u64>(), text(), time()), 0..3),
    ) {
        let [tenant_id, api_key_id] = actor;
        let [remote_addr, x_forwarded_for, x_real_ip, user_agent, host, scheme] = source;
        let record = WheelHistoryRecord {
            event_id,
            occurred_at,
            action: if upload { WheelHistoryAction::Upload } else { WheelHistoryAction::Delete },
            wheel_name,
            tags: tags.clone(),
            size_bytes,
            sha256_hex,
            replace,
            actor: WheelHistoryActor { tenant_id, api_key_id },
            source: WheelHistorySource { remote_addr, x_forwarded_for, x_real_ip, user_agent, host, scheme },
            worker_id: None,
            error: None,
        };
        prop_assert_eq!(from_python_json::<WheelHistoryRecord>(&record.to_json()).unwrap(), record);
        let manifest: BTreeMap<String, WheelManifestEntry> = entries
            .into_iter()
            .map(|(name, nuid, package_name, package_version, size_bytes, sha256_hex, installed_at)| {
                let entry = WheelManifestEntry {
                    nuid, package_name, package_version, size_bytes, sha256_hex,
                    tags: tags.clone(), installed_at,
                };
                (name, entry)
            })
            .collect();
        prop_assert_eq!(wheel_manifest_from_json(&wheel_manifest_to_json(&manifest)), manifest);
    }

    #[test]
    fn cursors_round_trip_in_every_spelling(
        updated_at in finite_f64(),
        run_id in text(),
        padding in 0usize..3,
        standard_alphabet in any::<bool>(),
    ) {
        let cursor = RunsCursor { updated_at, run_id };
        let mut token = cursor.encode();
        if standard_alphabet {
            token = token.replace('-', "+").replace('_', "/");
        }
        token.push_str(&"=".repeat(padding));
        prop_assert_eq!(RunsCursor::decode(&token), Ok(cursor));
    }

    #[test]
    fn wheel_filenames_re_render_to_the_same_value(name in wheel_filename_text(), s in text()) {
        check_text(&name);
        check_text(&s);
        if let Ok(w) = WheelFilename::parse(&name) {
            check_wheel_filename(&w);
        }
    }

    #[test]
    fn floats_print_and_read_like_python(f in any::<f64>()) {
        let printed = float_repr(f);
        match float_of_str(&printed) {
            Ok(back) if f.is_nan() => prop_assert!(back.is_nan()),
            Ok(back) => prop_assert_eq!(back.to_bits(), f.to_bits(), "{}", printed),
            Err(e) => prop_assert!(false, "{printed}: {e}"),
        }
        let in_json = to_python_json(&f);
        if f.is_finite() {
            prop_assert_eq!(in_json, printed.into_bytes());
        } else {
            prop_assert_eq!(in_json, b"null".to_vec());
        }
    }
}
