//! The command-line programs: `pyoco-server` (gateway launcher and the all-in-one appliance),
//! `pyoco-worker`, `pyoco-client` (the gateway's HTTP client) and `pyoco-server-admin` (API keys).
//!
//! Each program lives in its own module; `src/bin/*.rs` only call `main()` here. Flags follow
//! pyoco-server 0.5.1 (contract §10) so existing scripts keep working; settings come from
//! `pyoco-config`, with flags overriding `PYOCO_*` variables.

pub mod admin;
pub mod client;
pub mod logging;
pub mod server;
mod settings;
pub mod worker;

pub use settings::load_settings;
