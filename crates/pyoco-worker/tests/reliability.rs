//! Issue 5 "Worker, complete": redelivery, max-deliver exhaustion, take-over of stale runs,
//! the registry record, task output, and two workers sharing a queue — against a real
//! nats-server and the real pyoco.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use common::{Harness, TRIVIAL};
use futures::StreamExt;
use pyoco_store::StoreConfig;
use pyoco_wire::{RunSnapshot, RunStatus, TaskState};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn flow(graph: &str, tasks: &[(&str, &str)], defaults: &str) -> String {
    let mut y = format!("version: 1\nflow:\n  graph: |\n    {graph}\n");
    if !defaults.is_empty() {
        y.push_str(&format!("  defaults: {defaults}\n"));
    }
    y.push_str("tasks:\n");
    for (name, callable) in tasks {
        y.push_str(&format!("  {name}:\n    callable: {callable}\n"));
    }
    y
}

fn slow_flow(seconds: f64) -> String {
    flow(
        "t1",
        &[("t1", "wtasks:slow")],
        &format!("{{seconds: {seconds}}}"),
    )
}

async fn wait_queue_empty(h: &Harness) {
    pyoco_testkit::eventually(T, "work queue drained", || async {
        (h.work_messages().await == 0).then_some(())
    })
    .await;
}

/// The job message of a submitted run, re-read from its PENDING snapshot's data.
fn job_for(run_id: &str, yaml: &str, params: Value) -> String {
    json!({
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "tenant_id": "tenant-9", "params": params, "workflow_yaml": yaml,
        "submitted_at": common::now()
    })
    .to_string()
}

/// Fetch the next message of the `default` consumer as a raw client and NAK it (what a worker
/// that fails to process a job does). Returns the delivery count.
async fn fetch_and_nak(h: &Harness) -> i64 {
    let consumer = h.store.work_consumer("default").await.unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.expect("a message").expect("fetch");
    let delivered = msg.info().unwrap().delivered;
    msg.ack_with(AckKind::Nak(None)).await.unwrap();
    delivered
}

/// §14-9: JetStream stops delivering a job after `max_deliver` deliveries and the WorkQueue
/// message would stay forever. The worker hears the MAX_DELIVERIES advisory, fails the run
/// (metadata kept), publishes `max_deliver_exceeded` and removes the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliver_exhaustion_fails_the_run_and_goes_to_the_dlq() {
    let store_cfg = StoreConfig {
        consumer_max_deliver: 2,
        ..StoreConfig::default()
    };
    // One runner, kept busy: the worker fetches nothing while the test plays the failing worker.
    let h = Harness::start_with(store_cfg, |_| {}).await;
    let busy_marker = h.marker("busy.txt");
    let busy = h
        .submit_yaml(
            &slow_flow(3.0),
            json!({"marker": busy_marker.display().to_string()}),
        )
        .await;
    h.wait_for(&busy, T, "busy run started", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;

    let marker = h.marker("doomed.txt");
    let yaml = flow("t1", &[("t1", "wtasks:mark")], "");
    let params = json!({"marker": marker.display().to_string()});
    let doomed = h.submit_yaml(&yaml, params.clone()).await;
    assert_eq!(fetch_and_nak(&h).await, 1);
    assert_eq!(fetch_and_nak(&h).await, 2);

    let s = h.wait_terminal(&doomed, T).await;
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    assert_eq!(
        s.error.as_deref(),
        Some("max_deliver_exceeded: delivered 2 times")
    );
    assert_eq!(s.tag.as_deref(), Some("default"));
    assert_eq!(s.params["marker"], params["marker"]);
    assert!(s.end_time.is_some());
    let dlq = h.dlq().await;
    let rec = dlq
        .iter()
        .find(|(_, r)| r["reason"] == "max_deliver_exceeded")
        .unwrap_or_else(|| panic!("no max_deliver_exceeded record: {dlq:?}"));
    assert_eq!(rec.0, "pyoco.dlq.default");
    assert_eq!(rec.1["run_id"], json!(doomed));
    assert_eq!(rec.1["num_delivered"], 2);
    assert_eq!(rec.1["max_deliver"], 2);
    assert_eq!(rec.1["error"], "max_deliver_exceeded: delivered 2 times");
    assert_eq!(rec.1["worker_id"], "test-worker");
    assert_eq!(dlq.len(), 1, "{dlq:?}");

    // The busy run is unaffected, the doomed message is gone, nothing ran it.
    assert_eq!(h.wait_terminal(&busy, T).await.status, RunStatus::Completed);
    wait_queue_empty(&h).await;
    assert!(!marker.exists(), "the exhausted job was executed");
}

