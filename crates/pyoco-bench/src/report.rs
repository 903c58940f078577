//! The results of one system and the side-by-side markdown table.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

#[derive(Debug, Default)]
pub struct SystemResult {
    pub name: String,
    /// Did the system run at all (false = skipped, see notes).
    pub ran: bool,
    pub metrics: BTreeMap<String, f64>,
    /// Details per phase (requests, errors, full latency summaries…), for the JSON file.
    pub details: Map<String, Value>,
    /// Skips and errors, in order.
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl SystemResult {
    pub fn new(name: &str) -> Self {
        SystemResult {
            name: name.to_owned(),
            ..Default::default()
        }
    }
    pub fn set(&mut self, key: &str, v: f64) {
        if v.is_finite() {
            self.metrics.insert(key.to_owned(), v);
        }
    }
    pub fn note(&mut self, msg: impl Into<String>) {
        let m = msg.into();
        eprintln!("[{}] NOTE: {}", self.name, m);
        self.notes.push(m);
    }
    pub fn detail(&mut self, key: &str, v: Value) {
        self.details.insert(key.to_owned(), v);
    }
    pub fn to_json(&self) -> Value {
        json!({
            "ran": self.ran,
            "seconds": self.seconds,
            "metrics": self.metrics,
            "details": self.details,
            "notes": self.notes,
        })
    }
}

/// One result per system from several rounds: each metric is the median over the rounds that
/// produced it; details and notes are kept per round.
pub fn combine(rounds: Vec<Vec<SystemResult>>) -> Vec<SystemResult> {
    let mut out: Vec<SystemResult> = Vec::new();
    let n = rounds.len();
    for (i, round) in rounds.into_iter().enumerate() {
        for r in round {
            let idx = match out.iter().position(|o| o.name == r.name) {
                Some(p) => p,
                None => {
                    out.push(SystemResult::new(&r.name));
                    out.len() - 1
                }
            };
            let o = &mut out[idx];
            o.ran |= r.ran;
            o.seconds += r.seconds;
            for note in r.notes {
                o.notes.push(format!("round {}/{n}: {note}", i + 1));
            }
            let mut d = r.details;
            d.insert("metrics".into(), json!(r.metrics));
            o.details
                .insert(format!("round_{}", i + 1), Value::Object(d));
        }
    }
    for o in &mut out {
        let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, v) in o.details.iter() {
            if let Some(m) = v.get("metrics").and_then(Value::as_object) {
                for (k, x) in m {
                    if let Some(x) = x.as_f64() {
                        all.entry(k.clone()).or_default().push(x);
                    }
                }
            }
        }
        for (k, v) in all {
            o.metrics.insert(k, crate::load::median(v));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

pub struct Row {
    pub key: String,
    pub label: String,
    pub better: Better,
}

fn row(key: &str, label: impl Into<String>, better: Better) -> Row {
    Row {
        key: key.to_owned(),
        label: label.into(),
        better,
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every row of the table, in order. `levels` = stored-run counts of the list / metrics
/// measurements, `history` = wheel-history records stored for `GET /wheels/history`,
/// `tput` = runs per throughput batch, `dashboard` = (finished runs stored, page loads) of the
/// dashboard measurement.
pub fn rows(
    levels: &[usize],
    history: usize,
    tput: usize,
    reps: usize,
    dashboard: Option<(usize, usize)>,
    concurrency_levels: &[usize],
) -> Vec<Row> {
    use Better::*;
    let mut r = vec![
        row(
            "gateway_start_ms",
            format!("gateway start → `/health` answers (ms, median of {reps})"),
            Lower,
        ),
        row(
            "worker_start_ms",
            format!("worker start → listed in `GET /workers` (ms, median of {reps})"),
            Lower,
        ),
    ];
    for c in [1, 8, 32] {
        r.push(row(
            &format!("post_c{c}_rps"),
            format!("`POST /runs/yaml` c={c} (req/s)"),
            Higher,
        ));
    }
    for c in [1, 32] {
        r.push(row(
            &format!("post_c{c}_p50_ms"),
            format!("`POST /runs/yaml` c={c} p50 (ms)"),
            Lower,
        ));
        r.push(row(
            &format!("post_c{c}_p99_ms"),
            format!("`POST /runs/yaml` c={c} p99 (ms)"),
            Lower,
        ));
    }
    for c in [1, 8, 32] {
        r.push(row(
            &format!("get_c{c}_rps"),
            format!("`GET /runs/{{id}}` c={c} (req/s)"),
            Higher,
        ));
    }
    r.push(row(
        "get_c32_p50_ms",
        "`GET /runs/{id}` c=32 p50 (ms)",
        Lower,
    ));
    r.push(row(
        "get_auth_off_c32_rps",
        "`GET /runs/{id}` c=32, one run, auth off (req/s)",
        Higher,
    ));
    r.push(row(
        "get_auth_api_key_c32_rps",
        "`GET /runs/{id}` c=32, one run, API key (req/s)",
        Higher,
    ));
    r.push(row(
        "get_auth_api_key_c32_p50_ms",
        "`GET /runs/{id}` c=32, API key, p50 (ms)",
        Lower,
    ));
    r.push(row(
        "get_auth_share_pct",
        "API key on, as % of auth off (req/s)",
        Higher,
    ));
    for l in levels {
        r.push(row(
            &format!("list_{l}_p50_ms"),
            format!(
                "`GET /runs?limit=100`, {} runs stored (p50 ms)",
                thousands(*l)
            ),
            Lower,
        ));
    }
    for l in levels {
        r.push(row(
            &format!("metrics_{l}_p50_ms"),
            format!("`GET /metrics`, {} runs stored (p50 ms)", thousands(*l)),
            Lower,
        ));
    }
    r.push(row(
        "history_p50_ms",
        format!(
            "`GET /wheels/history?limit=100`, {} records stored (p50 ms)",
            thousands(history)
        ),
        Lower,
    ));
    r.push(row(
        "sse_p50_ms",
        "`GET /runs/{id}/watch`: KV write → `snapshot` event, p50 (ms)",
        Lower,
    ));
    r.push(row(
        "sse_p99_ms",
        "`GET /runs/{id}/watch`: KV write → `snapshot` event, p99 (ms)",
        Lower,
    ));
    r.push(row(
        "watchers_open",
        "`GET /runs/{id}/watch` streams open at once on one run (of --watchers)",
        Higher,
    ));
    r.push(row(
        "watchers_rss_mib",
        "RSS gateway with those streams open (MiB)",
        Lower,
    ));
    r.push(row(
        "watchers_fanout_p50_ms",
        "one KV write → `snapshot` event on each open stream, p50 (ms)",
        Lower,
    ));
    r.push(row(
        "watchers_fanout_max_ms",
        "one KV write → `snapshot` event on the last open stream (ms)",
        Lower,
    ));
    r.push(row(
        "watchers_health_ms",
        "`GET /health` with those streams open (ms)",
        Lower,
    ));
    r.push(row(
        "e2e_p50_ms",
        "submit → COMPLETED, sequential, 1 worker: p50 (ms)",
        Lower,
    ));
    r.push(row(
        "e2e_p99_ms",
        "submit → COMPLETED, sequential, 1 worker: p99 (ms)",
        Lower,
    ));
    r.push(row(
        "floor_rps",
        "floor: pyoco `Engine` running the bench flow in a loop, one process (runs/s)",
        Higher,
    ));
    r.push(row(
        "health_c32_rps",
        "`GET /health` c=32: the bench client's ceiling (req/s)",
        Higher,
    ));
    r.push(row(
        "tput_1w_rps",
        format!("{tput} runs at once, 1 worker (runs/s)"),
        Higher,
    ));
    r.push(row(
        "tput_1w_floor_pct",
        "1 worker as % of the floor",
        Higher,
    ));
    r.push(row(
        "tput_2w_rps",
        format!("{tput} runs at once, 2 workers (runs/s)"),
        Higher,
    ));
    for c in concurrency_levels {
        r.push(row(
            &format!("tput_1w_c{c}_rps"),
            format!("{tput} runs at once, 1 worker `--concurrency {c}` (runs/s)"),
            Higher,
        ));
        r.push(row(
            &format!("tput_1w_c{c}_floor_pct"),
            format!("1 worker `--concurrency {c}` as % of the floor"),
            Higher,
        ));
    }
    r.push(row(
        "log_latency_p50_ms",
        "task `print` → `log` event on `/runs/{id}/logs/watch`, p50 (ms)",
        Lower,
    ));
    r.push(row(
        "log_latency_p99_ms",
        "task `print` → `log` event on `/runs/{id}/logs/watch`, p99 (ms)",
        Lower,
    ));
    let mib = [
        ("rss_gateway_idle_mib", "RSS gateway idle (MiB)"),
        (
            "rss_gateway_http_mib",
            "RSS gateway after the HTTP phases (MiB)",
        ),
        ("rss_gateway_load_mib", "RSS gateway at the end (MiB)"),
        ("rss_worker_idle_mib", "RSS worker process idle (MiB)"),
        (
            "rss_worker_children_idle_mib",
            "RSS worker's child processes idle (MiB)",
        ),
        (
            "rss_worker_total_idle_mib",
            "RSS worker + children idle (MiB)",
        ),
        ("rss_worker_load_mib", "RSS worker process after load (MiB)"),
        (
            "rss_worker_children_load_mib",
            "RSS worker's child processes after load (MiB)",
        ),
        (
            "rss_worker_total_load_mib",
            "RSS worker + children after load (MiB)",
        ),
        ("rss_nats_idle_mib", "RSS nats-server idle (MiB)"),
        ("rss_nats_load_mib", "RSS nats-server after load (MiB)"),
    ];
    for c in concurrency_levels.iter().filter(|c| **c > 1) {
        r.push(row(
            &format!("rss_worker_c{c}_total_mib"),
            format!("RSS worker `--concurrency {c}` + children after load (MiB)"),
            Lower,
        ));
    }
    for (k, l) in mib {
        r.push(row(k, l, Lower));
    }
    if let Some((runs, loads)) = dashboard {
        let stored = thousands(runs + 1);
        r.extend([
            row(
                "dash_first_rows_ms",
                format!("dashboard, {stored} runs stored: navigation → first runs rendered (ms, median of {loads})"),
                Lower,
            ),
            row(
                "dash_change_p50_ms",
                "dashboard: KV change → shown in the runs list, median (ms)",
                Lower,
            ),
            row(
                "dash_change_max_ms",
                "dashboard: KV change → shown in the runs list, max (ms)",
                Lower,
            ),
            row(
                "dash_first_bytes",
                "dashboard: first visit, bytes transferred",
                Lower,
            ),
            row("dash_first_requests", "dashboard: first visit, requests", Lower),
            row(
                "dash_idle_rpm",
                "dashboard open, nothing changing: requests per minute",
                Lower,
            ),
            row(
                "dash_idle_bytes_per_min",
                "dashboard open, nothing changing: bytes per minute",
                Lower,
            ),
            row(
                "dash_idle_cpu_pct",
                "dashboard open, nothing changing: gateway CPU (% of a core)",
                Lower,
            ),
        ]);
    }
    r
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// The markdown table: one column per system, plus the ratio when both have a value.
pub fn table(rows: &[Row], systems: &[&SystemResult]) -> String {
    let both = systems.len() == 2;
    let mut out = String::new();
    if systems.iter().all(|s| s.metrics.is_empty()) {
        return "(no measurements: see the notes)\n".into();
    }
    out.push_str("| measurement |");
    for s in systems {
        out.push_str(&format!(" {} |", title(&s.name)));
    }
    if both {
        out.push_str(" Rust ÷ Python | better |");
    }
    out.push('\n');
    out.push_str("|---|");
    for _ in systems {
        out.push_str("---:|");
    }
    if both {
        out.push_str("---:|---|");
    }
    out.push('\n');
    for r in rows {
        let vals: Vec<Option<f64>> = systems
            .iter()
            .map(|s| s.metrics.get(&r.key).copied())
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("| {} |", r.label));
        for v in &vals {
            out.push_str(&format!(" {} |", fmt(*v)));
        }
        if both {
            let (py, rs) = find_pair(systems, &vals);
            match (py, rs) {
                (Some(p), Some(x)) if p > 0.0 && x > 0.0 => {
                    let ratio = x / p;
                    let factor = match r.better {
                        Better::Higher => ratio,
                        Better::Lower => 1.0 / ratio,
                    };
                    let who = if (factor - 1.0).abs() < 0.05 {
                        "≈ same".to_string()
                    } else if factor > 1.0 {
                        format!("Rust {factor:.1}×")
                    } else {
                        format!("Python {:.1}×", 1.0 / factor)
                    };
                    out.push_str(&format!(" {ratio:.3} | {who} |"));
                }
                _ => out.push_str(" — | — |"),
            }
        }
        out.push('\n');
    }
    out
}

fn find_pair(systems: &[&SystemResult], vals: &[Option<f64>]) -> (Option<f64>, Option<f64>) {
    let mut py = None;
    let mut rs = None;
    for (s, v) in systems.iter().zip(vals) {
        match s.name.as_str() {
            "python" => py = *v,
            "rust" => rs = *v,
            _ => {}
        }
    }
    (py, rs)
}

pub fn title(name: &str) -> &'static str {
    match name {
        "python" => "Python 0.5.1",
        "rust" => "Rust",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10000), "10,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
