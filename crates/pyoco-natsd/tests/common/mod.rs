//! Shared helpers for the integration tests: which binary, a fresh config, process checks.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyoco_natsd::{find_nats_server, NatsServerConfig};

/// The nats-server under test: PYOCO_NATS_SERVER_BIN, else the pinned one in /tmp/nats-bin, else
/// whatever discovery finds.
pub fn nats_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PYOCO_NATS_SERVER_BIN") {
        return bin.into();
    }
    let pinned = Path::new("/tmp/nats-bin/nats-server");
    if pinned.exists() {
        return pinned.to_owned();
    }
    find_nats_server(None, None).expect("these tests need a nats-server binary")
}

/// A config with a fresh store dir under `dir`, any free port, and short timings.
pub fn test_config(dir: &Path) -> NatsServerConfig {
    init_tracing();
    let mut config = NatsServerConfig::new(nats_bin(), dir.join("store"));
    config.startup_timeout = Duration::from_secs(10);
    config.stop_grace = Duration::from_secs(5);
    config
}

/// Show the crate's and nats-server's logs with RUST_LOG=debug (captured unless --nocapture).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Whether `pid` is a live process (a zombie waiting for init to reap it counts as dead).
#[cfg(target_os = "linux")]
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "123 (nats-server) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Whether `pid` is a live process.
#[cfg(not(target_os = "linux"))]
pub fn is_alive(pid: u32) -> bool {
    pid_exists(pid)
}

/// Whether `pid` exists at all (not even as a zombie): `kill(pid, 0)` fails.
pub fn pid_exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("could not send {signal} to {pid}: {e}"));
}

/// Poll `check` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `fut` with a timeout that fails the test with `what`.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Write an executable shell script without our process ever holding a write descriptor to it
/// (a descriptor inherited by a process another test forks at that moment would make exec fail
/// with ETXTBSY): `sh` writes it.
pub fn write_script(path: &Path, body: &str) {
    use std::io::Write;
    let mut sh = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run sh");
    sh.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    assert!(
        sh.wait().unwrap().success(),
        "writing {} failed",
        path.display()
    );
}
