//! A production-shaped fleet on a 3-node JetStream cluster survives node loss (issue 16).
//!
//! Three supervised nats-servers with routes (`TestCluster`), two gateways (`pyoco-server up`,
//! gateway only) and three workers (`pyoco-worker`, one at `--concurrency 2`), all real
//! processes with `PYOCO_NATS_URL` listing the three nodes and `PYOCO_JETSTREAM_REPLICAS=3`.
//! A steady load (40 runs a second for 28 s, alternating between the gateways: 1,120 runs) runs
//! while, in turn:
//! 1. the node leading the work stream is killed -9 (its supervisor starts it again),
//! 2. a worker is killed -9 (not restarted: the other two carry on),
//! 3. a gateway is killed -9 and started again a second later.
//!
//! An every-second cron schedule fires meanwhile from both gateways. Afterwards every run
//! accepted with 200 is terminal and COMPLETED (none stuck, none lost), no run's task ran more
//! often than its `attempt` says (each run's first task appends a line to its own marker file),
//! and no schedule slot ran twice. The fault table (runs accepted, terminal, lost, duplicated,
//! seconds until new runs complete again and until the runs in flight at the fault finish) is
//! printed; `cargo nextest run -p pyoco-testkit --test e2e fleet --no-capture` shows it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use pyoco_testkit::{free_port, workspace_binary, write_task_module, TestCluster};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;

const TASKS: &str = r#"
import time

def mark(marker):
    with open(marker, "a") as fh:
        fh.write("ran\n")
    return "marked"

def nap(mark, seconds=0.02):
    time.sleep(float(seconds))
    return seconds

def hello():
    return "hello"
"#;

const FLOW: &str = "\
version: 1
flow:
  graph: |
    mark >> nap
tasks:
  mark:
    callable: fleet_tasks:mark
  nap:
    callable: fleet_tasks:nap
";

const SCHEDULED_FLOW: &str = "\
version: 1
flow:
  graph: |
    hello
tasks:
  hello:
    callable: fleet_tasks:hello
";

