//! A fixed number of warm runners, one per concurrent run.
//!
//! Starting Python and importing pyoco takes ~80 ms; a run on a warm runner takes ~1 ms. So the
//! worker keeps `concurrency` runners alive and lends one to each job. A job gives its runner
//! back when the run is over ([`RunnerPool::give_back`]); a runner that died or had to be killed
//! is replaced in the background ([`RunnerPool::replace`]), retrying with backoff while the
//! interpreter cannot start, so the worker keeps serving with the runners it still has.
//!
//! The number of idle runners is also the worker's capacity: it fetches at most that many jobs.
//!
//! After a wheel sync changed the interpreter's packages, [`RunnerPool::restart_idle`] swaps
//! every idle runner for a fresh one, so the next run imports the new code (0.5.1 kept modules
//! imported by earlier runs, §14-11). A busy runner is never killed for that: it belongs to an
//! older *generation* and is retired when its run gives it back.
//!
//! Runners leave the pool as [`Lease`]s. A lease dropped without a decision (a panic, an
//! early return) kills its runner and starts a replacement, so the pool never shrinks and never
//! reuses a runner in an unknown state.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::runner::{Runner, RunnerError, RunnerSpec};

/// How long a runner may take to exit after `shutdown` before it is killed.
pub const RUNNER_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A pool of warm runners. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RunnerPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: RunnerSpec,
    size: usize,
    idle: Mutex<Vec<Pooled>>,
    /// Signalled whenever a runner becomes idle.
    returned: Notify,
    closed: AtomicBool,
    /// Bumped by [`RunnerPool::restart_idle`]: runners of an older generation are retired.
    generation: AtomicU64,
}

/// A runner and the pool generation it was started in.
#[derive(Debug)]
struct Pooled {
    runner: Runner,
    generation: u64,
}

