//! `cancel --run-id X [--wait [--timeout-sec N]]` (`POST /runs/{run_id}/cancel`).
//!
//! The gateway marks the run CANCELLING; a worker stops it at its next task boundary. With
//! `--wait` the run is polled (`GET /runs/{run_id}` every 0.25 s, like 0.5.1) until its status is
//! COMPLETED, FAILED or CANCELLED, and that snapshot is printed; after `--timeout-sec` (at least
//! 1 s) it is `ERR-PYOCO-CANCEL: wait timeout`, exit 1.

use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::{error::CliError, gateway::Gateway, get::get_run, output::Out};

/// How often `--wait` polls the run.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct CancelArgs {
    /// The run to cancel.
    #[arg(long, value_name = "RUN_ID", required = true)]
    pub run_id: String,
    /// Wait until the run has stopped (COMPLETED, FAILED or CANCELLED).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (at least 1).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        allow_negative_numbers = true
    )]
    pub timeout_sec: i64,
}

/// `pyoco-client cancel`.
pub(crate) async fn cancel(args: &CancelArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let url = gw.url(&["runs", &args.run_id, "cancel"], &Vec::new());
    let mut snapshot = gw.send_json(gw.request(Method::POST, url)).await?;
    if args.wait {
        let deadline = Instant::now() + Duration::from_secs(args.timeout_sec.max(1).unsigned_abs());
        while !is_stopped(&snapshot) {
            if Instant::now() >= deadline {
                return Err(CliError::CancelTimeout {
                    run_id: args.run_id.clone(),
                    timeout_sec: args.timeout_sec.max(1),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            snapshot = get_run(gw, &args.run_id, false).await?;
        }
    }
    out.json(&snapshot)
}

/// 0.5.1's check: `str(status or "").upper()` is terminal.
fn is_stopped(snapshot: &Value) -> bool {
    let status = snapshot
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_uppercase();
    matches!(status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stopped_is_a_terminal_status_in_any_case() {
        assert!(is_stopped(&json!({"status": "CANCELLED"})));
        assert!(is_stopped(&json!({"status": "completed"})));
        assert!(!is_stopped(&json!({"status": "CANCELLING"})));
        assert!(!is_stopped(&json!({})));
    }
}
