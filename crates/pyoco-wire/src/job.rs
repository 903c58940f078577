//! The job message published to `pyoco.work.<tag>` (§2.1) and the worker's decode rules.
//!
//! A gateway builds one [`NewRun`] per submission; [`JobMessage::for_new_run`] and
//! [`crate::RunSnapshot::pending`] turn it into the job and the initial snapshot, so both writes
//! carry the same metadata.
//!
//! [`JobMessage::decode`] applies the 0.5.1 rules (`invalid_json`, `invalid_schema`,
//! `missing_fields`, `float(submitted_at or 0)`) and, where 0.5.1 checks nothing, the types
//! our worker relies on. Differences from 0.5.1, all on messages no gateway writes:
//! * a missing/empty `tag` becomes the caller's default tag (`PYOCO_DEFAULT_TAG`), not the
//!   literal `"default"` (§14 item 26);
//! * `run_id` must be a string usable as a KV key, `flow_name` a string, `tags` a list of
//!   strings, `params` an object, `tenant_id`/`api_key_id`/`workflow_yaml*` strings or null,
//!   `workflow_yaml_bytes` an integer; otherwise the job is invalid (`invalid_field`) instead of
//!   failing later inside the worker;
//! * an empty `workflow_yaml` is read as absent (0.5.1 treats it the same way: resolver path).
//!
//! An invalid job still tells its `run_id` when it can be read ([`InvalidJob::run_id`]), so the
//! worker can mark the run FAILED instead of leaving it PENDING forever (§14 item 9).

use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::python::{float_or_zero, to_python_json, truthy, value_from_python_json};
use crate::workflow_yaml::WorkflowDigest;

/// The job message, serialized with the key order 0.5.1 writes:
/// `run_id, flow_name, tag, tags, tenant_id, api_key_id, params,
/// [workflow_yaml, workflow_yaml_sha256, workflow_yaml_bytes,] submitted_at`,
/// then any extra keys (e.g. `schedule_id` from a post-0.5.1 gateway).
/// Longest `flow_name` (UTF-8 bytes) the gateway accepts (0.5.1: no limit; a megabyte-long name
/// made a snapshot too big to write, and the job was redelivered until its deliveries ran out).
pub const MAX_FLOW_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobMessage {
    pub run_id: String,
    pub flow_name: String,
    /// Routing tag (the last token of the subject the job was published to).
    pub tag: String,
    /// Free metadata; the gateway writes `[tag]` when the request has none.
    pub tags: Vec<String>,
    pub tenant_id: Option<String>,
    pub api_key_id: Option<String>,
    pub params: Map<String, Value>,
    /// Full flow.yaml text; its presence selects the YAML path on the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_yaml: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_yaml_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_yaml_bytes: Option<u64>,
    /// Epoch seconds.
    pub submitted_at: f64,
    /// Keys this version does not know, kept so a worker can carry them into the snapshot.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A flow.yaml upload attached to a submission (`POST /runs/yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowUpload {
    /// The uploaded bytes decoded as UTF-8 (sent in the job, never stored in KV).
    pub text: String,
    /// sha256 and length of the uploaded bytes.
    pub digest: WorkflowDigest,
}

/// Everything a gateway knows about a new run; feeds both the job and the initial snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_id: String,
    pub flow_name: String,
    /// Validated routing tag.
    pub tag: String,
    /// Request tags; empty means `[tag]` (0.5.1: `req.tags or [routing_tag]`).
    pub tags: Vec<String>,
    pub tenant_id: Option<String>,
    pub api_key_id: Option<String>,
    pub params: Map<String, Value>,
    pub workflow: Option<WorkflowUpload>,
}

impl NewRun {
    /// The tags stored in the job and snapshot: the request tags, or `[tag]` when there are none.
    #[must_use]
    pub fn stored_tags(&self) -> Vec<String> {
        if self.tags.is_empty() {
            vec![self.tag.clone()]
        } else {
            self.tags.clone()
        }
    }
}

