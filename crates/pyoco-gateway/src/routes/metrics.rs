//! `GET /metrics`: Prometheus text format (0.0.4), the four pyoco gauges of 0.5.1 (contract
//! §3.2) and, on Linux, the usual `process_*` metrics. Behind the API key when auth is on (0.5.1
//! forgot to protect it, §14-14), with one more gauge then: `pyoco_api_key_verifications_total`.
//!
//! Each scrape fills a fresh [`prometheus::Registry`] (the pyoco gauges and a
//! [`ProcessCollector`](prometheus::process_collector::ProcessCollector)) and writes it with
//! [`prometheus::TextEncoder`], which also escapes label values and orders each gauge's lines
//! by `status`.
//!
//! Run counts come from the [`RunIndex`](crate::index::RunIndex): the totals are kept per
//! status as runs change, and today's counts walk only the runs updated since local midnight,
//! so a scrape no longer reads every snapshot (§14-19) and an empty or partly corrupt bucket
//! answers 200 (§14-4, §14-22). Workers are read from their bucket (a handful of keys) and the
//! DLQ size from its stream info, both best effort as in 0.5.1.

use std::{collections::BTreeMap, fmt::Write as _, ops::Range};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use chrono::{DateTime, Local, NaiveDate, TimeZone};
use futures::future::join_all;
use prometheus::{Gauge, GaugeVec, Opts, Registry, TextEncoder};
use pyoco_store::Store;
use pyoco_wire::{python, WorkerRecord};

use super::components::NatsUnavailable;
use crate::{error::ApiError, index::StatusCounts, index::READY_WAIT, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// What Starlette sends for `media_type="text/plain; version=0.0.4"`.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const RUNS_TOTAL: (&str, &str) = (
    "pyoco_runs_total",
    "Count of runs by status (best-effort from KV).",
);
const RUNS_TODAY_TOTAL: (&str, &str) = (
    "pyoco_runs_today_total",
    "Count of runs updated today by status (best-effort from KV).",
);
const WORKERS_ALIVE_TOTAL: (&str, &str) = (
    "pyoco_workers_alive_total",
    "Count of workers present in TTL KV (best-effort).",
);
const DLQ_MESSAGES_TOTAL: (&str, &str) = (
    "pyoco_dlq_messages_total",
    "Total DLQ messages in the DLQ stream (best-effort).",
);
const DLQ_BY_REASON: (&str, &str) = (
    "pyoco_dlq_messages_by_reason",
    "DLQ messages by reason (ours; best-effort, read once per entry).",
);
const QUEUE_DEPTH: (&str, &str) = (
    "pyoco_queue_depth",
    "Jobs in the work queue by tag: waiting, or delivered and not yet acknowledged (ours).",
);
const API_KEY_VERIFICATIONS_TOTAL: (&str, &str) = (
    "pyoco_api_key_verifications_total",
    "API key hashes (PBKDF2) computed since the gateway started; remembered keys cost none.",
);

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4: `pyoco_runs_total` and `pyoco_runs_today_total` \
by `status`, `pyoco_workers_alive_total`, `pyoco_dlq_messages_total` (omitted when the DLQ \
stream cannot be read), `pyoco_api_key_verifications_total` (API key hashes computed, with auth \
on), `pyoco_dlq_messages_by_reason` by `reason` (ours), `pyoco_queue_depth` by `tag` (ours: jobs waiting or unacknowledged in the work queue) \
and the usual `process_*` metrics. Needs the API key when auth is on (0.5.1 left it open).",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4",
         body = String),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store()?;
    let index = state.run_index();
    index.ready(READY_WAIT).await?;
    let counts = index.status_counts(local_day(Local::now()));
    let (workers_alive, dlq, queue_depths) = tokio::join!(
        workers_alive(store, python::time(), state.worker_disconnect_timeout_sec()),
        store.dlq_state(),
        store.work_queue_depths(),
    );
    let dlq = dlq
        .inspect_err(|err| tracing::debug!("metrics: DLQ stream info failed: {err}"))
        .ok();
    let dlq_messages = dlq.map(|d| d.messages);
    let dlq_reasons = super::dlq::reason_counts(&state, store, dlq).await;
    let queue_depths = queue_depths
        .inspect_err(|err| tracing::debug!("metrics: work stream info failed: {err}"))
        .unwrap_or_default();

    let verifications = state.auth().verifications();
    let gauges = Gauges {
        workers_alive,
        dlq_messages,
        verifications,
        queue_depths: &queue_depths,
        dlq_reasons: &dlq_reasons,
    };
    let body = render(&counts, &gauges).map_err(|err| {
        ApiError::detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {err}"),
        )
    })?;
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// The gauges of one scrape besides the run counts.
struct Gauges<'a> {
    workers_alive: u64,
    /// `None` when the DLQ stream could not be read: that gauge is left out.
    dlq_messages: Option<u64>,
    /// `None` with auth off: that gauge is left out.
    verifications: Option<u64>,
    /// Per tag; empty (no lines) when the work stream could not be read or holds no job.
    queue_depths: &'a [(String, u64)],
    /// Per reason; empty (no lines) when the DLQ is empty.
    dlq_reasons: &'a [(String, u64)],
}

