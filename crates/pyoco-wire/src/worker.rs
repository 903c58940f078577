//! The worker registry record (KV `pyoco_workers`, key `<worker_id>`, §2.4) and the worker
//! state derivation (§4.3).
//!
//! Records are read through [`WorkerRecord::from_json`] / [`WorkerRecord::from_value`], which
//! apply the 0.5.1 reader normalisation (`normalize_worker_registry_record`): missing or unknown
//! `state` → `IDLE`, `last_seen_at` ← itself or `heartbeat_at` or 0, `last_heartbeat_at` ←
//! itself or `heartbeat_at` or `last_seen_at`, `heartbeat_at` ← `last_heartbeat_at`, `tags`
//! non-list → `[]`, `hidden` → truthiness, `updated_at` → float or 0, optional fields → null.
//! Keys this version does not know are kept in `extra` and written back.
//!
//! Where 0.5.1 would raise (a non-numeric timestamp string), we read 0 instead.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::python::{float_of_json, str_of_json, to_python_json, truthy, value_from_python_json};

/// Most items kept in each `wheel_sync` list.
pub const WHEEL_SYNC_MAX_ITEMS: usize = 50;
/// Longest `wheel_sync.last_error`, in characters.
pub const WHEEL_SYNC_MAX_ERROR_CHARS: usize = 2000;

/// Worker state: stored (`RUNNING`, `IDLE`, `STOPPED_GRACEFUL`) or derived (`DISCONNECTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    Running,
    Idle,
    StoppedGraceful,
    /// Derived for display when the worker has not been seen for the disconnect timeout.
    Disconnected,
}

impl WorkerState {
    /// The wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "RUNNING",
            WorkerState::Idle => "IDLE",
            WorkerState::StoppedGraceful => "STOPPED_GRACEFUL",
            WorkerState::Disconnected => "DISCONNECTED",
        }
    }

    /// Parse like 0.5.1: trimmed, case-insensitive; `None` for anything else.
    #[must_use]
    pub fn parse(s: &str) -> Option<WorkerState> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RUNNING" => Some(WorkerState::Running),
            "IDLE" => Some(WorkerState::Idle),
            "STOPPED_GRACEFUL" => Some(WorkerState::StoppedGraceful),
            "DISCONNECTED" => Some(WorkerState::Disconnected),
            _ => None,
        }
    }

    /// `RUNNING` or `IDLE` (what `scope=active` and the alive metric count).
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, WorkerState::Running | WorkerState::Idle)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WorkerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkerState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(WorkerState::parse(&String::deserialize(d)?).unwrap_or(WorkerState::Idle))
    }
}

/// Outcome of the last wheel sync attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WheelSyncResult {
    Disabled,
    Idle,
    Ok,
    Error,
}

impl WheelSyncResult {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disabled" => Some(WheelSyncResult::Disabled),
            "idle" => Some(WheelSyncResult::Idle),
            "ok" => Some(WheelSyncResult::Ok),
            "error" => Some(WheelSyncResult::Error),
            _ => None,
        }
    }
}

/// A wheel skipped because none of its compatibility tags fits the worker's interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedWheel {
    pub wheel_name: String,
    pub package_name: Option<String>,
    pub package_version: Option<String>,
    /// Always `unsupported_wheel_tags` in 0.5.1.
    pub reason: String,
}

/// A wheel installed by the worker (from its local manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledWheel {
    pub wheel_name: String,
    pub package_name: Option<String>,
    pub package_version: Option<String>,
    pub installed_at: Option<f64>,
    pub nuid: Option<String>,
}

/// A wheel whose `pip install` failed on this worker (ours, not in 0.5.1): skipped by its
/// later syncs until the registry holds another upload of it (another object NUID).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedWheel {
    pub wheel_name: String,
    pub package_name: Option<String>,
    pub package_version: Option<String>,
    /// The object NUID of the upload that failed.
    pub nuid: Option<String>,
    /// pip's error, as `last_error` would say it (at most 2,000 characters).
    pub error: String,
    pub failed_at: Option<f64>,
}

