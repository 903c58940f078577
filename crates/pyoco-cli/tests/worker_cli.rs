//! The `pyoco-worker` binary against a real nats-server and the real pyoco.

use std::{path::Path, process::Stdio, time::Duration};

use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::{eventually, python, TestNats};

const TASKS_PY: &str = "def hello():\n    return 'hi'\n";
const FLOW_JSON: &str =
    r#""version: 1\nflow:\n  graph: |\n    t1\ntasks:\n  t1:\n    callable: cli_tasks:hello\n""#;

fn worker_command(dir: &Path, url: &str) -> tokio::process::Command {
    worker_command_as(dir, url, "cli-worker")
}

fn worker_command_as(dir: &Path, url: &str, worker_id: &str) -> tokio::process::Command {
    std::fs::create_dir_all(dir.join("cwd")).unwrap();
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::write(dir.join("tasks").join("cli_tasks.py"), TASKS_PY).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pyoco-worker"));
    cmd.args(["--nats-url", url, "--worker-id", worker_id])
        .current_dir(dir.join("cwd"))
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_DATA_DIR", dir.join("data"))
        .env("PYOCO_PYTHON", python())
        .env("PYOCO_LOG_FORMAT", "text")
        // Relative on purpose: the worker makes it absolute for its runners.
        .env("PYTHONPATH", "../tasks")
        .env_remove("PYOCO_WORKER_TAGS")
        .env_remove("PYOCO_DEFAULT_TAG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn store(nats: &TestNats) -> Store {
    Store::connect(
        &nats.url(),
        "test",
        StoreConfig::default(),
        DEFAULT_CONNECT_TIMEOUT,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_executes_a_queued_job_and_exits_zero() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let run_id = "cli-run-1";
    let pending = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"tenant_id":null,"api_key_id":null,"status":"PENDING","params":{{}},"tasks":{{}},"task_records":{{}},"start_time":null,"end_time":null,"heartbeat_at":1.0,"updated_at":1.0,"error":null}}"#
    );
    store.runs().create(run_id, pending).await.unwrap();
    let job = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"params":{{}},"workflow_yaml":{FLOW_JSON},"submitted_at":1.0}}"#
    );
    store.publish_job("default", job.into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = worker_command(dir.path(), &nats.url())
        .args(["--run-once", "--poll-timeout", "5"])
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    // The log lines are on stdout (as 0.5.1), a startup error on stderr.
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);

    let snap = store.runs().get(run_id).await.unwrap().unwrap();
    let snap = String::from_utf8_lossy(&snap.value);
    assert!(snap.contains(r#""status":"COMPLETED""#), "{snap}\n{stderr}");
    assert!(snap.contains(r#""output":"hi""#), "{snap}");
    assert!(snap.contains(r#""worker_id":"cli-worker""#), "{snap}");
    assert!(
        !dir.path().join("cwd").join("artifacts").exists(),
        "pyoco's ./artifacts landed in the user's directory"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_gracefully_with_exit_130() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = worker_command(dir.path(), &nats.url())
        .args(["--concurrency", "2"])
        .spawn()
        .unwrap();
    let workers = store.workers().clone();
    eventually(Duration::from_secs(30), "worker registered", || {
        let workers = workers.clone();
        async move { workers.get("cli-worker").await.ok().flatten().map(|_| ()) }
    })
    .await;

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("worker exits after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let rec = store.workers().get("cli-worker").await.unwrap().unwrap();
    let rec = String::from_utf8_lossy(&rec.value);
    assert!(rec.contains(r#""state":"STOPPED_GRACEFUL""#), "{rec}");
    assert!(rec.contains(r#""tags":["default"]"#), "{rec}");
}

#[test]
fn help_documents_wheel_sync_and_concurrency() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pyoco-worker"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--wheel-sync"), "{help}");
    assert!(help.contains("PYOCO_WHEEL_SYNC_ENABLED"), "{help}");
    assert!(help.contains("--wheel-sync-dir"), "{help}");
    assert!(!help.contains("not implemented"), "{help}");
    assert!(help.contains("--concurrency"), "{help}");
}

/// A bad runner setting in the `.env` stops the worker at start with the standard message naming
/// the variable, its value and the file, before it connects anywhere; so does a bad
/// `--flow-resolver` (validated as `PYOCO_FLOW_RESOLVER`).
#[test]
fn a_bad_runner_setting_stops_the_worker_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES=-1\nPYOCO_RUNNER_TEE_TASK_OUTPUT=abc\n",
    )
    .unwrap();
    let worker = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pyoco-worker"));
        cmd.current_dir(dir.path())
            .env("PYOCO_LOAD_DOTENV", "1")
            .env_remove("PYOCO_ENV_FILE")
            .env("PYOCO_DATA_DIR", dir.path().join("data"))
            .env("PYOCO_NATS_URL", "nats://127.0.0.1:1")
            .env_remove("PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES")
            .env_remove("PYOCO_RUNNER_TEE_TASK_OUTPUT")
            .env_remove("PYOCO_FLOW_RESOLVER");
        cmd
    };
    let out = worker().arg("--run-once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("[pyoco-worker][ERR-PYOCO-0018] invalid configuration:"),
        "{err}"
    );
    assert!(
        err.contains("PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES=\"-1\" (from file "),
        "{err}"
    );
    assert!(err.contains("expected an integer ≥ 0"), "{err}");
    assert!(
        err.contains("PYOCO_RUNNER_TEE_TASK_OUTPUT=\"abc\""),
        "{err}"
    );

    std::fs::remove_file(dir.path().join(".env")).unwrap();
    let out = worker()
        .args(["--run-once", "--flow-resolver", "flows/resolver.py"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PYOCO_FLOW_RESOLVER=\"flows/resolver.py\""),
        "{err}"
    );
    assert!(
        err.contains("module:function"),
        "says what is expected: {err}"
    );
}

/// Tasks of the crash tests: `slow` leaves a line in its marker file, then sleeps.
const CRASH_TASKS_PY: &str = "import time\n\
\n\
def slow(marker, seconds=2.0):\n    with open(marker, 'a') as fh:\n        fh.write('ran\\n')\n    time.sleep(float(seconds))\n    return 'slept'\n\
\n\
def after(t1):\n    return t1 + '!'\n";

/// Write `crash_tasks.py` and queue a run of `slow >> after` (a PENDING snapshot, then the job,
/// as a gateway does) on `tag`; returns the marker file.
async fn submit_slow_run(
    store: &Store,
    dir: &Path,
    run_id: &str,
    tag: &str,
    seconds: f64,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::write(dir.join("tasks").join("crash_tasks.py"), CRASH_TASKS_PY).unwrap();
    let marker = dir.join(format!("{run_id}.marker"));
    let params = format!(r#"{{"marker":"{}","seconds":{seconds}}}"#, marker.display());
    let pending = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"{tag}","tags":["{tag}"],"tenant_id":"tenant-1","api_key_id":null,"status":"PENDING","params":{params},"tasks":{{}},"task_records":{{}},"start_time":null,"end_time":null,"heartbeat_at":1.0,"updated_at":1.0,"error":null}}"#
    );
    store.runs().create(run_id, pending).await.unwrap();
    let yaml = r#""version: 1\nflow:\n  graph: |\n    t1 >> t2\ntasks:\n  t1:\n    callable: crash_tasks:slow\n  t2:\n    callable: crash_tasks:after\n""#;
    let job = format!(
        r#"{{"run_id":"{run_id}","flow_name":"main","tag":"{tag}","tags":["{tag}"],"tenant_id":"tenant-1","params":{params},"workflow_yaml":{yaml},"submitted_at":1.0}}"#
    );
    store.publish_job(tag, job.into()).await.unwrap();
    marker
}

/// The stored snapshot of `run_id` as text (compact JSON, so `"key":value` can be matched).
async fn snapshot_text(store: &Store, run_id: &str) -> String {
    let v = store.runs().get(run_id).await.unwrap().expect("snapshot");
    String::from_utf8_lossy(&v.value).into_owned()
}

async fn wait_snapshot(
    store: &Store,
    run_id: &str,
    timeout: Duration,
    what: &str,
    needles: &[&str],
) -> String {
    eventually(timeout, what, || async {
        let s = snapshot_text(store, run_id).await;
        needles.iter().all(|n| s.contains(n)).then_some(s)
    })
    .await
}

async fn wait_registered(store: &Store, worker_id: &str) -> String {
    let workers = store.workers().clone();
    eventually(Duration::from_secs(30), "worker registered", || {
        let workers = workers.clone();
        async move {
            let v = workers.get(worker_id).await.ok().flatten()?;
            Some(String::from_utf8_lossy(&v.value).into_owned())
        }
    })
    .await
}

/// Messages in the work stream (WorkQueue: ACKed/terminated ones are gone).
async fn queued(store: &Store) -> u64 {
    let mut stream = store.jetstream().get_stream("PYOCO_WORK").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Direct children of `pid` (the worker's runners), from `/proc`.
#[cfg(target_os = "linux")]
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may contain spaces, so split after the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = rest.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == pid {
            out.push(child);
        }
    }
    out
}

/// A process that no longer runs (gone, or a zombie waiting for its new parent).
#[cfg(target_os = "linux")]
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
    }
}

/// A log file for a long-running worker's log lines (its stdout; a pipe nobody reads would
/// stall it).
fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

#[cfg(unix)]
fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Item 7: a worker SIGKILLed mid-run. Its runners die with it (PDEATHSIG); after the
/// consumer's ack wait JetStream redelivers the job, a second worker process takes the run over
/// (stale-run rule: a redelivery) and completes it; the snapshot shows attempt 2 and the new
/// worker.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_is_redelivered_and_completed_by_another_worker() {
    use nix::sys::signal::Signal;
    const ACK_WAIT: Duration = Duration::from_secs(3);
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = worker_command_as(dir.path(), &nats.url(), "crash-a")
        .env("PYOCO_CONSUMER_ACK_WAIT_SEC", "3")
        .stdout(log_file(dir.path(), "crash-a"))
        .arg("--concurrency")
        .arg("2")
        .spawn()
        .unwrap();
    wait_registered(&store, "crash-a").await;
    let runners = children_of(a.id().unwrap());
    assert_eq!(runners.len(), 2, "runner processes of crash-a: {runners:?}");

    let run_id = "crash-run-1";
    let marker = submit_slow_run(&store, dir.path(), run_id, "default", 2.0).await;
    wait_snapshot(
        &store,
        run_id,
        Duration::from_secs(30),
        "t1 running on crash-a",
        &[
            r#""t1":"RUNNING""#,
            r#""worker_id":"crash-a""#,
            r#""attempt":1"#,
        ],
    )
    .await;

    signal(&a, Signal::SIGKILL);
    let killed = std::time::Instant::now();
    let _ = a.wait().await;
    let mut b = worker_command_as(dir.path(), &nats.url(), "crash-b")
        .env("PYOCO_CONSUMER_ACK_WAIT_SEC", "3")
        .stdout(log_file(dir.path(), "crash-b"))
        .spawn()
        .unwrap();

    eventually(Duration::from_secs(5), "crash-a's runners gone", || async {
        runners.iter().all(|&p| is_dead(p)).then_some(())
    })
    .await;

    let done = wait_snapshot(
        &store,
        run_id,
        Duration::from_secs(30),
        "run completed after the crash",
        &[r#""status":"COMPLETED""#],
    )
    .await;
    let took = killed.elapsed();
    println!("SIGKILL -> COMPLETED: {took:?} (ack wait {ACK_WAIT:?})");
    assert!(
        took <= ACK_WAIT + Duration::from_secs(10),
        "SIGKILL -> COMPLETED took {took:?}"
    );
    assert!(done.contains(r#""worker_id":"crash-b""#), "{done}");
    assert!(done.contains(r#""attempt":2"#), "{done}");
    assert!(done.contains(r#""t2":"SUCCEEDED""#), "{done}");
    assert!(done.contains(r#""tenant_id":"tenant-1""#), "{done}");
    let lines = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(lines.lines().count(), 2, "t1 ran once per attempt");
    eventually(Duration::from_secs(10), "queue drained", || async {
        (queued(&store).await == 0).then_some(())
    })
    .await;

    signal(&b, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), b.wait())
        .await
        .expect("crash-b exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Item 4/f: SIGTERM during a run: no new jobs, the run finishes, `STOPPED_GRACEFUL`, exit 0.
/// Without `--tags` the worker serves `PYOCO_DEFAULT_TAG` (§14-26).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_lets_the_run_finish_and_exits_zero() {
    use nix::sys::signal::Signal;
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = worker_command(dir.path(), &nats.url())
        .env("PYOCO_DEFAULT_TAG", "gpu")
        .stdout(log_file(dir.path(), "worker"))
        .spawn()
        .unwrap();
    let rec = wait_registered(&store, "cli-worker").await;
    assert!(rec.contains(r#""tags":["gpu"]"#), "{rec}");

    let run_id = "term-run-1";
    submit_slow_run(&store, dir.path(), run_id, "gpu", 1.5).await;
    wait_snapshot(
        &store,
        run_id,
        Duration::from_secs(30),
        "t1 running",
        &[r#""t1":"RUNNING""#],
    )
    .await;
    signal(&child, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let snap = snapshot_text(&store, run_id).await;
    assert!(snap.contains(r#""status":"COMPLETED""#), "{snap}");
    assert_eq!(queued(&store).await, 0);
    let rec = store.workers().get("cli-worker").await.unwrap().unwrap();
    let rec = String::from_utf8_lossy(&rec.value);
    assert!(rec.contains(r#""state":"STOPPED_GRACEFUL""#), "{rec}");
    assert!(rec.contains(r#""last_run_status":"COMPLETED""#), "{rec}");
}

/// Item 4/f: a run that outlasts `--stop-timeout` is stopped (its runner killed) and its job
/// handed back to the queue for another worker; the worker still exits 0.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_run_outlasting_the_stop_timeout_hands_it_back() {
    use nix::sys::signal::Signal;
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = worker_command(dir.path(), &nats.url())
        .args(["--stop-timeout", "0.5"])
        .stdout(log_file(dir.path(), "worker"))
        .spawn()
        .unwrap();
    wait_registered(&store, "cli-worker").await;
    let runners = children_of(child.id().unwrap());

    let run_id = "handback-run-1";
    submit_slow_run(&store, dir.path(), run_id, "default", 60.0).await;
    wait_snapshot(
        &store,
        run_id,
        Duration::from_secs(30),
        "t1 running",
        &[r#""t1":"RUNNING""#],
    )
    .await;
    let stopping = std::time::Instant::now();
    signal(&child, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(queued(&store).await, 1, "the job was not handed back");
    assert!(
        runners.iter().all(|&p| is_dead(p)),
        "a runner outlived the worker"
    );
    let rec = store.workers().get("cli-worker").await.unwrap().unwrap();
    let rec = String::from_utf8_lossy(&rec.value);
    assert!(rec.contains(r#""state":"STOPPED_GRACEFUL""#), "{rec}");
}

#[cfg(target_os = "linux")]
fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory and throughput of the `pyoco-worker` binary: RSS of the worker process and of its
/// runners, idle and while 500 queued trivial runs go through at `--concurrency 4`.
/// `cargo test -p pyoco-cli --release --test worker_cli -- --ignored --nocapture`
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_worker_binary_rss_and_throughput() {
    const N: u64 = 500;
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let dir = tempfile::tempdir().unwrap();

    // Idle: a fresh worker with nothing to do.
    let mut idle = worker_command(dir.path(), &nats.url())
        .args(["--concurrency", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = idle.id().unwrap();
    wait_registered(&store, "cli-worker").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_worker = vm_rss_kib(pid);
    let idle_runners: Vec<u64> = children_of(pid).iter().map(|&p| vm_rss_kib(p)).collect();
    signal(&idle, nix::sys::signal::Signal::SIGTERM);
    let _ = idle.wait().await;

    // Loaded: N jobs queued, then a worker drains them.
    for i in 0..N {
        let run_id = format!("bench-{i}");
        store
            .runs()
            .create(&run_id, format!(r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"status":"PENDING","params":{{}},"tasks":{{}},"task_records":{{}},"start_time":null,"end_time":null,"heartbeat_at":1.0,"updated_at":1.0,"error":null}}"#))
            .await
            .unwrap();
        store
            .publish_job(
                "default",
                format!(r#"{{"run_id":"{run_id}","flow_name":"main","tag":"default","tags":["default"],"params":{{}},"workflow_yaml":{FLOW_JSON},"submitted_at":1.0}}"#).into(),
            )
            .await
            .unwrap();
    }
    // Nobody reads stderr here: a full pipe would stall the worker.
    let mut child = worker_command(dir.path(), &nats.url())
        .args(["--concurrency", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut first = None;
    let mut peak_worker = 0;
    let mut peak_runner = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = queued(&store).await;
        if left < N {
            first.get_or_insert_with(|| (std::time::Instant::now(), left));
            peak_worker = peak_worker.max(vm_rss_kib(pid));
            for r in children_of(pid) {
                peak_runner = peak_runner.max(vm_rss_kib(r));
            }
        }
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} jobs left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, left0) = first.unwrap();
    let after_worker = vm_rss_kib(pid);
    println!(
        "pyoco-worker --concurrency 4: {:.0} runs/s over {N} queued runs; RSS worker idle {idle_worker} KiB, under load max {peak_worker} KiB, after {after_worker} KiB; runners idle {idle_runners:?} KiB, under load max {peak_runner} KiB",
        left0 as f64 / t0.elapsed().as_secs_f64()
    );
    let done = snapshot_text(&store, "bench-499").await;
    assert!(done.contains(r#""status":"COMPLETED""#), "{done}");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait().await;
}
