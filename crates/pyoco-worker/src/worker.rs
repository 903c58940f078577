//! The worker's main loop: fetch as many jobs as there are idle runners, hand each to a job
//! task, and stop gracefully.
//!
//! Fetching: whenever runners become idle, the dispatcher takes them all and starts a *puller*
//! for them. A puller issues one pull request for as many messages as it holds runners and
//! pairs each message with a runner as it arrives, so a job starts the moment it is delivered.
//! With one tag the pull request waits `poll_timeout` for messages (a long poll: no latency
//! added); with several tags the puller asks each tag in order with a short expiry and stops at
//! the first tag that had work, so earlier tags are favoured as in 0.5.1 (§6.2). Several pullers
//! can be waiting at once (one per batch of freed runners); their sum never exceeds the number
//! of runners, so the worker never holds a message it has no runner for.
//!
//! Stopping (mini-redis style): a `watch` carries the [`Phase`]. `Draining` stops the pullers
//! (a message that still arrives is NAKed at once, undelayed) and lets running jobs finish;
//! after `stop_timeout`, `Abort` makes the remaining jobs kill their runners and NAK their
//! messages. Then the runners are shut down and the registry says `STOPPED_GRACEFUL`.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::AckKind;
use futures::StreamExt;
use pyoco_store::{Store, WorkConsumer};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

use crate::{
    config::WorkerConfig,
    job::{self, Delivery},
    max_deliver,
    pool::{Lease, RunnerPool},
    registry::{Registry, RegistryHandle},
    runner::install_runner_script,
    WorkerError,
};

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Stop fetching; let runs in progress finish.
    Draining,
    /// Stop runs in progress now and hand their jobs back.
    Abort,
}

/// State shared by the dispatcher, the pullers and the jobs.
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

/// A worker process: serves its tags until the shutdown future resolves.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    probe: WorkerProbe,
}

impl Worker {
    pub fn new(config: WorkerConfig) -> Worker {
        Worker {
            config,
            probe: WorkerProbe::default(),
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// A handle that shows which runs execute on which runner process.
    pub fn probe(&self) -> WorkerProbe {
        self.probe.clone()
    }

    /// Serve jobs until `shutdown` resolves (or, with `run_once`, after one poll), then stop
    /// gracefully. Fails at startup when the configuration is invalid, a consumer cannot be
    /// prepared or the runners cannot start (e.g. no pyoco in the interpreter).
    pub async fn run(
        self,
        store: Store,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let cfg = self.config;
        cfg.validate()?;
        let script = install_runner_script(&cfg.runner_dir).map_err(|source| WorkerError::Io {
            what: "cannot write the pyoco runner to",
            path: cfg.runner_dir.clone(),
            source,
        })?;
        std::fs::create_dir_all(&cfg.work_dir).map_err(|source| WorkerError::Io {
            what: "cannot create the runner working directory",
            path: cfg.work_dir.clone(),
            source,
        })?;

        let mut consumers = Vec::with_capacity(cfg.tags.len());
        for tag in &cfg.tags {
            let consumer =
                store
                    .work_consumer(tag)
                    .await
                    .map_err(|source| WorkerError::Consumer {
                        tag: tag.clone(),
                        source,
                    })?;
            let info = &consumer.cached_info().config;
            let ack_wait = if info.ack_wait.is_zero() {
                cfg.ack_wait
            } else {
                info.ack_wait
            };
            consumers.push(TagConsumer {
                tag: tag.clone(),
                max_deliver: info.max_deliver,
                ack_wait,
                ack_progress: cfg.ack_progress_period(ack_wait),
                consumer: tokio::sync::Mutex::new(consumer),
            });
        }
        let consumers = Arc::new(consumers);

        let pool = RunnerPool::start(cfg.runner_spec(script), cfg.concurrency).await?;

        let registry = Arc::new(Registry::new(
            store.workers().clone(),
            &cfg.worker_id,
            &cfg.tags,
        ));
        registry.write(false).await;
        let registry_task = registry.spawn_heartbeat(cfg.worker_heartbeat_interval);

        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            config: cfg.clone(),
            store,
            registry: registry.handle(),
            probe: self.probe.clone(),
            phase: phase_rx,
        });
        let advisories = match max_deliver::spawn_watch(shared.clone(), consumers.clone()).await {
            Ok(task) => Some(task),
            Err(err) => {
                // Jobs still run; only messages JetStream gives up on go unreported.
                tracing::warn!("cannot subscribe to JetStream's max-deliveries advisories: {err}");
                None
            }
        };
        tracing::info!(
            worker_id = %cfg.worker_id,
            tags = ?cfg.tags,
            concurrency = cfg.concurrency,
            "worker started"
        );

        let (work_tx, mut work_rx) = mpsc::unbounded_channel::<(Delivery, Lease)>();
        let mut jobs = JoinSet::new();
        let mut pullers = JoinSet::new();
        let mut polled = false;
        tokio::pin!(shutdown);
        loop {
            let fetching = !(cfg.run_once && polled);
            if !fetching && pullers.is_empty() && jobs.is_empty() && work_rx.is_empty() {
                tracing::info!("--run-once: one poll done");
                break;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested: no new jobs; waiting for runs in progress");
                    break;
                }
                Some((d, lease)) = work_rx.recv() => {
                    jobs.spawn(job::process(shared.clone(), d, lease));
                }
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Err(err) = done {
                        tracing::error!("a job task failed: {err}");
                    }
                }
                Some(done) = pullers.join_next(), if !pullers.is_empty() => {
                    if let Err(err) = done {
                        tracing::error!("a job puller failed: {err}");
                    }
                }
                leases = pool.take_idle_wait(), if fetching => {
                    polled = true;
                    pullers.spawn(pull(shared.clone(), consumers.clone(), leases, work_tx.clone()));
                }
            }
        }

        // Graceful stop.
        let _ = phase_tx.send(Phase::Draining);
        drop(work_tx);
        let deadline = Instant::now() + cfg.stop_timeout;
        let mut aborted = false;
        while !(pullers.is_empty() && jobs.is_empty() && work_rx.is_empty()) {
            tokio::select! {
                Some((d, lease)) = work_rx.recv() => {
                    // Fetched but not started: straight back to the queue.
                    lease.give_back();
                    if let Err(err) = d.msg.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!("NAK of an unstarted job failed: {err}");
                    }
                }
                Some(_) = pullers.join_next(), if !pullers.is_empty() => {}
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = tokio::time::sleep_until(deadline), if !aborted => {
                    aborted = true;
                    tracing::warn!(
                        runs = jobs.len(),
                        "runs still in progress after {:?}; stopping them and handing their jobs back to the queue",
                        cfg.stop_timeout
                    );
                    let _ = phase_tx.send(Phase::Abort);
                }
            }
        }
        if let Some(task) = advisories {
            task.abort();
        }
        pool.shutdown().await;
        registry_task.abort();
        registry.write(true).await;
        tracing::info!(worker_id = %cfg.worker_id, "worker stopped");
        Ok(())
    }
}

