//! `schedule-yaml`, `schedules`, `schedule-runs`, `schedule-delete` (pyoco-server 0.7's client
//! commands, same flags, JSON output), and ours: `schedule-pause`, `schedule-resume`, and
//! `schedule-yaml --cron [--timezone] [--catch-up]`.

use std::path::Path;

use clap::Args;
use reqwest::{multipart, Method};
use serde_json::json;

use super::{
    error::CliError,
    gateway::{Gateway, Query},
    output::Out,
    submit::read_text,
};

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct ScheduleYamlArgs {
    /// Path to the flow.yaml to run.
    #[arg(long, value_name = "FILE", required = true)]
    pub workflow_file: String,
    /// Name of the runs' flow.
    #[arg(long, value_name = "NAME", required = true)]
    pub flow_name: String,
    /// Routing tag: the queue the runs go to.
    #[arg(long, value_name = "TAG", required = true)]
    pub tag: String,
    /// One run at this time: ISO 8601 with a timezone offset, e.g. 2030-01-01T09:00:00+01:00.
    #[arg(long, value_name = "DATETIME", group = "timing")]
    pub run_at: Option<String>,
    /// A run every this many seconds (at least 1).
    #[arg(long, value_name = "SECONDS", group = "timing")]
    pub interval_seconds: Option<f64>,
    /// With --interval-seconds: the first slot (ISO 8601 with a timezone offset).
    #[arg(long, value_name = "DATETIME", requires = "interval_seconds")]
    pub start_at: Option<String>,
    /// Ours: a cron expression, 5 fields or 6 with seconds first, e.g. '0 9 * * 1-5'.
    #[arg(long, value_name = "EXPR", group = "timing")]
    pub cron: Option<String>,
    /// Ours, with --cron: the IANA time zone it is read in (default UTC).
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub timezone: Option<String>,
    /// Ours: slots missed while no gateway ran: none (skip them) or one (one run at once).
    #[arg(long, value_name = "MODE", value_parser = ["none", "one"])]
    pub catch_up: Option<String>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct ScheduleRunsArgs {
    /// The schedule's id.
    #[arg(long, value_name = "ID", required = true)]
    pub schedule_id: String,
    /// At most this many runs (1..200; the gateway's default is 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Full snapshots (with task records) instead of summaries.
    #[arg(long)]
    pub records: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct ScheduleIdArgs {
    /// The schedule's id.
    #[arg(long, value_name = "ID", required = true)]
    pub schedule_id: String,
}

/// `pyoco-client schedule-yaml`.
pub(crate) async fn schedule_yaml(
    args: &ScheduleYamlArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let text = read_text(Path::new(&args.workflow_file), "--workflow-file")?;
    let part = multipart::Part::bytes(text.into_bytes())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .expect("a valid MIME type");
    let mut form = multipart::Form::new()
        .text("flow_name", args.flow_name.clone())
        .text("tag", args.tag.clone());
    for (name, value) in [
        ("run_at", args.run_at.clone()),
        (
            "interval_seconds",
            args.interval_seconds.map(|s| s.to_string()),
        ),
        ("start_at", args.start_at.clone()),
        ("cron", args.cron.clone()),
        ("timezone", args.timezone.clone()),
        ("catch_up", args.catch_up.clone()),
    ] {
        if let Some(value) = value {
            form = form.text(name, value);
        }
    }
    let form = form.part("workflow", part);
    let request = gw
        .request(Method::POST, gw.url(&["schedules", "yaml"], &Vec::new()))
        .multipart(form);
    out.json(&gw.send_json(request).await?)
}

/// `pyoco-client schedules`.
pub(crate) async fn schedules(gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    out.json(&gw.get_json(&["schedules"], &Query::new()).await?)
}

/// `pyoco-client schedule-runs`.
pub(crate) async fn schedule_runs(
    args: &ScheduleRunsArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let mut query: Query = Vec::new();
    if args.records {
        query.push(("include", "full".to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    out.json(
        &gw.get_json(&["schedules", &args.schedule_id, "runs"], &query)
            .await?,
    )
}

/// `pyoco-client schedule-delete`.
pub(crate) async fn schedule_delete(
    args: &ScheduleIdArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let url = gw.url(&["schedules", &args.schedule_id], &Query::new());
    out.json(&gw.send_json(gw.request(Method::DELETE, url)).await?)
}

/// `pyoco-client schedule-pause` / `schedule-resume` (ours).
pub(crate) async fn schedule_pause(
    args: &ScheduleIdArgs,
    paused: bool,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let url = gw.url(&["schedules", &args.schedule_id], &Query::new());
    let request = gw
        .request(Method::PATCH, url)
        .json(&json!({ "paused": paused }));
    out.json(&gw.send_json(request).await?)
}
