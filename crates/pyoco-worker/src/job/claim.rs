//! Claiming a run before anything executes: one compare-and-set write makes it ours (RUNNING,
//! our `worker_id`, the delivery count as `attempt`), or shows that it finished already, was
//! cancelled before it started, or is executing elsewhere.

use bytes::Bytes;
use pyoco_store::{StoreError, Versioned};
use pyoco_wire::{compact_snapshot, JobMessage, RunSnapshot, RunStatus, TaskState};

use super::{
    snapshot::{apply_job_metadata, blank_snapshot, end_unfinished_tasks, MAX_CLAIM_ATTEMPTS},
    Delivery,
};
use crate::{
    context::Shared,
    snapshot_writer::{SnapshotWriter, ATTEMPT_KEY, TASK_EDGES_KEY},
};
use pyoco_wire::python::time as now;

/// What the claim found.
pub(super) enum Claim {
    /// The run is ours: RUNNING with our `worker_id` was written.
    Owned(Box<SnapshotWriter>),
    /// The run already ended (a redelivery): nothing to do.
    Terminal(RunStatus),
    /// A cancel was requested before the run started: CANCELLED was written.
    CancelledBeforeStart,
    /// A first delivery found the run RUNNING with a heartbeat younger than the ack wait: it is
    /// executing elsewhere and this message is a duplicate.
    RunningElsewhere {
        worker_id: Option<String>,
        /// Seconds since its last heartbeat.
        age: f64,
    },
    /// The RUNNING snapshot would be `bytes` bytes, more than one NATS message can hold
    /// (`limit`): no delivery of this job can ever claim its run.
    TooLarge { bytes: usize, limit: usize },
}

