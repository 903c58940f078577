//! The run snapshot (KV `pyoco_runs`, key `<run_id>`, §2.2), its task records (§2.3), the
//! `GET /runs` summary item (§3.2) and snapshot compaction (§6.9).
//!
//! Keys whose *absence* means something are `Option<Option<T>>`: `None` = key absent,
//! `Some(None)` = present and `null`. That keeps a read-modify-write of a snapshot written by a
//! gateway (no `cancel_requested_*`, no `workflow_yaml_*` for resolver runs) or by a worker
//! (all of them, `null`) byte-for-byte equivalent. Keys this version does not know
//! (`schedule_id`, `bundle_hash`, … from post-0.5.1 writers) are kept in `extra`.
//!
//! Statuses are tolerant: an unknown string (e.g. `PENDING_APPROVAL`) is kept as `Other`.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::job::NewRun;
use crate::python::{float_of_json, from_python_json, to_python_json, truthy};

/// Run status (§4.1). Unknown strings are preserved in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
    /// A status this version does not know (e.g. `PENDING_APPROVAL` after 0.5.1).
    Other(String),
}

impl RunStatus {
    /// The wire string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelling => "CANCELLING",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Other(s) => s,
        }
    }

    /// Parse a wire string exactly (case-sensitive, like the Python writers).
    #[must_use]
    pub fn parse(s: &str) -> RunStatus {
        match s {
            "PENDING" => RunStatus::Pending,
            "RUNNING" => RunStatus::Running,
            "COMPLETED" => RunStatus::Completed,
            "FAILED" => RunStatus::Failed,
            "CANCELLING" => RunStatus::Cancelling,
            "CANCELLED" => RunStatus::Cancelled,
            other => RunStatus::Other(other.to_string()),
        }
    }

    /// `COMPLETED`, `FAILED` or `CANCELLED`. The gateway's cancel compares case-insensitively
    /// (`status.upper()`), so lower-case spellings count too.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        match self {
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => true,
            RunStatus::Other(s) => {
                matches!(
                    s.to_ascii_uppercase().as_str(),
                    "COMPLETED" | "FAILED" | "CANCELLED"
                )
            }
            _ => false,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RunStatus::parse(&String::deserialize(d)?))
    }
}

/// Task state (pyoco `TaskState`, §4.2). Unknown strings are preserved in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Other(String),
}

impl TaskState {
    /// The wire string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
            TaskState::Cancelled => "CANCELLED",
            TaskState::Other(s) => s,
        }
    }

    /// Parse a wire string exactly.
    #[must_use]
    pub fn parse(s: &str) -> TaskState {
        match s {
            "PENDING" => TaskState::Pending,
            "RUNNING" => TaskState::Running,
            "SUCCEEDED" => TaskState::Succeeded,
            "FAILED" => TaskState::Failed,
            "CANCELLED" => TaskState::Cancelled,
            other => TaskState::Other(other.to_string()),
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TaskState::parse(&String::deserialize(d)?))
    }
}

/// `Option<Option<T>>` where a present `null` is `Some(None)` (serde's default folds it into
/// `None`). Use with `#[serde(default, skip_serializing_if = "Option::is_none")]`.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// One task's record inside `task_records` (pyoco `serialize_task_records`, §2.3).
///
/// The nine pyoco keys are always written (null when unset), in pyoco's order; other keys
/// (our runner's `stdout`/`stderr`, or whatever a newer pyoco adds) are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub state: TaskState,
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub ended_at: Option<f64>,
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
    /// Resolved inputs; values that are not JSON-serialisable are `repr()` strings.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Task result (or its `repr()` string).
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub artifacts: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskRecord {
    /// A record in `state` with every other field unset.
    #[must_use]
    pub fn new(state: TaskState) -> Self {
        TaskRecord {
            state,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            error: None,
            traceback: None,
            inputs: Map::new(),
            output: Value::Null,
            artifacts: Map::new(),
            extra: Map::new(),
        }
    }
}

