//! The all-in-one appliance: a supervised nats-server (or an external NATS), the HTTP gateway
//! and a local worker, started together, watched together, stopped in order.
//!
//! What it is for: `pyoco-server up` and the desktop app both run exactly this, so the desktop
//! app is a thin shell and servers/CI run the same code without a display. It owns the order of
//! things (NATS first, then the gateway and the worker; on stop the worker first, so runs in
//! progress can finish and write their last snapshot, then the gateway, then NATS) and one
//! [`ApplianceStatus`] that says what each part is doing.
//!
//! What it is not: it holds no business logic (that is the gateway and worker crates) and reads
//! no environment (it takes [`Settings`]).

mod status;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use pyoco_config::{AppDirs, Settings};
use pyoco_natsd::{NatsServerConfig, NatsState, NatsSupervisor};
use pyoco_store::{SharedStore, StoreConfig};
use pyoco_worker::{Worker, WorkerConfig};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use status::{ApplianceStatus, Component, ComponentState, ComponentStatus};

/// A last adjustment of the managed nats-server's configuration.
pub type NatsConfigHook = Box<dyn FnOnce(&mut NatsServerConfig) + Send>;

/// What to run.
pub struct ApplianceOptions {
    pub settings: Settings,
    /// Start a supervised nats-server (store in the data dir) instead of using
    /// `PYOCO_NATS_URL`.
    pub managed_nats: bool,
    /// Serve the HTTP API.
    pub gateway: bool,
    /// Run a local worker.
    pub worker: bool,
    /// A listener the gateway should use (tests bind port 0); otherwise
    /// `PYOCO_HTTP_HOST:PYOCO_HTTP_PORT` is bound.
    pub http_listener: Option<std::net::TcpListener>,
    /// The local worker's configuration; `None` derives it from the settings (a relative or
    /// unset `PYOCO_WHEEL_SYNC_DIR` then lands under the data dir, see
    /// [`WorkerConfig::resolve_wheel_sync_dir_for_appliance`]).
    pub worker_config: Option<WorkerConfig>,
    /// Adjust the managed nats-server's configuration (tests choose a free port and a temp
    /// store).
    pub nats_config: Option<NatsConfigHook>,
}

impl ApplianceOptions {
    /// Everything (managed NATS, gateway, local worker) from `settings`.
    pub fn all_in_one(settings: Settings) -> Self {
        ApplianceOptions {
            settings,
            managed_nats: true,
            gateway: true,
            worker: true,
            http_listener: None,
            worker_config: None,
            nats_config: None,
        }
    }
}

/// Why the appliance could not start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error(transparent)]
    Config(#[from] pyoco_config::ConfigError),
    #[error(transparent)]
    Nats(#[from] pyoco_natsd::NatsdError),
    #[error(
        "cannot listen on {addr}: {source} — choose another address with --host/--port \
         (PYOCO_HTTP_HOST/PYOCO_HTTP_PORT)"
    )]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid local worker configuration: {0}")]
    Worker(String),
}

/// The running appliance.
pub struct Appliance {
    status: Arc<watch::Sender<ApplianceStatus>>,
    nats: Option<Arc<NatsSupervisor>>,
    store: SharedStore,
    worker_stop: CancellationToken,
    gateway_stop: CancellationToken,
    watchers_stop: CancellationToken,
    worker_task: Option<JoinHandle<()>>,
    gateway_task: Option<JoinHandle<()>>,
    watcher_tasks: Vec<JoinHandle<()>>,
}