/// Take ownership of the run with compare-and-set writes (§14-1, §14-2).
///
/// The stale-run rule: a RUNNING snapshot is taken over (and the run executed again from the
/// start) when this delivery is a redelivery — JetStream redelivers only after a NAK or after
/// the previous holder sent no ACK (in-progress ACKs included) for a whole ack wait, so that
/// execution is considered dead — or when its heartbeat is older than the ack wait. A *first*
/// delivery that finds a fresh RUNNING snapshot is a duplicate message for a run executing
/// elsewhere: it is acknowledged and dropped.
///
/// `preread` is the run's snapshot as read while the job waited for a runner (a prefetched
/// job): the first attempt writes against it instead of reading again. A cancel or any other
/// write since then makes that compare-and-set fail, and the loop reads afresh.
pub(super) async fn claim(
    sh: &Shared,
    d: &Delivery,
    job: &JobMessage,
    mut preread: Option<Option<Versioned<Bytes>>>,
) -> Result<Claim, StoreError> {
    let runs = sh.store.runs();
    let cfg = &sh.config;
    let delivered = d.delivered();
    let attempt = delivered.and_then(|n| u64::try_from(n).ok());
    let mut takeover_logged = false;
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let t = now();
        let current = match preread.take() {
            Some(read) => read,
            None => runs.get(&job.run_id).await?,
        };
        let (stored, revision) = match &current {
            None => (None, 0),
            Some(v) => match RunSnapshot::from_json(&v.value) {
                Ok(s) => (Some(s), v.revision),
                Err(err) => {
                    tracing::warn!("stored snapshot is not readable; replacing it: {err}");
                    (None, v.revision)
                }
            },
        };
        if let Some(s) = &stored {
            if s.status.is_terminal() {
                return Ok(Claim::Terminal(s.status.clone()));
            }
            if let Some((at, by)) = s.cancel_request(t) {
                let mut c = s.clone();
                c.status = RunStatus::Cancelled;
                c.cancel_requested_at = Some(Some(at));
                c.cancel_requested_by = Some(by);
                c.worker_id = Some(cfg.worker_id.clone());
                c.workflow_yaml_sha256 = Some(c.workflow_yaml_sha256.flatten());
                c.workflow_yaml_bytes = Some(c.workflow_yaml_bytes.flatten());
                end_unfinished_tasks(
                    &mut c,
                    &[TaskState::Pending, TaskState::Running],
                    TaskState::Cancelled,
                    None,
                    t,
                );
                c.end_time = Some(t);
                c.heartbeat_at = t;
                c.updated_at = t;
                match runs
                    .update(
                        &job.run_id,
                        compact_snapshot(&c, cfg.max_run_snapshot_bytes),
                        revision,
                    )
                    .await
                {
                    Ok(_) => return Ok(Claim::CancelledBeforeStart),
                    Err(StoreError::Conflict(_)) => continue,
                    Err(err) => return Err(err),
                }
            }
            if s.status == RunStatus::Running {
                let age = t - s.heartbeat_at;
                if delivered == Some(1) && age < d.ack_wait.as_secs_f64() {
                    return Ok(Claim::RunningElsewhere {
                        worker_id: s.worker_id.clone(),
                        age,
                    });
                }
                if !takeover_logged {
                    takeover_logged = true;
                    tracing::warn!(
                        previous_worker = s.worker_id.as_deref().unwrap_or("?"),
                        previous_attempt = s.extra.get("attempt").and_then(|v| v.as_u64()),
                        heartbeat_age_s = age,
                        "taking over a run whose previous execution stopped (redelivered after \
                         its ack wait, or its heartbeat is stale); it runs again from the start"
                    );
                }
            }
        }
        let snap = ownership_snapshot(stored, job, &cfg.worker_id, attempt, t);
        let bytes = compact_snapshot(&snap, cfg.max_run_snapshot_bytes);
        let limit = sh.store.max_record_bytes();
        if bytes.len() > limit {
            return Ok(Claim::TooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        let written = if revision == 0 {
            runs.create(&job.run_id, bytes).await
        } else {
            runs.update(&job.run_id, bytes, revision).await
        };
        match written {
            Ok(rev) => {
                return Ok(Claim::Owned(Box::new(SnapshotWriter::new(
                    runs.clone(),
                    snap,
                    rev,
                    cfg.max_run_snapshot_bytes,
                    cfg.snapshot_min_interval,
                ))))
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Conflict(format!(
        "{} (claim gave up after {MAX_CLAIM_ATTEMPTS} concurrent writes)",
        job.run_id
    )))
}

/// The RUNNING snapshot of a claimed run: what the gateway stored (unknown keys included),
/// the job's metadata over it, our `worker_id`, the delivery count as `attempt`, and a fresh
/// execution state.
fn ownership_snapshot(
    stored: Option<RunSnapshot>,
    job: &JobMessage,
    worker_id: &str,
    attempt: Option<u64>,
    t: f64,
) -> RunSnapshot {
    let mut s = stored.unwrap_or_else(|| blank_snapshot(&job.run_id, &job.flow_name, t));
    apply_job_metadata(&mut s, job);
    s.cancel_requested_at = Some(s.cancel_requested_at.flatten());
    s.cancel_requested_by = Some(s.cancel_requested_by.clone().flatten());
    s.status = RunStatus::Running;
    s.tasks.clear();
    s.task_records.clear();
    s.start_time = Some(t);
    s.end_time = None;
    s.heartbeat_at = t;
    s.updated_at = t;
    s.error = None;
    s.worker_id = Some(worker_id.to_string());
    s.task_records_truncated = None;
    s.extra.shift_remove(TASK_EDGES_KEY);
    match attempt {
        Some(a) => {
            s.extra.insert(ATTEMPT_KEY.into(), a.into());
        }
        None => {
            s.extra.shift_remove(ATTEMPT_KEY);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyoco_wire::NewRun;
    use serde_json::json;

    fn job() -> JobMessage {
        JobMessage::decode(
            br#"{"run_id":"r1","flow_name":"main","tag":"cpu","tags":[],"tenant_id":"t1","params":{"x":1},"workflow_yaml_sha256":"ab","workflow_yaml_bytes":3,"submitted_at":1}"#,
            "default",
        )
        .unwrap()
    }

    #[test]
    fn ownership_keeps_gateway_metadata_and_unknown_keys() {
        let mut pending = RunSnapshot::pending(
            &NewRun {
                run_id: "r1".into(),
                flow_name: "main".into(),
                tag: "cpu".into(),
                tags: vec![],
                tenant_id: Some("t1".into()),
                api_key_id: Some("k1".into()),
                params: Default::default(),
                workflow: None,
            },
            1.0,
        );
        pending.extra.insert("schedule_id".into(), json!("s1"));
        let s = ownership_snapshot(Some(pending), &job(), "w1", Some(2), 5.0);
        assert_eq!(s.status, RunStatus::Running);
        assert_eq!(s.worker_id.as_deref(), Some("w1"));
        assert_eq!(s.tags, vec!["cpu".to_string()]);
        assert_eq!(s.api_key_id.as_deref(), Some("k1"));
        assert_eq!(s.workflow_yaml_sha256, Some(Some("ab".into())));
        assert_eq!(s.cancel_requested_at, Some(None));
        assert_eq!(s.extra["schedule_id"], "s1");
        assert_eq!(s.extra["attempt"], 2);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["params"]["x"], 1);
        assert_eq!(v["cancel_requested_by"], serde_json::Value::Null);
    }

    #[test]
    fn the_jobs_schedule_id_reaches_the_snapshot_even_without_a_stored_one() {
        let job = JobMessage::decode(
            br#"{"run_id":"r1","flow_name":"main","tag":"cpu","tags":[],"params":{},"schedule_id":"s9","submitted_at":1}"#,
            "default",
        )
        .unwrap();
        let s = ownership_snapshot(None, &job, "w1", None, 5.0);
        assert_eq!(s.extra["schedule_id"], "s9");
        // A null schedule_id (0.7's plain submits) adds nothing.
        let plain = JobMessage::decode(
            br#"{"run_id":"r1","flow_name":"main","tag":"cpu","tags":[],"params":{},"schedule_id":null,"submitted_at":1}"#,
            "default",
        )
        .unwrap();
        let s = ownership_snapshot(None, &plain, "w1", None, 5.0);
        assert!(!s.extra.contains_key("schedule_id"));
    }
}
