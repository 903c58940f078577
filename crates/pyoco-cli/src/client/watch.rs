//! `watch <run_id>` (`GET /runs/{run_id}/watch`, server-sent events).
//!
//! Prints each event as it arrives: `{"event": …, "data": …}` (`--output json`) or 0.5.1's
//! `<ts>\t<event>\t<status>\t<run_id>` line (`--output status`). On a terminal, `status` output
//! is a live line instead — a spinner, the run's status, flow and id, and a bar of finished
//! tasks — with one plain line kept each time the status changes; piped, it is 0.5.1's lines.
//!
//! The gateway never ends the stream on a terminal status (it ends after `--timeout-sec`, 60 s by
//! default): `--until-terminal` stops after the first COMPLETED, FAILED or CANCELLED snapshot,
//! `--max-events N` after N events.

use std::{io::IsTerminal, time::Duration};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pyoco_wire::python::{float_repr, str_of_json, truthy};
use reqwest::{header::ACCEPT, Method};
use serde_json::Value;

use super::{
    error::CliError,
    gateway::{connection_error, Gateway, Query, STREAM_IDLE_TIMEOUT},
    output::Out,
    sse::{SseEvent, SseParser},
};

/// Run statuses after which nothing changes (case-sensitive, like 0.5.1's check).
const TERMINAL: [&str; 3] = ["COMPLETED", "FAILED", "CANCELLED"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WatchOutput {
    Json,
    Status,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WatchArgs {
    /// The run id `submit` printed.
    pub run_id: String,
    /// Include the task records in each snapshot.
    #[arg(long)]
    pub records: bool,
    /// Skip snapshots last updated before this Unix time (seconds).
    #[arg(long, value_name = "TS", allow_negative_numbers = true)]
    pub since: Option<f64>,
    /// How long the gateway keeps the stream open (1..600 s; gateway default 60).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout_sec: Option<i64>,
    /// Stop after this many events (0 = no limit).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub max_events: i64,
    /// Stop after the first COMPLETED, FAILED or CANCELLED snapshot.
    #[arg(long)]
    pub until_terminal: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub output: WatchOutput,
}

/// `pyoco-client watch`.
pub(crate) async fn watch(args: &WatchArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let mut query = Query::new();
    if args.records {
        query.push(("include", "records".to_string()));
    }
    if let Some(since) = args.since {
        query.push(("since", float_repr(since)));
    }
    if let Some(timeout) = args.timeout_sec {
        query.push(("timeout_sec", timeout.to_string()));
    }
    let url = gw.url(&["runs", &args.run_id, "watch"], &query);
    let request = gw
        .request(Method::GET, url.clone())
        .header(ACCEPT, "text/event-stream");
    let mut response = gw.send_streaming(request).await?;

    let live = args.output == WatchOutput::Status && std::io::stdout().is_terminal();
    let mut printer = Printer::new(args.output, live);
    let mut parser = SseParser::new();
    let mut count: i64 = 0;
    let result = async {
        loop {
            let chunk = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, response.chunk()).await {
                Err(_) => return Err(CliError::Connection {
                    reason: format!(
                        "GET {url}: no data for {} s (not even a heartbeat)",
                        STREAM_IDLE_TIMEOUT.as_secs()
                    ),
                    hint: "the gateway stopped sending: check that it is healthy, then watch again"
                        .to_string(),
                }),
                Ok(Err(e)) => return Err(connection_error(&Method::GET, &url, &e)),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(chunk))) => chunk,
            };
            for event in parser.push(&chunk) {
                printer.print(&event, out)?;
                count += 1;
                if args.max_events > 0 && count >= args.max_events {
                    return Ok(());
                }
                if args.until_terminal && is_terminal(&event) {
                    return Ok(());
                }
            }
        }
    }
    .await;
    printer.finish();
    result
}

/// True when the event is a snapshot with a terminal status.
fn is_terminal(event: &SseEvent) -> bool {
    event
        .data
        .get("snapshot")
        .and_then(|s| s.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|status| TERMINAL.contains(&status))
}

/// 0.5.1's `--output status` line: `<ts>\t<event>\t<status>\t<run_id>`.
pub(crate) fn status_line(event: &SseEvent) -> String {
    let data = &event.data;
    let snapshot = data.get("snapshot").filter(|s| truthy(s));
    let field = |v: Option<&Value>| v.filter(|v| truthy(v)).map(str_of_json);
    let run_id = field(data.get("run_id"))
        .or_else(|| field(snapshot.and_then(|s| s.get("run_id"))))
        .unwrap_or_else(|| "-".into());
    let status = field(snapshot.and_then(|s| s.get("status"))).unwrap_or_else(|| "-".into());
    let ts = field(data.get("ts"))
        .or_else(|| field(snapshot.and_then(|s| s.get("updated_at"))))
        .unwrap_or_else(|| "-".into());
    format!("{ts}\t{}\t{status}\t{run_id}", event.event)
}

