//! The `tracing` layer that writes pyoco-server 0.5.1's log lines (contract §12).
//!
//! One line per event, JSON (`PYOCO_LOG_FORMAT=json`) or text. See the module docs of
//! [`crate::logging`] for the fields and how Rust's metadata maps onto 0.5.1's.

use std::{error::Error as StdError, fmt::Write as _, io::Write as _};

use serde_json::{Map, Number, Value};
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Subscriber,
};
use tracing_subscriber::{fmt::MakeWriter, layer::Context, registry::LookupSpan, Layer};

/// The context keys 0.5.1's text format shows, in its order.
pub const TEXT_KEYS: [&str; 7] = [
    "err_id",
    "msg_id",
    "run_id",
    "flow_name",
    "tag",
    "worker_id",
    "reason",
];

/// JSON lines or text lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Json,
    /// `ansi`: colour the level (only when writing to a terminal).
    Text {
        ansi: bool,
    },
}

/// How the lines look; see [`PyocoLayer::new`].
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// The program: `pyoco-server:http`, `pyoco-server:worker`. Events of another component
    /// in the same process (the appliance runs gateway, worker and nats-server together) name
    /// that component instead ([`service_of`]).
    pub service: &'static str,
    pub format: LineFormat,
    /// `ts` in UTC (`…Z`) rather than local time with its offset (`PYOCO_LOG_UTC`).
    pub utc: bool,
    /// `exc_traceback` and `exc_origin` (`PYOCO_LOG_INCLUDE_TRACEBACK`).
    pub include_traceback: bool,
}

/// The layer: formats every event it sees as one line and writes it with one `write_all`.
pub struct PyocoLayer<W> {
    options: LineOptions,
    make_writer: W,
}

impl<W> PyocoLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A layer writing lines shaped by `options` to what `make_writer` makes (stdout for the
    /// programs, a buffer in tests).
    pub fn new(options: LineOptions, make_writer: W) -> Self {
        PyocoLayer {
            options,
            make_writer,
        }
    }
}

/// Fields of a span, recorded once, shown on every event inside it.
struct SpanJson(Vec<(&'static str, Value)>);

impl<S, W> Layer<S> for PyocoLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut visitor = Collector::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut()
                .insert(SpanJson(visitor.into_plain_fields()));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = Collector::default();
        values.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanJson>() {
            for (name, value) in visitor.into_plain_fields() {
                match fields.0.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => fields.0.push((name, value)),
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = Collector::default();
        event.record(&mut visitor);
        let mut span_fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost span first: the closest context wins a name clash.
            for span in scope {
                if let Some(fields) = span.extensions().get::<SpanJson>() {
                    span_fields.extend(fields.0.iter().cloned());
                }
            }
        }
        let record = Record::new(event.metadata(), visitor, span_fields);
        let mut line = match self.options.format {
            LineFormat::Json => json_line(&record, &self.options, &timestamp(self.options.utc)),
            LineFormat::Text { ansi } => text_line(&record, &self.options, ansi),
        };
        line.push('\n');
        let mut writer = self.make_writer.make_writer_for(event.metadata());
        let _ = writer.write_all(line.as_bytes());
    }
}

/// Now, as 0.5.1 writes it: UTC `YYYY-MM-DDTHH:MM:SSZ`, or local time with its `±HHMM`
/// offset.
fn timestamp(utc: bool) -> String {
    if utc {
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        chrono::Local::now()
            .format("%Y-%m-%dT%H:%M:%S%z")
            .to_string()
    }
}

/// An error logged in a field named `error` (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Exception {
    pub exc_type: Option<String>,
    pub message: String,
    /// `source()` chain, outermost first (only for values recorded as `&dyn Error`).
    pub causes: Vec<String>,
    /// A traceback given with the event (`exc_traceback` field, e.g. Python's), used instead
    /// of the one made from the chain.
    pub traceback: Option<String>,
}

