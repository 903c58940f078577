//! The pyoco-server 0.5.x wire contract, as Rust types and rules.
//!
//! Everything a Rust gateway or worker writes to NATS must be readable by the Python 0.5.1
//! components on the same server, and everything they write must be readable here. This crate
//! is the single place that knows those shapes:
//!
//! * records and messages: [`JobMessage`] (§2.1), [`RunSnapshot`] and [`TaskRecord`] (§2.2,
//!   §2.3), [`WorkerRecord`] (§2.4), [`WheelHistoryRecord`] (§2.5), [`ApiKeyRecord`] (§2.6),
//!   [`DlqMessage`] (§2.7), [`WheelManifestEntry`] (§2.8), the `GET /runs` [`RunSummary`] and
//!   [`RunsCursor`] (§3.2);
//! * the rules that decide what those values mean: job decoding ([`JobMessage::decode`]),
//!   worker-record normalisation and state derivation ([`WorkerRecord::derived_state`]),
//!   snapshot compaction ([`compact_snapshot`]), routing tags ([`validate_tag`]) and flow.yaml
//!   validation ([`parse_workflow_yaml`], YAML 1.1 like PyYAML);
//! * JSON written byte-for-byte like Python's `json.dumps(..., separators=(",", ":"),
//!   ensure_ascii=True)` ([`to_python_json`]) and read with Python's tolerance
//!   ([`from_python_json`]);
//! * [`python`]: the pieces of Python's semantics the 0.5.1 code applies to these values
//!   (`repr`, `str`, `bool`, `float()`, `str.strip()`, `json.dumps`, `time.time()`), public so
//!   the gateway, the worker and the CLI use this one copy too.
//!
//! Unknown keys in snapshots, task records, jobs and worker records are kept and written back,
//! so a read-modify-write never drops what a newer Python version added (`schedule_id`, …).
//!
//! It is not a NATS client, an HTTP layer or a runner: no I/O, no configuration reading (callers
//! pass `PYOCO_*` values such as the default tag), and no rule reads the clock (callers pass
//! `now`, usually [`python::time`]).
//! Section numbers (§) refer to the wire contract, `docs/contract.md` at the repository root.

mod auth;
mod cursor;
mod dlq;
mod job;
pub mod python;
mod snapshot;
mod tag;
mod wheel;
mod wheel_filename;
mod worker;
mod workflow_yaml;

pub use auth::{
    is_valid_tenant_id, new_api_key, parse_api_key, ApiKeyFormatError, ApiKeyRecord,
    ApiKeyRecordError, InvalidTenantId, NewApiKey, API_KEY_PREFIX, DEFAULT_KDF,
    DEFAULT_PBKDF2_ITERATIONS,
};
pub use cursor::{CursorError, RunsCursor};
pub use dlq::{
    flow_not_found_error, DlqMessage, DlqPayload, DlqRunInfo, INVALID_JOB_PAYLOAD_MAX_BYTES,
};
pub use job::{
    is_valid_kv_key, InvalidJob, InvalidJobKind, JobMessage, NewRun, WorkflowUpload,
    MAX_FLOW_NAME_BYTES,
};
pub use python::{
    from_python_json, to_python_json, try_to_python_json, value_from_python_json, PythonFormatter,
};
pub use snapshot::{
    compact_snapshot, compact_snapshot_value, run_sort_key, RunSnapshot, RunStatus, RunSummary,
    TaskRecord, TaskState, RUN_SUMMARY_KEYS,
};
pub use tag::{parse_tags_csv, validate_tag, TagError, MAX_TAG_LEN};
pub use wheel::{
    is_valid_wheel_name, parse_wheel_tags_csv, sha256_from_header, wheel_history_key,
    wheel_manifest_from_json, wheel_manifest_to_json, wheel_tags_lenient, WheelHistoryAction,
    WheelHistoryActor, WheelHistoryRecord, WheelHistorySource, WheelManifest, WheelManifestEntry,
    WheelTagError, WHEEL_SHA256_HEADER, WHEEL_TAGS_HEADER,
};
pub use wheel_filename::{canonicalize_name, InvalidWheelFilename, Pep440Version, WheelFilename};
pub use worker::{
    FailedWheel, InstalledWheel, SkippedWheel, WheelSyncResult, WheelSyncStatus, WorkerRecord,
    WorkerState, WHEEL_SYNC_MAX_ERROR_CHARS, WHEEL_SYNC_MAX_ITEMS,
};
pub use workflow_yaml::{
    parse_workflow_yaml, FlowSpec, RuntimeSpec, TaskSpec, Workflow, WorkflowDigest,
    WorkflowYamlError, MAX_VALUE_DEPTH, MAX_VALUE_NODES,
};
