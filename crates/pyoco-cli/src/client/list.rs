//! `list` and `list-vnext` (`GET /runs`).
//!
//! `list` asks for the compat shape (a bare array); `list-vnext` for the paged
//! `{"items": [...], "next_cursor": ...}` shape, which the gateway answers when `--updated-after`,
//! `--cursor` or `--workflow-yaml-sha256` is given (otherwise the array is wrapped client-side,
//! like 0.5.1). Both can print 0.5.1's table instead of JSON.

use clap::{Args, ValueEnum};
use pyoco_wire::python::{float_repr, str_of_json, truthy};
use serde_json::{Map, Value};

use super::{
    error::CliError,
    gateway::{Gateway, Query},
    output::{table, Out},
};

/// Columns of the run tables.
const RUN_COLUMNS: [&str; 5] = ["run_id", "status", "flow_name", "tag", "updated_at"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListOutput {
    Json,
    Table,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct ListArgs {
    /// Only runs with this status (PENDING, RUNNING, CANCELLING, COMPLETED, FAILED, CANCELLED).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only runs of this flow name.
    #[arg(long, value_name = "NAME")]
    pub flow: Option<String>,
    /// Only runs routed with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Full snapshots (with task records) instead of summaries.
    #[arg(long)]
    pub full: bool,
    /// At most this many runs, newest first (the gateway accepts 1..200; default 50).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub limit: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub output: ListOutput,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct ListVnextArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Only runs updated strictly after this Unix time (seconds).
    #[arg(long, value_name = "TS", allow_negative_numbers = true)]
    pub updated_after: Option<f64>,
    /// Continue after the page that printed this next_cursor.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Only runs of the flow.yaml with this sha256 (hex).
    #[arg(long, value_name = "HEX")]
    pub workflow_yaml_sha256: Option<String>,
}

/// The filters both commands send (empty strings are not sent, like 0.5.1).
fn list_query(args: &ListArgs) -> Query {
    let mut query = Query::new();
    let filters = [
        ("status", &args.status),
        ("flow", &args.flow),
        ("tag", &args.tag),
    ];
    for (name, value) in filters {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            query.push((name, v.to_string()));
        }
    }
    if args.full {
        query.push(("include", "full".to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

/// `pyoco-client list`.
pub(crate) async fn list(args: &ListArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let body = gw.get_json(&["runs"], &list_query(args)).await?;
    // A gateway answering the paged shape anyway: keep its items.
    let items = match body {
        Value::Object(mut map) => match map.remove("items") {
            Some(items @ Value::Array(_)) => items,
            _ => Value::Array(Vec::new()),
        },
        other => other,
    };
    match args.output {
        ListOutput::Json => out.json(&items),
        ListOutput::Table => out.text(&table(&RUN_COLUMNS, &run_rows(items.as_array()))),
    }
}

/// `pyoco-client list-vnext`.
pub(crate) async fn list_vnext(
    args: &ListVnextArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let mut query = list_query(&args.list);
    if let Some(after) = args.updated_after {
        query.push(("updated_after", float_repr(after)));
    }
    if let Some(cursor) = args.cursor.as_deref().filter(|c| !c.is_empty()) {
        query.push(("cursor", cursor.to_string()));
    }
    if let Some(sha) = args
        .workflow_yaml_sha256
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        query.push(("workflow_yaml_sha256", sha.to_string()));
    }
    let body = match gw.get_json(&["runs"], &query).await? {
        items @ Value::Array(_) => {
            let mut page = Map::new();
            page.insert("items".into(), items);
            page.insert("next_cursor".into(), Value::Null);
            Value::Object(page)
        }
        other => other,
    };
    match args.list.output {
        ListOutput::Json => out.json(&body),
        ListOutput::Table => out.text(&vnext_table(&body)),
    }
}

/// The run table of a page, then `next_cursor: <c>` when there is a next page.
fn vnext_table(page: &Value) -> String {
    let mut text = table(
        &RUN_COLUMNS,
        &run_rows(page.get("items").and_then(Value::as_array)),
    );
    if let Some(cursor) = page.get("next_cursor").filter(|c| truthy(c)) {
        text.push_str(&format!("next_cursor: {}\n", str_of_json(cursor)));
    }
    text
}

/// One row per run: `str()` of each column's value, `-` when the key is missing.
fn run_rows(items: Option<&Vec<Value>>) -> Vec<Vec<String>> {
    items
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    RUN_COLUMNS
                        .iter()
                        .map(|col| item.get(*col).map_or_else(|| "-".to_string(), str_of_json))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn run_table_is_0_5_1s() {
        let items = json!([
            {"run_id": "r-1", "status": "COMPLETED", "flow_name": "main", "tag": "default",
             "updated_at": 1764000000.25},
            {"run_id": "r-22", "status": "PENDING", "flow_name": "f", "tag": null}
        ]);
        assert_eq!(
            table(&RUN_COLUMNS, &run_rows(items.as_array())),
            // Printed by 0.5.1's `_print_table(..., _to_run_table_rows(items))`.
            "run_id  status     flow_name  tag      updated_at   \n\
             r-1     COMPLETED  main       default  1764000000.25\n\
             r-22    PENDING    f          None     -            \n"
        );
    }

    #[test]
    fn vnext_table_adds_the_cursor_line_only_when_there_is_one() {
        let page = json!({"items": [], "next_cursor": null});
        assert_eq!(vnext_table(&page), "(no items)\n");
        let page = json!({"items": [{"run_id": "r"}], "next_cursor": "eyJ1Ijox"});
        assert_eq!(
            vnext_table(&page),
            "run_id  status  flow_name  tag  updated_at\nr       -       -          -    -         \n\
             next_cursor: eyJ1Ijox\n"
        );
    }

    #[test]
    fn only_given_filters_are_sent() {
        let args = ListArgs {
            status: Some("RUNNING".into()),
            flow: Some(String::new()),
            tag: None,
            full: true,
            limit: Some(5),
            output: ListOutput::Json,
        };
        assert_eq!(
            list_query(&args),
            vec![
                ("status", "RUNNING".to_string()),
                ("include", "full".to_string()),
                ("limit", "5".to_string())
            ]
        );
    }
}
