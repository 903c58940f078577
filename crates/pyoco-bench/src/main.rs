//! `pyoco-bench`: the Rust gateway and worker against Python pyoco-server 0.5.1, side by side,
//! in one invocation on one machine. See docs/benchmarks.md for what each number means.

mod browser;
mod dashboard;
mod index_scale;
mod load;
mod procs;
mod report;
mod scale;
mod schedules;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use pyoco_natsd::{NatsServerConfig, NatsSupervisor, RestartPolicy};
use serde_json::{json, Value};

use procs::{ChildProc, Spawn};
use report::SystemResult;
use watch::RunWatcher;

const TASKS_PY: &str = "\
def a(x=1):
    return x + 1


def b(a):
    return a * 2


def ticks(n=40, every=0.05):
    import time
    for i in range(n):
        print('tick %d' % i)
        time.sleep(every)
    return n
";

/// The floor row: pyoco's `Engine` running the bench flow in a loop (`--floor-seconds`).
const FLOOR_PY: &str = include_str!("floor.py");

/// Row 16b (Rust only): a task printing a line every 50 ms, followed through
/// `GET /runs/{id}/logs/watch`.
const LOG_FLOW_YAML: &str = "\
version: 1
flow:
  graph: \"ticks\"
tasks:
  ticks:
    callable: \"bench_tasks:ticks\"
";

const FLOW_YAML: &str = "\
version: 1
flow:
  graph: \"a >> b\"
  defaults:
    x: 1
tasks:
  a:
    callable: \"bench_tasks:a\"
  b:
    callable: \"bench_tasks:b\"
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Only {
    Python,
    Rust,
}

/// Benchmark the Rust pyoco-server against Python pyoco-server 0.5.1, side by side.
#[derive(Parser, Debug, Clone)]
#[command(name = "pyoco-bench", version)]
struct Args {
    /// Run only one system.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Smoke run: small request counts (about a minute for both systems).
    #[arg(long)]
    quick: bool,
    /// Runs submitted with `POST /runs/yaml` before the HTTP phases (K): the first stored-run
    /// count `GET /runs?limit=100` and `GET /metrics` are measured at, and the ids
    /// `GET /runs/{id}` reads. Default 2000 (200 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Further stored-run counts (comma-separated) for `GET /runs?limit=100` and `GET /metrics`,
    /// reached by writing PENDING snapshots straight into the runs KV bucket. Default
    /// 6000,10000 (1000 with --quick).
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<usize>>,
    /// Python only: measure `GET /runs` and `GET /metrics` only up to this many stored runs
    /// (0.5.1 reads every snapshot per request; above this the runs are still written, so both
    /// systems hold the same runs in the later phases). 0 = no limit.
    #[arg(long, default_value_t = 6000)]
    python_list_max: usize,
    /// Wheel-history records written straight into the `pyoco_wheel_history` KV bucket for the
    /// `GET /wheels/history?limit=100` row. Default 10000 (1000 with --quick); 0 = no such row.
    #[arg(long)]
    history_records: Option<usize>,
    /// Python only: measure `GET /wheels/history` only with up to this many history records
    /// (0.5.1 reads every record per request, about 2.5 s at 10,000 on a quiet machine; above
    /// this the records are still written). 0 = no limit.
    #[arg(long, default_value_t = 10000)]
    python_history_max: usize,
    /// Snapshot changes timed on one `GET /runs/{id}/watch` stream (after 3 warm-up changes).
    /// Default 50 (10 with --quick).
    #[arg(long)]
    sse_changes: Option<usize>,
    /// `GET /runs/{id}/watch` streams held open at once on one run for the watchers row
    /// (gateway RSS, one change fanned out to all). Default 10000 (1000 with --quick); 0 = no
    /// such row.
    #[arg(long)]
    watchers: Option<usize>,
    /// Python only: open at most this many watchers (0.5.1 creates a JetStream consumer per
    /// stream). 0 = no limit.
    #[arg(long, default_value_t = 2000)]
    python_watchers_max: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sequential end-to-end runs measured (after 10 warm-up runs). Default 200 (30 with --quick).
    #[arg(long)]
    e2e_runs: Option<usize>,
    /// Runs per throughput batch. Default 500 (100 with --quick).
    #[arg(long)]
    tput_runs: Option<usize>,
    /// Gateway / worker start measurements (median reported). Default 3.
    #[arg(long, default_value_t = 3)]
    start_reps: usize,
    /// Venv of Python pyoco-server 0.5.1 (its bin/ has pyoco-server, pyoco-worker).
    #[arg(long, env = "PYOCO_BENCH_PYTHON_VENV")]
    python_venv: Option<PathBuf>,
    /// Directory with the Rust `pyoco-server` and `pyoco-worker` binaries. Default: the
    /// directory of this executable, else <workspace>/target/release.
    #[arg(long, env = "PYOCO_BENCH_RUST_BIN_DIR")]
    rust_bin_dir: Option<PathBuf>,
    /// nats-server binary. Default: $PYOCO_NATS_SERVER_BIN, else <data dir>/bin/nats-server, else PATH.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Python interpreter for the Rust worker's runner (sets PYOCO_PYTHON). Default: the
    /// worker's own default (<data dir>/venv/bin/python).
    #[arg(long)]
    rust_python: Option<PathBuf>,
    /// Keep the temporary directories (logs, stores) instead of deleting them.
    #[arg(long)]
    keep_tmp: bool,
    /// Measure each system this many times, interleaved (P R, R P, …); the table shows the
    /// median of each number over the rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Give up on the whole benchmark after this many minutes.
    #[arg(long, default_value_t = 30)]
    max_minutes: u64,
    /// Also measure the web dashboard each gateway serves at `/` in headless Chromium (needs
    /// chromium and chromedriver: bash scripts/setup.sh --with-browser), on a fresh
    /// nats-server and gateway holding --dashboard-runs finished runs.
    #[arg(long)]
    dashboard: bool,
    /// Measure the web dashboard only (implies --dashboard; none of the other phases).
    #[arg(long)]
    dashboard_only: bool,
    /// Finished runs stored for the dashboard measurement (plus one running run). Default
    /// 10000 (1000 with --quick).
    #[arg(long)]
    dashboard_runs: Option<usize>,
    /// Fresh page loads timed for "navigation → first runs rendered" (median reported).
    /// Default 5 (3 with --quick).
    #[arg(long)]
    dashboard_loads: Option<usize>,
    /// State changes written to KV and timed until the page shows them (median and max
    /// reported). Default 5 (3 with --quick).
    #[arg(long)]
    dashboard_changes: Option<usize>,
    /// Only the worker phases (end-to-end latency, throughput, the floor row, the concurrency
    /// levels) on a fresh gateway: none of the HTTP, list, watch or API key phases.
    #[arg(long)]
    worker_only: bool,
    /// `--concurrency` levels of one Rust worker measured for the throughput rows (1 is the
    /// default worker of the 1-worker row).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    concurrency_levels: Vec<usize>,
    /// Seconds the floor row runs pyoco's Engine in a loop (0 = no floor row).
    #[arg(long, default_value_t = 3.0)]
    floor_seconds: f64,
    /// Measure only how late scheduled runs are (Rust only): a cron schedule firing every
    /// second until this many of its runs completed; dispatch and start lateness p50/p99.
    #[arg(long, value_name = "RUNS")]
    schedules: Option<usize>,
    /// Measure only the gateway's run index at scale (Rust only): this many finished runs
    /// written into the runs bucket, then a gateway restart; reports the time until the index
    /// is complete, the gateway's RSS and `GET /runs?limit=100` latency.
    #[arg(long, value_name = "RUNS")]
    index_scale: Option<usize>,
}

/// Request counts for one invocation.
#[derive(Debug, Clone)]
struct Plan {
    k: usize,
    /// Stored-run counts above `k` for the list / metrics measurements, ascending.
    levels: Vec<usize>,
    post: [(usize, usize); 3],
    get: [(usize, usize); 3],
    /// Sequential `GET /runs` / `GET /metrics` samples per count: at least `.0`, at most `.1`,
    /// none started after `.2` (once the minimum is reached).
    samples: (usize, usize, Duration),
    sse_warmup: usize,
    sse_changes: usize,
    watchers: usize,
    python_list_max: Option<usize>,
    /// Wheel-history records stored for `GET /wheels/history?limit=100` (0 = not measured).
    history: usize,
    python_history_max: Option<usize>,
    e2e_warmup: usize,
    e2e_runs: usize,
    tput: usize,
    start_reps: usize,
    /// The dashboard measurement (`--dashboard`), if asked for.
    dashboard: Option<dashboard::DashPlan>,
    /// `--dashboard-only`: none of the other phases.
    dashboard_only: bool,
    /// `--worker-only`: the worker phases only.
    worker_only: bool,
    /// `--concurrency-levels` (sorted, without 0).
    concurrency_levels: Vec<usize>,
    /// `--floor-seconds`.
    floor_seconds: f64,
    /// Python for the floor row (the Rust worker's runner interpreter).
    floor_python: PathBuf,
}

