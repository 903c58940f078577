//! Everything the pyoco-server desktop app does, without a window.
//!
//! The Tauri crate (`src-tauri/`) is a thin shell: each of its commands calls one method of
//! [`DesktopApp`], and the window (`ui/`) renders what comes back (the JSON shapes are in
//! `docs/desktop-api.md`). Here live the behaviours, tested without a display:
//!
//! - run the appliance (supervised nats-server, gateway, local worker) from the app's `.env`
//!   in the OS config dir, and report its status and recent log lines;
//! - restart one component, or everything;
//! - the settings form, the per-field check as the user types, and saving: the `.env` is edited
//!   through [`EnvDocument`] (comments, order and unknown keys kept, atomic write), and only the
//!   components the change affects are restarted;
//! - export a production `.env`.
//!
//! When the stack cannot start (a taken port, an invalid `.env`), the app keeps running with
//! [`Status::startup_error`] set, so the user can fix the setting in the window; saving starts
//! the stack again.

mod api_keys;
mod export;
mod form;
mod logging;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use pyoco_appliance::{
    Appliance, ApplianceOptions, ApplianceStatus, Component, ComponentState, LogLine,
};
use pyoco_config::{AppDirs, EnvDocument, LoadOptions, Settings};
use serde::Serialize;
use tokio::sync::{watch, Mutex as AsyncMutex};

pub use api_keys::{ApiKeyView, ApiKeys, CreatedKey, RevokedKey};
pub use export::{render as render_export, resolve_path as resolve_export_path, Exported};
pub use form::{component_id, Field, Form, FormGroup};
pub use logging::install_logging;
pub use pyoco_appliance::LogBuffer;

/// What the app reads from the outside world (tests pass temp dirs).
#[derive(Debug, Clone)]
pub struct DesktopOptions {
    /// The process environment, home and working directory (relative paths in the `.env`
    /// resolve against it; the app uses the home directory).
    pub load: LoadOptions,
    /// The app's `.env`.
    pub env_file: PathBuf,
}

impl DesktopOptions {
    /// This process: its environment, and the `.env` in the OS config dir (or `PYOCO_ENV_FILE`
    /// when the environment sets it). Relative paths resolve against the home directory.
    pub fn from_process() -> Result<DesktopOptions, String> {
        let mut load = LoadOptions::from_process().map_err(|e| e.to_string())?;
        if let Some(home) = load.home.clone() {
            load.cwd = home;
        }
        DesktopOptions::new(load)
    }

    /// The `tracing` level of `PYOCO_LOG_LEVEL` (environment, then the app's `.env`), `info`
    /// when unset or invalid.
    pub fn log_level(&self) -> &'static str {
        Settings::load(&self.load).map_or("info", |s| s.log_level.directive())
    }

    /// The app's `.env` for `load`: `PYOCO_ENV_FILE` when set, else `<config dir>/.env`.
    pub fn new(mut load: LoadOptions) -> Result<DesktopOptions, String> {
        let env_file = match load
            .env
            .get("PYOCO_ENV_FILE")
            .filter(|v| !v.trim().is_empty())
        {
            Some(_) => load
                .env_file_path()
                .ok_or("PYOCO_ENV_FILE cannot be used (is PYOCO_LOAD_DOTENV off?)")?,
            None => AppDirs::new(None).map_err(|e| e.to_string())?.env_file(),
        };
        // The app always reads its own `.env`.
        load.env
            .insert("PYOCO_ENV_FILE".into(), env_file.display().to_string());
        load.env.insert("PYOCO_LOAD_DOTENV".into(), "1".into());
        Ok(DesktopOptions { load, env_file })
    }
}

/// One component, as the window shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentView {
    pub id: &'static str,
    pub label: &'static str,
    pub state: &'static str,
    pub since: f64,
    pub message: Option<String>,
}

/// What `app_status` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub components: Vec<ComponentView>,
    pub all_running: bool,
    pub api_url: Option<String>,
    pub dashboard_url: Option<String>,
    pub nats_url: Option<String>,
    pub nats_monitor_url: Option<String>,
    pub data_dir: Option<String>,
    pub env_file: String,
    pub startup_error: Option<String>,
    /// Things the user should know, e.g. that a taken default port was replaced.
    pub notices: Vec<String>,
    pub version: &'static str,
}

/// What `recent_logs` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Logs {
    pub lines: Vec<LogLine>,
    pub next: u64,
}

