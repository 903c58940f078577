//! The pyoco-server desktop app: a Tauri 2 window over [`pyoco_desktop::DesktopApp`].
//!
//! This crate stays thin on purpose: each command below is one call into `pyoco-desktop`,
//! where the behaviour lives and is tested without a display. What is here is only what needs
//! Tauri: the commands' wiring, the windows, and the app's life cycle:
//!
//! - on launch the stack (supervised nats-server, gateway, local worker) starts in the
//!   background while the window already shows its progress;
//! - quitting (closing the main window, the window manager's close, Ctrl-C or SIGTERM) stops
//!   the stack in order before the process exits;
//! - a `kill -9` of the app cannot leave children behind: the nats-server and the Python
//!   runners are started with `PR_SET_PDEATHSIG` from threads that live as long as the process
//!   (see `pyoco-natsd` and `pyoco-worker`).

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
};

use pyoco_desktop::{
    install_logging, ApiKeys, CommandError, CreatedKey, DesktopApp, DesktopOptions, Exported, Form,
    Logs, RevokedKey, SaveResult, Status,
};
use serde::Serialize;
use tauri::{Manager, RunEvent, Runtime, State, WindowEvent};

type App<'a> = State<'a, Arc<DesktopApp>>;

#[tauri::command]
fn app_status(app: App<'_>) -> Status {
    app.status()
}

#[tauri::command]
fn recent_logs(app: App<'_>, after: Option<u64>) -> Logs {
    app.logs(after)
}

#[tauri::command]
async fn restart_component(app: App<'_>, component: String) -> Result<Status, CommandError> {
    app.restart(&component).await
}

#[tauri::command]
fn settings_form(app: App<'_>) -> Result<Form, CommandError> {
    app.settings_form()
}

/// The answer of `validate_setting`.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub error: Option<String>,
}

#[tauri::command]
fn validate_setting(app: App<'_>, name: String, value: String) -> Result<Validation, CommandError> {
    Ok(Validation {
        error: app.validate_setting(&name, &value)?,
    })
}

#[tauri::command]
async fn save_settings(
    app: App<'_>,
    changes: HashMap<String, String>,
) -> Result<SaveResult, CommandError> {
    app.save_settings(&changes).await
}

#[tauri::command]
fn export_settings(app: App<'_>, path: String) -> Result<Exported, CommandError> {
    app.export_settings(&path)
}

#[tauri::command]
async fn list_api_keys(app: App<'_>) -> Result<ApiKeys, CommandError> {
    app.list_api_keys().await
}

#[tauri::command]
async fn create_api_key(app: App<'_>, tenant: String) -> Result<CreatedKey, CommandError> {
    app.create_api_key(&tenant).await
}

#[tauri::command]
async fn revoke_api_key(app: App<'_>, key_id: String) -> Result<RevokedKey, CommandError> {
    app.revoke_api_key(&key_id).await
}

#[tauri::command]
fn open_dashboard(app: App<'_>) -> Result<(), CommandError> {
    let url = app
        .dashboard_url()
        .ok_or_else(|| CommandError::new("the gateway is not listening yet"))?;
    open::that_detached(&url)
        .map_err(|e| CommandError::new(format!("cannot open a browser at {url}: {e}")))
}

/// Add the app's state and commands to `builder` (the real one, or `tauri::test`'s
/// `mock_builder()`).
pub fn with_commands<R: Runtime>(
    builder: tauri::Builder<R>,
    app: Arc<DesktopApp>,
) -> tauri::Builder<R> {
    builder.manage(app).invoke_handler(tauri::generate_handler![
        app_status,
        recent_logs,
        restart_component,
        settings_form,
        validate_setting,
        save_settings,
        list_api_keys,
        create_api_key,
        revoke_api_key,
        export_settings,
        open_dashboard,
    ])
}

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const STOPPED: u8 = 2;

/// Run the app until it quits. Exit code 1 when it cannot start at all (no display, no home
/// directory); the stack failing to start is shown in the window instead.
pub fn run() -> ExitCode {
    let options = match DesktopOptions::from_process() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pyoco-desktop: {e}");
            return ExitCode::from(1);
        }
    };
    // Our own runtime, shared with Tauri: its worker threads live as long as the process, which
    // `PR_SET_PDEATHSIG` of the children started from them relies on.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pyoco-desktop")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pyoco-desktop: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    tauri::async_runtime::set(runtime.handle().clone());
    // PYOCO_LOG_LEVEL from the environment or the app's `.env` (an invalid `.env` is reported
    // in the window; logging then stays at info). Inside the runtime: the log throttle writes
    // its summaries from a task.
    let logs = {
        let _in_runtime = runtime.enter();
        install_logging(options.log_level())
    };
    tracing::info!(env_file = %options.env_file.display(), "pyoco-server desktop starting");
    let app = DesktopApp::new(options, logs);
    let phase = Arc::new(AtomicU8::new(RUNNING));

    let built = with_commands(tauri::Builder::default(), app.clone())
        .on_window_event(|window, event| {
            // Closing the main window quits the app, even with the settings window open.
            if window.label() == "main" && matches!(event, WindowEvent::CloseRequested { .. }) {
                window.app_handle().exit(0);
            }
        })
        .setup({
            let app = app.clone();
            move |tauri_app| {
                let handle = tauri_app.handle().clone();
                tauri::async_runtime::spawn(async move {
                    let _ = app.start().await;
                });
                tauri::async_runtime::spawn(async move {
                    let signal = pyoco_appliance::shutdown_signal().await;
                    tracing::info!("{signal} received: quitting");
                    handle.exit(0);
                });
                Ok(())
            }
        })
        .build(tauri::generate_context!());
    let tauri_app = match built {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pyoco-desktop: cannot open the window: {e}");
            runtime.block_on(app.shutdown());
            return ExitCode::from(1);
        }
    };
    tauri_app.run(move |handle, event| {
        if let RunEvent::ExitRequested { api, code, .. } = event {
            match phase.load(Ordering::SeqCst) {
                STOPPED => {}
                STOPPING => api.prevent_exit(),
                _ => {
                    // Stop the stack in order first, then quit for real.
                    api.prevent_exit();
                    phase.store(STOPPING, Ordering::SeqCst);
                    let app = app.clone();
                    let phase = phase.clone();
                    let handle = handle.clone();
                    tauri::async_runtime::spawn(async move {
                        app.shutdown().await;
                        phase.store(STOPPED, Ordering::SeqCst);
                        tracing::info!("stopped; bye");
                        handle.exit(code.unwrap_or(0));
                    });
                }
            }
        }
    });
    ExitCode::SUCCESS
}