/// The worker's own path: a job handed back (NAK) on its last allowed delivery would never be
/// delivered again, so it is failed, reported and terminated instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_back_on_its_last_delivery_fails_instead_of_vanishing() {
    let store_cfg = StoreConfig {
        consumer_max_deliver: 1,
        ..StoreConfig::default()
    };
    let mut h = Harness::start_with(store_cfg, |c| {
        c.stop_timeout = Duration::from_millis(300);
    })
    .await;
    let marker = h.marker("last.txt");
    let run_id = h
        .submit_yaml(
            &slow_flow(5.0),
            json!({"marker": marker.display().to_string()}),
        )
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    h.stop_worker().await.expect("clean stop");

    let s = h.snapshot(&run_id).await.unwrap();
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    assert_eq!(
        s.error.as_deref(),
        Some("max_deliver_exceeded: delivered 1 times")
    );
    assert_eq!(s.tasks["t1"], TaskState::Failed);
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "max_deliver_exceeded");
    assert_eq!(dlq[0].1["max_deliver"], 1);
    assert_eq!(
        h.work_messages().await,
        0,
        "the message stayed in the stream"
    );
}

/// The stale-run rule: a redelivered job whose run is RUNNING under an execution that stopped
/// ACKing (a dead worker) is taken over, runs from the start, and the snapshot names the new
/// owner and the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_run_is_taken_over_and_shows_the_new_attempt() {
    let store_cfg = StoreConfig {
        consumer_ack_wait: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let mut h = Harness::new(store_cfg).await;
    let marker = h.marker("takeover.txt");
    let yaml = flow(
        "t1 >> t2",
        &[("t1", "wtasks:mark"), ("t2", "wtasks:const_a")],
        "",
    );
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    // A "worker" takes the job, claims the run and dies: no ACK, no heartbeat.
    let consumer = h.store.work_consumer("default").await.unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.unwrap().unwrap();
    let fetched = Instant::now();
    let mut s = h.snapshot(&run_id).await.unwrap();
    s.status = RunStatus::Running;
    s.worker_id = Some("dead-worker".into());
    s.extra.insert("attempt".into(), json!(1));
    s.tasks.insert("t1".into(), TaskState::Running);
    h.store.runs().put(&run_id, s.to_json()).await.unwrap();
    drop(msg);

    h.start_worker(|_| {}).await;
    let done = h.wait_terminal(&run_id, T).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert!(
        fetched.elapsed() >= Duration::from_secs(2),
        "redelivered before the ack wait"
    );
    assert_eq!(done.worker_id.as_deref(), Some("test-worker"));
    assert_eq!(done.extra["attempt"], 2);
    assert_eq!(done.tasks["t2"], TaskState::Succeeded);
    assert_eq!(h.marker_lines("takeover.txt").len(), 1);
    wait_queue_empty(&h).await;
}

/// A second, first-delivered message for a run that is executing (fresh heartbeat) is a
/// duplicate: it is acknowledged without running the flow a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_job_for_a_running_run_is_not_executed_twice() {
    let h = Harness::start_with(StoreConfig::default(), |c| c.concurrency = 2).await;
    let marker = h.marker("dup.txt");
    let yaml = slow_flow(1.5);
    let params = json!({"marker": marker.display().to_string()});
    let run_id = h.submit_yaml(&yaml, params.clone()).await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    h.store
        .publish_job("default", job_for(&run_id, &yaml, params).into())
        .await
        .unwrap();
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed);
    wait_queue_empty(&h).await;
    assert_eq!(h.marker_lines("dup.txt").len(), 1, "executed twice");
    assert_eq!(s.extra["attempt"], 1);
}

