//! Executing a claimed run: follow the runner's events until the run ends, folding them into
//! coalesced snapshot writes, with the run heartbeat and in-progress ACKs beside it. A cancel
//! seen at a write is passed to the runner and enforced after the grace period; the worker's
//! `Abort` phase and a takeover by a later delivery stop the run by killing its runner.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use pyoco_wire::{JobMessage, RunStatus, TaskRecord, TaskState};
use tokio::time::{sleep_until, Instant, Interval};

use super::Delivery;
use crate::{
    context::{Phase, Shared},
    heartbeat::ticker,
    pool::Lease,
    runner::{cancel_request, RunFinished, RunnerEvent},
    snapshot_writer::{SnapshotWriter, TASK_EDGES_KEY},
};

/// How the execution of a claimed run ended.
pub(super) enum Outcome {
    /// The runner reported the end of the run.
    Finished(Box<RunFinished>),
    /// The runner process ended during the run (`signal 9`, `exit code 1`, …).
    RunnerDied(String),
    /// A cancelled run did not stop within the grace period; its runner was killed.
    CancelTimedOut,
    /// The worker is stopping and the run did not finish in time; its runner was killed.
    Aborted,
    /// A later delivery of the job took the run over (this delivery's ack wait passed without
    /// an ACK reaching JetStream); its runner was killed and this delivery leaves everything
    /// to the new owner.
    Superseded,
}

/// Follow the runner's events until the run ends, keeping the snapshot, the heartbeat and the
/// in-progress ACKs going. The run's live log lines are published as they come; before this
/// returns (so before the terminal snapshot is written) every one of them is acked.
pub(super) async fn drive(
    sh: &Shared,
    d: &Delivery,
    job: &JobMessage,
    lease: &mut Lease,
    w: &mut SnapshotWriter,
) -> Outcome {
    let mut logs = LiveLog {
        publisher: sh
            .store
            .task_log_publisher(&job.run_id, sh.config.task_log_max_bytes_per_run),
        runner_dropped: (0, 0),
    };
    let outcome = drive_events(sh, d, job, lease, w, &mut logs).await;
    if let Outcome::Finished(f) = &outcome {
        if let Some(counts) = &f.log {
            logs.runner_dropped = (counts.dropped_lines, counts.dropped_bytes);
        }
    }
    let (published, failed) = logs
        .publisher
        .finish(logs.runner_dropped, pyoco_wire::python::time())
        .await;
    if published > 0 {
        tracing::debug!(published, failed, "live log lines published");
    }
    outcome
}

/// The run's live log: the publisher and what the runner said it dropped.
struct LiveLog {
    publisher: pyoco_store::LogPublisher,
    runner_dropped: (u64, u64),
}

