//! The supervisor: a handle for callers, and the loop that owns the child on its own thread.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::child::{Ports, ServerProcess};
use crate::logs::{parse_log_line, LogBuffer, LAST_LOG_LINES};
use crate::ports::{pick_free_port, port_is_free, url_host};
use crate::ready::wait_until_jetstream_answers;
use crate::store_lock::StoreLock;
use crate::{LogLine, NatsServerConfig, NatsdError};

/// How many times a free port is chosen anew when another process took it first.
const FREE_PORT_TRIES: u32 = 3;

/// How long `Drop` waits for the supervisor thread to have killed and reaped the child.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// Where the managed nats-server is in its life. Watch it with [`NatsSupervisor::state`].
#[derive(Debug, Clone)]
pub enum NatsState {
    /// Spawned for the first time, JetStream not answering yet.
    Starting,
    /// JetStream answers.
    Running {
        /// The server's process id.
        pid: u32,
        /// When it became ready.
        since: SystemTime,
    },
    /// It died unexpectedly (after it started, or killed by a signal while starting); restart
    /// attempt `attempt` starts after `next_in` (this state lasts through the backoff and the new
    /// process's startup).
    Restarting {
        /// 1-based attempt number, reset after a healthy run.
        attempt: u32,
        /// How the previous process (or attempt) ended, e.g. `pid 123: signal: 9 (SIGKILL)`.
        last_exit: String,
        /// The backoff before this attempt.
        next_in: Duration,
    },
    /// Stopped on request (or the handle was dropped).
    Stopped,
    /// The restart policy gave up; the error carries the last log lines.
    Failed {
        /// Why (a [`NatsdError::RestartsExhausted`]).
        error: Arc<NatsdError>,
    },
}

impl NatsState {
    /// Whether the supervisor is done (stopped or failed) and will not start the server again.
    pub fn is_final(&self) -> bool {
        matches!(self, NatsState::Stopped | NatsState::Failed { .. })
    }
}

/// A running, supervised nats-server with JetStream.
///
/// Start it with [`NatsSupervisor::start`], which returns once JetStream answers. Stop it with
/// [`stop`](Self::stop) (or [`shutdown`](Self::shutdown) from a shared reference); dropping the
/// handle kills the server too. See the crate docs for the guarantees.
pub struct NatsSupervisor {
    client_url: String,
    host: String,
    port: u16,
    monitor_port: Option<u16>,
    store_dir: PathBuf,
    stop_grace: Duration,
    logs: LogBuffer,
    state: watch::Receiver<NatsState>,
    commands: mpsc::UnboundedSender<Command>,
    /// Disconnected when the supervisor thread has ended (its sender is dropped last).
    finished: Mutex<std_mpsc::Receiver<()>>,
}

impl std::fmt::Debug for NatsSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSupervisor")
            .field("client_url", &self.client_url)
            .field("store_dir", &self.store_dir)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Command {
    /// SIGTERM, wait up to the grace, SIGKILL.
    Stop { grace: Duration },
    /// SIGKILL now (the handle is being dropped).
    Kill,
}