/// An execution that finds a later attempt in the snapshot (its job was redelivered and taken
/// over while it still ran) stops, writes nothing more and leaves the message to the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_taken_over_by_a_later_attempt_stops() {
    let store_cfg = StoreConfig {
        consumer_ack_wait: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let h = Harness::start_with(store_cfg, |c| c.concurrency = 2).await;
    let marker = h.marker("superseded.txt");
    let run_id = h
        .submit_yaml(
            &slow_flow(1.5),
            json!({"marker": marker.display().to_string()}),
        )
        .await;
    let running = h
        .wait_for(&run_id, T, "t1 running", |s| {
            s.tasks.get("t1") == Some(&TaskState::Running)
        })
        .await;
    let first_pid = h.probe.runner_pid(&run_id).expect("runner of attempt 1");
    // What a take-over by attempt 2 on another worker looks like in the store.
    let mut s = running.clone();
    s.worker_id = Some("other-worker".into());
    s.extra.insert("attempt".into(), json!(2));
    s.heartbeat_at = common::now();
    h.store.runs().put(&run_id, s.to_json()).await.unwrap();

    // Attempt 1 stops at its next heartbeat (0.2 s) and leaves the snapshot alone.
    pyoco_testkit::eventually(T, "attempt 1 stopped", || async {
        (h.probe.runner_pid(&run_id) != Some(first_pid)).then_some(())
    })
    .await;
    let after = h.snapshot(&run_id).await.unwrap();
    assert_eq!(after.worker_id.as_deref(), Some("other-worker"));
    assert_eq!(after.extra["attempt"], 2);

    // "other-worker" never finishes; its message (ours, un-ACKed) comes back after the ack
    // wait and this worker completes the run as attempt 2.
    let done = h.wait_terminal(&run_id, T).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.worker_id.as_deref(), Some("test-worker"));
    assert_eq!(done.extra["attempt"], 2);
    wait_queue_empty(&h).await;
    assert_eq!(h.marker_lines("superseded.txt").len(), 2);
}

/// §14-5: heartbeat writes that fail (NATS down for a while mid-run) are logged and change
/// nothing: the run goes on, finishes once, and is not executed a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_heartbeats_do_not_execute_the_run_twice() {
    let mut h = Harness::start_with(StoreConfig::default(), |c| c.concurrency = 2).await;
    let marker = h.marker("outage.txt");
    let run_id = h
        .submit_yaml(
            &slow_flow(9.0),
            json!({"marker": marker.display().to_string()}),
        )
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    let port = h.nats.port();
    let store_dir = h.nats.store_dir().to_path_buf();
    h.nats.stop().await;
    // Longer than the 5 s request timeout: heartbeat writes fail (not just wait) meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarted = pyoco_testkit::TestNats::start_with(|c| {
        c.port = Some(port);
        c.store_dir = store_dir;
    })
    .await;
    // Keep the stopped server's value: it owns the store directory.
    let stopped = std::mem::replace(&mut h.nats, restarted);

    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    assert_eq!(s.extra["attempt"], 1);
    wait_queue_empty(&h).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.marker_lines("outage.txt").len(), 1, "executed twice");
    drop(stopped);
}

