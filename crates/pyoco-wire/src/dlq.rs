//! DLQ records (stream `PYOCO_DLQ`, subject `<dlq prefix>.<tag>`, §2.7).
//!
//! A record is `{"reason", "error", "timestamp"}` followed by a reason-specific payload, written
//! in that order. Reasons:
//!
//! | reason | subject tag | payload |
//! |---|---|---|
//! | `invalid_job` | last token of the job's subject | `subject`, `worker_id`, `num_delivered`, `payload` (first 4096 bytes, lossy UTF-8) |
//! | `flow_not_found` | job tag | `run_id`, `flow_name`, `tag`, `tags`, `tenant_id`, `api_key_id`, `worker_id` |
//! | `execution_error` | job tag | same as `flow_not_found` |
//! | `max_deliver_exceeded` (ours) | job tag, else last subject token | `subject`, `worker_id`, `num_delivered`, `max_deliver`, then `run_id`, `flow_name`, `tag`, `tags`, `tenant_id`, `api_key_id` when the job decoded |
//!
//! `max_deliver_exceeded` is new in the Rust worker: 0.5.1 leaves a message that exhausted
//! `max_deliver` in the work stream silently (§14 item 9). Our worker publishes this record
//! when it gives up on such a message. 0.5.1 only counts DLQ messages (`/metrics`), so the new
//! reason is invisible to Python components except in that count.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::job::JobMessage;
use crate::python::{repr_str, to_python_json};

/// Bytes of an invalid job body copied into its DLQ record.
pub const INVALID_JOB_PAYLOAD_MAX_BYTES: usize = 4096;

/// Run metadata carried by `flow_not_found`, `execution_error` and `max_deliver_exceeded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqRunInfo {
    pub run_id: String,
    pub flow_name: String,
    pub tag: String,
    pub tags: Vec<String>,
    pub tenant_id: Option<String>,
    pub api_key_id: Option<String>,
}

impl DlqRunInfo {
    /// The run metadata of a decoded job.
    #[must_use]
    pub fn from_job(job: &JobMessage) -> Self {
        DlqRunInfo {
            run_id: job.run_id.clone(),
            flow_name: job.flow_name.clone(),
            tag: job.tag.clone(),
            tags: job.tags.clone(),
            tenant_id: job.tenant_id.clone(),
            api_key_id: job.api_key_id.clone(),
        }
    }
}

/// The reason-specific part of a DLQ record.
#[derive(Debug, Clone, PartialEq)]
pub enum DlqPayload {
    /// The job body could not be decoded.
    InvalidJob {
        subject: String,
        worker_id: String,
        num_delivered: Option<u64>,
        /// First [`INVALID_JOB_PAYLOAD_MAX_BYTES`] bytes of the body, lossy UTF-8.
        payload: String,
    },
    /// The worker has no flow of that name.
    FlowNotFound { run: DlqRunInfo, worker_id: String },
    /// The flow raised.
    ExecutionError { run: DlqRunInfo, worker_id: String },
    /// Ours: the message reached the consumer's `max_deliver` without completing.
    MaxDeliverExceeded {
        subject: String,
        worker_id: String,
        num_delivered: u64,
        max_deliver: u64,
        /// Present when the body decoded as a job.
        run: Option<DlqRunInfo>,
    },
}

/// One DLQ record.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqMessage {
    /// Human-readable error (`str(exc)` in 0.5.1).
    pub error: Option<String>,
    /// Epoch seconds.
    pub timestamp: f64,
    pub payload: DlqPayload,
}

impl DlqMessage {
    /// An `invalid_job` record; `body` is truncated to 4096 bytes and decoded lossily.
    #[must_use]
    pub fn invalid_job(
        subject: &str,
        worker_id: &str,
        num_delivered: Option<u64>,
        body: &[u8],
        error: &str,
        timestamp: f64,
    ) -> Self {
        let cut = &body[..body.len().min(INVALID_JOB_PAYLOAD_MAX_BYTES)];
        DlqMessage {
            error: Some(error.to_string()),
            timestamp,
            payload: DlqPayload::InvalidJob {
                subject: subject.to_string(),
                worker_id: worker_id.to_string(),
                num_delivered,
                payload: String::from_utf8_lossy(cut).into_owned(),
            },
        }
    }

