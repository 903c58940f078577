//! Logging for every binary, configured from `PYOCO_LOG_*` (read from the environment *and*
//! `.env`, unlike pyoco-server 0.5.1, §14-13).
//!
//! `json` (the default) writes one JSON object per line with `timestamp`, `level`, `target`,
//! `service` and the event's fields flattened; `text` writes human-readable lines.
//! `RUST_LOG`, when set, overrides the level filter (handy for debugging one module).
//! Identical lines beyond a burst are rate-limited ([`pyoco_appliance::log_throttle`]).

use std::io::IsTerminal;

use pyoco_config::{LogFormat, Settings};
use tracing_subscriber::{
    fmt::time::{ChronoLocal, ChronoUtc},
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

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
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let output = match (settings.log_format, settings.log_utc) {
        (LogFormat::Text, true) => fmt.with_timer(ChronoUtc::rfc_3339()).boxed(),
        (LogFormat::Text, false) => fmt.with_timer(ChronoLocal::rfc_3339()).boxed(),
        (_, utc) => {
            let json = fmt.json().flatten_event(true).with_current_span(false);
            if utc {
                json.with_timer(ChronoUtc::rfc_3339()).boxed()
            } else {
                json.with_timer(ChronoLocal::rfc_3339()).boxed()
            }
        }
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(pyoco_appliance::log_throttle(true)))
        .try_init();
    // A second init (tests) is harmless.
    let _ = result;
    tracing::debug!(service, "logging initialised");
}