/// §2.4: the registry record has every field; IDLE → RUNNING (current run) → IDLE (last run)
/// → STOPPED_GRACEFUL; `hidden` set by a PATCH survives the worker's writes; the heartbeat
/// refreshes `last_seen_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_record_follows_the_worker_through_its_states() {
    let mut h = Harness::start_with(StoreConfig::default(), |c| {
        c.worker_heartbeat_interval = Duration::from_millis(300);
        c.tags = vec!["default".into(), "gpu".into()];
    })
    .await;
    let idle = h.worker_record("test-worker").await.unwrap();
    let keys = [
        "worker_id",
        "instance_id",
        "state",
        "hidden",
        "tags",
        "last_seen_at",
        "last_heartbeat_at",
        "heartbeat_at",
        "current_run_id",
        "last_run_id",
        "last_run_status",
        "last_run_started_at",
        "last_run_finished_at",
        "stopped_at",
        "stop_reason",
        "updated_at",
        "wheel_sync",
    ];
    for k in keys {
        assert!(idle.get(k).is_some(), "missing {k}: {idle}");
    }
    assert_eq!(idle["state"], "IDLE");
    assert_eq!(idle["tags"], json!(["default", "gpu"]));
    assert_eq!(idle["current_run_id"], Value::Null);
    assert_eq!(idle["heartbeat_at"], idle["last_heartbeat_at"]);
    assert_eq!(idle["instance_id"].as_str().unwrap().len(), 32);
    let ws = &idle["wheel_sync"];
    assert_eq!(ws["enabled"], false);
    assert_eq!(ws["last_result"], "disabled");
    for k in [
        "last_attempt_at",
        "last_success_at",
        "last_synced_at",
        "last_error",
        "selected_count",
        "updated_count",
        "removed_count",
        "skipped_incompatible_count",
        "selected_wheels",
        "updated_wheels",
        "removed_wheels",
        "skipped_incompatible",
        "installed_wheels",
    ] {
        assert!(ws.get(k).is_some(), "wheel_sync misses {k}: {ws}");
    }

    // PATCH /workers/{id} {"hidden": true}, as the gateway writes it.
    let mut patched = idle.clone();
    patched["hidden"] = json!(true);
    h.store
        .workers()
        .put("test-worker", serde_json::to_vec(&patched).unwrap())
        .await
        .unwrap();

    let marker = h.marker("reg.txt");
    let run_id = h
        .submit_yaml(
            &slow_flow(1.0),
            json!({"marker": marker.display().to_string()}),
        )
        .await;
    let running = wait_record(&h, "RUNNING", |r| r["current_run_id"] == json!(run_id)).await;
    assert_eq!(running["hidden"], true);
    assert!(running["last_run_started_at"].as_f64().is_some());
    assert_eq!(running["stopped_at"], Value::Null);

    let after = wait_record(&h, "IDLE", |r| r["last_run_id"] == json!(run_id)).await;
    assert_eq!(after["last_run_status"], "COMPLETED");
    assert_eq!(after["current_run_id"], Value::Null);
    assert!(after["last_run_finished_at"].as_f64() >= after["last_run_started_at"].as_f64());
    assert_eq!(after["hidden"], true);
    let seen = after["last_seen_at"].as_f64().unwrap();
    let later = wait_record(&h, "IDLE", |r| {
        r["last_seen_at"].as_f64().is_some_and(|t| t > seen)
    })
    .await;
    assert_eq!(later["instance_id"], idle["instance_id"]);

    h.stop_worker().await.expect("clean stop");
    let stopped = h.worker_record("test-worker").await.unwrap();
    assert_eq!(stopped["state"], "STOPPED_GRACEFUL");
    assert_eq!(stopped["stop_reason"], "graceful_shutdown");
    assert!(stopped["stopped_at"].as_f64().is_some());
    assert_eq!(stopped["current_run_id"], Value::Null);
    assert_eq!(stopped["last_run_id"], json!(run_id));
    assert_eq!(stopped["hidden"], true);
}

async fn wait_record(h: &Harness, state: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    pyoco_testkit::eventually(T, &format!("worker record {state}"), || async move {
        let r = h.worker_record("test-worker").await?;
        (r["state"] == state && pred(&r)).then_some(r)
    })
    .await
}

/// §14-27: a task's stdout/stderr are kept in its record, bounded to 64 KiB per stream with a
/// truncation marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_output_is_captured_bounded_and_marked() {
    let h = Harness::start().await;
    let yaml = flow(
        "t1 >> t2",
        &[("t1", "wtasks:noisy"), ("t2", "wtasks:const_a")],
        "",
    );
    let n = 100_000;
    let run_id = h.submit_yaml(&yaml, json!({"n": n})).await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    let rec = &s.task_records["t1"];
    let stdout = rec.extra["stdout"].as_str().unwrap();
    let marker = format!("\u{2026}[truncated {} bytes]", n - 65_536);
    assert!(
        stdout.ends_with(&marker),
        "{}",
        &stdout[stdout.len() - 60..]
    );
    assert_eq!(stdout.len(), 65_536 + marker.len());
    assert!(stdout.starts_with("xxxx"));
    assert_eq!(rec.extra["stderr"], "to stderr\n");
    assert_eq!(s.task_records["t2"].extra["stdout"], "");
    assert_eq!(rec.output, json!(n));
    assert_eq!(s.task_records_truncated, None);
}