/// Submissions per second, and for how long.
const RATE: u32 = 40;
const LOAD: Duration = Duration::from_secs(28);
/// When each fault happens, from the start of the load.
const NODE_FAULT_AT: Duration = Duration::from_secs(4);
const WORKER_FAULT_AT: Duration = Duration::from_secs(13);
const GATEWAY_FAULT_AT: Duration = Duration::from_secs(20);
/// How long the killed gateway stays down (systemd's RestartSec=).
const GATEWAY_DOWN: Duration = Duration::from_secs(1);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A process of the fleet in its own process group (its runners with it), killed on drop.
struct Member {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Member {
    fn spawn(mut cmd: Command, name: &str, dir: &Path) -> Member {
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Member {
            child,
            name: name.to_string(),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `kill -9` of the process itself (not its group: its runners must go by themselves).
    fn kill9(&mut self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGKILL).unwrap();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("--- {} ---\n{}", self.name, lines[from..].join("\n"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

struct Fleet {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    gateways: Vec<(u16, Member)>,
    workers: Vec<Member>,
}

impl Fleet {
    fn start(nats_urls: &str, replicas: usize) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("pyoco-fleet-")
            .tempdir()
            .unwrap();
        write_task_module(&dir.path().join("tasks"), "fleet_tasks", TASKS);
        let env = vec![
            ("PYOCO_NATS_URL", nats_urls.to_string()),
            ("PYOCO_JETSTREAM_REPLICAS", replicas.to_string()),
            ("PYOCO_LOAD_DOTENV", "0".into()),
            ("PYOCO_LOG_FORMAT", "text".into()),
            (
                "PYOCO_PYTHON",
                pyoco_testkit::python().display().to_string(),
            ),
            ("PYOCO_TASK_MODULES", "fleet_tasks".into()),
            ("PYTHONPATH", dir.path().join("tasks").display().to_string()),
            // A killed worker's runs go back to the queue after 5 s, not 30.
            ("PYOCO_CONSUMER_ACK_WAIT_SEC", "5".into()),
            ("PYOCO_ACK_PROGRESS_INTERVAL_SEC", "1".into()),
            ("PYOCO_WHEEL_SYNC_ENABLED", "false".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut fleet = Fleet {
            dir,
            env,
            gateways: Vec::new(),
            workers: Vec::new(),
        };
        for i in 0..2 {
            let port = free_port();
            let member = fleet.spawn_gateway(i, port);
            fleet.gateways.push((port, member));
        }
        for (i, concurrency) in [(1, 2), (2, 1), (3, 1)] {
            let id = format!("fleet-w{i}");
            let mut cmd = fleet.command("pyoco-worker", &id);
            cmd.args([
                "--worker-id",
                &id,
                "--concurrency",
                &concurrency.to_string(),
            ]);
            let member = Member::spawn(cmd, &id, fleet.dir.path());
            fleet.workers.push(member);
        }
        fleet
    }

    fn command(&self, binary: &str, name: &str) -> Command {
        let program = workspace_binary(binary)
            .unwrap_or_else(|| panic!("{binary} is not built (cargo build -p pyoco-cli)"));
        let home = self.dir.path().join(name);
        fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new(program);
        cmd.current_dir(&home)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("PYOCO_DATA_DIR", home.join("data"))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn spawn_gateway(&self, i: usize, port: u16) -> Member {
        let name = format!("gateway-{}", i + 1);
        let mut cmd = self.command("pyoco-server", &name);
        cmd.arg("up").env("PYOCO_HTTP_PORT", port.to_string());
        Member::spawn(cmd, &name, self.dir.path())
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.gateways[i].0)
    }

    /// One run through each gateway, waited for until terminal.
    async fn warm(&self, http: &reqwest::Client) {
        for i in 0..2 {
            let run = submit(http, &self.base(i), &self.marker(1_000_000 + i))
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
            pyoco_testkit::wait_status(
                http,
                &self.base(i),
                &run,
                crate::TERMINAL,
                crate::RUN_TIMEOUT,
            )
            .await;
        }
    }

    fn logs(&self) -> String {
        self.gateways
            .iter()
            .map(|(_, m)| m)
            .chain(self.workers.iter())
            .map(Member::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn marker(&self, key: usize) -> PathBuf {
        self.dir.path().join("markers").join(format!("{key}"))
    }
}

/// Wait until the gateway answers `/runs` (connected, resources ready).
async fn wait_ready(http: &reqwest::Client, base: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match http.get(format!("{base}/runs?limit=1")).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            other => {
                if Instant::now() > deadline {
                    return Err(format!("{base} not ready: {other:?}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One submission of the load.
#[derive(Debug, Clone)]
struct Submission {
    key: usize,
    gateway: usize,
    at: f64,
    /// `Ok(run_id)` for a 200, else what came back.
    outcome: Result<String, String>,
}

async fn submit(http: &reqwest::Client, base: &str, marker: &Path) -> Result<String, String> {
    let form = reqwest::multipart::Form::new()
        .part(
            "workflow",
            reqwest::multipart::Part::bytes(FLOW.as_bytes().to_vec()).file_name("flow.yaml"),
        )
        .text("flow_name", "fleet")
        .text("tag", "default")
        .text(
            "params",
            json!({ "marker": marker.display().to_string() }).to_string(),
        );
    let response = http
        .post(format!("{base}/runs/yaml"))
        .multipart(form)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 200 {
        Ok(body["run_id"].as_str().expect("run_id").to_string())
    } else {
        Err(format!("{status} {body}"))
    }
}

/// Every run's snapshot from the runs bucket (the test's own connection to the cluster).
async fn snapshots(
    kv: &async_nats::jetstream::kv::Store,
    run_ids: &[String],
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for id in run_ids {
        for _ in 0..50 {
            match kv.get(id).await {
                Ok(Some(bytes)) => {
                    out.insert(id.clone(), serde_json::from_slice(&bytes).unwrap());
                    break;
                }
                Ok(None) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    out
}

fn is_terminal(s: &Value) -> bool {
    matches!(
        s["status"].as_str(),
        Some("COMPLETED" | "FAILED" | "CANCELLED")
    )
}

struct Fault {
    name: &'static str,
    at: f64,
    /// Until the next fault (or the end of the load).
    until: f64,
    /// Extra facts (the node killed, how long it took to come back).
    note: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_three_node_cluster_survives_node_worker_and_gateway_loss() {
    for binary in ["pyoco-server", "pyoco-worker"] {
        if workspace_binary(binary).is_none() {
            eprintln!("SKIPPED: {binary} is not built (cargo build -p pyoco-cli)");
            return;
        }
    }
    let cluster = TestCluster::start(3).await;
    let mut fleet = Fleet::start(&cluster.urls(), 3);
    fs::create_dir_all(fleet.dir.path().join("markers")).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    for i in 0..2 {
        if let Err(e) = wait_ready(&http, &fleet.base(i), Duration::from_secs(60)).await {
            panic!("{e}\n{}\n{}", fleet.logs(), cluster.logs());
        }
    }
    let js = cluster.jetstream().await;
    let work = js
        .get_stream("PYOCO_WORK")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(work.config.num_replicas, 3, "the work stream is R3");
    let runs_kv = js.get_key_value("pyoco_runs").await.unwrap();

    // Warm: one run through each gateway completes before the clock starts.
    fleet.warm(&http).await;

    // The every-second schedule, fired by whichever gateway claims each slot.
    let form = reqwest::multipart::Form::new()
        .part(
            "workflow",
            reqwest::multipart::Part::bytes(SCHEDULED_FLOW.as_bytes().to_vec())
                .file_name("flow.yaml"),
        )
        .text("flow_name", "fleet-scheduled")
        .text("cron", "* * * * * *");
    let schedule: Value = http
        .post(format!("{}/schedules/yaml", fleet.base(0)))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schedule_id = schedule["schedule_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{schedule}"))
        .to_string();

    // The load: RATE submissions a second, alternating gateways, each its own task.
    let submissions: Arc<Mutex<Vec<Submission>>> = Arc::default();
    let bases: Vec<String> = (0..2).map(|i| fleet.base(i)).collect();
    let markers: PathBuf = fleet.dir.path().join("markers");
    let load = {
        let submissions = submissions.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let total = (RATE as u64 * LOAD.as_secs()) as usize;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
            let mut pending = Vec::new();
            for key in 0..total {
                tick.tick().await;
                let gateway = key % 2;
                let base = bases[gateway].clone();
                let marker = markers.join(format!("{key}"));
                let http = http.clone();
                let submissions = submissions.clone();
                pending.push(tokio::spawn(async move {
                    let at = now();
                    let outcome = submit(&http, &base, &marker).await;
                    submissions.lock().unwrap().push(Submission {
                        key,
                        gateway,
                        at,
                        outcome,
                    });
                }));
            }
            for p in pending {
                let _ = p.await;
            }
        })
    };
    let started = Instant::now();
    let sleep_until = |at: Duration| tokio::time::sleep_until((started + at).into());
    let mut faults = Vec::new();

    // 1. The node leading the work stream.
    sleep_until(NODE_FAULT_AT).await;
    let leader = TestCluster::stream_leader(&js, "PYOCO_WORK", Duration::from_secs(5))
        .await
        .expect("the work stream has a leader");
    let at = now();
    let pid = cluster.kill9(&leader);
    let back = cluster
        .wait_running(&leader, pid, Duration::from_secs(30))
        .await;
    let new_leader = TestCluster::stream_leader(&js, "PYOCO_WORK", Duration::from_secs(20)).await;
    faults.push(Fault {
        name: "kill -9 of the work stream's leader node",
        at,
        until: 0.0,
        note: format!(
            "node {leader} killed, running again after {:.1} s; leader now {}",
            back.as_secs_f64(),
            new_leader.unwrap_or_else(|| "none".into())
        ),
    });

    // 2. A worker (the one at --concurrency 2, mid-run).
    sleep_until(WORKER_FAULT_AT).await;
    // Kill it while it runs something, so that run has to be taken over.
    let busy_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < busy_until {
        let running: Value = match http
            .get(format!("{}/runs?status=RUNNING&limit=100", fleet.base(1)))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let busy = running
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["worker_id"] == "fleet-w1"));
        if busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at = now();
    fleet.workers[0].kill9();
    faults.push(Fault {
        name: "kill -9 of a worker (--concurrency 2)",
        at,
        until: 0.0,
        note: "fleet-w1 killed, not restarted".into(),
    });

    // 3. A gateway, started again after GATEWAY_DOWN.
    sleep_until(GATEWAY_FAULT_AT).await;
    let at = now();
    fleet.gateways[0].1.kill9();
    tokio::time::sleep(GATEWAY_DOWN).await;
    let port = fleet.gateways[0].0;
    let restarted = fleet.spawn_gateway(0, port);
    fleet.gateways[0].1 = restarted;
    let ready = wait_ready(&http, &fleet.base(0), Duration::from_secs(30)).await;
    let back = now() - at;
    assert!(ready.is_ok(), "{ready:?}\n{}", fleet.logs());
    faults.push(Fault {
        name: "kill -9 of a gateway, restarted 1 s later",
        at,
        until: 0.0,
        note: format!("gateway-1 serving again {back:.1} s after the kill"),
    });

    load.await.unwrap();
    let load_end = now();
    for i in 0..faults.len() {
        faults[i].until = faults.get(i + 1).map_or(load_end, |f| f.at);
    }
    let first_fault = faults[0].at;

    // Stop the schedule (through the gateway that never died).
    let deleted = http
        .delete(format!("{}/schedules/{schedule_id}", fleet.base(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    // Every accepted run ends: wait until all are terminal (or time out and report).
    let submissions = submissions.lock().unwrap().clone();
    let accepted: Vec<&Submission> = submissions.iter().filter(|s| s.outcome.is_ok()).collect();
    let refused: Vec<&Submission> = submissions.iter().filter(|s| s.outcome.is_err()).collect();
    let run_ids: Vec<String> = accepted
        .iter()
        .map(|s| s.outcome.clone().unwrap())
        .collect();
    // A run is stuck when nothing moves any more, not when a loaded machine (CI runs other
    // tests beside this one) works through a backlog: wait while runs keep finishing.
    let give_up = Instant::now() + Duration::from_secs(300);
    let mut last_progress = Instant::now();
    let mut open_before = usize::MAX;
    let mut snaps = snapshots(&runs_kv, &run_ids).await;
    loop {
        let open: Vec<String> = run_ids
            .iter()
            .filter(|id| !snaps.get(*id).is_some_and(is_terminal))
            .cloned()
            .collect();
        if open.len() < open_before {
            open_before = open.len();
            last_progress = Instant::now();
        }
        if open.is_empty()
            || Instant::now() > give_up
            || last_progress.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        snaps.extend(snapshots(&runs_kv, &open).await);
    }

    // Per run: terminal, COMPLETED, executions ≤ attempt.
    let mut lost = Vec::new();
    let mut stuck = Vec::new();
    let mut not_completed = Vec::new();
    let mut duplicated = Vec::new();
    let mut attempts = BTreeMap::<u64, usize>::new();
    for s in &accepted {
        let id = s.outcome.as_ref().unwrap();
        let Some(snap) = snaps.get(id) else {
            lost.push(id.clone());
            continue;
        };
        if !is_terminal(snap) {
            stuck.push(format!("{id} {}", snap["status"]));
            continue;
        }
        if snap["status"] != "COMPLETED" {
            not_completed.push(format!("{id}: {} {}", snap["status"], snap["error"]));
        }
        let attempt = snap["attempt"].as_u64().unwrap_or(1);
        *attempts.entry(attempt).or_default() += 1;
        let ran = fs::read_to_string(fleet.marker(s.key))
            .unwrap_or_default()
            .lines()
            .count() as u64;
        if ran == 0 || ran > attempt {
            duplicated.push(format!("{id}: mark ran {ran} times, attempt {attempt}"));
        }
    }

    // The fault table.
    let finished = |id: &str| snaps.get(id).and_then(|s| s["updated_at"].as_f64());
    let mut table = String::from(
        "| fault | runs accepted | refused | terminal | lost | duplicated | completions stalled for | runs in flight at the fault done after | submit → terminal p50 / max | note |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let window = |from: f64, to: f64| accepted.iter().filter(move |s| s.at >= from && s.at < to);
    let mut completions: Vec<f64> = run_ids.iter().filter_map(|id| finished(id)).collect();
    completions.sort_by(f64::total_cmp);
    let latencies = |runs: &[&&Submission]| {
        let mut l: Vec<f64> = runs
            .iter()
            .filter_map(|s| Some(finished(s.outcome.as_deref().ok()?)? - s.at))
            .collect();
        l.sort_by(f64::total_cmp);
        if l.is_empty() {
            return "-".to_string();
        }
        format!("{:.2} s / {:.2} s", l[l.len() / 2], l[l.len() - 1])
    };
    let before: Vec<&&Submission> = window(0.0, first_fault).collect();
    table.push_str(&format!(
        "| (before the first fault) | {} | {} | {} | 0 | 0 | | | {} | |\n",
        before.len(),
        refused.iter().filter(|s| s.at < first_fault).count(),
        before
            .iter()
            .filter(|s| snaps
                .get(s.outcome.as_ref().unwrap())
                .is_some_and(is_terminal))
            .count(),
        latencies(&before)
    ));
    for f in &faults {
        let in_window: Vec<&&Submission> = window(f.at, f.until).collect();
        let ids: BTreeSet<&str> = in_window
            .iter()
            .map(|s| s.outcome.as_deref().unwrap())
            .collect();
        let terminal = ids
            .iter()
            .filter(|id| snaps.get(**id).is_some_and(is_terminal))
            .count();
        let lost_here = ids
            .iter()
            .filter(|id| lost.contains(&id.to_string()))
            .count();
        let dup_here = ids
            .iter()
            .filter(|id| duplicated.iter().any(|d| d.starts_with(**id)))
            .count();
        // The longest time without any run finishing, from the fault to the next fault.
        let mut ends: Vec<f64> = completions
            .iter()
            .copied()
            .filter(|t| *t > f.at && *t < f.until)
            .collect();
        ends.insert(0, f.at);
        let stalled = ends.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        // In flight: runs accepted before the fault and not finished at it.
        let in_flight = accepted
            .iter()
            .filter(|s| s.at < f.at)
            .filter_map(|s| finished(s.outcome.as_deref().unwrap()))
            .filter(|t| *t > f.at)
            .fold(f64::NEG_INFINITY, f64::max)
            - f.at;
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} s | {} | {} | {} |\n",
            f.name,
            in_window.len(),
            refused
                .iter()
                .filter(|s| s.at >= f.at && s.at < f.until)
                .count(),
            terminal,
            lost_here,
            dup_here,
            stalled,
            if in_flight.is_finite() {
                format!("{in_flight:.2} s")
            } else {
                "none in flight".into()
            },
            latencies(&in_window),
            f.note
        ));
    }
    let scheduled = {
        let (status, runs) = pyoco_testkit::status_json(
            http.get(format!(
                "{}/runs?schedule_id={schedule_id}&include=full&limit=200",
                fleet.base(1)
            ))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{runs}");
        runs.as_array().unwrap().clone()
    };
    let mut slots: Vec<f64> = scheduled
        .iter()
        .map(|r| r["scheduled_at"].as_f64().expect("scheduled_at"))
        .collect();
    slots.sort_by(f64::total_cmp);
    let fired = slots.len();
    slots.dedup();
    let span = slots.last().unwrap_or(&0.0) - slots.first().unwrap_or(&0.0);
    let drained = completions.last().copied().unwrap_or(load_end) - load_end;
    eprintln!(
        "\nfleet: 3 nats-servers (R3), 2 gateways, 3 workers; {} submissions at {RATE}/s: {} \
         accepted, {} refused ({}); attempts {attempts:?}; the last run ended {drained:.1} s \
         after the load\n\n{table}\nschedule: {fired} runs, {} distinct slots over {span:.0} s\n",
        submissions.len(),
        accepted.len(),
        refused.len(),
        {
            // Each distinct answer once, with how often and from which gateway.
            let mut reasons = BTreeMap::<String, usize>::new();
            for s in &refused {
                let reason = s.outcome.clone().unwrap_err();
                let reason = reason.split(" for url ").next().unwrap_or("").to_string();
                *reasons
                    .entry(format!("gateway-{}: {reason}", s.gateway + 1))
                    .or_default() += 1;
            }
            reasons
                .iter()
                .map(|(r, n)| format!("{n}× {r}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
        slots.len(),
    );

    let context = || format!("{table}\n{}\n{}", fleet.logs(), cluster.logs());
    assert!(
        accepted.len() >= 1_000,
        "only {} runs accepted\n{}",
        accepted.len(),
        context()
    );
    assert!(lost.is_empty(), "runs lost: {lost:?}\n{}", context());
    assert!(stuck.is_empty(), "runs stuck: {stuck:?}\n{}", context());
    assert!(
        duplicated.is_empty(),
        "tasks ran more often than the attempt says: {duplicated:?}\n{}",
        context()
    );
    assert!(
        not_completed.is_empty(),
        "runs that did not complete: {not_completed:?}\n{}",
        context()
    );
    assert!(
        attempts.keys().any(|a| *a >= 2),
        "no run was taken over from the killed worker: {attempts:?}\n{}",
        context()
    );
    assert_eq!(
        fired,
        slots.len(),
        "a schedule slot ran twice\n{}",
        context()
    );
    assert!(
        slots.len() as f64 >= LOAD.as_secs_f64() * 0.5,
        "only {} slots fired in {LOAD:?}",
        slots.len()
    );
    cluster.stop().await;
}

/// Runs a second the fleet completes with `runs` submitted at once (32 at a time, both
/// gateways): from the first submission to the last terminal snapshot.
async fn fleet_throughput(nats_urls: &str, replicas: usize, runs: usize) -> f64 {
    let fleet = Fleet::start(nats_urls, replicas);
    fs::create_dir_all(fleet.dir.path().join("markers")).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for i in 0..2 {
        wait_ready(&http, &fleet.base(i), Duration::from_secs(60))
            .await
            .unwrap();
    }
    fleet.warm(&http).await;
    let servers: Vec<async_nats::ServerAddr> =
        nats_urls.split(',').map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(servers).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("pyoco_runs")
        .await
        .unwrap();
    let started = now();
    let bases: Vec<String> = (0..2).map(|i| fleet.base(i)).collect();
    let ids: Vec<String> = futures::stream::iter(0..runs)
        .map(|key| {
            let http = http.clone();
            let base = bases[key % 2].clone();
            let marker = fleet.marker(key);
            async move { submit(&http, &base, &marker).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut last = started;
    for id in &ids {
        loop {
            let snap: Value = kv
                .get(id)
                .await
                .unwrap()
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or(Value::Null);
            if is_terminal(&snap) {
                last = last.max(snap["updated_at"].as_f64().unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    runs as f64 / (last - started)
}

/// Throughput of the same fleet on a 3-node cluster with R3 and on one server with R1 (a
/// measurement, not a check: `cargo nextest run -p pyoco-testkit --test e2e
/// fleet_throughput --run-ignored only --no-capture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it alone, see docs/benchmarks.md"]
async fn fleet_throughput_three_nodes_beside_one() {
    const RUNS: usize = 600;
    let cluster = TestCluster::start(3).await;
    let three = fleet_throughput(&cluster.urls(), 3, RUNS).await;
    cluster.stop().await;
    let single = pyoco_testkit::TestNats::start().await;
    let one = fleet_throughput(&single.url(), 1, RUNS).await;
    eprintln!(
        "\nfleet throughput, 2 gateways + 3 workers (4 runners), {RUNS} runs of mark >> nap(0.02 s), 32 in flight:\n\
         | NATS | runs/s |\n|---|---|\n| 3 nodes, R3 | {three:.0} |\n| 1 node, R1 | {one:.0} |\n"
    );
}
