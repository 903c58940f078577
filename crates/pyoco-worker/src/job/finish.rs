//! Every way a job message ends: the outcome of an execution written (DLQ record if due,
//! terminal snapshot, then ACK), a NAK back to the queue — or, on the last allowed delivery,
//! giving up on the job — and the TERM of an invalid one. Runs that will not execute (any more)
//! are ended here by compare-and-set ([`fail_run`]).

use std::time::Duration;

use async_nats::jetstream::AckKind;
use pyoco_store::StoreError;
use pyoco_wire::{
    compact_snapshot, DlqMessage, DlqPayload, DlqRunInfo, InvalidJob, JobMessage, RunSnapshot,
    RunStatus, TaskState,
};

use super::{
    execute::Outcome,
    snapshot::{apply_job_metadata, blank_snapshot, end_unfinished_tasks, MAX_CLAIM_ATTEMPTS},
    Delivery,
};
use crate::{context::Shared, snapshot_writer::SnapshotWriter};
use pyoco_wire::python::time as now;

/// Attempts of the terminal write before the message is NAKed, and the pauses between them.
const TERMINAL_WRITE_RETRIES: [Duration; 2] =
    [Duration::from_millis(200), Duration::from_millis(800)];

/// Write the outcome: DLQ record if due, terminal snapshot, then ACK (or NAK if the snapshot
/// cannot be written). Returns true when the message was ACKed.
pub(super) async fn finish(
    sh: &Shared,
    d: &Delivery,
    job: &JobMessage,
    mut w: SnapshotWriter,
    outcome: Outcome,
) -> bool {
    let t = now();
    let worker_id = sh.config.worker_id.as_str();
    let mut dlq = None;
    match outcome {
        Outcome::Finished(f) => {
            let f = *f;
            let status = if f.status.is_terminal() {
                f.status.clone()
            } else {
                tracing::error!(status = %f.status, "runner reported a non-terminal final status; recording FAILED");
                RunStatus::Failed
            };
            let kind = f.error_kind.clone();
            let error = f.error.clone();
            // For the log line: the Python exception's class and traceback, when sent.
            let exc_type = python_exc_type(f.traceback.as_deref(), kind.as_deref());
            let traceback = f.traceback.clone();
            let built = f.graph_mode.is_some() || !f.tasks.is_empty();
            w.update(|s| {
                s.status = status.clone();
                s.error = f.error;
                if let Some(name) = f.flow_name {
                    s.flow_name = name;
                }
                if built {
                    s.tasks = f.tasks;
                    s.task_records = f.task_records;
                }
                s.start_time = f.start_time.or(s.start_time);
                s.end_time = f.end_time.or(Some(t));
            });
            if status == RunStatus::Failed {
                let error = error.unwrap_or_default();
                match kind.as_deref() {
                    Some("flow_not_found") => {
                        tracing::error!(
                            err_id = "ERR-PYOCO-0006",
                            msg_id = "MSG-PYOCO-0006",
                            exc_type = "flow_not_found",
                            error = %error,
                            "flow not found"
                        );
                        dlq = Some(DlqMessage::flow_not_found(job, worker_id, t));
                    }
                    Some("execution_error") | None => {
                        tracing::error!(
                            err_id = "ERR-PYOCO-0007",
                            msg_id = "MSG-PYOCO-0007",
                            exc_type = %exc_type,
                            exc_traceback = traceback.as_deref(),
                            error = %error,
                            "execution error"
                        );
                        if sh.config.dlq_publish_execution_error {
                            dlq = Some(DlqMessage::execution_error(job, worker_id, &error, t));
                        }
                    }
                    Some(kind) => {
                        // A run that failed before its tasks ran (an import error, a flow.yaml
                        // the runner refused): 0.5.1 dead-lettered none of these, but they are
                        // the ones worth replaying once the cause is fixed.
                        tracing::error!(
                            err_id = "ERR-PYOCO-0007",
                            msg_id = "MSG-PYOCO-0007",
                            error_kind = kind,
                            exc_type = %exc_type,
                            exc_traceback = traceback.as_deref(),
                            error = %error,
                            "execution error"
                        );
                        if sh.config.dlq_publish_execution_error {
                            dlq = Some(DlqMessage::execution_error(job, worker_id, &error, t));
                        }
                    }
                }
            } else {
                tracing::info!(%status, "run finished");
            }
        }
        Outcome::RunnerDied(exit) => {
            let error = format!("runner process exited unexpectedly ({exit}) while running");
            tracing::error!(
                err_id = "ERR-PYOCO-0007",
                msg_id = "MSG-PYOCO-0007",
                exc_type = "RunnerDied",
                error = %error,
                "unexpected error during job processing"
            );
            w.update(|s| {
                s.status = RunStatus::Failed;
                s.error = Some(error.clone());
                s.end_time = Some(t);
                end_unfinished_tasks(s, &[TaskState::Running], TaskState::Failed, Some(&error), t);
            });
            if sh.config.dlq_publish_execution_error {
                dlq = Some(DlqMessage::execution_error(job, worker_id, &error, t));
            }
        }
        Outcome::CancelTimedOut => {
            w.update(|s| {
                s.status = RunStatus::Cancelled;
                s.error = None;
                s.end_time = Some(t);
                end_unfinished_tasks(
                    s,
                    &[TaskState::Running, TaskState::Pending],
                    TaskState::Cancelled,
                    None,
                    t,
                );
            });
            tracing::info!("run CANCELLED (runner killed after the grace period)");
        }
        Outcome::Aborted => {
            sh.registry.run_abandoned(&job.run_id);
            nak(sh, d).await;
            return false;
        }
        Outcome::Superseded => {
            // Neither a snapshot write nor an ACK: both belong to the new delivery now.
            sh.registry.run_abandoned(&job.run_id);
            return false;
        }
    }
    if let Some(record) = dlq {
        let _ = publish_dlq(sh, &record).await;
    }
    let status = w.snapshot().status.clone();
    let mut written = w.write_terminal().await;
    for pause in TERMINAL_WRITE_RETRIES {
        match &written {
            Ok(_) => break,
            Err(err) => {
                tracing::warn!("terminal snapshot write failed, retrying in {pause:?}: {err}");
                tokio::time::sleep(pause).await;
                written = w.write_terminal().await;
            }
        }
    }
    let acked = match written {
        Ok(_) if w.superseded() => {
            tracing::warn!(
                "a later delivery of this job took the run over while it finished here; \
                 its result is left to the new owner"
            );
            false
        }
        Ok(_) => d.ack().await,
        Err(err) => {
            tracing::error!(
                err_id = "ERR-PYOCO-0003",
                msg_id = "MSG-PYOCO-0003",
                error = %err,
                "transient nats error during job processing: terminal snapshot write failed; \
                 NAK so the job is retried"
            );
            nak(sh, d).await;
            false
        }
    };
    sh.registry.run_finished(&job.run_id, status.as_str());
    acked
}