    /// A `flow_not_found` record for `job`, with 0.5.1's error text
    /// (`flow_not_found: '<name>'`, see [`flow_not_found_error`]).
    #[must_use]
    pub fn flow_not_found(job: &JobMessage, worker_id: &str, timestamp: f64) -> Self {
        DlqMessage {
            error: Some(flow_not_found_error(&job.flow_name)),
            timestamp,
            payload: DlqPayload::FlowNotFound {
                run: DlqRunInfo::from_job(job),
                worker_id: worker_id.to_string(),
            },
        }
    }

    /// An `execution_error` record for `job`.
    #[must_use]
    pub fn execution_error(job: &JobMessage, worker_id: &str, error: &str, timestamp: f64) -> Self {
        DlqMessage {
            error: Some(error.to_string()),
            timestamp,
            payload: DlqPayload::ExecutionError {
                run: DlqRunInfo::from_job(job),
                worker_id: worker_id.to_string(),
            },
        }
    }

    /// The `reason` field.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self.payload {
            DlqPayload::InvalidJob { .. } => "invalid_job",
            DlqPayload::FlowNotFound { .. } => "flow_not_found",
            DlqPayload::ExecutionError { .. } => "execution_error",
            DlqPayload::MaxDeliverExceeded { .. } => "max_deliver_exceeded",
        }
    }

    /// The subject tag: the job tag when known, else the last token of the job's subject
    /// (`unknown` for an empty subject, as in 0.5.1).
    #[must_use]
    pub fn tag(&self) -> &str {
        match &self.payload {
            DlqPayload::InvalidJob { subject, .. }
            | DlqPayload::MaxDeliverExceeded {
                subject, run: None, ..
            } => match subject.rsplit('.').next() {
                Some(last) if !subject.is_empty() => last,
                _ => "unknown",
            },
            DlqPayload::FlowNotFound { run, .. }
            | DlqPayload::ExecutionError { run, .. }
            | DlqPayload::MaxDeliverExceeded { run: Some(run), .. } => &run.tag,
        }
    }

    /// `<prefix>.<tag>`, e.g. `pyoco.dlq.cpu` for prefix `pyoco.dlq` (`PYOCO_DLQ_SUBJECT_PREFIX`).
    #[must_use]
    pub fn subject(&self, dlq_subject_prefix: &str) -> String {
        format!("{dlq_subject_prefix}.{}", self.tag())
    }

    /// The record as Python writes it (compact, ASCII-escaped).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }
}

/// 0.5.1's `error` for a missing flow: `f"flow_not_found: {KeyError(name)}"`, i.e. the name's
/// Python `repr` (`flow_not_found: 'main'`). Also the run snapshot's `error` in that case.
#[must_use]
pub fn flow_not_found_error(flow_name: &str) -> String {
    format!("flow_not_found: {}", repr_str(flow_name))
}