/// Finished and total tasks of a snapshot (`tasks` maps task name → state).
fn task_counts(snapshot: &Value) -> (u64, u64) {
    let Some(tasks) = snapshot.get("tasks").and_then(Value::as_object) else {
        return (0, 0);
    };
    let done = tasks
        .values()
        .filter(|state| {
            state
                .as_str()
                .is_some_and(|s| matches!(s, "SUCCEEDED" | "FAILED" | "CANCELLED"))
        })
        .count();
    (done as u64, tasks.len() as u64)
}

/// Prints events as JSON lines, status lines, or the live view.
struct Printer {
    output: WatchOutput,
    live: Option<Live>,
}

struct Live {
    bar: ProgressBar,
    last_status: Option<String>,
    /// The task bar is shown (once the snapshot lists tasks; a spinner alone before).
    has_bar: bool,
}

/// The live line: spinner and message, plus the task bar once there are tasks.
fn live_style(with_bar: bool) -> ProgressStyle {
    let template = if with_bar {
        "{spinner} {msg} [{bar:24}] {pos}/{len} tasks, {elapsed}"
    } else {
        "{spinner} {msg} ({elapsed})"
    };
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

impl Printer {
    fn new(output: WatchOutput, live: bool) -> Printer {
        let live = live.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout())
                .with_style(live_style(false))
                .with_message("waiting for the first event…");
            bar.enable_steady_tick(Duration::from_millis(120));
            Live {
                bar,
                last_status: None,
                has_bar: false,
            }
        });
        Printer { output, live }
    }

    fn print(&mut self, event: &SseEvent, out: &mut Out) -> Result<(), CliError> {
        match (self.output, &mut self.live) {
            (WatchOutput::Json, _) => out.json(&event.to_json()),
            (WatchOutput::Status, None) => out.text(&format!("{}\n", status_line(event))),
            (WatchOutput::Status, Some(live)) => {
                live.update(event);
                Ok(())
            }
        }
    }

    fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            live.bar.finish_and_clear();
        }
    }
}

impl Drop for Printer {
    /// Ctrl-C drops the command mid-stream: don't leave a half-drawn live line behind.
    fn drop(&mut self) {
        self.finish();
    }
}

impl Live {
    fn update(&mut self, event: &SseEvent) {
        let Some(snapshot) = event.data.get("snapshot").filter(|s| s.is_object()) else {
            return; // heartbeats only keep the spinner turning
        };
        let status = snapshot
            .get("status")
            .map(str_of_json)
            .unwrap_or_else(|| "-".into());
        if self.last_status.as_deref() != Some(status.as_str()) {
            self.bar.println(status_line(event));
            self.last_status = Some(status.clone());
        }
        let (done, total) = task_counts(snapshot);
        if (total > 0) != self.has_bar {
            self.has_bar = total > 0;
            self.bar.set_style(live_style(self.has_bar));
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
        let flow = snapshot
            .get("flow_name")
            .map(str_of_json)
            .unwrap_or_default();
        let run_id = snapshot.get("run_id").map(str_of_json).unwrap_or_default();
        self.bar
            .set_message(format!("{status:<10} {flow} {run_id}"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(event: &str, data: Value) -> SseEvent {
        SseEvent {
            event: event.into(),
            data,
        }
    }

    #[test]
    fn status_lines_are_0_5_1s() {
        let snapshot = ev(
            "snapshot",
            json!({"run_id": "r1", "snapshot": {"run_id": "r1", "status": "RUNNING", "updated_at": 5.0}, "ts": 1764000000.5}),
        );
        assert_eq!(
            status_line(&snapshot),
            "1764000000.5\tsnapshot\tRUNNING\tr1"
        );
        let heartbeat = ev("heartbeat", json!({"run_id": "r1", "ts": 7.0}));
        assert_eq!(status_line(&heartbeat), "7.0\theartbeat\t-\tr1");
        let no_ts = ev(
            "snapshot",
            json!({"snapshot": {"run_id": "r2", "status": "PENDING", "updated_at": 3.25}}),
        );
        assert_eq!(status_line(&no_ts), "3.25\tsnapshot\tPENDING\tr2");
        let raw = ev("message", json!({"raw": "x"}));
        assert_eq!(status_line(&raw), "-\tmessage\t-\t-");
    }

    #[test]
    fn terminal_means_a_terminal_snapshot_status() {
        for (status, terminal) in [
            ("COMPLETED", true),
            ("FAILED", true),
            ("CANCELLED", true),
            ("CANCELLING", false),
            ("RUNNING", false),
            ("completed", false),
        ] {
            let e = ev("snapshot", json!({"snapshot": {"status": status}}));
            assert_eq!(is_terminal(&e), terminal, "{status}");
        }
        assert!(!is_terminal(&ev("heartbeat", json!({"ts": 1.0}))));
    }

    #[test]
    fn task_counts_count_finished_tasks() {
        let snap =
            json!({"tasks": {"a": "SUCCEEDED", "b": "RUNNING", "c": "FAILED", "d": "PENDING"}});
        assert_eq!(task_counts(&snap), (2, 4));
        assert_eq!(task_counts(&json!({"tasks": {}})), (0, 0));
        assert_eq!(task_counts(&json!({})), (0, 0));
    }
}