/// What `save_settings` returns.
#[derive(Debug, Clone, Serialize)]
pub struct SaveResult {
    pub env_file: String,
    pub changed: Vec<String>,
    pub restarted: Vec<&'static str>,
    pub notes: Vec<String>,
}

/// A command's failure, as the window shows it: a message, and per-setting messages.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> CommandError {
        CommandError {
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }
}

impl From<String> for CommandError {
    fn from(message: String) -> Self {
        CommandError::new(message)
    }
}

/// The state the window's commands act on.
pub struct DesktopApp {
    options: DesktopOptions,
    logs: LogBuffer,
    /// Serialises start/restart/save/stop.
    inner: AsyncMutex<Inner>,
    /// Read by `status` without waiting for a restart in progress.
    view: Mutex<View>,
}

struct Inner {
    appliance: Option<Appliance>,
    stopped: bool,
}

#[derive(Default)]
struct View {
    status: Option<watch::Receiver<ApplianceStatus>>,
    startup_error: Option<String>,
    /// What the app decided for the user at start (a taken default port replaced).
    notices: Vec<String>,
    starting: bool,
    /// When `starting` or `startup_error` last changed (Unix seconds).
    since: f64,
}

impl DesktopApp {
    /// A stopped app; call [`DesktopApp::start`].
    pub fn new(options: DesktopOptions, logs: LogBuffer) -> Arc<DesktopApp> {
        Arc::new(DesktopApp {
            options,
            logs,
            inner: AsyncMutex::new(Inner {
                appliance: None,
                stopped: false,
            }),
            view: Mutex::new(View {
                starting: true,
                since: pyoco_wire::python::time(),
                ..View::default()
            }),
        })
    }

    /// The app's `.env`.
    pub fn env_file(&self) -> &Path {
        &self.options.env_file
    }

    /// Load the settings and start the whole stack. A failure is kept as the startup error
    /// (see [`Status::startup_error`]) and returned.
    pub async fn start(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        self.start_locked(&mut inner).await
    }

    async fn start_locked(&self, inner: &mut Inner) -> Result<(), String> {
        if inner.stopped {
            return Err("the app is quitting".into());
        }
        if let Some(old) = inner.appliance.take() {
            old.stop().await;
        }
        self.set_view(|v| {
            v.status = None;
            v.starting = true;
            v.startup_error = None;
            v.notices.clear();
        });
        let result = async {
            let settings = self.load_settings()?;
            if let Some(dir) = self.options.env_file.parent() {
                // The window saves here later; make sure it can.
                let _ = std::fs::create_dir_all(dir);
            }
            self.start_appliance(settings).await
        }
        .await;
        match result {
            Ok(appliance) => {
                let rx = appliance.status();
                inner.appliance = Some(appliance);
                self.set_view(|v| {
                    v.status = Some(rx);
                    v.starting = false;
                });
                Ok(())
            }
            Err(e) => {
                tracing::error!("the stack did not start: {e}");
                self.set_view(|v| {
                    v.startup_error = Some(e.clone());
                    v.starting = false;
                });
                Err(e)
            }
        }
    }

    /// Start the stack. A default port that is taken (4222 by another NATS, 8000 by another
    /// web server, common on a developer's machine) is replaced by a free one, with a notice;
    /// a port the user chose is an error to fix in the settings.
    async fn start_appliance(&self, settings: Settings) -> Result<Appliance, String> {
        Appliance::start_taking_free_default_ports(
            || ApplianceOptions::all_in_one(settings.clone()),
            |message| self.notice(message),
        )
        .await
        .map_err(|e| e.to_string())
    }

    fn notice(&self, message: String) {
        tracing::warn!("{message}");
        self.set_view(|v| v.notices.push(message));
    }

    fn load_settings(&self) -> Result<Settings, String> {
        Settings::load(&self.options.load).map_err(|e| e.to_string())
    }

