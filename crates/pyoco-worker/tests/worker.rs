//! The worker end to end: real nats-server, real pyoco in real runner processes.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, TRIVIAL, TWO_TASKS};
use pyoco_store::StoreConfig;
use pyoco_wire::{RunSnapshot, RunStatus, TaskState};
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_task_flow_completes_with_outputs_and_worker_id() {
    let mut h = Harness::start().await;
    let run_id = h.submit_yaml(TWO_TASKS, json!({})).await;
    let s = h.wait_terminal(&run_id, T).await;

    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    assert_eq!(s.worker_id.as_deref(), Some("test-worker"));
    assert_eq!(s.tasks["t1"], TaskState::Succeeded);
    assert_eq!(s.tasks["t2"], TaskState::Succeeded);
    assert_eq!(s.task_records["t1"].output, json!(2));
    assert_eq!(s.task_records["t1"].inputs["x"], json!(1));
    assert_eq!(s.task_records["t2"].output, json!(4));
    assert_eq!(s.error, None);
    assert_eq!(s.tag.as_deref(), Some("default"));
    assert_eq!(s.params["x"], json!(1));
    assert!(s.workflow_yaml_sha256.clone().flatten().is_some());
    assert!(s.start_time.is_some() && s.end_time.is_some());
    assert!(s.end_time >= s.start_time);
    // The worker's cancel fields are always present (null), like 0.5.1's worker writes.
    assert_eq!(common::json(&s)["cancel_requested_at"], json!(null));
    // Ours: the flow's graph, for the dashboard (the flow.yaml is not stored).
    assert_eq!(common::json(&s)["task_edges"], json!([["t1", "t2"]]));

    h.stop_worker().await.expect("clean stop");
    let rec = h
        .store
        .workers()
        .get("test-worker")
        .await
        .unwrap()
        .expect("registry record");
    let rec: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    assert_eq!(rec["state"], "STOPPED_GRACEFUL");
    assert_eq!(rec["stop_reason"], "graceful_shutdown");
    assert_eq!(rec["last_run_id"], json!(run_id));
    assert_eq!(rec["last_run_status"], "COMPLETED");
    assert_eq!(rec["tags"], json!(["default"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_task_fails_the_run_and_goes_to_the_dlq() {
    let h = Harness::start().await;
    let yaml = flow(
        "t1 >> t2",
        &[("t1", "wtasks:boom"), ("t2", "wtasks:const_a")],
        "",
    );
    let run_id = h.submit_yaml(&yaml, json!({})).await;
    let s = h.wait_terminal(&run_id, T).await;

    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.error.as_deref(), Some("kaboom"));
    assert_eq!(s.tasks["t1"], TaskState::Failed);
    assert_eq!(s.tasks["t2"], TaskState::Pending);
    assert_eq!(s.worker_id.as_deref(), Some("test-worker"));
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let (subject, rec) = &dlq[0];
    assert_eq!(subject, "pyoco.dlq.default");
    assert_eq!(rec["reason"], "execution_error");
    assert_eq!(rec["error"], "kaboom");
    assert_eq!(rec["run_id"], json!(run_id));
    assert_eq!(rec["worker_id"], "test-worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_callable_fails_with_the_import_error() {
    let h = Harness::start().await;
    let yaml = flow("t1", &[("t1", "no_such_module:run")], "");
    let run_id = h.submit_yaml(&yaml, json!({})).await;
    let s = h.wait_terminal(&run_id, T).await;

    assert_eq!(s.status, RunStatus::Failed);
    let error = s.error.clone().unwrap_or_default();
    assert!(
        error.contains("import_error") && error.contains("no_such_module"),
        "{error}"
    );
    // Metadata survives worker-side flow errors (§14-6), and a DLQ record to replay it by
    // (0.5.1 wrote none).
    assert_eq!(s.tag.as_deref(), Some("default"));
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_flow_fails_with_flow_not_found_and_a_dlq_record() {
    let h = Harness::start().await;
    let run_id = h.submit_named("nightly").await;
    let s = h.wait_terminal(&run_id, T).await;

    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.error.as_deref(), Some("flow_not_found: 'nightly'"));
    assert_eq!(s.tenant_id.as_deref(), Some("tenant-1"));
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "flow_not_found");
    assert_eq!(dlq[0].1["error"], "flow_not_found: 'nightly'");
    assert_eq!(dlq[0].1["tenant_id"], "tenant-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_pickup_is_not_lost() {
    let mut h = Harness::new(StoreConfig::default()).await;
    let marker = h.marker("ran.txt");
    let yaml = flow("t1", &[("t1", "wtasks:mark")], "");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.cancel(&run_id).await;
    h.start_worker(|_| {}).await;

    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Cancelled, "{s:?}");
    assert_eq!(s.cancel_requested_by, Some(Some("api_key:test".into())));
    assert!(s.cancel_requested_at.flatten().is_some());
    assert_eq!(s.worker_id.as_deref(), Some("test-worker"));
    common_wait_queue_empty(&h).await;
    assert!(!marker.exists(), "the cancelled run's task ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_task_that_ignores_it_is_enforced_after_the_grace_period() {
    let h = Harness::start_with(StoreConfig::default(), |c| {
        c.cancel_grace_period = Some(Duration::from_secs(1));
    })
    .await;
    let marker = h.marker("slow.txt");
    let yaml = flow(
        "t1 >> t2",
        &[("t1", "wtasks:stubborn"), ("t2", "wtasks:mark")],
        "{seconds: 60}",
    );
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;

    let cancelled_at = Instant::now();
    h.cancel(&run_id).await;
    let s = h.wait_terminal(&run_id, T).await;
    let took = cancelled_at.elapsed();

    assert_eq!(s.status, RunStatus::Cancelled, "{s:?}");
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "grace period not given: {took:?}"
    );
    assert_eq!(s.tasks["t1"], TaskState::Cancelled);
    assert_eq!(s.tasks["t2"], TaskState::Cancelled);
    assert_eq!(s.cancel_requested_by, Some(Some("api_key:test".into())));
    assert_eq!(h.marker_lines("slow.txt"), vec!["ran".to_string()]);

    // The killed runner was replaced: the next run succeeds.
    let next = h.submit_yaml(TWO_TASKS, json!({})).await;
    assert_eq!(h.wait_terminal(&next, T).await.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_a_blocked_task_within_a_second_without_a_kill() {
    // Issue 13: a task blocked in time.sleep(30) ran to its end and the run was COMPLETED.
    let h = Harness::start().await;
    let marker = h.marker("coop.txt");
    let yaml = flow(
        "t1 >> t2",
        &[("t1", "wtasks:slow"), ("t2", "wtasks:mark")],
        "{seconds: 30}",
    );
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    let cancelled_at = Instant::now();
    h.cancel(&run_id).await;
    let s = h.wait_terminal(&run_id, T).await;
    let took = cancelled_at.elapsed();
    assert_eq!(s.status, RunStatus::Cancelled, "{s:?}");
    assert!(took < Duration::from_secs(3), "cancel took {took:?}");
    assert_eq!(s.tasks["t1"], TaskState::Cancelled);
    assert_eq!(s.tasks["t2"], TaskState::Cancelled);
    assert_eq!(s.error, None);
    assert_eq!(h.marker_lines("coop.txt"), vec!["ran".to_string()]);
    // The same runner (not killed) runs the next run.
    let next = h.submit_yaml(TWO_TASKS, json!({})).await;
    assert_eq!(h.wait_terminal(&next, T).await.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_killed_run_leaves_no_process_behind_even_in_another_session() {
    // Issue 13: a task's child that called setsid kept running after the run was CANCELLED.
    let h = Harness::start_with(StoreConfig::default(), |c| {
        c.cancel_grace_period = Some(Duration::from_secs(1));
    })
    .await;
    for (case, callable) in [
        ("cancel", "wtasks:spawn_setsid"),
        ("kill", "wtasks:spawn_setsid_stubborn"),
    ] {
        let pidfile = h.marker(&format!("{case}.pid"));
        let yaml = flow("t1", &[("t1", callable)], "{seconds: 300}");
        let run_id = h
            .submit_yaml(&yaml, json!({"pidfile": pidfile.display().to_string()}))
            .await;
        let deadline = Instant::now() + T;
        let child: i32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: the task never started its child"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(alive(child), "{case}: the child runs");
        // "kill": the task ignores the interrupt, the worker kills its runner after the
        // 1 s grace period.
        h.cancel(&run_id).await;
        assert_eq!(
            h.wait_terminal(&run_id, T).await.status,
            RunStatus::Cancelled
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(child) {
            assert!(
                Instant::now() < deadline,
                "{case}: the setsid child {child} outlived its run"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_killed_mid_run_fails_the_run_and_the_worker_recovers() {
    let h = Harness::start().await;
    let marker = h.marker("killed.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 60}");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    let pid = h.probe.runner_pid(&run_id).expect("runner pid of the run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the runner");

    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(
        s.error.as_deref(),
        Some("runner process exited unexpectedly (signal 9) while running")
    );
    assert_eq!(s.tasks["t1"], TaskState::Failed);
    assert_eq!(s.worker_id.as_deref(), Some("test-worker"));

    let next = h.submit_yaml(TWO_TASKS, json!({})).await;
    assert_eq!(h.wait_terminal(&next, T).await.status, RunStatus::Completed);
    // Executed once: the failed run was acknowledged, not redelivered.
    common_wait_queue_empty(&h).await;
    assert_eq!(h.marker_lines("killed.txt").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_job_with_a_readable_run_id_fails_its_run_and_goes_to_the_dlq() {
    let h = Harness::start().await;
    let run_id = uuid::Uuid::new_v4().to_string();
    // No flow_name: `missing_fields`.
    let body = json!({"run_id": run_id, "tag": "default", "submitted_at": 1.0}).to_string();
    h.store
        .publish_job("default", body.clone().into())
        .await
        .unwrap();

    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.error.as_deref(), Some("invalid_job: missing_fields"));
    assert_eq!(s.tag.as_deref(), Some("default"));
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].0, "pyoco.dlq.default");
    assert_eq!(dlq[0].1["reason"], "invalid_job");
    assert_eq!(dlq[0].1["error"], "missing_fields");
    assert_eq!(dlq[0].1["subject"], "pyoco.work.default");
    assert_eq!(dlq[0].1["payload"], json!(body));
    assert_eq!(dlq[0].1["num_delivered"], 1);
    common_wait_queue_empty(&h).await;

    // Not JSON at all: DLQ only, the worker keeps serving.
    h.store
        .publish_job("default", "{not json".into())
        .await
        .unwrap();
    let next = h.submit_yaml(TWO_TASKS, json!({})).await;
    assert_eq!(h.wait_terminal(&next, T).await.status, RunStatus::Completed);
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[1].1["error"], "invalid_json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_snapshot_cannot_be_written_fails_on_its_first_delivery() {
    // A job published straight to NATS (e.g. by 0.5.1's gateway, which has no size check)
    // that fits one message while its run's snapshot does not: 0.5.1 and we used to NAK it
    // until max_deliver (20 deliveries, 141 MB of log in the case).
    let h = Harness::start().await;
    let max_payload = h.store.client().max_payload();
    let run_id = uuid::Uuid::new_v4().to_string();
    let blob = "x".repeat(max_payload - 400);
    let body = json!({
        "run_id": run_id, "flow_name": "main", "tag": "default",
        "params": {"blob": blob}, "submitted_at": 1.0,
    })
    .to_string();
    assert!(body.len() < max_payload);
    h.store.publish_job("default", body.into()).await.unwrap();

    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Failed);
    let error = s.error.clone().unwrap();
    assert!(
        error.starts_with("invalid_job: snapshot_too_large: the run's snapshot would be "),
        "{error}"
    );
    assert!(error.contains("max_payload"), "{error}");
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].1["reason"], "invalid_job");
    assert_eq!(dlq[0].1["num_delivered"], 1, "failed on the first delivery");
    assert!(dlq[0].1["error"]
        .as_str()
        .unwrap()
        .starts_with("snapshot_too_large: "));
    common_wait_queue_empty(&h).await;
    // The worker goes on serving.
    let next = h.submit_yaml(TWO_TASKS, json!({})).await;
    assert_eq!(h.wait_terminal(&next, T).await.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_already_completed_run_is_acked_not_rerun() {
    let h = Harness::start().await;
    let marker = h.marker("rerun.txt");
    let yaml = flow("t1", &[("t1", "wtasks:mark")], "");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    let done = h.wait_terminal(&run_id, T).await;
    assert_eq!(done.status, RunStatus::Completed);
    let rev = h.store.runs().get(&run_id).await.unwrap().unwrap().revision;

    // The same job again (what a redelivery looks like to the worker).
    let job = json!({
        "run_id": run_id, "flow_name": "main", "tag": "default", "tags": ["default"],
        "params": {"marker": marker.display().to_string()}, "workflow_yaml": yaml,
        "submitted_at": common::now()
    });
    h.store
        .publish_job("default", job.to_string().into())
        .await
        .unwrap();
    common_wait_queue_empty(&h).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        h.marker_lines("rerun.txt").len(),
        1,
        "the run executed twice"
    );
    let now = h.store.runs().get(&run_id).await.unwrap().unwrap();
    assert_eq!(now.revision, rev, "the finished snapshot was rewritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_acks_keep_a_long_run_from_being_redelivered() {
    let store_cfg = StoreConfig {
        consumer_ack_wait: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    // Two runners: a redelivered job would find a free one and run again.
    let h = Harness::start_with(store_cfg, |c| c.concurrency = 2).await;
    let marker = h.marker("long.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 5}");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        h.marker_lines("long.txt").len(),
        1,
        "the run executed twice"
    );
    assert_eq!(h.work_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_runs_through_two_runners_complete_exactly_once() {
    let h = Harness::start_with(StoreConfig::default(), |c| c.concurrency = 2).await;
    let marker = h.marker("many.txt");
    let yaml = flow("t1", &[("t1", "wtasks:mark")], "");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            h.submit_yaml(
                &yaml,
                json!({"marker": marker.display().to_string(), "label": format!("run-{i}")}),
            )
            .await,
        );
    }
    for id in &ids {
        let s = h.wait_terminal(id, T).await;
        assert_eq!(s.status, RunStatus::Completed, "{s:?}");
        assert_eq!(s.worker_id.as_deref(), Some("test-worker"));
    }
    common_wait_queue_empty(&h).await;
    let mut lines = h.marker_lines("many.txt");
    lines.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("run-{i}")).collect();
    want.sort();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_processes_one_poll_and_returns() {
    let mut h = Harness::new(StoreConfig::default()).await;
    let run_id = h.submit_yaml(TRIVIAL, json!({})).await;
    let mut cfg = h.config();
    cfg.run_once = true;
    let worker = pyoco_worker::Worker::new(cfg);
    tokio::time::timeout(
        Duration::from_secs(30),
        worker.run(h.store.clone(), std::future::pending()),
    )
    .await
    .expect("run_once returns")
    .expect("run_once succeeds");
    assert_eq!(
        h.snapshot(&run_id).await.unwrap().status,
        RunStatus::Completed
    );
    h.nats.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interpreter_without_pyoco_fails_at_startup_with_a_hint() {
    let h = Harness::new(StoreConfig::default()).await;
    let mut cfg = h.config();
    cfg.python = "/nonexistent/python3".into();
    let err = pyoco_worker::Worker::new(cfg)
        .run(h.store.clone(), std::future::pending())
        .await
        .expect_err("no interpreter");
    assert!(err.to_string().contains("PYOCO_PYTHON"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_run_fresh_owned_and_compacted() {
    let h = Harness::start_with(StoreConfig::default(), |c| c.max_run_snapshot_bytes = 400).await;
    let marker = h.marker("hb.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 1.5}");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    let first = h
        .wait_for(&run_id, T, "t1 running", |s| {
            s.tasks.get("t1") == Some(&TaskState::Running)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = h.snapshot(&run_id).await.unwrap();
    assert_eq!(later.status, RunStatus::Running);
    assert!(
        later.heartbeat_at > first.heartbeat_at,
        "heartbeat did not advance"
    );
    assert_eq!(later.worker_id.as_deref(), Some("test-worker"));
    assert_eq!(later.task_records_truncated, Some(true));
    assert!(later.task_records.is_empty());

    let done = h.wait_terminal(&run_id, T).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.task_records_truncated, Some(true));
    assert_eq!(done.tasks["t1"], TaskState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_a_run_in_progress_finish() {
    let mut h = Harness::start().await;
    let marker = h.marker("finish.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 1}");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    h.stop_worker().await.expect("clean stop");
    assert_eq!(
        h.snapshot(&run_id).await.unwrap().status,
        RunStatus::Completed
    );
    assert_eq!(h.work_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_hands_a_run_that_does_not_finish_back_to_the_queue() {
    let mut h = Harness::start_with(StoreConfig::default(), |c| {
        c.stop_timeout = Duration::from_millis(300);
    })
    .await;
    let marker = h.marker("handback.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 2}");
    let run_id = h
        .submit_yaml(&yaml, json!({"marker": marker.display().to_string()}))
        .await;
    h.wait_for(&run_id, T, "t1 running", |s| {
        s.tasks.get("t1") == Some(&TaskState::Running)
    })
    .await;
    let stopping = Instant::now();
    h.stop_worker().await.expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(h.work_messages().await, 1, "the job was not handed back");

    // Another worker picks it up (after the NAK delay) and runs it to the end.
    h.start_worker(|_| {}).await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed);
    assert_eq!(h.marker_lines("handback.txt").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_tags_are_served_first() {
    let mut h = Harness::new(StoreConfig::default()).await;
    let mut low = Vec::new();
    let mut high = Vec::new();
    for _ in 0..3 {
        low.push(h.submit_yaml_to("low", TRIVIAL, json!({})).await);
    }
    for _ in 0..3 {
        high.push(h.submit_yaml_to("high", TRIVIAL, json!({})).await);
    }
    h.start_worker(|c| c.tags = vec!["high".into(), "low".into()])
        .await;
    let mut ends = Vec::new();
    for id in high.iter().chain(&low) {
        let s = h.wait_terminal(id, T).await;
        assert_eq!(s.status, RunStatus::Completed);
        assert_eq!(
            s.tag.as_deref(),
            Some(if high.contains(id) { "high" } else { "low" })
        );
        ends.push(s.end_time.unwrap());
    }
    let last_high = ends[..3].iter().cloned().fold(f64::MIN, f64::max);
    let first_low = ends[3..].iter().cloned().fold(f64::MAX, f64::min);
    assert!(last_high < first_low, "{ends:?}");
}

/// Appendix A: a Python 0.5.1 worker and ours share the durable consumer of one tag; every run
/// executes exactly once, whichever worker takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_the_work_queue_with_a_python_0_5_1_worker() {
    let h = Harness::start().await;
    let venv = pyoco_testkit::interop_venv();
    let cwd = h.dir.path().join("py-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut py = tokio::process::Command::new(venv.join("bin").join("pyoco-worker"))
        .args([
            "--nats-url",
            &h.nats.url(),
            "--worker-id",
            "py-worker",
            "--tags",
            "default",
        ])
        .current_dir(&cwd)
        .env("PYTHONPATH", h.dir.path().join("tasks"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python worker");
    let workers = h.store.workers().clone();
    pyoco_testkit::eventually(T, "Python worker registered", || {
        let workers = workers.clone();
        async move { workers.get("py-worker").await.ok().flatten().map(|_| ()) }
    })
    .await;

    let marker = h.marker("shared.txt");
    let yaml = flow("t1", &[("t1", "wtasks:slow")], "{seconds: 0.3}");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            h.submit_yaml(
                &yaml,
                json!({"marker": marker.display().to_string(), "label": format!("run-{i}")}),
            )
            .await,
        );
    }
    let mut ours = 0;
    for id in &ids {
        let s = h.wait_terminal(id, T).await;
        assert_eq!(s.status, RunStatus::Completed, "{s:?}");
        // 0.5.1 drops worker_id after its first write (§14-3); ours keeps it.
        if s.worker_id.as_deref() == Some("test-worker") {
            ours += 1;
        }
    }
    common_wait_queue_empty(&h).await;
    let mut lines = h.marker_lines("shared.txt");
    lines.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("run-{i}")).collect();
    want.sort();
    assert_eq!(lines, want, "every run exactly once");
    assert!(
        ours > 0 && ours < 10,
        "both workers should have taken runs (ours: {ours})"
    );
    let _ = py.start_kill();
    let _ = py.wait().await;
}

async fn common_wait_queue_empty(h: &Harness) {
    pyoco_testkit::eventually(T, "work queue drained", || async {
        (h.work_messages().await == 0).then_some(())
    })
    .await;
}

/// Sequential publish → terminal snapshot latency of the trivial 2-task flow, one worker.
/// `cargo test -p pyoco-worker --release --test worker -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_sequential_latency() {
    use futures::StreamExt;
    let h = Harness::start().await;
    let mut watch = h.store.runs().watch_all().await.unwrap();
    let mut samples = Vec::new();
    for i in 0..120 {
        let t0 = Instant::now();
        let run_id = h.submit_yaml(TRIVIAL, json!({})).await;
        loop {
            let entry = watch.next().await.unwrap().unwrap();
            if entry.key != run_id {
                continue;
            }
            let s = RunSnapshot::from_json(&entry.value).unwrap();
            if s.status.is_terminal() {
                assert_eq!(s.status, RunStatus::Completed);
                break;
            }
        }
        if i >= 20 {
            samples.push(t0.elapsed());
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "sequential submit→COMPLETED over {} runs: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        samples.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

/// Throughput: 200 trivial runs queued at once, one worker with 1 and with 2 runners.
/// `cargo test -p pyoco-worker --release --test worker -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_throughput() {
    for concurrency in [1, 2] {
        let h = Harness::start_with(StoreConfig::default(), |c| c.concurrency = concurrency).await;
        // Warm-up.
        let id = h.submit_yaml(TRIVIAL, json!({})).await;
        h.wait_terminal(&id, T).await;
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(h.submit_yaml(TRIVIAL, json!({})).await);
        }
        for id in &ids {
            let s = h.wait_terminal(id, T).await;
            assert_eq!(s.status, RunStatus::Completed);
        }
        let took = t0.elapsed();
        println!(
            "200 trivial runs, concurrency {concurrency}: {:?} ({:.0} runs/s)",
            took,
            200.0 / took.as_secs_f64()
        );
    }
}

/// Warm a worker up with short runs, so it fetches ahead (`PYOCO_WORKER_PREFETCH`).
async fn short_runs(h: &Harness, n: usize) {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(h.submit_yaml(TRIVIAL, json!({})).await);
    }
    for id in ids {
        let s = h.wait_terminal(&id, T).await;
        assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    }
}

/// A run of `wtasks:slow` for `seconds` (marker `long.txt`), waited for until RUNNING, then a
/// one-task run of `wtasks:mark` (marker `next.txt`) submitted behind it: (long, next).
async fn long_run_then_next(h: &Harness, seconds: f64) -> (String, String) {
    let slow = flow(
        "t1",
        &[("t1", "wtasks:slow")],
        &format!("{{seconds: {seconds}}}"),
    );
    let long = h
        .submit_yaml(
            &slow,
            json!({"marker": h.marker("long.txt").display().to_string()}),
        )
        .await;
    h.wait_for(&long, T, "the long run RUNNING", |s| {
        s.status == RunStatus::Running
    })
    .await;
    let quick = flow("t1", &[("t1", "wtasks:mark")], "");
    let next = h
        .submit_yaml(
            &quick,
            json!({"marker": h.marker("next.txt").display().to_string()}),
        )
        .await;
    (long, next)
}

/// While its only runner is busy with runs that have been short, the worker fetches the next
/// job ahead; when the run in progress turns out long, the job fetched ahead goes back to the
/// queue after the hold time and another worker runs it at once (attempt 2, run once), long
/// before the long run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_ahead_behind_a_long_run_goes_to_another_worker() {
    let mut h = Harness::start().await;
    h.start_worker(|_| {}).await;
    short_runs(&h, 5).await;

    let (long, next) = long_run_then_next(&h, 6.0).await;
    // The only pull request open is the first worker's (fetching ahead): it holds the job.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.snapshot(&next).await.unwrap().status, RunStatus::Pending);
    let started = Instant::now();
    let (_, (stop, task)) = h.spawn_worker(|c| c.worker_id = "second".into()).await;
    let s = h.wait_terminal(&next, T).await;
    let waited = started.elapsed();
    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    assert_eq!(s.worker_id.as_deref(), Some("second"));
    assert_eq!(s.extra["attempt"], 2, "handed back once: {s:?}");
    assert_eq!(h.marker_lines("next.txt"), vec!["ran".to_string()]);
    assert!(
        waited < Duration::from_secs(4),
        "the job waited {waited:?}: it should not wait for the 6 s run"
    );
    assert_eq!(
        h.snapshot(&long).await.unwrap().status,
        RunStatus::Running,
        "the long run is still going"
    );
    let done = h.wait_terminal(&long, T).await;
    assert_eq!(done.status, RunStatus::Completed);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    h.stop_worker().await.unwrap();
}

/// A job fetched ahead has its run read while it waits; a cancel written meanwhile still wins:
/// the claim's compare-and-set fails on the stale read, and the run ends CANCELLED without
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_written_while_a_job_waits_fetched_ahead_still_wins() {
    let mut h = Harness::start().await;
    h.start_worker(|_| {}).await;
    short_runs(&h, 5).await;

    let (first, next) = long_run_then_next(&h, 0.3).await;
    // Fetched ahead and read by now; cancelled before the runner is free.
    tokio::time::sleep(Duration::from_millis(80)).await;
    h.cancel(&next).await;
    let s = h.wait_terminal(&next, T).await;
    assert_eq!(s.status, RunStatus::Cancelled, "{s:?}");
    assert!(
        h.marker_lines("next.txt").is_empty(),
        "the cancelled run ran"
    );
    assert_eq!(
        h.wait_terminal(&first, T).await.status,
        RunStatus::Completed
    );
    h.stop_worker().await.unwrap();
}

/// With prefetch off, a job is fetched only for an idle runner: behind a long run it waits in
/// the queue, where a second worker finds it on its first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefetch_a_job_behind_a_long_run_stays_in_the_queue() {
    let mut h = Harness::start().await;
    h.start_worker(|c| c.prefetch = false).await;
    short_runs(&h, 5).await;
    let (long, next) = long_run_then_next(&h, 4.0).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, (stop, task)) = h.spawn_worker(|c| c.worker_id = "second".into()).await;
    let s = h.wait_terminal(&next, T).await;
    assert_eq!(s.worker_id.as_deref(), Some("second"));
    assert_eq!(s.extra["attempt"], 1, "never handed back: {s:?}");
    h.wait_terminal(&long, T).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    h.stop_worker().await.unwrap();
}