impl Plan {
    fn from(a: &Args) -> Plan {
        let q = a.quick;
        let k = a.runs.unwrap_or(if q { 200 } else { 2000 });
        let mut levels: Vec<usize> = a
            .levels
            .clone()
            .unwrap_or_else(|| if q { vec![1000] } else { vec![6000, 10000] })
            .into_iter()
            .filter(|l| *l > k)
            .collect();
        levels.sort_unstable();
        levels.dedup();
        Plan {
            k,
            levels,
            post: if q {
                [(1, 50), (8, 200), (32, 400)]
            } else {
                [(1, 500), (8, 2000), (32, 4000)]
            },
            get: if q {
                [(1, 200), (8, 500), (32, 1000)]
            } else {
                [(1, 2000), (8, 5000), (32, 10000)]
            },
            samples: if q {
                (3, 10, Duration::from_secs(3))
            } else {
                (5, 30, Duration::from_secs(10))
            },
            sse_warmup: 3,
            sse_changes: a.sse_changes.unwrap_or(if q { 10 } else { 50 }).max(1),
            watchers: a.watchers.unwrap_or(if q { 1000 } else { 10000 }),
            python_list_max: (a.python_list_max > 0).then_some(a.python_list_max),
            history: a.history_records.unwrap_or(if q { 1000 } else { 10000 }),
            python_history_max: (a.python_history_max > 0).then_some(a.python_history_max),
            e2e_warmup: if q { 3 } else { 10 },
            e2e_runs: a.e2e_runs.unwrap_or(if q { 30 } else { 200 }),
            tput: a.tput_runs.unwrap_or(if q { 100 } else { 500 }),
            start_reps: a.start_reps.max(1),
            dashboard: (a.dashboard || a.dashboard_only).then(|| dashboard::DashPlan {
                runs: a.dashboard_runs.unwrap_or(if q { 1000 } else { 10000 }),
                loads: a.dashboard_loads.unwrap_or(if q { 3 } else { 5 }).max(1),
                changes: a.dashboard_changes.unwrap_or(if q { 3 } else { 5 }).max(1),
                idle: Duration::from_secs(if q { 10 } else { 30 }),
            }),
            dashboard_only: a.dashboard_only,
            worker_only: a.worker_only,
            concurrency_levels: {
                let mut l: Vec<usize> = a
                    .concurrency_levels
                    .iter()
                    .copied()
                    .filter(|c| *c > 0)
                    .collect();
                l.sort_unstable();
                l.dedup();
                l
            },
            floor_seconds: a.floor_seconds.max(0.0),
            floor_python: a
                .rust_python
                .clone()
                .unwrap_or_else(|| data_dir().join("venv/bin/python")),
        }
    }
    /// Every stored-run count the list / metrics measurements run at.
    fn all_levels(&self) -> Vec<usize> {
        std::iter::once(self.k)
            .chain(self.levels.iter().copied())
            .collect()
    }
}

const POST_WARMUP: usize = 20;

fn main() -> ExitCode {
    let args = Args::parse();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        procs::kill_all_registered();
        prev(info);
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pyoco-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.max_minutes.max(1) * 60);
    let code = rt.block_on(async move {
        tokio::select! {
            r = run(args) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => { eprintln!("pyoco-bench: ERROR: {e:#}"); ExitCode::FAILURE }
            },
            s = shutdown_signal() => {
                eprintln!("pyoco-bench: {s}: stopping every process it started");
                ExitCode::from(130)
            }
            _ = tokio::time::sleep(limit) => {
                eprintln!("pyoco-bench: ERROR: gave up after --max-minutes {}; stopping every process it started", limit.as_secs() / 60);
                ExitCode::FAILURE
            }
        }
    });
    // The run future (and with it every child guard and nats supervisor) is dropped by now.
    procs::kill_all_registered();
    rt.shutdown_timeout(Duration::from_secs(3));
    code
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    let mut hup = signal(SignalKind::hangup()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
        _ = term.recv() => "terminated (SIGTERM)",
        _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => "hangup (SIGHUP)",
    }
}

fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PYOCO_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        if x.is_absolute() {
            return x.join("pyoco-server");
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".local/share/pyoco-server")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

struct SystemSpec {
    name: &'static str,
    gateway: PathBuf,
    worker: PathBuf,
    /// Rust worker: accepts `--concurrency N`.
    concurrency_flag: bool,
    extra_worker_env: Vec<(String, String)>,
    /// `GET /runs` / `GET /metrics` measured only up to this many stored runs.
    list_max: Option<usize>,
    /// `GET /wheels/history` measured only up to this many history records.
    history_max: Option<usize>,
    /// Watch streams opened at most in the watchers row.
    watchers_max: Option<usize>,
}

