//! `GET /metrics`: Prometheus text format (0.0.4), the four pyoco gauges of 0.5.1 (contract
//! §3.2) and the usual `process_*` metrics. Not authenticated, like 0.5.1 (§14-14).
//!
//! Run counts come from the [`RunIndex`](crate::index::RunIndex): the totals are kept per
//! status as runs change, and today's counts walk only the runs updated since local midnight,
//! so a scrape no longer reads every snapshot (§14-19) and an empty or partly corrupt bucket
//! answers 200 (§14-4, §14-22). Workers are read from their bucket (a handful of keys) and the
//! DLQ size from its stream info, both best effort as in 0.5.1.

use std::{fmt::Write as _, ops::Range};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use chrono::{DateTime, Local, NaiveDate, TimeZone};
use futures::future::join_all;
use pyoco_store::Store;
use pyoco_wire::WorkerRecord;

use super::{openapi::NatsUnavailable, runs::epoch_now};
use crate::{bucket_keys::bucket_keys, error::ApiError, index::READY_WAIT, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// What Starlette sends for `media_type="text/plain; version=0.0.4"`.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4: `pyoco_runs_total` and `pyoco_runs_today_total` \
by `status`, `pyoco_workers_alive_total`, `pyoco_dlq_messages_total` (omitted when the DLQ \
stream cannot be read), and the usual `process_*` metrics. Not authenticated, like 0.5.1.",
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
    let (workers_alive, dlq_messages) = tokio::join!(
        workers_alive(store, epoch_now(), state.worker_disconnect_timeout_sec()),
        store.dlq_message_count(),
    );

    let mut body = String::with_capacity(2048);
    gauge_header(
        &mut body,
        "pyoco_runs_total",
        "Count of runs by status (best-effort from KV).",
    );
    for (status, n) in &counts.total {
        sample_with_status(&mut body, "pyoco_runs_total", status, *n);
    }
    gauge_header(
        &mut body,
        "pyoco_runs_today_total",
        "Count of runs updated today by status (best-effort from KV).",
    );
    for (status, n) in &counts.today {
        sample_with_status(&mut body, "pyoco_runs_today_total", status, *n);
    }
    gauge_header(
        &mut body,
        "pyoco_workers_alive_total",
        "Count of workers present in TTL KV (best-effort).",
    );
    let _ = writeln!(body, "pyoco_workers_alive_total {workers_alive}");
    gauge_header(
        &mut body,
        "pyoco_dlq_messages_total",
        "Total DLQ messages in the DLQ stream (best-effort).",
    );
    match dlq_messages {
        Ok(n) => {
            let _ = writeln!(body, "pyoco_dlq_messages_total {n}");
        }
        Err(err) => tracing::debug!("metrics: DLQ stream info failed: {err}"),
    }
    process::write(&mut body);

    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

fn gauge_header(body: &mut String, name: &str, help: &str) {
    let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn sample_with_status(body: &mut String, name: &str, status: &str, value: u64) {
    let _ = writeln!(
        body,
        "{name}{{status=\"{}\"}} {value}",
        escape_label_value(status)
    );
}

/// Label values escape `\`, `"` and newlines (text format 0.0.4).
fn escape_label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
        .into()
}

/// Workers whose derived state (§4.3) is `RUNNING` or `IDLE`. Best effort like 0.5.1: a NATS
/// error counts nothing, an unreadable record is skipped.
async fn workers_alive(store: &Store, now: f64, disconnect_timeout: f64) -> u64 {
    let workers = store.workers();
    let keys = match bucket_keys(workers).await {
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

/// `process_*` metrics as the Prometheus client libraries name them, read from `/proc`.
#[cfg(target_os = "linux")]
mod process {
    use std::fmt::Write as _;

    pub(super) fn write(body: &mut String) {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the `(comm)`, which may itself contain spaces and parentheses.
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // Field n of proc(5) is `fields[n - 3]`.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let ticks = clock_ticks_per_second();

        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            metric(
                body,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (utime + stime) / ticks,
            );
        }
        if let Some(kib) = status_kib("VmSize:") {
            metric(
                body,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                kib * 1024.0,
            );
        }
        if let Some(kib) = status_kib("VmRSS:") {
            metric(
                body,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                kib * 1024.0,
            );
        }
        if let (Some(start), Some(boot)) = (field(22), boot_time()) {
            metric(
                body,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + start / ticks,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            metric(
                body,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                fds.count() as f64,
            );
        }
        if let Some(max) = max_open_files() {
            metric(
                body,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }

    fn metric(body: &mut String, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(
            body,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }

    fn clock_ticks_per_second() -> f64 {
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 {
            ticks as f64
        } else {
            100.0
        }
    }

    /// A `kB` line of `/proc/self/status`.
    fn status_kib(prefix: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix(prefix))?;
        line.trim().trim_end_matches("kB").trim().parse().ok()
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    fn max_open_files() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod process {
    /// No `/proc` here: the process metrics are left out.
    pub(super) fn write(_body: &mut String) {}
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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("RUNNING"), "RUNNING");
        assert_eq!(escape_label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut body = String::new();
        process::write(&mut body);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(body.contains(&format!("\n{name} ")), "{name} in {body}");
        }
        let start: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(start > 1.6e9 && start <= epoch_now() + 1.0, "{start}");
    }
}
