//! The worker's record in the registry (KV `pyoco_workers`, key `<worker_id>`, §2.4).
//!
//! 0.5.1 writes the record at startup, at the start and end of every run, every
//! `PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC` and at a graceful stop. Here the same writes happen
//! in one background task: jobs only report "run started"/"run finished" to a shared state
//! ([`RegistryHandle`]) and wake the task, so a run never waits for a registry write, and bursts
//! of short runs collapse into one write. Each write re-reads the stored record first and keeps
//! what others own (`hidden`, set by `PATCH /workers/{id}`; unknown keys).
//!
//! `wheel_sync` is ours: `disabled` when sync is off; with sync on, the previous process's
//! object (0.5.1's `_coerce_wheel_sync_state`) until the first attempt reports
//! ([`RegistryHandle::set_wheel_sync`]).
//!
//! With concurrency above one, `current_run_id` is the most recently started run still
//! executing and the state is `RUNNING` while any run executes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use indexmap::IndexMap;
use pyoco_store::Bucket;
use pyoco_wire::{WheelSyncStatus, WorkerRecord, WorkerState};
use tokio::{sync::Notify, task::JoinHandle};

use pyoco_wire::python::time as now;

/// Least time between two registry writes caused by run starts/ends.
const MIN_GAP: Duration = Duration::from_millis(50);

/// Compare-and-set attempts of one registry write.
const MAX_CAS_ATTEMPTS: usize = 5;

#[derive(Debug, Default)]
struct State {
    /// Runs executing now → start time, in start order.
    running: IndexMap<String, f64>,
    last_run_id: Option<String>,
    last_run_status: Option<String>,
    last_run_started_at: Option<f64>,
    last_run_finished_at: Option<f64>,
    /// The `wheel_sync` object to write; `None` until the first write decided it.
    wheel_sync: Option<WheelSyncStatus>,
}

/// What jobs use to report runs to the registry. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct RegistryHandle {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl RegistryHandle {
    pub(crate) fn run_started(&self, run_id: &str) {
        if let Ok(mut s) = self.state.lock() {
            let t = now();
            s.running.insert(run_id.to_string(), t);
            s.last_run_started_at = Some(t);
        }
        self.wake.notify_one();
    }

    /// The run stopped here without a result of ours (handed back to the queue, or taken over
    /// by another delivery): it is no longer current, and `last_run_*` stay as they were.
    pub(crate) fn run_abandoned(&self, run_id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.running.shift_remove(run_id);
        }
        self.wake.notify_one();
    }

    pub(crate) fn run_finished(&self, run_id: &str, status: &str) {
        if let Ok(mut s) = self.state.lock() {
            let started = s.running.shift_remove(run_id);
            s.last_run_id = Some(run_id.to_string());
            s.last_run_status = Some(status.to_string());
            if let Some(t) = started {
                s.last_run_started_at = Some(t);
            }
            s.last_run_finished_at = Some(now());
        }
        self.wake.notify_one();
    }

    /// The `wheel_sync` object as last written or set.
    pub(crate) fn wheel_sync(&self) -> Option<WheelSyncStatus> {
        self.state.lock().ok()?.wheel_sync.clone()
    }

    /// Report a wheel sync attempt; written shortly after.
    pub(crate) fn set_wheel_sync(&self, status: WheelSyncStatus) {
        if let Ok(mut s) = self.state.lock() {
            s.wheel_sync = Some(status);
        }
        self.wake.notify_one();
    }
}

/// The registry writer of one worker process.
#[derive(Debug)]
pub(crate) struct Registry {
    bucket: Bucket,
    worker_id: String,
    instance_id: String,
    tags: Vec<String>,
    wheel_sync_enabled: bool,
    handle: RegistryHandle,
}

impl Registry {
    pub(crate) fn new(
        bucket: Bucket,
        worker_id: &str,
        tags: &[String],
        wheel_sync_enabled: bool,
    ) -> Registry {
        Registry {
            bucket,
            worker_id: worker_id.to_string(),
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            tags: tags.to_vec(),
            wheel_sync_enabled,
            handle: RegistryHandle::default(),
        }
    }

