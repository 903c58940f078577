//! The one error type of this crate. Every message says what went wrong *and* what to do about it,
//! because these messages end up in front of users (CLI output, the desktop app's status line).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What to tell a user who has no nats-server at all.
pub const INSTALL_HINT: &str = "run `sudo bash scripts/setup.sh` in the pyoco-server checkout, \
     or set PYOCO_NATS_SERVER_BIN=/path/to/nats-server";

/// Everything that can go wrong while finding, starting, supervising or stopping nats-server.
///
/// Variants carry the path, port or log lines involved so callers can match on the kind and users
/// can act on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsdError {
    /// No nats-server in any of the places we look.
    #[error("nats-server was not found (looked at: {}); to install it, {INSTALL_HINT}", show_paths(.searched))]
    BinaryNotFound {
        /// Every candidate path that was checked, in order.
        searched: Vec<PathBuf>,
    },

    /// An explicitly configured binary (PYOCO_NATS_SERVER_BIN) does not exist.
    #[error(
        "nats-server binary {} (PYOCO_NATS_SERVER_BIN) does not exist; fix the path, or unset \
         the variable to use <data dir>/bin/nats-server or nats-server on PATH",
        .path.display()
    )]
    ExplicitBinaryNotFound {
        /// The configured path.
        path: PathBuf,
    },

    /// The binary exists but is not an executable file.
    #[error(
        "{} is not an executable file; make it executable (`chmod +x`), or point \
         PYOCO_NATS_SERVER_BIN at a nats-server binary ({INSTALL_HINT})",
        .path.display()
    )]
    BinaryNotExecutable {
        /// The offending path.
        path: PathBuf,
    },

    /// `nats-server --version` failed or printed something we do not understand.
    #[error(
        "could not read the version of {} ({detail}); is it a nats-server binary? To install a \
         known-good one, {INSTALL_HINT}",
        .path.display()
    )]
    Version {
        /// The binary that was asked.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },

    /// The requested client port is taken (most often by another nats-server).
    #[error(
        "port {port} on {host} is already in use (another nats-server?) — use that server with \
         --nats-url nats://{host}:{port}, or choose another port (PYOCO_NATS_CLIENT_PORT, \
         0 = any free port)"
    )]
    PortInUse {
        /// The listen host.
        host: String,
        /// The port that is taken.
        port: u16,
    },

    /// The requested monitoring (HTTP) port is taken.
    #[error(
        "monitoring port {port} on {host} is already in use; choose another monitoring port \
         (PYOCO_NATS_HTTP_PORT, 0 = any free port)"
    )]
    MonitorPortInUse {
        /// The listen host.
        host: String,
        /// The port that is taken.
        port: u16,
    },

    /// The JetStream store directory cannot be created or written.
    #[error(
        "the JetStream store dir {} is not writable ({source}); fix its permissions or choose \
         another store dir (PYOCO_NATS_STORE_DIR)",
        .path.display()
    )]
    StoreDirNotWritable {
        /// The store directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// Another supervisor, or a nats-server left over from an earlier run, uses the store dir.
    #[error(
        "the JetStream store dir {} is in use ({holder}): another pyoco-server with the same data \
         dir, or a nats-server left over from an earlier run. Stop that process, or use another \
         store dir (PYOCO_NATS_STORE_DIR); two servers on one store dir would corrupt it",
        .path.display()
    )]
    StoreDirInUse {
        /// The store directory.
        path: PathBuf,
        /// Who holds it, as recorded in its lock file (pids).
        holder: String,
    },

    /// The operating system refused to start the binary.
    #[error("could not start {} ({source}); check that it is a nats-server binary for this machine", .binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// nats-server exited before JetStream answered. (One killed by a signal meanwhile is
    /// restarted first, per the restart policy; this is its error only with
    /// [`RestartPolicy::never`](crate::RestartPolicy::never).)
    #[error(
        "nats-server exited during startup ({status}); fix the cause shown in its last log \
         lines (a bad option or config file, an unusable store dir, a port conflict) and \
         start again{}",
        show_logs(.last_logs)
    )]
    ExitedDuringStartup {
        /// How it exited.
        status: ExitStatus,
        /// Its last log lines (stdout and stderr, oldest first).
        last_logs: Vec<String>,
    },

    /// nats-server kept running but JetStream did not answer in time.
    #[error(
        "nats-server did not become ready (JetStream answering) within {after:?}; it was \
         stopped. A slow disk or a large store can need a longer startup timeout; otherwise \
         see its last log lines{}",
        show_logs(.last_logs)
    )]
    StartupTimeout {
        /// The startup timeout that expired.
        after: Duration,
        /// Its last log lines (oldest first).
        last_logs: Vec<String>,
    },

    /// nats-server kept dying and the restart policy gave up.
    #[error(
        "nats-server kept exiting and was not restarted again after {attempts} attempts (last: \
         {last_exit}); fix the cause shown in its last log lines, then start pyoco-server \
         again{}",
        show_logs(.last_logs)
    )]
    RestartsExhausted {
        /// How many restarts were tried.
        attempts: u32,
        /// How the last attempt ended.
        last_exit: String,
        /// Its last log lines (oldest first).
        last_logs: Vec<String>,
    },

    /// The supervisor thread ended without reporting (a bug; it should not happen).
    #[error(
        "the nats-server supervisor thread ended unexpectedly; this is a bug, please report it"
    )]
    SupervisorGone,

    /// Any other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

impl NatsdError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NatsdError::Io {
            context: context.into(),
            source,
        }
    }

    /// The nats-server log lines attached to this error, if any (for a UI that shows them apart).
    pub fn last_logs(&self) -> &[String] {
        match self {
            NatsdError::ExitedDuringStartup { last_logs, .. }
            | NatsdError::StartupTimeout { last_logs, .. }
            | NatsdError::RestartsExhausted { last_logs, .. } => last_logs,
            _ => &[],
        }
    }
}

fn show_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    if shown.is_empty() {
        "nowhere: no explicit path, no data dir and an empty PATH".to_owned()
    } else {
        shown.join(", ")
    }
}

fn show_logs(lines: &[String]) -> String {
    if lines.is_empty() {
        return ". nats-server printed nothing.".to_owned();
    }
    let mut out = String::from(". Its last log lines:");
    for line in lines {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}
