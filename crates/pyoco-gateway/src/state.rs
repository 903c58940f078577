//! What every handler shares: the store handle and the few settings the routes read.
//!
//! Settings are copied out of [`Settings`] once at startup, so handlers read plain fields
//! instead of a large struct, and the gateway never re-reads the environment.

use std::sync::{Arc, OnceLock};

use pyoco_config::Settings;
use pyoco_store::{SharedStore, Store};

use crate::{
    auth::Authenticator, conn::ConnLimits, error::ApiError, guard::Guard, index::RunIndex,
};

/// How many flow.yaml documents are parsed at once (one per core on the 2-core machines this
/// runs on; the rest wait their turn without holding an executor thread).
pub(crate) const YAML_PARSES_AT_ONCE: usize = 2;

/// Shared state of the gateway. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Flipped once when the server starts its graceful shutdown, so long-lived responses
    /// (SSE watches) end instead of holding the shutdown up for their whole `timeout_sec`.
    shutdown: tokio::sync::watch::Sender<bool>,
    shared: SharedStore,
    /// The store once [`SharedStore`] reported it ready. A `SharedStore` becomes ready once
    /// and never changes its store afterwards, so keeping it here is exact, and it spares each
    /// request the clone of a whole `Store` (its config strings and bucket handles) that
    /// [`SharedStore::get`] returns.
    ready: OnceLock<Store>,
    default_tag: String,
    workflow_yaml_max_bytes: u64,
    worker_disconnect_timeout_sec: f64,
    wheel_max_bytes: u64,
    wheel_keep_versions: u64,
    /// `PYOCO_TASK_MODULES`: the modules a submitted flow.yaml may call (empty: any).
    task_modules: Vec<String>,
    /// flow.yaml parses running at once (each on a blocking thread).
    yaml_parsing: tokio::sync::Semaphore,
    /// Every run in memory, fed by a KV watch: `GET /runs` and `/metrics` read it.
    run_index: RunIndex,
    /// API-key authentication of the protected routes (§9).
    auth: Authenticator,
    /// The `Host` / `Origin` checks and CORS.
    guard: Guard,
    conn_limits: ConnLimits,
    /// `PYOCO_DASHBOARD_LANG` for the page: `ja`, `en`, or empty (`auto`: the browser's).
    dashboard_lang: &'static str,
    /// The reason of each dead letter seen, for `/metrics` (read once per entry).
    dlq_reasons: tokio::sync::Mutex<DlqReasons>,
    /// Every schedule in memory, and the task dispatching them (pyoco-server 0.7).
    schedules: crate::schedule::Dispatcher,
}

/// An [`AppState`] that does not keep the gateway alive (the dispatcher's task holds one).
#[derive(Clone, Debug)]
pub(crate) struct WeakState(std::sync::Weak<Inner>);

impl WeakState {
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

/// The reason of every DLQ entry the gateway has read, by stream sequence (a few bytes each,
/// at most the DLQ's `max_msgs`). `/metrics` reads only the entries added since its last
/// scrape and forgets the ones below the stream's first sequence (expired or discarded).
#[derive(Debug, Default)]
pub(crate) struct DlqReasons {
    pub seen: std::collections::BTreeMap<u64, Arc<str>>,
    /// The last sequence read.
    pub last_seq: u64,
}

impl AppState {
    /// State for a gateway configured by `settings`, talking to NATS through `store` (which may
    /// still be connecting: NATS-backed endpoints answer 503 until it is ready).
    pub fn new(settings: &Settings, store: SharedStore) -> AppState {
        let state = AppState {
            inner: Arc::new(Inner {
                shutdown: tokio::sync::watch::Sender::new(false),
                run_index: RunIndex::new(store.clone()),
                auth: Authenticator::new(settings, store.clone()),
                guard: Guard::new(settings),
                conn_limits: ConnLimits::from_settings(settings),
                shared: store,
                ready: OnceLock::new(),
                default_tag: settings.default_tag.clone(),
                workflow_yaml_max_bytes: settings.workflow_yaml_max_bytes,
                worker_disconnect_timeout_sec: settings.worker_disconnect_timeout_sec,
                wheel_max_bytes: settings.wheel_max_bytes,
                wheel_keep_versions: settings.wheel_keep_versions,
                task_modules: settings.task_modules.clone(),
                yaml_parsing: tokio::sync::Semaphore::new(YAML_PARSES_AT_ONCE),
                dlq_reasons: tokio::sync::Mutex::new(DlqReasons::default()),
                schedules: crate::schedule::Dispatcher::new(settings.schedule_poll_interval_sec),
                dashboard_lang: match settings.dashboard_lang {
                    pyoco_config::DashboardLang::Ja => "ja",
                    pyoco_config::DashboardLang::En => "en",
                    pyoco_config::DashboardLang::Auto => "",
                },
            }),
        };
        state.start_background();
        state
    }