impl NatsSupervisor {
    /// Start nats-server and return once JetStream answers.
    ///
    /// Checks first that the store dir is writable and that an explicitly requested port is
    /// free; then spawns the server (retrying with another free port if an automatically chosen
    /// one was taken meanwhile, and restarting it per the restart policy if it is killed by a
    /// signal before it is ready) and waits up to `startup_timeout` for `$JS.API.INFO` to answer.
    /// From then on the server is restarted on the same port and store dir if it dies.
    pub async fn start(mut config: NatsServerConfig) -> Result<Self, NatsdError> {
        config.store_dir = std::path::absolute(&config.store_dir).map_err(|source| {
            NatsdError::StoreDirNotWritable {
                path: config.store_dir.clone(),
                source,
            }
        })?;
        ensure_writable_dir(&config.store_dir)?;
        let store_lock = StoreLock::acquire(&config.store_dir)?;
        if let Some(port) = config.port.filter(|&p| p != 0) {
            if !port_is_free(&config.host, port)? {
                return Err(NatsdError::PortInUse {
                    host: config.host.clone(),
                    port,
                });
            }
        }
        if let Some(port) = config.monitor_port.filter(|&p| p != 0) {
            if !port_is_free(&config.host, port)? {
                return Err(NatsdError::MonitorPortInUse {
                    host: config.host.clone(),
                    port,
                });
            }
        }

        let logs = LogBuffer::new(config.log_capacity);
        let (state_tx, state_rx) = watch::channel(NatsState::Starting);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (finished_tx, finished_rx) = std_mpsc::channel::<()>();

        let host = config.host.clone();
        let store_dir = config.store_dir.clone();
        let stop_grace = config.stop_grace;
        let thread_logs = logs.clone();
        // The dedicated thread is the point: see "Orphan prevention" in the crate docs.
        std::thread::Builder::new()
            .name("pyoco-natsd".to_owned())
            .spawn(move || {
                supervision_thread(
                    config,
                    store_lock,
                    thread_logs,
                    state_tx,
                    commands_rx,
                    ready_tx,
                    finished_tx,
                )
            })
            .map_err(|e| NatsdError::io("could not start the nats-server supervisor thread", e))?;

        let ports = match ready_rx.await {
            Ok(Ok(ports)) => ports,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(NatsdError::SupervisorGone),
        };
        Ok(NatsSupervisor {
            client_url: format!("nats://{}:{}", url_host(&host), ports.client),
            host,
            port: ports.client,
            monitor_port: ports.monitor,
            store_dir,
            stop_grace,
            logs,
            state: state_rx,
            commands: commands_tx,
            finished: Mutex::new(finished_rx),
        })
    }

    /// The URL clients connect to, e.g. `nats://127.0.0.1:4222`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The listen host as configured.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client port (the chosen one if the config asked for any free port). It stays the same
    /// across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring port, if monitoring is on.
    pub fn monitor_port(&self) -> Option<u16> {
        self.monitor_port
    }

    /// The monitoring endpoint, e.g. `http://127.0.0.1:8222`, if monitoring is on.
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor_port
            .map(|p| format!("http://{}:{p}", url_host(&self.host)))
    }

    /// The JetStream store directory (absolute).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's process id while it is running; `None` while restarting or after a stop.
    pub fn pid(&self) -> Option<u32> {
        match &*self.state.borrow() {
            NatsState::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// A receiver of state changes (`changed()`, `wait_for(..)`, `borrow()`).
    pub fn state(&self) -> watch::Receiver<NatsState> {
        self.state.clone()
    }

    /// The state now.
    pub fn current_state(&self) -> NatsState {
        self.state.borrow().clone()
    }

    /// The last lines the server printed (across restarts), oldest first.
    pub fn recent_logs(&self) -> Vec<LogLine> {
        self.logs.all()
    }

    /// Stop the server: SIGTERM, wait up to the configured grace, then SIGKILL; returns once it
    /// has been reaped. Works from a shared reference (e.g. an `Arc` held by the appliance);
    /// calling it again, or after the supervisor failed, returns at once.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(self.stop_grace).await;
    }

    /// [`shutdown`](Self::shutdown) with another grace period.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        let _ = self.commands.send(Command::Stop { grace });
        let mut state = self.state.clone();
        // Err means the supervisor is gone, which is what we wait for anyway.
        let _ = state.wait_for(NatsState::is_final).await;
    }

    /// Stop the server and consume the handle. See [`shutdown`](Self::shutdown).
    pub async fn stop(self) {
        self.shutdown().await;
    }
}

impl Drop for NatsSupervisor {
    /// Kill the server (SIGKILL) if it is still supervised, and wait briefly (at most 2 s,
    /// normally a few milliseconds) until it has been reaped, so that a dropped handle means a
    /// dead server. The kill is done by the supervisor thread, which owns the child: signalling a
    /// pid from here could hit an unrelated process that reused it.
    fn drop(&mut self) {
        if self.commands.send(Command::Kill).is_err() {
            return; // the supervisor has already finished
        }
        if let Ok(finished) = self.finished.lock() {
            let _ = finished.recv_timeout(DROP_WAIT);
        }
    }
}

/// What a start attempt came to.
enum Started {
    Ready(ServerProcess),
    Failed(NatsdError),
    /// A stop or kill arrived meanwhile; the process has been dealt with.
    Interrupted,
}

/// The state the supervisor thread owns.
struct Supervision<'a> {
    config: NatsServerConfig,
    /// Held until the supervision ends (released just before the final state is reported, so a
    /// caller that stopped us can start again on the same store dir at once); every child
    /// inherits it.
    store_lock: Option<StoreLock>,
    logs: LogBuffer,
    state: &'a watch::Sender<NatsState>,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// The body of the supervisor thread: a single-threaded runtime that lives exactly as long as the