async fn run(args: Args) -> Result<()> {
    let t_all = Instant::now();
    let plan = Plan::from(&args);
    let dd = data_dir();
    let nats_bin = pyoco_natsd::find_nats_server(args.nats_server.as_deref(), Some(&dd))
        .context("no nats-server found (pass --nats-server)")?;
    let nats_version = pyoco_natsd::nats_server_version(&nats_bin)
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let venv = args
        .python_venv
        .clone()
        .unwrap_or_else(|| dd.join("venv-pyoco-server-0.5.1"));
    // Absolute: the processes are started from their scratch directories.
    let rust_dir = args
        .rust_bin_dir
        .as_ref()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()))
        .unwrap_or_else(|| {
            let exe_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            match exe_dir {
                Some(d) if d.join("pyoco-server").exists() => d,
                _ => workspace_root().join("target/release"),
            }
        });

    if let Some(n) = args.schedules {
        let result = schedules::run(
            &rust_dir,
            &nats_bin,
            args.rust_python.as_deref(),
            n.max(1),
            args.keep_tmp,
        )
        .await?;
        if let Some(out) = &args.out {
            std::fs::write(
                out,
                serde_json::to_vec_pretty(&json!({ "schedules": result }))?,
            )?;
        }
        return Ok(());
    }
    if let Some(n) = args.index_scale {
        let result = index_scale::run(&rust_dir, &nats_bin, n.max(1), args.keep_tmp).await?;
        if let Some(out) = &args.out {
            std::fs::write(
                out,
                serde_json::to_vec_pretty(&json!({ "index_scale": result }))?,
            )?;
        }
        return Ok(());
    }
    eprintln!(
        "pyoco-bench: plan: stored runs {:?} (K={} by POST, the rest straight into KV; Python lists up to {}), wheel-history records {} (Python up to {}), SSE {} changes, POST {:?}, GET {:?}, e2e {}+{} warm-up, throughput {} runs{}",
        plan.all_levels(),
        plan.k,
        plan.python_list_max.map_or("any".to_string(), |m| m.to_string()),
        plan.history,
        plan.python_history_max.map_or("any".to_string(), |m| m.to_string()),
        plan.sse_changes,
        plan.post,
        plan.get,
        plan.e2e_runs,
        plan.e2e_warmup,
        plan.tput,
        if args.quick { " (--quick)" } else { "" }
    );
    if let Some(d) = &plan.dashboard {
        eprintln!(
            "pyoco-bench: dashboard{}: {} finished runs + 1 running, {} page loads, {} changes, idle {:.0} s",
            if plan.dashboard_only { " only" } else { "" },
            d.runs,
            d.loads,
            d.changes,
            d.idle.as_secs_f64()
        );
    }
    eprintln!(
        "pyoco-bench: nats-server {} ({nats_version})",
        nats_bin.display()
    );

    // Which systems, and whether each can run at all.
    let mut specs: Vec<Result<SystemSpec, String>> = Vec::new();
    let want = |o: Only| args.only.is_none() || args.only == Some(o);
    if want(Only::Python) {
        let gw = venv.join("bin/pyoco-server");
        let wk = venv.join("bin/pyoco-worker");
        specs.push(if !gw.exists() || !wk.exists() {
            Err(format!(
                "python: skipped: Python pyoco-server 0.5.1 not found in {} (bash scripts/setup.sh --with-interop, or --python-venv)",
                venv.display()
            ))
        } else {
            Ok(SystemSpec {
                name: "python",
                gateway: gw,
                worker: wk,
                concurrency_flag: false,
                extra_worker_env: vec![],
                list_max: plan.python_list_max,
                history_max: plan.python_history_max,
                watchers_max: (args.python_watchers_max > 0).then_some(args.python_watchers_max),
            })
        });
    }
    if want(Only::Rust) {
        let gw = rust_dir.join("pyoco-server");
        let wk = rust_dir.join("pyoco-worker");
        specs.push(if !gw.exists() {
            Err(format!(
                "rust: skipped: {} does not exist (cargo build --release -p pyoco-cli)",
                gw.display()
            ))
        } else {
            let mut env = vec![];
            if let Some(p) = &args.rust_python {
                env.push(("PYOCO_PYTHON".to_string(), p.display().to_string()));
            }
            Ok(SystemSpec {
                name: "rust",
                gateway: gw,
                worker: wk,
                concurrency_flag: true,
                extra_worker_env: env,
                list_max: None,
                history_max: None,
                watchers_max: None,
            })
        });
    }

    for b in ["pyoco-server", "pyoco-worker"] {
        let p = rust_dir.join(b);
        if let Some(age) = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
        {
            eprintln!(
                "pyoco-bench: rust {b}: {} (built {:.0} min ago)",
                p.display(),
                age.as_secs_f64() / 60.0
            );
        }
    }

    let load1 = loadavg1();
    if load1 > 0.7 {
        eprintln!(
            "pyoco-bench: WARNING: 1-minute load average is {load1:.2} before the start: something else is using the CPU; absolute numbers will be low and noisy (the side-by-side ratios less so)"
        );
    }

    // Rounds: each system once per round, the order alternating between rounds, so slow drift
    // of the machine's load hits both systems alike. Reported value = median over rounds.
    let rounds = args.rounds.max(1);
    let mut per_round: Vec<Vec<SystemResult>> = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..specs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut this = Vec::new();
        for i in order {
            match &specs[i] {
                Ok(spec) => {
                    let mut res = SystemResult::new(spec.name);
                    if rounds > 1 {
                        eprintln!("pyoco-bench: round {}/{rounds}: {}", round + 1, spec.name);
                    }
                    res.detail("loadavg_start", json!(loadavg1()));
                    bench_system(spec, &plan, &args, &nats_bin, &mut res).await;
                    this.push(res);
                }
                Err(msg) => {
                    let (name, m) = msg.split_once(": ").unwrap_or(("?", msg));
                    let mut res = SystemResult::new(name);
                    res.note(m.to_string());
                    this.push(res);
                }
            }
        }
        this.sort_by_key(|r| if r.name == "python" { 0 } else { 1 });
        per_round.push(this);
    }
    let results: Vec<SystemResult> = if rounds == 1 {
        per_round.pop().unwrap_or_default()
    } else {
        report::combine(per_round)
    };

    let rows = report::rows(
        &plan.all_levels(),
        plan.history,
        plan.tput,
        plan.start_reps,
        plan.dashboard.as_ref().map(|d| (d.runs, d.loads)),
        &plan.concurrency_levels,
    );
    let refs: Vec<&SystemResult> = results.iter().collect();
    let table = report::table(&rows, &refs);
    let total = t_all.elapsed().as_secs_f64();
    println!();
    println!(
        "## pyoco-bench results ({} cores, {}{}{})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.quick { "--quick, " } else { "" },
        if rounds > 1 {
            format!("median of {rounds} rounds, ")
        } else {
            String::new()
        },
        format_args!("total {:.0} s", total)
    );
    println!();
    print!("{table}");
    for r in &results {
        if !r.notes.is_empty() {
            println!();
            println!("Notes ({}):", report::title(&r.name));
            for n in &r.notes {
                println!("- {}", n.replace('\n', "\n  "));
            }
        }
    }
    if let Some(out) = &args.out {
        let mut systems = serde_json::Map::new();
        for r in &results {
            systems.insert(r.name.clone(), r.to_json());
        }
        let rows_json: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "key": r.key,
                    "label": r.label,
                    "better": if r.better == report::Better::Higher { "higher" } else { "lower" },
                    "python": results.iter().find(|s| s.name == "python").and_then(|s| s.metrics.get(&r.key)),
                    "rust": results.iter().find(|s| s.name == "rust").and_then(|s| s.metrics.get(&r.key)),
                })
            })
            .collect();
        let doc = json!({
            "tool": "pyoco-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "started_unix": pyoco_wire::python::time() - total,
            "total_seconds": total,
            "machine": {
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            },
            "nats_server": { "path": nats_bin, "version": nats_version },
            "python_venv": venv,
            "rust_bin_dir": rust_dir,
            "plan": {
                "k": plan.k, "levels": plan.all_levels(), "python_list_max": plan.python_list_max,
                "history_records": plan.history, "python_history_max": plan.python_history_max,
                "post": plan.post, "get": plan.get,
                "list_samples": {"min": plan.samples.0, "max": plan.samples.1, "budget_s": plan.samples.2.as_secs_f64()},
                "sse_warmup": plan.sse_warmup, "sse_changes": plan.sse_changes,
                "e2e_warmup": plan.e2e_warmup, "e2e_runs": plan.e2e_runs,
                "throughput_runs": plan.tput, "start_reps": plan.start_reps, "quick": args.quick,
                "rounds": rounds,
                "dashboard": plan.dashboard.as_ref().map(|d| json!({
                    "runs": d.runs, "loads": d.loads, "changes": d.changes,
                    "idle_s": d.idle.as_secs_f64(), "only": plan.dashboard_only,
                })),
            },
            "rows": rows_json,
            "systems": systems,
            "table_markdown": table,
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("pyoco-bench: JSON written to {}", out.display());
    }
    Ok(())
}

/// Everything one system needs while it is measured.
struct Ctx<'a> {
    spec: &'a SystemSpec,
    plan: &'a Plan,
    dir: PathBuf,
    tasks_dir: PathBuf,
    nats_url: String,
    http: reqwest::Client,
    base: String,
    yaml: &'static [u8],
}

impl<'a> Ctx<'a> {
    fn new(
        spec: &'a SystemSpec,
        plan: &'a Plan,
        dir: &Path,
        tasks_dir: PathBuf,
        nats_url: String,
    ) -> Result<Ctx<'a>> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Ctx {
            spec,
            plan,
            dir: dir.to_path_buf(),
            tasks_dir,
            nats_url,
            http,
            base: String::new(),
            yaml: FLOW_YAML.as_bytes(),
        })
    }
}

/// A fresh nats-server (free port, its store in `store`): nothing of another system's streams
/// is visible.
async fn start_nats(nats_bin: &Path, store: &Path) -> Result<NatsSupervisor> {
    let mut ncfg = NatsServerConfig::new(nats_bin, store);
    ncfg.port = None;
    ncfg.restart = RestartPolicy::never();
    ncfg.startup_timeout = Duration::from_secs(20);
    ncfg.stop_grace = Duration::from_secs(5);
    NatsSupervisor::start(ncfg)
        .await
        .map_err(|e| anyhow!("starting nats-server: {e}"))
}

fn log(sys: &str, msg: impl AsRef<str>) {
    eprintln!("[{sys}] {}", msg.as_ref());
}

async fn bench_system(
    spec: &SystemSpec,
    plan: &Plan,
    args: &Args,
    nats_bin: &Path,
    res: &mut SystemResult,
) {
    let t0 = Instant::now();
    log(spec.name, "---- start ----");
    let tmp = match tempfile::Builder::new()
        .prefix(&format!("pyoco-bench-{}-", spec.name))
        .tempdir()
    {
        Ok(t) => t,
        Err(e) => {
            res.note(format!("skipped: no temp dir: {e}"));
            return;
        }
    };
    let dir = tmp.path().to_path_buf();
    if let Err(e) = bench_system_inner(spec, plan, &dir, nats_bin, res).await {
        res.note(format!("aborted: {e:#}"));
    }
    res.seconds = t0.elapsed().as_secs_f64();
    if args.keep_tmp {
        let kept = tmp.keep();
        log(spec.name, format!("kept {}", kept.display()));
    }
    log(spec.name, format!("---- done in {:.1} s ----", res.seconds));
}

async fn bench_system_inner(
    spec: &SystemSpec,
    plan: &Plan,
    dir: &Path,
    nats_bin: &Path,
    res: &mut SystemResult,
) -> Result<()> {
    let name = spec.name;
    let tasks_dir = dir.join("tasks");
    std::fs::create_dir_all(&tasks_dir)?;
    std::fs::write(tasks_dir.join("bench_tasks.py"), TASKS_PY)?;
    std::fs::write(dir.join("flow.yaml"), FLOW_YAML)?;

    let mut result = Ok(());
    if !plan.dashboard_only {
        let nats = start_nats(nats_bin, &dir.join("js")).await?;
        let nats_url = nats.client_url().to_string();
        log(name, format!("nats-server at {nats_url}"));
        let nats_pid = nats.pid();
        let mut ctx = Ctx::new(spec, plan, dir, tasks_dir, nats_url)?;
        result = phases(&mut ctx, res, nats_pid).await;
        nats.stop().await;
    }
    // The dashboard on its own nats-server and gateway: exactly its runs stored, whatever the
    // phases above left behind.
    if plan.dashboard.is_some() {
        if let Err(e) = dashboard::phase(spec, plan, dir, nats_bin, res).await {
            res.note(format!("dashboard: {e:#}"));
        }
    }
    result
}

