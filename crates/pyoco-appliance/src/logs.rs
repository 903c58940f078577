//! The last log lines of the appliance, kept in memory for a window to show.
//!
//! [`LogBuffer::layer`] is a `tracing` layer: add it to the subscriber beside the usual output
//! and every event (ours, nats-server's forwarded lines, the Python runners' stderr) is kept in
//! a ring of the last `capacity` lines, each tagged with the component it came from. A reader
//! asks for the lines after the last sequence number it saw, so polling is cheap and nothing is
//! shown twice.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use std::time::Duration;
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Subscriber,
};
use tracing_subscriber::{layer::Context, registry::LookupSpan, Layer};

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Increases by one per line, from 1.
    pub seq: u64,
    /// Local wall-clock time, `HH:MM:SS.mmm`.
    pub time: String,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: &'static str,
    /// `nats`, `gateway`, `worker` or `app`.
    pub component: &'static str,
    /// The message, followed by the event's other fields as `key=value`.
    pub message: String,
}

/// A bounded, shared ring of recent log lines.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Ring>>,
}

struct Ring {
    lines: VecDeque<LogLine>,
    next_seq: u64,
    capacity: usize,
}

impl LogBuffer {
    /// A buffer keeping the last `capacity` lines (at least 1).
    pub fn new(capacity: usize) -> LogBuffer {
        LogBuffer {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::with_capacity(capacity.max(1)),
                next_seq: 1,
                capacity: capacity.max(1),
            })),
        }
    }

    /// A `tracing` layer that records into this buffer (filter it like any layer).
    pub fn layer(&self) -> LogLayer {
        LogLayer {
            buffer: self.clone(),
        }
    }

    /// Record a line directly (the app's own messages).
    pub fn push(&self, level: Level, component: &'static str, message: String) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.lines.len() == ring.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(LogLine {
            seq,
            time: chrono::Local::now().format("%H:%M:%S%.3f").to_string(),
            level: level_name(level),
            component,
            message,
        });
    }

    /// The kept lines with `seq > after` (all of them for `None`), oldest first, and the
    /// sequence number the next line will get.
    pub fn since(&self, after: Option<u64>) -> (Vec<LogLine>, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let after = after.unwrap_or(0);
        let lines = ring
            .lines
            .iter()
            .filter(|l| l.seq > after)
            .cloned()
            .collect();
        (lines, ring.next_seq)
    }
}

/// See [`LogBuffer::layer`].
pub struct LogLayer {
    buffer: LogBuffer,
}

/// The fields of a span, formatted once when it is created (and on later `record`s), so
/// every event inside it can show them (`run_id=… flow=…`).
struct SpanFields(String);

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = MessageVisitor::default();
        values.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            if !fields.0.is_empty() && !visitor.fields.is_empty() {
                fields.0.push(' ');
            }
            fields.0.push_str(&visitor.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        let mut add = |text: &str| {
            if !text.is_empty() {
                if !message.is_empty() {
                    message.push(' ');
                }
                message.push_str(text);
            }
        };
        add(&visitor.fields);
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost span first, as tracing's own formatter lists context outward.
            for span in scope {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    add(&fields.0);
                }
            }
        }
        self.buffer
            .push(*meta.level(), component_of(meta.target()), message);
    }
}

/// Which component a log target belongs to.
pub fn component_of(target: &str) -> &'static str {
    let root = target.split("::").next().unwrap_or(target);
    match root {
        "nats_server" | "pyoco_natsd" => "nats",
        "pyoco_gateway" | "tower_http" | "axum" | "hyper" => "gateway",
        "pyoco_worker" | "pyoco_runner" => "worker",
        _ => "app",
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn field(&mut self, name: &str, value: &dyn std::fmt::Display) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{name}={value}");
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.field(field.name(), &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.field(field.name(), &format_args!("{value:?}"));
        }
    }
}