/// Fetch jobs for the runners in `leases` (see the module docs) and hand each message with a
/// runner to the dispatcher; give back the runners that got no message.
async fn pull(
    sh: Arc<Shared>,
    consumers: Arc<Vec<TagConsumer>>,
    mut leases: Vec<Lease>,
    work: mpsc::UnboundedSender<(Delivery, Lease)>,
) {
    let single = consumers.len() == 1;
    let expires = if single {
        sh.config.poll_timeout
    } else {
        (sh.config.poll_timeout / consumers.len() as u32)
            .clamp(Duration::from_millis(50), Duration::from_millis(200))
    }
    .max(Duration::from_millis(10));
    for tc in consumers.iter() {
        if leases.is_empty() || *sh.phase.borrow() != Phase::Running {
            break;
        }
        if fetch_batch(&sh, tc, &mut leases, expires, &work).await {
            // Start over from the first tag with the runners left.
            break;
        }
    }
    for lease in leases {
        lease.give_back();
    }
}

/// One pull request on `tc` for `leases.len()` messages. Returns true when any message came.
async fn fetch_batch(
    sh: &Shared,
    tc: &TagConsumer,
    leases: &mut Vec<Lease>,
    expires: Duration,
    work: &mpsc::UnboundedSender<(Delivery, Lease)>,
) -> bool {
    let batch = {
        let consumer = tc.consumer.lock().await;
        consumer
            .batch()
            .max_messages(leases.len())
            .expires(expires)
            .messages()
            .await
    };
    let mut batch = match batch {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(tag = %tc.tag, "pulling jobs failed, retrying in 1 s: {err}");
            refresh_consumer(sh, tc).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            return false;
        }
    };
    let mut got = false;
    while let Some(item) = batch.next().await {
        match item {
            Ok(msg) => {
                got = true;
                if *sh.phase.borrow() != Phase::Running {
                    if let Err(err) = msg.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!("NAK of a job fetched while stopping failed: {err}");
                    }
                    continue;
                }
                let Some(lease) = leases.pop() else {
                    // Cannot happen: the pull request asked for one message per runner.
                    tracing::error!(tag = %tc.tag, "more jobs delivered than requested; handing it back");
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    continue;
                };
                if let Err(mpsc::error::SendError((d, lease))) =
                    work.send((Delivery::new(msg, tc), lease))
                {
                    lease.give_back();
                    let _ = d.msg.ack_with(AckKind::Nak(None)).await;
                }
            }
            Err(err) => {
                tracing::warn!(tag = %tc.tag, "pull request ended with an error: {err}");
                refresh_consumer(sh, tc).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
    got
}

/// After a pull error, make sure the durable consumer exists (a NATS server restarted with a
/// fresh store has none) and use it.
async fn refresh_consumer(sh: &Shared, tc: &TagConsumer) {
    // A request sent while disconnected is lost across the reconnect and only fails after the
    // request timeout (5 s): ask only when connected; the caller retries shortly.
    if let Err(err) = sh.store.check_connected() {
        tracing::debug!(tag = %tc.tag, "consumer not refreshed: {err}");
        return;
    }
    match sh.store.work_consumer(&tc.tag).await {
        Ok(c) => *tc.consumer.lock().await = c,
        Err(err) => tracing::debug!(tag = %tc.tag, "consumer not available yet: {err}"),
    }
}
