//! How to run the managed nats-server: where, on which ports, how long to wait, how to restart.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`NatsSupervisor::start`](crate::NatsSupervisor::start) needs.
///
/// Build it with [`NatsServerConfig::new`] and adjust the public fields; the defaults suit the
/// desktop app and the CLI's `up --with-nats`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsServerConfig {
    /// The nats-server binary (see [`find_nats_server`](crate::find_nats_server)).
    pub binary: PathBuf,
    /// Listen address for clients and monitoring. Default `127.0.0.1`: the appliance's server is
    /// for this machine only.
    pub host: String,
    /// Client port. `None` or `Some(0)`: pick a free port. `Some(p)`: use `p`, and fail with
    /// [`PortInUse`](crate::NatsdError::PortInUse) if it is taken.
    pub port: Option<u16>,
    /// JetStream store directory (`-sd`). Created if missing; must be writable. Restarts reuse it,
    /// so persisted streams survive a crash of the server.
    pub store_dir: PathBuf,
    /// Monitoring HTTP port (`-m`). `None`: no monitoring endpoint. `Some(0)`: a free port.
    pub monitor_port: Option<u16>,
    /// Server name (`--server_name`). Kept stable across restarts. Default `pyoco-natsd`.
    pub server_name: String,
    /// How long to wait for JetStream to answer after each start or restart. Default 10 s.
    pub startup_timeout: Duration,
    /// How long `stop` waits after SIGTERM before SIGKILL. Default 5 s.
    pub stop_grace: Duration,
    /// What to do when the server dies on its own.
    pub restart: RestartPolicy,
    /// Extra command-line arguments, appended after ours (e.g. `-c server.conf`, `-D`).
    pub extra_args: Vec<OsString>,
    /// How many log lines [`recent_logs`](crate::NatsSupervisor::recent_logs) keeps. Default 1000.
    pub log_capacity: usize,
}

impl NatsServerConfig {
    /// A config with the defaults: 127.0.0.1, any free client port, no monitoring port.
    pub fn new(binary: impl Into<PathBuf>, store_dir: impl Into<PathBuf>) -> Self {
        NatsServerConfig {
            binary: binary.into(),
            host: "127.0.0.1".to_owned(),
            port: None,
            store_dir: store_dir.into(),
            monitor_port: None,
            server_name: "pyoco-natsd".to_owned(),
            startup_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            restart: RestartPolicy::default(),
            extra_args: Vec::new(),
            log_capacity: 1000,
        }
    }
}

/// Restart with exponential backoff, a bounded number of times in a row.
///
/// Attempt `n` (1-based) waits `initial_backoff * 2^(n-1)`, capped at `max_backoff`. After
/// `max_attempts` failed attempts in a row the supervisor gives up (state `Failed`). A server
/// that then ran for `reset_after` counts as healthy: its next crash starts again at attempt 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// Restart attempts in a row before giving up; 0 = never restart. Default 5.
    pub max_attempts: u32,
    /// Wait before the first attempt. Default 250 ms.
    pub initial_backoff: Duration,
    /// Upper bound of the wait. Default 5 s.
    pub max_backoff: Duration,
    /// Healthy running time after which the attempt counter resets. Default 60 s.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Never restart: the first unexpected exit is final.
    pub fn never() -> Self {
        RestartPolicy {
            max_attempts: 0,
            ..RestartPolicy::default()
        }
    }

    /// The default policy with other limits.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        RestartPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
            ..RestartPolicy::default()
        }
    }

    /// The wait before restart attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250ms_and_caps_at_5s() {
        let p = RestartPolicy::default();
        let ms = |a| p.backoff(a).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [250, 500, 1000, 2000, 4000, 5000]
        );
        assert_eq!(p.backoff(1000), Duration::from_secs(5));
    }
}
