//! Processing one work-queue message: decode, claim, execute, finish.
//!
//! The ordering guarantees, in the order they matter:
//!
//! * the run is claimed (compare-and-set) **before** anything executes, so a cancel written
//!   before pickup wins and a finished run is never executed again on redelivery;
//! * the terminal snapshot is written **before** the ACK; if it cannot be written the message is
//!   NAKed (2 s) and the run will be retried — never ACKed with a non-terminal snapshot;
//! * a failure of anything beside the run (heartbeat, progress write, in-progress ACK, DLQ
//!   publish, registry) is logged and changes nothing else: the run is executed once (§14-5).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind};
use pyoco_store::StoreError;
use pyoco_wire::{
    compact_snapshot, DlqMessage, DlqPayload, DlqRunInfo, InvalidJob, JobMessage, RunSnapshot,
    RunStatus, TaskRecord, TaskState,
};
use tokio::time::{sleep_until, Instant, Interval};
use tracing::Instrument;

use crate::{
    context::{Phase, RunOverhead, Shared, TagConsumer},
    heartbeat::ticker,
    now,
    pool::Lease,
    runner::{cancel_request, run_request, RunFinished, RunnerEvent},
    snapshot_writer::{SnapshotWriter, ATTEMPT_KEY},
};

/// Attempts of the terminal write before the message is NAKed, and the pauses between them.
const TERMINAL_WRITE_RETRIES: [Duration; 2] =
    [Duration::from_millis(200), Duration::from_millis(800)];

/// Compare-and-set attempts of a claim (each conflict means another writer got in between).
const MAX_CLAIM_ATTEMPTS: usize = 8;

/// One fetched message and what the worker knows about the consumer it came from.
pub(crate) struct Delivery {
    pub msg: jetstream::Message,
    /// The tag whose consumer delivered it.
    pub tag: String,
    /// The consumer's `max_deliver` (≤ 0: unlimited).
    pub max_deliver: i64,
    /// The consumer's ack wait.
    pub ack_wait: Duration,
    /// In-progress ACK period for this consumer (§6.5).
    pub ack_progress: Option<Duration>,
    /// When the message arrived (start of the worker-side overhead).
    pub received: Instant,
}

impl Delivery {
    pub(crate) fn new(msg: jetstream::Message, from: &TagConsumer) -> Self {
        Delivery {
            msg,
            tag: from.tag.clone(),
            max_deliver: from.max_deliver,
            ack_wait: from.ack_wait,
            ack_progress: from.ack_progress,
            received: Instant::now(),
        }
    }

    /// How many times JetStream has delivered this message (1 = first delivery).
    fn delivered(&self) -> Option<i64> {
        self.msg.info().ok().map(|i| i.delivered)
    }

    async fn ack(&self) -> bool {
        match self.msg.ack().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("ACK failed (the job will be redelivered and skipped): {err}");
                false
            }
        }
    }

    async fn term(&self) {
        if let Err(err) = self.msg.ack_with(AckKind::Term).await {
            tracing::warn!("TERM failed (the job may be delivered again): {err}");
        }
    }
}

