//! One server per store dir.
//!
//! Two nats-servers on one JetStream store dir corrupt it, and nats-server itself does not
//! refuse (2.15 starts happily on a store dir another server is using). That happens when a
//! second pyoco-server (CLI `up` next to the desktop app) uses the same data dir, or when a
//! nats-server outlived its supervisor (possible on systems without `PR_SET_PDEATHSIG`). So the
//! supervisor holds an exclusive lock on `<store dir>/pyoco-natsd.lock` for as long as it runs,
//! and every nats-server it spawns inherits the locked descriptor: a server that outlives us keeps
//! the store dir locked, and the next start says so instead of sharing it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::NatsdError;

/// The lock file's name inside the store dir.
pub const STORE_LOCK_FILE: &str = "pyoco-natsd.lock";

/// An exclusive lock on a store dir, released when dropped (and when every nats-server that
/// inherited it has exited).
#[derive(Debug)]
pub(crate) struct StoreLock {
    file: File,
    path: PathBuf,
}

impl StoreLock {
    /// Lock `store_dir`, or say who holds it.
    pub(crate) fn acquire(store_dir: &Path) -> Result<Self, NatsdError> {
        let path = store_dir.join(STORE_LOCK_FILE);
        let not_writable = |source| NatsdError::StoreDirNotWritable {
            path: store_dir.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // what the holder wrote is our error message
            .open(&path)
            .map_err(not_writable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(NatsdError::StoreDirInUse {
                    path: store_dir.to_owned(),
                    holder: if holder.is_empty() {
                        "unknown process".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(NatsdError::io(
                    format!("could not lock {}", path.display()),
                    e,
                ))
            }
        }
        let lock = StoreLock { file, path };
        lock.record(None);
        Ok(lock)
    }

    /// Note who holds the lock, for the error another start would report. Best effort.
    pub(crate) fn record(&self, server_pid: Option<u32>) {
        let mut text = format!("pyoco-natsd supervisor pid {}", std::process::id());
        if let Some(pid) = server_pid {
            text = format!("nats-server pid {pid}, started by {text}");
        }
        let mut file = &self.file;
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::debug!("could not write {}: {e}", self.path.display());
        }
    }

    /// The locked descriptor, for the child to inherit.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}
