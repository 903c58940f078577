//! The test kit every integration test uses, and (under `tests/e2e/`) the end-to-end tests.
//!
//! What it gives a test:
//! - [`TestNats::start`]: a real nats-server with JetStream, started through `pyoco-natsd` on a
//!   free port with a temporary store, stopped (and its store removed) when dropped. Tests never
//!   touch the machine's own NATS on 4222.
//! - [`python`]: the Python interpreter of the venv that has the pinned pyoco installed,
//!   created once by `scripts/setup.sh` and cached between runs.
//! - [`interop_venv`]: the venv with the real `pyoco-server==0.5.1`, for interop tests.
//!
//! With the `app` feature (on for this package's own tests and for the gateway's and the CLI's
//! API tests):
//! - [`TestApp::start`]: the whole application for one test — a fresh nats-server, the
//!   appliance in-process with its gateway on a free port and an optional local worker, an HTTP
//!   client, and the test's own store connection; [`TestApp::gateway_only`] and
//!   [`TestApp::start_with`] (settings adjusted) for the gateway's and the CLI's tests;
//! - [`Gateway`]: our gateway alone in front of a store the test made (NATS not there yet, two
//!   gateways on one NATS), and the HTTP helpers ([`status_json`], [`submit_yaml`],
//!   [`wait_status`], …) that also talk to the Python gateway;
//! - [`PythonGateway`], [`python_worker`], [`pyoco_client`]: the real Python 0.5.1 processes
//!   beside ours on one NATS, killed with their process group when dropped;
//! - [`task_wheel`], [`ThrowawayVenv`], [`upload_wheel`]: task wheels built in the test and a
//!   venv for a syncing worker to install them into;
//! - [`UpServer`]: the built `pyoco-server up --with-nats` binary as a user starts it, in its
//!   own home, project folder and data dir.
//!
//! Always: [`TestCluster`] (a JetStream cluster of supervised nats-servers with routes, a node
//! killed with -9 comes back), [`workspace_binary`] (the built `pyoco-client`/`pyoco-server` binaries),
//! [`hold_port`] (keep a default port taken during a test), [`procfs`] (which processes are
//! alive, their children and memory) and the merge-key bombs [`nested_merge_defaults`] and
//! [`wide_merge_defaults`].
//!
//! Environment it honours (set by `scripts/test.sh`): `PYOCO_NATS_SERVER_BIN`,
//! `PYOCO_TEST_PYTHON`, `PYOCO_TEST_INTEROP_VENV`, `PYOCO_DATA_DIR`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use pyoco_natsd::{NatsServerConfig, NatsSupervisor, RestartPolicy};

#[cfg(feature = "app")]
mod app;
mod cluster;
#[cfg(feature = "desktop")]
mod desktop;
#[cfg(feature = "app")]
mod gateway;
mod hostile_yaml;
#[cfg(feature = "app")]
mod interop;
pub mod procfs;
pub mod secure_nats;
#[cfg(feature = "app")]
mod up;
#[cfg(feature = "wheels")]
mod wheels;

#[cfg(feature = "app")]
pub use app::{free_port, write_task_module, AppOptions, TestApp, TASKS_MODULE, TASKS_PY};
pub use cluster::{ClusterNode, TestCluster};
#[cfg(feature = "desktop")]
pub use desktop::{desktop_options, start_desktop};
#[cfg(feature = "app")]
pub use gateway::{
    post_yaml, post_yaml_form, settings_for, status_json, submit_yaml, wait_status, Gateway,
};
pub use hostile_yaml::{nested_merge_defaults, wide_merge_defaults};
#[cfg(feature = "app")]
pub use interop::{
    interop_bin, pyoco_client, python_admin, python_worker, python_worker_with_python,
    ClientOutput, PyocoProcess, PythonGateway,
};
#[cfg(feature = "app")]
pub use up::{pyoco_server_binary, UpServer};
#[cfg(feature = "app")]
pub use wheels::upload_wheel;
#[cfg(feature = "wheels")]
pub use wheels::{
    task_wheel, task_wheel_name, task_wheel_with_metadata, write_task_wheel, zip_archive,
    ThrowawayVenv,
};

/// The repository root (the workspace).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Route `tracing` output to the test harness's captured output, once per test binary.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,async_nats=warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

fn data_dir() -> PathBuf {
    pyoco_config::AppDirs::new(std::env::var_os("PYOCO_DATA_DIR").as_deref().map(Path::new))
        .expect("a home directory for the app data dir")
        .data_dir()
        .to_path_buf()
}

/// The nats-server binary tests use: `PYOCO_NATS_SERVER_BIN`, else the one `scripts/setup.sh`
/// installed in the data dir, else `PATH`.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let explicit = std::env::var_os("PYOCO_NATS_SERVER_BIN").map(PathBuf::from);
        let data = data_dir();
        if explicit.is_none() && !data.join("bin").join("nats-server").exists() {
            run_setup(&[]);
        }
        pyoco_natsd::find_nats_server(explicit.as_deref(), Some(&data))
            .unwrap_or_else(|e| panic!("no nats-server for tests: {e}"))
    })
    .clone()
}

/// A real nats-server for one test.
pub struct TestNats {
    supervisor: Option<NatsSupervisor>,
    port: u16,
    store_dir: PathBuf,
    _store: tempfile::TempDir,
}