/// Item 5: two workers with two runners each share 50 runs; each run executes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_two_runners_each_share_fifty_runs_exactly_once() {
    let h = Harness::start_with(StoreConfig::default(), |c| c.concurrency = 2).await;
    let (_probe, (stop_b, worker_b)) = h
        .spawn_worker(|c| {
            c.concurrency = 2;
            c.worker_id = "worker-b".into();
        })
        .await;
    let marker = h.marker("fifty.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 0.05}");
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            h.submit_yaml(
                &yaml,
                json!({"marker": marker.display().to_string(), "label": format!("run-{i}")}),
            )
            .await,
        );
    }
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for id in &ids {
        let s = h.wait_terminal(id, T).await;
        assert_eq!(s.status, RunStatus::Completed, "{s:?}");
        assert_eq!(s.extra["attempt"], 1, "{s:?}");
        *by_worker.entry(s.worker_id.clone().unwrap()).or_default() += 1;
    }
    wait_queue_empty(&h).await;
    let mut lines = h.marker_lines("fifty.txt");
    lines.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("run-{i}")).collect();
    want.sort();
    assert_eq!(lines, want, "every run exactly once");
    assert_eq!(by_worker.len(), 2, "both workers took runs: {by_worker:?}");
    let _ = stop_b.send(());
    worker_b.await.unwrap().unwrap();
}