/// Give the message back to the queue (NAK with `nak_delay`). On its last allowed delivery a
/// NAK would leave it in the stream forever, unreported (§14-9): give up on it instead
/// ([`give_up`]: the run FAILED, a `max_deliver_exceeded` DLQ record) and terminate it.
pub(super) async fn nak(sh: &Shared, d: &Delivery) {
    let delivered = d.delivered().unwrap_or(0);
    if d.max_deliver > 0 && delivered >= d.max_deliver {
        tracing::error!(
            delivered,
            max_deliver = d.max_deliver,
            "job reached max_deliver; giving up on it (run FAILED, DLQ max_deliver_exceeded)"
        );
        let subject = d.msg.subject.to_string();
        let reported = give_up(
            sh,
            &Exhausted {
                subject: &subject,
                tag: &d.tag,
                payload: &d.msg.payload,
                delivered: u64::try_from(delivered).unwrap_or(0),
                max_deliver: u64::try_from(d.max_deliver).unwrap_or(0),
            },
        )
        .await;
        if reported {
            d.term().await;
            return;
        }
        // Nothing could be recorded (NATS trouble): keep the message; the MAX_DELIVERIES
        // advisory that follows this NAK gives a worker another chance to report it.
        tracing::warn!("the exhausted job could not be reported; NAK so the advisory path retries");
    }
    if let Err(err) = d
        .msg
        .ack_with(AckKind::Nak(Some(sh.config.nak_delay)))
        .await
    {
        tracing::warn!("NAK failed (the job comes back after the ack wait): {err}");
    }
}