/// The body of one scrape: the pyoco gauges in a fixed order, then the process metrics.
fn render(counts: &StatusCounts, g: &Gauges<'_>) -> prometheus::Result<String> {
    let registry = Registry::new();
    register_by_status(&registry, RUNS_TOTAL, &counts.total)?;
    register_by_status(&registry, RUNS_TODAY_TOTAL, &counts.today)?;
    register_gauge(&registry, WORKERS_ALIVE_TOTAL, g.workers_alive)?;
    if let Some(n) = g.dlq_messages {
        register_gauge(&registry, DLQ_MESSAGES_TOTAL, n)?;
    }
    if let Some(n) = g.verifications {
        register_gauge(&registry, API_KEY_VERIFICATIONS_TOTAL, n)?;
    }
    if !g.dlq_reasons.is_empty() {
        let gauges = GaugeVec::new(Opts::new(DLQ_BY_REASON.0, DLQ_BY_REASON.1), &["reason"])?;
        for (reason, n) in g.dlq_reasons {
            gauges.with_label_values(&[reason]).set(*n as f64);
        }
        registry.register(Box::new(gauges))?;
    }
    if !g.queue_depths.is_empty() {
        let gauges = GaugeVec::new(Opts::new(QUEUE_DEPTH.0, QUEUE_DEPTH.1), &["tag"])?;
        for (tag, n) in g.queue_depths {
            gauges.with_label_values(&[tag]).set(*n as f64);
        }
        registry.register(Box::new(gauges))?;
    }
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;

    // Sorted by name, each family's lines by label value; families without lines are left out.
    let mut families: BTreeMap<String, _> = registry
        .gather()
        .into_iter()
        .map(|family| (family.name().to_owned(), family))
        .collect();
    let encoder = TextEncoder::new();
    let mut body = String::with_capacity(2048);
    for (name, help) in [RUNS_TOTAL, RUNS_TODAY_TOTAL] {
        match families.remove(name) {
            Some(family) => encoder.encode_utf8(&[family], &mut body)?,
            // No run counted yet. The encoder refuses a family without samples, but the
            // labelled gauge is still described (as the Python client library does).
            None => {
                let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} gauge");
            }
        }
    }
    for (name, _) in [
        WORKERS_ALIVE_TOTAL,
        DLQ_MESSAGES_TOTAL,
        DLQ_BY_REASON,
        API_KEY_VERIFICATIONS_TOTAL,
        QUEUE_DEPTH,
    ] {
        if let Some(family) = families.remove(name) {
            encoder.encode_utf8(&[family], &mut body)?;
        }
    }
    let process: Vec<_> = families.into_values().collect();
    encoder.encode_utf8(&process, &mut body)?;
    Ok(body)
}

/// `name{status="…"} n`, one line per status.
fn register_by_status(
    registry: &Registry,
    (name, help): (&str, &str),
    counts: &[(String, u64)],
) -> prometheus::Result<()> {
    let gauges = GaugeVec::new(Opts::new(name, help), &["status"])?;
    for (status, n) in counts {
        gauges.with_label_values(&[status]).set(*n as f64);
    }
    registry.register(Box::new(gauges))
}

fn register_gauge(
    registry: &Registry,
    (name, help): (&str, &str),
    value: u64,
) -> prometheus::Result<()> {
    let gauge = Gauge::with_opts(Opts::new(name, help))?;
    gauge.set(value as f64);
    registry.register(Box::new(gauge))
}

/// Workers whose derived state (§4.3) is `RUNNING` or `IDLE`. Best effort like 0.5.1: a NATS
/// error counts nothing, an unreadable record is skipped.
async fn workers_alive(store: &Store, now: f64, disconnect_timeout: f64) -> u64 {
    let workers = store.workers();
    let keys = match workers.key_candidates().await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::debug!("metrics: listing workers failed: {err}");
            return 0;
        }
    };
    let entries = join_all(keys.iter().map(|key| workers.get(key))).await;
    let mut alive = 0;
    for (key, entry) in keys.iter().zip(entries) {
        let Ok(Some(entry)) = entry else { continue };
        match WorkerRecord::from_json(&entry.value, key) {
            Ok(record) if record.derived_state(now, disconnect_timeout).is_active() => alive += 1,
            Ok(_) => {}
            Err(err) => tracing::debug!(worker_id = %key, "metrics: unreadable worker: {err}"),
        }
    }
    alive
}