impl JobMessage {
    /// The job a gateway publishes for `run`, submitted at `now` (epoch seconds).
    #[must_use]
    pub fn for_new_run(run: &NewRun, now: f64) -> Self {
        let (workflow_yaml, workflow_yaml_sha256, workflow_yaml_bytes) = match &run.workflow {
            Some(w) => (
                Some(w.text.clone()),
                Some(w.digest.sha256.clone()),
                Some(w.digest.bytes),
            ),
            None => (None, None, None),
        };
        JobMessage {
            run_id: run.run_id.clone(),
            flow_name: run.flow_name.clone(),
            tag: run.tag.clone(),
            tags: run.stored_tags(),
            tenant_id: run.tenant_id.clone(),
            api_key_id: run.api_key_id.clone(),
            params: run.params.clone(),
            workflow_yaml,
            workflow_yaml_sha256,
            workflow_yaml_bytes,
            submitted_at: now,
            extra: Map::new(),
        }
    }

    /// The message body as Python writes it (compact, ASCII-escaped).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }

    /// True when the job carries a flow.yaml (YAML path), false for the resolver path.
    #[must_use]
    pub fn is_yaml(&self) -> bool {
        self.workflow_yaml.is_some()
    }

    /// Decode a job body with the 0.5.1 rules; a missing or empty `tag` becomes `default_tag`.
    ///
    /// # Errors
    /// [`InvalidJob`] with the reason and, when readable, the run id.
    pub fn decode(raw: &[u8], default_tag: &str) -> Result<JobMessage, InvalidJob> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| InvalidJob::new(InvalidJobKind::InvalidJson, None))?;
        let value = value_from_python_json(text.as_bytes())
            .map_err(|_| InvalidJob::new(InvalidJobKind::InvalidJson, None))?;
        let Value::Object(mut obj) = value else {
            return Err(InvalidJob::new(InvalidJobKind::InvalidSchema, None));
        };
        let run_id = obj
            .get("run_id")
            .and_then(Value::as_str)
            .filter(|id| is_valid_kv_key(id))
            .map(str::to_string);
        let fail = |kind| InvalidJob::new(kind, run_id.clone());

        if !obj.contains_key("run_id") || !obj.contains_key("flow_name") {
            return Err(fail(InvalidJobKind::MissingFields));
        }
        let Some(run_id_value) = run_id.clone() else {
            return Err(fail(InvalidJobKind::InvalidField {
                field: "run_id",
                expected: "a non-empty string of A-Z a-z 0-9 - _ / = . (a KV key)",
            }));
        };
        // `shift_remove` throughout: the keys left in `extra` keep the order the writer gave them.
        let flow_name = match obj.shift_remove("flow_name") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(fail(InvalidJobKind::InvalidField {
                    field: "flow_name",
                    expected: "a string",
                }))
            }
        };
        let submitted_at = float_or_zero(obj.get("submitted_at"))
            .map_err(|msg| fail(InvalidJobKind::InvalidSubmittedAt(msg)))?;
        obj.shift_remove("submitted_at");
        obj.shift_remove("run_id");

        let tag = match obj.shift_remove("tag") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(v) if truthy(&v) => {
                return Err(fail(InvalidJobKind::InvalidField {
                    field: "tag",
                    expected: "a string",
                }))
            }
            _ => default_tag.to_string(),
        };
        let tags = match obj.shift_remove("tags") {
            Some(Value::Array(items)) => {
                let mut tags = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => tags.push(s),
                        _ => {
                            return Err(fail(InvalidJobKind::InvalidField {
                                field: "tags",
                                expected: "a list of strings",
                            }))
                        }
                    }
                }
                tags
            }
            Some(v) if truthy(&v) => {
                return Err(fail(InvalidJobKind::InvalidField {
                    field: "tags",
                    expected: "a list of strings",
                }))
            }
            _ => Vec::new(),
        };
        let params = match obj.shift_remove("params") {
            Some(Value::Object(m)) => m,
            Some(v) if truthy(&v) => {
                return Err(fail(InvalidJobKind::InvalidField {
                    field: "params",
                    expected: "an object",
                }))
            }
            _ => Map::new(),
        };
        let mut opt_str = |field: &'static str| -> Result<Option<String>, InvalidJob> {
            match obj.shift_remove(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(fail(InvalidJobKind::InvalidField {
                    field,
                    expected: "a string or null",
                })),
            }
        };
        let tenant_id = opt_str("tenant_id")?;
        let api_key_id = opt_str("api_key_id")?;
        let workflow_yaml = opt_str("workflow_yaml")?.filter(|s| !s.is_empty());
        let workflow_yaml_sha256 = opt_str("workflow_yaml_sha256")?;
        let workflow_yaml_bytes = match obj.shift_remove("workflow_yaml_bytes") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(u) => Some(u),
                None => match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Some(f as u64),
                    _ => {
                        return Err(fail(InvalidJobKind::InvalidField {
                            field: "workflow_yaml_bytes",
                            expected: "a non-negative integer or null",
                        }))
                    }
                },
            },
            Some(_) => {
                return Err(fail(InvalidJobKind::InvalidField {
                    field: "workflow_yaml_bytes",
                    expected: "a non-negative integer or null",
                }))
            }
        };

        Ok(JobMessage {
            run_id: run_id_value,
            flow_name,
            tag,
            tags,
            tenant_id,
            api_key_id,
            params,
            workflow_yaml,
            workflow_yaml_sha256,
            workflow_yaml_bytes,
            submitted_at,
            extra: obj,
        })
    }
}

