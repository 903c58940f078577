//! `workers` (`GET /workers`): the worker registry as JSON, a table, or one row per installed
//! plugin wheel — 0.5.1's three outputs.

use clap::{Args, ValueEnum};
use pyoco_wire::python::{str_of_json, truthy};
use serde_json::Value;

use super::{
    error::CliError,
    gateway::{Gateway, Query},
    output::{table, Out},
};

const WORKER_COLUMNS: [&str; 5] = ["worker_id", "state", "tags", "plugins", "plugin_preview"];
const PLUGIN_COLUMNS: [&str; 6] = [
    "worker_id",
    "state",
    "tags",
    "package",
    "version",
    "wheel_name",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorkersOutput {
    Json,
    Table,
    Plugins,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WorkersArgs {
    /// `active` (RUNNING or IDLE) or `all`.
    #[arg(long, default_value = "active", value_parser = ["active", "all"])]
    pub scope: String,
    /// Only workers in this state.
    #[arg(long, value_parser = ["RUNNING", "IDLE", "STOPPED_GRACEFUL", "DISCONNECTED"])]
    pub state: Option<String>,
    /// Include workers hidden from the dashboard.
    #[arg(long)]
    pub include_hidden: bool,
    /// At most this many workers, most recently seen first (the gateway accepts 1..500).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub limit: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub output: WorkersOutput,
}

/// `pyoco-client workers`.
pub(crate) async fn workers(
    args: &WorkersArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let mut query = Query::new();
    if !args.scope.is_empty() {
        query.push(("scope", args.scope.clone()));
    }
    if let Some(state) = args.state.as_deref().filter(|s| !s.is_empty()) {
        query.push(("state", state.to_string()));
    }
    if args.include_hidden {
        query.push(("include_hidden", "true".to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let body = gw.get_json(&["workers"], &query).await?;
    let items = body.as_array().map(Vec::as_slice).unwrap_or_default();
    match args.output {
        WorkersOutput::Json => out.json(&body),
        WorkersOutput::Table => out.text(&table(&WORKER_COLUMNS, &worker_rows(items))),
        WorkersOutput::Plugins => out.text(&table(&PLUGIN_COLUMNS, &plugin_rows(items))),
    }
}

/// `str(x or "-")`.
fn or_dash(value: Option<&Value>) -> String {
    value
        .filter(|v| truthy(v))
        .map_or_else(|| "-".to_string(), str_of_json)
}

/// `str(x or "")`.
fn or_empty(value: Option<&Value>) -> String {
    value
        .filter(|v| truthy(v))
        .map(str_of_json)
        .unwrap_or_default()
}

/// The worker's tags joined by `,`, or `-`.
fn tags_text(item: &Value) -> String {
    let Some(tags) = item.get("tags").and_then(Value::as_array) else {
        return "-".to_string();
    };
    let tags: Vec<String> = tags
        .iter()
        .map(|t| str_of_json(t).trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if tags.is_empty() {
        "-".to_string()
    } else {
        tags.join(",")
    }
}

/// An installed plugin wheel: (package, version, wheel file).
struct Plugin {
    package: String,
    version: String,
    wheel: String,
}

/// `wheel_sync.installed_wheels` of a worker record.
fn plugins(item: &Value) -> Vec<Plugin> {
    item.get("wheel_sync")
        .and_then(|ws| ws.get("installed_wheels"))
        .and_then(Value::as_array)
        .map(|wheels| {
            wheels
                .iter()
                .filter(|w| w.is_object())
                .map(|w| Plugin {
                    package: or_empty(w.get("package_name")),
                    version: or_empty(w.get("package_version")),
                    wheel: or_empty(w.get("wheel_name")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `worker_id state tags plugins plugin_preview` (first three `pkg@ver`, then `+N`).
fn worker_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|item| {
            let plugins = plugins(item);
            let mut labels: Vec<String> = plugins
                .iter()
                .take(3)
                .map(|p| {
                    if !p.package.is_empty() && !p.version.is_empty() {
                        format!("{}@{}", p.package, p.version)
                    } else if p.wheel.is_empty() {
                        "-".to_string()
                    } else {
                        p.wheel.clone()
                    }
                })
                .collect();
            if plugins.len() > 3 {
                labels.push(format!("+{}", plugins.len() - 3));
            }
            vec![
                or_dash(item.get("worker_id")),
                or_dash(item.get("state")),
                tags_text(item),
                plugins.len().to_string(),
                if labels.is_empty() {
                    "-".to_string()
                } else {
                    labels.join(", ")
                },
            ]
        })
        .collect()
}

/// One row per installed wheel (`-` columns for a worker without any).
fn plugin_rows(items: &[Value]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for item in items {
        let worker_id = or_dash(item.get("worker_id"));
        let state = or_dash(item.get("state"));
        let tags = tags_text(item);
        let plugins = plugins(item);
        if plugins.is_empty() {
            rows.push(vec![
                worker_id,
                state,
                tags,
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            ]);
            continue;
        }
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        for p in plugins {
            rows.push(vec![
                worker_id.clone(),
                state.clone(),
                tags.clone(),
                dash(&p.package),
                dash(&p.version),
                dash(&p.wheel),
            ]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Vec<Value> {
        let wheel = |pkg: &str, ver: &str, name: &str| json!({"wheel_name": name, "package_name": pkg, "package_version": ver});
        vec![
            json!({"worker_id": "w1", "state": "IDLE", "tags": ["default", " gpu ", ""],
                   "wheel_sync": {"installed_wheels": [
                       wheel("a", "1.0", "a-1.0-py3-none-any.whl"),
                       wheel("b", "", "b-2-py3-none-any.whl"),
                       wheel("c", "3", "c.whl"),
                       wheel("d", "4", "d.whl"),
                       wheel("e", "5", "e.whl")]}}),
            json!({"worker_id": "w2", "state": "RUNNING", "tags": []}),
        ]
    }

    #[test]
    fn worker_table_previews_three_plugins() {
        assert_eq!(
            table(&WORKER_COLUMNS, &worker_rows(&sample())),
            // Printed by 0.5.1's `_print_table(..., _to_worker_table_rows(items))`.
            "worker_id  state    tags         plugins  plugin_preview                      \n\
             w1         IDLE     default,gpu  5        a@1.0, b-2-py3-none-any.whl, c@3, +2\n\
             w2         RUNNING  -            0        -                                   \n"
        );
    }

    #[test]
    fn plugin_table_has_a_row_per_wheel() {
        let rows = plugin_rows(&sample());
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[1],
            [
                "w1",
                "IDLE",
                "default,gpu",
                "b",
                "-",
                "b-2-py3-none-any.whl"
            ]
        );
        assert_eq!(rows[5], ["w2", "RUNNING", "-", "-", "-", "-"]);
    }

    #[test]
    fn no_workers_no_items() {
        assert_eq!(table(&WORKER_COLUMNS, &worker_rows(&[])), "(no items)\n");
    }
}