/// The server's local calendar day containing `now`, as epoch seconds `[midnight, next
/// midnight)` — `datetime.fromtimestamp(t).astimezone().date() == today` in 0.5.1.
fn local_day(now: DateTime<Local>) -> Range<f64> {
    let today = now.date_naive();
    let start = local_day_start(today);
    let end = today.succ_opt().map_or(f64::INFINITY, local_day_start);
    start..end
}

/// The first instant of `day` in local time (01:00 where DST skips midnight).
fn local_day_start(day: NaiveDate) -> f64 {
    let first = (0..24).find_map(|hour| {
        let local = day.and_hms_opt(hour, 0, 0)?;
        Local.from_local_datetime(&local).earliest()
    });
    first.map_or(f64::NEG_INFINITY, |t| {
        t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_day_spans_midnight_to_midnight() {
        let now = Local::now();
        let day = local_day(now);
        let t = now.timestamp() as f64;
        assert!(day.start <= t && t < day.end, "{day:?} {t}");
        assert!(day.end - day.start >= 23.0 * 3600.0 && day.end - day.start <= 25.0 * 3600.0);
        let start = Local.timestamp_opt(day.start as i64, 0).unwrap();
        assert_eq!(start.date_naive(), now.date_naive());
        let before = Local.timestamp_opt(day.start as i64 - 1, 0).unwrap();
        assert_ne!(before.date_naive(), now.date_naive());
    }

    fn counts(total: &[(&str, u64)], today: &[(&str, u64)]) -> StatusCounts {
        let owned = |v: &[(&str, u64)]| v.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        StatusCounts {
            total: owned(total),
            today: owned(today),
        }
    }

    /// The body up to the process metrics.
    fn pyoco_part(body: &str) -> &str {
        body.find("# HELP process_").map_or(body, |at| &body[..at])
    }

    #[test]
    fn the_pyoco_gauges_are_sorted_by_status_and_escaped() {
        let counts = counts(
            &[("RUNNING", 1), ("COMPLETED", 2), ("we\"ird\\\n", 3)],
            &[("FAILED", 4)],
        );
        let depths = [("cpu".to_string(), 3), ("default".to_string(), 0)];
        let g = Gauges {
            workers_alive: 5,
            dlq_messages: Some(6),
            verifications: None,
            queue_depths: &depths,
            dlq_reasons: &[],
        };
        let body = render(&counts, &g).unwrap();
        assert_eq!(
            pyoco_part(&body),
            "\
# HELP pyoco_runs_total Count of runs by status (best-effort from KV).
# TYPE pyoco_runs_total gauge
pyoco_runs_total{status=\"COMPLETED\"} 2
pyoco_runs_total{status=\"RUNNING\"} 1
pyoco_runs_total{status=\"we\\\"ird\\\\\\n\"} 3
# HELP pyoco_runs_today_total Count of runs updated today by status (best-effort from KV).
# TYPE pyoco_runs_today_total gauge
pyoco_runs_today_total{status=\"FAILED\"} 4
# HELP pyoco_workers_alive_total Count of workers present in TTL KV (best-effort).
# TYPE pyoco_workers_alive_total gauge
pyoco_workers_alive_total 5
# HELP pyoco_dlq_messages_total Total DLQ messages in the DLQ stream (best-effort).
# TYPE pyoco_dlq_messages_total gauge
pyoco_dlq_messages_total 6
# HELP pyoco_queue_depth Jobs in the work queue by tag: waiting, or delivered and not yet acknowledged (ours).
# TYPE pyoco_queue_depth gauge
pyoco_queue_depth{tag=\"cpu\"} 3
pyoco_queue_depth{tag=\"default\"} 0
"
        );
    }

    #[test]
    fn empty_status_gauges_are_described_and_an_unknown_dlq_is_left_out() {
        let g = Gauges {
            workers_alive: 0,
            dlq_messages: None,
            verifications: None,
            queue_depths: &[],
            dlq_reasons: &[],
        };
        let body = render(&counts(&[], &[]), &g).unwrap();
        assert_eq!(
            pyoco_part(&body),
            "\
# HELP pyoco_runs_total Count of runs by status (best-effort from KV).
# TYPE pyoco_runs_total gauge
# HELP pyoco_runs_today_total Count of runs updated today by status (best-effort from KV).
# TYPE pyoco_runs_today_total gauge
# HELP pyoco_workers_alive_total Count of workers present in TTL KV (best-effort).
# TYPE pyoco_workers_alive_total gauge
pyoco_workers_alive_total 0
"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_follow_the_pyoco_gauges() {
        let g = Gauges {
            workers_alive: 0,
            dlq_messages: Some(0),
            verifications: None,
            queue_depths: &[],
            dlq_reasons: &[],
        };
        let body = render(&counts(&[], &[]), &g).unwrap();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(body.contains(&format!("\n{name} ")), "{name} in {body}");
        }
        assert!(body.ends_with('\n'));
        let start: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(start > 1.6e9 && start <= python::time() + 1.0, "{start}");
    }
}