/// A job message JetStream will not deliver again: its consumer's `max_deliver` is used up.
pub(crate) struct Exhausted<'a> {
    /// The message's subject (`pyoco.work.<tag>`).
    pub subject: &'a str,
    /// The tag of the consumer that delivered it.
    pub tag: &'a str,
    pub payload: &'a [u8],
    pub delivered: u64,
    pub max_deliver: u64,
}

/// Report a job JetStream will not deliver again (§14-9): its run — when the message names one
/// and the run is not finished — becomes FAILED with `max_deliver_exceeded: delivered N times`
/// (CANCELLED instead if a cancel was requested), keeping the run's metadata, and a
/// `max_deliver_exceeded` DLQ record is published. Removing the message (TERM or delete) is the
/// caller's part. A run that already finished is left alone and gets no DLQ record, so several
/// workers reporting the same message do no harm. Returns false when nothing at all could be
/// recorded (neither the snapshot nor the DLQ record).
pub(crate) async fn give_up(sh: &Shared, e: &Exhausted<'_>) -> bool {
    let error = format!("max_deliver_exceeded: delivered {} times", e.delivered);
    let job = JobMessage::decode(e.payload, &sh.config.default_tag);
    let run_id = match &job {
        Ok(j) => Some(j.run_id.as_str()),
        Err(invalid) => invalid.run_id(),
    };
    let mut recorded = false;
    if let Some(run_id) = run_id {
        let flow_name = flow_name_of(e.payload);
        match fail_run(sh, run_id, &error, job.as_ref().ok(), e.tag, &flow_name).await {
            Ok(Failed::AlreadyFinished(status)) => {
                tracing::info!(
                    run_id,
                    %status,
                    "the run of the exhausted job had already finished; nothing to report"
                );
                return true;
            }
            Ok(Failed::Written(status)) => {
                recorded = true;
                tracing::error!(run_id, %status, "run marked {status}: {error}");
            }
            Err(err) => tracing::warn!(
                run_id,
                "marking the run of the exhausted job FAILED failed: {err}"
            ),
        }
    }
    let record = DlqMessage {
        error: Some(error),
        timestamp: now(),
        payload: DlqPayload::MaxDeliverExceeded {
            subject: e.subject.to_string(),
            worker_id: sh.config.worker_id.clone(),
            num_delivered: e.delivered,
            max_deliver: e.max_deliver,
            run: job.as_ref().ok().map(DlqRunInfo::from_job),
        },
    };
    publish_dlq(sh, &record).await || recorded
}

/// Publish a DLQ record; a failure is logged (0.5.1 swallowed it, §14-24). True when published.
async fn publish_dlq(sh: &Shared, record: &DlqMessage) -> bool {
    match sh
        .store
        .publish_dlq(record.tag(), record.to_json().into())
        .await
    {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(reason = record.reason(), "DLQ publish failed: {err}");
            false
        }
    }
}

/// The exception class a Python traceback ends with (`ValueError: boom` → `ValueError`,
/// `pkg.mod.Error: …` → `pkg.mod.Error`), else the runner's error kind, else `Error`.
fn python_exc_type(traceback: Option<&str>, kind: Option<&str>) -> String {
    let last = traceback
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or_default();
    let name = last.split(':').next().unwrap_or_default().trim();
    let is_class = !name.is_empty()
        && last.starts_with(name)
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    if is_class {
        name.to_string()
    } else {
        kind.unwrap_or("Error").to_string()
    }
}

/// §6.6 "Decode failure": DLQ `invalid_job`, a FAILED snapshot when the run id is readable
/// (§14-9), TERM.
pub(super) async fn invalid_job(sh: &Shared, d: &Delivery, invalid: InvalidJob) {
    let subject = d.msg.subject.to_string();
    tracing::error!(
        err_id = "ERR-PYOCO-0012",
        msg_id = "MSG-PYOCO-0012",
        reason = invalid.reason(),
        tag = %d.tag,
        exc_type = "InvalidJob",
        error = %invalid,
        "invalid job payload"
    );
    let record = DlqMessage::invalid_job(
        &subject,
        &sh.config.worker_id,
        d.delivered().and_then(|n| u64::try_from(n).ok()),
        &d.msg.payload,
        &invalid.message(),
        now(),
    );
    let _ = publish_dlq(sh, &record).await;
    if let Some(run_id) = invalid.run_id() {
        let error = format!("invalid_job: {}", invalid.message());
        let flow_name = flow_name_of(&d.msg.payload);
        match fail_run(sh, run_id, &error, None, &d.tag, &flow_name).await {
            Ok(_) => {}
            Err(err) => tracing::warn!(
                run_id,
                "marking the run of an invalid job FAILED failed: {err}"
            ),
        }
    }
    d.term().await;
}

