//! Writing one run's snapshot while it executes: coalesced, compacted, compare-and-set.
//!
//! 0.5.1 overwrote the snapshot blindly from three places (trace flushes, heartbeats, the final
//! write), which lost cancels written by a gateway in between (§14-2) and dropped `worker_id`
//! after the first write (§14-3). Here one [`SnapshotWriter`] per run owns the run's snapshot:
//!
//! * every write is `update(key, value, last revision)`; a conflict means someone else wrote
//!   (in practice: a gateway's cancel). The writer re-reads, takes the cancel fields over
//!   ([`RunSnapshot::cancel_request`] rules), keeps `CANCELLING` as the status until the run is
//!   terminal, and writes again — so a cancel is never overwritten and the caller learns about it
//!   at once;
//! * every write carries `worker_id` and fresh `heartbeat_at`/`updated_at`, and is compacted to
//!   `PYOCO_MAX_RUN_SNAPSHOT_BYTES` (§6.9, also heartbeats: §14-5);
//! * progress writes are coalesced: the job marks the snapshot dirty on each runner event and
//!   asks [`SnapshotWriter::flush_at`] when the next write may happen (at most one write in
//!   flight, at least `min_interval` apart); only the terminal write skips the wait;
//! * a conflict that reveals a higher `attempt` (our snapshot key: the JetStream delivery count
//!   of the owning execution) means a redelivery of the job took the run over while this
//!   execution was still alive (its ACKs did not reach JetStream for a whole ack wait, e.g.
//!   during a network partition). The writer then stops writing altogether
//!   ([`SnapshotWriter::superseded`]); the job stops the run and leaves the message alone.

use std::time::Duration;

use pyoco_store::{Bucket, StoreError};
use pyoco_wire::{compact_snapshot, RunSnapshot, RunStatus};
use tokio::time::Instant;

use pyoco_wire::python::time as now;

/// Snapshot key (our addition) holding the JetStream delivery count of the execution that owns
/// the run: 1 for the first execution, 2+ after a redelivery. The claim (`job/claim.rs`) writes
/// it; the writer compares it on every conflict to notice that a later delivery took the run
/// over.
pub(crate) const ATTEMPT_KEY: &str = "attempt";

/// Snapshot key (our addition) holding the flow's dependencies as `[upstream, downstream]`
/// task-name pairs, from the runner's `run_started` (the dashboard draws the graph from it;
/// the flow.yaml itself is not stored). Absent for a flow with more than 5,000 of them.
pub(crate) const TASK_EDGES_KEY: &str = "task_edges";

/// Conflicts tolerated in a row before a write gives up (each one means another writer got in
/// between our read and our write).
const MAX_CAS_ATTEMPTS: usize = 8;

/// A cancel request seen in the stored snapshot: when and by whom.
pub type CancelRequest = (f64, Option<String>);

/// The snapshot of one run in progress and its last written revision.
#[derive(Debug)]
pub struct SnapshotWriter {
    runs: Bucket,
    snapshot: RunSnapshot,
    /// Revision of our last write; 0 when the key does not exist.
    revision: u64,
    max_bytes: i64,
    min_interval: Duration,
    dirty: bool,
    last_write: Instant,
    cancel: Option<CancelRequest>,
    /// Another writer stored a terminal status while we were still running.
    foreign_terminal: bool,
    /// A later delivery of the job took the run over (the stored `attempt` is higher than
    /// ours): nothing more is written.
    superseded: bool,
}

impl SnapshotWriter {
    /// A writer for `snapshot`, which was just written at `revision`.
    pub fn new(
        runs: Bucket,
        snapshot: RunSnapshot,
        revision: u64,
        max_bytes: i64,
        min_interval: Duration,
    ) -> Self {
        SnapshotWriter {
            runs,
            snapshot,
            revision,
            max_bytes,
            min_interval,
            dirty: false,
            last_write: Instant::now(),
            cancel: None,
            foreign_terminal: false,
            superseded: false,
        }
    }

    /// The snapshot as it will be written next.
    pub fn snapshot(&self) -> &RunSnapshot {
        &self.snapshot
    }

    /// Change the snapshot; the change is written by the next flush.
    pub fn update(&mut self, change: impl FnOnce(&mut RunSnapshot)) {
        change(&mut self.snapshot);
        if self.cancel.is_some() && !self.snapshot.status.is_terminal() {
            self.snapshot.status = RunStatus::Cancelling;
        }
        self.dirty = true;
    }

    /// The cancel request seen so far, if any.
    pub fn cancel(&self) -> Option<&CancelRequest> {
        self.cancel.as_ref()
    }