impl Appliance {
    /// Start what `options` asks for. Returns once NATS (when managed) answers and the gateway
    /// listens; the worker comes up in the background (see [`Appliance::status`]).
    pub async fn start(options: ApplianceOptions) -> Result<Appliance, ApplianceError> {
        let ApplianceOptions {
            settings,
            managed_nats,
            gateway,
            worker,
            http_listener,
            worker_config,
            nats_config,
        } = options;
        let dirs = AppDirs::from_settings(&settings)?;
        let worker_config = if worker {
            Some(match worker_config {
                Some(c) => c,
                None => {
                    let mut c = WorkerConfig::from_settings(&settings)
                        .map_err(|e| ApplianceError::Worker(e.to_string()))?;
                    // Synced wheels live under the data dir (a desktop app has no useful cwd).
                    c.resolve_wheel_sync_dir_for_appliance(&settings, &dirs);
                    c
                }
            })
        } else {
            None
        };

        let disabled = || ComponentStatus::new(ComponentState::Disabled);
        let starting = || ComponentStatus::new(ComponentState::Starting);
        let status = Arc::new(watch::Sender::new(ApplianceStatus {
            nats: if managed_nats { starting() } else { disabled() },
            gateway: if gateway { starting() } else { disabled() },
            worker: if worker { starting() } else { disabled() },
            nats_url: settings.nats_url.clone(),
            api_url: None,
            data_dir: dirs.data_dir().display().to_string(),
        }));
        let watchers_stop = CancellationToken::new();
        let mut watcher_tasks = Vec::new();

        // 1. NATS.
        let nats = if managed_nats {
            let binary = pyoco_natsd::find_nats_server(
                settings.nats_server_bin.as_deref(),
                Some(dirs.data_dir()),
            )?;
            let store_dir = settings
                .nats_store_dir
                .clone()
                .unwrap_or_else(|| dirs.nats_store_dir());
            let mut config = NatsServerConfig::new(binary, store_dir);
            config.host = settings.nats_listen_host.clone();
            config.port = (settings.nats_client_port != 0).then_some(settings.nats_client_port);
            config.monitor_port = settings.nats_http_port;
            if let Some(adjust) = nats_config {
                adjust(&mut config);
            }
            let nats = match NatsSupervisor::start(config).await {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    set_state(
                        &status,
                        Component::Nats,
                        ComponentState::Failed {
                            error: e.to_string(),
                        },
                    );
                    return Err(e.into());
                }
            };
            status.send_modify(|s| s.nats_url = nats.client_url().to_string());
            watcher_tasks.push(tokio::spawn(watch_nats(
                nats.clone(),
                status.clone(),
                watchers_stop.clone(),
            )));
            Some(nats)
        } else {
            None
        };
        let nats_url = status.borrow().nats_url.clone();
        let store_config = StoreConfig::from(&settings);

        // One connection for the gateway and the local worker; it connects in the background
        // and keeps reconnecting, so both survive a NATS restart.
        let store = SharedStore::connect_in_background(&nats_url, "pyoco-appliance", store_config);
        if managed_nats {
            // NATS answers already: be ready before we say the gateway runs, so a client that
            // saw /health answer never gets `503 NotConnected` (as 0.5.1, which connected first).
            if let Err(e) = store.wait_ready(Duration::from_secs(10)).await {
                tracing::warn!("the managed NATS answers but the store is not ready yet: {e}");
            }
        }

        // 2. Gateway.
        let gateway_stop = CancellationToken::new();
        let gateway_task = if gateway {
            let listener = match bind(&settings, http_listener) {
                Ok(l) => l,
                Err(e) => {
                    if let Some(n) = &nats {
                        n.shutdown().await;
                    }
                    return Err(e);
                }
            };
            let addr = listener.local_addr().ok();
            let state = pyoco_gateway::AppState::new(&settings, store.clone());
            let stop = gateway_stop.clone();
            let status2 = status.clone();
            status.send_modify(|s| {
                s.api_url = addr.map(|a| format!("http://{}", display_addr(a)));
            });
            // Running once it can reach NATS; until then it answers 503 (and /health).
            let ready_store = store.clone();
            let status3 = status.clone();
            watcher_tasks.push(tokio::spawn(async move {
                if ready_store
                    .wait_ready(Duration::from_secs(86_400))
                    .await
                    .is_ok()
                {
                    set_state(&status3, Component::Gateway, ComponentState::Running);
                }
            }));
            Some(tokio::spawn(async move {
                let result =
                    pyoco_gateway::serve(listener, state, async move { stop.cancelled().await })
                        .await;
                let state = match result {
                    Ok(()) => ComponentState::Stopped,
                    Err(e) => ComponentState::Failed {
                        error: format!("gateway stopped serving: {e}"),
                    },
                };
                set_state(&status2, Component::Gateway, state);
            }))
        } else {
            None
        };

        // 3. Local worker, restarted with backoff when it fails.
        let worker_stop = CancellationToken::new();
        let worker_task = worker_config.map(|config| {
            tokio::spawn(run_worker(
                config,
                store.clone(),
                status.clone(),
                worker_stop.clone(),
            ))
        });