/// The run snapshot (§2.2).
///
/// Field order is the order Python writes: the gateway's initial snapshot (§2.2 "Initial key
/// order") when the worker-only keys are absent, and `run_snapshot_from_context` order
/// otherwise; `worker_id`, `task_records_truncated` and unknown keys come last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSnapshot {
    pub run_id: String,
    pub flow_name: String,
    /// Routing tag; `null` in 0.5.1's "unexpected error" snapshots.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub api_key_id: Option<String>,
    /// Absent in gateway snapshots of resolver runs; always present (maybe null) in worker ones.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option::deserialize"
    )]
    pub workflow_yaml_sha256: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option::deserialize"
    )]
    pub workflow_yaml_bytes: Option<Option<u64>>,
    /// Absent until a cancel or a worker write; epoch seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option::deserialize"
    )]
    pub cancel_requested_at: Option<Option<f64>>,
    /// `api_key:<key_id>` when auth is on.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option::deserialize"
    )]
    pub cancel_requested_by: Option<Option<String>>,
    pub status: RunStatus,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub tasks: IndexMap<String, TaskState>,
    #[serde(default)]
    pub task_records: IndexMap<String, TaskRecord>,
    #[serde(default)]
    pub start_time: Option<f64>,
    #[serde(default)]
    pub end_time: Option<f64>,
    #[serde(default)]
    pub heartbeat_at: f64,
    #[serde(default)]
    pub updated_at: f64,
    #[serde(default)]
    pub error: Option<String>,
    /// Only in a worker's ownership write in 0.5.1 (§14 item 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// `Some(true)` only when compaction dropped the records; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_records_truncated: Option<bool>,
    /// Keys this version does not know, written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RunSnapshot {
    /// The initial `PENDING` snapshot a gateway writes for `run` at `now` (epoch seconds), with
    /// the §2.2 initial key order: `run_id, flow_name, tag, tags, tenant_id, api_key_id,
    /// [workflow_yaml_sha256, workflow_yaml_bytes,] status, params, tasks, task_records,
    /// start_time, end_time, heartbeat_at, updated_at, error`.
    #[must_use]
    pub fn pending(run: &NewRun, now: f64) -> Self {
        let (sha, bytes) = match &run.workflow {
            Some(w) => (
                Some(Some(w.digest.sha256.clone())),
                Some(Some(w.digest.bytes)),
            ),
            None => (None, None),
        };
        RunSnapshot {
            run_id: run.run_id.clone(),
            flow_name: run.flow_name.clone(),
            tag: Some(run.tag.clone()),
            tags: run.stored_tags(),
            tenant_id: run.tenant_id.clone(),
            api_key_id: run.api_key_id.clone(),
            workflow_yaml_sha256: sha,
            workflow_yaml_bytes: bytes,
            cancel_requested_at: None,
            cancel_requested_by: None,
            status: RunStatus::Pending,
            params: run.params.clone(),
            tasks: IndexMap::new(),
            task_records: IndexMap::new(),
            start_time: None,
            end_time: None,
            heartbeat_at: now,
            updated_at: now,
            error: None,
            worker_id: None,
            task_records_truncated: None,
            extra: Map::new(),
        }
    }

    /// Read a snapshot as Python writes it (accepts `NaN`/`Infinity` tokens as null).
    ///
    /// # Errors
    /// Not JSON, or a known key with an unusable type (e.g. `status` missing or not a string).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        from_python_json(bytes)
    }

    /// The snapshot as Python writes it (compact, ASCII-escaped), without compaction.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }

    /// The snapshot as written by a worker: compacted to `max_bytes` (see [`compact_snapshot`]).
    #[must_use]
    pub fn to_compacted_json(&self, max_bytes: i64) -> Vec<u8> {
        compact_snapshot(self, max_bytes)
    }

    /// The cancel request recorded in this snapshot, as the 0.5.1 run heartbeat reads it
    /// (§6.8): `Some((requested_at, requested_by))` when `cancel_requested_at` is set or the
    /// status is `CANCELLING`/`CANCELLED` (case-insensitive); a missing or non-positive
    /// timestamp becomes `now`.
    #[must_use]
    pub fn cancel_request(&self, now: f64) -> Option<(f64, Option<String>)> {
        let at = self.cancel_requested_at.flatten();
        let status = self.status.as_str().to_ascii_uppercase();
        if at.is_none() && status != "CANCELLING" && status != "CANCELLED" {
            return None;
        }
        let at = at.filter(|t| *t > 0.0).unwrap_or(now);
        let by = self
            .cancel_requested_by
            .clone()
            .flatten()
            .filter(|s| !s.is_empty());
        Some((at, by))
    }

    /// The `GET /runs` summary item of this snapshot.
    #[must_use]
    pub fn summary(&self) -> RunSummary {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => RunSummary::from_snapshot(&map),
            _ => RunSummary(Map::new()),
        }
    }
}

