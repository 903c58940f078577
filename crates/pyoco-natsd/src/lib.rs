//! Supervise a local nats-server with JetStream as a child process.
//!
//! This is what `pyoco-server up --with-nats`, the desktop app and the test kit use to own a
//! nats-server: [`find_nats_server`] finds the binary, [`NatsSupervisor::start`] starts it on a
//! chosen or free port with a file store and returns once JetStream answers, the supervisor
//! restarts it (same port, same store dir, so nothing persisted is lost) with backoff when it
//! dies, and [`NatsSupervisor::stop`] stops it cleanly. Its output goes to `tracing` (target
//! `nats_server`) and to a ring buffer ([`NatsSupervisor::recent_logs`]).
//!
//! It is *not* a NATS client library (that is `async-nats`), it creates no streams or buckets
//! (that is `pyoco-store`), it reads no `PYOCO_*` variables (that is `pyoco-config`; callers pass
//! paths and ports in), and it does not manage production clusters: production points the
//! gateway and workers at a real NATS deployment.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pyoco_natsd::NatsdError> {
//! use pyoco_natsd::{find_nats_server, NatsServerConfig, NatsSupervisor};
//! let binary = find_nats_server(None, Some("/var/lib/pyoco".as_ref()))?;
//! let nats = NatsSupervisor::start(NatsServerConfig::new(binary, "/var/lib/pyoco/jetstream")).await?;
//! println!("JetStream ready at {}", nats.client_url());
//! nats.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Finding the binary
//!
//! The explicit path (PYOCO_NATS_SERVER_BIN) wins, then `<data dir>/bin/nats-server`, then
//! `nats-server` on PATH. The data dir comes before PATH deliberately: `scripts/setup.sh`
//! installs a pinned, current nats-server there, while distribution packages on PATH are often
//! an old 2.9.x. [`nats_server_version`] reads the version so callers can warn about old ones.
//!
//! # Ready, restarted, failed
//!
//! Ready means JetStream answers a raw `$JS.API.INFO` request (not just an open TCP port: the
//! server listens before it has recovered its streams), from the server we started (its ID is
//! checked against the one in its startup banner, so a process that grabbed a freshly chosen
//! port meanwhile is not mistaken for ours). Each start waits up to `startup_timeout`; an exit
//! before that is [`NatsdError::ExitedDuringStartup`] and a timeout [`NatsdError::StartupTimeout`],
//! both with the server's last log lines. Once running, an unexpected exit leads to restarts on
//! the same port and store dir per [`RestartPolicy`], visible as [`NatsState::Restarting`]; when
//! the policy gives up, the state is [`NatsState::Failed`] with
//! [`NatsdError::RestartsExhausted`].
//!
//! The first start tells the two ways a starting server can end apart. One that *exits* (an exit
//! code: a bad option, an unusable store dir) would fail the same way again, so
//! [`NatsSupervisor::start`] returns the error at once. One *killed by a signal* (the OOM killer,
//! a stray `kill`) did nothing wrong: it is restarted like a crash after start, same policy and
//! states, and `start` returns once a restart is ready (or
//! [`NatsdError::RestartsExhausted`] when the policy gives up).
//!
//! # Orphan prevention
//!
//! A nats-server left running after the app is gone holds its port and its store dir, and the
//! next start fails or, worse, talks to a stale server (tauri issues #10377 and #5576 are this
//! bug for sidecars). The supervisor makes that impossible on Linux and unlikely elsewhere:
//!
//! - **Normal stop**: [`stop`](NatsSupervisor::stop)/[`shutdown`](NatsSupervisor::shutdown)
//!   send SIGTERM (nats-server then flushes and exits), wait up to `stop_grace` (5 s), SIGKILL,
//!   and reap the child before returning.
//! - **Handle dropped without stop**: `Drop` has the supervisor thread SIGKILL and reap the child,
//!   and waits (at most 2 s, normally milliseconds) until that is done.
//! - **Our process dies abruptly** (SIGKILL, a crash, `std::process::exit` skipping destructors):
//!   on Linux the child is spawned with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it
//!   (set up by `pyoco-process`, which also closes the window between `fork` and `prctl`).
//! - **Which thread spawns matters**: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//!   child exits (`pyoco-process` explains it). So every supervisor runs on a dedicated thread
//!   (`pyoco-natsd`) with its own single-threaded runtime, and all spawning, waiting, restarting
//!   and stopping happens there. That thread lives exactly as long as the supervision: it ends
//!   only after the child has been reaped, and if it ever ended early (a panic), the kernel would
//!   kill the child with it — which is the safe direction. It also means the supervisor keeps
//!   working whatever runtime (or none) the caller uses, and survives the caller's runtime.
//! - **Ctrl-C in a terminal**: the child runs in its own process group (`process_group(0)`), so
//!   the terminal's SIGINT reaches only our process, which can then stop the gateway and worker
//!   first and nats-server last, in order.
//! - **One server per store dir**: nats-server does not refuse a store dir another server is
//!   using, and two servers on one store dir corrupt it. The supervisor holds an exclusive lock
//!   on `<store dir>/pyoco-natsd.lock` ([`STORE_LOCK_FILE`]) while it runs, and each nats-server
//!   inherits the locked descriptor. A second supervisor on the same store dir (the CLI's `up`
//!   next to the desktop app) fails with [`NatsdError::StoreDirInUse`] naming the pids, and so
//!   does a start while a nats-server that outlived its supervisor still runs. The lock is
//!   released before `stop` returns, so stop-then-start on the same store dir works at once.
//!
//! `stop` and `Drop` signal the child's whole process group, so a wrapper script in front of
//! nats-server that forgets `exec` is stopped with its server; but `PR_SET_PDEATHSIG` is not
//! inherited across `fork`, so only a binary that *is* nats-server (or a wrapper that `exec`s
//! it, as `<data dir>/bin/nats-server` does: it is a symlink to the real binary) is covered when
//! our process dies abruptly.
//!
//! Other operating systems have no `PR_SET_PDEATHSIG`. On macOS (and other Unixes) everything
//! above except the kernel-side kill applies: a clean exit, a panic that unwinds, or a dropped
//! handle still stops the server, but a SIGKILL of our process leaves nats-server running. The
//! store-dir lock then keeps the next start from sharing its store dir (the error names its pid);
//! callers there should handle SIGINT/SIGTERM and call `stop`, and the desktop app should stop
//! the appliance on its exit event. On Windows the equivalent of `PR_SET_PDEATHSIG` would be a
//! Job Object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`; it is not implemented (Windows is not
//! a target yet: the crate is written to compile there, stopping with `TerminateProcess` instead
//! of SIGTERM and relying on `Drop`/`stop`, but it is neither built nor tested there).
//!
//! # Blocking
//!
//! [`NatsSupervisor::start`], `stop` and `shutdown` are async and never block the caller's
//! runtime beyond a few file-system calls. `Drop` blocks for as long as the supervisor thread
//! needs to SIGKILL and reap the child (milliseconds; at most 2 s). [`nats_server_version`] runs
//! `nats-server --version` synchronously (milliseconds).

mod child;
mod config;
mod discover;
mod error;
mod logs;
mod ports;
mod ready;
mod store_lock;
mod supervisor;

pub use config::{NatsServerConfig, RestartPolicy};
pub use discover::{
    binary_file_name, find_nats_server, find_nats_server_in, nats_server_version, NatsServerVersion,
};
pub use error::{NatsdError, INSTALL_HINT};
pub use logs::{parse_log_line, LogLevel, LogLine};
pub use store_lock::STORE_LOCK_FILE;
pub use supervisor::{NatsState, NatsSupervisor};
