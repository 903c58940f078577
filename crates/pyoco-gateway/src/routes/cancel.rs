//! `POST /runs/{run_id}/cancel`: ask for a run to stop (contract §3.2, §4.1). The worker that
//! runs it sees the request at its next run heartbeat and cancels cooperatively (§6.8).
//!
//! The cancel is a read-modify-write of the run snapshot, which workers rewrite every second.
//! 0.5.1 read the snapshot and put it back unconditionally, so a worker write landing in between
//! was overwritten by the stale copy: its heartbeat and task progress were lost, and a run that
//! had just finished came back as `CANCELLING` for ever (§14-2). Here the write is a
//! compare-and-set on the revision that was read. When another writer got there first, we read
//! again and decide again — the run may have finished meanwhile, and then it is answered as it is.
//! Neither the cancel nor the other write is lost. (Keeping a cancel through the *worker's*
//! writes is the worker's part: it reads the snapshot before writing and keeps the cancel
//! fields, §14-1.)

use std::time::Duration;

use axum::{
    extract::{rejection::PathRejection, Path, State},
    routing::post,
    Router,
};
use pyoco_store::{Store, StoreError};
use pyoco_wire::python;
use serde_json::{Map, Value};

use super::components::{BadRequest, CorruptRecord, NatsUnavailable, RunNotFound, RunSnapshot};
use super::stored::{is_valid_kv_key, load_run_at, run_not_found, Include};
use crate::{auth::Caller, error::ApiError, json::PyJson, AppState};

/// How many times a cancel re-reads the snapshot after losing a compare-and-set to another
/// writer before it gives up with `503 nats unavailable: Conflict`. A worker writes a run about
/// once a second, so more than one retry is already rare.
const MAX_ATTEMPTS: u32 = 20;

/// Statuses a cancel leaves as they are (§4.1).
const TERMINAL: [&str; 3] = ["COMPLETED", "FAILED", "CANCELLED"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/runs/{run_id}/cancel", post(cancel_run))
}

/// `POST /runs/{run_id}/cancel` (the body, if any, is ignored): the snapshot after the cancel,
/// filtered like `GET /runs/{run_id}` without records and without worker liveness.
#[utoipa::path(
    post,
    path = "/runs/{run_id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    summary = "Ask for a run to stop",
    description = "A run that is not finished becomes `CANCELLING` (the first request's \
`cancel_requested_at` is kept); its worker cancels at the next task boundary. A finished run \
(`COMPLETED`, `FAILED`, `CANCELLED`) is answered as it is. A request body is ignored.",
    params(("run_id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The snapshot after the request, without `task_records`",
         body = RunSnapshot),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 500, response = CorruptRecord),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    run_id: Result<Path<String>, PathRejection>,
) -> Result<PyJson<Map<String, Value>>, ApiError> {
    let Path(run_id) = run_id?;
    if !is_valid_kv_key(&run_id) {
        // No run can be stored under it; NATS would refuse the lookup.
        return Err(run_not_found(&run_id));
    }
    let store = state.store()?;
    let mut snapshot = cancel_with_retries(store, &caller, &run_id).await?;
    Include::default().apply(&mut snapshot);
    Ok(PyJson(snapshot))
}

/// Read, decide, compare-and-set; again from the read when another writer got there first.
async fn cancel_with_retries(
    store: &Store,
    caller: &Caller,
    run_id: &str,
) -> Result<Map<String, Value>, ApiError> {
    for attempt in 0..MAX_ATTEMPTS {
        let (mut snapshot, revision) = load_run_at(store, caller, run_id).await?;
        if !request_cancel(&mut snapshot, caller, python::time()) {
            tracing::debug!(%run_id, "cancel of a finished run: nothing to do");
            return Ok(snapshot);
        }
        let bytes = pyoco_wire::to_python_json(&snapshot);
        match store.runs().update(run_id, bytes, revision).await {
            Ok(_) => {
                tracing::info!(%run_id, attempts = attempt + 1, "run cancel requested");
                return Ok(snapshot);
            }
            Err(StoreError::Conflict(_)) => {
                tracing::debug!(%run_id, attempt, "run changed while cancelling; reading again");
                // Step aside a little longer each time, so a busy writer can finish.
                tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Unavailable {
        kind: "Conflict".into(),
        message: format!(
            "run {run_id} kept changing: cancel lost the compare-and-set {MAX_ATTEMPTS} times"
        ),
    })
}

/// Mark `snapshot` as cancel-requested the way 0.5.1 does, touching only `status`,
/// `cancel_requested_at` (the first request's time is kept), `cancel_requested_by` (only for an
/// API-key caller) and `updated_at`. Returns `false`, changing nothing, for a finished run.
fn request_cancel(snapshot: &mut Map<String, Value>, caller: &Caller, now: f64) -> bool {
    let status = snapshot
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_uppercase)
        .unwrap_or_default();
    if TERMINAL.contains(&status.as_str()) {
        return false;
    }
    let requested_at = snapshot
        .get("cancel_requested_at")
        .and_then(earlier_request_time)
        .unwrap_or(now);
    snapshot.insert("status".into(), "CANCELLING".into());
    snapshot.insert(
        "cancel_requested_at".into(),
        python::float_value(requested_at),
    );
    if let Some(key_id) = &caller.api_key_id {
        snapshot.insert(
            "cancel_requested_by".into(),
            format!("api_key:{key_id}").into(),
        );
    }
    snapshot.insert("updated_at".into(), python::float_value(now));
    true
}

/// `float(snap.get("cancel_requested_at") or now)`: a stored non-zero number (or numeric
/// string) is kept; anything else — absent, null, 0, garbage — means "no earlier request".
fn earlier_request_time(value: &Value) -> Option<f64> {
    let at = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    (at.is_finite() && at != 0.0).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_pending_run_becomes_cancelling_and_nothing_else_changes() {
        let mut snap =
            map(json!({"run_id": "r", "status": "pending", "x": [1, 2.5], "updated_at": 1.0}));
        assert!(request_cancel(&mut snap, &Caller::default(), 7.5));
        assert_eq!(
            Value::Object(snap),
            json!({"run_id": "r", "status": "CANCELLING", "x": [1, 2.5], "updated_at": 7.5,
                   "cancel_requested_at": 7.5})
        );
    }

    #[test]
    fn the_first_request_time_is_kept_and_the_key_id_recorded() {
        let caller = Caller {
            tenant_id: Some("t".into()),
            api_key_id: Some("k1".into()),
        };
        for (stored, kept) in [
            (json!(3.25), 3.25),
            (json!("4.5"), 4.5),
            (json!(0), 9.0),
            (json!(null), 9.0),
            (json!("soon"), 9.0),
        ] {
            let mut snap = map(json!({"status": "RUNNING", "cancel_requested_at": stored}));
            assert!(request_cancel(&mut snap, &caller, 9.0));
            assert_eq!(snap["cancel_requested_at"], json!(kept));
            assert_eq!(snap["cancel_requested_by"], json!("api_key:k1"));
        }
    }

    #[test]
    fn finished_runs_are_left_alone() {
        for status in ["COMPLETED", "failed", "Cancelled"] {
            let before = map(json!({"status": status, "updated_at": 1.0}));
            let mut snap = before.clone();
            assert!(!request_cancel(&mut snap, &Caller::default(), 2.0));
            assert_eq!(snap, before);
        }
        // Unknown and missing statuses are not finished (0.5.1 cancels them too).
        for snap in [json!({"status": "PENDING_APPROVAL"}), json!({})] {
            assert!(request_cancel(&mut map(snap), &Caller::default(), 2.0));
        }
    }
}
