//! Closed-loop HTTP load: `n` requests spread over `c` concurrent callers on one keep-alive pool.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn stats_ms(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return Stats::default();
    }
    Stats {
        n: v.len(),
        p50: pct(&v, 50.0),
        p99: pct(&v, 99.0),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        max: v[v.len() - 1],
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[derive(Debug)]
pub struct LoadResult<T> {
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Stats,
    pub outputs: Vec<T>,
}

impl<T> LoadResult<T> {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `op(i)` for `i in 0..n` with `concurrency` callers. Gives up (error) after `limit`.
pub async fn run<T, F, Fut>(
    n: usize,
    concurrency: usize,
    limit: Duration,
    op: F,
) -> Result<LoadResult<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut outs = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(v) => {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        outs.push(v);
                    }
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        // A dead server should not make us spin through n failures at full speed.
                        if errors > 50 && errors > lat.len() {
                            next.store(n, Ordering::Relaxed);
                        }
                    }
                }
            }
            (lat, outs, errors, first_error)
        }));
    }
    let joined = match tokio::time::timeout(limit, futures::future::join_all(tasks)).await {
        Ok(j) => j,
        Err(_) => {
            next.store(n, Ordering::Relaxed);
            bail!(
                "load of {n} requests at concurrency {concurrency} did not finish within {limit:?}"
            );
        }
    };
    let elapsed = start.elapsed();
    let mut lat = Vec::with_capacity(n);
    let mut outputs = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    for j in joined {
        let (l, o, e, f) = j.map_err(|e| anyhow!("load task panicked: {e}"))?;
        lat.extend(l);
        outputs.extend(o);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(LoadResult {
        ok: lat.len(),
        errors,
        first_error,
        elapsed,
        latency: stats_ms(lat),
        outputs,
    })
}