    /// Start the schedule dispatcher (once; outside a tokio runtime a no-op, and [`crate::serve`]
    /// starts it).
    pub(crate) fn start_background(&self) {
        self.inner.schedules.start(self, self.inner.shared.clone());
    }

    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.inner))
    }

    /// The schedules in memory and their dispatcher.
    pub(crate) fn schedules(&self) -> &crate::schedule::Dispatcher {
        &self.inner.schedules
    }

    /// The connected store, or `503 nats unavailable: NotConnected` before the first
    /// connection and `503 nats unavailable: Disconnected` while the connection is down.
    /// Why this gateway never connected to NATS (the last attempt's error, naming the settings
    /// to check), or `None` once it did (a later outage is answered per request instead).
    pub fn nats_problem(&self) -> Option<String> {
        if self.inner.ready.get().is_some() {
            return None;
        }
        self.inner.shared.problem()
    }

    pub fn store(&self) -> Result<&Store, ApiError> {
        if let Some(store) = self.inner.ready.get() {
            store.check_connected()?;
            return Ok(store);
        }
        let store = self.inner.shared.get()?;
        Ok(self.inner.ready.get_or_init(|| store))
    }

    /// The `Host` / `Origin` checks and CORS.
    pub(crate) fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// The connection limits [`crate::serve`] applies.
    pub fn conn_limits(&self) -> ConnLimits {
        self.inner.conn_limits
    }

    /// The API-key checker of the protected routes.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// `PYOCO_DEFAULT_TAG`: the routing tag of a submission that names none.
    pub fn default_tag(&self) -> &str {
        &self.inner.default_tag
    }

    /// Parse a submitted flow.yaml on a blocking thread, at most [`YAML_PARSES_AT_ONCE`] at a
    /// time (a hostile document costs up to its budget, never the executor's threads); the
    /// bytes come back with the result.
    pub(crate) async fn parse_workflow_yaml(
        &self,
        raw: Vec<u8>,
    ) -> Result<
        (
            Vec<u8>,
            Result<pyoco_wire::Workflow, pyoco_wire::WorkflowYamlError>,
        ),
        ApiError,
    > {
        let _permit = self
            .inner
            .yaml_parsing
            .acquire()
            .await
            .expect("never closed");
        tokio::task::spawn_blocking(move || {
            let parsed = pyoco_wire::parse_workflow_yaml(&raw);
            (raw, parsed)
        })
        .await
        .map_err(|err| {
            ApiError::detail(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("flow.yaml parsing failed: {err}"),
            )
        })
    }

    /// `PYOCO_TASK_MODULES`: the modules a submitted flow.yaml may call (empty: any).
    pub fn task_modules(&self) -> &[String] {
        &self.inner.task_modules
    }

    /// `PYOCO_WORKFLOW_YAML_MAX_BYTES`: the largest flow.yaml `POST /runs/yaml` accepts.
    pub fn workflow_yaml_max_bytes(&self) -> u64 {
        self.inner.workflow_yaml_max_bytes
    }

    /// `PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC`, for the derived worker state (§4.3).
    pub fn worker_disconnect_timeout_sec(&self) -> f64 {
        self.inner.worker_disconnect_timeout_sec
    }

    /// `PYOCO_WHEEL_MAX_BYTES`: the largest wheel `POST /wheels` accepts (0: no limit).
    pub fn wheel_max_bytes(&self) -> u64 {
        self.inner.wheel_max_bytes
    }

    /// `PYOCO_WHEEL_KEEP_VERSIONS`: versions of a package kept after an upload (0: all).
    pub fn wheel_keep_versions(&self) -> u64 {
        self.inner.wheel_keep_versions
    }

    /// The in-memory index of every run (`GET /runs`, `/metrics`).
    pub(crate) fn dlq_reasons(&self) -> &tokio::sync::Mutex<DlqReasons> {
        &self.inner.dlq_reasons
    }

    pub(crate) fn dashboard_lang(&self) -> &'static str {
        self.inner.dashboard_lang
    }

    pub(crate) fn run_index(&self) -> &RunIndex {
        &self.inner.run_index
    }

    /// Tell long-lived responses that the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}