impl Serialize for DlqMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("reason", self.reason())?;
        m.serialize_entry("error", &self.error)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        let run_fields = |m: &mut S::SerializeMap, run: &DlqRunInfo| -> Result<(), S::Error> {
            m.serialize_entry("run_id", &run.run_id)?;
            m.serialize_entry("flow_name", &run.flow_name)?;
            m.serialize_entry("tag", &run.tag)?;
            m.serialize_entry("tags", &run.tags)?;
            m.serialize_entry("tenant_id", &run.tenant_id)?;
            m.serialize_entry("api_key_id", &run.api_key_id)
        };
        match &self.payload {
            DlqPayload::InvalidJob {
                subject,
                worker_id,
                num_delivered,
                payload,
            } => {
                m.serialize_entry("subject", subject)?;
                m.serialize_entry("worker_id", worker_id)?;
                m.serialize_entry("num_delivered", num_delivered)?;
                m.serialize_entry("payload", payload)?;
            }
            DlqPayload::FlowNotFound { run, worker_id }
            | DlqPayload::ExecutionError { run, worker_id } => {
                run_fields(&mut m, run)?;
                m.serialize_entry("worker_id", worker_id)?;
            }
            DlqPayload::MaxDeliverExceeded {
                subject,
                worker_id,
                num_delivered,
                max_deliver,
                run,
            } => {
                m.serialize_entry("subject", subject)?;
                m.serialize_entry("worker_id", worker_id)?;
                m.serialize_entry("num_delivered", num_delivered)?;
                m.serialize_entry("max_deliver", max_deliver)?;
                if let Some(run) = run {
                    run_fields(&mut m, run)?;
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn job() -> JobMessage {
        JobMessage {
            run_id: "r1".into(),
            flow_name: "main".into(),
            tag: "cpu".into(),
            tags: vec!["cpu".into()],
            tenant_id: Some("t1".into()),
            api_key_id: None,
            params: Map::new(),
            workflow_yaml: None,
            workflow_yaml_sha256: None,
            workflow_yaml_bytes: None,
            submitted_at: 1.0,
            extra: Map::new(),
        }
    }

    #[test]
    fn invalid_job_record_matches_python_layout() {
        let msg = DlqMessage::invalid_job(
            "pyoco.work.cpu",
            "w1",
            Some(1),
            b"{bad \xff",
            "invalid_json",
            1712345678.5,
        );
        assert_eq!(msg.subject("pyoco.dlq"), "pyoco.dlq.cpu");
        assert_eq!(
            String::from_utf8(msg.to_json()).unwrap(),
            r#"{"reason":"invalid_job","error":"invalid_json","timestamp":1712345678.5,"subject":"pyoco.work.cpu","worker_id":"w1","num_delivered":1,"payload":"{bad \ufffd"}"#
        );
    }

    #[test]
    fn invalid_job_payload_is_cut_at_4096_bytes() {
        let body = vec![b'a'; 5000];
        let msg = DlqMessage::invalid_job("", "w", None, &body, "invalid_json", 0.0);
        assert_eq!(msg.tag(), "unknown");
        match msg.payload {
            DlqPayload::InvalidJob { payload, .. } => assert_eq!(payload.len(), 4096),
            _ => unreachable!(),
        }
    }

    #[test]
    fn flow_not_found_record_uses_job_tag_and_python_repr() {
        let msg = DlqMessage::flow_not_found(&job(), "w1", 2.0);
        assert_eq!(msg.subject("pyoco.dlq"), "pyoco.dlq.cpu");
        assert_eq!(
            String::from_utf8(msg.to_json()).unwrap(),
            r#"{"reason":"flow_not_found","error":"flow_not_found: 'main'","timestamp":2.0,"run_id":"r1","flow_name":"main","tag":"cpu","tags":["cpu"],"tenant_id":"t1","api_key_id":null,"worker_id":"w1"}"#
        );
    }

    #[test]
    fn execution_error_record_carries_the_error_text() {
        let msg = DlqMessage::execution_error(&job(), "w1", "boom", 3.0);
        assert_eq!(msg.reason(), "execution_error");
        let v: serde_json::Value = serde_json::from_slice(&msg.to_json()).unwrap();
        assert_eq!(v["error"], "boom");
        assert_eq!(v["worker_id"], "w1");
    }

    #[test]
    fn max_deliver_exceeded_record_names_counts_and_run() {
        let msg = DlqMessage {
            error: Some("max_deliver 20 reached".into()),
            timestamp: 4.0,
            payload: DlqPayload::MaxDeliverExceeded {
                subject: "pyoco.work.gpu".into(),
                worker_id: "w1".into(),
                num_delivered: 20,
                max_deliver: 20,
                run: Some(DlqRunInfo::from_job(&job())),
            },
        };
        assert_eq!(msg.subject("pyoco.dlq"), "pyoco.dlq.cpu");
        let v: serde_json::Value = serde_json::from_slice(&msg.to_json()).unwrap();
        assert_eq!(v["reason"], "max_deliver_exceeded");
        assert_eq!(v["num_delivered"], 20);
        assert_eq!(v["run_id"], "r1");
        let undecoded = DlqMessage {
            payload: DlqPayload::MaxDeliverExceeded {
                subject: "pyoco.work.gpu".into(),
                worker_id: "w1".into(),
                num_delivered: 20,
                max_deliver: 20,
                run: None,
            },
            ..msg
        };
        assert_eq!(undecoded.subject("pyoco.dlq"), "pyoco.dlq.gpu");
    }
}