/// Per-run worker overhead (outside the pyoco runner) and throughput of the trivial 2-task
/// flow, side by side with Python 0.5.1 workers: 500 runs with one worker at concurrency 1 and
/// 4, and two workers at concurrency 1. Two modes: *queued* (500 jobs queued first, then the
/// workers start; rate = runs between the first and the last terminal snapshot) and *streamed*
/// (workers running, 500 runs submitted 16 at a time; rate from the first submit — bounded by
/// the submitter too).
/// `cargo test -p pyoco-worker --release --test reliability -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_throughput_and_overhead() {
    const N: usize = 500;
    let mut rows = Vec::new();
    for (label, workers, concurrency) in [
        ("rust   1 worker  c=1", 1, 1),
        ("rust   1 worker  c=4", 1, 4),
        ("rust   2 workers c=1", 2, 1),
        ("python 1 worker", 1, 0),
        ("python 2 workers", 2, 0),
    ] {
        for queued in [true, false] {
            let python = concurrency == 0;
            let mut h = Harness::new(StoreConfig::default()).await;
            let mut counter = None;
            if queued {
                for _ in 0..N {
                    h.submit_yaml(TRIVIAL, json!({})).await;
                }
                counter = Some(tokio::spawn(count_terminal(h.store.runs().clone(), N)));
            }
            let mut rust_extra = Vec::new();
            let mut py = Vec::new();
            if python {
                for i in 0..workers {
                    py.push(python_worker(&h, &format!("py-{i}")).await);
                }
            } else {
                h.start_worker(|c| c.concurrency = concurrency).await;
                for i in 1..workers {
                    rust_extra.push(
                        h.spawn_worker(|c| {
                            c.concurrency = concurrency;
                            c.worker_id = format!("bench-{i}");
                        })
                        .await,
                    );
                }
            }
            let runner_rss = std::sync::Arc::new(std::sync::Mutex::new(0u64));
            let sampler = {
                let probe = h.probe.clone();
                let rss = runner_rss.clone();
                tokio::spawn(async move {
                    loop {
                        for (_, pid) in probe.running() {
                            let kb = vm_rss_kb(pid);
                            let mut max = rss.lock().unwrap();
                            *max = (*max).max(kb);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            };
            let rate = match counter {
                Some(counter) => {
                    let (first, last) = tokio::time::timeout(Duration::from_secs(300), counter)
                        .await
                        .expect("batch finished")
                        .unwrap();
                    (N - 1) as f64 / (last - first).as_secs_f64()
                }
                None => {
                    warm_up(&h).await;
                    h.probe.clear_overheads();
                    let took = run_batch(&h, N).await;
                    N as f64 / took.as_secs_f64()
                }
            };
            sampler.abort();
            let mode = if queued { "queued  " } else { "streamed" };
            if python {
                rows.push(format!("{label:<22} {mode}: {rate:>5.0} runs/s"));
            } else {
                let mut o: Vec<Duration> = h.probe.overheads().iter().map(|o| o.total()).collect();
                o.sort();
                let pct = |p: f64| o[((o.len() - 1) as f64 * p).round() as usize];
                rows.push(format!(
                    "{label:<22} {mode}: {rate:>5.0} runs/s; worker overhead ({} runs of worker 1) p50 {:?} p99 {:?}; runner RSS {} KiB",
                    o.len(),
                    pct(0.5),
                    pct(0.99),
                    runner_rss.lock().unwrap()
                ));
                for (_, (tx, handle)) in rust_extra {
                    let _ = tx.send(());
                    let _ = handle.await;
                }
                h.stop_worker().await.unwrap();
            }
            for mut p in py {
                let _ = p.start_kill();
                let _ = p.wait().await;
            }
        }
    }
    for r in rows {
        println!("{r}");
    }
}

/// Wait for `n` COMPLETED snapshots; when the first and the last one were seen.
async fn count_terminal(runs: pyoco_store::Bucket, n: usize) -> (Instant, Instant) {
    let mut watch = runs.watch_all().await.unwrap();
    let mut done = std::collections::HashSet::new();
    let mut first = None;
    while done.len() < n {
        let entry = watch.next().await.unwrap().unwrap();
        if let Ok(s) = RunSnapshot::from_json(&entry.value) {
            if s.status.is_terminal() {
                assert_eq!(s.status, RunStatus::Completed, "{s:?}");
                first.get_or_insert_with(Instant::now);
                done.insert(entry.key);
            }
        }
    }
    (first.unwrap(), Instant::now())
}

async fn warm_up(h: &Harness) {
    for _ in 0..10 {
        let id = h.submit_yaml(TRIVIAL, json!({})).await;
        h.wait_terminal(&id, T).await;
    }
}

/// Submit `n` trivial runs (16 at a time) and wait until all are COMPLETED; the time from the
/// first submit to the last terminal snapshot.
async fn run_batch(h: &Harness, n: usize) -> Duration {
    let t0 = Instant::now();
    let counter = tokio::spawn(count_terminal(h.store.runs().clone(), n));
    // Let the watch subscribe before the first run can finish.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = t0.max(Instant::now());
    futures::stream::iter(0..n)
        .map(|_| h.submit_yaml(TRIVIAL, json!({})))
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    let (_, last) = tokio::time::timeout(Duration::from_secs(300), counter)
        .await
        .expect("batch finished")
        .unwrap();
    last - t0
}

async fn python_worker(h: &Harness, id: &str) -> tokio::process::Child {
    let venv = pyoco_testkit::interop_venv();
    let cwd = h.dir.path().join(format!("cwd-{id}"));
    std::fs::create_dir_all(&cwd).unwrap();
    let child = tokio::process::Command::new(venv.join("bin").join("pyoco-worker"))
        .args([
            "--nats-url",
            &h.nats.url(),
            "--worker-id",
            id,
            "--tags",
            "default",
        ])
        .current_dir(&cwd)
        .env("PYTHONPATH", h.dir.path().join("tasks"))
        .env("PYOCO_LOAD_DOTENV", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python worker");
    let workers = h.store.workers().clone();
    let id = id.to_string();
    pyoco_testkit::eventually(T, "Python worker registered", || {
        let workers = workers.clone();
        let id = id.clone();
        async move { workers.get(&id).await.ok().flatten().map(|_| ()) }
    })
    .await;
    child
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