/// supervision. Every nats-server is forked from this thread, so `PR_SET_PDEATHSIG` fires only
/// when this thread (and the children with it) is done, or when the whole process dies.
fn supervision_thread(
    config: NatsServerConfig,
    store_lock: StoreLock,
    logs: LogBuffer,
    state: watch::Sender<NatsState>,
    commands: mpsc::UnboundedReceiver<Command>,
    ready: oneshot::Sender<Result<Ports, NatsdError>>,
    finished: std_mpsc::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            drop(store_lock);
            let _ = ready.send(Err(NatsdError::io(
                "could not start the nats-server supervisor's runtime",
                e,
            )));
            return;
        }
    };
    let supervision = Supervision {
        config,
        store_lock: Some(store_lock),
        logs,
        state: &state,
        commands,
    };
    // A panic drops the child (kill_on_drop) while unwinding, and on Linux the end of this thread
    // kills it anyway; what is left to do is to tell the handle instead of claiming "Running".
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(supervision.run(ready));
    }));
    drop(runtime);
    if outcome.is_err() {
        state.send_replace(NatsState::Failed {
            error: Arc::new(NatsdError::SupervisorGone),
        });
    }
    drop(finished);
}

/// The next command; a closed channel (every handle gone, or `start` cancelled) means kill.
async fn next_command(commands: &mut mpsc::UnboundedReceiver<Command>) -> Command {
    commands.recv().await.unwrap_or(Command::Kill)
}