/// Everything one event says.
pub(crate) struct Record {
    pub level: Level,
    pub target: String,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: String,
    pub fields: Vec<(&'static str, Value)>,
    pub exception: Option<Exception>,
}

impl Record {
    fn new(
        meta: &tracing::Metadata<'_>,
        visitor: Collector,
        span_fields: Vec<(&'static str, Value)>,
    ) -> Record {
        let Collector {
            message,
            mut fields,
            mut exception,
            exc_type,
            exc_traceback,
            log,
        } = visitor;
        match &mut exception {
            Some(exception) => {
                exception.exc_type = exc_type.or(exception.exc_type.take());
                exception.traceback = exc_traceback;
            }
            None => {
                if let Some(exc_type) = exc_type {
                    fields.push(("exc_type", Value::String(exc_type)));
                }
                if let Some(traceback) = exc_traceback {
                    fields.push(("exc_traceback", Value::String(traceback)));
                }
            }
        }
        for (name, value) in span_fields {
            if !fields.iter().any(|(n, _)| *n == name) {
                fields.push((name, value));
            }
        }
        // Lines from the `log` crate (dependencies) carry their origin as `log.*` fields.
        Record {
            level: *meta.level(),
            target: log.target.unwrap_or_else(|| meta.target().to_string()),
            module: log
                .module_path
                .or_else(|| meta.module_path().map(str::to_string)),
            file: log.file.or_else(|| meta.file().map(str::to_string)),
            line: log.line.or(meta.line()),
            message: message.unwrap_or_default(),
            fields,
            exception,
        }
    }
}

/// Python's level names (tracing has no CRITICAL; TRACE is DEBUG).
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

fn root_of(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

/// 0.5.1's program name for an event: by the component its target belongs to, else the
/// process's own `service`.
pub fn service_of(target: &str, service: &'static str) -> &'static str {
    match root_of(target) {
        "pyoco_gateway" | "tower_http" | "axum" | "hyper" => "pyoco-server:http",
        "pyoco_worker" | "pyoco_runner" => "pyoco-server:worker",
        "nats_server" | "pyoco_natsd" => "pyoco-server:nats",
        _ => service,
    }
}

/// 0.5.1's logger name for an event: the gateway's code is `pyoco_server.http_api`, the
/// worker's `pyoco_server.worker`; other targets are the Rust target with `::` → `.`.
pub fn logger_of(target: &str) -> String {
    match root_of(target) {
        "pyoco_gateway" => "pyoco_server.http_api".into(),
        "pyoco_worker" => "pyoco_server.worker".into(),
        _ => target.replace("::", "."),
    }
}

thread_local! {
    static THREAD_ID: u64 = {
        // `ThreadId::as_u64` is unstable; its Debug form is `ThreadId(N)`.
        let text = format!("{:?}", std::thread::current().id());
        text.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
    };
}

fn thread_id() -> u64 {
    THREAD_ID.with(|id| *id)
}

/// `exc_type` / `exc_message` / `exc_traceback`'s text for an exception.
fn exc_type_of(exception: &Exception) -> &str {
    exception.exc_type.as_deref().unwrap_or("Error")
}

fn traceback_text(exception: &Exception) -> String {
    if let Some(traceback) = &exception.traceback {
        return traceback.trim_end().to_string();
    }
    let mut text = format!("{}: {}", exc_type_of(exception), exception.message);
    for cause in &exception.causes {
        let _ = write!(text, "\ncaused by: {cause}");
    }
    text
}

/// One JSON line (without the newline): 0.5.1's fields in 0.5.1's order, ASCII only.
pub(crate) fn json_line(record: &Record, options: &LineOptions, ts: &str) -> String {
    let mut map = Map::new();
    map.insert("ts".into(), Value::String(ts.to_string()));
    map.insert(
        "service".into(),
        Value::String(service_of(&record.target, options.service).into()),
    );
    map.insert(
        "level".into(),
        Value::String(level_name(record.level).into()),
    );
    map.insert("logger".into(), Value::String(logger_of(&record.target)));
    map.insert("message".into(), Value::String(record.message.clone()));
    map.insert(
        "pathname".into(),
        record.file.clone().map_or(Value::Null, Value::String),
    );
    map.insert(
        "lineno".into(),
        record.line.map_or(Value::Null, |l| Value::Number(l.into())),
    );
    map.insert(
        "func".into(),
        record.module.clone().map_or(Value::Null, Value::String),
    );
    map.insert("process".into(), Value::Number(std::process::id().into()));
    map.insert("thread".into(), Value::Number(thread_id().into()));
    for (name, value) in &record.fields {
        // As 0.5.1: an extra never replaces a base field.
        if !map.contains_key(*name) {
            map.insert((*name).to_string(), value.clone());
        }
    }
    if let Some(exception) = &record.exception {
        map.insert(
            "exc_type".into(),
            Value::String(exc_type_of(exception).into()),
        );
        map.insert(
            "exc_message".into(),
            Value::String(exception.message.clone()),
        );
        if options.include_traceback {
            map.insert(
                "exc_traceback".into(),
                Value::String(traceback_text(exception)),
            );
            let mut origin = Map::new();
            origin.insert(
                "file".into(),
                record.file.clone().map_or(Value::Null, Value::String),
            );
            origin.insert(
                "line".into(),
                record.line.map_or(Value::Null, |l| Value::Number(l.into())),
            );
            origin.insert(
                "func".into(),
                record.module.clone().map_or(Value::Null, Value::String),
            );
            map.insert("exc_origin".into(), Value::Object(origin));
        }
    }
    let text = serde_json::to_string(&Value::Object(map)).unwrap_or_default();
    ascii_only(text)
}

/// Python's `json.dumps(ensure_ascii=True)`: every non-ASCII character as `\uXXXX` (UTF-16,
/// surrogate pairs above U+FFFF). Non-ASCII can only occur inside JSON strings, so escaping the
/// encoded text is exact.
fn ascii_only(text: String) -> String {
    if text.is_ascii() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// A field value as the text format shows it: strings bare, everything else as JSON.
fn text_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One text line (without the final newline; a traceback adds lines):
/// `<LEVEL> <service> <logger> <path>:<line> <func> - <message> (err_id=…, …)`.
pub(crate) fn text_line(record: &Record, options: &LineOptions, ansi: bool) -> String {
    let level = level_name(record.level);
    let level = if ansi {
        let colour = match record.level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            _ => "34",
        };
        format!("\x1b[{colour}m{level}\x1b[0m")
    } else {
        level.to_string()
    };
    let mut line = format!(
        "{level} {} {} {}:{} {} - {}",
        service_of(&record.target, options.service),
        logger_of(&record.target),
        record.file.as_deref().unwrap_or("?"),
        record.line.unwrap_or(0),
        record.module.as_deref().unwrap_or("?"),
        record.message,
    );
    let mut keys: Vec<String> = Vec::new();
    for key in TEXT_KEYS {
        if let Some((_, value)) = record.fields.iter().find(|(n, _)| *n == key) {
            keys.push(format!("{key}={}", text_value(value)));
        }
    }
    for (name, value) in &record.fields {
        if !TEXT_KEYS.contains(name) {
            keys.push(format!("{name}={}", text_value(value)));
        }
    }
    let traceback = record
        .exception
        .as_ref()
        .filter(|_| options.include_traceback);
    if let (Some(exception), None) = (&record.exception, traceback) {
        keys.push(format!("error={}", exception.message));
    }
    if !keys.is_empty() {
        let _ = write!(line, " ({})", keys.join(", "));
    }
    if let Some(exception) = traceback {
        line.push('\n');
        line.push_str(&traceback_text(exception));
    }
    line
}

/// Where a `log`-crate record came from (its `log.*` fields).
#[derive(Default)]
struct LogOrigin {
    target: Option<String>,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// Reads an event's (or span's) fields as JSON values.
#[derive(Default)]
struct Collector {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
    exception: Option<Exception>,
    exc_type: Option<String>,
    exc_traceback: Option<String>,
    log: LogOrigin,
}

impl Collector {
    /// A span's fields: an `error` or `exc_type` in a span is an ordinary field.
    fn into_plain_fields(self) -> Vec<(&'static str, Value)> {
        let mut fields = self.fields;
        if let Some(message) = self.message {
            fields.insert(0, ("message", Value::String(message)));
        }
        if let Some(exception) = self.exception {
            fields.push(("error", Value::String(exception.message)));
        }
        if let Some(exc_type) = self.exc_type {
            fields.push(("exc_type", Value::String(exc_type)));
        }
        if let Some(traceback) = self.exc_traceback {
            fields.push(("exc_traceback", Value::String(traceback)));
        }
        fields
    }

    fn value(&mut self, field: &Field, value: Value) {
        let name = field.name();
        match name {
            "message" => self.message = Some(text_value(&value)),
            "error" => {
                self.exception = Some(Exception {
                    exc_type: None,
                    message: text_value(&value),
                    causes: Vec::new(),
                    traceback: None,
                })
            }
            "exc_type" => self.exc_type = Some(text_value(&value)),
            "exc_traceback" => self.exc_traceback = Some(text_value(&value)),
            "log.target" => self.log.target = Some(text_value(&value)),
            "log.module_path" => self.log.module_path = Some(text_value(&value)),
            "log.file" => self.log.file = Some(text_value(&value)),
            "log.line" => self.log.line = value.as_u64().and_then(|l| u32::try_from(l).ok()),
            _ if name.starts_with("log.") => {}
            _ => self.fields.push((name, value)),
        }
    }
}

impl Visit for Collector {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value =
            Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.value(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, Value::Number(value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, Value::Number(value.into()));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(
            |_| Value::String(value.to_string()),
            |v| Value::Number(v.into()),
        );
        self.value(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(
            |_| Value::String(value.to_string()),
            |v| Value::Number(v.into()),
        );
        self.value(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, Value::String(value.to_string()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn StdError + 'static)) {
        if field.name() != "error" {
            self.value(field, Value::String(value.to_string()));
            return;
        }
        let mut causes = Vec::new();
        let mut source = value.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        self.exception = Some(Exception {
            exc_type: debug_name(&format!("{value:?}")),
            message: value.to_string(),
            causes,
            traceback: None,
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.value(field, Value::String(format!("{value:?}")));
    }
}

/// The type or variant name a Debug text starts with (`Unavailable { kind: … }` →
/// `Unavailable`, `Io(…)` → `Io`), when it starts with one.
fn debug_name(debug: &str) -> Option<String> {
    let end = debug
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(debug.len());
    let name = &debug[..end];
    let rest = &debug[end..];
    let starts_like_a_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts_like_a_name && (rest.is_empty() || rest.starts_with([' ', '(', '{'])))
        .then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn options(format: LineFormat, utc: bool, include_traceback: bool) -> LineOptions {
        LineOptions {
            service: "pyoco-server:http",
            format,
            utc,
            include_traceback,
        }
    }

    /// The lines `emit` logs through a layer with `options`.
    fn capture(options: LineOptions, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(PyocoLayer::new(options, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    fn json(text: &str) -> Vec<Map<String, Value>> {
        text.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object line: {l:?} ({other:?})"),
            })
            .collect()
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("store unavailable")]
        Unavailable {
            #[source]
            source: Inner,
        },
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    #[test]
    fn json_lines_have_0_5_1_fields_in_order_then_event_then_span_fields() {
        let out = capture(options(LineFormat::Json, true, true), || {
            let span = tracing::info_span!("run", run_id = "r-1", flow_name = "double", tag = "x");
            let _in = span.enter();
            tracing::info!(
                target: "pyoco_worker::job",
                tag = "gpu",
                attempt = 2u64,
                ratio = 0.5,
                done = true,
                size = -3i64,
                path = ?"a b",
                shown = %"plain",
                "run finished"
            );
        });
        let lines = json(&out);
        assert_eq!(lines.len(), 1, "{out}");
        let line = &lines[0];
        let keys: Vec<&str> = line.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ts",
                "service",
                "level",
                "logger",
                "message",
                "pathname",
                "lineno",
                "func",
                "process",
                "thread",
                "tag",
                "attempt",
                "ratio",
                "done",
                "size",
                "path",
                "shown",
                "run_id",
                "flow_name"
            ]
        );
        assert_eq!(line["service"], "pyoco-server:worker");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["logger"], "pyoco_server.worker");
        assert_eq!(line["message"], "run finished");
        assert!(line["pathname"].as_str().unwrap().ends_with("layer.rs"));
        assert!(line["lineno"].as_u64().unwrap() > 0);
        assert_eq!(line["func"], "pyoco_cli::logging::layer::tests");
        assert_eq!(line["process"], std::process::id());
        assert!(line["thread"].is_u64());
        // The event's own tag wins over the span's.
        assert_eq!(line["tag"], "gpu");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["done"], true);
        assert_eq!(line["size"], -3);
        assert_eq!(line["path"], "\"a b\"");
        assert_eq!(line["shown"], "plain");
        assert_eq!(line["run_id"], "r-1");
        assert!(!line.contains_key("exc_type"));
        // Compact, like json.dumps(separators=(",", ":")).
        assert!(out.starts_with("{\"ts\":\""), "{out}");
    }

    #[test]
    fn ts_is_utc_with_z_or_local_with_offset_at_second_precision() {
        let utc = capture(options(LineFormat::Json, true, true), || {
            tracing::warn!("w");
        });
        let ts = json(&utc)[0]["ts"].as_str().unwrap().to_string();
        assert_eq!(ts.len(), "2026-12-06T02:31:44Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        chrono::NaiveDateTime::parse_from_str(&ts, "%Y-%m-%dT%H:%M:%SZ").unwrap();

        let local = capture(options(LineFormat::Json, false, true), || {
            tracing::warn!("w");
        });
        let ts = json(&local)[0]["ts"].as_str().unwrap().to_string();
        assert_eq!(ts.len(), "2026-12-06T11:31:44+0900".len(), "{ts}");
        chrono::DateTime::parse_from_str(&ts, "%Y-%m-%dT%H:%M:%S%z").unwrap();
        let offset = &ts[19..];
        assert!(
            (offset.starts_with('+') || offset.starts_with('-'))
                && offset[1..].chars().all(|c| c.is_ascii_digit()),
            "{ts}"
        );
        assert_eq!(json(&local)[0]["level"], "WARNING");
    }

    #[test]
    fn a_record_is_compact_ascii_json_in_0_5_1_order() {
        let record = Record {
            level: Level::TRACE,
            target: "pyoco_gateway::routes::runs".into(),
            module: Some("pyoco_gateway::routes::runs".into()),
            file: Some("crates/pyoco-gateway/src/routes/runs.rs".into()),
            line: Some(12),
            message: "café".into(),
            fields: vec![("run_id", Value::String("r-😀".into()))],
            exception: None,
        };
        let utc = json_line(
            &record,
            &options(LineFormat::Json, true, true),
            "2026-01-02T03:04:05Z",
        );
        assert!(utc.starts_with(
            r#"{"ts":"2026-01-02T03:04:05Z","service":"pyoco-server:http","level":"DEBUG","logger":"pyoco_server.http_api","message":"caf\u00e9","pathname":"crates/pyoco-gateway/src/routes/runs.rs","lineno":12,"func":"pyoco_gateway::routes::runs","process":"#
        ), "{utc}");
        // ensure_ascii, surrogate pair included.
        assert!(utc.ends_with(r#""run_id":"r-\ud83d\ude00"}"#), "{utc}");
        assert!(utc.is_ascii());
        let parsed: Value = serde_json::from_str(&utc).unwrap();
        assert_eq!(parsed["run_id"], "r-😀");
    }

    #[test]
    fn an_error_field_becomes_exc_fields_and_the_traceback_only_when_enabled() {
        let emit = || {
            let err = Outer::Unavailable { source: Inner };
            tracing::error!(
                target: "pyoco_gateway::routes::runs",
                err_id = "ERR-PYOCO-0003",
                msg_id = "MSG-PYOCO-0003",
                run_id = "r-9",
                error = &err as &dyn std::error::Error,
                "get_run failed: nats unavailable"
            );
        };
        let with = json(&capture(options(LineFormat::Json, true, true), emit));
        let line = &with[0];
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["err_id"], "ERR-PYOCO-0003");
        assert_eq!(line["exc_type"], "Unavailable");
        assert_eq!(line["exc_message"], "store unavailable");
        assert_eq!(
            line["exc_traceback"],
            "Unavailable: store unavailable\ncaused by: connection refused"
        );
        let origin = line["exc_origin"].as_object().unwrap();
        assert_eq!(origin["file"], line["pathname"]);
        assert_eq!(origin["line"], line["lineno"]);
        assert_eq!(origin["func"], line["func"]);
        assert!(!line.contains_key("error"));
        let keys: Vec<&str> = line.keys().map(String::as_str).collect();
        assert_eq!(
            &keys[keys.len() - 4..],
            ["exc_type", "exc_message", "exc_traceback", "exc_origin"]
        );

        let without = json(&capture(options(LineFormat::Json, true, false), emit));
        let line = &without[0];
        assert_eq!(line["exc_type"], "Unavailable");
        assert_eq!(line["exc_message"], "store unavailable");
        assert!(!line.contains_key("exc_traceback"));
        assert!(!line.contains_key("exc_origin"));
    }

    #[test]
    fn a_displayed_error_with_an_explicit_exc_type() {
        let out = capture(options(LineFormat::Json, true, true), || {
            tracing::warn!(exc_type = "NotConnected", error = %"no servers", "nats unavailable");
            tracing::warn!(error = %"plain", "other");
        });
        let lines = json(&out);
        assert_eq!(lines[0]["exc_type"], "NotConnected");
        assert_eq!(lines[0]["exc_message"], "no servers");
        assert_eq!(lines[0]["exc_traceback"], "NotConnected: no servers");
        assert_eq!(lines[1]["exc_type"], "Error");
        assert_eq!(lines[1]["exc_message"], "plain");

        // A traceback sent with the event (the Python runner's) replaces the chain, and only
        // shows when enabled.
        let emit = || {
            let tb = Some("Traceback (most recent call last):\nValueError: boom\n");
            tracing::error!(exc_type = "ValueError", exc_traceback = tb, error = %"boom", "execution error");
        };
        let on = json(&capture(options(LineFormat::Json, true, true), emit));
        assert_eq!(
            on[0]["exc_traceback"],
            "Traceback (most recent call last):\nValueError: boom"
        );
        assert_eq!(on[0]["exc_type"], "ValueError");
        let off = json(&capture(options(LineFormat::Json, true, false), emit));
        assert!(!off[0].contains_key("exc_traceback"), "{:?}", off[0]);
        assert_eq!(off[0]["exc_message"], "boom");
    }

    #[test]
    fn text_lines_follow_0_5_1_with_the_context_keys_in_order() {
        let out = capture(
            options(LineFormat::Text { ansi: false }, true, false),
            || {
                let span = tracing::info_span!("run", run_id = "r-1");
                let _in = span.enter();
                tracing::info!(
                    target: "pyoco_gateway::routes::runs",
                    extra = 5u64,
                    reason = "bad",
                    msg_id = "MSG-PYOCO-0005",
                    err_id = "ERR-PYOCO-0005",
                    "run not found"
                );
                tracing::info!(target: "pyoco_store", "plain");
            },
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let file = file!();
        let (head, tail) = lines[0].split_once(" - ").unwrap();
        let parts: Vec<&str> = head.split(' ').collect();
        assert_eq!(
            parts[..3],
            ["INFO", "pyoco-server:http", "pyoco_server.http_api"]
        );
        let (path, lineno) = parts[3].rsplit_once(':').unwrap();
        assert_eq!(path, file);
        assert!(lineno.parse::<u32>().unwrap() > 0);
        assert_eq!(parts[4], "pyoco_cli::logging::layer::tests");
        assert_eq!(
            tail,
            "run not found (err_id=ERR-PYOCO-0005, msg_id=MSG-PYOCO-0005, run_id=r-1, reason=bad, extra=5)"
        );
        assert!(
            lines[1].starts_with("INFO pyoco-server:http pyoco_store "),
            "{}",
            lines[1]
        );
        // Inside the span: its fields follow too.
        assert!(lines[1].ends_with(" - plain (run_id=r-1)"), "{}", lines[1]);
    }

    #[test]
    fn text_tracebacks_follow_the_line_only_when_enabled() {
        let emit = || {
            let err = Outer::Unavailable { source: Inner };
            tracing::error!(target: "pyoco_worker", error = &err as &dyn std::error::Error, "execution error");
        };
        let on = capture(options(LineFormat::Text { ansi: false }, true, true), emit);
        let lines: Vec<&str> = on.lines().collect();
        assert!(lines[0].starts_with("ERROR pyoco-server:worker pyoco_server.worker "));
        assert!(lines[0].ends_with(" - execution error"), "{on}");
        assert_eq!(
            lines[1..],
            [
                "Unavailable: store unavailable",
                "caused by: connection refused"
            ]
        );
        let off = capture(options(LineFormat::Text { ansi: false }, true, false), emit);
        assert_eq!(off.lines().count(), 1, "{off}");
        assert!(
            off.trim_end()
                .ends_with(" - execution error (error=store unavailable)"),
            "{off}"
        );
    }

    #[test]
    fn ansi_colours_only_the_level() {
        let out = capture(options(LineFormat::Text { ansi: true }, true, true), || {
            tracing::warn!("careful");
        });
        assert!(
            out.starts_with("\x1b[33mWARNING\x1b[0m pyoco-server:http "),
            "{out:?}"
        );
    }

    #[test]
    fn names_map_to_0_5_1() {
        assert_eq!(level_name(Level::TRACE), "DEBUG");
        assert_eq!(level_name(Level::WARN), "WARNING");
        assert_eq!(logger_of("pyoco_gateway::auth"), "pyoco_server.http_api");
        assert_eq!(logger_of("pyoco_worker"), "pyoco_server.worker");
        assert_eq!(logger_of("pyoco_store::kv"), "pyoco_store.kv");
        assert_eq!(
            service_of("nats_server", "pyoco-server:http"),
            "pyoco-server:nats"
        );
        assert_eq!(
            service_of("pyoco_appliance", "pyoco-server:worker"),
            "pyoco-server:worker"
        );
        assert_eq!(
            debug_name("Unavailable { kind: \"x\" }").as_deref(),
            Some("Unavailable")
        );
        assert_eq!(debug_name("Io(Os { code: 2 })").as_deref(), Some("Io"));
        assert_eq!(debug_name("Timeout").as_deref(), Some("Timeout"));
        assert_eq!(debug_name("\"a string\""), None);
        assert_eq!(debug_name("12"), None);
    }
}
