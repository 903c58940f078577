//! The desktop app's logging: the usual stderr output (level and format from `PYOCO_LOG_*`)
//! plus the in-memory ring the window's log panel reads.

use std::io::IsTerminal;

use pyoco_appliance::LogBuffer;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// How many lines the log panel can scroll back.
pub const LOG_LINES: usize = 500;

/// Install the global subscriber (once per process; later calls only return a new, unused
/// buffer). `level` is a `tracing` directive such as `info`. Identical lines beyond a burst
/// are rate-limited on stderr ([`pyoco_appliance::log_throttle`]); call it inside the Tokio
/// runtime so the throttle can write its summaries.
pub fn install_logging(level: &str) -> LogBuffer {
    let buffer = LogBuffer::new(LOG_LINES);
    let stderr_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{level},async_nats=warn,nats_server=warn")));
    // The panel shows what a user wants to see: info and up, nats-server's own lines too.
    let panel_filter = EnvFilter::new("info,async_nats=warn,hyper=warn,tower_http=warn");
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(stderr_filter)
                .with_filter(pyoco_appliance::log_throttle(true)),
        )
        .with(
            buffer
                .layer()
                .with_filter(panel_filter)
                .with_filter(pyoco_appliance::log_throttle(false)),
        )
        .try_init();
    buffer
}