impl TestNats {
    /// Start a nats-server with JetStream on a free loopback port and a temporary store.
    pub async fn start() -> TestNats {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestNats::start`], letting the test adjust the config first.
    pub async fn start_with(adjust: impl FnOnce(&mut NatsServerConfig)) -> TestNats {
        init_tracing();
        let store = tempfile::Builder::new()
            .prefix("pyoco-test-nats-")
            .tempdir()
            .expect("temp dir");
        let mut config = NatsServerConfig::new(nats_server_bin(), store.path().join("js"));
        config.port = None;
        config.restart = RestartPolicy::default();
        config.startup_timeout = Duration::from_secs(20);
        config.stop_grace = Duration::from_secs(3);
        adjust(&mut config);
        let store_dir = config.store_dir.clone();
        let supervisor = NatsSupervisor::start(config)
            .await
            .unwrap_or_else(|e| panic!("starting the test nats-server failed: {e}"));
        TestNats {
            port: supervisor.port(),
            store_dir,
            supervisor: Some(supervisor),
            _store: store,
        }
    }

    pub fn url(&self) -> String {
        self.supervisor().client_url().to_string()
    }

    pub fn supervisor(&self) -> &NatsSupervisor {
        self.supervisor.as_ref().expect("running")
    }

    /// The client port (still known after [`TestNats::stop`], to start a server on it again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept after [`TestNats::stop`] until the value is
    /// dropped, so a server started with it finds every stream and bucket again).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stop the server now (the store is kept until the value is dropped).
    pub async fn stop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.stop().await;
        }
    }
}

/// The Python interpreter with the pinned pyoco: `PYOCO_TEST_PYTHON`, else the data dir's
/// venv, created by `scripts/setup.sh` on first use.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("PYOCO_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = data_dir().join("venv");
        let py = venv.join("bin").join("python");
        if !set_up(&venv) {
            run_setup(&[]);
        }
        assert!(
            py.exists(),
            "scripts/setup.sh did not create {}",
            py.display()
        );
        py
    })
    .clone()
}

/// The venv with the real `pyoco-server==0.5.1` (its `bin/` has `pyoco-server`,
/// `pyoco-worker`, `pyoco-client`): `PYOCO_TEST_INTEROP_VENV`, else the data dir's, created by
/// `scripts/setup.sh --with-interop` on first use.
pub fn interop_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        if let Some(p) = std::env::var_os("PYOCO_TEST_INTEROP_VENV") {
            return PathBuf::from(p);
        }
        let venv = data_dir().join("venv-pyoco-server-0.5.1");
        if !set_up(&venv) {
            run_setup(&["--with-interop"]);
        }
        venv
    })
    .clone()
}

/// Whether `scripts/setup.sh` finished `venv`: it writes the venv's stamp last, so a venv that
/// another test process is still installing does not count (its `bin/python` exists early).
fn set_up(venv: &Path) -> bool {
    venv.join(".pyoco-setup-stamp").is_file()
}

/// Run `scripts/setup.sh`, one at a time across the test threads of this binary. Across
/// processes (nextest runs each test in its own), setup.sh takes a lock on the data dir itself:
/// the first one installs, the others wait and then find everything in place.
fn run_setup(args: &[&str]) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts").join("setup.sh"))
        .args(args)
        .status()
        .expect("running scripts/setup.sh");
    assert!(
        status.success(),
        "scripts/setup.sh {args:?} failed: {status}"
    );
}

/// Poll `check` every 20 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A binary of this workspace built by cargo (`pyoco-server`, `pyoco-client`, …): beside the
/// running test's profile directory (`<target>/<profile>/deps/<test>` →
/// `<target>/<profile>/<name>`), else under `$CARGO_TARGET_DIR/debug` or
/// `<workspace>/target/debug`. Another package's binaries are not built for this package's
/// tests, so it may be missing (`cargo build -p pyoco-cli` builds them). Warns on stderr (once
/// per test process) when the binary is older than the sources under `crates/`.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(profile_dir.join(name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(workspace_root().join(target).join("debug").join(name));
    }
    candidates.push(workspace_root().join("target/debug").join(name));
    let found = candidates.into_iter().find(|c| c.is_file())?;
    let built = std::fs::metadata(&found).and_then(|m| m.modified()).ok();
    let sources = newest_source(&workspace_root().join("crates"));
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let (Some(built), Some(sources)) = (built, sources) {
        if sources > built {
            WARNED.call_once(|| {
                eprintln!(
                    "WARNING: {} is older than the sources under crates/; this test runs the old \
                     binary. Run `cargo build -p pyoco-cli` first.",
                    found.display()
                )
            });
        }
    }
    Some(found)
}

/// Newest modification time of the `.rs`/`.py` files under `dir`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs" || e == "py") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(time);
    }
    newest
}

/// Hold `127.0.0.1:port` for the test: bind it, or find it taken already (4222 is by the
/// machine's own NATS on some machines). Tests holding default ports run one at a time
/// (`.config/nextest.toml`, test names containing `taken_default_ports`), so a port found taken
/// stays taken.
pub fn hold_port(port: u16) -> Option<std::net::TcpListener> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => Some(l),
        Err(_) => {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                "127.0.0.1:{port} can neither be bound nor connected to"
            );
            None
        }
    }
}
