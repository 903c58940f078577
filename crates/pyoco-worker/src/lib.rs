//! The pyoco worker: takes jobs from JetStream and runs them with the real pyoco.
//!
//! A [`Worker`] serves one or more routing tags. For each tag it uses the durable pull consumer
//! `pyoco_workers_<tag>` shared with every other worker of that tag — Python 0.5.1 workers
//! included (contract §1.2, Appendix A) — and fetches at most as many jobs as it has idle
//! runners, earlier tags first (§6.2). Each job then goes through `job/`:
//!
//! 1. **decode** the message (§2.1); an invalid one goes to the DLQ (`invalid_job`), is
//!    terminated, and its run — when the `run_id` is readable — is marked FAILED (fixing §14-9);
//! 2. **claim** the run with a compare-and-set on its snapshot: a run cancelled before it
//!    started becomes CANCELLED without running (fixing §14-1), a run that is already terminal
//!    (a redelivery) is acknowledged and skipped, a run RUNNING elsewhere is taken over or left
//!    alone by the stale-run rule below, anything else becomes RUNNING with our `worker_id` and
//!    `attempt`, keeping the gateway's metadata;
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
//! Jobs JetStream gave up on (`max_deliver` used up) are reported from its advisories
//! (`max_deliver.rs`). On shutdown the worker stops fetching, lets runs in progress finish
//! within [`WorkerConfig::stop_timeout`], hands the rest back to the queue and stops its
//! runners.
//!
//! # Runs whose worker is gone (crash safety)
//!
//! A worker that dies (SIGKILL, power loss, lost network) stops writing run heartbeats and
//! stops sending in-progress ACKs. Its runners die with it (`PR_SET_PDEATHSIG`, see
//! `runner.rs`). The rule that brings such a run back:
//!
//! 1. JetStream redelivers the job once `PYOCO_CONSUMER_ACK_WAIT_SEC` (30 s) passed without any
//!    ACK from the holder; a live worker sends in-progress ACKs every
//!    `PYOCO_ACK_PROGRESS_INTERVAL_SEC`, so a run that is alive is never redelivered.
//! 2. The worker that receives a **redelivery** (delivery count > 1) takes the run over even
//!    though the snapshot says RUNNING — the previous execution is considered dead — and runs
//!    it again from the start. The snapshot then names the new worker and `attempt` = the
//!    delivery count. A *first* delivery that finds the run RUNNING with a heartbeat younger
//!    than the ack wait is a duplicate job message: it is ACKed and dropped. (A RUNNING
//!    snapshot with an older heartbeat is taken over in either case.)
//! 3. Should the dead execution come back to life (e.g. after a network partition), its next
//!    snapshot write finds the higher `attempt` and it stops: runner killed, nothing written,
//!    nothing ACKed.
//! 4. If no execution ever completes, the job's deliveries run out (`PYOCO_CONSUMER_MAX_DELIVER`,
//!    20): the run becomes FAILED (`max_deliver_exceeded: delivered N times`) with a DLQ record
//!    and the message is removed from the stream.
//! 5. If **no worker of the tag is running at all**, nothing can take the run over: it stays
//!    RUNNING with a heartbeat that stops advancing until a worker starts (then 1.–2. apply).
//!    Readers can tell: the gateway's enrichment shows the owning worker as not alive
//!    (`DISCONNECTED` once its record is older than `PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC`), and
//!    `heartbeat_at` is stale.
//!
//! What it is not: it does not parse flow.yaml or build flows (the runner does, with pyoco), it
//! does not create JetStream resources itself (`pyoco-store` does).
//!
//! # Wheel sync (§6.10)
//!
//! With `PYOCO_WHEEL_SYNC_ENABLED`, the worker installs the registry's wheels meant for it
//! into its runners' interpreter (`wheel_sync.rs`), between runs only (`worker.rs` says how
//! fetching pauses for it), and restarts its warm runners after each change so the new code
//! is what runs.
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
//!   A job whose deliveries are used up — seen by the worker on its last delivery, or announced
//!   by JetStream's `MAX_DELIVERIES` advisory after any worker (Python ones included) NAKed it
//!   or went silent — fails its run (`max_deliver_exceeded: delivered N times`, metadata kept),
//!   goes to the DLQ as `max_deliver_exceeded` and is removed from the stream; 0.5.1 left it in
//!   the stream forever, unreported.
//! * Snapshots carry `attempt` (our key): the JetStream delivery count of the execution that
//!   owns the run. Redelivered runs are taken over by the rule above.
//! * Worker-side flow errors (`invalid_workflow`, `unknown_task`, `import_error`,
//!   `resolver_error`) keep the run's metadata (§14-6); only graph-referenced tasks run (§14-7);
//!   the graph is never executed as Python (§14-8); task records carry `stdout`/`stderr`.
//! * In-progress ACK: the first `+WPI` is sent one period after delivery (not at once); failures
//!   of in-progress ACKs and DLQ publishes are logged (§14-24).
//! * `concurrency` runs per process; registry writes happen off the run's critical path and are
//!   compare-and-set, so `hidden` written by a gateway between our read and write is kept.
//! * The worker-side overhead of each run (arrival → `run` sent, `run_finished` → ACK) is
//!   logged at DEBUG and exposed through [`WorkerProbe::overheads`].
//! * Jobs without a tag, and workers without tags, use `PYOCO_DEFAULT_TAG` (§14-26).
//! * Wheel sync: an empty registry is a successful sync (0.5.1: an error, §14-11); a package
//!   whose wheels all left the registry (or no longer match the worker) is `pip uninstall`ed,
//!   not only deleted locally; after any install or uninstall the warm runners are restarted,
//!   so upgraded modules are really re-imported (0.5.1 kept the old ones loaded); pip runs
//!   without the worker's `PYTHONPATH`. Periodic attempts first only *read* (registry
//!   listing vs manifest NUIDs) beside the runs; only when something is to change does
//!   fetching pause until the runs in progress end (bounded by
//!   [`WheelSyncConfig::max_pause`] while runners sit idle, see `worker.rs`) — 0.5.1 had one
//!   run at a time and synced before each fetch. A disabled worker writes
//!   `wheel_sync.last_result = "disabled"` even if its previous record said otherwise; a
//!   failed pip that did not touch the environment leaves the runners warm.
//! * Fetch errors do not end the worker; SIGTERM stops it gracefully like SIGINT; a run that does
//!   not finish within the stop timeout is handed back (NAK) for another worker.

mod config;
mod context;
mod heartbeat;
mod job;
mod max_deliver;
mod pool;
mod registry;
mod runner;
mod snapshot_writer;
mod wheel_sync;
mod worker;

pub use config::{
    WheelSyncConfig, WorkerConfig, DEFAULT_SNAPSHOT_MIN_INTERVAL, DEFAULT_WHEEL_SYNC_MAX_PAUSE,
};
pub use context::{RunOverhead, WorkerProbe};
pub use heartbeat::ack_progress_interval;
pub use pool::{Lease, RunnerPool, RUNNER_SHUTDOWN_GRACE};
pub use runner::{
    cancel_request, describe_exit, install_runner_script, run_request, ReadyInfo, RunFinished,
    RunProgress, RunStarted, Runner, RunnerError, RunnerEvent, RunnerSpec, TaskFinished,
    PROTOCOL_VERSION, RUNNER_FILE_NAME, RUNNER_SOURCE,
};
pub use snapshot_writer::{CancelRequest, SnapshotWriter};
pub use wheel_sync::{MANIFEST_FILE_NAME, UNSUPPORTED_WHEEL_TAGS};
pub use worker::Worker;

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