async fn drive_events(
    sh: &Shared,
    d: &Delivery,
    job: &JobMessage,
    lease: &mut Lease,
    w: &mut SnapshotWriter,
    logs: &mut LiveLog,
) -> Outcome {
    let run_id = job.run_id.as_str();
    let mut heartbeat = ticker(sh.config.run_heartbeat_interval);
    let mut progress = d.ack_progress.map(ticker);
    let mut grace_deadline: Option<Instant> = None;
    let mut cancel_sent = false;
    let mut phase = sh.phase.clone();
    loop {
        let flush_at = w.flush_at();
        let mut cancel_seen = false;
        tokio::select! {
            ev = lease.runner().next_event() => match ev {
                None => {
                    let exit = lease.runner().wait_exit().await;
                    tracing::error!(%exit, "the pyoco runner exited during the run");
                    return Outcome::RunnerDied(exit);
                }
                Some(RunnerEvent::RunFinished(f)) if f.run_id == run_id => {
                    return Outcome::Finished(f);
                }
                Some(RunnerEvent::Malformed { event_type: Some(t), error }) if t == "run_finished" => {
                    return Outcome::Finished(Box::new(unreadable_finish(run_id, &error)));
                }
                Some(RunnerEvent::Log(batch)) if batch.run_id == run_id => {
                    // Awaited here: a run writing faster than NATS takes its lines waits (the
                    // runner's pipe fills) instead of growing this worker.
                    logs.runner_dropped = (batch.dropped_lines, batch.dropped_bytes);
                    for (ts, stream, task, line) in &batch.lines {
                        logs.publisher.push(task.as_deref(), stream, line, *ts).await;
                    }
                }
                Some(ev) => apply_event(w, run_id, ev),
            },
            _ = sleep_until(flush_at.unwrap_or_else(far_future)), if flush_at.is_some() => {
                match w.write().await {
                    Ok(c) => cancel_seen = c,
                    Err(err) => tracing::warn!("progress snapshot write failed (the run goes on): {err}"),
                }
            }
            _ = heartbeat.tick() => {
                match w.write().await {
                    Ok(c) => cancel_seen = c,
                    Err(err) => tracing::warn!("run heartbeat failed (the run goes on): {err}"),
                }
            }
            _ = tick(&mut progress) => {
                if let Err(err) = d.msg.ack_with(AckKind::Progress).await {
                    tracing::warn!("in-progress ACK failed: {err}");
                }
            }
            _ = sleep_until(grace_deadline.unwrap_or_else(far_future)), if grace_deadline.is_some() => {
                tracing::warn!(
                    err_id = "ERR-PYOCO-0021",
                    msg_id = "MSG-PYOCO-0021",
                    grace = ?sh.config.cancel_grace_period,
                    "cancel request timed out: the run did not stop within the grace period; \
                     killing its runner"
                );
                lease.runner().kill();
                let _ = lease.runner().wait_exit().await;
                return Outcome::CancelTimedOut;
            }
            _ = async { let _ = phase.wait_for(|p| *p == Phase::Abort).await; } => {
                tracing::warn!("worker is stopping and the run did not finish in time; killing its runner");
                lease.runner().kill();
                let _ = lease.runner().wait_exit().await;
                return Outcome::Aborted;
            }
        }
        if w.superseded() {
            tracing::warn!(
                "a later delivery of this job took the run over (our ACKs did not reach \
                 JetStream within the ack wait); stopping this execution"
            );
            lease.runner().kill();
            let _ = lease.runner().wait_exit().await;
            return Outcome::Superseded;
        }
        if cancel_seen && !cancel_sent {
            cancel_sent = true;
            let by = w.cancel().and_then(|c| c.1.clone()).unwrap_or_default();
            tracing::info!(requested_by = %by, "cancel requested; asking the runner to stop");
            lease.runner().send(cancel_request(run_id));
            if let Some(grace) = sh.config.cancel_grace_period {
                grace_deadline = Some(Instant::now() + grace);
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Fold one runner event into the snapshot (PROTOCOL.md §7).
fn apply_event(w: &mut SnapshotWriter, run_id: &str, ev: RunnerEvent) {
    if ev.run_id().is_some_and(|id| id != run_id) {
        tracing::debug!(?ev, "event of another run ignored");
        return;
    }
    match ev {
        RunnerEvent::RunStarted(s) => w.update(|snap| {
            if let Some(name) = s.flow_name {
                snap.flow_name = name;
            }
            snap.status = match s.status {
                RunStatus::Cancelling => RunStatus::Cancelling,
                _ => RunStatus::Running,
            };
            snap.tasks = s.tasks;
            snap.task_records = s.task_records;
            snap.start_time = s.start_time.or(snap.start_time);
            match s.edges {
                Some(edges) => {
                    snap.extra
                        .insert(TASK_EDGES_KEY.into(), serde_json::json!(edges));
                }
                None => {
                    snap.extra.shift_remove(TASK_EDGES_KEY);
                }
            }
        }),
        RunnerEvent::TaskStarted { task, at, .. } => w.update(|snap| {
            snap.tasks.insert(task.clone(), TaskState::Running);
            let rec = snap
                .task_records
                .entry(task)
                .or_insert_with(|| TaskRecord::new(TaskState::Pending));
            rec.state = TaskState::Running;
            rec.started_at = at.or(rec.started_at);
        }),
        RunnerEvent::TaskFinished(t) => w.update(|snap| {
            snap.tasks.insert(t.task.clone(), t.state.clone());
            let rec = snap
                .task_records
                .entry(t.task)
                .or_insert_with(|| TaskRecord::new(TaskState::Pending));
            match t.record {
                // The runner's record of the task is the whole truth about it.
                Some(record) => *rec = record,
                None => {
                    rec.state = t.state.clone();
                    rec.ended_at = t.at.or(rec.ended_at);
                    rec.duration_ms = t.duration_ms.or(rec.duration_ms);
                    if t.error.is_some() {
                        rec.error = t.error.clone();
                    }
                }
            }
            if t.state == TaskState::Failed && t.error.is_some() {
                snap.error = t.error;
            }
        }),
        RunnerEvent::Snapshot(p) => w.update(|snap| {
            snap.status = match p.status {
                RunStatus::Cancelling => RunStatus::Cancelling,
                _ => RunStatus::Running,
            };
            snap.tasks = p.tasks;
            snap.task_records = p.task_records;
            snap.error = p.error;
            snap.start_time = p.start_time.or(snap.start_time);
            snap.end_time = p.end_time;
        }),
        RunnerEvent::CancelAck { result, .. } => {
            tracing::debug!(%result, "runner acknowledged the cancel");
        }
        RunnerEvent::Error { error } => {
            tracing::warn!("the pyoco runner reported a protocol error: {error}");
        }
        RunnerEvent::Malformed { .. } => {} // logged by the reader
        other => tracing::debug!(?other, "runner event ignored"),
    }
}

/// A `run_finished` line we could not read: the run failed, say why.
fn unreadable_finish(run_id: &str, error: &str) -> RunFinished {
    RunFinished {
        run_id: run_id.to_string(),
        flow_name: None,
        status: RunStatus::Failed,
        error: Some(format!(
            "internal_error: unreadable run result from the pyoco runner: {error}"
        )),
        error_kind: Some("internal_error".into()),
        tasks: Default::default(),
        task_records: Default::default(),
        start_time: None,
        end_time: None,
        cancel_requested: false,
        graph_mode: None,
        traceback: None,
        unattributed: Default::default(),
        log: None,
    }
}