        Ok(Appliance {
            status,
            nats,
            store,
            worker_stop,
            gateway_stop,
            watchers_stop,
            worker_task,
            gateway_task,
            watcher_tasks,
        })
    }

    /// The current status, updated as components change state.
    pub fn status(&self) -> watch::Receiver<ApplianceStatus> {
        self.status.subscribe()
    }

    /// A store connected to the appliance's NATS (ready once NATS answers).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The managed nats-server, if any.
    pub fn nats(&self) -> Option<&NatsSupervisor> {
        self.nats.as_deref()
    }

    /// Wait until every enabled component is running, or one has failed (`Err` with its
    /// error), or `timeout` passes.
    pub async fn wait_until_running(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.status.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.all_running() || failed(s).is_some()),
        )
        .await;
        match waited {
            Ok(Ok(s)) => match failed(&s) {
                Some(e) => Err(e),
                None => Ok(()),
            },
            Ok(Err(_)) => Err("the appliance stopped".into()),
            Err(_) => Err(format!(
                "not every component was running after {timeout:?}: {:?}",
                *self.status.borrow()
            )),
        }
    }

    /// Stop everything in order: the worker (runs in progress may finish), the gateway, then
    /// NATS. Nothing is left running when this returns.
    pub async fn stop(mut self) {
        if let Some(task) = self.worker_task.take() {
            set_state(&self.status, Component::Worker, ComponentState::Stopping);
            self.worker_stop.cancel();
            let _ = task.await;
            set_state(&self.status, Component::Worker, ComponentState::Stopped);
        }
        if let Some(task) = self.gateway_task.take() {
            set_state(&self.status, Component::Gateway, ComponentState::Stopping);
            self.gateway_stop.cancel();
            let _ = task.await;
            set_state(&self.status, Component::Gateway, ComponentState::Stopped);
        }
        self.watchers_stop.cancel();
        for task in self.watcher_tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if let Some(nats) = self.nats.take() {
            set_state(&self.status, Component::Nats, ComponentState::Stopping);
            nats.shutdown().await;
            set_state(&self.status, Component::Nats, ComponentState::Stopped);
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        // Dropped without stop(): cancel everything; the nats supervisor's own Drop kills the
        // server and the worker's runners die with their process (kill_on_drop/PDEATHSIG).
        self.worker_stop.cancel();
        self.gateway_stop.cancel();
        self.watchers_stop.cancel();
    }
}

fn failed(s: &ApplianceStatus) -> Option<String> {
    Component::ALL
        .iter()
        .find_map(|c| match &s.component(*c).state {
            ComponentState::Failed { error } => Some(format!("{}: {error}", c.label())),
            _ => None,
        })
}

fn set_state(status: &watch::Sender<ApplianceStatus>, c: Component, state: ComponentState) {
    status.send_if_modified(|s| {
        let current = s.component_mut(c);
        if current.state == state {
            return false;
        }
        *current = ComponentStatus::new(state);
        true
    });
}

fn display_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

fn bind(
    settings: &Settings,
    given: Option<std::net::TcpListener>,
) -> Result<tokio::net::TcpListener, ApplianceError> {
    let addr = format!("{}:{}", settings.http_host, settings.http_port);
    let std_listener = match given {
        Some(l) => l,
        None => std::net::TcpListener::bind(&addr).map_err(|source| ApplianceError::Listen {
            addr: addr.clone(),
            source,
        })?,
    };
    std_listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        .map_err(|source| ApplianceError::Listen { addr, source })
}

async fn watch_nats(
    nats: Arc<NatsSupervisor>,
    status: Arc<watch::Sender<ApplianceStatus>>,
    stop: CancellationToken,
) {
    let mut rx = nats.state();
    loop {
        let state = match &*rx.borrow_and_update() {
            NatsState::Starting => ComponentState::Starting,
            NatsState::Running { .. } => ComponentState::Running,
            NatsState::Restarting {
                attempt, last_exit, ..
            } => ComponentState::Restarting {
                attempt: *attempt,
                reason: last_exit.clone(),
            },
            NatsState::Stopped => ComponentState::Stopped,
            NatsState::Failed { error } => ComponentState::Failed {
                error: error.to_string(),
            },
        };
        set_state(&status, Component::Nats, state);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// Run the local worker until `stop`, restarting it with backoff (1 s doubling to 30 s) when
/// it fails, so a broken Python venv shows as a failed worker with its error, and a fixed one
/// is picked up without restarting the app.
async fn run_worker(
    config: WorkerConfig,
    store: SharedStore,
    status: Arc<watch::Sender<ApplianceStatus>>,
    stop: CancellationToken,
) {
    let mut attempt: u32 = 0;
    loop {
        let ready = tokio::select! {
            _ = stop.cancelled() => return,
            ready = store.wait_ready(Duration::from_secs(3600)) => ready,
        };
        let Ok(connected) = ready else { continue };
        set_state(&status, Component::Worker, ComponentState::Running);
        let worker = Worker::new(config.clone());
        let stop2 = stop.clone();
        let result = worker
            .run(connected, async move { stop2.cancelled().await })
            .await;
        if stop.is_cancelled() {
            return;
        }
        attempt += 1;
        let reason = match result {
            Ok(()) => "the worker stopped by itself".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(attempt, "local worker failed: {reason}");
        let delay = Duration::from_secs(1 << (attempt - 1).min(5)).min(Duration::from_secs(30));
        set_state(
            &status,
            Component::Worker,
            ComponentState::Restarting { attempt, reason },
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
