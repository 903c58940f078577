//! `get <run_id>` (`GET /runs/{run_id}`) and `tasks <run_id>` (`GET /runs/{run_id}/tasks`).

use clap::Args;

use super::{error::CliError, gateway::Gateway, gateway::Query, output::Out};

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct GetArgs {
    /// The run id `submit` printed.
    pub run_id: String,
    /// Include the task records (inputs, outputs, errors, timings).
    #[arg(long)]
    pub records: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct TasksArgs {
    /// The run id `submit` printed.
    pub run_id: String,
}

/// `pyoco-client get`.
pub(crate) async fn get(args: &GetArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    out.json(&get_run(gw, &args.run_id, args.records).await?)
}

/// The run's snapshot, with its task records when `records`.
pub(crate) async fn get_run(
    gw: &Gateway,
    run_id: &str,
    records: bool,
) -> Result<serde_json::Value, CliError> {
    let query: Query = if records {
        vec![("include", "records".to_string())]
    } else {
        Vec::new()
    };
    gw.get_json(&["runs", run_id], &query).await
}

/// `pyoco-client tasks`.
pub(crate) async fn tasks(args: &TasksArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    out.json(
        &gw.get_json(&["runs", &args.run_id, "tasks"], &Vec::new())
            .await?,
    )
}