/// NATS KV key rule (`^[-/_=.a-zA-Z0-9]+$`, no leading/trailing `.`): a run id outside it
/// cannot be written to `pyoco_runs`.
pub fn is_valid_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// Why a job body was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidJobKind {
    /// Not UTF-8, or not JSON.
    InvalidJson,
    /// JSON, but not an object.
    InvalidSchema,
    /// `run_id` or `flow_name` absent.
    MissingFields,
    /// `submitted_at` is not float-convertible; holds Python's error message.
    InvalidSubmittedAt(String),
    /// A field has a type our worker cannot use (not checked by 0.5.1).
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
    /// Its flow.yaml calls a module `PYOCO_TASK_MODULES` does not allow (not in 0.5.1).
    TaskModuleNotAllowed { task: String, module: String },
    /// Its flow.yaml expands beyond the loader's budgets (not in 0.5.1, whose runner would
    /// exhaust its memory): the `too_large` reason.
    WorkflowTooLarge(String),
    /// Its run's snapshot would be `bytes` bytes, more than the NATS server takes in one message
    /// (`limit`, its max_payload less room for headers): it could never be claimed (not in
    /// 0.5.1, which NAKed it until `max_deliver`).
    SnapshotTooLarge { bytes: usize, limit: usize },
}

/// An undecodable job (§6.6 "Decode failure": DLQ `invalid_job`, TERM).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", self.message())]
pub struct InvalidJob {
    kind: InvalidJobKind,
    run_id: Option<String>,
}

impl InvalidJob {
    fn new(kind: InvalidJobKind, run_id: Option<String>) -> Self {
        InvalidJob { kind, run_id }
    }

    /// The job of run `run_id` has a flow.yaml that expands beyond the loader's budgets
    /// (`reason` is the flow.yaml rule's, `too_large: …`).
    #[must_use]
    pub fn workflow_too_large(run_id: &str, reason: &str) -> Self {
        let kind = InvalidJobKind::WorkflowTooLarge(reason.to_string());
        InvalidJob::new(kind, is_valid_kv_key(run_id).then(|| run_id.to_string()))
    }

    /// The snapshot of run `run_id` would be `bytes` bytes, more than `limit`, what one NATS
    /// message can hold.
    #[must_use]
    pub fn snapshot_too_large(run_id: &str, bytes: usize, limit: usize) -> Self {
        let kind = InvalidJobKind::SnapshotTooLarge { bytes, limit };
        InvalidJob::new(kind, is_valid_kv_key(run_id).then(|| run_id.to_string()))
    }

    /// The job of run `run_id` has a flow.yaml whose task `task` calls `module`, which the
    /// worker's `PYOCO_TASK_MODULES` does not allow.
    #[must_use]
    pub fn task_module_not_allowed(run_id: &str, task: &str, module: &str) -> Self {
        let kind = InvalidJobKind::TaskModuleNotAllowed {
            task: task.to_string(),
            module: module.to_string(),
        };
        InvalidJob::new(kind, is_valid_kv_key(run_id).then(|| run_id.to_string()))
    }

    /// What was wrong.
    #[must_use]
    pub fn kind(&self) -> &InvalidJobKind {
        &self.kind
    }

