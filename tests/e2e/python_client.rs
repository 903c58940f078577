//! The real `pyoco-client` CLI of Python pyoco-server 0.5.1 driving our gateway (appliance
//! gateway + our local worker): every command a user of 0.5.1 runs against a server — submit,
//! get, both list shapes with their paging and delta options, watch, cancel, workers,
//! metrics — exits 0 and prints what 0.5.1's own server would let it print.

use std::collections::BTreeSet;

use pyoco_testkit::{pyoco_client, AppOptions, ClientOutput, TestApp};
use serde_json::{json, Value};

use crate::{README_FLOW, RUN_TIMEOUT, TERMINAL};

/// One task that sleeps: a run that stays RUNNING long enough to be watched.
const NAP_FLOW: &str = "\
version: 1
flow:
  graph: |
    nap
  defaults:
    seconds: 1.5
tasks:
  nap:
    callable: e2e_tasks:nap
";

/// The events `pyoco-client watch` printed (one JSON object a line), asserting exit 0.
fn watch_events(out: &ClientOutput) -> Vec<Value> {
    assert_eq!(out.code, Some(0), "pyoco-client watch failed: {out:?}");
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// `run_id`s of a list of run items.
fn ids_of(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|i| {
            i["run_id"]
                .as_str()
                .unwrap_or_else(|| panic!("item without run_id: {i}"))
                .to_string()
        })
        .collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// `name{labels} value` → value, for one exact sample line prefix of a Prometheus text body.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// `pyoco-client submit-yaml` of `file`; asserts the PENDING answer, returns the run id.
async fn submit(server: &str, file: &str, flow_name: &str, cwd: &std::path::Path) -> String {
    let out = pyoco_client(
        server,
        &[
            "submit-yaml",
            "--workflow-file",
            file,
            "--flow-name",
            flow_name,
            "--tag",
            "default",
        ],
        cwd,
    )
    .await
    .json();
    assert_eq!(out["status"], "PENDING", "{out}");
    out["run_id"].as_str().expect("run_id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_pages_watches_and_reads_workers_and_metrics() {
    let app = TestApp::start(AppOptions::default()).await;
    let readme = app.path("flow.yaml");
    std::fs::write(&readme, README_FLOW).unwrap();
    let readme = readme.display().to_string();
    let nap = app.path("nap.yaml");
    std::fs::write(&nap, NAP_FLOW).unwrap();
    let nap = nap.display().to_string();
    let server = app.base_url();
    let cwd = app.dir();

    // submit-yaml: three README runs, then one that naps.
    let (a, b, c) = tokio::join!(
        submit(server, &readme, "readme", cwd),
        submit(server, &readme, "readme", cwd),
        submit(server, &readme, "readme", cwd),
    );
    let readme_ids = vec![a, b, c];
    let nap_id = submit(server, &nap, "nap", cwd).await;
    let mut all_ids = readme_ids.clone();
    all_ids.push(nap_id.clone());

    // watch, both ways 0.5.1's CLI stops early: after two events (or at the server's timeout),
    // and at the first terminal snapshot.
    let first_two = [
        "watch",
        nap_id.as_str(),
        "--max-events",
        "2",
        "--timeout-sec",
        "5",
    ];
    let to_the_end = [
        "watch",
        nap_id.as_str(),
        "--until-terminal",
        "--timeout-sec",
        "30",
    ];
    let (first_two, to_the_end) = tokio::join!(
        pyoco_client(server, &first_two, cwd),
        pyoco_client(server, &to_the_end, cwd),
    );
    let events = watch_events(&first_two);
    assert!(
        (1..=2).contains(&events.len()),
        "--max-events 2: {events:?}"
    );
    assert_eq!(events[0]["event"], "snapshot", "{events:?}");
    assert_eq!(events[0]["data"]["run_id"], json!(nap_id));
    assert_eq!(events[0]["data"]["snapshot"]["run_id"], json!(nap_id));
    for e in &events {
        assert!(
            matches!(e["event"].as_str(), Some("snapshot" | "heartbeat")),
            "{e}"
        );
        assert!(e["data"]["ts"].is_number(), "{e}");
    }
    let events = watch_events(&to_the_end);
    let snapshots: Vec<&Value> = events.iter().filter(|e| e["event"] == "snapshot").collect();
    let last = snapshots.last().expect("at least one snapshot event");
    assert_eq!(
        last["data"]["snapshot"]["status"], "COMPLETED",
        "--until-terminal stops at the terminal snapshot: {events:?}"
    );
    for s in &snapshots[..snapshots.len() - 1] {
        let status = s["data"]["snapshot"]["status"].as_str().unwrap_or_default();
        assert!(!TERMINAL.contains(&status), "{events:?}");
    }
    for id in &all_ids {
        app.wait_status(id, TERMINAL, RUN_TIMEOUT).await;
    }

    // get.
    let got = pyoco_client(server, &["get", &readme_ids[0]], cwd)
        .await
        .json();
    assert_eq!(got["run_id"], json!(readme_ids[0]));
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(
        got["tasks"],
        json!({"hello": "SUCCEEDED", "shout": "SUCCEEDED"})
    );

    // list (compat: a bare array), with filters, and as a table.
    let list_all = ["list"];
    let list_filtered = [
        "list",
        "--status",
        "COMPLETED",
        "--flow",
        "readme",
        "--tag",
        "default",
        "--limit",
        "10",
    ];
    let list_table = ["list", "--output", "table"];
    let (listed, filtered, table) = tokio::join!(
        pyoco_client(server, &list_all, cwd),
        pyoco_client(server, &list_filtered, cwd),
        pyoco_client(server, &list_table, cwd),
    );
    let listed = listed.json();
    assert_eq!(set(&ids_of(&listed)), set(&all_ids), "{listed}");
    for item in listed.as_array().unwrap() {
        assert_eq!(item["status"], "COMPLETED", "{item}");
        assert!(item["updated_at"].is_number(), "{item}");
        assert!(item.get("task_records").is_none(), "summary items: {item}");
    }
    let updated: Vec<f64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["updated_at"].as_f64().unwrap())
        .collect();
    assert!(
        updated.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {updated:?}"
    );
    let filtered = filtered.json();
    assert_eq!(set(&ids_of(&filtered)), set(&readme_ids), "{filtered}");
    assert_eq!(table.code, Some(0), "{table:?}");
    let mut table_lines = table.stdout.lines();
    let header: Vec<&str> = table_lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["run_id", "status", "flow_name", "tag", "updated_at"],
        "{table:?}"
    );
    let table_ids: BTreeSet<String> = table_lines
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(table_ids, set(&all_ids), "{table:?}");

    // list-vnext. Without a vNext parameter the server answers the compat array, which the
    // client wraps as `{"items", "next_cursor": null}` (0.5.1 does the same); `--updated-after 0`
    // asks for the vNext shape with every run. Pages of two through the cursor, then the delta
    // since the oldest run.
    let plain = ["list-vnext", "--limit", "2"];
    let first = ["list-vnext", "--limit", "2", "--updated-after", "0"];
    let (plain, page1) = tokio::join!(
        pyoco_client(server, &plain, cwd),
        pyoco_client(server, &first, cwd),
    );
    let plain = plain.json();
    assert_eq!(ids_of(&plain["items"]).len(), 2, "{plain}");
    assert_eq!(plain["next_cursor"], json!(null), "{plain}");
    let page1 = page1.json();
    let cursor = page1["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a next_cursor after 2 of 4 runs: {page1}"))
        .to_string();
    let oldest = updated.iter().copied().fold(f64::INFINITY, f64::min);
    let after = oldest.to_string();
    let page2 = [
        "list-vnext",
        "--limit",
        "2",
        "--updated-after",
        "0",
        "--cursor",
        cursor.as_str(),
    ];
    let delta = ["list-vnext", "--updated-after", after.as_str()];
    let (page2, delta) = tokio::join!(
        pyoco_client(server, &page2, cwd),
        pyoco_client(server, &delta, cwd),
    );
    let page2 = page2.json();
    let (ids1, ids2) = (ids_of(&page1["items"]), ids_of(&page2["items"]));
    assert_eq!(ids1.len(), 2, "{page1}");
    assert_eq!(ids2.len(), 2, "{page2}");
    assert_eq!(page2["next_cursor"], json!(null), "last page: {page2}");
    let mut both = ids1.clone();
    both.extend(ids2.iter().cloned());
    assert_eq!(both, ids_of(&listed), "the pages are the list, in order");
    let delta = delta.json();
    let newer: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["updated_at"].as_f64().unwrap() > oldest)
        .map(|i| i["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(newer.len(), 3, "{listed}");
    assert_eq!(set(&ids_of(&delta["items"])), newer, "{delta}");
    assert_eq!(delta["next_cursor"], json!(null), "{delta}");

    // workers and metrics.
    let active = ["workers"];
    let everyone = ["workers", "--scope", "all", "--output", "table"];
    let metrics = ["metrics"];
    let (active, everyone, metrics) = tokio::join!(
        pyoco_client(server, &active, cwd),
        pyoco_client(server, &everyone, cwd),
        pyoco_client(server, &metrics, cwd),
    );
    let active = active.json();
    let workers = active.as_array().unwrap_or_else(|| panic!("{active}"));
    let ours = workers
        .iter()
        .find(|w| w["worker_id"] == "e2e-worker")
        .unwrap_or_else(|| panic!("our worker is listed: {active}"));
    assert!(
        matches!(ours["state"].as_str(), Some("IDLE" | "RUNNING")),
        "{ours}"
    );
    assert_eq!(ours["tags"], json!(["default"]), "{ours}");
    assert_eq!(everyone.code, Some(0), "{everyone:?}");
    assert!(
        everyone
            .stdout
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some("e2e-worker")),
        "{everyone:?}"
    );
    assert_eq!(metrics.code, Some(0), "{metrics:?}");
    let text = &metrics.stdout;
    assert!(text.contains("# TYPE pyoco_runs_total gauge"), "{text}");
    assert_eq!(
        sample(text, "pyoco_runs_total{status=\"COMPLETED\"}"),
        Some(4.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE pyoco_runs_today_total gauge"),
        "{text}"
    );
    assert_eq!(
        sample(text, "pyoco_workers_alive_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_cancels_a_queued_run_and_waits_for_our_worker() {
    let mut app = TestApp::start(AppOptions::gateway_only()).await;
    let readme = app.path("flow.yaml");
    std::fs::write(&readme, README_FLOW).unwrap();
    let readme = readme.display().to_string();
    let server = app.base_url().to_string();
    let cwd = app.dir().to_path_buf();

    let run_id = submit(&server, &readme, "readme", &cwd).await;

    // No worker yet: the cancel is recorded and the run waits as CANCELLING.
    let cancelled = pyoco_client(&server, &["cancel", "--run-id", &run_id], &cwd)
        .await
        .json();
    assert_eq!(cancelled["run_id"], json!(run_id));
    assert_eq!(cancelled["status"], "CANCELLING", "{cancelled}");
    let requested_at = cancelled["cancel_requested_at"].clone();
    assert!(requested_at.is_number(), "{cancelled}");
    let got = pyoco_client(&server, &["get", &run_id], &cwd).await.json();
    assert_eq!(got["status"], "CANCELLING", "{got}");

    // `cancel --wait` polls until the run is terminal; our worker comes meanwhile, takes the
    // job and honours the cancel without starting anything.
    let args = [
        "cancel",
        "--run-id",
        run_id.as_str(),
        "--wait",
        "--timeout-sec",
        "45",
    ];
    let (waited, ()) = tokio::join!(pyoco_client(&server, &args, &cwd), app.start_worker());
    let waited = waited.json();
    assert_eq!(waited["status"], "CANCELLED", "{waited}");
    assert_eq!(waited["run_id"], json!(run_id));
    assert_eq!(
        waited["cancel_requested_at"], requested_at,
        "the first request's time is kept"
    );

    let got = pyoco_client(&server, &["get", &run_id], &cwd).await.json();
    assert_eq!(got["status"], "CANCELLED", "{got}");
    assert_eq!(got["tasks"], json!({}), "nothing was started: {got}");
    // A cancel of a finished run answers the run as it is.
    let again = pyoco_client(&server, &["cancel", "--run-id", &run_id, "--wait"], &cwd)
        .await
        .json();
    assert_eq!(again["status"], "CANCELLED", "{again}");
}
