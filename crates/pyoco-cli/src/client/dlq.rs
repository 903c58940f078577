//! `pyoco-client dlq list|show|replay|delete`: the dead-letter queue (ours; 0.5.1's client has
//! no such command, its gateway no such endpoints).

use clap::{Args, Subcommand};
use reqwest::Method;

use super::{
    error::CliError,
    gateway::{Gateway, Query},
    output::{table, Out},
};

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub(crate) enum DlqCommand {
    /// List dead letters, newest first (GET /dlq).
    List(DlqListArgs),
    /// Print one dead letter with the job it came from (GET /dlq/{id}).
    Show(DlqIdArgs),
    /// Run a dead letter's job again as a new run (POST /dlq/{id}/replay).
    Replay(DlqIdArgs),
    /// Delete a dead letter (DELETE /dlq/{id}).
    Delete(DlqIdArgs),
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct DlqListArgs {
    /// Only entries of this job tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only this reason (invalid_job, flow_not_found, execution_error, max_deliver_exceeded, …).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only entries of this run.
    #[arg(long, value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// Only entries stored at or after this time (epoch seconds).
    #[arg(long, value_name = "EPOCH_SECONDS")]
    pub since: Option<f64>,
    /// Entries per page (1..500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after a page (its next_cursor).
    #[arg(long)]
    pub cursor: Option<String>,
    /// json (the gateway's answer) or table.
    #[arg(long, value_parser = ["json", "table"], default_value = "json")]
    pub output: String,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct DlqIdArgs {
    /// The entry's id (as `pyoco-client dlq list` shows it).
    pub id: String,
}

/// `pyoco-client dlq …`.
pub(crate) async fn dlq(args: &DlqArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    match &args.command {
        DlqCommand::List(list) => {
            let mut query: Query = vec![("limit", list.limit.to_string())];
            for (key, value) in [
                ("tag", list.tag.clone()),
                ("reason", list.reason.clone()),
                ("run_id", list.run_id.clone()),
                ("since", list.since.map(|s| s.to_string())),
                ("cursor", list.cursor.clone()),
            ] {
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    query.push((key, value));
                }
            }
            let page = gw.get_json(&["dlq"], &query).await?;
            if list.output == "table" {
                let cell = |item: &serde_json::Value, key: &str| match &item[key] {
                    serde_json::Value::Null => "-".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let rows: Vec<Vec<String>> = page["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|i| {
                                [
                                    "id",
                                    "reason",
                                    "run_id",
                                    "flow_name",
                                    "tag",
                                    "replayed_run_id",
                                    "error",
                                ]
                                .iter()
                                .map(|k| cell(i, k))
                                .collect()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut text = table(
                    &[
                        "id",
                        "reason",
                        "run_id",
                        "flow_name",
                        "tag",
                        "replayed",
                        "error",
                    ],
                    &rows,
                );
                if let Some(next) = page["next_cursor"].as_str() {
                    text.push_str(&format!("\nmore: --cursor {next}\n"));
                }
                out.text(&text)
            } else {
                out.json(&page)
            }
        }
        DlqCommand::Show(id) => out.json(&gw.get_json(&["dlq", &id.id], &Query::new()).await?),
        DlqCommand::Replay(id) => {
            let url = gw.url(&["dlq", &id.id, "replay"], &Query::new());
            out.json(&gw.send_json(gw.request(Method::POST, url)).await?)
        }
        DlqCommand::Delete(id) => {
            let url = gw.url(&["dlq", &id.id], &Query::new());
            out.json(&gw.send_json(gw.request(Method::DELETE, url)).await?)
        }
    }
}