    fn set_view(&self, f: impl FnOnce(&mut View)) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut view);
        view.since = pyoco_wire::python::time();
    }

    /// What the window shows.
    pub fn status(&self) -> Status {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let status = view.status.as_ref().map(|rx| rx.borrow().clone());
        let components = Component::ALL
            .iter()
            .map(|c| {
                let (state, since, message) = match &status {
                    Some(s) => {
                        let cs = s.component(*c);
                        let (state, message) = state_view(&cs.state);
                        (state, cs.since, message)
                    }
                    None if view.starting => ("starting", view.since, None),
                    None => ("stopped", view.since, None),
                };
                ComponentView {
                    id: component_id(*c),
                    label: c.label(),
                    state,
                    since,
                    message,
                }
            })
            .collect();
        let api_url = status.as_ref().and_then(|s| s.api_url.clone());
        Status {
            components,
            all_running: status.as_ref().is_some_and(|s| s.all_running())
                && view.startup_error.is_none(),
            dashboard_url: api_url.as_ref().map(|u| format!("{u}/")),
            api_url,
            nats_url: status.as_ref().map(|s| s.nats_url.clone()),
            nats_monitor_url: status.as_ref().and_then(|s| s.nats_monitor_url.clone()),
            data_dir: status.as_ref().map(|s| s.data_dir.clone()),
            env_file: self.options.env_file.display().to_string(),
            startup_error: view.startup_error.clone(),
            notices: view.notices.clone(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Log lines after `after` (all kept ones for `None`).
    pub fn logs(&self, after: Option<u64>) -> Logs {
        let (lines, next) = self.logs.since(after);
        Logs { lines, next }
    }

    /// Restart `component` (`nats`, `gateway`, `worker`) or `all`. When the stack is not
    /// running (it failed to start), any restart starts it.
    pub async fn restart(&self, component: &str) -> Result<Status, CommandError> {
        let which = match component {
            "all" => None,
            "nats" => Some(Component::Nats),
            "gateway" => Some(Component::Gateway),
            "worker" => Some(Component::Worker),
            other => {
                return Err(CommandError::new(format!(
                    "unknown component {other:?}: use nats, gateway, worker or all"
                )))
            }
        };
        let mut inner = self.inner.lock().await;
        tracing::info!("restart requested: {component}");
        match (inner.appliance.as_mut(), which) {
            (Some(appliance), Some(c)) => appliance.restart(c).await.map_err(|e| e.to_string())?,
            (Some(appliance), None) => appliance.restart_all().await.map_err(|e| e.to_string())?,
            (None, _) => self.start_locked(&mut inner).await?,
        }
        drop(inner);
        Ok(self.status())
    }

    /// The settings form for the current `.env`.
    pub fn settings_form(&self) -> Result<Form, CommandError> {
        let doc = self.read_env()?;
        Ok(form::build(
            &doc,
            &self.options.load,
            &self.options.env_file,
            &self.default_export_path(),
        ))
    }

    /// Check one value as the user types: `Ok(None)` when valid.
    pub fn validate_setting(
        &self,
        name: &str,
        value: &str,
    ) -> Result<Option<String>, CommandError> {
        Ok(form::validate(
            name,
            value,
            &self.options.load,
            &self.options.env_file,
        )?)
    }

    /// Write `changes` (name → text; `""` removes the key) to the `.env` and restart what they
    /// affect. Nothing is written when any value is invalid (`fields` names each).
    pub async fn save_settings(
        &self,
        changes: &HashMap<String, String>,
    ) -> Result<SaveResult, CommandError> {
        let mut inner = self.inner.lock().await;
        let mut doc = self.read_env()?;
        let mut fields = BTreeMap::new();
        let mut changed = Vec::new();
        let mut names: Vec<&String> = changes.keys().collect();
        names.sort_by_key(|n| {
            pyoco_config::specs()
                .iter()
                .position(|s| s.name == n.as_str())
        });
        for name in names {
            let value = &changes[name];
            match pyoco_config::spec(name).filter(|s| form::editable(s)) {
                None => {
                    fields.insert(
                        name.clone(),
                        format!("{name} is not a setting the window can change"),
                    );
                }
                Some(spec) => {
                    let before = doc.get(spec.name).unwrap_or("").to_owned();
                    // Secrets are kept verbatim: only an empty text clears one.
                    let clear = value.is_empty() || (!spec.secret && value.trim().is_empty());
                    let result = if clear {
                        doc.unset(spec.name);
                        Ok(())
                    } else {
                        doc.set(spec.name, value)
                    };
                    if let Err(e) = result {
                        fields.insert(name.clone(), e.to_string());
                    } else if before != doc.get(spec.name).unwrap_or("") {
                        changed.push(spec.name.to_owned());
                    }
                }
            }
        }
        let resolved = Settings::resolve(
            &self.options.load,
            Some((self.options.env_file.as_path(), &doc)),
        );
        let settings = match resolved {
            Ok(s) => Some(s),
            Err(e) => {
                for p in e.problems() {
                    fields.insert(p.name.to_owned(), form::problem_message(p));
                }
                if e.problems().is_empty() {
                    return Err(CommandError::new(e.to_string()));
                }
                None
            }
        };
        if !fields.is_empty() {
            let n = fields.len();
            return Err(CommandError {
                message: format!(
                    "nothing was saved: {n} setting{} {} invalid",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "is" } else { "are" }
                ),
                fields,
            });
        }
        let settings = settings.expect("no problems means settings");
        if !changed.is_empty() {
            if let Some(dir) = self.options.env_file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create {}: {e} (nothing was saved)", dir.display())
                })?;
            }
            doc.save(&self.options.env_file)
                .map_err(|e| e.to_string())?;
            tracing::info!(
                "settings saved to {}: {}",
                self.options.env_file.display(),
                changed.join(", ")
            );
        }
        let mut notes = Vec::new();
        for name in &changed {
            if self
                .options
                .load
                .env
                .get(name)
                .is_some_and(|v| !v.trim().is_empty())
            {
                notes.push(format!(
                    "{name} is also set in the app's environment, which wins over the .env"
                ));
            } else if pyoco_appliance::restarts_for(name).is_empty() {
                notes.push(format!("{name} applies at the next start of the app"));
            } else if pyoco_config::spec(name).is_some_and(|s| s.applies_at_creation()) {
                notes.push(format!(
                    "{name} applies to streams, consumers and buckets created from now on; \
                     existing ones keep their configuration"
                ));
            }
        }
        let restarted: Vec<&'static str> = match inner.appliance.as_mut() {
            _ if changed.is_empty() => Vec::new(),
            Some(appliance) => {
                let restarted = appliance.reconfigure(settings).await.map_err(|e| {
                    CommandError::new(format!(
                        "the settings were saved, but restarting failed: {e}"
                    ))
                })?;
                restarted.into_iter().map(component_id).collect()
            }
            None => {
                // The stack was not running (it had failed to start): try again.
                self.start_locked(&mut inner).await.map_err(|e| {
                    CommandError::new(format!(
                        "the settings were saved, but the stack still does not start: {e}"
                    ))
                })?;
                Component::ALL.iter().map(|c| component_id(*c)).collect()
            }
        };
        Ok(SaveResult {
            env_file: self.options.env_file.display().to_string(),
            changed,
            restarted,
            notes,
        })
    }

    /// Write the production `.env` to `path` (`~` and relative paths from the home dir).
    pub fn export_settings(&self, path: &str) -> Result<Exported, CommandError> {
        let path = export::resolve_path(path, self.options.load.home.as_deref())?;
        let settings = self.load_settings()?;
        Ok(export::write(&settings, &self.options.env_file, &path)?)
    }

    /// Where the export goes unless the user says otherwise: `~/pyoco-server.env`.
    pub fn default_export_path(&self) -> PathBuf {
        self.options
            .load
            .home
            .clone()
            .unwrap_or_else(|| self.options.load.cwd.clone())
            .join("pyoco-server.env")
    }

    /// The dashboard's URL, when the gateway listens.
    pub fn dashboard_url(&self) -> Option<String> {
        self.status().dashboard_url
    }

    /// Stop everything in order (worker, gateway, NATS); later starts are refused. Safe to call
    /// twice.
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        inner.stopped = true;
        if let Some(appliance) = inner.appliance.take() {
            tracing::info!("stopping the stack");
            appliance.stop().await;
        }
    }

    /// Wait until every component runs (`Err` with the first failure or on timeout).
    pub async fn wait_until_running(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status();
            if s.all_running {
                return Ok(());
            }
            if let Some(e) = s.startup_error {
                return Err(e);
            }
            if let Some(c) = s.components.iter().find(|c| c.state == "failed") {
                return Err(format!(
                    "{}: {}",
                    c.label,
                    c.message.clone().unwrap_or_default()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not running after {timeout:?}: {s:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn read_env(&self) -> Result<EnvDocument, CommandError> {
        Ok(EnvDocument::read(&self.options.env_file)
            .map_err(|e| e.to_string())?
            .unwrap_or_default())
    }
}

fn state_view(state: &ComponentState) -> (&'static str, Option<String>) {
    match state {
        ComponentState::Disabled => ("disabled", None),
        ComponentState::Starting => ("starting", None),
        ComponentState::Running => ("running", None),
        ComponentState::Restarting { attempt, reason } => {
            ("restarting", Some(format!("attempt {attempt}: {reason}")))
        }
        ComponentState::Stopping => ("stopping", None),
        ComponentState::Stopped => ("stopped", None),
        ComponentState::Failed { error } => ("failed", Some(error.clone())),
    }
}
