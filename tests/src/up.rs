//! The real `pyoco-server up --with-nats` binary, started the way the README says: in the
//! directory that holds the user's `flow.yaml` and task module, with its own home and data
//! dir, its managed nats-server on any free port and the gateway on a free port.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};

use crate::{free_port, nats_server_bin, python, workspace_binary};

/// The built `pyoco-server` binary, or `None` after printing why `test` is skipped.
pub fn pyoco_server_binary(test: &str) -> Option<PathBuf> {
    let binary = workspace_binary("pyoco-server");
    if binary.is_none() {
        eprintln!(
            "\n\n*** SKIPPED {test}: no pyoco-server binary under the target dir. Run `cargo \
             build -p pyoco-cli` first. ***\n"
        );
    }
    binary
}

/// A running `pyoco-server up --with-nats`; its process group is killed when dropped.
pub struct UpServer {
    child: Child,
    base_url: String,
    log: PathBuf,
    tmp: tempfile::TempDir,
}

impl UpServer {
    /// Start `binary up --with-nats` in `<tmp>/project`, after `prepare` has put the user's
    /// files there, with `HOME=<tmp>`, `PYOCO_DATA_DIR=<tmp>/data`, no `.env`, text logs to
    /// `<tmp>/pyoco-server.log`, the test kit's nats-server and Python, then `env` (which
    /// overrides any of them). Returns once the gateway answers from NATS (30 s at most).
    pub async fn start(
        binary: &Path,
        prefix: &str,
        prepare: impl FnOnce(&Path),
        env: &[(&str, &OsStr)],
    ) -> UpServer {
        let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let launch = tmp.path().join("project");
        std::fs::create_dir_all(&launch).unwrap();
        prepare(&launch);
        let log = tmp.path().join("pyoco-server.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let mut cmd = Command::new(binary);
        // Own process group (killed as a group on drop), and killed with the test process.
        pyoco_process::tie_to_parent(&mut cmd);
        cmd.args(["up", "--with-nats", "--nats-client-port", "0"])
            .args(["--port", &port.to_string()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.path())
            .env("PYOCO_DATA_DIR", tmp.path().join("data"))
            .env("PYOCO_LOAD_DOTENV", "0")
            .env("PYOCO_LOG_FORMAT", "text")
            .env("PYOCO_NATS_SERVER_BIN", nats_server_bin())
            .env("PYOCO_PYTHON", python());
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd
            .current_dir(&launch)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = UpServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            tmp,
        };
        server.wait_ready(Duration::from_secs(30)).await;
        server
    }

    /// Wait until the gateway answers from NATS: `/health` answers before its NATS connection
    /// is ready; an unknown run's 404 `run not found` comes from NATS.
    async fn wait_ready(&mut self, timeout: Duration) {
        let http = reqwest::Client::new();
        let probe = self.url("/runs/00000000-0000-4000-8000-000000000000");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                panic!("pyoco-server exited ({status}):\n{}", self.output());
            }
            if let Ok(response) = http.get(&probe).send().await {
                if response.status() == 404 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pyoco-server's gateway did not answer from NATS within {timeout:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The gateway's `host:port`.
    pub fn addr(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// The `pyoco-server` process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The launch directory (the user's project folder, where the task modules are).
    pub fn launch_dir(&self) -> PathBuf {
        self.tmp.path().join("project")
    }

    /// The data dir (`PYOCO_DATA_DIR`).
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The temporary directory holding the home, the project, the data dir and the log.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Everything the binary printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status once the binary has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Wait for the binary to exit; panics with its output after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pyoco-server still running after {timeout:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for UpServer {
    fn drop(&mut self) {
        // Also after the binary itself exited: whatever it left in its group goes too.
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