/// How the execution of a claimed run ended.
enum Outcome {
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

/// Process one message with the runner in `lease`.
pub(crate) async fn process(sh: Arc<Shared>, d: Delivery, lease: Lease) {
    let job = match JobMessage::decode(&d.msg.payload, &sh.config.default_tag) {
        Ok(job) => job,
        Err(invalid) => {
            lease.give_back();
            let span = tracing::error_span!("invalid_job", subject = %d.msg.subject);
            invalid_job(&sh, &d, invalid).instrument(span).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "run",
        run_id = %job.run_id,
        flow = %job.flow_name,
        tag = %job.tag,
        attempt = d.delivered().unwrap_or(0)
    );
    run_job(sh, d, job, lease).instrument(span).await;
}

async fn run_job(sh: Arc<Shared>, d: Delivery, job: JobMessage, mut lease: Lease) {
    let claimed = match claim(&sh, &d, &job).await {
        Ok(c) => c,
        Err(err) => {
            lease.give_back();
            tracing::error!("claiming the run failed, the job goes back to the queue: {err}");
            nak(&sh, &d).await;
            return;
        }
    };
    let mut writer = match claimed {
        Claim::Owned(w) => *w,
        Claim::Terminal(status) => {
            lease.give_back();
            tracing::info!(%status, "run is already finished (redelivery); acknowledged without running it again");
            d.ack().await;
            return;
        }
        Claim::CancelledBeforeStart => {
            lease.give_back();
            tracing::info!(
                "run was cancelled before it started; marked CANCELLED without running it"
            );
            d.ack().await;
            return;
        }
        Claim::RunningElsewhere { worker_id, age } => {
            lease.give_back();
            tracing::warn!(
                owner = worker_id.as_deref().unwrap_or("?"),
                heartbeat_age_s = age,
                "a first delivery found its run already RUNNING with a fresh heartbeat (a \
                 duplicate job message); acknowledged without running it again — the owner's \
                 own message brings the run back if the owner dies"
            );
            d.ack().await;
            return;
        }
    };
    let runner = lease.runner();
    runner.drain_events();
    let pid = runner.pid();
    sh.probe.started(&job.run_id, pid);
    sh.registry.run_started(&job.run_id);
    let outcome = if runner.send(run_request(&job)) {
        let before_run = d.received.elapsed();
        tracing::debug!(pid, ?before_run, "run handed to the pyoco runner");
        let outcome = drive(&sh, &d, &job, &mut lease, &mut writer).await;
        (outcome, Some(before_run))
    } else {
        let exit = lease.runner().wait_exit().await;
        (Outcome::RunnerDied(exit), None)
    };
    let run_done = Instant::now();
    let (outcome, before_run) = outcome;
    sh.probe.finished(&job.run_id);

    // The runner is free (or replaced) before the terminal write: the next job can start.
    let normal = matches!(outcome, Outcome::Finished(_));
    if normal {
        lease.give_back();
    } else {
        lease.replace();
    }
    let acked = finish(&sh, &d, &job, writer, outcome).await;
    if let (true, true, Some(before_run)) = (normal, acked, before_run) {
        let o = RunOverhead {
            before_run,
            after_run: run_done.elapsed(),
        };
        tracing::debug!(
            before_run_us = o.before_run.as_micros() as u64,
            after_run_us = o.after_run.as_micros() as u64,
            "worker overhead of the run (outside the pyoco runner)"
        );
        sh.probe.record_overhead(o);
    }
}

/// Follow the runner's events until the run ends, keeping the snapshot, the heartbeat and the
/// in-progress ACKs going.
async fn drive(
    sh: &Shared,
    d: &Delivery,
    job: &JobMessage,
    lease: &mut Lease,
    w: &mut SnapshotWriter,
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
                    grace = ?sh.config.cancel_grace_period,
                    "cancelled run did not stop within the grace period; killing its runner"
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
            rec.state = t.state.clone();
            rec.ended_at = t.at.or(rec.ended_at);
            rec.duration_ms = t.duration_ms.or(rec.duration_ms);
            if t.error.is_some() {
                rec.error = t.error.clone();
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
    }
}

/// Write the outcome: DLQ record if due, terminal snapshot, then ACK (or NAK if the snapshot
/// cannot be written). Returns true when the message was ACKed.
async fn finish(
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
                        tracing::error!("flow not found: {error}");
                        dlq = Some(DlqMessage::flow_not_found(job, worker_id, t));
                    }
                    Some("execution_error") | None => {
                        tracing::error!("run failed: {error}");
                        if sh.config.dlq_publish_execution_error {
                            dlq = Some(DlqMessage::execution_error(job, worker_id, &error, t));
                        }
                    }
                    Some(kind) => tracing::error!(error_kind = kind, "run failed: {error}"),
                }
            } else {
                tracing::info!(%status, "run finished");
            }
        }
        Outcome::RunnerDied(exit) => {
            let error = format!("runner process exited unexpectedly ({exit}) while running");
            tracing::error!("{error}");
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
            tracing::error!("terminal snapshot write failed; NAK so the job is retried: {err}");
            nak(sh, d).await;
            false
        }
    };
    sh.registry.run_finished(&job.run_id, status.as_str());
    acked
}

/// Tasks still in one of `from` become `to` (with `ended_at`, and `error` if given).
fn end_unfinished_tasks(
    s: &mut RunSnapshot,
    from: &[TaskState],
    to: TaskState,
    error: Option<&str>,
    t: f64,
) {
    for (name, state) in s.tasks.iter_mut() {
        if from.contains(state) {
            *state = to.clone();
            if let Some(rec) = s.task_records.get_mut(name) {
                rec.state = to.clone();
                rec.ended_at = Some(t);
                if let Some(e) = error {
                    rec.error = Some(e.to_string());
                }
            }
        }
    }
}

