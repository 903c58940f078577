//! The all-in-one appliance: a supervised nats-server (or an external NATS), the HTTP gateway
//! and a local worker, started together, watched together, stopped in order.
//!
//! What it is for: `pyoco-server up` and the desktop app both run exactly this, so the desktop
//! app is a thin shell and servers/CI run the same code without a display. It owns the order of
//! things (NATS first, then the gateway and the worker; on stop the worker first, so runs in
//! progress can finish and write their last snapshot, then the gateway, then NATS) and one
//! [`ApplianceStatus`] that says what each part is doing.
//!
//! It runs the settings it is given with the table's appliance defaults
//! ([`Settings::with_appliance_defaults`]: e.g. wheel sync on, synced wheels under the data dir),
//! and restarts what each setting's row says a change restarts ([`restarts_for`]).
//!
//! What it is not: it holds no business logic (that is the gateway and worker crates) and reads
//! no environment (it takes [`Settings`]).

mod logs;
mod status;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use pyoco_config::{AppDirs, Restarts, Settings};
pub use pyoco_natsd::NatsServerConfig;
use pyoco_natsd::{NatsState, NatsSupervisor};
use pyoco_store::{NatsConnect, SharedStore, StoreConfig};
use pyoco_worker::{Worker, WorkerConfig};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use logs::{log_throttle, LogBuffer, LogLine, LOG_BURST, LOG_SUMMARY_INTERVAL};
pub use status::{ApplianceStatus, Component, ComponentState, ComponentStatus};

/// A last adjustment of the managed nats-server's configuration, applied at every (re)start.
pub type NatsConfigHook = Arc<dyn Fn(&mut NatsServerConfig) + Send + Sync>;

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
    /// `PYOCO_HTTP_HOST:PYOCO_HTTP_PORT` is bound. A restarted gateway binds the same address
    /// again while those settings are unchanged.
    pub http_listener: Option<std::net::TcpListener>,
    /// The local worker's configuration, used as is at every (re)start; `None` derives it from
    /// the settings each time (see [`local_worker_config`]).
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

impl ApplianceError {
    /// The managed nats-server's client port is taken.
    pub fn is_nats_port_in_use(&self) -> bool {
        matches!(
            self,
            ApplianceError::Nats(pyoco_natsd::NatsdError::PortInUse { .. })
        )
    }

