//! End to end: the whole application as users run it — real nats-server, the appliance's
//! gateway and worker, the real pyoco in the runner processes — and the real Python
//! pyoco-server 0.5.1 beside it on the same NATS.
//!
//! One test binary, so the tests run in parallel (each has its own nats-server and temp dirs).

mod appliance;
mod auth_interop;
mod browser;
mod dashboard;
mod deploy;
mod dlq;
mod docs_references;
mod fleet;
mod hostile;
mod interop;
mod module_graph;
mod nats_outage;
mod python_client;
mod readme_flow;
mod schedules;
mod server_binary;
mod task_logs;
mod wheel_appliance;
mod wheel_interop;

use std::time::Duration;

/// How long a run of these small flows may take from submit to a terminal state (runner
/// startup on a busy 2-core machine included).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(45);

/// The terminal run statuses.
pub const TERMINAL: &[&str] = &["COMPLETED", "FAILED", "CANCELLED"];

/// The README's example: `hello(name)` with `name` from the defaults, then `shout(hello)`,
/// which receives `hello`'s result by its name.
pub const README_FLOW: &str = "\
version: 1
flow:
  graph: |
    hello >> shout
  defaults:
    name: world
tasks:
  hello:
    callable: e2e_tasks:hello
  shout:
    callable: e2e_tasks:shout
";

/// What every complete run of [`README_FLOW`] shows in `GET /runs/{id}/tasks`.
pub fn assert_readme_flow_records(records: &serde_json::Value) {
    use serde_json::json;
    assert_eq!(records["hello"]["state"], "SUCCEEDED", "{records}");
    assert_eq!(records["hello"]["inputs"], json!({"name": "world"}));
    assert_eq!(records["hello"]["output"], "hello world");
    assert_eq!(records["hello"]["error"], json!(null));
    assert_eq!(records["shout"]["state"], "SUCCEEDED", "{records}");
    assert_eq!(records["shout"]["inputs"], json!({"hello": "hello world"}));
    assert_eq!(records["shout"]["output"], "HELLO WORLD!");
    assert_eq!(records["shout"]["error"], json!(null));
}

/// The keys of a JSON object, sorted.
pub fn sorted_keys(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}