    /// The run id, when the body is a JSON object whose `run_id` is a string usable as a KV key
    /// (so the run's snapshot can be marked FAILED).
    #[must_use]
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// Short machine reason: `invalid_json`, `invalid_schema`, `missing_fields`,
    /// `invalid_submitted_at`, `invalid_field`, `task_module_not_allowed`, `workflow_too_large`
    /// or `snapshot_too_large`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self.kind {
            InvalidJobKind::InvalidJson => "invalid_json",
            InvalidJobKind::InvalidSchema => "invalid_schema",
            InvalidJobKind::MissingFields => "missing_fields",
            InvalidJobKind::InvalidSubmittedAt(_) => "invalid_submitted_at",
            InvalidJobKind::InvalidField { .. } => "invalid_field",
            InvalidJobKind::TaskModuleNotAllowed { .. } => "task_module_not_allowed",
            InvalidJobKind::WorkflowTooLarge(_) => "workflow_too_large",
            InvalidJobKind::SnapshotTooLarge { .. } => "snapshot_too_large",
        }
    }

    /// The text 0.5.1 puts in the DLQ record's `error` (`str(exc)`): the reason, or Python's
    /// `float()` error message for `submitted_at`.
    #[must_use]
    pub fn message(&self) -> String {
        match &self.kind {
            InvalidJobKind::InvalidSubmittedAt(msg) => msg.clone(),
            InvalidJobKind::InvalidField { field, expected } => {
                format!("invalid_field: {field} must be {expected}")
            }
            InvalidJobKind::WorkflowTooLarge(reason) => format!("workflow_too_large: {reason}"),
            InvalidJobKind::SnapshotTooLarge { bytes, limit } => format!(
                "snapshot_too_large: the run's snapshot would be {bytes} bytes, more than the \
                 {limit} one NATS message can hold (max_payload); its params or flow_name are \
                 too large"
            ),
            InvalidJobKind::TaskModuleNotAllowed { task, module } => format!(
                "task_module_not_allowed: task {task} calls module {module}, which \
                 PYOCO_TASK_MODULES does not list"
            ),
            _ => self.reason().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: &Value) -> Result<JobMessage, InvalidJob> {
        JobMessage::decode(&serde_json::to_vec(v).unwrap(), "default")
    }

    #[test]
    fn job_keys_are_written_in_python_order() {
        let run = NewRun {
            run_id: "r1".into(),
            flow_name: "main".into(),
            tag: "cpu".into(),
            tags: vec![],
            tenant_id: None,
            api_key_id: None,
            params: Map::new(),
            workflow: None,
        };
        let job = JobMessage::for_new_run(&run, 5.0);
        assert_eq!(
            String::from_utf8(job.to_json()).unwrap(),
            r#"{"run_id":"r1","flow_name":"main","tag":"cpu","tags":["cpu"],"tenant_id":null,"api_key_id":null,"params":{},"submitted_at":5.0}"#
        );
        let yaml_run = NewRun {
            workflow: Some(WorkflowUpload {
                text: "flow: {graph: a}\n".into(),
                digest: WorkflowDigest::of(b"flow: {graph: a}\n"),
            }),
            tags: vec!["x".into()],
            tenant_id: Some("t".into()),
            api_key_id: Some("k".into()),
            ..run
        };
        let text = String::from_utf8(JobMessage::for_new_run(&yaml_run, 1.5).to_json()).unwrap();
        let keys: Vec<&str> = [
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "params",
            "workflow_yaml",
            "workflow_yaml_sha256",
            "workflow_yaml_bytes",
            "submitted_at",
        ]
        .to_vec();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains(r#""workflow_yaml_bytes":17,"submitted_at":1.5}"#));
    }

    #[test]
    fn decodes_a_gateway_job_and_keeps_unknown_keys() {
        let job = decode(&json!({
            "run_id": "0b9c-1", "flow_name": "main", "tag": "cpu", "tags": ["cpu"],
            "tenant_id": null, "api_key_id": null, "params": {"x": 1},
            "submitted_at": 1712345678.5, "schedule_id": "s-1"
        }))
        .unwrap();
        assert_eq!(job.run_id, "0b9c-1");
        assert_eq!(job.tag, "cpu");
        assert_eq!(job.params, json!({"x": 1}).as_object().unwrap().clone());
        assert_eq!(job.submitted_at, 1712345678.5);
        assert_eq!(job.extra.get("schedule_id"), Some(&json!("s-1")));
        assert!(!job.is_yaml());
    }

    #[test]
    fn library_client_job_without_tenant_fields_decodes() {
        let job = decode(&json!({"run_id": "r", "flow_name": "f", "submitted_at": 1})).unwrap();
        assert_eq!(job.tenant_id, None);
        assert_eq!(job.tags, Vec::<String>::new());
        assert_eq!(job.params, Map::new());
    }

    #[test]
    fn missing_tag_uses_the_configured_default_tag() {
        let raw = br#"{"run_id":"r","flow_name":"f","tag":""}"#;
        assert_eq!(JobMessage::decode(raw, "gpu").unwrap().tag, "gpu");
        let raw = br#"{"run_id":"r","flow_name":"f"}"#;
        assert_eq!(JobMessage::decode(raw, "default").unwrap().tag, "default");
    }

    #[test]
    fn submitted_at_accepts_numeric_strings_and_falsy_values() {
        let ok = |v: Value| {
            decode(&json!({"run_id": "r", "flow_name": "f", "submitted_at": v}))
                .unwrap()
                .submitted_at
        };
        assert_eq!(ok(json!("1.5")), 1.5);
        assert_eq!(ok(json!(" 2 ")), 2.0);
        assert_eq!(ok(json!(null)), 0.0);
        assert_eq!(ok(json!("")), 0.0);
        assert_eq!(ok(json!(true)), 1.0);
        assert_eq!(ok(json!(7)), 7.0);
    }

    #[test]
    fn non_utf8_body_is_invalid_json() {
        let err = JobMessage::decode(b"\xff\xfe{}", "default").unwrap_err();
        assert_eq!(err.reason(), "invalid_json");
        assert_eq!(err.message(), "invalid_json");
        assert_eq!(err.run_id(), None);
    }

    #[test]
    fn non_json_body_is_invalid_json() {
        let err = JobMessage::decode(b"{not json", "default").unwrap_err();
        assert_eq!(err.kind(), &InvalidJobKind::InvalidJson);
    }

    #[test]
    fn non_object_body_is_invalid_schema() {
        let err = JobMessage::decode(b"[1,2]", "default").unwrap_err();
        assert_eq!(err.reason(), "invalid_schema");
        assert_eq!(err.to_string(), "invalid_schema");
    }

    #[test]
    fn missing_flow_name_is_missing_fields_with_readable_run_id() {
        let err = decode(&json!({"run_id": "r-1"})).unwrap_err();
        assert_eq!(err.reason(), "missing_fields");
        assert_eq!(err.run_id(), Some("r-1"));
        let err = decode(&json!({"flow_name": "f"})).unwrap_err();
        assert_eq!(err.reason(), "missing_fields");
        assert_eq!(err.run_id(), None);
    }

    #[test]
    fn unconvertible_submitted_at_reports_python_float_error() {
        let err =
            decode(&json!({"run_id": "r-2", "flow_name": "f", "submitted_at": "abc"})).unwrap_err();
        assert_eq!(err.message(), "could not convert string to float: 'abc'");
        assert_eq!(err.run_id(), Some("r-2"));
        let err =
            decode(&json!({"run_id": "r-2", "flow_name": "f", "submitted_at": [1]})).unwrap_err();
        assert_eq!(
            err.message(),
            "float() argument must be a string or a real number, not 'list'"
        );
    }

    #[test]
    fn wrongly_typed_fields_are_invalid_with_readable_run_id() {
        for (field, value) in [
            ("flow_name", json!(5)),
            ("tag", json!(5)),
            ("tags", json!("cpu")),
            ("tags", json!([1])),
            ("params", json!([1])),
            ("tenant_id", json!(1)),
            ("workflow_yaml_bytes", json!("12")),
        ] {
            let mut body = json!({"run_id": "r-3", "flow_name": "f"});
            body[field] = value;
            let err = decode(&body).unwrap_err();
            assert_eq!(err.reason(), "invalid_field", "{field}");
            assert_eq!(err.run_id(), Some("r-3"), "{field}");
            assert!(err.message().contains(field), "{}", err.message());
        }
    }

    #[test]
    fn run_id_unusable_as_kv_key_is_not_readable() {
        for bad in [json!(5), json!(null), json!(""), json!("a b"), json!(".x")] {
            let err = decode(&json!({"run_id": bad, "flow_name": "f"})).unwrap_err();
            assert_eq!(err.reason(), "invalid_field");
            assert_eq!(err.run_id(), None);
        }
    }

    #[test]
    fn empty_workflow_yaml_means_resolver_path() {
        let job = decode(&json!({"run_id": "r", "flow_name": "f", "workflow_yaml": ""})).unwrap();
        assert!(!job.is_yaml());
    }
}