/// Give the message back to the queue (NAK with `nak_delay`). On its last allowed delivery a
/// NAK would leave it in the stream forever, unreported (§14-9): give up on it instead
/// ([`give_up`]: the run FAILED, a `max_deliver_exceeded` DLQ record) and terminate it.
async fn nak(sh: &Shared, d: &Delivery) {
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

/// §6.6 "Decode failure": DLQ `invalid_job`, a FAILED snapshot when the run id is readable
/// (§14-9), TERM.
async fn invalid_job(sh: &Shared, d: &Delivery, invalid: InvalidJob) {
    let subject = d.msg.subject.to_string();
    tracing::error!(reason = invalid.reason(), "invalid job message: {invalid}");
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

/// A snapshot with nothing known but the run id and flow name.
fn blank_snapshot(run_id: &str, flow_name: &str, t: f64) -> RunSnapshot {
    RunSnapshot {
        run_id: run_id.to_string(),
        flow_name: flow_name.to_string(),
        tag: None,
        tags: Vec::new(),
        tenant_id: None,
        api_key_id: None,
        workflow_yaml_sha256: Some(None),
        workflow_yaml_bytes: Some(None),
        cancel_requested_at: Some(None),
        cancel_requested_by: Some(None),
        status: RunStatus::Pending,
        params: Default::default(),
        tasks: Default::default(),
        task_records: Default::default(),
        start_time: None,
        end_time: None,
        heartbeat_at: t,
        updated_at: t,
        error: None,
        worker_id: None,
        task_records_truncated: None,
        extra: Default::default(),
    }
}

/// What the claim found.
enum Claim {
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
}

/// Take ownership of the run with compare-and-set writes (§14-1, §14-2).
///
/// The stale-run rule: a RUNNING snapshot is taken over (and the run executed again from the
/// start) when this delivery is a redelivery — JetStream redelivers only after a NAK or after
/// the previous holder sent no ACK (in-progress ACKs included) for a whole ack wait, so that
/// execution is considered dead — or when its heartbeat is older than the ack wait. A *first*
/// delivery that finds a fresh RUNNING snapshot is a duplicate message for a run executing
/// elsewhere: it is acknowledged and dropped.
async fn claim(sh: &Shared, d: &Delivery, job: &JobMessage) -> Result<Claim, StoreError> {
    let runs = sh.store.runs();
    let cfg = &sh.config;
    let delivered = d.delivered();
    let attempt = delivered.and_then(|n| u64::try_from(n).ok());
    let mut takeover_logged = false;
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let t = now();
        let current = runs.get(&job.run_id).await?;
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

/// Lay the job's metadata over a stored snapshot: flow name, tags, tenant, API key, workflow
/// digest and params (what a gateway stored is kept where the job says nothing).
fn apply_job_metadata(s: &mut RunSnapshot, job: &JobMessage) {
    s.flow_name = job.flow_name.clone();
    s.tag = Some(job.tag.clone());
    s.tags = if job.tags.is_empty() {
        vec![job.tag.clone()]
    } else {
        job.tags.clone()
    };
    s.tenant_id = job.tenant_id.clone().or(s.tenant_id.take());
    s.api_key_id = job.api_key_id.clone().or(s.api_key_id.take());
    s.workflow_yaml_sha256 = Some(
        job.workflow_yaml_sha256
            .clone()
            .or(s.workflow_yaml_sha256.clone().flatten()),
    );
    s.workflow_yaml_bytes = Some(job.workflow_yaml_bytes.or(s.workflow_yaml_bytes.flatten()));
    s.params = job.params.clone();
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
    fn unfinished_tasks_end_in_the_given_state() {
        let mut s = blank_snapshot("r", "f", 1.0);
        s.tasks.insert("a".into(), TaskState::Succeeded);
        s.tasks.insert("b".into(), TaskState::Running);
        s.tasks.insert("c".into(), TaskState::Pending);
        s.task_records
            .insert("b".into(), TaskRecord::new(TaskState::Running));
        end_unfinished_tasks(
            &mut s,
            &[TaskState::Running, TaskState::Pending],
            TaskState::Cancelled,
            None,
            2.0,
        );
        assert_eq!(s.tasks["a"], TaskState::Succeeded);
        assert_eq!(s.tasks["b"], TaskState::Cancelled);
        assert_eq!(s.tasks["c"], TaskState::Cancelled);
        assert_eq!(s.task_records["b"].ended_at, Some(2.0));
    }
}