impl Supervision<'_> {
    fn set(&self, state: NatsState) {
        self.state.send_replace(state);
    }

    /// Report a final state, after releasing the store dir (no child is left at this point).
    fn end(&mut self, state: NatsState) {
        self.store_lock = None;
        self.set(state);
    }

    async fn run(mut self, ready: oneshot::Sender<Result<Ports, NatsdError>>) {
        let (server, ports) = match self.first_start().await {
            Ok(Some(started)) => started,
            Ok(None) => return, // stopped before it was ready; `start` has been dropped
            Err(e) => {
                self.end(NatsState::Stopped);
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(ports)).is_err() {
            // `start` was cancelled just now; the closed command channel will stop it below.
            tracing::debug!("nats-server became ready after its start was abandoned");
        }
        self.supervise(server, ports).await;
    }

    /// Start the first server, choosing ports.
    ///
    /// A server that *exits* before JetStream answers (an exit code: a bad option, an unusable
    /// store dir, a port conflict) ends the start with [`NatsdError::ExitedDuringStartup`]:
    /// starting it again would fail the same way. One *killed by a signal* meanwhile (the OOM
    /// killer, a stray `kill`) did nothing wrong: it is restarted on the same ports as after a
    /// crash, with the restart policy's backoff and attempts, shown as
    /// [`NatsState::Restarting`].
    async fn first_start(&mut self) -> Result<Option<(ServerProcess, Ports)>, NatsdError> {
        let host = self.config.host.clone();
        let auto_client = self.config.port.is_none_or(|p| p == 0);
        let auto_monitor = self.config.monitor_port == Some(0);
        let policy = self.config.restart.clone();
        let mut tries = 0;
        let mut attempt: u32 = 0;
        let mut ports: Option<Ports> = None;
        loop {
            let current = match ports {
                Some(ports) => ports,
                None => {
                    tries += 1;
                    Ports {
                        client: match self.config.port {
                            Some(p) if p != 0 => p,
                            _ => pick_free_port(&host)?,
                        },
                        monitor: match self.config.monitor_port {
                            Some(0) => Some(pick_free_port(&host)?),
                            other => other,
                        },
                    }
                }
            };
            let error = match self.start_server(current, attempt == 0).await {
                Started::Ready(server) => return Ok(Some((server, current))),
                Started::Interrupted => return Ok(None),
                Started::Failed(error) => error,
            };
            if let NatsdError::ExitedDuringStartup { status, last_logs } = &error {
                if killed_by_signal(status) {
                    if attempt == policy.max_attempts {
                        return Err(if attempt == 0 {
                            error
                        } else {
                            NatsdError::RestartsExhausted {
                                attempts: attempt,
                                last_exit: short_reason(&error),
                                last_logs: last_logs.clone(),
                            }
                        });
                    }
                    attempt += 1;
                    let delay = policy.backoff(attempt);
                    tracing::warn!(
                        attempt,
                        "nats-server was killed during startup ({status}); restarting it in \
                         {delay:?}"
                    );
                    self.set(NatsState::Restarting {
                        attempt,
                        last_exit: short_reason(&error),
                        next_in: delay,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = next_command(&mut self.commands) => {
                            self.end(NatsState::Stopped);
                            return Ok(None);
                        }
                    }
                    // Same ports, as after a crash; a port taken meanwhile is handled below.
                    ports = Some(current);
                    continue;
                }
                let client_taken = mentions_address_in_use(last_logs, current.client);
                let monitor_taken = current
                    .monitor
                    .is_some_and(|p| mentions_address_in_use(last_logs, p));
                if client_taken && !auto_client {
                    return Err(NatsdError::PortInUse {
                        host,
                        port: current.client,
                    });
                }
                if monitor_taken && !auto_monitor {
                    return Err(NatsdError::MonitorPortInUse {
                        host,
                        port: current.monitor.unwrap_or_default(),
                    });
                }
                if (client_taken || monitor_taken) && tries < FREE_PORT_TRIES {
                    tracing::info!(
                        port = current.client,
                        "the free port chosen for nats-server was taken meanwhile; choosing another"
                    );
                    ports = None;
                    continue;
                }
            }
            return Err(error);
        }
    }

    /// Spawn a server on `ports` and wait until JetStream answers, it exits, the startup timeout
    /// expires, or a command arrives.
    async fn start_server(&mut self, ports: Ports, first: bool) -> Started {
        if first {
            self.set(NatsState::Starting);
        }
        let Some(store_lock) = &self.store_lock else {
            return Started::Failed(NatsdError::SupervisorGone);
        };
        let mut server = match ServerProcess::spawn(&self.config, ports, &self.logs, store_lock) {
            Ok(server) => server,
            Err(e) => return Started::Failed(e),
        };
        let url = format!("nats://{}:{}", url_host(&self.config.host), ports.client);
        let timeout = self.config.startup_timeout;
        let logs = self.logs.clone();
        let mark = server.log_mark();
        let is_ours = |server_id: &str| {
            server_id_in(&logs.since(mark, usize::MAX)).is_none_or(|ours| ours == server_id)
        };

        enum Race {
            Ready,
            TimedOut,
            Exited(ExitStatus),
            Command(Command),
        }
        let race = tokio::select! {
            ready = tokio::time::timeout(timeout, wait_until_jetstream_answers(&url, is_ours)) => {
                if ready.is_ok() { Race::Ready } else { Race::TimedOut }
            }
            status = server.wait() => Race::Exited(status),
            command = next_command(&mut self.commands) => Race::Command(command),
        };
        match race {
            Race::Ready => {
                // Before anyone learns that it started: `pid()` must answer from then on.
                self.set(NatsState::Running {
                    pid: server.pid(),
                    since: SystemTime::now(),
                });
                tracing::info!(
                    pid = server.pid(),
                    port = ports.client,
                    "nats-server is ready (JetStream answers)"
                );
                Started::Ready(server)
            }
            Race::TimedOut => {
                server.kill().await;
                Started::Failed(NatsdError::StartupTimeout {
                    after: timeout,
                    last_logs: self.logs.since(mark, LAST_LOG_LINES),
                })
            }
            Race::Exited(status) => Started::Failed(NatsdError::ExitedDuringStartup {
                status,
                last_logs: self.logs.since(mark, LAST_LOG_LINES),
            }),
            Race::Command(command) => {
                self.finish(server, command).await;
                Started::Interrupted
            }
        }
    }

    /// Watch the running server; restart it when it dies; stop it on command.
    async fn supervise(&mut self, mut server: ServerProcess, ports: Ports) {
        let policy = self.config.restart.clone();
        let mut attempt: u32 = 0;
        loop {
            let pid = server.pid();
            let running_since = Instant::now();

            let status = tokio::select! {
                status = server.wait() => status,
                command = next_command(&mut self.commands) => {
                    self.finish(server, command).await;
                    return;
                }
            };
            tracing::warn!(pid, "nats-server exited unexpectedly ({status})");
            if running_since.elapsed() >= policy.reset_after {
                attempt = 0;
            }
            let mut last_exit = format!("pid {pid}: {status}");
            let mut last_logs = self.logs.since(server.log_mark(), LAST_LOG_LINES);

            server = loop {
                attempt += 1;
                if attempt > policy.max_attempts {
                    let error = NatsdError::RestartsExhausted {
                        attempts: policy.max_attempts,
                        last_exit,
                        last_logs,
                    };
                    tracing::error!("{error}");
                    self.end(NatsState::Failed {
                        error: Arc::new(error),
                    });
                    return;
                }
                let delay = policy.backoff(attempt);
                self.set(NatsState::Restarting {
                    attempt,
                    last_exit: last_exit.clone(),
                    next_in: delay,
                });
                tracing::info!(attempt, "restarting nats-server in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = next_command(&mut self.commands) => {
                        self.end(NatsState::Stopped);
                        return;
                    }
                }
                match self.start_server(ports, false).await {
                    Started::Ready(server) => break server,
                    Started::Interrupted => return,
                    Started::Failed(error) => {
                        tracing::warn!(attempt, "restarting nats-server failed: {error}");
                        last_exit = short_reason(&error);
                        last_logs = if error.last_logs().is_empty() {
                            self.logs.since(0, LAST_LOG_LINES)
                        } else {
                            error.last_logs().to_vec()
                        };
                    }
                }
            };
        }
    }

    /// Carry out a stop or kill command on `server`, then report `Stopped`.
    async fn finish(&mut self, mut server: ServerProcess, command: Command) {
        let pid = server.pid();
        let status = match command {
            Command::Stop { grace } => server.stop(grace).await,
            Command::Kill => server.kill().await,
        };
        tracing::info!(pid, "nats-server stopped ({status})");
        self.end(NatsState::Stopped);
    }
}

