//! `pyoco-client logs <run_id> [-f]`: the lines a run's tasks wrote (ours; GET
//! /runs/{run_id}/logs, and /logs/watch to follow). Text output prints each line as written,
//! stdout lines on stdout and stderr lines on stderr; `--output json` prints each item as one
//! JSON line on stdout.

use std::io::Write;

use clap::Args;
use reqwest::{header::ACCEPT, Method};
use serde_json::Value;

use super::{
    error::CliError,
    gateway::{connection_error, Gateway, Query, STREAM_IDLE_TIMEOUT},
    output::Out,
    sse::SseParser,
};

/// Lines asked for per page.
const PAGE: &str = "1000";

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct LogsArgs {
    /// The run's id.
    pub run_id: String,
    /// Keep following new lines until the run has ended and all its lines are printed.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only stdout or only stderr lines.
    #[arg(long, value_parser = ["stdout", "stderr"])]
    pub stream: Option<String>,
    /// Start after this seq (an item's `seq`).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// text (the lines) or json (one item per line, with seq, task, stream and ts).
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

/// `pyoco-client logs …`.
pub(crate) async fn logs(args: &LogsArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let mut after = args.after;
    // What is stored first (pages), then, with -f, what comes (the watch, from the last seq).
    loop {
        let mut query: Query = vec![("after", after.to_string()), ("limit", PAGE.to_string())];
        if let Some(task) = args.task.as_ref().filter(|t| !t.is_empty()) {
            query.push(("task", task.clone()));
        }
        if let Some(stream) = &args.stream {
            query.push(("stream", stream.clone()));
        }
        let page = gw.get_json(&["runs", &args.run_id, "logs"], &query).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            print_item(args, item, out)?;
            after = after.max(item["seq"].as_u64().unwrap_or(0));
        }
        match page["next"].as_u64() {
            Some(next) => after = after.max(next),
            None => break,
        }
    }
    if !args.follow {
        return Ok(());
    }
    // The watch ends after its timeout while the run goes on: reconnect from the last seq.
    loop {
        if follow(args, gw, out, &mut after).await? {
            return Ok(());
        }
    }
}

/// One watch connection; true once its `end` event came.
async fn follow(
    args: &LogsArgs,
    gw: &Gateway,
    out: &mut Out,
    after: &mut u64,
) -> Result<bool, CliError> {
    let url = gw.url(
        &["runs", &args.run_id, "logs", "watch"],
        &vec![("after", after.to_string())],
    );
    let request = gw
        .request(Method::GET, url.clone())
        .header(ACCEPT, "text/event-stream");
    let mut response = gw.send_streaming(request).await?;
    let mut parser = SseParser::new();
    loop {
        let chunk = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, response.chunk()).await {
            Err(_) => {
                return Err(CliError::Connection {
                    reason: format!(
                        "GET {url}: no data for {} s (not even a heartbeat)",
                        STREAM_IDLE_TIMEOUT.as_secs()
                    ),
                    hint: "the gateway stopped sending: check that it is healthy, then run \
                           `pyoco-client logs -f --after <last seq>` again"
                        .to_string(),
                })
            }
            Ok(Err(e)) => return Err(connection_error(&Method::GET, &url, &e)),
            Ok(Ok(None)) => return Ok(false),
            Ok(Ok(Some(chunk))) => chunk,
        };
        for event in parser.push(&chunk) {
            match event.event.as_str() {
                "log" => {
                    let seq = event.data["seq"].as_u64().unwrap_or(0);
                    if seq <= *after {
                        continue;
                    }
                    *after = seq;
                    let task_ok = args
                        .task
                        .as_deref()
                        .filter(|t| !t.is_empty())
                        .is_none_or(|t| event.data["task"].as_str() == Some(t));
                    let stream_ok = args
                        .stream
                        .as_deref()
                        .is_none_or(|s| event.data["stream"].as_str() == Some(s));
                    if task_ok && stream_ok {
                        print_item(args, &event.data, out)?;
                    }
                }
                "end" => return Ok(true),
                _ => {}
            }
        }
    }
}

fn print_item(args: &LogsArgs, item: &Value, out: &mut Out) -> Result<(), CliError> {
    if args.output == "json" {
        return out.json(item);
    }
    let line = item["line"].as_str().unwrap_or_default();
    if item["stream"] == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
        Ok(())
    } else {
        out.text(&format!("{line}\n"))
    }
}
