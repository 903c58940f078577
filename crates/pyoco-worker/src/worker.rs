//! The worker's main loop: fetch as many jobs as there are idle runners (and, while runs are
//! short, one more per runner), hand each to a job task, and stop gracefully.
//!
//! Fetching: the dispatcher holds the idle runners and keeps pull requests open for as many
//! messages as they can take. With one tag the pull request waits `poll_timeout` for messages
//! (a long poll: no latency added); with several tags the puller asks each tag in order with a
//! short expiry and stops at the first tag that had work, so earlier tags are favoured as in
//! 0.5.1 (§6.2). A message that arrives goes to an idle runner at once.
//!
//! Prefetch (`PYOCO_WORKER_PREFETCH`, on by default): while every runner is busy and the last
//! runs were short (under [`PREFETCH_MAX_AVG_RUN`] on average), the dispatcher also asks for
//! one job per runner ahead of time and reads its run snapshot meanwhile, so when a runner
//! comes back the job's claim is one compare-and-set away instead of a pull request, a read and
//! a write. A job fetched ahead that waits [`PREFETCH_HOLD`] (the run in progress turned out
//! long) is NAKed without delay for another worker, and nothing more is fetched ahead until a
//! runner comes back; one at its last delivery is kept, with in-progress ACKs, instead. The
//! worker never holds more messages than its runners plus one each.
//!
//! Wheel sync (§6.10, `wheel_sync.rs`) installs between runs only. At start a full attempt
//! runs before the first fetch. Then, whenever `PYOCO_WHEEL_SYNC_INTERVAL_SEC` has passed since
//! the previous attempt started, a read-only *check* runs beside the runs (list the registry,
//! compare object NUIDs with the manifest); when nothing is to change, that is the attempt.
//! Otherwise fetching *pauses*: no new pullers; the pullers still waiting end within
//! `poll_timeout`, and what they fetched runs. Once no job is left, the full attempt runs; if
//! it installed or uninstalled anything, the (idle) runners are restarted so the next run
//! imports the new code; then fetching resumes. The pause is bounded by
//! [`crate::WheelSyncConfig::max_pause`]: if runs are still going then while some runners sit
//! idle, fetching resumes and the sync is retried one interval later. While every runner is
//! busy (always the case with one runner) waiting costs nothing, so the sync simply waits for
//! the first moment without runs. Between two syncs the runners always get one fetch, so a
//! sync slower than its interval (a wheel failing to install on every attempt) cannot starve
//! the queue.
//!
//! Stopping (mini-redis style): a `watch` carries the [`Phase`]. `Draining` stops the pullers
//! (a message that still arrives is NAKed at once, undelayed) and lets running jobs finish;
//! after `stop_timeout`, `Abort` makes the remaining jobs kill their runners and NAK their
//! messages. Then the runners are shut down and the registry says `STOPPED_GRACEFUL`.

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::AckKind;
use futures::StreamExt;
use pyoco_store::Store;
use pyoco_wire::WheelSyncStatus;
use tokio::{
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use crate::{
    config::WorkerConfig,
    context::{Phase, Shared, TagConsumer, WorkerProbe},
    job::{self, Delivery},
    max_deliver,
    pool::{Lease, RunnerPool},
    registry::{Registry, RegistryHandle},
    runner::install_runner_script,
    wheel_sync::{Attempt, SyncMode, SyncOutcome, WheelSync},
    WorkerError,
};

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

        let mut wheel_sync = if cfg.wheel_sync.enabled {
            let mut sync_cfg = cfg.wheel_sync.clone();
            if sync_cfg.dir.is_relative() {
                // 0.5.1: relative to the working directory the worker starts in.
                let cwd = std::env::current_dir().map_err(|source| WorkerError::Io {
                    what: "cannot resolve the wheel sync dir against the working directory",
                    path: sync_cfg.dir.clone(),
                    source,
                })?;
                sync_cfg.dir = cwd.join(&sync_cfg.dir);
            }
            std::fs::create_dir_all(&sync_cfg.dir).map_err(|source| WorkerError::Io {
                what: "cannot create the wheel sync dir",
                path: sync_cfg.dir.clone(),
                source,
            })?;
            Some(WheelSync::new(
                &sync_cfg,
                &cfg.python,
                &cfg.tags,
                store.wheels().clone(),
                store.wheel_history().clone(),
                &cfg.worker_id,
            ))
        } else {
            None
        };

        let pool = RunnerPool::start(cfg.runner_spec(script), cfg.concurrency).await?;

        let registry = Arc::new(Registry::new(
            store.workers().clone(),
            &cfg.worker_id,
            &cfg.tags,
            cfg.wheel_sync.enabled,
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

        let (work_tx, mut work_rx) = mpsc::unbounded_channel::<Delivery>();
        let mut jobs = JoinSet::new();
        let mut pullers = JoinSet::new();
        let mut polled = false;
        // Fetching and prefetching (module docs): idle runners held for the pull requests in
        // flight, jobs fetched ahead waiting for a runner, and how many messages the open pull
        // requests may still deliver.
        let mut idle: Vec<Lease> = Vec::new();
        let mut queued: VecDeque<Queued> = VecDeque::new();
        let mut requested: usize = 0;
        let mut prefetch = Prefetch::new(cfg.prefetch);
        // Wheel sync scheduling (module docs). The first attempt is a full one, at once.
        let mut next_sync_at = Instant::now();
        let mut first_sync = true;
        let mut sync_pause: Option<SyncPause> = None;
        let mut sync_task: Option<SyncTask> = None;
        // A full sync slower than the interval must not starve the queue: after each one, the
        // runners get at least one fetch before the next pause.
        let mut fetched_since_sync = true;
        tokio::pin!(shutdown);
        loop {
            // A runner goes to a job that is already here before anything is fetched.
            while !queued.is_empty() && !idle.is_empty() {
                if let (Some(q), Some(lease)) = (queued.pop_front(), idle.pop()) {
                    jobs.spawn(q.start(shared.clone(), lease));
                }
            }
            let fetching = !(cfg.run_once && polled);
            let quiet =
                pullers.is_empty() && jobs.is_empty() && work_rx.is_empty() && queued.is_empty();
            if !fetching && quiet && sync_task.is_none() {
                tracing::info!("--run-once: one poll done");
                break;
            }
            let sync_idle =
                |pause: &Option<SyncPause>, task: &Option<SyncTask>, ws: &Option<WheelSync>| {
                    ws.is_some() && pause.is_none() && task.is_none()
                };
            if sync_idle(&sync_pause, &sync_task, &wheel_sync) && Instant::now() >= next_sync_at {
                next_sync_at = Instant::now() + cfg.wheel_sync.interval;
                if std::mem::take(&mut first_sync) {
                    sync_pause = Some(SyncPause::new(cfg.wheel_sync.max_pause));
                } else if let Some(ws) = wheel_sync.take() {
                    sync_task = Some(SyncTask::spawn(ws, SyncMode::Check));
                }
            }
            if let Some(pause) = sync_pause {
                if quiet && fetched_since_sync {
                    // No run anywhere: install now. The next attempt counts from this one.
                    sync_pause = None;
                    next_sync_at = Instant::now() + cfg.wheel_sync.interval;
                    if let Some(ws) = wheel_sync.take() {
                        fetched_since_sync = false;
                        sync_task = Some(SyncTask::spawn(ws, SyncMode::Full));
                    }
                } else if pause.overdue && !jobs.is_empty() && idle.len() + pool.idle_count() > 0 {
                    // (Pullers alone are waited for: they end within `poll_timeout`.)
                    sync_pause = None;
                    next_sync_at = Instant::now() + cfg.wheel_sync.interval;
                    tracing::info!(
                        runs = jobs.len(),
                        "wheel sync postponed by one interval: runs still in progress after {:?} while runners sit idle",
                        cfg.wheel_sync.max_pause
                    );
                }
            }
            let paused = sync_pause.is_some_and(|_| fetched_since_sync)
                || sync_task.as_ref().is_some_and(|t| t.mode == SyncMode::Full);
            if paused {
                // The install waits for idle runners in the pool (and restarts them).
                for lease in idle.drain(..) {
                    lease.give_back();
                }
            }
            // One pull request for what the idle runners and the prefetch room can take that
            // the open requests and the waiting jobs do not cover yet.
            if fetching && !paused {
                let room = idle.len() + prefetch.room(pool.size(), cfg.run_once);
                let covered = queued.len() + requested;
                if room > covered {
                    let n = room - covered;
                    requested += n;
                    polled = true;
                    fetched_since_sync = true;
                    pullers.spawn(pull(shared.clone(), consumers.clone(), n, work_tx.clone()));
                }
            }
            let hold_until = queued.iter().map(|q| q.hold_until).min();
            let sync_waits = sync_idle(&sync_pause, &sync_task, &wheel_sync);
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested: no new jobs; waiting for runs in progress");
                    break;
                }
                Some(d) = work_rx.recv() => {
                    requested = requested.saturating_sub(1);
                    match idle.pop() {
                        Some(lease) => {
                            jobs.spawn(job::process(shared.clone(), d, lease, None));
                        }
                        None => {
                            // Fetched ahead: read its run while the runners finish theirs.
                            let preread = job::preread(&shared, &d);
                            queued.push_back(Queued {
                                d,
                                preread,
                                hold_until: Instant::now() + PREFETCH_HOLD,
                            });
                        }
                    }
                }
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    match done {
                        Ok(ran) => prefetch.record(ran),
                        Err(err) => tracing::error!("a job task failed: {err}"),
                    }
                }
                Some(done) = pullers.join_next(), if !pullers.is_empty() => {
                    match done {
                        Ok(undelivered) => requested = requested.saturating_sub(undelivered),
                        Err(err) => {
                            tracing::error!("a job puller failed: {err}");
                            // Its count is unknown: nothing open is assumed once none is left.
                            if pullers.is_empty() {
                                requested = 0;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now)), if hold_until.is_some() => {
                    release_overdue(&mut queued).await;
                    prefetch.blocked = true;
                }
                done = SyncTask::join(&mut sync_task), if sync_task.is_some() => {
                    sync_task = None;
                    match done {
                        Ok((ws, outcome)) => {
                            wheel_sync = Some(ws);
                            if apply_sync_outcome(&shared.registry, &pool, outcome, true).await {
                                sync_pause = Some(SyncPause::new(cfg.wheel_sync.max_pause));
                            }
                        }
                        Err(err) => {
                            // A panic in the sync is a bug: the worker keeps serving without
                            // sync rather than failing the same way every interval.
                            tracing::error!("the wheel sync task failed; wheel sync is off until restart: {err}");
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_sync_at), if sync_waits => {}
                _ = tokio::time::sleep_until(sync_pause.map_or(next_sync_at, |p| p.deadline)),
                    if sync_pause.is_some_and(|p| !p.overdue) => {
                    if let Some(p) = sync_pause.as_mut() {
                        p.overdue = true;
                    }
                }
                leases = pool.take_idle_wait(), if (fetching && !paused) || !queued.is_empty() => {
                    // A runner came back: a job fetched ahead may be held again.
                    prefetch.blocked = false;
                    idle.extend(leases);
                }
            }
        }

        // Graceful stop.
        let _ = phase_tx.send(Phase::Draining);
        drop(work_tx);
        for lease in idle.drain(..) {
            lease.give_back();
        }
        for q in queued.drain(..) {
            // Fetched but not started: straight back to the queue.
            if let Err(err) = q.d.msg.ack_with(AckKind::Nak(None)).await {
                tracing::warn!("NAK of an unstarted job failed: {err}");
            }
        }
        let deadline = Instant::now() + cfg.stop_timeout;
        let mut aborted = false;
        if let Some(task) = sync_task.take_if(|t| t.mode == SyncMode::Check) {
            // Only reads: nothing to finish.
            task.handle.abort();
        }
        while !(pullers.is_empty() && jobs.is_empty() && work_rx.is_empty() && sync_task.is_none())
        {
            tokio::select! {
                done = SyncTask::join(&mut sync_task), if sync_task.is_some() => {
                    sync_task = None;
                    if let Ok((_, outcome)) = done {
                        // Report it; no runner restart: they are about to stop.
                        apply_sync_outcome(&shared.registry, &pool, outcome, false).await;
                    }
                }
                Some(d) = work_rx.recv() => {
                    // Fetched but not started: straight back to the queue.
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
                    if let Some(task) = sync_task.take() {
                        // Kills a pip still running (`kill_on_drop`); the manifest is not saved.
                        tracing::warn!("stopping the wheel sync in progress");
                        task.handle.abort();
                    }
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

/// A full wheel sync waiting for the runs in progress (module docs).
#[derive(Clone, Copy, Debug)]
struct SyncPause {
    /// After this, fetching resumes as soon as a runner is idle.
    deadline: Instant,
    overdue: bool,
}

impl SyncPause {
    fn new(max_pause: Duration) -> SyncPause {
        SyncPause {
            deadline: Instant::now() + max_pause,
            overdue: false,
        }
    }
}

/// A wheel sync attempt in the background; it owns the [`WheelSync`] while it runs.
struct SyncTask {
    handle: JoinHandle<(WheelSync, SyncOutcome)>,
    mode: SyncMode,
}

impl SyncTask {
    fn spawn(mut ws: WheelSync, mode: SyncMode) -> SyncTask {
        let handle = tokio::spawn(async move {
            let outcome = ws.sync_once(mode).await;
            (ws, outcome)
        });
        SyncTask { handle, mode }
    }

    /// Wait for the task in `task` (pending forever when there is none).
    async fn join(
        task: &mut Option<SyncTask>,
    ) -> Result<(WheelSync, SyncOutcome), tokio::task::JoinError> {
        match task {
            Some(t) => (&mut t.handle).await,
            None => std::future::pending().await,
        }
    }
}

/// Report a sync attempt in the registry record and, when it touched the interpreter's
/// packages and `restart` says so, restart the idle runners (all of them: installs happen only
/// between runs). Returns true when a check found changes to make (a full attempt is then
/// due).
async fn apply_sync_outcome(
    registry: &RegistryHandle,
    pool: &RunnerPool,
    outcome: SyncOutcome,
    restart: bool,
) -> bool {
    let mut needs_changes = false;
    match outcome.result {
        Ok(Attempt::NeedsChanges) => {
            tracing::debug!("wheel sync: the registry changed; installing between runs");
            needs_changes = true;
        }
        Ok(Attempt::Done(status)) => {
            if status.updated_count > 0 || status.removed_count > 0 {
                tracing::info!(
                    updated = ?status.updated_wheels,
                    removed = ?status.removed_wheels,
                    selected = status.selected_count,
                    "wheel sync done"
                );
            } else {
                tracing::debug!(selected = status.selected_count, "wheel sync: up to date");
            }
            registry.set_wheel_sync(*status);
        }
        Err(error) => {
            tracing::error!("wheel sync failed: {error}");
            let previous = registry
                .wheel_sync()
                .unwrap_or_else(|| WheelSyncStatus::initial(true));
            registry.set_wheel_sync(previous.failed(outcome.attempted_at, &error));
        }
    }
    if outcome.env_changed && restart {
        pool.restart_idle().await;
    }
    needs_changes
}

/// Fetch up to `n` jobs (see the module docs) and hand each message to the dispatcher. Returns
/// how many of the `n` did not come.
async fn pull(
    sh: Arc<Shared>,
    consumers: Arc<Vec<TagConsumer>>,
    n: usize,
    work: mpsc::UnboundedSender<Delivery>,
) -> usize {
    let single = consumers.len() == 1;
    let expires = if single {
        sh.config.poll_timeout
    } else {
        (sh.config.poll_timeout / consumers.len() as u32)
            .clamp(Duration::from_millis(50), Duration::from_millis(200))
    }
    .max(Duration::from_millis(10));
    let mut left = n;
    for tc in consumers.iter() {
        if left == 0 || *sh.phase.borrow() != Phase::Running {
            break;
        }
        let got = fetch_batch(&sh, tc, left, expires, &work).await;
        left -= got;
        if got > 0 {
            // Start over from the first tag with the room left.
            break;
        }
    }
    left
}

/// One pull request on `tc` for `n` messages. Returns how many came.
async fn fetch_batch(
    sh: &Shared,
    tc: &TagConsumer,
    n: usize,
    expires: Duration,
    work: &mpsc::UnboundedSender<Delivery>,
) -> usize {
    let batch = {
        let consumer = tc.consumer.lock().await;
        consumer
            .batch()
            .max_messages(n)
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
            return 0;
        }
    };
    let mut got = 0;
    while let Some(item) = batch.next().await {
        match item {
            Ok(msg) => {
                if got >= n {
                    // Cannot happen: the pull request asked for n messages.
                    tracing::error!(tag = %tc.tag, "more jobs delivered than requested; handing it back");
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    continue;
                }
                got += 1;
                if *sh.phase.borrow() != Phase::Running {
                    if let Err(err) = msg.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!("NAK of a job fetched while stopping failed: {err}");
                    }
                    continue;
                }
                if let Err(mpsc::error::SendError(d)) = work.send(Delivery::new(msg, tc)) {
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

/// How long a job fetched ahead waits for a runner before it goes back to the queue for
/// another worker (a run turned out long).
const PREFETCH_HOLD: Duration = Duration::from_millis(500);

/// Jobs are fetched ahead only while the runs of this worker are short: on average (the last
/// runs weighted most) at most this long.
const PREFETCH_MAX_AVG_RUN: Duration = Duration::from_millis(100);

/// When to fetch jobs ahead of a free runner (module docs).
#[derive(Debug)]
struct Prefetch {
    enabled: bool,
    /// Moving average of how long the runner took for the last runs (seconds).
    avg_run: Option<f64>,
    /// A job fetched ahead had to be handed back: none again until a runner comes back.
    blocked: bool,
}

impl Prefetch {
    fn new(enabled: bool) -> Self {
        Prefetch {
            enabled,
            avg_run: None,
            blocked: false,
        }
    }

    /// A job ended; `ran` is how long its runner took, when it ran to its end.
    fn record(&mut self, ran: Option<Duration>) {
        if let Some(ran) = ran {
            let x = ran.as_secs_f64();
            self.avg_run = Some(match self.avg_run {
                Some(avg) => avg * 0.8 + x * 0.2,
                None => x,
            });
        }
    }

    /// How many jobs may wait for a runner now (besides one per idle runner).
    fn room(&self, runners: usize, run_once: bool) -> usize {
        let short = self
            .avg_run
            .is_some_and(|a| a <= PREFETCH_MAX_AVG_RUN.as_secs_f64());
        if self.enabled && short && !self.blocked && !run_once {
            runners
        } else {
            0
        }
    }
}

/// A job fetched ahead, waiting for a runner.
struct Queued {
    d: Delivery,
    preread: job::Preread,
    /// Handed back to the queue if no runner takes it by then.
    hold_until: Instant,
}

impl Queued {
    fn start(self, sh: Arc<Shared>, lease: Lease) -> impl Future<Output = Option<Duration>> {
        let mut d = self.d;
        // The worker's own time for the run starts now (the wait was for a runner).
        d.received = Instant::now();
        job::process(sh, d, lease, self.preread)
    }
}

/// Hand the jobs whose hold time passed back to the queue (NAK without delay, so another
/// worker takes them at once). A job at its last delivery is kept instead (a NAK would use up
/// its last delivery): its ack wait is renewed and it waits on.
async fn release_overdue(queued: &mut VecDeque<Queued>) {
    let now = Instant::now();
    let mut waiting = VecDeque::with_capacity(queued.len());
    for mut q in queued.drain(..) {
        if q.hold_until > now {
            waiting.push_back(q);
            continue;
        }
        let delivered = q.d.delivered().unwrap_or(1);
        if q.d.max_deliver > 0 && delivered >= q.d.max_deliver {
            if let Err(err) = q.d.msg.ack_with(AckKind::Progress).await {
                tracing::warn!("in-progress ACK of a waiting job failed: {err}");
            }
            q.hold_until = now + q.d.ack_progress.unwrap_or(q.d.ack_wait / 2);
            waiting.push_back(q);
            continue;
        }
        if let Some(read) = q.preread.take() {
            read.abort();
        }
        tracing::debug!(
            subject = %q.d.msg.subject,
            "a job fetched ahead waited {PREFETCH_HOLD:?} for a runner; handed back for another worker"
        );
        if let Err(err) = q.d.msg.ack_with(AckKind::Nak(None)).await {
            tracing::warn!("NAK of a job fetched ahead failed: {err}");
        }
    }
    *queued = waiting;
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
