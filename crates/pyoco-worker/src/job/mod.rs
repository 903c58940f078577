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
//!
//! The three steps live in their own modules; this one holds the message ([`Delivery`]) and the
//! order they run in ([`process`]):
//!
//! * `claim.rs`: take ownership of the run (compare-and-set), or find it finished, cancelled
//!   before it started, or executing elsewhere;
//! * `execute.rs`: drive the runner, fold its events into the snapshot, keep heartbeat and
//!   in-progress ACKs going, enforce cancels and the worker's stop;
//! * `finish.rs`: every way a message ends — the terminal write and ACK, NAK (or giving up on
//!   the last delivery), TERM of an invalid job — and the report of a job JetStream gave up on
//!   ([`give_up`], also used by `max_deliver.rs`);
//! * `snapshot.rs`: snapshot shapes the other three build on (a blank run, the job's metadata,
//!   tasks ended in a given state).

mod claim;
mod execute;
mod finish;
mod snapshot;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use pyoco_store::Versioned;
use pyoco_wire::{parse_workflow_yaml, InvalidJob, JobMessage, WorkflowYamlError};
use tokio::{task::JoinHandle, time::Instant};
use tracing::Instrument;

use crate::{
    context::{RunOverhead, Shared, TagConsumer},
    pool::Lease,
    runner::run_request,
};

use claim::{claim, Claim};
use execute::{drive, Outcome};
use finish::{finish, invalid_job, nak};

pub(crate) use finish::{give_up, Exhausted};

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
    pub(crate) fn delivered(&self) -> Option<i64> {
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

/// The run's snapshot, being read while a prefetched job waits for a runner (`None`: not read
/// ahead; the claim reads it). The task's result is `None` when the read failed.
pub(crate) type Preread = Option<JoinHandle<Option<Option<Versioned<Bytes>>>>>;

/// Start reading the snapshot of the run `d` carries (a job that waits for a runner).
pub(crate) fn preread(sh: &Shared, d: &Delivery) -> Preread {
    let run_id = JobMessage::decode(&d.msg.payload, &sh.config.default_tag)
        .ok()?
        .run_id;
    let runs = sh.store.runs().clone();
    Some(tokio::spawn(async move { runs.get(&run_id).await.ok() }))
}

/// Process one message with the runner in `lease`. Returns how long the runner took for the
/// run (from the `run` request to `run_finished`) when it ran to its end.
pub(crate) async fn process(
    sh: Arc<Shared>,
    d: Delivery,
    lease: Lease,
    preread: Preread,
) -> Option<Duration> {
    let job = match JobMessage::decode(&d.msg.payload, &sh.config.default_tag) {
        Ok(job) => job,
        Err(invalid) => {
            lease.give_back();
            let span = tracing::error_span!("invalid_job", subject = %d.msg.subject);
            invalid_job(&sh, &d, invalid).instrument(span).await;
            return None;
        }
    };
    if let Some(invalid) = refused_workflow(&sh.config.task_modules, &job).await {
        lease.give_back();
        let span = tracing::error_span!("invalid_job", run_id = %job.run_id);
        invalid_job(&sh, &d, invalid).instrument(span).await;
        return None;
    }
    let preread = match preread {
        Some(read) => read.await.ok().flatten(),
        None => None,
    };
    // The context keys of 0.5.1's log lines (contract §12), on every line of the run.
    let span = tracing::info_span!(
        "run",
        run_id = %job.run_id,
        flow_name = %job.flow_name,
        tag = %job.tag,
        worker_id = %sh.config.worker_id,
        attempt = d.delivered().unwrap_or(0)
    );
    run_job(sh, d, job, lease, preread).instrument(span).await
}

/// A job the runner must not get, as an invalid job: its flow.yaml expands beyond the loader's
/// budgets (PyYAML in the runner would exhaust its memory on it), or calls a module outside
/// `allowed` (`PYOCO_TASK_MODULES`). `None` when there is no flow.yaml, or when it is fine or
/// invalid in another way (the runner reports that as usual). Parsed on a blocking thread.
async fn refused_workflow(allowed: &[String], job: &JobMessage) -> Option<InvalidJob> {
    let text = job.workflow_yaml.as_deref()?;
    // Without an alias (`*name`) nothing can expand, and without a module list nothing else is
    // checked: most jobs skip the parse.
    if allowed.is_empty() && !text.contains('*') {
        return None;
    }
    let text = text.to_string();
    let allowed = allowed.to_vec();
    let run_id = job.run_id.clone();
    tokio::task::spawn_blocking(move || match parse_workflow_yaml(text.as_bytes()) {
        Err(err @ WorkflowYamlError::TooLarge { .. }) => {
            Some(InvalidJob::workflow_too_large(&run_id, &err.reason()))
        }
        Err(_) => None,
        Ok(workflow) => {
            let (task, module) = workflow.disallowed_module(&allowed)?;
            Some(InvalidJob::task_module_not_allowed(&run_id, task, module))
        }
    })
    .await
    .ok()
    .flatten()
}

async fn run_job(
    sh: Arc<Shared>,
    d: Delivery,
    job: JobMessage,
    mut lease: Lease,
    preread: Option<Option<Versioned<Bytes>>>,
) -> Option<Duration> {
    let claimed = match claim(&sh, &d, &job, preread).await {
        Ok(c) => c,
        Err(err) => {
            lease.give_back();
            tracing::error!(
                err_id = "ERR-PYOCO-0003",
                msg_id = "MSG-PYOCO-0003",
                error = %err,
                "transient nats error during job processing: claiming the run failed, the job \
                 goes back to the queue"
            );
            nak(&sh, &d).await;
            return None;
        }
    };
    let mut writer = match claimed {
        Claim::Owned(w) => *w,
        Claim::Terminal(status) => {
            lease.give_back();
            tracing::info!(%status, "run is already finished (redelivery); acknowledged without running it again");
            d.ack().await;
            return None;
        }
        Claim::CancelledBeforeStart => {
            lease.give_back();
            tracing::info!(
                "run was cancelled before it started; marked CANCELLED without running it"
            );
            d.ack().await;
            return None;
        }
        Claim::TooLarge { bytes, limit } => {
            // A NAK would bring it back until max_deliver, failing the same way each time.
            lease.give_back();
            let invalid = InvalidJob::snapshot_too_large(&job.run_id, bytes, limit);
            invalid_job(&sh, &d, invalid).await;
            return None;
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
            return None;
        }
    };
    let runner = lease.runner();
    runner.drain_events();
    let pid = runner.pid();
    sh.probe.started(&job.run_id, pid);
    sh.registry.run_started(&job.run_id);
    let handed = Instant::now();
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
    normal.then(|| run_done.duration_since(handed))
}