/// Create `dir` if needed and prove it writable by creating and removing a file in it.
fn ensure_writable_dir(dir: &Path) -> Result<(), NatsdError> {
    let not_writable = |source| NatsdError::StoreDirNotWritable {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(format!(".pyoco-natsd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    Ok(())
}

/// Whether nats-server's last lines say it could not listen on `port` because it is taken.
fn mentions_address_in_use(lines: &[String], port: u16) -> bool {
    let needle = format!(":{port}");
    lines.iter().any(|line| {
        line.contains("address already in use")
            && line
                .match_indices(&needle)
                .any(|(at, _)| !line[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The server ID nats-server printed in its startup banner (`[pid] [INF]   ID:       N…`).
fn server_id_in(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|line| {
        let (_, message) = parse_log_line(line);
        let id = message.trim_start().strip_prefix("ID:")?.trim();
        (!id.is_empty()).then(|| id.to_owned())
    })
}

/// Whether the process was ended by a signal (not by an exit of its own).
#[cfg(unix)]
fn killed_by_signal(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal().is_some()
}

/// No signals here: every end is an exit.
#[cfg(not(unix))]
fn killed_by_signal(_status: &ExitStatus) -> bool {
    false
}

/// A one-line reason for a failed restart attempt, for `Restarting::last_exit`.
fn short_reason(error: &NatsdError) -> String {
    match error {
        NatsdError::ExitedDuringStartup { status, .. } if killed_by_signal(status) => {
            format!("killed during startup ({status})")
        }
        NatsdError::ExitedDuringStartup { status, .. } => {
            format!("exited during startup ({status})")
        }
        NatsdError::StartupTimeout { after, .. } => format!("not ready within {after:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_is_matched_to_the_exact_port() {
        let lines = vec![
            "[1] [INF] Starting nats-server".to_owned(),
            "[1] [FTL] Error listening on port: 127.0.0.1:4222, \"listen tcp 127.0.0.1:4222: bind: address already in use\"".to_owned(),
        ];
        assert!(mentions_address_in_use(&lines, 4222));
        assert!(!mentions_address_in_use(&lines, 422));
        assert!(!mentions_address_in_use(&lines, 8222));
    }

    #[test]
    fn the_server_id_comes_from_the_banner() {
        let lines = vec![
            "[1] [INF]   Name:     pyoco-natsd".to_owned(),
            "[1] [INF]   ID:       NBQANMFF".to_owned(),
        ];
        assert_eq!(server_id_in(&lines).as_deref(), Some("NBQANMFF"));
        assert_eq!(server_id_in(&lines[..1]), None);
    }
}