    /// The gateway's address is taken.
    pub fn is_http_port_in_use(&self) -> bool {
        matches!(self, ApplianceError::Listen { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// A background part of the appliance: its stop switch and its tasks.
struct Running {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The managed nats-server and the task mirroring its state into the status.
struct ManagedNats {
    supervisor: Arc<NatsSupervisor>,
    watcher: Running,
}

/// The running appliance.
pub struct Appliance {
    settings: Settings,
    managed_nats: bool,
    gateway_enabled: bool,
    worker_enabled: bool,
    fixed_worker_config: Option<WorkerConfig>,
    nats_hook: Option<NatsConfigHook>,
    /// A listener handed in at start, until the gateway first uses it.
    given_listener: Option<std::net::TcpListener>,
    /// The address of the listener handed in, with the host/port settings of that time: a
    /// restarted gateway binds it again while the settings still say the same.
    given_addr: Option<(SocketAddr, String, u16)>,
    status: Arc<watch::Sender<ApplianceStatus>>,
    nats: Option<ManagedNats>,
    store: SharedStore,
    gateway: Option<Running>,
    worker: Option<Running>,
}

impl Appliance {
    /// Start like [`Appliance::start`], except that a port left at its default and found taken
    /// — 4222 by another NATS, 8000 by another web server, common on a developer's machine — is
    /// replaced by a free one, and `notice` gets a sentence saying so and how to choose one. A
    /// port the user set (flag, environment, `.env`) that is taken stays an error to fix.
    /// `options` is called for each attempt.
    pub async fn start_taking_free_default_ports(
        options: impl Fn() -> ApplianceOptions,
        notice: impl Fn(String),
    ) -> Result<Appliance, ApplianceError> {
        let mut any_nats_port = false;
        let mut http_listener: Option<std::net::TcpListener> = None;
        loop {
            let mut attempt = options();
            let settings = attempt.settings.clone();
            let is_default =
                |name: &str| settings.source(name) == Some(&pyoco_config::Source::Default);
            if any_nats_port {
                let earlier = attempt.nats_config.take();
                attempt.nats_config = Some(Arc::new(move |c: &mut NatsServerConfig| {
                    if let Some(earlier) = &earlier {
                        earlier(c);
                    }
                    c.port = None;
                }));
            }
            if let Some(listener) = &http_listener {
                attempt.http_listener = Some(listener.try_clone().map_err(|source| {
                    ApplianceError::Listen {
                        addr: listener
                            .local_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        source,
                    }
                })?);
            }
            match Appliance::start(attempt).await {
                Ok(appliance) => return Ok(appliance),
                Err(e)
                    if e.is_nats_port_in_use()
                        && !any_nats_port
                        && is_default("PYOCO_NATS_CLIENT_PORT") =>
                {
                    any_nats_port = true;
                    notice(format!(
                        "NATS port {} is taken (another NATS?): the managed nats-server uses a \
                         free port instead; set PYOCO_NATS_CLIENT_PORT to choose one",
                        settings.nats_client_port
                    ));
                }
                Err(e)
                    if e.is_http_port_in_use()
                        && http_listener.is_none()
                        && is_default("PYOCO_HTTP_PORT") =>
                {
                    let Ok(listener) =
                        std::net::TcpListener::bind((settings.http_host.as_str(), 0))
                    else {
                        return Err(e);
                    };
                    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                    http_listener = Some(listener);
                    notice(format!(
                        "HTTP port {} is taken: the API listens on port {port} instead; set \
                         PYOCO_HTTP_PORT to choose one",
                        settings.http_port
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Start what `options` asks for, with the appliance defaults applied to its settings
    /// ([`Settings::with_appliance_defaults`]). Returns once NATS (when managed) answers and the
    /// gateway listens; the worker comes up in the background (see [`Appliance::status`]).
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
        let settings = settings.with_appliance_defaults()?;
        let dirs = AppDirs::from_settings(&settings)?;
        let disabled = || ComponentStatus::new(ComponentState::Disabled);
        let starting = || ComponentStatus::new(ComponentState::Starting);
        let status = Arc::new(watch::Sender::new(ApplianceStatus {
            nats: if managed_nats { starting() } else { disabled() },
            gateway: if gateway { starting() } else { disabled() },
            worker: if worker { starting() } else { disabled() },
            nats_url: settings.nats_url.clone(),
            api_url: None,
            nats_monitor_url: None,
            data_dir: dirs.data_dir().display().to_string(),
        }));
        let given_addr = match &http_listener {
            Some(l) => l
                .local_addr()
                .ok()
                .map(|a| (a, settings.http_host.clone(), settings.http_port)),
            None => None,
        };
        let mut appliance = Appliance {
            store: SharedStore::disconnected(),
            settings,
            managed_nats,
            gateway_enabled: gateway,
            worker_enabled: worker,
            fixed_worker_config: worker_config,
            nats_hook: nats_config,
            given_listener: http_listener,
            given_addr,
            status,
            nats: None,
            gateway: None,
            worker: None,
        };
        // A bad worker configuration is a start error, not a restart loop.
        if worker {
            appliance.worker_config()?;
        }
        if let Err(e) = appliance.start_all().await {
            appliance.stop_parts().await;
            return Err(e);
        }
        Ok(appliance)
    }

    /// The current status, updated as components change state.
    pub fn status(&self) -> watch::Receiver<ApplianceStatus> {
        self.status.subscribe()
    }

    /// A store connected to the appliance's NATS (ready once NATS answers). It is replaced
    /// when NATS or the store's settings change: ask again after a restart.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The managed nats-server, if any.
    pub fn nats(&self) -> Option<&NatsSupervisor> {
        self.nats.as_ref().map(|n| &*n.supervisor)
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

    /// Restart one component. Restarting NATS restarts everything (the gateway and the worker
    /// reconnect to it); a disabled component is left alone. On `Err` the component shows as
    /// failed with the same error.
    pub async fn restart(&mut self, component: Component) -> Result<(), ApplianceError> {
        match component {
            Component::Nats => self.restart_all().await,
            Component::Gateway if self.gateway_enabled => {
                self.stop_gateway().await;
                self.spawn_gateway()
            }
            Component::Worker if self.worker_enabled => {
                self.stop_worker().await;
                self.spawn_worker()
            }
            Component::Gateway | Component::Worker => Ok(()),
        }
    }

    /// Stop everything and start it again with the current settings.
    pub async fn restart_all(&mut self) -> Result<(), ApplianceError> {
        self.stop_parts().await;
        let result = self.start_all().await;
        if result.is_err() {
            // Whatever did start keeps running: the caller decides (the desktop shows it).
            tracing::warn!("restart failed: {:?}", failed(&self.status.borrow()));
        }
        result
    }

    /// Run with new settings (appliance defaults applied), restarting only the components the
    /// changed settings affect (see [`restarts_for`]). Returns the components restarted (all
    /// three when NATS was).
    pub async fn reconfigure(
        &mut self,
        settings: Settings,
    ) -> Result<Vec<Component>, ApplianceError> {
        let settings = settings.with_appliance_defaults()?;
        AppDirs::from_settings(&settings)?;
        let changed = changed_settings(&self.settings, &settings);
        let mut affected: Vec<Component> = Vec::new();
        let mut store = false;
        for name in &changed {
            let parts = restarts_for(name);
            store |= parts.contains(&Component::Gateway) && parts.contains(&Component::Worker);
            for c in parts {
                if !affected.contains(c) {
                    affected.push(*c);
                }
            }
        }
        let old = std::mem::replace(&mut self.settings, settings);
        if self.worker_enabled && affected.contains(&Component::Worker) {
            if let Err(e) = self.worker_config() {
                self.settings = old;
                return Err(e);
            }
        }
        let (nats_on, gateway_on, worker_on) =
            (self.managed_nats, self.gateway_enabled, self.worker_enabled);
        let enabled = move |c: &Component| match c {
            Component::Nats => nats_on,
            Component::Gateway => gateway_on,
            Component::Worker => worker_on,
        };
        if affected.contains(&Component::Nats) && self.managed_nats {
            self.restart_all().await?;
            return Ok(Component::ALL.into_iter().filter(enabled).collect());
        }
        affected.retain(|c| *c != Component::Nats && enabled(c));
        if store {
            self.stop_worker().await;
            self.stop_gateway().await;
            if !self.managed_nats {
                let url = self.settings.nats_url.clone();
                self.status.send_modify(|s| s.nats_url = url);
            }
            self.connect_store();
            self.spawn_gateway()?;
            self.spawn_worker()?;
        } else {
            for c in &affected {
                self.restart(*c).await?;
            }
        }
        Ok(Component::ALL
            .into_iter()
            .filter(|c| affected.contains(c))
            .collect())
    }

    /// Stop everything in order: the worker (runs in progress may finish), the gateway, then
    /// NATS. Nothing is left running when this returns.
    pub async fn stop(mut self) {
        self.stop_parts().await;
    }

    async fn start_all(&mut self) -> Result<(), ApplianceError> {
        self.start_nats().await?;
        self.connect_store();
        if self.managed_nats {
            // NATS answers already: be ready before we say the gateway runs, so a client that
            // saw /health answer never gets `503 NotConnected` (as 0.5.1, which connected first).
            if let Err(e) = self.store.wait_ready(Duration::from_secs(10)).await {
                tracing::warn!("the managed NATS answers but the store is not ready yet: {e}");
            }
        }
        self.spawn_gateway()?;
        self.spawn_worker()
    }

    async fn stop_parts(&mut self) {
        self.stop_worker().await;
        self.stop_gateway().await;
        self.stop_nats().await;
    }

    async fn start_nats(&mut self) -> Result<(), ApplianceError> {
        if !self.managed_nats {
            let url = self.settings.nats_url.clone();
            self.status.send_modify(|s| s.nats_url = url);
            return Ok(());
        }
        set_state(&self.status, Component::Nats, ComponentState::Starting);
        let result = self.spawn_nats().await;
        if let Err(e) = &result {
            set_state(
                &self.status,
                Component::Nats,
                ComponentState::Failed {
                    error: e.to_string(),
                },
            );
        }
        result
    }

    async fn spawn_nats(&mut self) -> Result<(), ApplianceError> {
        let settings = &self.settings;
        let dirs = AppDirs::from_settings(settings)?;
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
        if let Some(adjust) = &self.nats_hook {
            adjust(&mut config);
        }
        let supervisor = Arc::new(NatsSupervisor::start(config).await?);
        let data_dir = dirs.data_dir().display().to_string();
        self.status.send_modify(|s| {
            s.nats_url = supervisor.client_url().to_string();
            s.nats_monitor_url = supervisor.monitor_url();
            s.data_dir = data_dir;
        });
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_nats(
            supervisor.clone(),
            self.status.clone(),
            stop.clone(),
        ));
        self.nats = Some(ManagedNats {
            supervisor,
            watcher: Running {
                stop,
                tasks: vec![watcher],
            },
        });
        Ok(())
    }

    async fn stop_nats(&mut self) {
        if let Some(nats) = self.nats.take() {
            set_state(&self.status, Component::Nats, ComponentState::Stopping);
            nats.watcher.stop().await;
            nats.supervisor.shutdown().await;
            set_state(&self.status, Component::Nats, ComponentState::Stopped);
        }
    }

    /// One connection for the gateway and the local worker; it connects in the background and
    /// keeps reconnecting, so both survive a NATS restart on the same URL.
    fn connect_store(&mut self) {
        let url = self.status.borrow().nats_url.clone();
        // The managed nats-server is plain, open (loopback) and a single node; an external one
        // gets the TLS, credentials and replica settings.
        let mut cfg = StoreConfig::from(&self.settings);
        let target = if self.managed_nats {
            if cfg.replicas > 1 {
                tracing::info!(
                    replicas = cfg.replicas,
                    "PYOCO_JETSTREAM_REPLICAS is for a NATS cluster; the managed nats-server is \
                     one node, so its streams keep one copy"
                );
            }
            cfg.replicas = 1;
            NatsConnect::url(url)
        } else {
            NatsConnect::from(&self.settings).with_url(url)
        };
        self.store = SharedStore::connect_in_background_with(target, "pyoco-appliance", cfg);
    }

    fn spawn_gateway(&mut self) -> Result<(), ApplianceError> {
        if !self.gateway_enabled {
            return Ok(());
        }
        set_state(&self.status, Component::Gateway, ComponentState::Starting);
        let listener = match self.bind() {
            Ok(l) => l,
            Err(e) => {
                set_state(
                    &self.status,
                    Component::Gateway,
                    ComponentState::Failed {
                        error: e.to_string(),
                    },
                );
                return Err(e);
            }
        };
        let addr = listener.local_addr().ok();
        self.status.send_modify(|s| {
            s.api_url = addr.map(|a| format!("http://{a}"));
        });
        let state = pyoco_gateway::AppState::new(&self.settings, self.store.clone());
        let stop = CancellationToken::new();
        // Running once it can reach NATS; until then it answers 503 (and /health).
        let ready_store = self.store.clone();
        let status = self.status.clone();
        let ready_stop = stop.clone();
        let ready = tokio::spawn(async move {
            tokio::select! {
                _ = ready_stop.cancelled() => {}
                ready = ready_store.wait_ready(Duration::from_secs(86_400)) => {
                    if ready.is_ok() {
                        set_state(&status, Component::Gateway, ComponentState::Running);
                    }
                }
            }
        });
        let status = self.status.clone();
        let serve_stop = stop.clone();
        let serve = tokio::spawn(async move {
            let result =
                pyoco_gateway::serve(listener, state, async move { serve_stop.cancelled().await })
                    .await;
            let state = match result {
                Ok(()) => ComponentState::Stopped,
                Err(e) => ComponentState::Failed {
                    error: format!("gateway stopped serving: {e}"),
                },
            };
            set_state(&status, Component::Gateway, state);
        });
        self.gateway = Some(Running {
            stop,
            tasks: vec![serve, ready],
        });
        Ok(())
    }

    async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            set_state(&self.status, Component::Gateway, ComponentState::Stopping);
            gateway.stop().await;
            set_state(&self.status, Component::Gateway, ComponentState::Stopped);
        }
    }

    fn worker_config(&self) -> Result<WorkerConfig, ApplianceError> {
        if let Some(c) = &self.fixed_worker_config {
            return Ok(c.clone());
        }
        local_worker_config(&self.settings)
    }

    /// The local worker, restarted with backoff when it fails.
    fn spawn_worker(&mut self) -> Result<(), ApplianceError> {
        if !self.worker_enabled {
            return Ok(());
        }
        let config = match self.worker_config() {
            Ok(c) => c,
            Err(e) => {
                set_state(
                    &self.status,
                    Component::Worker,
                    ComponentState::Failed {
                        error: e.to_string(),
                    },
                );
                return Err(e);
            }
        };
        set_state(&self.status, Component::Worker, ComponentState::Starting);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_worker(
            config,
            self.store.clone(),
            self.status.clone(),
            stop.clone(),
        ));
        self.worker = Some(Running {
            stop,
            tasks: vec![task],
        });
        Ok(())
    }

    async fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            set_state(&self.status, Component::Worker, ComponentState::Stopping);
            worker.stop().await;
            set_state(&self.status, Component::Worker, ComponentState::Stopped);
        }
    }

    fn bind(&mut self) -> Result<tokio::net::TcpListener, ApplianceError> {
        let host = self.settings.http_host.clone();
        let port = self.settings.http_port;
        let addr = format!("{host}:{port}");
        let std_listener = match (self.given_listener.take(), &self.given_addr) {
            (Some(l), _) => Ok(l),
            (None, Some((a, h, p))) if *h == host && *p == port => std::net::TcpListener::bind(a),
            _ => std::net::TcpListener::bind(&addr),
        };
        std_listener
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|source| ApplianceError::Listen { addr, source })
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        // Dropped without stop(): cancel everything; the nats supervisor's own Drop kills the
        // server and the worker's runners die with their process (kill_on_drop/PDEATHSIG).
        for part in [&self.worker, &self.gateway].into_iter().flatten() {
            part.stop.cancel();
        }
        if let Some(n) = &self.nats {
            n.watcher.stop.cancel();
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, with the signal's name: what stops `pyoco-server
/// up`, `pyoco-worker` and the desktop app.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// The names of the settings whose effective text differs between `a` and `b`.
pub fn changed_settings(a: &Settings, b: &Settings) -> Vec<&'static str> {
    a.entries()
        .zip(b.entries())
        .filter(|((_, x, _), (_, y, _))| x != y)
        .map(|((spec, _, _), _)| spec.name)
        .collect()
}

/// The local worker's configuration for `settings`: with the appliance defaults
/// ([`Settings::with_appliance_defaults`]), and a relative `PYOCO_WHEEL_SYNC_DIR` taken from the
/// data dir instead of the working directory (a desktop app has no meaningful one). What the
/// appliance runs when [`ApplianceOptions::worker_config`] is `None`; `pyoco-server up` starts
/// from it too.
pub fn local_worker_config(settings: &Settings) -> Result<WorkerConfig, ApplianceError> {
    let settings = settings.with_appliance_defaults()?;
    let dirs = AppDirs::from_settings(&settings)?;
    let mut config = WorkerConfig::from_settings(&settings)
        .map_err(|e| ApplianceError::Worker(e.to_string()))?;
    config.resolve_wheel_sync_dir(dirs.data_dir());
    Ok(config)
}

/// The components a change of setting `name` restarts, as its row of the settings table says
/// ([`pyoco_config::Spec::restarts`]); empty when it applies only at the next start of the
/// process (logging, the dotenv loader's switches) or `name` is not a setting.
pub fn restarts_for(name: &str) -> &'static [Component] {
    pyoco_config::spec(name).map_or(&[], |spec| components(spec.restarts))
}

/// The components that a [`Restarts`] means.
pub fn components(restarts: Restarts) -> &'static [Component] {
    match restarts {
        Restarts::Nothing => &[],
        Restarts::Gateway => &[Component::Gateway],
        Restarts::Worker => &[Component::Worker],
        Restarts::GatewayAndWorker => &[Component::Gateway, Component::Worker],
        Restarts::Everything => &[Component::Nats, Component::Gateway, Component::Worker],
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
        let Ok(connected) = ready else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
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
        // Logged as the worker's (the window's log panel files it under "worker").
        tracing::error!(target: "pyoco_worker::appliance", attempt, "local worker failed: {reason}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_restarts_what_reads_it() {
        use Component::{Gateway, Nats, Worker};
        let cases: &[(&str, &[Component])] = &[
            ("PYOCO_NATS_CLIENT_PORT", &[Nats, Gateway, Worker]),
            ("PYOCO_DATA_DIR", &[Nats, Gateway, Worker]),
            ("PYOCO_NATS_URL", &[Gateway, Worker]),
            ("PYOCO_RUNS_KV_BUCKET", &[Gateway, Worker]),
            ("PYOCO_WHEEL_OBJECT_STORE_BUCKET", &[Gateway, Worker]),
            ("PYOCO_WHEEL_SYNC_DIR", &[Worker]),
            ("PYOCO_WORKER_TAGS", &[Worker]),
            ("PYOCO_TASKS_PATH", &[Worker]),
            ("PYOCO_HTTP_PORT", &[Gateway]),
            ("PYOCO_HTTP_AUTH_MODE", &[Gateway]),
            ("PYOCO_WORKFLOW_YAML_MAX_BYTES", &[Gateway]),
            ("PYOCO_LOG_LEVEL", &[]),
            ("PYOCO_LOAD_DOTENV", &[]),
            ("NOT_A_SETTING", &[]),
        ];
        for (name, want) in cases {
            assert_eq!(restarts_for(name), *want, "{name}");
        }
        // Every setting a running component reads restarts something, except logging.
        for spec in pyoco_config::specs() {
            let parts = restarts_for(spec.name);
            let quiet = matches!(
                spec.group,
                pyoco_config::Group::Logging | pyoco_config::Group::DotenvLoader
            );
            assert_eq!(parts.is_empty(), quiet, "{}", spec.name);
        }
    }

    fn settings_with(vars: &[(&str, &str)]) -> Settings {
        let mut opts = pyoco_config::LoadOptions {
            env: Default::default(),
            cwd: std::path::PathBuf::from("/home/u/proj"),
            home: None,
        };
        opts.env.insert("PYOCO_LOAD_DOTENV".into(), "0".into());
        opts.env
            .insert("PYOCO_DATA_DIR".into(), "/srv/pyoco-data".into());
        for (k, v) in vars {
            opts.env.insert(k.to_string(), v.to_string());
        }
        Settings::load(&opts).unwrap()
    }

    #[test]
    fn the_appliance_keeps_synced_wheels_under_its_data_dir() {
        use std::path::PathBuf;
        for (value, expected) in [
            (None, "/srv/pyoco-data/wheels"),
            (Some("synced"), "/srv/pyoco-data/synced"),
            (Some("/abs/wheels"), "/abs/wheels"),
        ] {
            let vars: Vec<(&str, &str)> = value
                .map(|v| vec![("PYOCO_WHEEL_SYNC_DIR", v)])
                .unwrap_or_default();
            let settings = settings_with(&vars);
            let cfg = local_worker_config(&settings).unwrap();
            assert_eq!(cfg.wheel_sync.dir, PathBuf::from(expected), "{value:?}");
        }
    }

    #[test]
    fn the_appliance_syncs_wheels_unless_told_not_to() {
        for (value, expected) in [
            (None, true),
            (Some("false"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
        ] {
            let vars: Vec<(&str, &str)> = value
                .map(|v| vec![("PYOCO_WHEEL_SYNC_ENABLED", v)])
                .unwrap_or_default();
            let settings = settings_with(&vars);
            let cfg = WorkerConfig::from_settings(&settings).unwrap();
            // The headless worker keeps 0.5.1's default: off unless set.
            assert_eq!(
                cfg.wheel_sync.enabled,
                value.is_some() && expected,
                "{value:?}"
            );
            let cfg = local_worker_config(&settings).unwrap();
            assert_eq!(cfg.wheel_sync.enabled, expected, "appliance, {value:?}");
        }
    }

    #[test]
    fn an_explicit_false_in_a_dotenv_file_keeps_the_appliances_sync_off() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "PYOCO_WHEEL_SYNC_ENABLED=false\n").unwrap();
        let mut opts = pyoco_config::LoadOptions {
            env: Default::default(),
            cwd: dir.path().to_path_buf(),
            home: None,
        };
        opts.env
            .insert("PYOCO_DATA_DIR".into(), "/srv/pyoco-data".into());
        let settings = Settings::load(&opts).unwrap();
        assert!(matches!(
            settings.source("PYOCO_WHEEL_SYNC_ENABLED"),
            Some(pyoco_config::Source::File { .. })
        ));
        let cfg = local_worker_config(&settings).unwrap();
        assert!(!cfg.wheel_sync.enabled);
    }
}
