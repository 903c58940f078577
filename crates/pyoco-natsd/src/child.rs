//! One nats-server process: spawn it so that it cannot outlive us, read its output, stop it.
//!
//! Everything here runs on the supervisor's own thread: `PR_SET_PDEATHSIG` (set up by
//! `pyoco-process`) fires when the thread that forked the child ends, so the thread matters (see
//! the crate docs, "Orphan prevention").

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::logs::{forward_lines, LogBuffer};
use crate::store_lock::StoreLock;
use crate::{NatsServerConfig, NatsdError};

/// How long to wait, after the process has exited, for the last lines of its output to arrive
/// (a grandchild that inherited the pipes could keep them open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// The ports one run uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) client: u16,
    pub(crate) monitor: Option<u16>,
}

/// A running (or just exited, not yet reaped) nats-server.
pub(crate) struct ServerProcess {
    child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
    /// Log position when it was spawned: its own lines are those after this mark.
    log_mark: u64,
}

impl ServerProcess {
    /// Spawn nats-server with JetStream on `ports`.
    pub(crate) fn spawn(
        config: &NatsServerConfig,
        ports: Ports,
        logs: &LogBuffer,
        store_lock: &StoreLock,
    ) -> Result<Self, NatsdError> {
        let mut cmd = Command::new(&config.binary);
        cmd.arg("-js")
            .arg("-a")
            .arg(&config.host)
            .arg("-p")
            .arg(ports.client.to_string())
            .arg("-sd")
            .arg(&config.store_dir)
            .arg("--server_name")
            .arg(&config.server_name)
            // Our tracing subscriber and LogLine::at carry the time.
            .arg("--logtime=false");
        if let Some(monitor) = ports.monitor {
            cmd.arg("-m").arg(monitor.to_string());
        }
        cmd.args(&config.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping a ServerProcess anywhere (a cancelled startup, a panic) kills the child.
            .kill_on_drop(true);
        // Own process group (a terminal's Ctrl-C reaches only our process, which then stops
        // nats-server last, in order; `stop` signals the whole group), killed with the
        // supervisor thread (PR_SET_PDEATHSIG), and the store-dir lock kept open in it, so a
        // server that outlives us keeps its store dir locked (see `store_lock`).
        #[cfg(unix)]
        pyoco_process::ChildSetup::new()
            .inherit_fd(store_lock.raw_fd())
            .apply(cmd.as_std_mut());

        let log_mark = logs.mark();
        let mut child = cmd.spawn().map_err(|source| NatsdError::Spawn {
            binary: config.binary.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        store_lock.record(Some(pid));
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward_lines(out, pid, logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward_lines(err, pid, logs.clone())));
        }
        tracing::debug!(pid, port = ports.client, binary = %config.binary.display(), "spawned nats-server");
        Ok(ServerProcess {
            child,
            pid,
            readers,
            log_mark,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log_mark(&self) -> u64 {
        self.log_mark
    }

    /// Wait until the process exits (and is reaped), then for the rest of its output.
    /// Cancel-safe: calling it again after cancellation picks up where it stopped.
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        let status = loop {
            match self.child.wait().await {
                Ok(status) => break status,
                // Only fails if the child was already reaped elsewhere or waitpid failed: retry
                // after a pause instead of spinning.
                Err(e) => {
                    tracing::warn!(pid = self.pid, "waiting for nats-server failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.drain_output().await;
        status
    }

    async fn drain_output(&mut self) {
        while let Some(reader) = self.readers.last_mut() {
            if tokio::time::timeout(OUTPUT_DRAIN, &mut *reader)
                .await
                .is_err()
            {
                reader.abort();
            }
            self.readers.pop();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
    pub(crate) async fn stop(&mut self, grace: Duration) -> ExitStatus {
        if self.terminate() {
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                if let Ok(status) = status {
                    self.drain_output().await;
                    return status;
                }
            } else {
                tracing::warn!(
                    pid = self.pid,
                    "nats-server did not stop within {grace:?} of SIGTERM; killing it"
                );
            }
        }
        self.kill().await
    }

    /// SIGKILL and reap.
    pub(crate) async fn kill(&mut self) -> ExitStatus {
        self.signal_group(GroupSignal::Kill);
        // Fails only if it already exited; `wait` then returns that status.
        let _ = self.child.start_kill();
        self.wait().await
    }

    /// Ask the process to shut down. `false` if that is not possible (already reaped, or no
    /// SIGTERM on this OS).
    fn terminate(&mut self) -> bool {
        self.signal_group(GroupSignal::Term)
    }

    /// Signal the child's process group (it leads its own, see `spawn`), so that a wrapper
    /// script that runs nats-server without `exec` is no obstacle. `id()` is `None` once the
    /// child has been reaped, so neither the pid nor the group id can have been reused.
    #[cfg(unix)]
    fn signal_group(&mut self, signal: GroupSignal) -> bool {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let signal = match signal {
            GroupSignal::Term => Signal::SIGTERM,
            GroupSignal::Kill => Signal::SIGKILL,
        };
        match self.child.id() {
            Some(pid) => killpg(Pid::from_raw(pid as i32), signal).is_ok(),
            None => false,
        }
    }

    #[cfg(not(unix))]
    fn signal_group(&mut self, _signal: GroupSignal) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy)]
enum GroupSignal {
    Term,
    Kill,
}
