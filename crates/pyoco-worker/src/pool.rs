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
//! Runners leave the pool as [`Lease`]s. A lease dropped without a decision (a panic, an
//! early return) kills its runner and starts a replacement, so the pool never shrinks and never
//! reuses a runner in an unknown state.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
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
    idle: Mutex<Vec<Runner>>,
    /// Signalled whenever a runner becomes idle.
    returned: Notify,
    closed: AtomicBool,
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
                idle: Mutex::new(runners),
                returned: Notify::new(),
                closed: AtomicBool::new(false),
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
            .map(|runner| Lease {
                runner: Some(runner),
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
            .map(|v| v.iter().map(Runner::pid).collect())
            .unwrap_or_default()
    }

    /// Return a runner after a run. A runner that is no longer alive is replaced.
    fn give_back(&self, mut runner: Runner) {
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
        runner.drain_events();
        self.inner.idle.lock().expect("pool lock").push(runner);
        // Waiters register by creating their `Notified` before looking at `idle`.
        self.inner.returned.notify_waiters();
    }

    /// Kill `runner` (if it still runs) and start a new one in the background.
    fn replace(&self, runner: Runner) {
        runner.kill();
        drop(runner);
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
            let mut delay = Duration::from_millis(500);
            loop {
                if pool.inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                match Runner::spawn(&pool.inner.spec).await {
                    Ok(runner) => {
                        tracing::info!(pid = runner.pid(), "replacement pyoco runner ready");
                        pool.give_back(runner);
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
            self.pool.give_back(r);
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
