//! Every `PYOCO_*` setting, in one place.
//!
//! This crate is the single source of truth for configuration: the table of settings (name,
//! group, kind, default, appliance default, scope, what a change restarts, help — see
//! [`specs`]), loading them the way pyoco-server does (process environment → `.env` → default;
//! [`Settings::load`]; the appliance's defaults: [`Settings::with_appliance_defaults`]),
//! validating them with errors that
//! name the variable, the value, the expected form and where it came from ([`ConfigError`]),
//! editing a `.env` file without losing its comments and order ([`EnvDocument`]), and the OS app
//! directories ([`AppDirs`]). The CLI's `--help`, the settings window and
//! `docs/configuration.md` ([`configuration_markdown`]) are all fed from the table.
//!
//! ```no_run
//! use pyoco_config::{LoadOptions, Settings};
//!
//! let settings = Settings::load(&LoadOptions::from_process()?)?;
//! println!("NATS at {} (from {})", settings.nats_url, settings.source("PYOCO_NATS_URL").unwrap());
//! # Ok::<(), pyoco_config::ConfigError>(())
//! ```
//!
//! What it is not: it does not connect to anything, create directories, start processes or
//! apply settings (the store, gateway, worker and appliance crates do), and it never changes the
//! process environment: the loader works on a snapshot ([`LoadOptions`]), so it is testable and
//! thread-safe. One caveat inherited from dotenvy: `$VAR` expansion inside a `.env` reads the
//! real process environment, not the snapshot.

// Layers, each using only the ones listed before it (no module imports one that imports it):
// `spec` (what a setting is), `source` (where a value came from), `value` (text → typed value),
// `error`, `atomic`, `document` (the `.env` file), `table` (THE table and the typed `Settings`),
// `loader` (environment → `.env` → default, validation, appliance defaults), `dirs`, `docs`.
mod atomic;
mod dirs;
mod docs;
mod document;
mod error;
mod loader;
mod source;
mod spec;
mod table;
mod value;

pub use dirs::AppDirs;
pub use docs::configuration_markdown;
pub use document::{quote_value, EnvDocument, ParseError};
pub use error::{ConfigError, Problem};
pub use loader::LoadOptions;
pub use source::Source;
pub use spec::{Group, Kind, Restarts, Scope, Spec};
pub use table::{spec, specs, Settings};
pub use value::{AuthMode, DashboardLang, LogFormat, LogLevel};
