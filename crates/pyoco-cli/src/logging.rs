//! Logging for the gateway, the worker and `pyoco-server up`, in pyoco-server 0.5.1's shape
//! (contract §12), configured from `PYOCO_LOG_*` (read from the environment *and* `.env`,
//! unlike 0.5.1, §14-13).
//!
//! Lines go to **stdout**, one per event, as 0.5.1's `configure_logging` writes them.
//! (`pyoco-client` and `pyoco-server-admin` install no logger: their stdout is data.)
//!
//! `PYOCO_LOG_FORMAT=json` (the default): one compact, ASCII-only JSON object per line with
//! `ts` (UTC `YYYY-MM-DDTHH:MM:SSZ`; local `YYYY-MM-DDTHH:MM:SS±HHMM` with `PYOCO_LOG_UTC=false`),
//! `service`, `level` (Python's names: TRACE and DEBUG are `DEBUG`, WARN is `WARNING`),
//! `logger`, `message`, `pathname` (the source file), `lineno`, `func` (the Rust module path:
//! Rust events know no function name), `process` (pid), `thread` (the thread's number), then
//! the event's fields (`err_id`, `msg_id`, `run_id`, `flow_name`, `tag`, `worker_id`,
//! `reason`, …; numbers and booleans stay JSON numbers and booleans, other values are their
//! Display/Debug text), then the fields of the spans the event is in (innermost first; a name
//! the event already has is not repeated). An error is logged in a field named `error`
//! (`error = &err as &dyn Error` keeps its `source()` chain, `error = %err` its text): it
//! becomes `exc_type` (an explicit `exc_type` field, else the name its Debug form starts with,
//! such as `Unavailable`, else `Error`) and `exc_message` (its Display), and, with
//! `PYOCO_LOG_INCLUDE_TRACEBACK` on (the default), `exc_traceback` (`<type>: <message>` then one
//! `caused by: …` line per source) and `exc_origin` `{file, line, func}` of the log call.
//!
//! `service` is the program (`pyoco-server:http`, `pyoco-server:worker`), except that events
//! of another component name theirs: in the all-in-one `pyoco-server up --with-nats` the
//! worker's lines say `pyoco-server:worker` and nats-server's `pyoco-server:nats`. `logger`
//! is `pyoco_server.http_api` for the gateway's code and `pyoco_server.worker` for the worker's
//! (0.5.1's logger names), and the Rust target with `::` → `.` for everything else
//! (`pyoco_store.kv`, `pyoco_appliance`, `nats_server`).
//!
//! `PYOCO_LOG_FORMAT=text`: `<LEVEL> <service> <logger> <path>:<line> <func> - <message>
//! (err_id=…, msg_id=…, run_id=…, flow_name=…, tag=…, worker_id=…, reason=…, <other fields>)`,
//! with no timestamp (as 0.5.1); with the traceback on, its lines follow, otherwise the error
//! is shown as `error=…`. The level is coloured only on a terminal.
//!
//! `RUST_LOG`, when set, overrides the level filter (handy for debugging one module).
//! Identical lines beyond a burst are rate-limited ([`pyoco_appliance::log_throttle`]).

mod layer;

use std::io::IsTerminal;

pub use layer::{
    level_name, logger_of, service_of, LineFormat, LineOptions, PyocoLayer, TEXT_KEYS,
};
use pyoco_config::{LogFormat, Settings};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// The line options `settings` ask for, for the program `service`.
pub fn line_options(settings: &Settings, service: &'static str) -> LineOptions {
    LineOptions {
        service,
        format: match settings.log_format {
            LogFormat::Text => LineFormat::Text {
                ansi: std::io::stdout().is_terminal(),
            },
            _ => LineFormat::Json,
        },
        utc: settings.log_utc,
        include_traceback: settings.log_include_traceback,
    }
}

/// Install the global subscriber. `service` names the program (`pyoco-server:http`, …). Call
/// it inside the Tokio runtime (`Runtime::enter`) so the throttle can write its summaries.
pub fn init(settings: &Settings, service: &'static str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            let level = settings.log_level.directive();
            // async-nats logs every reconnect attempt at info: keep it at warn unless asked.
            // nats-server's own info lines (its start banner) are noise for users of `up`.
            EnvFilter::new(format!("{level},async_nats=warn,nats_server=warn"))
        });
    let output = PyocoLayer::new(line_options(settings, service), std::io::stdout);
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(pyoco_appliance::log_throttle(true)))
        .try_init();
    // A second init (tests) is harmless.
    let _ = result;
    tracing::debug!(service, "logging initialised");
}