/// What [`fail_run`] did.
enum Failed {
    /// The run was written with this terminal status (FAILED, or CANCELLED when a cancel had
    /// been requested).
    Written(RunStatus),
    /// The run had already finished; nothing was written.
    AlreadyFinished(RunStatus),
}

/// End a run that will not execute (any more) with `error`, by compare-and-set: FAILED (or
/// CANCELLED if a cancel was requested), unfinished running tasks FAILED, the stored metadata
/// kept and — with `job` — the job's metadata (tenant, tags, params, …) laid over it (§14-6).
/// A missing or unreadable snapshot is replaced by a fresh one for `run_id`.
async fn fail_run(
    sh: &Shared,
    run_id: &str,
    error: &str,
    job: Option<&JobMessage>,
    tag: &str,
    flow_name: &str,
) -> Result<Failed, StoreError> {
    let runs = sh.store.runs();
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let t = now();
        let current = runs.get(run_id).await?;
        let (mut snap, revision) = match &current {
            Some(v) => match RunSnapshot::from_json(&v.value) {
                Ok(s) if s.status.is_terminal() => return Ok(Failed::AlreadyFinished(s.status)),
                Ok(s) => (s, v.revision),
                Err(_) => (blank_snapshot(run_id, flow_name, t), v.revision),
            },
            None => (blank_snapshot(run_id, flow_name, t), 0),
        };
        if let Some(job) = job {
            apply_job_metadata(&mut snap, job);
        }
        if snap.tag.is_none() {
            snap.tag = Some(tag.to_string());
            snap.tags = vec![tag.to_string()];
        }
        snap.workflow_yaml_sha256 = Some(snap.workflow_yaml_sha256.flatten());
        snap.workflow_yaml_bytes = Some(snap.workflow_yaml_bytes.flatten());
        if let Some((at, by)) = snap.cancel_request(t) {
            snap.status = RunStatus::Cancelled;
            snap.error = None;
            snap.cancel_requested_at = Some(Some(at));
            snap.cancel_requested_by = Some(by);
            end_unfinished_tasks(
                &mut snap,
                &[TaskState::Running, TaskState::Pending],
                TaskState::Cancelled,
                None,
                t,
            );
        } else {
            snap.status = RunStatus::Failed;
            snap.error = Some(error.to_string());
            snap.cancel_requested_at = Some(snap.cancel_requested_at.flatten());
            snap.cancel_requested_by = Some(snap.cancel_requested_by.clone().flatten());
            end_unfinished_tasks(
                &mut snap,
                &[TaskState::Running],
                TaskState::Failed,
                Some(error),
                t,
            );
        }
        // The worker that last executed it, else the one reporting it.
        if snap.worker_id.is_none() {
            snap.worker_id = Some(sh.config.worker_id.clone());
        }
        snap.end_time = Some(t);
        snap.heartbeat_at = t;
        snap.updated_at = t;
        let status = snap.status.clone();
        let bytes = compact_snapshot(&snap, sh.config.max_run_snapshot_bytes);
        let written = if revision == 0 {
            runs.create(run_id, bytes).await
        } else {
            runs.update(run_id, bytes, revision).await
        };
        match written {
            Ok(_) => return Ok(Failed::Written(status)),
            Err(StoreError::Conflict(_)) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Conflict(run_id.to_string()))
}

fn flow_name_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("flow_name")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::python_exc_type;

    #[test]
    fn the_exception_class_comes_from_the_traceback_else_the_kind() {
        let tb = "Traceback (most recent call last):\n  File \"t.py\", line 1, in f\nValueError: boom: twice\n";
        assert_eq!(
            python_exc_type(Some(tb), Some("execution_error")),
            "ValueError"
        );
        let tb = "Traceback …\npkg.mod.Oops: x";
        assert_eq!(python_exc_type(Some(tb), None), "pkg.mod.Oops");
        assert_eq!(python_exc_type(Some("  indented: no"), Some("k")), "k");
        assert_eq!(python_exc_type(Some("two words: no"), None), "Error");
        assert_eq!(
            python_exc_type(None, Some("execution_error")),
            "execution_error"
        );
    }
}
