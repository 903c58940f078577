//! What the dispatcher (`worker.rs`), the job tasks (`job/`) and the max-deliveries watch
//! (`max_deliver.rs`) share while a worker runs: the [`Shared`] state, one [`TagConsumer`] per
//! tag, the [`Phase`] that tells them all when to stop, and the [`WorkerProbe`] that records
//! which runner executes which run and each run's [`RunOverhead`].
//!
//! It lives apart from all three because each of them needs it and none of them owns it: the
//! dispatcher creates it, the jobs and the advisory watch only read it (and report into the
//! probe). Keeping it here lets the dependencies point one way — `worker` → `max_deliver` →
//! `job` → `context` — so a job never reaches back into the loop that spawned it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use pyoco_store::{Store, WorkConsumer};
use tokio::sync::watch;

use crate::{config::WorkerConfig, registry::RegistryHandle};

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Stop fetching; let runs in progress finish.
    Draining,
    /// Stop runs in progress now and hand their jobs back.
    Abort,
}

/// State shared by the dispatcher, the pullers, the jobs and the max-deliveries watch.
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub store: Store,
    pub registry: RegistryHandle,
    pub probe: WorkerProbe,
    pub phase: watch::Receiver<Phase>,
}

/// One tag's consumer and what jobs need to know about it.
pub(crate) struct TagConsumer {
    pub tag: String,
    pub consumer: tokio::sync::Mutex<WorkConsumer>,
    pub max_deliver: i64,
    /// The consumer's ack wait: how long a delivery may go without any ACK before JetStream
    /// hands the message to another worker.
    pub ack_wait: Duration,
    pub ack_progress: Option<Duration>,
}

/// Worker-side time of one run, outside the pyoco engine: from the message's arrival to the
/// `run` request written to the runner, and from the runner's `run_finished` to the ACK (the
/// terminal snapshot write is in the second part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOverhead {
    pub before_run: Duration,
    pub after_run: Duration,
}

impl RunOverhead {
    /// Both parts together.
    pub fn total(&self) -> Duration {
        self.before_run + self.after_run
    }
}

/// Overhead samples kept by a [`WorkerProbe`] (the most recent ones).
const MAX_OVERHEAD_SAMPLES: usize = 10_000;

/// A look into a running worker, for tests and diagnostics: which runner executes which run.
#[derive(Clone, Debug, Default)]
pub struct WorkerProbe {
    active: Arc<Mutex<HashMap<String, u32>>>,
    overheads: Arc<Mutex<VecDeque<RunOverhead>>>,
}

impl WorkerProbe {
    /// Process id of the runner executing `run_id`, while it executes.
    pub fn runner_pid(&self, run_id: &str) -> Option<u32> {
        self.active.lock().ok()?.get(run_id).copied()
    }

    /// Runs executing now, with their runner's process id.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.active
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn started(&self, run_id: &str, pid: u32) {
        if let Ok(mut m) = self.active.lock() {
            m.insert(run_id.to_string(), pid);
        }
    }

    /// Worker-side overhead of the most recent runs that finished normally (oldest first).
    pub fn overheads(&self) -> Vec<RunOverhead> {
        self.overheads
            .lock()
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Forget the overhead samples taken so far.
    pub fn clear_overheads(&self) {
        if let Ok(mut q) = self.overheads.lock() {
            q.clear();
        }
    }

    pub(crate) fn finished(&self, run_id: &str) {
        if let Ok(mut m) = self.active.lock() {
            m.remove(run_id);
        }
    }

    pub(crate) fn record_overhead(&self, o: RunOverhead) {
        if let Ok(mut q) = self.overheads.lock() {
            if q.len() == MAX_OVERHEAD_SAMPLES {
                q.pop_front();
            }
            q.push_back(o);
        }
    }
}