    pub(crate) fn handle(&self) -> RegistryHandle {
        self.handle.clone()
    }

    /// Write the record once (`IDLE`/`RUNNING`, or `STOPPED_GRACEFUL` when `stopping`).
    pub(crate) async fn write(&self, stopping: bool) {
        if let Err(err) = self.try_write(stopping).await {
            tracing::warn!(worker_id = %self.worker_id, "worker registry update failed: {err}");
        }
    }

    async fn try_write(&self, stopping: bool) -> Result<(), pyoco_store::StoreError> {
        // Compare-and-set, so a `PATCH /workers/{id}` (`hidden`) landing between our read and
        // our write is never lost: on a conflict, read again and rebuild.
        for _ in 0..MAX_CAS_ATTEMPTS {
            let t = now();
            let current = self.bucket.get(&self.worker_id).await?;
            let revision = current.as_ref().map_or(0, |v| v.revision);
            let existing = current.and_then(|v| {
                WorkerRecord::from_json(&v.value, &self.worker_id)
                    .inspect_err(|err| {
                        tracing::warn!(
                            worker_id = %self.worker_id,
                            "stored worker record is not readable, replacing it: {err}"
                        )
                    })
                    .ok()
            });
            let rec = self.record(existing, stopping, t);
            let written = if revision == 0 {
                self.bucket.create(&self.worker_id, rec.to_json()).await
            } else {
                self.bucket
                    .update(&self.worker_id, rec.to_json(), revision)
                    .await
            };
            match written {
                Ok(_) => return Ok(()),
                Err(pyoco_store::StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(pyoco_store::StoreError::Conflict(format!(
            "worker record {} (gave up after {MAX_CAS_ATTEMPTS} concurrent writes)",
            self.worker_id
        )))
    }

    /// The full record (§2.4) to write: what others own in `existing` (`hidden`, unknown keys)
    /// kept, everything else ours.
    fn record(&self, existing: Option<WorkerRecord>, stopping: bool, t: f64) -> WorkerRecord {
        let mut s = self.handle.state.lock().expect("registry state");
        let enabled = self.wheel_sync_enabled;
        let previous_wheel_sync = existing.as_ref().and_then(|r| r.wheel_sync.clone());
        let wheel_sync = s
            .wheel_sync
            .get_or_insert_with(|| match previous_wheel_sync {
                Some(prev) if enabled => {
                    let raw = serde_json::to_value(&prev).unwrap_or_default();
                    WheelSyncStatus::coerce(&raw, true)
                }
                _ => WheelSyncStatus::initial(enabled),
            })
            .clone();
        let mut rec = match existing {
            Some(mut r) => {
                r.instance_id = self.instance_id.clone();
                r.worker_id = self.worker_id.clone();
                r.tags = self.tags.clone();
                r.wheel_sync = Some(wheel_sync);
                r
            }
            None => WorkerRecord::starting(
                &self.worker_id,
                &self.instance_id,
                self.tags.clone(),
                t,
                wheel_sync,
            ),
        };
        {
            rec.state = if stopping {
                WorkerState::StoppedGraceful
            } else if s.running.is_empty() {
                WorkerState::Idle
            } else {
                WorkerState::Running
            };
            rec.current_run_id = if stopping {
                None
            } else {
                s.running.keys().last().cloned()
            };
            rec.last_run_id = s.last_run_id.clone();
            rec.last_run_status = s.last_run_status.clone();
            rec.last_run_started_at = s.last_run_started_at;
            rec.last_run_finished_at = s.last_run_finished_at;
        }
        drop(s);
        if stopping {
            rec.stopped_at = Some(t);
            rec.stop_reason = Some("graceful_shutdown".into());
        } else {
            rec.stopped_at = None;
            rec.stop_reason = None;
        }
        rec.touch(t);
        rec
    }

    /// Keep the record fresh: every `interval`, and shortly after each run start/end.
    pub(crate) fn spawn_heartbeat(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = crate::heartbeat::ticker(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = me.handle.wake.notified() => {
                        tokio::time::sleep(MIN_GAP).await;
                    }
                }
                me.write(false).await;
            }
        })
    }
}