impl RunnerPool {
    /// Start `size` runners (at least one) and wait until all are ready. Fails with the first
    /// runner's error, e.g. an interpreter without pyoco.
    pub async fn start(spec: RunnerSpec, size: usize) -> Result<RunnerPool, RunnerError> {
        let size = size.max(1);
        let started = futures::future::join_all((0..size).map(|_| Runner::spawn(&spec))).await;
        let mut runners = Vec::with_capacity(size);
        let mut first_err = None;
        for r in started {
            match r {
                Ok(r) => runners.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(err) = first_err {
            for r in runners {
                r.kill();
            }
            return Err(err);
        }
        if let Some(r) = runners.first() {
            tracing::info!(
                runners = size,
                python = %spec.python.display(),
                python_version = %r.info().python,
                pyoco = %r.info().pyoco,
                "pyoco runners ready"
            );
        }
        Ok(RunnerPool {
            inner: Arc::new(Inner {
                spec,
                size,
                idle: Mutex::new(
                    runners
                        .into_iter()
                        .map(|runner| Pooled {
                            runner,
                            generation: 0,
                        })
                        .collect(),
                ),
                returned: Notify::new(),
                closed: AtomicBool::new(false),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// Number of runners the pool keeps (its concurrency).
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The spec runners are started with.
    pub fn spec(&self) -> &RunnerSpec {
        &self.inner.spec
    }

    /// Take every idle runner now (maybe none).
    pub fn take_idle(&self) -> Vec<Lease> {
        let mut idle = self.inner.idle.lock().expect("pool lock");
        std::mem::take(&mut *idle)
            .into_iter()
            .map(|p| Lease {
                runner: Some(p.runner),
                generation: p.generation,
                pool: self.clone(),
            })
            .collect()
    }

    /// Wait until at least one runner is idle and take every idle runner.
    pub async fn take_idle_wait(&self) -> Vec<Lease> {
        loop {
            let notified = self.inner.returned.notified();
            let got = self.take_idle();
            if !got.is_empty() {
                return got;
            }
            notified.await;
        }
    }

    /// Number of runners idle right now.
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Process ids of the idle runners.
    pub fn idle_pids(&self) -> Vec<u32> {
        self.inner
            .idle
            .lock()
            .map(|v| v.iter().map(|p| p.runner.pid()).collect())
            .unwrap_or_default()
    }

    /// Replace every idle runner with a freshly started one (the new ones are started while
    /// the old ones shut down) and retire the busy ones when they come back. Returns how many
    /// idle runners were replaced. A runner that fails to start is replaced in the background
    /// like a dead one.
    pub async fn restart_idle(&self) -> usize {
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let old: Vec<Pooled> = std::mem::take(&mut *self.inner.idle.lock().expect("pool lock"));
        let n = old.len();
        let spec = &self.inner.spec;
        let (fresh, ()) = futures::future::join(
            futures::future::join_all((0..n).map(|_| Runner::spawn(spec))),
            async {
                futures::future::join_all(
                    old.into_iter()
                        .map(|p| p.runner.shutdown(RUNNER_SHUTDOWN_GRACE)),
                )
                .await;
            },
        )
        .await;
        for started in fresh {
            match started {
                Ok(runner) => self.give_back(runner, generation),
                Err(err) => {
                    tracing::error!("restarting a pyoco runner failed, retrying: {err}");
                    self.start_replacement();
                }
            }
        }
        tracing::info!(runners = n, "pyoco runners restarted");
        n
    }

    /// Return a runner after a run. A runner that is no longer alive is replaced; one from
    /// before the last [`RunnerPool::restart_idle`] is shut down and replaced.
    fn give_back(&self, mut runner: Runner, generation: u64) {
        if !runner.is_alive() {
            tracing::warn!(
                pid = runner.pid(),
                exit = runner.exit_status().unwrap_or_default(),
                "pyoco runner is gone; starting a new one"
            );
            self.replace(runner);
            return;
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            tokio::spawn(runner.shutdown(RUNNER_SHUTDOWN_GRACE));
            return;
        }
        if generation != self.inner.generation.load(Ordering::SeqCst) {
            tracing::debug!(
                pid = runner.pid(),
                "retiring a pyoco runner started before a restart"
            );
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(runner.shutdown(RUNNER_SHUTDOWN_GRACE));
            }
            self.start_replacement();
            return;
        }
        runner.drain_events();
        self.inner
            .idle
            .lock()
            .expect("pool lock")
            .push(Pooled { runner, generation });
        // Waiters register by creating their `Notified` before looking at `idle`.
        self.inner.returned.notify_waiters();
    }

    /// Kill `runner` (if it still runs) and start a new one in the background.
    fn replace(&self, runner: Runner) {
        runner.kill();
        drop(runner);
        self.start_replacement();
    }

    /// Start a runner in the background and add it to the pool when ready.
    fn start_replacement(&self) {
        if self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        // No runtime (dropped during runtime shutdown): nothing to replace it for.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        // A tokio task runs on a runtime worker thread: safe for PR_SET_PDEATHSIG (runner.rs).
        rt.spawn(async move {
            // Taken before the start: a restart meanwhile makes this runner stale.
            let generation = pool.inner.generation.load(Ordering::SeqCst);
            let mut delay = Duration::from_millis(500);
            loop {
                if pool.inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                match Runner::spawn(&pool.inner.spec).await {
                    Ok(runner) => {
                        tracing::info!(pid = runner.pid(), "replacement pyoco runner ready");
                        pool.give_back(runner, generation);
                        return;
                    }
                    Err(err) => {
                        tracing::error!(
                            "starting a replacement pyoco runner failed, retrying in {delay:?}: {err}"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    /// Stop handing out runners and shut the idle ones down (`shutdown`, then kill after
    /// [`RUNNER_SHUTDOWN_GRACE`]). Runners given back later are shut down as they come.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let idle = self.take_idle();
        futures::future::join_all(idle.into_iter().map(Lease::shutdown)).await;
        self.inner.returned.notify_waiters();
    }
}

/// A runner lent out by the pool. Give it back ([`Lease::give_back`]) when the run is over, or
/// have it replaced ([`Lease::replace`]) when it was killed or is in an unknown state; dropping
/// the lease replaces it.
#[derive(Debug)]
pub struct Lease {
    runner: Option<Runner>,
    generation: u64,
    pool: RunnerPool,
}

impl Lease {
    /// The runner.
    pub fn runner(&mut self) -> &mut Runner {
        self.runner
            .as_mut()
            .expect("a lease holds its runner until consumed")
    }

    /// Return the runner to the pool (replaced instead if it is not alive).
    pub fn give_back(mut self) {
        if let Some(r) = self.runner.take() {
            self.pool.give_back(r, self.generation);
        }
    }

    /// Kill the runner and have the pool start a new one.
    pub fn replace(mut self) {
        if let Some(r) = self.runner.take() {
            self.pool.replace(r);
        }
    }

    async fn shutdown(mut self) {
        if let Some(r) = self.runner.take() {
            r.shutdown(RUNNER_SHUTDOWN_GRACE).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.runner.take() {
            self.pool.replace(r);
        }
    }
}