/// Keys of a `GET /runs` summary item, in the order we write them (0.5.1 iterates a Python
/// `set`, so its order varies from process to process). `schedule_id` is pyoco-server 0.7's,
/// present only in runs a schedule dispatched.
pub const RUN_SUMMARY_KEYS: [&str; 12] = [
    "run_id",
    "schedule_id",
    "flow_name",
    "tag",
    "tags",
    "tenant_id",
    "api_key_id",
    "status",
    "updated_at",
    "heartbeat_at",
    "worker_id",
    "error",
];

/// A `GET /runs` summary item: the [`RUN_SUMMARY_KEYS`] present in the snapshot (a present
/// `null` stays `null`; an absent key stays absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunSummary(pub Map<String, Value>);

impl RunSummary {
    /// Project a snapshot (as raw JSON, so snapshots this version cannot type still list).
    #[must_use]
    pub fn from_snapshot(snapshot: &Map<String, Value>) -> Self {
        let mut out = Map::new();
        for key in RUN_SUMMARY_KEYS {
            if let Some(v) = snapshot.get(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
        RunSummary(out)
    }
}

/// The `(updated_at, run_id)` key `GET /runs` sorts by (descending) and pages on:
/// `(float(updated_at or 0), str(run_id or ""))`. An unconvertible `updated_at` counts as 0
/// (0.5.1 answers 500 there).
#[must_use]
pub fn run_sort_key(snapshot: &Map<String, Value>) -> (f64, String) {
    let updated_at = match snapshot.get("updated_at") {
        Some(v) if truthy(v) => float_of_json(v).unwrap_or(0.0),
        _ => 0.0,
    };
    let run_id = match snapshot.get("run_id") {
        Some(v) if truthy(v) => crate::python::str_of_json(v),
        _ => String::new(),
    };
    (updated_at, run_id)
}

/// Compact a snapshot exactly like 0.5.1's `compact_run_snapshot` and return the bytes to put:
///
/// * `max_bytes <= 0`: the snapshot unchanged;
/// * its compact ASCII-escaped JSON fits in `max_bytes`: the snapshot without
///   `task_records_truncated`;
/// * otherwise: `task_records = {}` and `task_records_truncated = true` (even if still too big).
///
/// 0.5.1 applies it to the ownership, trace and terminal writes; our worker applies it to every
/// snapshot write, heartbeats included (§14 item 5).
#[must_use]
pub fn compact_snapshot(snapshot: &RunSnapshot, max_bytes: i64) -> Vec<u8> {
    if max_bytes <= 0 {
        return to_python_json(snapshot);
    }
    let raw = to_python_json(snapshot);
    if raw.len() as u64 <= max_bytes as u64 {
        if snapshot.task_records_truncated.is_none() {
            return raw;
        }
        let mut fitted = snapshot.clone();
        fitted.task_records_truncated = None;
        return to_python_json(&fitted);
    }
    let mut reduced = snapshot.clone();
    reduced.task_records = IndexMap::new();
    reduced.task_records_truncated = Some(true);
    to_python_json(&reduced)
}

/// [`compact_snapshot`] for a snapshot held as raw JSON (e.g. one this version cannot type).
#[must_use]
pub fn compact_snapshot_value(snapshot: &Map<String, Value>, max_bytes: i64) -> Vec<u8> {
    if max_bytes <= 0 {
        return to_python_json(snapshot);
    }
    let raw = to_python_json(snapshot);
    if raw.len() as u64 <= max_bytes as u64 {
        if !snapshot.contains_key("task_records_truncated") {
            return raw;
        }
        let mut fitted = snapshot.clone();
        // Python's `pop`: the other keys keep their order.
        fitted.shift_remove("task_records_truncated");
        return to_python_json(&fitted);
    }
    let mut reduced = snapshot.clone();
    reduced.insert("task_records".to_string(), Value::Object(Map::new()));
    reduced.insert("task_records_truncated".to_string(), Value::Bool(true));
    to_python_json(&reduced)
}
