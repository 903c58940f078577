//! Issue 13's hostile inputs against the real `pyoco-server up --with-nats` binary: each case
//! of the issue's table is sent as an attacker (or an unlucky user) would send it, the exact
//! answer is asserted, and the old broken behaviour is ruled out — a frozen gateway, a
//! multi-gigabyte process, a blocked wheel sync, a refused watcher, a cancel that waits for
//! the task, a process that outlives its run or the appliance.
//!
//! Throughout, a background task asks `GET /health` every 50 ms on a fresh connection and
//! keeps the slowest answer (it must stay under a second), and the memory of the
//! `pyoco-server` process is measured per case: before, the peak during (`VmHWM` after `echo 5
//! > /proc/<pid>/clear_refs`, else the highest of `VmRSS` samples every 20 ms) and a little
//! after. The table goes to stderr and to the file named by `PYOCO_HOSTILE_REPORT`.
//!
//! Wall time: the merge bombs run first and alone; then the other cases that only talk to the
//! gateway run one after another while the wheel case (mostly pip, in other processes) runs
//! beside them; the cases that need the single local worker run last. The `kill -9` test
//! starts its own appliance.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    fmt::Write as _,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use pyoco_testkit::{
    eventually, nested_merge_defaults, procfs, pyoco_server_binary, python, status_json,
    task_wheel, task_wheel_name, task_wheel_with_metadata, upload_wheel, wide_merge_defaults,
    write_task_module, zip_archive, ThrowawayVenv, UpServer,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::TERMINAL;

/// The task module the cases' flows call (`tasks.py` in the launch directory).
const TASKS: &str = r#""""Tasks of the hostile-input suite."""
import os
import subprocess
import time


def nap(seconds=30):
    time.sleep(float(seconds))
    return "woke up"


def spawn_setsid(pidfile, seconds=30):
    # A child in its own session: out of the runner's process group.
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(float(seconds))
    return "slept"


def huge(n=300000000):
    return "x" * int(n)
"#;

/// The gateway's answer to a merge-key bomb.
const TOO_LARGE: &str = "too_large: merge keys (<<) copy more than 1000000 key/value pairs";

/// A one-task flow: task `task` calling `tasks:<task>` with `defaults` (YAML values).
fn one_task_flow(task: &str, defaults: &[(&str, String)]) -> String {
    let mut yaml = format!("version: 1\nflow:\n  graph: |\n    {task}\n");
    if !defaults.is_empty() {
        yaml.push_str("  defaults:\n");
        for (name, value) in defaults {
            writeln!(yaml, "    {name}: {value}").unwrap();
        }
    }
    write!(yaml, "tasks:\n  {task}:\n    callable: tasks:{task}\n").unwrap();
    yaml
}

/// Every case of issue 13's table but the `kill -9` one, on one appliance (module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_get_exact_answers_and_leave_the_appliance_fast_and_lean() {
    let name = "hostile_inputs_get_exact_answers_and_leave_the_appliance_fast_and_lean";
    let Some(binary) = pyoco_server_binary(name) else {
        return;
    };
    let started = Instant::now();
    raise_open_file_limit();
    // Wheel sync installs into the runners' interpreter: a throwaway one, so the test's
    // packages leave no trace in the shared venv.
    let venv = tokio::task::spawn_blocking(|| ThrowawayVenv::on_top_of(&python()))
        .await
        .unwrap();
    let server = UpServer::start(
        &binary,
        "pyoco-e2e-hostile-",
        |launch| {
            write_task_module(launch, "tasks", TASKS);
        },
        &[
            ("PYOCO_PYTHON", venv.python().as_os_str()),
            ("PYOCO_HTTP_HEADER_READ_TIMEOUT_SEC", OsStr::new("1")),
            ("PYOCO_WHEEL_SYNC_INTERVAL_SEC", OsStr::new("1")),
            ("PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC", OsStr::new("1")),
        ],
    )
    .await;
    let _log = DumpLogOnPanic(&server);
    let suite = Suite::new(&server, &binary);
    let health = HealthProbe::start(server.url("/health"), suite.active.clone());
    let sampler = RssSampler::start(server.pid());

    // The merge bombs first and alone (case 2 is CPU-bound: nothing else competes for the
    // 2 cores), then the other gateway cases one after another with the wheel case beside
    // them (mostly pip, in other processes).
    suite
        .measure(
            "1 nested merge keys",
            &sampler,
            SETTLE,
            suite.nested_merge(),
        )
        .await;
    suite
        .measure("2 wide merges ×2", &sampler, SETTLE, suite.wide_merges())
        .await;
    let gateway_lane = async {
        suite
            .measure("4 1 MB flow_name", &sampler, SETTLE, suite.huge_flow_name())
            .await;
        suite
            .measure("10 bad text", &sampler, SETTLE, suite.bad_text())
            .await;
        suite
            .measure("6 1,000 slow heads", &sampler, SETTLE, suite.slow_heads())
            .await;
        suite
            .measure("5 2,000 watchers", &sampler, SETTLE_LONG, suite.watchers())
            .await;
    };
    let wheel_lane = suite.measure_alongside("3 wheels", &sampler, suite.wheels());
    tokio::join!(gateway_lane, wheel_lane);
    // The cases that need the local worker (one run at a time).
    suite
        .measure("7 cancel sleep(30)", &sampler, SETTLE, suite.cancel_sleep())
        .await;
    suite
        .measure(
            "8 cancel setsid child",
            &sampler,
            SETTLE,
            suite.cancel_setsid(),
        )
        .await;
    suite
        .measure(
            "9 300 MB output",
            &sampler,
            SETTLE_LONG,
            suite.huge_output(),
        )
        .await;

    let health = health.finish().await;
    assert!(
        !procfs::is_gone(server.pid()),
        "the appliance died:\n{}",
        server.output()
    );
    let report = suite.report(&health, sampler.clear_refs, started.elapsed());
    eprintln!("\n{report}");
    if let Some(path) = std::env::var_os("PYOCO_HOSTILE_REPORT") {
        std::fs::write(&path, &report)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.to_string_lossy()));
    }
    assert!(
        health.failures.is_empty(),
        "/health failed during the suite: {:?}",
        health.failures
    );
    assert!(
        health.max < Duration::from_secs(1),
        "/health took {:?} during {}",
        health.max,
        health.max_during
    );
    let huge = suite.row("9 300 MB output");
    assert!(
        huge.after_kib < huge.before_kib + 64 * 1024,
        "a 300 MB task output left pyoco-server at {} MiB (before: {} MiB)",
        huge.after_kib / 1024,
        huge.before_kib / 1024
    );
}