/// The `wheel_sync` object of a worker record (§2.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WheelSyncStatus {
    pub enabled: bool,
    pub last_result: WheelSyncResult,
    pub last_attempt_at: Option<f64>,
    pub last_success_at: Option<f64>,
    pub last_synced_at: Option<f64>,
    pub last_error: Option<String>,
    pub selected_count: u64,
    pub updated_count: u64,
    pub removed_count: u64,
    pub skipped_incompatible_count: u64,
    pub selected_wheels: Vec<String>,
    pub updated_wheels: Vec<String>,
    pub removed_wheels: Vec<String>,
    pub skipped_incompatible: Vec<SkippedWheel>,
    pub installed_wheels: Vec<InstalledWheel>,
    /// Ours: wheels that failed to install and are skipped until replaced (written only when
    /// there are some; a 0.5.1 reader ignores the key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_wheels: Vec<FailedWheel>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl WheelSyncStatus {
    /// The state before any attempt: `last_result` = `idle` when enabled, else `disabled`.
    #[must_use]
    pub fn initial(enabled: bool) -> Self {
        WheelSyncStatus {
            enabled,
            last_result: if enabled {
                WheelSyncResult::Idle
            } else {
                WheelSyncResult::Disabled
            },
            last_attempt_at: None,
            last_success_at: None,
            last_synced_at: None,
            last_error: None,
            selected_count: 0,
            updated_count: 0,
            removed_count: 0,
            skipped_incompatible_count: 0,
            selected_wheels: Vec::new(),
            updated_wheels: Vec::new(),
            removed_wheels: Vec::new(),
            skipped_incompatible: Vec::new(),
            installed_wheels: Vec::new(),
            failed_wheels: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Read a stored `wheel_sync` value as a gateway does: the 0.5.1 coercion
    /// (`_coerce_wheel_sync_state`) keeping the stored `enabled` flag, plus any keys this
    /// version does not know (kept in `extra`). A non-object gives `initial(false)`.
    #[must_use]
    pub fn from_value(raw: &Value) -> Self {
        let enabled = raw.get("enabled").is_some_and(truthy);
        let mut out = Self::coerce(raw, enabled);
        if let Value::Object(obj) = raw {
            out.extra = obj
                .iter()
                .filter(|(k, _)| !Self::KNOWN_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(Value::Array(items)) = obj.get("failed_wheels") {
                out.failed_wheels = items
                    .iter()
                    .take(WHEEL_SYNC_MAX_ITEMS)
                    .filter_map(|v| {
                        let o = v.as_object()?;
                        Some(FailedWheel {
                            wheel_name: o.get("wheel_name").map(str_of_json).unwrap_or_default(),
                            package_name: opt_string(o.get("package_name")),
                            package_version: opt_string(o.get("package_version")),
                            nuid: opt_string(o.get("nuid")),
                            error: o
                                .get("error")
                                .map(|e| {
                                    truncate_chars(&str_of_json(e), WHEEL_SYNC_MAX_ERROR_CHARS)
                                })
                                .unwrap_or_default(),
                            failed_at: opt_float(o.get("failed_at")),
                        })
                    })
                    .collect();
            }
        }
        out
    }

    /// `failed_wheels` is ours: read by [`Self::from_value`], dropped by [`Self::coerce`] (a
    /// new worker process retries its failed wheels once).
    const KNOWN_KEYS: [&'static str; 16] = [
        "enabled",
        "last_result",
        "last_attempt_at",
        "last_success_at",
        "last_synced_at",
        "last_error",
        "selected_count",
        "updated_count",
        "removed_count",
        "skipped_incompatible_count",
        "selected_wheels",
        "updated_wheels",
        "removed_wheels",
        "skipped_incompatible",
        "installed_wheels",
        "failed_wheels",
    ];

    /// 0.5.1 `_coerce_wheel_sync_state(raw, enabled)`: what a worker keeps of its previous
    /// record, with `enabled` set from its own configuration (unknown keys are dropped, as in
    /// 0.5.1).
    #[must_use]
    pub fn coerce(raw: &Value, enabled: bool) -> Self {
        let mut out = Self::initial(enabled);
        let Value::Object(obj) = raw else {
            return out;
        };
        if let Some(result) = obj
            .get("last_result")
            .filter(|v| truthy(v))
            .and_then(|v| WheelSyncResult::parse(&str_of_json(v)))
        {
            out.last_result = result;
        }
        let time = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => float_of_json(v).ok(),
        };
        out.last_attempt_at = time("last_attempt_at");
        out.last_success_at = time("last_success_at");
        out.last_synced_at = time("last_synced_at");
        out.last_error = obj
            .get("last_error")
            .filter(|v| truthy(v))
            .map(|v| truncate_chars(&str_of_json(v), WHEEL_SYNC_MAX_ERROR_CHARS));
        let count = |key: &str| match obj.get(key) {
            Some(v) if truthy(v) => int_of_json(v).map(|i| i.max(0) as u64).unwrap_or(0),
            _ => 0,
        };
        out.selected_count = count("selected_count");
        out.updated_count = count("updated_count");
        out.removed_count = count("removed_count");
        out.skipped_incompatible_count = count("skipped_incompatible_count");
        let items = |key: &str| -> Vec<Value> {
            match obj.get(key) {
                Some(Value::Array(a)) => a.iter().take(WHEEL_SYNC_MAX_ITEMS).cloned().collect(),
                _ => Vec::new(),
            }
        };
        out.selected_wheels = items("selected_wheels").iter().map(str_of_json).collect();
        out.updated_wheels = items("updated_wheels").iter().map(str_of_json).collect();
        out.removed_wheels = items("removed_wheels").iter().map(str_of_json).collect();
        out.skipped_incompatible = items("skipped_incompatible")
            .iter()
            .filter_map(|v| {
                let o = v.as_object()?;
                Some(SkippedWheel {
                    wheel_name: o.get("wheel_name").map(str_of_json).unwrap_or_default(),
                    package_name: opt_string(o.get("package_name")),
                    package_version: opt_string(o.get("package_version")),
                    reason: o.get("reason").map(str_of_json).unwrap_or_default(),
                })
            })
            .collect();
        out.installed_wheels = items("installed_wheels")
            .iter()
            .filter_map(|v| {
                let o = v.as_object()?;
                Some(InstalledWheel {
                    wheel_name: o.get("wheel_name").map(str_of_json).unwrap_or_default(),
                    package_name: opt_string(o.get("package_name")),
                    package_version: opt_string(o.get("package_version")),
                    installed_at: o.get("installed_at").and_then(|v| float_of_json(v).ok()),
                    nuid: opt_string(o.get("nuid")),
                })
            })
            .collect();
        out
    }

    /// The state after a failed attempt (0.5.1 `_build_wheel_sync_error_state`): previous
    /// counts and lists kept, `last_result = error`, `last_attempt_at` and `last_error` set.
    #[must_use]
    pub fn failed(&self, attempted_at: f64, error: &str) -> Self {
        let mut out = self.clone();
        out.enabled = true;
        out.last_result = WheelSyncResult::Error;
        out.last_attempt_at = Some(attempted_at);
        out.last_error = Some(truncate_chars(error, WHEEL_SYNC_MAX_ERROR_CHARS));
        out
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Python `int(x)` of a JSON value (floats truncate, numeric strings parse).
fn int_of_json(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => crate::python::strip_digit_underscores(s.trim())?
            .parse()
            .ok(),
        _ => None,
    }
}

/// A string-valued optional field: strings kept, null/absent → `None`, other scalars → their
/// Python `str()`, lists/objects → `None`.
fn opt_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        other => Some(str_of_json(other)),
    }
}