    /// True once a later delivery of the job has taken the run over (see the module docs):
    /// this execution must stop and must not write or ACK anything more.
    pub fn superseded(&self) -> bool {
        self.superseded
    }

    /// Revision of the last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the pending changes may be written (`None`: nothing to write).
    pub fn flush_at(&self) -> Option<Instant> {
        self.dirty.then(|| self.last_write + self.min_interval)
    }

    /// Write the snapshot now (a flush or a heartbeat). Returns true when this write discovered
    /// a cancel request that was not known before.
    pub async fn write(&mut self) -> Result<bool, StoreError> {
        self.write_inner(false).await
    }

    /// Write the terminal snapshot (the status already set by the caller is kept; a cancel
    /// request found meanwhile only adds its fields).
    pub async fn write_terminal(&mut self) -> Result<bool, StoreError> {
        self.write_inner(true).await
    }

    async fn write_inner(&mut self, terminal: bool) -> Result<bool, StoreError> {
        let key = self.snapshot.run_id.clone();
        let mut new_cancel = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            if self.superseded {
                self.dirty = false;
                return Ok(new_cancel);
            }
            if self.foreign_terminal && !terminal {
                self.dirty = false;
                return Ok(new_cancel);
            }
            let t = now();
            self.snapshot.heartbeat_at = t;
            self.snapshot.updated_at = t;
            if self.cancel.is_some() && !self.snapshot.status.is_terminal() {
                self.snapshot.status = RunStatus::Cancelling;
            }
            let bytes = compact_snapshot(&self.snapshot, self.max_bytes);
            let written = if self.revision == 0 {
                self.runs.create(&key, bytes).await
            } else {
                self.runs.update(&key, bytes, self.revision).await
            };
            match written {
                Ok(rev) => {
                    self.revision = rev;
                    self.dirty = false;
                    self.last_write = Instant::now();
                    return Ok(new_cancel);
                }
                Err(StoreError::Conflict(_)) => {
                    new_cancel |= self.reread(t).await?;
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict(format!(
            "{key} (gave up after {MAX_CAS_ATTEMPTS} concurrent writes)"
        )))
    }

    /// Read the stored snapshot after a conflict and merge what others wrote into ours.
    async fn reread(&mut self, now: f64) -> Result<bool, StoreError> {
        let Some(current) = self.runs.get(&self.snapshot.run_id).await? else {
            // Deleted under us: recreate it.
            self.revision = 0;
            return Ok(false);
        };
        self.revision = current.revision;
        match RunSnapshot::from_json(&current.value) {
            Ok(stored) => Ok(self.merge(&stored, now)),
            Err(err) => {
                tracing::warn!(
                    run_id = %self.snapshot.run_id,
                    "stored snapshot is not readable, overwriting it: {err}"
                );
                Ok(false)
            }
        }
    }

    /// Take over what another writer stored: the cancel request (and the CANCELLING status
    /// while we are not terminal). Returns true when the cancel is new to us.
    pub(crate) fn merge(&mut self, stored: &RunSnapshot, now: f64) -> bool {
        let attempt = |s: &RunSnapshot| s.extra.get(ATTEMPT_KEY).and_then(|v| v.as_u64());
        if let (Some(theirs), Some(ours)) = (attempt(stored), attempt(&self.snapshot)) {
            if theirs > ours {
                if !self.superseded {
                    tracing::warn!(
                        run_id = %self.snapshot.run_id,
                        our_attempt = ours,
                        their_attempt = theirs,
                        owner = stored.worker_id.as_deref().unwrap_or("?"),
                        "the run was taken over by a later delivery of its job"
                    );
                }
                self.superseded = true;
                return false;
            }
        }
        if stored.status.is_terminal() && !self.snapshot.status.is_terminal() {
            if !self.foreign_terminal {
                tracing::warn!(
                    run_id = %self.snapshot.run_id,
                    status = %stored.status,
                    "another writer finished this run while it was still executing here; \
                     progress writes stop, the final result will still be written"
                );
            }
            self.foreign_terminal = true;
        }
        let Some((at, by)) = stored.cancel_request(now) else {
            return false;
        };
        let new = self.cancel.is_none();
        self.snapshot.cancel_requested_at = Some(Some(at));
        self.snapshot.cancel_requested_by = Some(by.clone());
        self.cancel = Some((at, by));
        if !self.snapshot.status.is_terminal() {
            self.snapshot.status = RunStatus::Cancelling;
        }
        self.dirty = true;
        new
    }
}
