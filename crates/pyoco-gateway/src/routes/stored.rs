//! Stored records as the routes read them: the KV key rule, a run's snapshot as the caller may
//! see it, the answer for a snapshot that is not a JSON object, and the `include` filter.
//!
//! Why a module of its own: reading a run is the same for `GET /runs/{run_id}`, `/tasks`,
//! `/watch` and `/cancel`, and the key rule also guards `PATCH /workers/{worker_id}`. Kept in
//! one route's module, every other route would import that route; here each route imports
//! this module and this module imports no route.

use axum::http::StatusCode;
use pyoco_store::{Store, StoreError};
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::{
    auth::Caller,
    error::{log_refusal, ApiError},
};

/// Read a run's snapshot as raw JSON (so keys this version does not know are kept), hidden
/// from other tenants. A value that is not a JSON object is a corrupt record: 500
/// `run record is corrupt` (a server-side data problem, logged with the run id).
pub(crate) async fn load_run(
    store: &Store,
    caller: &Caller,
    run_id: &str,
) -> Result<Map<String, Value>, ApiError> {
    Ok(load_run_at(store, caller, run_id).await?.0)
}

/// [`load_run`], with the KV revision the snapshot was read at (for a compare-and-set write).
pub(crate) async fn load_run_at(
    store: &Store,
    caller: &Caller,
    run_id: &str,
) -> Result<(Map<String, Value>, u64), ApiError> {
    if !is_valid_kv_key(run_id) {
        // No run can be stored under it; NATS would refuse the lookup.
        return Err(run_not_found(run_id));
    }
    let entry = store
        .runs()
        .get(run_id)
        .await?
        .ok_or_else(|| run_not_found(run_id))?;
    let snapshot = match pyoco_wire::value_from_python_json(&entry.value) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(corrupt_run(run_id, "not a JSON object")),
        Err(err) => return Err(corrupt_run(run_id, err)),
    };
    if !caller.can_see(&snapshot) {
        return Err(run_not_found(run_id));
    }
    Ok((snapshot, entry.revision))
}

/// 404 `run not found`, logged as 0.5.1 does (INFO, `ERR-PYOCO-0005`, the run id).
pub(crate) fn run_not_found(run_id: &str) -> ApiError {
    log_refusal!("0005", "run not found", run_id = %run_id);
    ApiError::run_not_found().logged()
}

/// 500 `run record is corrupt` for a stored run value that is not a JSON object; the reason
/// names the run and the problem, and the error is logged.
pub(crate) fn corrupt_run(run_id: &str, why: impl std::fmt::Display) -> ApiError {
    let err = StoreError::Corrupt {
        key: run_id.to_string(),
        message: why.to_string(),
    };
    tracing::error!(%run_id, "{err}");
    ApiError::with_reason(
        StatusCode::INTERNAL_SERVER_ERROR,
        "run record is corrupt",
        err.to_string(),
    )
}

// The `include` query of `GET /runs/{run_id}` and `/watch` as `/openapi.json` describes it;
// `Include::parse` reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub(crate) struct IncludeParams {
    /// Repeatable. `records` or `task_records` keep `task_records` and
    /// `task_records_truncated`; `full` or `all` keep everything. Other values are ignored.
    #[param(explode, style = Form, example = json!(["records"]))]
    include: Option<Vec<String>>,
}

/// The `include` query of `GET /runs/{run_id}` (repeatable).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Include {
    records: bool,
}

impl Include {
    pub(crate) fn parse(query: Option<&str>) -> Include {
        let mut include = Include::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key == "include" {
                // `full`/`all` keep everything; only the records are ever removed.
                if matches!(&*value, "records" | "task_records" | "full" | "all") {
                    include.records = true;
                }
            }
        }
        include
    }

    pub(crate) fn apply(self, snapshot: &mut Map<String, Value>) {
        if !self.records {
            snapshot.shift_remove("task_records");
            snapshot.shift_remove("task_records_truncated");
        }
    }
}

/// Whether a run or worker can be stored under `key`, so whether asking NATS for it makes sense:
/// pyoco-wire's KV key rule, and no empty `.`-separated token. `a..b` passes the character rule
/// but is no valid subject, and NATS refuses the lookup (`InvalidKey`): that is "no such run"
/// (404), not "NATS unavailable" (503).
pub(crate) fn is_valid_kv_key(key: &str) -> bool {
    pyoco_wire::is_valid_kv_key(key) && !key.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_keeps_records_only_when_asked() {
        assert_eq!(Include::parse(None), Include { records: false });
        assert_eq!(
            Include::parse(Some("include=x&other=all")),
            Include { records: false }
        );
        for q in [
            "include=records",
            "include=task_records",
            "include=full",
            "a=1&include=all",
        ] {
            assert!(Include::parse(Some(q)).records, "{q}");
        }
        assert!(Include::parse(Some("include=x&include=records")).records);
    }

    #[test]
    fn run_ids_outside_the_kv_key_rule_are_rejected() {
        assert!(is_valid_kv_key("0b6e5c1e-2f0a-4d4e-9a8b-1c2d3e4f5a6b"));
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", "é"] {
            assert!(!is_valid_kv_key(bad), "{bad:?}");
        }
    }
}
