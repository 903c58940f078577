//! The pyoco worker: takes jobs from JetStream and runs them with the real pyoco.
//!
//! A [`Worker`] serves one or more routing tags. For each tag it uses the durable pull consumer
//! `pyoco_workers_<tag>` shared with every other worker of that tag — Python 0.5.1 workers
//! included (contract §1.2, Appendix A) — and fetches at most as many jobs as it has idle
//! runners, earlier tags first (§6.2). Each job then goes through `job.rs`:
//!
//! 1. **decode** the message (§2.1); an invalid one goes to the DLQ (`invalid_job`), is
//!    terminated, and its run — when the `run_id` is readable — is marked FAILED (fixing §14-9);
//! 2. **claim** the run with a compare-and-set on its snapshot: a run cancelled before it
//!    started becomes CANCELLED without running (fixing §14-1), a run that is already terminal
//!    (a redelivery) is acknowledged and skipped, anything else becomes RUNNING with our
//!    `worker_id`, keeping the gateway's metadata;
//! 3. **execute** it on a warm Python runner (`runner.rs`, `pool.rs`: `python -u
//!    pyoco_runner.py`, protocol in `python/PROTOCOL.md`), turning runner events into coalesced
//!    compare-and-set snapshot writes (`snapshot_writer.rs`), with the run heartbeat and
//!    in-progress ACKs beside it (`heartbeat.rs`). A cancel written by a gateway is noticed at
//!    the next write, passed to the runner, and enforced by killing the runner after
//!    `PYOCO_CANCEL_GRACE_PERIOD_SEC`;
//! 4. **finish**: DLQ record if due (`execution_error`, `flow_not_found`), the terminal snapshot,
//!    and only then the ACK (a failed terminal write NAKs with a 2 s delay, §6.6).
//!
//! A runner that dies mid-run fails that run with a clear error and is replaced; the worker
//! keeps serving. The worker registry record (§2.4) is kept in the background (`registry.rs`).
//! On shutdown the worker stops fetching, lets runs in progress finish within
//! [`WorkerConfig::stop_timeout`], hands the rest back to the queue and stops its runners.
//!
//! What it is not: it does not parse flow.yaml or build flows (the runner does, with pyoco), it
//! does not create JetStream resources itself (`pyoco-store` does), and wheel sync (§6.10) is not
//! implemented yet.
//!
//! # Differences from pyoco-server 0.5.1 (same wire format, different behaviour)
//!
//! * Compare-and-set on every snapshot write: a cancel written before pickup makes the run
//!   CANCELLED without running it (§14-1), and a cancel written while it runs is never lost
//!   (§14-2). Cancel detection rides on the heartbeat write (a conflict means someone wrote).
//! * Every write keeps `worker_id` (§14-3) and is compacted, heartbeats included; a failed
//!   heartbeat is logged and never re-executes the run (§14-5).
//! * A cancel is enforced: after `PYOCO_CANCEL_GRACE_PERIOD_SEC` the runner is killed and the run
//!   is CANCELLED (0.5.1 only logged a warning and could stay CANCELLING forever).
//! * A runner that dies fails its run (`runner process exited unexpectedly (signal 9) while
//!   running`, DLQ `execution_error` if enabled) and is replaced; the message is ACKed.
//! * Invalid jobs with a readable `run_id` mark the run FAILED (`invalid_job: <reason>`, §14-9).
//!   On its last allowed delivery a job is not NAKed into oblivion: it goes to the DLQ as
//!   `max_deliver_exceeded` and is terminated.
//! * Worker-side flow errors (`invalid_workflow`, `unknown_task`, `import_error`,
//!   `resolver_error`) keep the run's metadata (§14-6); only graph-referenced tasks run (§14-7);
//!   the graph is never executed as Python (§14-8); task records carry `stdout`/`stderr`.
//! * In-progress ACK: the first `+WPI` is sent one period after delivery (not at once); failures
//!   of in-progress ACKs and DLQ publishes are logged (§14-24).
//! * `concurrency` runs per process; registry writes happen off the run's critical path.
//! * Jobs without a tag, and workers without tags, use `PYOCO_DEFAULT_TAG` (§14-26).
//! * Fetch errors do not end the worker; SIGTERM stops it gracefully like SIGINT.

mod config;
mod heartbeat;
mod job;
mod pool;
mod registry;
mod runner;
mod snapshot_writer;
mod worker;

pub use config::{WorkerConfig, DEFAULT_SNAPSHOT_MIN_INTERVAL};
pub use heartbeat::ack_progress_interval;
pub use pool::{Lease, RunnerPool, RUNNER_SHUTDOWN_GRACE};
pub use runner::{
    cancel_request, describe_exit, install_runner_script, run_request, ReadyInfo, RunFinished,
    RunProgress, RunStarted, Runner, RunnerError, RunnerEvent, RunnerSpec, TaskFinished,
    PROTOCOL_VERSION, RUNNER_FILE_NAME, RUNNER_SOURCE,
};
pub use snapshot_writer::{CancelRequest, SnapshotWriter};
pub use worker::{Worker, WorkerProbe};

use std::time::{SystemTime, UNIX_EPOCH};

/// Why a worker could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the work queue consumer for tag {tag:?} failed: {source}")]
    Consumer {
        tag: String,
        #[source]
        source: pyoco_store::StoreError,
    },
    #[error("NATS is not available: {0}")]
    Store(#[from] pyoco_store::StoreError),
}

/// Now, as Unix epoch seconds (the contract's timestamp format).
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
