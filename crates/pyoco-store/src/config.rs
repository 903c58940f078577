//! Names and creation parameters of every JetStream resource.
//!
//! Kept separate from `pyoco-config` so the store can be used (and tested) with plain values;
//! the binaries build it from their `Settings`.

use std::time::Duration;

/// Resource names and the parameters that matter when a resource is created.
///
/// Only the process that creates a resource first decides its configuration ("first creator
/// wins", contract §1); later processes keep what exists and log differences.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Work stream name. Not configurable in pyoco-server 0.5.1.
    pub work_stream: String,
    /// `PYOCO_WORK_SUBJECT_PREFIX`; the work stream takes `<prefix>.>`.
    pub work_subject_prefix: String,
    /// Durable consumer prefix; consumers are `<prefix>_<tag>`. Not configurable in 0.5.1.
    pub consumer_prefix: String,
    pub consumer_ack_wait: Duration,
    pub consumer_max_deliver: i64,
    pub consumer_max_ack_pending: i64,
    pub dlq_stream: String,
    pub dlq_subject_prefix: String,
    pub dlq_max_age: Duration,
    pub dlq_max_msgs: i64,
    pub dlq_max_bytes: i64,
    /// Live task logs (ours): stream, `<prefix>.<run_id>.<stdout|stderr>`, limits.
    pub task_logs_stream: String,
    pub task_logs_subject_prefix: String,
    pub task_log_max_age: Duration,
    pub task_log_stream_max_bytes: i64,
    pub runs_bucket: String,
    pub workers_bucket: String,
    pub workers_ttl: Duration,
    pub auth_bucket: String,
    pub wheel_history_bucket: String,
    pub wheel_history_ttl: Duration,
    /// Replays of dead letters (ours), kept as long as the DLQ's entries.
    pub dlq_replays_bucket: String,
    /// Submitted flow.yaml texts by SHA-256 (ours); `workflow_keep` zero: none kept.
    pub workflows_bucket: String,
    pub workflow_keep: Duration,
    /// Schedules (pyoco-server 0.7's `pyoco_yaml_schedules`, history 5).
    pub schedules_bucket: String,
    pub wheel_bucket: String,
    pub wheel_max_bytes: i64,
    /// Timeout of one JetStream API request (nats-py's default is 5 s).
    pub request_timeout: Duration,
    /// `PYOCO_JETSTREAM_REPLICAS`: copies of every stream, KV bucket and object store we create
    /// (0.5.1 always creates one). Durable consumers follow their stream.
    pub replicas: usize,
}

impl Default for StoreConfig {
    /// The pyoco-server 0.5.1 defaults (contract §13), except the worker registry TTL: one day
    /// instead of 15 s, so dead and stopped workers can be shown (§14-10).
    fn default() -> Self {
        Self {
            work_stream: "PYOCO_WORK".into(),
            work_subject_prefix: "pyoco.work".into(),
            consumer_prefix: "pyoco_workers".into(),
            consumer_ack_wait: Duration::from_secs(30),
            consumer_max_deliver: 20,
            consumer_max_ack_pending: 200,
            dlq_stream: "PYOCO_DLQ".into(),
            dlq_subject_prefix: "pyoco.dlq".into(),
            dlq_max_age: Duration::from_secs(604_800),
            dlq_max_msgs: 100_000,
            dlq_max_bytes: 536_870_912,
            task_logs_stream: "PYOCO_TASK_LOGS".into(),
            task_logs_subject_prefix: "pyoco.logs".into(),
            task_log_max_age: Duration::from_secs(604_800),
            task_log_stream_max_bytes: 1_073_741_824,
            runs_bucket: "pyoco_runs".into(),
            workers_bucket: "pyoco_workers".into(),
            workers_ttl: Duration::from_secs(86_400),
            auth_bucket: "pyoco_auth".into(),
            wheel_history_bucket: "pyoco_wheel_history".into(),
            wheel_history_ttl: Duration::from_secs(7_776_000),
            dlq_replays_bucket: "pyoco_dlq_replays".into(),
            workflows_bucket: "pyoco_workflows".into(),
            workflow_keep: Duration::from_secs(2_592_000),
            schedules_bucket: "pyoco_yaml_schedules".into(),
            wheel_bucket: "pyoco_wheels".into(),
            wheel_max_bytes: 536_870_912,
            request_timeout: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

impl StoreConfig {
    /// Subject a job for `tag` is published on.
    pub fn work_subject(&self, tag: &str) -> String {
        format!("{}.{}", self.work_subject_prefix, tag)
    }

    /// Subject a DLQ record for `tag` is published on.
    pub fn dlq_subject(&self, tag: &str) -> String {
        format!("{}.{}", self.dlq_subject_prefix, tag)
    }

    /// Durable consumer name shared by every worker serving `tag`.
    pub fn consumer_name(&self, tag: &str) -> String {
        format!("{}_{}", self.consumer_prefix, tag)
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl From<&pyoco_config::Settings> for StoreConfig {
    fn from(s: &pyoco_config::Settings) -> Self {
        StoreConfig {
            work_subject_prefix: s.work_subject_prefix.clone(),
            consumer_ack_wait: secs(s.consumer_ack_wait_sec),
            consumer_max_deliver: int(s.consumer_max_deliver),
            consumer_max_ack_pending: int(s.consumer_max_ack_pending),
            dlq_stream: s.dlq_stream.clone(),
            dlq_subject_prefix: s.dlq_subject_prefix.clone(),
            dlq_max_age: secs(s.dlq_max_age_sec),
            dlq_max_msgs: int(s.dlq_max_msgs),
            dlq_max_bytes: int(s.dlq_max_bytes),
            task_logs_stream: s.task_logs_stream.clone(),
            task_logs_subject_prefix: s.task_logs_subject_prefix.clone(),
            task_log_max_age: secs(s.task_log_max_age_sec),
            task_log_stream_max_bytes: int(s.task_log_stream_max_bytes),
            runs_bucket: s.runs_kv_bucket.clone(),
            workers_bucket: s.workers_kv_bucket.clone(),
            workers_ttl: secs(s.workers_kv_ttl_sec),
            auth_bucket: s.auth_kv_bucket.clone(),
            wheel_history_bucket: s.wheel_history_kv_bucket.clone(),
            wheel_history_ttl: secs(s.wheel_history_ttl_sec),
            dlq_replays_bucket: s.dlq_replays_kv_bucket.clone(),
            workflows_bucket: s.workflows_kv_bucket.clone(),
            workflow_keep: secs(s.workflow_keep_sec),
            schedules_bucket: s.yaml_schedules_kv_bucket.clone(),
            wheel_bucket: s.wheel_object_store_bucket.clone(),
            wheel_max_bytes: int(s.wheel_max_bytes),
            replicas: usize::try_from(s.jetstream_replicas).map_or(1, |n| n.clamp(1, 5)),
            ..StoreConfig::default()
        }
    }
}
