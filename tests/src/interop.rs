//! The real Python pyoco-server 0.5.1 (from [`interop_venv`]) as processes beside ours on one
//! NATS: its gateway, its worker and its client CLI.
//!
//! Each long-running process gets its own process group and is killed with it when dropped,
//! so a failing test leaves no uvicorn or worker behind. The test's own `PYOCO_*` environment
//! is not passed on and `.env` files are not read: the processes see only what the test sets.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};

use crate::interop_venv;

/// `<interop venv>/bin/<program>` (`pyoco-server`, `pyoco-worker`, `pyoco-client`, …).
pub fn interop_bin(program: &str) -> PathBuf {
    interop_venv().join("bin").join(program)
}

/// A command for `program` of the interop venv: no inherited `PYOCO_*`, no `.env`.
fn interop_command(program: &str) -> Command {
    clean_command(&interop_bin(program))
}

/// A command for the executable `path`: no inherited `PYOCO_*`, no `.env`.
fn clean_command(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PYOCO_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("PYOCO_LOAD_DOTENV", "0")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// A long-running Python pyoco-server process, killed (with its process group) on drop.
pub struct PyocoProcess {
    label: String,
    child: Child,
    log: PathBuf,
}

impl PyocoProcess {
    /// Start `program args` from the interop venv in `cwd` with `PYOCO_NATS_URL=nats_url`
    /// and `env`; stdout and stderr go to `<cwd>/<label>.log`.
    pub fn spawn(
        label: &str,
        program: &str,
        args: &[&str],
        nats_url: &str,
        cwd: &Path,
        env: &[(&str, &OsStr)],
    ) -> PyocoProcess {
        Self::spawn_executable(label, &interop_bin(program), args, nats_url, cwd, env)
    }

    /// Like [`PyocoProcess::spawn`] for any executable (`program` is a path).
    pub fn spawn_executable(
        label: &str,
        program: &Path,
        args: &[&str],
        nats_url: &str,
        cwd: &Path,
        env: &[(&str, &OsStr)],
    ) -> PyocoProcess {
        std::fs::create_dir_all(cwd).unwrap_or_else(|e| panic!("creating {}: {e}", cwd.display()));
        let log = cwd.join(format!("{label}.log"));
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        let mut cmd = clean_command(program);
        cmd.args(args)
            .current_dir(cwd)
            .env("PYOCO_NATS_URL", nats_url)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Own process group (killed as a group on drop), and killed with the test process.
        pyoco_process::tie_to_parent(&mut cmd);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        PyocoProcess {
            label: label.to_string(),
            child,
            log,
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panic with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its output:\n{}",
                self.label,
                self.log()
            );
        }
    }
}

impl Drop for PyocoProcess {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The Python 0.5.1 HTTP gateway (`pyoco-server up`), listening on 127.0.0.1.
pub struct PythonGateway {
    pub process: PyocoProcess,
    base_url: String,
}

impl PythonGateway {
    /// Start it on a free port against `nats_url` and wait until `/health` answers.
    pub async fn start(nats_url: &str, cwd: &Path) -> PythonGateway {
        Self::start_with_env(nats_url, cwd, &[]).await
    }

    /// [`PythonGateway::start`] with more environment (`PYOCO_HTTP_AUTH_MODE`, …).
    pub async fn start_with_env(
        nats_url: &str,
        cwd: &Path,
        env: &[(&str, &OsStr)],
    ) -> PythonGateway {
        let port = crate::free_port().to_string();
        let mut process = PyocoProcess::spawn(
            "py-gateway",
            "pyoco-server",
            &[
                "up",
                "--nats-url",
                nats_url,
                "--host",
                "127.0.0.1",
                "--port",
                &port,
            ],
            nats_url,
            cwd,
            env,
        );
        let base_url = format!("http://127.0.0.1:{port}");
        let health = format!("{base_url}/health");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            process.assert_running();
            if let Ok(r) = http.get(&health).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Python gateway did not answer /health within 30 s; its output:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        PythonGateway { process, base_url }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// The Python 0.5.1 worker (`pyoco-worker --nats-url … --tags … --worker-id …`) with
/// `PYTHONPATH=pythonpath`, working in `cwd` (where pyoco creates `./artifacts`).
pub fn python_worker(
    nats_url: &str,
    worker_id: &str,
    tags: &str,
    pythonpath: &Path,
    cwd: &Path,
) -> PyocoProcess {
    PyocoProcess::spawn(
        &format!("py-worker-{worker_id}"),
        "pyoco-worker",
        &[
            "--nats-url",
            nats_url,
            "--tags",
            tags,
            "--worker-id",
            worker_id,
        ],
        nats_url,
        cwd,
        &[("PYTHONPATH", pythonpath.as_os_str())],
    )
}

/// The Python 0.5.1 worker CLI (`pyoco_server.worker_cli`) run by the interpreter `python`
/// with `args` (`--nats-url nats_url` comes first), working in `cwd`; output in
/// `<cwd>/<label>.log`. `python` is usually a [`crate::ThrowawayVenv`] on top of the interop
/// venv, so what the worker's wheel sync `pip install`s (into `sys.executable`) stays out of
/// the interop venv.
pub fn python_worker_with_python(
    python: &Path,
    label: &str,
    nats_url: &str,
    args: &[&str],
    cwd: &Path,
) -> PyocoProcess {
    let mut all = vec![
        "-c",
        "import sys; from pyoco_server.worker_cli import main; sys.exit(main())",
        "--nats-url",
        nats_url,
    ];
    all.extend_from_slice(args);
    PyocoProcess::spawn_executable(label, python, &all, nats_url, cwd, &[])
}

/// What one `pyoco-client` invocation did.
#[derive(Debug)]
pub struct ClientOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientOutput {
    /// Stdout as JSON, asserting exit code 0.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, Some(0), "pyoco-client failed: {self:?}");
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("pyoco-client printed no JSON ({e}): {self:?}"))
    }
}

/// Run the Python 0.5.1 client: `pyoco-client --server <server> <args…>` in `cwd`.
pub async fn pyoco_client(server: &str, args: &[&str], cwd: &Path) -> ClientOutput {
    let std_cmd = {
        let mut cmd = interop_command("pyoco-client");
        cmd.arg("--server").arg(server).args(args).current_dir(cwd);
        cmd
    };
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(std_cmd)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("pyoco-client {args:?} did not finish within 60 s"))
    .unwrap_or_else(|e| panic!("running pyoco-client {args:?}: {e}"));
    ClientOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Run Python's `pyoco-server-admin --nats-url nats_url args` with `env` and return its
/// parsed JSON output and exit code (asserting it printed one JSON line).
pub fn python_admin(
    nats_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (serde_json::Value, i32) {
    let mut cmd = interop_command("pyoco-server-admin");
    cmd.arg("--nats-url").arg(nats_url).args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("running Python's pyoco-server-admin");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "Python's pyoco-server-admin {args:?} printed no JSON ({e}): {stdout:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, out.status.code().unwrap_or(-1))
}