/// `kill -9` of the appliance's own process (not its group) while a task runs that started a
/// child in a session of its own: the guard, the runner, that child and the nats-server all
/// go too (PR_SET_PDEATHSIG and the runner guard's subreaper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_up_takes_the_runner_its_setsid_child_and_nats_with_it() {
    let name = "kill_9_of_up_takes_the_runner_its_setsid_child_and_nats_with_it";
    let Some(binary) = pyoco_server_binary(name) else {
        return;
    };
    let mut server = UpServer::start(
        &binary,
        "pyoco-e2e-kill9-",
        |launch| {
            write_task_module(launch, "tasks", TASKS);
        },
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let pidfile = server.dir().join("setsid-child.pid");
    let flow = one_task_flow(
        "spawn_setsid",
        &[("pidfile", json!(pidfile.to_string_lossy()).to_string())],
    );
    let run_id = submit(&http, &server, &flow).await;
    let child = wait_pidfile(&pidfile, &server).await;
    wait_task_running(&http, &server, &run_id, "spawn_setsid").await;
    let main = server.pid();
    let family = procfs::descendants(main);
    let described: Vec<String> = family
        .iter()
        .map(|p| format!("{p} {}", procfs::cmdline(*p)))
        .collect();
    assert!(family.contains(&child), "{described:#?}");
    assert!(
        described.iter().any(|d| d.contains("nats-server")),
        "{described:#?}"
    );
    assert!(
        described
            .iter()
            .filter(|d| d.contains("pyoco_runner.py"))
            .count()
            >= 2,
        "a guard and a runner: {described:#?}"
    );

    kill(Pid::from_raw(main), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    server.wait_exit(Duration::from_secs(5)).await;
    let deadline = killed + Duration::from_secs(5);
    let left = loop {
        let left: Vec<i32> = family
            .iter()
            .copied()
            .filter(|p| !procfs::is_gone(*p))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = killed.elapsed();
    let described_left: Vec<String> = left
        .iter()
        .map(|p| format!("{p} {}", procfs::cmdline(*p)))
        .collect();
    for pid in &left {
        // Ours (recorded before the kill): do not leave them behind for the next test.
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "still alive {took:?} after kill -9 of pyoco-server: {described_left:#?}\n{}",
        server.output()
    );
    let data = server.data_dir();
    assert_eq!(procfs::processes_mentioning(&data), vec![]);
    eprintln!(
        "kill -9 of pyoco-server: its {} processes (nats-server, guard, runner, setsid child) \
         gone after {took:?}",
        family.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// The running appliance and what the cases share.
struct Suite<'a> {
    server: &'a UpServer,
    /// The binary is a release build (a debug build computes ~8 times slower).
    release: bool,
    http: reqwest::Client,
    /// Cases running now (the health probe says which were running at its slowest answer).
    active: Arc<Mutex<BTreeSet<&'static str>>>,
    rows: Mutex<Vec<Row>>,
}

/// One case's line of the report.
#[derive(Debug, Clone)]
struct Row {
    case: &'static str,
    answer: String,
    started: Instant,
    took: Duration,
    /// Ran beside other cases (its peak is sampled).
    alongside: bool,
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    /// `VmHWM` (after clear_refs) or `sampled` (VmRSS every 20 ms).
    peak_from: &'static str,
    nats_after_kib: Option<u64>,
    runner_peak_kib: Option<u64>,
    runner_after_kib: Option<u64>,
}

/// How long after a case its "after" memory is read: a second, or three for the cases whose
/// memory should be given back (the watchers', the 300 MB output's).
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_LONG: Duration = Duration::from_secs(3);

impl<'a> Suite<'a> {
    fn new(server: &'a UpServer, binary: &std::path::Path) -> Suite<'a> {
        Suite {
            server,
            release: binary.components().any(|c| c.as_os_str() == "release"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            active: Arc::default(),
            rows: Mutex::default(),
        }
    }

    fn pid(&self) -> i32 {
        self.server.pid()
    }

    /// A time limit for CPU-bound work of the binary: `release` as is, 15 times that for a
    /// debug build (~8 times slower, and CI runs other tests beside this one on 2 cores).
    fn quick(&self, release: Duration) -> Duration {
        if self.release {
            release
        } else {
            release * 15
        }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The appliance's nats-server child.
    fn nats_pid(&self) -> Option<i32> {
        procfs::descendants(self.pid())
            .into_iter()
            .find(|p| procfs::cmdline(*p).contains("nats-server"))
    }

    /// The runner processes (guards and runners) of the local worker.
    fn runner_pids(&self) -> Vec<i32> {
        procfs::descendants(self.pid())
            .into_iter()
            .filter(|p| procfs::cmdline(*p).contains("pyoco_runner.py"))
            .collect()
    }

    /// Run `case` alone (no other case resets the peak meanwhile) and record its row: the
    /// peak is `VmHWM` after clear_refs, or the samples' highest.
    async fn measure(
        &self,
        case: &'static str,
        sampler: &RssSampler,
        settle: Duration,
        run: impl Future<Output = String>,
    ) {
        let pid = self.pid();
        let before_kib = procfs::rss_kib(pid).unwrap_or(0);
        let runners = self.runner_pids();
        let reset = sampler.clear_refs && procfs::reset_peak_rss(pid);
        for runner in &runners {
            procfs::reset_peak_rss(*runner);
        }
        let (answer, started, took, sampled) = self.timed(case, sampler, run).await;
        let (peak_kib, peak_from) = match procfs::status_kib(pid, "VmHWM") {
            Some(hwm) if reset => (hwm, "VmHWM"),
            _ => (sampled, "sampled"),
        };
        let runner_peak_kib = self
            .runner_pids()
            .iter()
            .filter_map(|p| procfs::status_kib(*p, "VmHWM"))
            .max();
        tokio::time::sleep(settle).await;
        self.record(Row {
            case,
            answer,
            started,
            took,
            alongside: false,
            before_kib,
            peak_kib,
            after_kib: procfs::rss_kib(pid).unwrap_or(0),
            peak_from,
            nats_after_kib: self.nats_pid().and_then(procfs::rss_kib),
            runner_peak_kib,
            runner_after_kib: self
                .runner_pids()
                .iter()
                .filter_map(|p| procfs::rss_kib(*p))
                .max(),
        });
    }

    /// Run `case` beside others: its peak is the highest sample while it ran.
    async fn measure_alongside(
        &self,
        case: &'static str,
        sampler: &RssSampler,
        run: impl Future<Output = String>,
    ) {
        let pid = self.pid();
        let before_kib = procfs::rss_kib(pid).unwrap_or(0);
        let (answer, started, took, peak_kib) = self.timed(case, sampler, run).await;
        self.record(Row {
            case,
            answer,
            started,
            took,
            alongside: true,
            before_kib,
            peak_kib,
            after_kib: procfs::rss_kib(pid).unwrap_or(0),
            peak_from: "sampled",
            nats_after_kib: self.nats_pid().and_then(procfs::rss_kib),
            runner_peak_kib: None,
            runner_after_kib: self
                .runner_pids()
                .iter()
                .filter_map(|p| procfs::rss_kib(*p))
                .max(),
        });
    }

    /// `run` as the active case `case`: its answer, when it started, how long it took and
    /// the highest RSS sample meanwhile.
    async fn timed(
        &self,
        case: &'static str,
        sampler: &RssSampler,
        run: impl Future<Output = String>,
    ) -> (String, Instant, Duration, u64) {
        self.active.lock().unwrap().insert(case);
        let t0 = Instant::now();
        let answer = run.await;
        let took = t0.elapsed();
        self.active.lock().unwrap().remove(case);
        assert!(
            !procfs::is_gone(self.pid()),
            "pyoco-server died during case {case}:\n{}",
            self.server.output()
        );
        (answer, t0, took, sampler.max_since(t0))
    }

    fn record(&self, row: Row) {
        eprintln!(
            "hostile case {} done in {:?}: {}",
            row.case, row.took, row.answer
        );
        self.rows.lock().unwrap().push(row);
    }

    fn row(&self, case: &str) -> Row {
        let rows = self.rows.lock().unwrap();
        rows.iter()
            .find(|r| r.case == case)
            .unwrap_or_else(|| panic!("no row for {case}"))
            .clone()
    }

    /// The markdown report: the table, the second table, the health probe's numbers.
    fn report(&self, health: &HealthStats, clear_refs: bool, wall: Duration) -> String {
        let mut rows = self.rows.lock().unwrap().clone();
        let number = |case: &str| -> u32 { case.split(' ').next().unwrap().parse().unwrap() };
        rows.sort_by_key(|r| number(r.case));
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let opt_mib = |kib: Option<u64>| kib.map(mib).unwrap_or_else(|| "–".into());
        let mut out = String::from(
            "### Hostile inputs against `pyoco-server up --with-nats`\n\n\
             | case | answer | peak RSS MiB | RSS after MiB |\n|---|---|---|---|\n",
        );
        for r in &rows {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                r.case,
                r.answer.replace('|', "\\|"),
                mib(r.peak_kib),
                mib(r.after_kib)
            )
            .unwrap();
        }
        out.push_str(
            "\n| case | took | RSS before MiB | peak from | nats-server RSS after MiB | \
             runner peak / after MiB |\n|---|---|---|---|---|---|\n",
        );
        for r in &rows {
            writeln!(
                out,
                "| {} | {:.2} s | {} | {} | {} | {} / {} |",
                r.case,
                r.took.as_secs_f64(),
                mib(r.before_kib),
                r.peak_from,
                opt_mib(r.nats_after_kib),
                opt_mib(r.runner_peak_kib),
                opt_mib(r.runner_after_kib),
            )
            .unwrap();
        }
        writeln!(out).unwrap();
        for r in rows.iter().filter(|r| r.alongside) {
            let ended = r.started + r.took;
            let beside: Vec<&str> = rows
                .iter()
                .filter(|o| o.case != r.case && o.started < ended && r.started < o.started + o.took)
                .map(|o| o.case.split(' ').next().unwrap())
                .collect();
            writeln!(
                out,
                "Case {} ran beside cases {} (its peak is the highest 20 ms sample meanwhile).",
                r.case,
                beside.join(", ")
            )
            .unwrap();
        }
        writeln!(
            out,
            "The others ran one at a time, peaks from {}. `GET /health`: {} polls every 50 ms \
             on fresh connections, slowest {:.1} ms (during {}). Wall time {:.1} s.",
            if clear_refs {
                "VmHWM after clear_refs"
            } else {
                "VmRSS samples every 20 ms (clear_refs refused)"
            },
            health.polls,
            health.max.as_secs_f64() * 1000.0,
            health.max_during,
            wall.as_secs_f64()
        )
        .unwrap();
        out
    }

    /// Case 1: ~1 KB of merge keys nested 8 levels deep (10^8 pairs for PyYAML).
    async fn nested_merge(&self) -> String {
        let yaml = format!(
            "version: 1\nflow:\n  graph: a\n  defaults:\n{}",
            nested_merge_defaults(8)
        );
        assert!(yaml.len() < 1500, "{}", yaml.len());
        let t0 = Instant::now();
        let (status, body) = self.post_yaml(yaml.into_bytes(), b"nested").await;
        let took = t0.elapsed();
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid workflow yaml", "reason": TOO_LARGE})
            )
        );
        self.assert_health_ok().await;
        format!("422 `{TOO_LARGE}` in {} ms", took.as_millis())
    }

    /// Case 2: two 50 KB documents with 4,000 keys merged 300 times, at once.
    async fn wide_merges(&self) -> String {
        let yaml = format!(
            "version: 1\nflow:\n  graph: a\n  defaults:\n{}",
            wide_merge_defaults(4000, 300)
        );
        let size = yaml.len();
        let one = || async {
            let t0 = Instant::now();
            let answer = self.post_yaml(yaml.clone().into_bytes(), b"wide").await;
            (answer, t0.elapsed())
        };
        let ((a, took_a), (b, took_b)) = tokio::join!(one(), one());
        let want = (
            422,
            json!({"detail": "invalid workflow yaml", "reason": TOO_LARGE}),
        );
        assert_eq!(a, want);
        assert_eq!(b, want);
        let slowest = took_a.max(took_b);
        // The budget runs out after 250 of the 300 merges, a million pairs built and
        // deduplicated: ~0.4 s of CPU for one document in a release build, 2-3 s in a debug
        // one (3.8-6.7 s for the two on a loaded 2-core machine). 0.5.1 held two async threads
        // for 6 s in release (~50 s in debug), and /health with them.
        let quick = self.quick(Duration::from_secs(1));
        assert!(slowest < quick, "{slowest:?} (limit {quick:?})");
        self.assert_health_ok().await;
        format!(
            "both 422 `too_large` ({} KB each), slowest in {} ms",
            size / 1000,
            slowest.as_millis()
        )
    }

    /// Case 4: `POST /runs` with a 1 MiB `flow_name`: refused before anything is stored or
    /// published.
    async fn huge_flow_name(&self) -> String {
        let huge = "f".repeat(1 << 20);
        let response = self
            .http
            .post(self.url("/runs"))
            .json(&json!({"flow_name": huge}))
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(response).await;
        assert_eq!(
            (status, &body),
            (
                422,
                &json!({"detail": "invalid flow_name",
                        "reason": "flow_name is 1048576 bytes; the limit is 1024 bytes"})
            )
        );
        // The run index follows the KV bucket within milliseconds: a stored run would show.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, runs) = self.get_json("/runs?limit=200").await;
        assert_eq!(status, 200, "{runs}");
        let long: Vec<usize> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["flow_name"].as_str())
            .map(str::len)
            .filter(|&n| n > 1024)
            .collect();
        assert!(long.is_empty(), "runs with long flow names: {long:?}");
        "422 `flow_name is 1048576 bytes; the limit is 1024 bytes`; no run".to_string()
    }

    /// Case 10: text parts that are not UTF-8, a 100,000-character key, `version: 2`.
    async fn bad_text(&self) -> String {
        // FF FE then UTF-16LE "main" as the flow name.
        let utf16_name = vec![0xff, 0xfe, b'm', 0, b'a', 0, b'i', 0, b'n', 0];
        let (status, body) = self
            .post_yaml(b"version: 1\nflow: {graph: a}\n".to_vec(), &utf16_name)
            .await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid form field",
                       "reason": "the flow_name part is not UTF-8 text"})
            )
        );
        // The flow.yaml itself as UTF-16LE with its byte order mark.
        let mut utf16_yaml = vec![0xff, 0xfe];
        for unit in "version: 1\nflow: {graph: a}\n".encode_utf16() {
            utf16_yaml.extend(unit.to_le_bytes());
        }
        let (status, body) = self.post_yaml(utf16_yaml, b"utf16").await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid workflow yaml", "reason": "invalid_utf8"})
            )
        );
        let long_key = format!(
            "flow:\n  graph: a\n  defaults:\n    {}: 1\n",
            "k".repeat(100_000)
        );
        let (status, body) = self.post_yaml(long_key.into_bytes(), b"long-key").await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid workflow yaml",
                       "reason": "invalid_yaml: mapping values are not allowed in this context \
                                  at byte 100033 line 4 column 100005"})
            )
        );
        let (status, body) = self
            .post_yaml(b"flow: {graph: a}\nversion: 2\n".to_vec(), b"v2")
            .await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid workflow yaml",
                       "reason": "unsupported_version: 2 (only version 1 exists)"})
            )
        );
        "422 ×4: `the flow_name part is not UTF-8 text`, `invalid_utf8`, `invalid_yaml: mapping \
         values are not allowed…` (100,000-char key), `unsupported_version: 2…`"
            .to_string()
    }

    /// Case 6: 1,000 connections that send part of a request head and then nothing.
    async fn slow_heads(&self) -> String {
        const CONNECTIONS: usize = 1000;
        let mut waits = JoinSet::new();
        for _ in 0..CONNECTIONS {
            let mut conn = TcpStream::connect(self.server.addr()).await.unwrap();
            conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
            let sent = Instant::now();
            waits.spawn(async move {
                let mut buf = [0u8; 1024];
                let closed = async {
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                };
                tokio::time::timeout(Duration::from_secs(5), closed)
                    .await
                    .map(|()| sent.elapsed())
            });
        }
        // Served meanwhile (the probe polls too).
        self.assert_health_ok().await;
        let mut slowest = Duration::ZERO;
        let mut open = 0;
        while let Some(closed) = waits.join_next().await {
            match closed.unwrap() {
                Ok(after) => slowest = slowest.max(after),
                Err(_) => open += 1,
            }
        }
        assert_eq!(
            open, 0,
            "connections still open 5 s after their partial head"
        );
        self.assert_health_ok().await;
        format!(
            "all {CONNECTIONS} closed by the server, the last {:.1} s after its partial head",
            slowest.as_secs_f64()
        )
    }

    /// Case 5: 2,000 watchers of one run; a status change reaches them all.
    async fn watchers(&self) -> String {
        const WATCHERS: usize = 2000;
        // A tag no worker serves: the run stays PENDING until the cancel.
        let (status, body) = status_json(
            self.http
                .post(self.url("/runs"))
                .json(&json!({"flow_name": "watched", "tag": "nobody"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let run_id = body["run_id"].as_str().unwrap().to_string();
        let warnings_before = warning_lines(&self.server.output());

        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let connecting = Arc::new(tokio::sync::Semaphore::new(200));
        let mut watchers = JoinSet::new();
        for _ in 0..WATCHERS {
            let addr = self.server.addr().to_string();
            let run_id = run_id.clone();
            let ready = ready_tx.clone();
            let connecting = connecting.clone();
            watchers.spawn(async move {
                let permit = connecting.acquire_owned().await.unwrap();
                let mut watch = SseWatch::open(&addr, &run_id).await;
                let first = watch.read_until("PENDING").await;
                drop(permit);
                let _ = ready.send(first.clone());
                first?;
                watch.read_until("CANCELLING").await?;
                Ok::<Instant, String>(Instant::now())
            });
        }
        drop(ready_tx);
        let opened = Instant::now();
        for n in 0..WATCHERS {
            let first = tokio::time::timeout(Duration::from_secs(20), ready_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {n} of {WATCHERS} watchers answered in 20 s"))
                .unwrap();
            if let Err(e) = first {
                panic!("watcher {n} of {WATCHERS}: {e}");
            }
        }
        let all_open = opened.elapsed();
        let cancelled = Instant::now();
        let (status, body) = status_json(
            self.http
                .post(self.url(&format!("/runs/{run_id}/cancel")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &body["status"]), (200, &json!("CANCELLING")));
        let mut slowest = Duration::ZERO;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut seen = 0;
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, watchers.join_next()).await {
            let at = done.unwrap().unwrap_or_else(|e| panic!("a watcher: {e}"));
            slowest = slowest.max(at.saturating_duration_since(cancelled));
            seen += 1;
        }
        assert_eq!(seen, WATCHERS, "watchers that saw the cancel within 15 s");
        let warnings = warning_lines(&self.server.output()) - warnings_before;
        assert!(
            warnings < 100,
            "{warnings} warnings logged while {WATCHERS} watchers were open:\n{}",
            self.server.output()
        );
        format!(
            "all {WATCHERS} answered 200 (open in {:.1} s); CANCELLING reached every one within \
             {} ms; {warnings} warning lines",
            all_open.as_secs_f64(),
            slowest.as_millis()
        )
    }

    /// Case 3: broken wheels are refused; a wheel pip refuses is listed as failed and does
    /// not stop a later upload from being installed and run.
    async fn wheels(&self) -> String {
        // No WHEEL file.
        let no_wheel_file = zip_archive(&[
            (
                "pyoco_hostile_nowheel-1.0.dist-info/METADATA",
                b"Name: pyoco-hostile-nowheel\nVersion: 1.0\n",
            ),
            ("pyoco_hostile_nowheel-1.0.dist-info/RECORD", b""),
        ]);
        let (status, body) = self
            .upload("pyoco_hostile_nowheel-1.0-py3-none-any.whl", no_wheel_file)
            .await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid wheel",
                       "reason": "pyoco_hostile_nowheel-1.0.dist-info/WHEEL is missing"})
            )
        );
        // A member that would be written two levels above the install directory.
        let escape = zip_archive(&[
            ("../../x", b"pwned\n"),
            (
                "pyoco_hostile_escape-1.0.dist-info/METADATA",
                b"Name: pyoco-hostile-escape\nVersion: 1.0\n",
            ),
            (
                "pyoco_hostile_escape-1.0.dist-info/WHEEL",
                b"Wheel-Version: 1.0\n",
            ),
            ("pyoco_hostile_escape-1.0.dist-info/RECORD", b""),
        ]);
        let (status, body) = self
            .upload("pyoco_hostile_escape-1.0-py3-none-any.whl", escape)
            .await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({"detail": "invalid wheel",
                       "reason": "member \"../../x\" leaves the install directory (..)"})
            )
        );

        let source = |who: &str| {
            format!("def greet(name=\"world\"):\n    return \"hello \" + name + \" from {who}\"\n")
        };
        // A valid wheel after them, and one that passes the gateway's checks but not pip's.
        let good = task_wheel_name("pyoco_hostile_a", "1.0");
        let refused = task_wheel_name("pyoco_hostile_py4", "1.0");
        let later = task_wheel_name("pyoco_hostile_c", "1.0");
        let (status, body) = self
            .upload(&good, task_wheel("pyoco_hostile_a", "1.0", &source("a")))
            .await;
        assert_eq!(status, 200, "{body}");
        let py4 = task_wheel_with_metadata(
            "pyoco_hostile_py4",
            "1.0",
            &source("py4"),
            "Requires-Python: >=4\n",
        );
        let (status, body) = self.upload(&refused, py4).await;
        assert_eq!(status, 200, "{body}");
        let ws = self
            .wait_wheel_sync("the first wheel installed, the second failed", |ws| {
                names(&ws["installed_wheels"]).contains(&good)
                    && names(&ws["failed_wheels"]).contains(&refused)
            })
            .await;
        assert_eq!(names(&ws["failed_wheels"]), [refused.as_str()], "{ws}");
        let error = ws["failed_wheels"][0]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with(&format!("wheel install failed (code=1): {refused}: "))
                && error.contains("requires a different Python"),
            "{error}"
        );
        assert_eq!(ws["last_result"], "error", "{ws}");
        let (status, history) = self.get_json("/wheels/history?action=install_failed").await;
        assert_eq!(status, 200, "{history}");
        let failed: Vec<(&str, &str)> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["wheel_name"].as_str().unwrap_or_default(),
                    r["worker_id"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(failed, [(refused.as_str(), "worker")], "{history}");

        // Uploaded after the failure: still installed (0.5.1's syncs all stopped at it).
        let (status, body) = self
            .upload(&later, task_wheel("pyoco_hostile_c", "1.0", &source("c")))
            .await;
        assert_eq!(status, 200, "{body}");
        let ws = self
            .wait_wheel_sync("the wheel uploaded after the failure installed", |ws| {
                names(&ws["installed_wheels"]).contains(&later)
            })
            .await;
        assert_eq!(names(&ws["failed_wheels"]), [refused.as_str()], "{ws}");

        let flow = "version: 1\nflow:\n  graph: |\n    a >> c\n  defaults:\n    name: hostile\n\
                    tasks:\n  a:\n    callable: pyoco_hostile_a:greet\n  c:\n    \
                    callable: pyoco_hostile_c:greet\n";
        let run_id = submit(&self.http, self.server, flow).await;
        let run = self
            .wait_status(&run_id, TERMINAL, Duration::from_secs(30))
            .await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        let (_, tasks) = self.get_json(&format!("/runs/{run_id}/tasks")).await;
        assert_eq!(tasks["task_records"]["a"]["output"], "hello hostile from a");
        assert_eq!(tasks["task_records"]["c"]["output"], "hello hostile from c");
        "422 `…/WHEEL is missing`, 422 `member \"../../x\" leaves the install directory (..)`; \
         a valid wheel installed; the Requires-Python >=4 wheel in failed_wheels and history \
         (install_failed); a wheel uploaded after it installed; its run COMPLETED"
            .to_string()
    }

    /// Case 7: cancel of a task blocked in `time.sleep(30)`.
    async fn cancel_sleep(&self) -> String {
        let run_id = submit(
            &self.http,
            self.server,
            &one_task_flow("nap", &[("seconds", "30".into())]),
        )
        .await;
        wait_task_running(&self.http, self.server, &run_id, "nap").await;
        let took = self.cancel_and_wait(&run_id).await;
        assert!(
            took < Duration::from_millis(2500),
            "CANCELLED after {took:?}"
        );
        format!("CANCELLED {} ms after the cancel", took.as_millis())
    }

    /// Case 8: cancel of a task whose child called `setsid`: the child goes too.
    async fn cancel_setsid(&self) -> String {
        let pidfile = self.server.dir().join("case8-child.pid");
        let flow = one_task_flow(
            "spawn_setsid",
            &[("pidfile", json!(pidfile.to_string_lossy()).to_string())],
        );
        let run_id = submit(&self.http, self.server, &flow).await;
        let child = wait_pidfile(&pidfile, self.server).await;
        assert!(procfs::cmdline(child).starts_with("sleep 300"));
        wait_task_running(&self.http, self.server, &run_id, "spawn_setsid").await;
        let cancelled = Instant::now();
        let took = self.cancel_and_wait(&run_id).await;
        let gone = loop {
            if procfs::is_gone(child) {
                break cancelled.elapsed();
            }
            if cancelled.elapsed() >= Duration::from_secs(3) {
                let running = procfs::cmdline(child);
                let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
                panic!("the setsid child {child} ({running}) still ran 3 s after the cancel");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        format!(
            "CANCELLED after {} ms; setsid child gone {} ms after the cancel",
            took.as_millis(),
            gone.as_millis()
        )
    }

    /// Case 9: a task returning 300 MB.
    async fn huge_output(&self) -> String {
        let run_id = submit(&self.http, self.server, &one_task_flow("huge", &[])).await;
        let t0 = Instant::now();
        let run = self
            .wait_status(&run_id, TERMINAL, Duration::from_secs(40))
            .await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        let took = t0.elapsed();
        let (status, tasks) = self.get_json(&format!("/runs/{run_id}/tasks")).await;
        assert_eq!(status, 200);
        let output = tasks["task_records"]["huge"]["output"].as_str().unwrap();
        assert_eq!(
            output,
            "…[output omitted: 300000002 bytes as JSON, over the run snapshot limit of 262144 \
             bytes]"
        );
        format!(
            "COMPLETED in {:.1} s; output `…[output omitted: 300000002 bytes as JSON, over the \
             run snapshot limit of 262144 bytes]`",
            took.as_secs_f64()
        )
    }

    /// `POST /runs/{id}/cancel`, then wait for CANCELLED; returns how long that took.
    async fn cancel_and_wait(&self, run_id: &str) -> Duration {
        let cancelled = Instant::now();
        let (status, body) = status_json(
            self.http
                .post(self.url(&format!("/runs/{run_id}/cancel")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let run = self
            .wait_status(run_id, TERMINAL, Duration::from_secs(10))
            .await;
        assert_eq!(run["status"], "CANCELLED", "{run}");
        cancelled.elapsed()
    }

    async fn wait_status(&self, run_id: &str, statuses: &[&str], timeout: Duration) -> Value {
        pyoco_testkit::wait_status(
            &self.http,
            self.server.base_url(),
            run_id,
            statuses,
            timeout,
        )
        .await
    }

    /// The local worker's `wheel_sync` (from `GET /workers`) once `check` holds (60 s).
    async fn wait_wheel_sync(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, workers) = self.get_json("/workers").await;
            assert_eq!(status, 200, "{workers}");
            let ws = workers
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["worker_id"] == "worker")
                .map(|w| w["wheel_sync"].clone())
                .unwrap_or(Value::Null);
            if check(&ws) {
                return ws;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s; wheel_sync: {ws}\n{}",
                self.server.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post_yaml(&self, workflow: Vec<u8>, flow_name: &[u8]) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(workflow)
            .file_name("flow.yaml")
            .mime_str("application/x-yaml")
            .unwrap();
        let form = reqwest::multipart::Form::new().part("workflow", part).part(
            "flow_name",
            reqwest::multipart::Part::bytes(flow_name.to_vec()),
        );
        let response = self
            .http
            .post(self.url("/runs/yaml"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        status_json(response).await
    }

    async fn upload(&self, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        upload_wheel(&self.http, self.server.base_url(), name, bytes, &[]).await
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        status_json(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn assert_health_ok(&self) {
        let response = tokio::time::timeout(
            Duration::from_secs(1),
            self.http.get(self.url("/health")).send(),
        )
        .await
        .expect("/health within 1 s")
        .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// The `wheel_name`s of a `wheel_sync` list.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().or_else(|| i["wheel_name"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Lines of the log that are warnings (ours: ` WARN `; the runner's: `WARNING`).
fn warning_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("WARN")).count()
}

/// Submit `yaml` (flow name `hostile`, tag `default`); returns the run id.
async fn submit(http: &reqwest::Client, server: &UpServer, yaml: &str) -> String {
    pyoco_testkit::submit_yaml(http, server.base_url(), yaml, "hostile", "default").await
}

/// Wait until `task` of `run_id` is RUNNING (its function has been called).
async fn wait_task_running(http: &reqwest::Client, server: &UpServer, run_id: &str, task: &str) {
    let url = server.url(&format!("/runs/{run_id}/tasks"));
    eventually(
        Duration::from_secs(30),
        &format!("{task} RUNNING"),
        || async {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (body["tasks"][task] == "RUNNING").then_some(())
        },
    )
    .await;
}

/// The pid a `spawn_setsid` task wrote to `pidfile` (30 s at most).
async fn wait_pidfile(pidfile: &std::path::Path, server: &UpServer) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            return text.trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no {} after 30 s:\n{}",
            pidfile.display(),
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raise this process's open-file soft limit to the hard limit (2,000 watchers, 1,000 slow
/// connections); the binary inherits it.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= 4096,
        "the open-file limit is {soft}: 2,000 watchers need more"
    );
}

/// An SSE watch on a raw connection: the test reads every byte itself.
struct SseWatch {
    conn: TcpStream,
    seen: Vec<u8>,
    head_checked: bool,
}

impl SseWatch {
    async fn open(addr: &str, run_id: &str) -> SseWatch {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /runs/{run_id}/watch HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        SseWatch {
            conn,
            seen: Vec::new(),
            head_checked: false,
        }
    }

    /// Read until `needle` has arrived (after a `200` head); the error says what came instead.
    async fn read_until(&mut self, needle: &str) -> Result<(), String> {
        let mut buf = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if !self.head_checked {
                if let Some(end) = text.find("\r\n\r\n") {
                    if !text.starts_with("HTTP/1.1 200") {
                        return Err(format!("answered {text:?}"));
                    }
                    self.seen.drain(..end + 4);
                    self.head_checked = true;
                    continue;
                }
            } else if text.contains(needle) {
                self.seen.clear();
                return Ok(());
            }
            match self.conn.read(&mut buf).await {
                Ok(0) => return Err(format!("closed before {needle}; got {text:?}")),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("{e} before {needle}; got {text:?}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements beside the cases
// ---------------------------------------------------------------------------------------------

/// What the `/health` probe saw.
struct HealthStats {
    polls: u64,
    max: Duration,
    max_during: String,
    failures: Vec<String>,
}

/// `GET /health` every 50 ms on a fresh connection, for the whole suite.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<HealthStats>,
}

impl HealthProbe {
    fn start(url: String, active: Arc<Mutex<BTreeSet<&'static str>>>) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut stats = HealthStats {
                polls: 0,
                max: Duration::ZERO,
                max_during: String::new(),
                failures: Vec::new(),
            };
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopping.load(Ordering::Relaxed) {
                tick.tick().await;
                let t0 = Instant::now();
                let answer = http.get(&url).send().await;
                let took = t0.elapsed();
                stats.polls += 1;
                let during = || {
                    let active = active.lock().unwrap();
                    if active.is_empty() {
                        "no case".to_string()
                    } else {
                        active.iter().copied().collect::<Vec<_>>().join(" + ")
                    }
                };
                match answer {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => stats
                        .failures
                        .push(format!("HTTP {} ({})", r.status(), during())),
                    Err(e) => stats.failures.push(format!("{e} ({})", during())),
                }
                if took > stats.max {
                    stats.max = took;
                    stats.max_during = during();
                }
            }
            stats
        });
        HealthProbe { stop, task }
    }

    async fn finish(self) -> HealthStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// VmRSS of one process every 20 ms, for peaks of cases that run beside others (and where
/// clear_refs is refused).
struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    /// Whether `echo 5 > /proc/<pid>/clear_refs` works here.
    clear_refs: bool,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: i32) -> RssSampler {
        let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let into = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let Some(kib) = procfs::rss_kib(pid) else {
                    return;
                };
                into.lock().unwrap().push((Instant::now(), kib));
            }
        });
        let clear_refs = procfs::reset_peak_rss(pid);
        if !clear_refs {
            eprintln!("clear_refs refused: peaks are VmRSS samples every 20 ms");
        }
        RssSampler {
            samples,
            clear_refs,
            task,
        }
    }

    /// The highest sample since `since` (and now).
    fn max_since(&self, since: Instant) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints the end of the appliance's log when the test fails.
struct DumpLogOnPanic<'a>(&'a UpServer);

impl Drop for DumpLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.output();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last lines of pyoco-server's log ---\n{}",
                tail.join("\n")
            );
        }
    }
}