async fn phases(ctx: &mut Ctx<'_>, res: &mut SystemResult, nats_pid: Option<u32>) -> Result<()> {
    let name = ctx.spec.name;
    // 1. Gateway start.
    let mut starts = Vec::new();
    let mut gateway = None;
    let reps = if ctx.plan.worker_only {
        1
    } else {
        ctx.plan.start_reps
    };
    for rep in 0..reps {
        let (g, ms) = start_gateway(ctx, rep).await?;
        starts.push(ms);
        if rep + 1 < reps {
            g.stop(Duration::from_secs(5)).await;
        } else {
            gateway = Some(g);
        }
    }
    let gateway = gateway.expect("at least one rep");
    let gw_ms = load::median(starts.clone());
    res.ran = true;
    res.set("gateway_start_ms", gw_ms);
    res.detail("gateway_start_ms_all", json!(starts));
    log(
        name,
        format!("gateway start → /health: {gw_ms:.0} ms (all: {starts:.0?})"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(r) = procs::rss_mib(gateway.pid) {
        res.set("rss_gateway_idle_mib", r);
    }
    if let Some(r) = nats_pid.and_then(procs::rss_mib) {
        res.set("rss_nats_idle_mib", r);
    }

    let result = http_and_worker_phases(ctx, res, &gateway).await;
    if let Some(r) = procs::rss_mib(gateway.pid) {
        res.set("rss_gateway_load_mib", r);
    }
    if !ctx.plan.worker_only {
        if let Err(e) = auth_phase(ctx, res).await {
            res.note(format!("API key phase: {e:#}"));
        }
    }
    if let Some(r) = nats_pid.and_then(procs::rss_mib) {
        res.set("rss_nats_load_mib", r);
    }
    gateway.stop(Duration::from_secs(5)).await;
    result
}

async fn start_gateway(ctx: &mut Ctx<'_>, rep: usize) -> Result<(ChildProc, f64)> {
    start_gateway_with(ctx, &rep.to_string(), vec![]).await
}

/// Start one more gateway (log `gateway-<label>.log`) with `env` added; `ctx.base` becomes its
/// address.
async fn start_gateway_with(
    ctx: &mut Ctx<'_>,
    label: &str,
    env: Vec<(String, String)>,
) -> Result<(ChildProc, f64)> {
    let port = procs::free_port()?;
    let mut g = ChildProc::spawn(Spawn {
        name: format!("{}-gateway", ctx.spec.name),
        program: ctx.spec.gateway.clone(),
        args: procs::gateway_up_args(port, &ctx.nats_url),
        env,
        cwd: &ctx.dir,
        log: ctx.dir.join(format!("gateway-{label}.log")),
    })?;
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/health");
    let probe = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = g.exited() {
            bail!(
                "the gateway exited during start-up ({st}); last log lines:\n{}",
                g.log_tail(15)
            );
        }
        if let Ok(r) = probe.get(&url).send().await {
            if r.status().is_success() {
                let ms = g.started.elapsed().as_secs_f64() * 1e3;
                ctx.base = base;
                return Ok((g, ms));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway did not answer /health within 30 s; last log lines:\n{}",
                g.log_tail(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The pepper of the API key phase.
const BENCH_PEPPER: &str = "bench-pepper";

/// Phase 4, API keys: `GET /runs/{id}` at concurrency 32 on one run, through a second gateway
/// with `PYOCO_HTTP_AUTH_MODE=api_key` (a key made by the system's own `pyoco-server-admin`)
/// and through the running one with auth off, the same number of requests each after a
/// warm-up.
async fn auth_phase(ctx: &mut Ctx<'_>, res: &mut SystemResult) -> Result<()> {
    let name = ctx.spec.name;
    let admin = ctx.spec.gateway.with_file_name("pyoco-server-admin");
    let out = tokio::process::Command::new(&admin)
        .args([
            "--nats-url",
            &ctx.nats_url,
            "api-key",
            "create",
            "--tenant",
            "bench",
        ])
        .env("PYOCO_AUTH_PEPPER", BENCH_PEPPER)
        .env("PYOCO_LOAD_DOTENV", "0")
        .current_dir(&ctx.dir)
        .output()
        .await
        .with_context(|| format!("running {}", admin.display()))?;
    let made: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} api-key create printed no JSON: {}",
            admin.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let key = made["api_key"]
        .as_str()
        .ok_or_else(|| anyhow!("no api_key in {made}"))?
        .to_string();

    let open_base = ctx.base.clone();
    let env = vec![
        ("PYOCO_HTTP_AUTH_MODE".to_string(), "api_key".to_string()),
        ("PYOCO_AUTH_PEPPER".to_string(), BENCH_PEPPER.to_string()),
    ];
    let (gateway, _) = start_gateway_with(ctx, "api-key", env).await?;
    let auth_base = std::mem::replace(&mut ctx.base, open_base.clone());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", reqwest::header::HeaderValue::from_str(&key)?);
    let keyed = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()?;
    let result = async {
        let run_id = post_yaml_when_ready(&keyed, &auth_base, ctx.yaml).await?;
        let (c, n) = ctx
            .plan
            .get
            .iter()
            .copied()
            .find(|(c, _)| *c == 32)
            .unwrap_or((32, 2000));
        // Python hashes 200000 PBKDF2 rounds per request on its event loop: fewer requests.
        let n_auth = if name == "python" { n.min(300) } else { n };
        let mut rps = [0.0; 2];
        for (slot, (label, http, base, n)) in [
            ("off", ctx.http.clone(), open_base.clone(), n),
            ("api_key", keyed.clone(), auth_base.clone(), n_auth),
        ]
        .into_iter()
        .enumerate()
        {
            let url = Arc::new(format!("{base}/runs/{run_id}"));
            for (warm_up, count) in [(true, 64), (false, n)] {
                let (http, url) = (http.clone(), url.clone());
                let r = load::run(count, c, Duration::from_secs(300), move |_| {
                    let (http, url) = (http.clone(), url.clone());
                    async move { get_ok(&http, &url).await }
                })
                .await?;
                if r.errors > 0 {
                    bail!(
                        "GET /runs/{{id}} auth {label}: {} errors, first: {}",
                        r.errors,
                        r.first_error.unwrap_or_default()
                    );
                }
                if !warm_up {
                    log(name, format!("GET /runs/{{id}} c={c} auth {label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms", r.rps(), r.latency.p50, r.latency.p99));
                    res.set(&format!("get_auth_{label}_c{c}_rps"), r.rps());
                    res.set(&format!("get_auth_{label}_c{c}_p50_ms"), r.latency.p50);
                    rps[slot] = r.rps();
                }
            }
        }
        if rps[0] > 0.0 {
            let share = 100.0 * rps[1] / rps[0];
            log(name, format!("API key on: {share:.1} % of the requests per second with auth off"));
            res.set("get_auth_share_pct", share);
        }
        Ok(())
    }
    .await;
    gateway.stop(Duration::from_secs(5)).await;
    result
}

async fn post_yaml(http: &reqwest::Client, base: &str, yaml: &'static [u8]) -> Result<String> {
    let part = reqwest::multipart::Part::bytes(yaml)
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")?;
    let form = reqwest::multipart::Form::new()
        .part("workflow", part)
        .text("flow_name", "bench")
        .text("tag", "default");
    let r = http
        .post(format!("{base}/runs/yaml"))
        .multipart(form)
        .send()
        .await?;
    let st = r.status();
    let body = r.bytes().await?;
    if !st.is_success() {
        bail!("POST /runs/yaml: HTTP {st}: {}", snippet(&body));
    }
    let v: Value = serde_json::from_slice(&body).context("POST /runs/yaml: not JSON")?;
    v.get("run_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("POST /runs/yaml: no run_id in {}", snippet(&body)))
}

/// [`post_yaml`] on a gateway that has just started: `/health` answers before the gateway is
/// connected to NATS, so a 503 is retried for up to 30 s.
async fn post_yaml_when_ready(
    http: &reqwest::Client,
    base: &str,
    yaml: &'static [u8],
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match post_yaml(http, base, yaml).await {
            Ok(id) => return Ok(id),
            Err(e) if format!("{e:#}").contains("HTTP 503") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn get_ok(http: &reqwest::Client, url: &str) -> Result<usize> {
    let r = http.get(url).send().await?;
    let st = r.status();
    let body = r.bytes().await?;
    if !st.is_success() {
        bail!("GET {url}: HTTP {st}: {}", snippet(&body));
    }
    Ok(body.len())
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(300).collect()
}

fn load_detail(r: &load::LoadResult<impl Sized>, n: usize, c: usize) -> Value {
    json!({
        "requests": n, "concurrency": c, "ok": r.ok, "errors": r.errors,
        "first_error": r.first_error, "seconds": r.elapsed.as_secs_f64(), "rps": r.rps(),
        "p50_ms": r.latency.p50, "p99_ms": r.latency.p99, "mean_ms": r.latency.mean,
        "min_ms": r.latency.min, "max_ms": r.latency.max,
    })
}

/// POST `n` runs at concurrency `c`; returns the result with the run ids as outputs.
async fn post_load(ctx: &Ctx<'_>, n: usize, c: usize) -> Result<load::LoadResult<String>> {
    let http = ctx.http.clone();
    let base = Arc::new(ctx.base.clone());
    let yaml = ctx.yaml;
    let limit = Duration::from_secs(120 + n as u64 / 10);
    load::run(n, c, limit, move |_| {
        let http = http.clone();
        let base = base.clone();
        async move { post_yaml(&http, &base, yaml).await }
    })
    .await
}

/// `GET url` `samples` times in a row after one warm-up request (retried a few times on 5xx
/// and connection errors); `check` turns a 200 body into the number it reports (items listed,
/// runs counted) or rejects it as a wrong answer. Failed requests are counted, not timed.
/// Recorded as `{key}_p50_ms`; `stored` `unit` (e.g. "runs") says what the gateway holds.
#[allow(clippy::too_many_arguments)]
async fn measure_get(
    ctx: &Ctx<'_>,
    res: &mut SystemResult,
    what: &str,
    path: &str,
    key: &str,
    stored: usize,
    unit: &str,
    check: &(dyn Fn(&str) -> Result<usize> + Sync),
) {
    let url = format!("{}{path}", ctx.base);
    let http = ctx.http.clone();
    let once = |http: reqwest::Client, url: String| async move {
        let body = scale::get_text(&http, &url).await?;
        check(&body)
    };
    let mut warm = None;
    let mut last_err = String::new();
    for _ in 0..5 {
        match once(http.clone(), url.clone()).await {
            Ok(n) => {
                warm = Some(n);
                break;
            }
            Err(e) => {
                last_err = format!("{e:#}");
                // Only 5xx and connection errors may be transient; a 4xx is an answer.
                if last_err.contains("HTTP 4") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let Some(seen) = warm else {
        res.note(format!(
            "{what} with {stored} {unit}: the warm-up request failed, last: {last_err}"
        ));
        return;
    };
    let (min, max, budget) = ctx.plan.samples;
    let r = scale::sample(min, max, budget, || {
        let f = once(http.clone(), url.clone());
        async move { f.await.map(|_| ()) }
    })
    .await;
    match r {
        Ok(l) => {
            let s = &l.stats;
            log(
                ctx.spec.name,
                format!(
                    "{what} with {stored} {unit}: p50 {:.2} ms, p99 {:.2} ms (n={}, reports {seen}, errors {})",
                    s.p50, s.p99, s.n, l.errors
                ),
            );
            if l.errors > 0 {
                res.note(format!(
                    "{what} with {stored} {unit}: {} of {} requests failed, first: {}",
                    l.errors,
                    l.errors + s.n,
                    l.first_error.clone().unwrap_or_default()
                ));
            }
            res.set(&format!("{key}_p50_ms"), s.p50);
            res.detail(
                key,
                json!({"stored": stored, "reports": seen, "n": s.n, "errors": l.errors,
                       "first_error": l.first_error, "p50_ms": s.p50, "p99_ms": s.p99,
                       "mean_ms": s.mean, "min_ms": s.min, "max_ms": s.max}),
            );
        }
        Err(e) => res.note(format!("{what} with {stored} {unit}: {e:#}")),
    }
}

/// Items of a `GET /runs` answer (a list, or `{"items": [...]}`).
fn list_items(body: &str) -> Result<usize> {
    match serde_json::from_str::<Value>(body).context("GET /runs: not JSON")? {
        Value::Array(a) => Ok(a.len()),
        Value::Object(o) => Ok(o.get("items").and_then(Value::as_array).map_or(0, Vec::len)),
        other => bail!(
            "GET /runs: unexpected answer {}",
            snippet(other.to_string().as_bytes())
        ),
    }
}

/// Runs counted by a `GET /metrics` answer.
fn metrics_runs(body: &str) -> Result<usize> {
    scale::runs_total(body)
        .map(|n| n as usize)
        .ok_or_else(|| anyhow!("GET /metrics: no pyoco_runs_total samples"))
}

/// `GET /runs?limit=100` and `GET /metrics` with `stored` runs stored (keys by `level`).
async fn level_phase(ctx: &Ctx<'_>, res: &mut SystemResult, level: usize, stored: usize) {
    measure_get(
        ctx,
        res,
        "GET /runs?limit=100",
        "/runs?limit=100",
        &format!("list_{level}"),
        stored,
        "runs",
        &list_items,
    )
    .await;
    measure_get(
        ctx,
        res,
        "GET /metrics",
        "/metrics",
        &format!("metrics_{level}"),
        stored,
        "runs",
        &metrics_runs,
    )
    .await;
}

/// The page size of the `GET /wheels/history` row.
const HISTORY_LIMIT: usize = 100;

/// `GET /wheels/history?limit=100` with `n` wheel-history records written straight into the
/// history bucket; every answer must be the 100 newest records, newest first. A failed write is
/// a note (the row is missing), not the end of the run. Above the system's `history_max` the
/// records are written (both systems hold the same data later) but not measured.
async fn history_phase(
    ctx: &Ctx<'_>,
    res: &mut SystemResult,
    client: &async_nats::Client,
    n: usize,
) {
    let t = Instant::now();
    let newest = match scale::put_wheel_history(client, n).await {
        Ok(id) => id,
        Err(e) => {
            res.note(format!(
                "GET /wheels/history: writing {n} history records: {e:#}"
            ));
            return;
        }
    };
    let put_s = t.elapsed().as_secs_f64();
    log(
        ctx.spec.name,
        format!(
            "wrote {n} wheel-history records into KV in {put_s:.1} s ({:.0}/s)",
            n as f64 / put_s
        ),
    );
    res.detail(
        "kv_seed_history",
        json!({"written": n, "seconds": put_s, "newest_event_id": newest}),
    );
    if let Some(max) = ctx.spec.history_max.filter(|m| n > *m) {
        res.note(format!(
            "GET /wheels/history not measured with more than {max} history records (--python-history-max); the records are written all the same"
        ));
        return;
    }
    let page = HISTORY_LIMIT.min(n);
    let check = move |body: &str| scale::check_history_page(body, page, &newest);
    measure_get(
        ctx,
        res,
        "GET /wheels/history?limit=100",
        &format!("/wheels/history?limit={HISTORY_LIMIT}"),
        "history",
        n,
        "history records",
        &check,
    )
    .await;
}

async fn http_and_worker_phases(
    ctx: &mut Ctx<'_>,
    res: &mut SystemResult,
    gateway: &ChildProc,
) -> Result<()> {
    let name = ctx.spec.name;
    let plan = ctx.plan.clone();
    if plan.worker_only {
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            async_nats::connect(ctx.nats_url.as_str()),
        )
        .await
        .map_err(|_| anyhow!("connecting to nats timed out"))??;
        // The gateway creates the runs bucket and the work stream on its first submit.
        post_yaml_when_ready(&ctx.http, &ctx.base, ctx.yaml).await?;
        let watcher = RunWatcher::start(&client, "pyoco_runs").await?;
        return worker_phases(ctx, res, &watcher).await;
    }

    // 2a. Seed K runs (no worker: they just queue). Also the ids for GET /runs/{id}.
    log(
        name,
        format!("seeding {} runs (POST /runs/yaml, c=32)", plan.k),
    );
    let seed = post_load(ctx, plan.k, 32).await?;
    res.detail("seed", load_detail(&seed, plan.k, 32));
    if seed.ok == 0 {
        bail!(
            "POST /runs/yaml never succeeded: {}",
            seed.first_error.clone().unwrap_or_default()
        );
    }
    if seed.errors > 0 {
        res.note(format!(
            "seed: {} of {} POSTs failed, first: {}",
            seed.errors,
            plan.k,
            seed.first_error.clone().unwrap_or_default()
        ));
    }
    let ids = Arc::new(seed.outputs);
    let mut stored = ids.len();
    log(
        name,
        format!(
            "seeded {} runs at {:.0} req/s",
            stored,
            seed_rps(&ids, &seed.elapsed)
        ),
    );

    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(ctx.nats_url.as_str()),
    )
    .await
    .map_err(|_| anyhow!("connecting to nats timed out"))??;

    // 2b. GET /runs?limit=100 and GET /metrics at K runs stored, then at each further level,
    // reached by writing copies of the gateway's own PENDING snapshot straight into KV.
    let seeder = scale::Seeder::new(&client, "pyoco_runs", &ids[0]).await?;
    res.detail(
        "snapshot_template",
        Value::Object(seeder.template().clone()),
    );
    let mut capped = false;
    for level in plan.all_levels() {
        if level > stored {
            let t = Instant::now();
            seeder.put_runs(level - stored).await?;
            let put_s = t.elapsed().as_secs_f64();
            let n = level - stored;
            stored = level;
            let seen = scale::wait_counted(
                &ctx.http,
                &ctx.base,
                stored as u64,
                Duration::from_secs(120),
            )
            .await?;
            log(
                name,
                format!(
                    "wrote {n} PENDING snapshots into KV in {put_s:.1} s ({:.0}/s); the gateway counts {stored} runs {:.0} ms later",
                    n as f64 / put_s,
                    seen.as_secs_f64() * 1e3
                ),
            );
            res.detail(
                &format!("kv_seed_{level}"),
                json!({"written": n, "seconds": put_s, "counted_after_ms": seen.as_secs_f64() * 1e3}),
            );
        }
        if ctx.spec.list_max.is_some_and(|m| level > m) {
            if !capped {
                capped = true;
                res.note(format!(
                    "GET /runs and GET /metrics not measured above {} stored runs (--python-list-max); the runs are written all the same",
                    ctx.spec.list_max.unwrap_or(0)
                ));
            }
            continue;
        }
        level_phase(ctx, res, level, stored).await;
    }

    // 2c. GET /wheels/history?limit=100 with N history records written straight into KV.
    if plan.history > 0 {
        history_phase(ctx, res, &client, plan.history).await;
    }

    // 2d. SSE: KV write → `snapshot` event on GET /runs/{id}/watch.
    match scale::sse_latency(
        &ctx.base,
        seeder.kv(),
        &ids[0],
        plan.sse_warmup,
        plan.sse_changes,
    )
    .await
    {
        Ok(r) => {
            let s = &r.stats;
            log(
                name,
                format!(
                    "watch: KV write → snapshot event p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms (n={}; first event {:.1} ms after the request)",
                    s.p50, s.p99, s.mean, s.n, r.first_event_ms
                ),
            );
            res.set("sse_p50_ms", s.p50);
            res.set("sse_p99_ms", s.p99);
            res.detail(
                "sse",
                json!({"n": s.n, "warmup": r.warmup, "p50_ms": s.p50, "p99_ms": s.p99,
                       "mean_ms": s.mean, "min_ms": s.min, "max_ms": s.max,
                       "first_event_ms": r.first_event_ms}),
            );
        }
        Err(e) => res.note(format!("GET /runs/{{id}}/watch: {e:#}")),
    }

    // 2e. Many watchers on one run: gateway RSS with them open, one KV write → its event on
    // every stream.
    if plan.watchers > 0 {
        let n = match ctx.spec.watchers_max {
            Some(max) if plan.watchers > max => {
                res.note(format!(
                    "watchers: {max} opened, not {} (--python-watchers-max)",
                    plan.watchers
                ));
                max
            }
            _ => plan.watchers,
        };
        let addr: std::net::SocketAddr = ctx
            .base
            .trim_start_matches("http://")
            .parse()
            .context("the gateway's address")?;
        let rss_before = procs::rss_mib(gateway.pid);
        match scale::many_watchers(addr, seeder.kv(), &ids[1 % ids.len()], n, gateway.pid).await {
            Ok(w) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let rss_after = procs::rss_mib(gateway.pid);
                let f = &w.fanout;
                log(
                    name,
                    format!(
                        "watchers: {} of {n} open in {:.1} s, gateway RSS {:.0} → {:.0} MiB (after closing: {:.0}); one change → {} events, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms; /health {:.1} ms{}",
                        w.opened, w.open_s, rss_before.unwrap_or(f64::NAN), w.rss_open_mib.unwrap_or(f64::NAN),
                        rss_after.unwrap_or(f64::NAN), f.n, f.p50, f.p99, f.max, w.health_ms,
                        w.refused.as_deref().map(|r| format!("; refused: {r}")).unwrap_or_default()
                    ),
                );
                res.set("watchers_open", w.opened as f64);
                if let Some(r) = w.rss_open_mib {
                    res.set("watchers_rss_mib", r);
                }
                if f.n > 0 {
                    res.set("watchers_fanout_p50_ms", f.p50);
                    res.set("watchers_fanout_max_ms", f.max);
                }
                res.set("watchers_health_ms", w.health_ms);
                res.detail(
                    "watchers",
                    json!({"wanted": n, "opened": w.opened, "open_s": w.open_s,
                           "rss_before_mib": rss_before, "rss_open_mib": w.rss_open_mib,
                           "rss_after_mib": rss_after, "events": f.n, "p50_ms": f.p50,
                           "p99_ms": f.p99, "max_ms": f.max, "health_ms": w.health_ms,
                           "refused": w.refused}),
                );
                if let Some(r) = w.refused {
                    res.note(format!("watchers: refused after {} streams: {r}", w.opened));
                }
            }
            Err(e) => res.note(format!("watchers: {e:#}")),
        }
    }

    // 3. GET /runs/{id} at 1/8/32.
    for (c, n) in plan.get {
        let http = ctx.http.clone();
        let base = Arc::new(ctx.base.clone());
        let ids2 = ids.clone();
        let r = load::run(n, c, Duration::from_secs(120 + n as u64 / 20), move |i| {
            let http = http.clone();
            let url = format!("{}/runs/{}", base, ids2[i % ids2.len()]);
            async move { get_ok(&http, &url).await }
        })
        .await;
        match r {
            Ok(r) => {
                log(name, format!("GET /runs/{{id}} c={c}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}", r.rps(), r.latency.p50, r.latency.p99, r.errors));
                if r.errors > 0 {
                    res.note(format!(
                        "GET /runs/{{id}} c={c}: {} errors, first: {}",
                        r.errors,
                        r.first_error.clone().unwrap_or_default()
                    ));
                }
                if r.ok > 0 {
                    res.set(&format!("get_c{c}_rps"), r.rps());
                    res.set(&format!("get_c{c}_p50_ms"), r.latency.p50);
                    res.set(&format!("get_c{c}_p99_ms"), r.latency.p99);
                }
                res.detail(&format!("get_c{c}"), load_detail(&r, n, c));
            }
            Err(e) => res.note(format!("GET /runs/{{id}} c={c}: {e:#}")),
        }
    }

    // 2. POST /runs/yaml at 1/8/32 (a short warm-up first).
    let w = post_load(ctx, POST_WARMUP, 8).await?;
    stored += w.ok;
    for (c, n) in plan.post {
        match post_load(ctx, n, c).await {
            Ok(r) => {
                stored += r.ok;
                log(
                    name,
                    format!(
                        "POST /runs/yaml c={c}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                        r.rps(),
                        r.latency.p50,
                        r.latency.p99,
                        r.errors
                    ),
                );
                if r.errors > 0 {
                    res.note(format!(
                        "POST /runs/yaml c={c}: {} errors, first: {}",
                        r.errors,
                        r.first_error.clone().unwrap_or_default()
                    ));
                }
                if r.ok > 0 {
                    res.set(&format!("post_c{c}_rps"), r.rps());
                    res.set(&format!("post_c{c}_p50_ms"), r.latency.p50);
                    res.set(&format!("post_c{c}_p99_ms"), r.latency.p99);
                }
                res.detail(&format!("post_c{c}"), load_detail(&r, n, c));
            }
            Err(e) => res.note(format!("POST /runs/yaml c={c}: {e:#}")),
        }
    }

    res.detail("stored_after_http", json!(stored));
    if let Some(r) = procs::rss_mib(gateway.pid) {
        res.set("rss_gateway_http_mib", r);
    }

    // Workers from here on. The queued jobs of the HTTP phases are thrown away first.
    if !ctx.spec.worker.exists() {
        res.note(format!(
            "worker phases skipped: {} does not exist",
            ctx.spec.worker.display()
        ));
        return Ok(());
    }
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .get_stream("PYOCO_WORK")
        .await
        .context("the gateway did not create the PYOCO_WORK stream")?;
    let purged = stream.purge().await.context("purging PYOCO_WORK")?;
    log(
        name,
        format!("purged {} queued jobs from PYOCO_WORK", purged.purged),
    );
    let _ = stream.info().await;
    let watcher = RunWatcher::start(&client, "pyoco_runs").await?;

    worker_phases(ctx, res, &watcher).await
}

fn seed_rps(ids: &[String], e: &Duration) -> f64 {
    ids.len() as f64 / e.as_secs_f64()
}

/// How a worker readiness wait ended.
enum Listed {
    Yes(f64),
    /// The gateway has no usable `GET /workers`.
    Unsupported(String),
}

fn spawn_worker(ctx: &Ctx<'_>, id: &str, concurrency: Option<usize>) -> Result<ChildProc> {
    let wdir = ctx.dir.join(format!("work-{id}"));
    std::fs::create_dir_all(&wdir)?;
    let mut args = vec![
        "--nats-url".to_string(),
        ctx.nats_url.clone(),
        "--tags".into(),
        "default".into(),
        "--worker-id".into(),
        id.to_string(),
    ];
    if let Some(c) = concurrency {
        args.push("--concurrency".into());
        args.push(c.to_string());
    }
    let mut env = vec![(
        "PYTHONPATH".to_string(),
        ctx.tasks_dir.display().to_string(),
    )];
    env.extend(ctx.spec.extra_worker_env.iter().cloned());
    ChildProc::spawn(Spawn {
        name: format!("{}-worker-{id}", ctx.spec.name),
        program: ctx.spec.worker.clone(),
        args,
        env,
        cwd: &wdir,
        log: ctx.dir.join(format!("worker-{id}.log")),
    })
}

/// Wait until `id` appears in `GET /workers`; ms since the worker was spawned.
async fn wait_listed(ctx: &Ctx<'_>, w: &mut ChildProc, id: &str) -> Result<Listed> {
    let url = format!("{}/workers", ctx.base);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Some(st) = w.exited() {
            bail!(
                "worker {id} exited during start-up ({st}); last log lines:\n{}",
                w.log_tail(15)
            );
        }
        match ctx.http.get(&url).send().await {
            Ok(r) => {
                let st = r.status();
                if st == reqwest::StatusCode::NOT_FOUND
                    || st == reqwest::StatusCode::METHOD_NOT_ALLOWED
                {
                    return Ok(Listed::Unsupported(format!("GET /workers answers {st}")));
                }
                let body = r.bytes().await.unwrap_or_default();
                if st.is_success() {
                    let items = match serde_json::from_slice::<Value>(&body) {
                        Ok(Value::Array(a)) => Some(a),
                        Ok(Value::Object(mut o)) => match o.remove("items") {
                            Some(Value::Array(a)) => Some(a),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(items) = items {
                        if items
                            .iter()
                            .any(|i| i.get("worker_id").and_then(Value::as_str) == Some(id))
                        {
                            return Ok(Listed::Yes(w.started.elapsed().as_secs_f64() * 1e3));
                        }
                    }
                } else {
                    last = format!("HTTP {st}: {}", snippet(&body));
                }
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!(
                "worker {id} not listed in GET /workers within 30 s (last: {last}); worker log:\n{}",
                w.log_tail(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start a worker and wait until it is ready: listed in `GET /workers`, or (without that
/// endpoint) until it has completed one run.
async fn start_ready_worker(
    ctx: &Ctx<'_>,
    watcher: &RunWatcher,
    id: &str,
    concurrency: Option<usize>,
) -> Result<(ChildProc, Option<f64>)> {
    let mut w = spawn_worker(ctx, id, concurrency)?;
    match wait_listed(ctx, &mut w, id).await? {
        Listed::Yes(ms) => Ok((w, Some(ms))),
        Listed::Unsupported(_) => {
            // Readiness by doing: one run completes. (Not a start-time measurement.)
            let rid = post_yaml(&ctx.http, &ctx.base, ctx.yaml).await?;
            watcher
                .wait_one(&rid, Duration::from_secs(60))
                .await
                .with_context(|| format!("worker {id}: first run; log:\n{}", w.log_tail(15)))?;
            Ok((w, None))
        }
    }
}

fn worker_rss(res: &mut SystemResult, w: &ChildProc, phase: &str) {
    let own = procs::rss_mib(w.pid);
    let (kids, n) = procs::descendants_rss_mib(w.pid);
    if let Some(o) = own {
        res.set(&format!("rss_worker_{phase}_mib"), o);
        res.set(&format!("rss_worker_total_{phase}_mib"), o + kids);
    }
    if n > 0 {
        res.set(&format!("rss_worker_children_{phase}_mib"), kids);
    }
    res.detail(&format!("worker_children_{phase}"), json!(n));
}

/// Submit `n` runs at once (c=32) and time until all are terminal. runs/s.
async fn throughput(
    ctx: &Ctx<'_>,
    watcher: &RunWatcher,
    n: usize,
    res: &mut SystemResult,
    key: &str,
) -> Result<f64> {
    let t0 = Instant::now();
    let r = post_load(ctx, n, 32).await?;
    if r.errors > 0 {
        res.note(format!(
            "{key}: {} of {n} submits failed, first: {}",
            r.errors,
            r.first_error.clone().unwrap_or_default()
        ));
    }
    let submit_s = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(120 + n as u64 / 5);
    let done = watcher.wait_all(&r.outputs, limit).await?;
    let last = done.iter().map(|t| t.at).max().unwrap_or(t0);
    let secs = last.duration_since(t0).as_secs_f64();
    let failed: Vec<&watch::Terminal> = done.iter().filter(|t| t.status != "COMPLETED").collect();
    if let Some(f) = failed.first() {
        res.note(format!(
            "{key}: {} of {} runs not COMPLETED (first: {} {})",
            failed.len(),
            done.len(),
            f.status,
            f.error.clone().unwrap_or_default()
        ));
    }
    let rps = done.len() as f64 / secs;
    res.detail(
        key,
        json!({"runs": done.len(), "seconds": secs, "submit_seconds": submit_s, "runs_per_s": rps, "not_completed": failed.len()}),
    );
    if !failed.is_empty() {
        // Failing fast must not look like throughput.
        bail!("not reported: {} runs did not complete", failed.len());
    }
    Ok(rps)
}

/// Row 16b: one run of [`LOG_FLOW_YAML`] (40 lines, 50 ms apart) followed through
/// `/logs/watch` from its submission; for each `log` event, its arrival time minus the line's
/// `ts` (the time the runner captured the print; bench and worker share the clock).
async fn log_latency(ctx: &Ctx<'_>) -> Result<load::Stats> {
    let rid = post_yaml(&ctx.http, &ctx.base, LOG_FLOW_YAML.as_bytes()).await?;
    let url = format!("{}/runs/{rid}/logs/watch", ctx.base);
    let stream = reqwest::Client::builder().no_proxy().build()?;
    let mut response = stream.get(&url).send().await?;
    if !response.status().is_success() {
        bail!("GET {url}: HTTP {}", response.status());
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, response.chunk()).await {
            Err(_) => bail!("no end event within 60 s"),
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            bail!("the stream ended without an end event");
        };
        let at = pyoco_wire::python::time();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&frame);
            if text.starts_with("event: end") {
                if lat.len() != 40 {
                    bail!("{} log events instead of 40", lat.len());
                }
                return Ok(load::stats_ms(lat));
            }
            if let Some(data) = text
                .starts_with("event: log")
                .then(|| text.lines().find_map(|l| l.strip_prefix("data: ")))
                .flatten()
            {
                let item: Value = serde_json::from_str(data)?;
                let ts = item["ts"]
                    .as_f64()
                    .ok_or_else(|| anyhow!("no ts in {item}"))?;
                lat.push((at - ts) * 1e3);
            }
        }
    }
}

/// pyoco's `Engine` running the bench flow in a loop inside the runner's Python for
/// `--floor-seconds` (`floor.py`): runs/s and the pyoco version.
async fn floor_rps(ctx: &Ctx<'_>) -> Result<(f64, String)> {
    let script = ctx.dir.join("floor.py");
    std::fs::write(&script, FLOOR_PY)?;
    let out = tokio::process::Command::new(&ctx.plan.floor_python)
        .arg(&script)
        .arg(ctx.dir.join("flow.yaml"))
        .arg(ctx.plan.floor_seconds.to_string())
        .env("PYTHONPATH", &ctx.tasks_dir)
        .current_dir(&ctx.dir)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", ctx.plan.floor_python.display()))?;
    if !out.status.success() {
        bail!(
            "{} floor.py: {}: {}",
            ctx.plan.floor_python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("floor.py printed {:?}", snippet(&out.stdout)))?;
    let rps = v["runs_per_s"]
        .as_f64()
        .ok_or_else(|| anyhow!("floor.py printed no runs_per_s: {v}"))?;
    Ok((rps, v["pyoco"].as_str().unwrap_or("?").to_string()))
}

/// A few runs through the current workers so every one has warmed up.
async fn warm(ctx: &Ctx<'_>, watcher: &RunWatcher, n: usize) -> Result<()> {
    let r = post_load(ctx, n, 8).await?;
    watcher
        .wait_all(&r.outputs, Duration::from_secs(60))
        .await
        .context("warm-up runs")?;
    Ok(())
}

async fn worker_phases(ctx: &Ctx<'_>, res: &mut SystemResult, watcher: &RunWatcher) -> Result<()> {
    let name = ctx.spec.name;
    let plan = ctx.plan;

    // 1b. Worker start → listed (fresh worker ids each time; nothing is queued).
    let mut starts = Vec::new();
    for rep in 0..plan.start_reps {
        let id = format!("bench-probe-{rep}");
        let mut w = spawn_worker(ctx, &id, None)?;
        let r = wait_listed(ctx, &mut w, &id).await;
        w.stop(Duration::from_secs(10)).await;
        match r? {
            Listed::Yes(ms) => starts.push(ms),
            Listed::Unsupported(why) => {
                res.note(format!("worker start time not measured: {why}"));
                break;
            }
        }
    }
    if !starts.is_empty() {
        let m = load::median(starts.clone());
        log(
            name,
            format!("worker start → listed: {m:.0} ms (all: {starts:.0?})"),
        );
        res.set("worker_start_ms", m);
        res.detail("worker_start_ms_all", json!(starts));
    }

    // 4b. The floor: pyoco's own Engine running the bench flow in a loop in one process.
    let floor = if plan.floor_seconds > 0.0 {
        match floor_rps(ctx).await {
            Ok(f) => {
                log(
                    name,
                    format!(
                        "floor: pyoco Engine in a loop, one process: {:.0} runs/s (pyoco {})",
                        f.0, f.1
                    ),
                );
                res.set("floor_rps", f.0);
                Some(f.0)
            }
            Err(e) => {
                res.note(format!("floor row: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let share = |res: &mut SystemResult, key: &str, rps: f64| {
        if let Some(f) = floor {
            res.set(&format!("{key}_floor_pct"), 100.0 * rps / f);
        }
    };

    // 4c. The bench client's own ceiling: `GET /health` at c=32.
    {
        let http = ctx.http.clone();
        let url = Arc::new(format!("{}/health", ctx.base));
        let n = if plan.tput <= 100 { 2000 } else { 10000 };
        let r = load::run(n, 32, Duration::from_secs(60), move |_| {
            let http = http.clone();
            let url = url.clone();
            async move { get_ok(&http, &url).await.map(|_| ()) }
        })
        .await;
        match r {
            Ok(r) if r.ok > 0 => {
                log(
                    name,
                    format!(
                        "GET /health c=32: {:.0} req/s (the client's ceiling)",
                        r.rps()
                    ),
                );
                res.set("health_c32_rps", r.rps());
            }
            Ok(r) => res.note(format!(
                "GET /health c=32: no request succeeded: {}",
                r.first_error.unwrap_or_default()
            )),
            Err(e) => res.note(format!("GET /health c=32: {e:#}")),
        }
    }

    // One worker.
    let (w1, _) = start_ready_worker(ctx, watcher, "bench-w1", None).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    worker_rss(res, &w1, "idle");

    // 5. End-to-end latency, sequential.
    let mut lat = Vec::new();
    let mut not_completed = 0usize;
    let mut first_bad = None;
    for i in 0..plan.e2e_warmup + plan.e2e_runs {
        let t = Instant::now();
        let rid = post_yaml(&ctx.http, &ctx.base, ctx.yaml).await?;
        let term = watcher
            .wait_one(&rid, Duration::from_secs(60))
            .await
            .with_context(|| format!("end-to-end run {i}; worker log:\n{}", w1.log_tail(15)))?;
        if term.status != "COMPLETED" {
            not_completed += 1;
            if first_bad.is_none() {
                first_bad = Some(format!(
                    "{} {}",
                    term.status,
                    term.error.unwrap_or_default()
                ));
            }
        }
        if i >= plan.e2e_warmup {
            lat.push(term.at.duration_since(t).as_secs_f64() * 1e3);
        }
    }
    if let Some(b) = first_bad {
        res.note(format!(
            "end-to-end: {not_completed} runs not COMPLETED (first: {b}) — the worker cannot run the bench flow"
        ));
    }
    let s = load::stats_ms(lat);
    log(
        name,
        format!(
            "submit → COMPLETED: p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms (n={})",
            s.p50, s.p99, s.mean, s.n
        ),
    );
    if not_completed == 0 {
        res.set("e2e_p50_ms", s.p50);
        res.set("e2e_p99_ms", s.p99);
        res.set("e2e_mean_ms", s.mean);
    }
    res.detail(
        "e2e",
        json!({"n": s.n, "warmup": plan.e2e_warmup, "p50_ms": s.p50, "p99_ms": s.p99, "mean_ms": s.mean, "min_ms": s.min, "max_ms": s.max, "not_completed": not_completed}),
    );

    // 6. Throughput, 1 worker.
    match throughput(ctx, watcher, plan.tput, res, "tput_1w").await {
        Ok(rps) => {
            log(
                name,
                format!("{} runs, 1 worker: {rps:.1} runs/s", plan.tput),
            );
            res.set("tput_1w_rps", rps);
            share(res, "tput_1w", rps);
            if ctx.spec.concurrency_flag && plan.concurrency_levels.contains(&1) {
                res.set("tput_1w_c1_rps", rps);
                share(res, "tput_1w_c1", rps);
            }
        }
        Err(e) => res.note(format!("throughput 1 worker: {e:#}")),
    }
    worker_rss(res, &w1, "load");

    // 6d. Rust only (0.5.1 has no live task log): print → `log` event latency.
    if ctx.spec.concurrency_flag {
        match log_latency(ctx).await {
            Ok(s) => {
                log(
                    name,
                    format!(
                        "print → SSE log event: p50 {:.1} ms, p99 {:.1} ms (n={})",
                        s.p50, s.p99, s.n
                    ),
                );
                res.set("log_latency_p50_ms", s.p50);
                res.set("log_latency_p99_ms", s.p99);
                res.detail(
                    "log_latency",
                    json!({"n": s.n, "p50_ms": s.p50, "p99_ms": s.p99, "mean_ms": s.mean, "min_ms": s.min, "max_ms": s.max}),
                );
            }
            Err(e) => res.note(format!("task log latency: {e:#}")),
        }
    }

    // 6b. Two workers.
    match start_ready_worker(ctx, watcher, "bench-w2", None).await {
        Ok((w2, _)) => {
            let r = async {
                warm(ctx, watcher, 8).await?;
                throughput(ctx, watcher, plan.tput, res, "tput_2w").await
            }
            .await;
            match r {
                Ok(rps) => {
                    log(
                        name,
                        format!("{} runs, 2 workers: {rps:.1} runs/s", plan.tput),
                    );
                    res.set("tput_2w_rps", rps);
                }
                Err(e) => res.note(format!("throughput 2 workers: {e:#}")),
            }
            w2.stop(Duration::from_secs(10)).await;
        }
        Err(e) => res.note(format!("second worker: {e:#}")),
    }
    w1.stop(Duration::from_secs(10)).await;

    // 6c. Rust only: one worker at each --concurrency level above 1.
    if ctx.spec.concurrency_flag {
        for &c in plan.concurrency_levels.iter().filter(|c| **c > 1) {
            let id = format!("bench-c{c}");
            match start_ready_worker(ctx, watcher, &id, Some(c)).await {
                Ok((w, _)) => {
                    let key = format!("tput_1w_c{c}");
                    let r = async {
                        warm(ctx, watcher, 8 * c).await?;
                        throughput(ctx, watcher, plan.tput, res, &key).await
                    }
                    .await;
                    match r {
                        Ok(rps) => {
                            log(
                                name,
                                format!(
                                    "{} runs, 1 worker --concurrency {c}: {rps:.1} runs/s",
                                    plan.tput
                                ),
                            );
                            res.set(&format!("{key}_rps"), rps);
                            share(res, &key, rps);
                        }
                        Err(e) => res.note(format!("throughput --concurrency {c}: {e:#}")),
                    }
                    let own = procs::rss_mib(w.pid).unwrap_or(0.0);
                    let (kids, n) = procs::descendants_rss_mib(w.pid);
                    res.set(&format!("rss_worker_c{c}_total_mib"), own + kids);
                    res.detail(&format!("worker_c{c}_children"), json!(n));
                    w.stop(Duration::from_secs(10)).await;
                }
                Err(e) => res.note(format!("worker --concurrency {c}: {e:#}")),
            }
        }
    }
    Ok(())
}