fn opt_float(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Null => None,
        other => float_of_json(other).ok(),
    }
}

/// A worker registry record (§2.4), normalised on read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    pub worker_id: String,
    /// UUID4 hex, new per worker process.
    pub instance_id: String,
    /// Stored state (never `DISCONNECTED` when written by a worker).
    pub state: WorkerState,
    /// Display flag set by `PATCH /workers/{id}`; workers re-read and keep it.
    pub hidden: bool,
    pub tags: Vec<String>,
    pub last_seen_at: f64,
    pub last_heartbeat_at: f64,
    /// Legacy alias of `last_heartbeat_at` (v0.4 readers).
    pub heartbeat_at: f64,
    pub current_run_id: Option<String>,
    pub last_run_id: Option<String>,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<f64>,
    pub last_run_finished_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// `graceful_shutdown` after a graceful stop.
    pub stop_reason: Option<String>,
    pub updated_at: f64,
    /// Absent only in records no 0.5.1 worker wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wheel_sync: Option<WheelSyncStatus>,
    /// Keys this version does not know, written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl WorkerRecord {
    /// The record a worker writes at startup (§6.1 step 5): `IDLE`, fresh `instance_id`, all
    /// liveness timestamps = `now`, no current run, not stopped. Carry `hidden` and
    /// `wheel_sync` over from the previous record, if any.
    #[must_use]
    pub fn starting(
        worker_id: &str,
        instance_id: &str,
        tags: Vec<String>,
        now: f64,
        wheel_sync: WheelSyncStatus,
    ) -> Self {
        WorkerRecord {
            worker_id: worker_id.to_string(),
            instance_id: instance_id.to_string(),
            state: WorkerState::Idle,
            hidden: false,
            tags,
            last_seen_at: now,
            last_heartbeat_at: now,
            heartbeat_at: now,
            current_run_id: None,
            last_run_id: None,
            last_run_status: None,
            last_run_started_at: None,
            last_run_finished_at: None,
            stopped_at: None,
            stop_reason: None,
            updated_at: now,
            wheel_sync: Some(wheel_sync),
            extra: Map::new(),
        }
    }

    /// Parse and normalise a stored record; `key` is its KV key (the fallback `worker_id`).
    ///
    /// # Errors
    /// Only when the bytes are not JSON; a JSON non-object normalises to an empty record.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Self, serde_json::Error> {
        Ok(Self::from_value(value_from_python_json(bytes)?, key))
    }

    /// Normalise a stored record (0.5.1 `normalize_worker_registry_record`).
    #[must_use]
    pub fn from_value(raw: Value, key: &str) -> Self {
        let mut src = match raw {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // `shift_remove`: the unknown keys left in `extra` keep their order (`remove` would
        // move the last one into each hole, a new order on every read and write).
        let mut take = |k: &str| src.shift_remove(k);
        let worker_id = match take("worker_id") {
            Some(v) if truthy(&v) => str_of_json(&v),
            _ => key.to_string(),
        };
        let instance_id = match take("instance_id") {
            Some(v) if truthy(&v) => str_of_json(&v),
            _ => worker_id.clone(),
        };
        let state = take("state")
            .filter(truthy)
            .and_then(|v| WorkerState::parse(&str_of_json(&v)))
            .unwrap_or(WorkerState::Idle);
        let lenient = |v: Option<Value>| -> f64 {
            match v {
                Some(v) if truthy(&v) => float_of_json(&v).unwrap_or(0.0),
                _ => 0.0,
            }
        };
        let heartbeat_at = lenient(take("heartbeat_at"));
        let mut last_seen_at = lenient(take("last_seen_at"));
        if last_seen_at == 0.0 {
            last_seen_at = heartbeat_at;
        }
        let mut last_heartbeat_at = lenient(take("last_heartbeat_at"));
        if last_heartbeat_at == 0.0 {
            last_heartbeat_at = if heartbeat_at != 0.0 {
                heartbeat_at
            } else {
                last_seen_at
            };
        }
        let tags = match take("tags") {
            Some(Value::Array(items)) => items
                .iter()
                .map(str_of_json)
                .filter(|t| !t.trim_matches(crate::python::is_py_space).is_empty())
                .collect(),
            _ => Vec::new(),
        };
        let hidden = take("hidden").is_some_and(|v| truthy(&v));
        let current_run_id = opt_string(take("current_run_id").as_ref());
        let last_run_id = opt_string(take("last_run_id").as_ref());
        let last_run_status = opt_string(take("last_run_status").as_ref());
        let last_run_started_at = opt_float(take("last_run_started_at").as_ref());
        let last_run_finished_at = opt_float(take("last_run_finished_at").as_ref());
        let stopped_at = opt_float(take("stopped_at").as_ref());
        let stop_reason = opt_string(take("stop_reason").as_ref());
        let updated_at = lenient(take("updated_at"));
        let wheel_sync = take("wheel_sync").map(|v| WheelSyncStatus::from_value(&v));
        WorkerRecord {
            worker_id,
            instance_id,
            state,
            hidden,
            tags,
            last_seen_at,
            last_heartbeat_at,
            heartbeat_at: last_heartbeat_at,
            current_run_id,
            last_run_id,
            last_run_status,
            last_run_started_at,
            last_run_finished_at,
            stopped_at,
            stop_reason,
            updated_at,
            wheel_sync,
            extra: src,
        }
    }

    /// The record as Python writes it (compact, ASCII-escaped).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }

    /// Refresh the liveness timestamps (`last_seen_at`, `last_heartbeat_at`, `heartbeat_at`) and
    /// `updated_at` — a 0.5.1 "touch".
    pub fn touch(&mut self, now: f64) {
        self.last_seen_at = now;
        self.last_heartbeat_at = now;
        self.heartbeat_at = now;
        self.updated_at = now;
    }

    /// The state shown to users (§4.3): `STOPPED_GRACEFUL`/`DISCONNECTED` as stored; otherwise
    /// `DISCONNECTED` when `disconnect_timeout > 0` and `now - last_seen_at > disconnect_timeout`;
    /// otherwise the stored state.
    #[must_use]
    pub fn derived_state(&self, now: f64, disconnect_timeout: f64) -> WorkerState {
        match self.state {
            WorkerState::StoppedGraceful | WorkerState::Disconnected => self.state,
            stored => {
                if disconnect_timeout > 0.0 && now - self.last_seen_at > disconnect_timeout {
                    WorkerState::Disconnected
                } else {
                    stored
                }
            }
        }
    }

    /// The record as `GET /workers` lists it: `state` replaced by the derived state
    /// (`heartbeat_at` already equals `last_heartbeat_at` after normalisation).
    #[must_use]
    pub fn for_display(&self, now: f64, disconnect_timeout: f64) -> Self {
        let mut out = self.clone();
        out.state = self.derived_state(now, disconnect_timeout);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wheel_sync_coercion_matches_python() {
        // 0.5.1 `_coerce_wheel_sync_state(raw, enabled=False)` on the same input gives:
        // last_result "ok", last_attempt_at 12.5, last_success_at None, last_error of 2000
        // chars, counts 0/2/0/0, 50 selected wheels, updated_wheels [], extra_key dropped.
        let raw = json!({
            "enabled": true, "last_result": " OK ", "last_attempt_at": "12.5",
            "last_success_at": "bad", "last_error": "e".repeat(2100),
            "selected_count": "-3", "updated_count": 2.7, "removed_count": null,
            "skipped_incompatible_count": "x",
            "selected_wheels": (0..60).map(|i| format!("w{i}.whl")).collect::<Vec<_>>(),
            "updated_wheels": "nope", "extra_key": 1
        });
        let ws = WheelSyncStatus::coerce(&raw, false);
        assert!(!ws.enabled);
        assert_eq!(ws.last_result, WheelSyncResult::Ok);
        assert_eq!(ws.last_attempt_at, Some(12.5));
        assert_eq!(ws.last_success_at, None);
        assert_eq!(
            ws.last_error.as_ref().map(|e| e.chars().count()),
            Some(2000)
        );
        assert_eq!(
            (
                ws.selected_count,
                ws.updated_count,
                ws.removed_count,
                ws.skipped_incompatible_count
            ),
            (0, 2, 0, 0)
        );
        assert_eq!(ws.selected_wheels.len(), 50);
        assert!(ws.updated_wheels.is_empty());
        assert!(ws.extra.is_empty());
        // A gateway reading the same record keeps the stored flag and the unknown key.
        let read = WheelSyncStatus::from_value(&raw);
        assert!(read.enabled);
        assert_eq!(read.extra.get("extra_key"), Some(&json!(1)));
    }

    #[test]
    fn failed_sync_keeps_previous_counts() {
        let mut ok = WheelSyncStatus::initial(true);
        ok.selected_count = 3;
        ok.last_success_at = Some(1.0);
        let failed = ok.failed(5.0, "boom");
        assert_eq!(failed.last_result, WheelSyncResult::Error);
        assert_eq!(failed.last_attempt_at, Some(5.0));
        assert_eq!(failed.last_error.as_deref(), Some("boom"));
        assert_eq!(failed.selected_count, 3);
        assert_eq!(failed.last_success_at, Some(1.0));
        assert_eq!(
            WheelSyncStatus::initial(false).last_result,
            WheelSyncResult::Disabled
        );
    }

    #[test]
    fn starting_record_has_the_python_registry_shape() {
        let mut rec = WorkerRecord::starting(
            "worker-1",
            "9f0c3b6e2d8a4f5b8c7d6e5f4a3b2c1d",
            vec!["cpu".into()],
            10.0,
            WheelSyncStatus::initial(false),
        );
        rec.touch(12.5);
        let v: Value = serde_json::from_slice(&rec.to_json()).unwrap();
        assert_eq!(v["state"], "IDLE");
        assert_eq!(v["last_seen_at"], 12.5);
        assert_eq!(v["heartbeat_at"], 12.5);
        assert_eq!(v["updated_at"], 12.5);
        assert_eq!(v["current_run_id"], Value::Null);
        assert_eq!(v["wheel_sync"]["last_result"], "disabled");
        assert_eq!(v.as_object().unwrap().len(), 17);
        // Normalising what we wrote changes nothing.
        assert_eq!(WorkerRecord::from_value(v, "worker-1"), rec);
    }
}