/// Identical log lines (same level, target, message and fields) beyond a burst of
/// [`LOG_BURST`] pass at most one per second; a `WARN` line with target
/// `tracing_throttle::summary` says every [`LOG_SUMMARY_INTERVAL`] how many were dropped. A
/// flood — a task printing the same line a million times with `PYOCO_RUNNER_TEE_TASK_OUTPUT`,
/// a failing dependency retried in a loop — costs a line a second, not the disk.
pub const LOG_BURST: f64 = 20.0;
/// How often the dropped-line summaries are written.
pub const LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// The per-layer filter that rate-limits identical lines (see [`LOG_BURST`]), writing the
/// summaries when `write_summaries` says so (one throttle per subscriber should: every output
/// shows them). Summaries need a Tokio runtime: call it inside one (`Runtime::enter`);
/// outside, lines are still limited but no summary is written.
pub fn log_throttle(write_summaries: bool) -> tracing_throttle::TracingRateLimitLayer {
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    tracing_throttle::TracingRateLimitLayer::builder()
        .with_policy(
            tracing_throttle::Policy::token_bucket(LOG_BURST, 1.0).expect("a valid bucket"),
        )
        .with_max_signatures(10_000)
        .with_summary_interval(LOG_SUMMARY_INTERVAL)
        .with_active_emission(write_summaries && in_runtime)
        .build()
        .expect("a valid throttle")
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn events_are_kept_with_component_and_fields_in_order() {
        let buffer = LogBuffer::new(3);
        let subscriber = tracing_subscriber::registry().with(buffer.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "nats_server", pid = 7, "Server is ready");
            tracing::warn!(target: "pyoco_gateway::routes", "slow");
            tracing::error!(target: "pyoco_runner", "boom");
            tracing::info!(target: "something_else", "hello");
        });
        let (lines, next) = buffer.since(None);
        assert_eq!(next, 5);
        // Capacity 3: the first line was dropped.
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.seq, l.level, l.component, l.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "WARN", "gateway", "slow"),
                (3, "ERROR", "worker", "boom"),
                (4, "INFO", "app", "hello"),
            ]
        );
        let (after, _) = buffer.since(Some(3));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].seq, 4);
        assert!(buffer.since(Some(4)).0.is_empty());
    }

    #[test]
    fn a_flood_of_identical_lines_is_cut_to_the_burst_while_other_lines_pass() {
        let buffer = LogBuffer::new(10_000);
        let subscriber =
            tracing_subscriber::registry().with(buffer.layer().with_filter(log_throttle(false)));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5_000 {
                tracing::warn!(target: "pyoco_worker", "the same line");
                if i % 1000 == 0 {
                    tracing::info!(target: "pyoco_worker", n = i, "a different line");
                }
            }
        });
        let (lines, _) = buffer.since(None);
        let same = lines
            .iter()
            .filter(|l| l.message == "the same line")
            .count();
        let burst = LOG_BURST as usize;
        // The burst, plus at most what refills (1/s) while the loop runs.
        assert!((burst..=burst + 3).contains(&same), "{same}");
        let different = lines
            .iter()
            .filter(|l| l.message.starts_with("a different line"))
            .count();
        assert_eq!(different, 5);
    }

    #[test]
    fn fields_follow_the_message() {
        let buffer = LogBuffer::new(10);
        let subscriber = tracing_subscriber::registry().with(buffer.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "nats_server", pid = 7, "Server is ready");
        });
        let (lines, _) = buffer.since(None);
        assert_eq!(lines[0].message, "Server is ready pid=7");
        assert_eq!(lines[0].component, "nats");
        assert_eq!(lines[0].time.len(), "08:35:14.201".len());
    }

    #[test]
    fn events_inside_a_span_show_its_fields() {
        let buffer = LogBuffer::new(10);
        let subscriber = tracing_subscriber::registry().with(buffer.layer());
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", run_id = "r-1", flow = "double");
            let _entered = run.enter();
            tracing::info!(target: "pyoco_worker::job", status = "COMPLETED", "run finished");
        });
        let (lines, _) = buffer.since(None);
        assert_eq!(
            lines[0].message,
            "run finished status=COMPLETED run_id=r-1 flow=double"
        );
        assert_eq!(lines[0].component, "worker");
    }
}
