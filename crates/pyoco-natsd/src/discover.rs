//! Finding the nats-server binary and asking it for its version.
//!
//! Search order: the explicit path (PYOCO_NATS_SERVER_BIN), then `<data dir>/bin/nats-server`,
//! then `nats-server` on PATH. The data dir comes *before* PATH on purpose: `scripts/setup.sh`
//! installs a pinned, current nats-server there, while the one a distribution puts on PATH is
//! often an old 2.9.x (Debian 12 ships 2.9.10) that lacks JetStream features we rely on.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::NatsdError;

/// The file name of the binary on this OS (`nats-server`, or `nats-server.exe` on Windows).
pub fn binary_file_name() -> String {
    format!("nats-server{}", std::env::consts::EXE_SUFFIX)
}

/// Find the nats-server binary: `explicit`, then `<data_dir>/bin/nats-server`, then PATH.
///
/// An explicit path must exist and be executable (no fallback: if a user named a binary, running
/// another one silently would be a surprise). A `<data_dir>/bin/nats-server` that exists but is
/// not executable is an error too, rather than a silent fall back to an older one on PATH.
pub fn find_nats_server(
    explicit: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<PathBuf, NatsdError> {
    let path = std::env::var_os("PATH");
    find_nats_server_in(explicit, data_dir, path.as_deref())
}

/// [`find_nats_server`] with the PATH given instead of read from the environment (for tests and
/// for callers that sanitise the environment).
pub fn find_nats_server_in(
    explicit: Option<&Path>,
    data_dir: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, NatsdError> {
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(NatsdError::ExplicitBinaryNotFound {
                path: path.to_owned(),
            });
        }
        return ensure_executable(path).map(|()| path.to_owned());
    }

    let name = binary_file_name();
    let mut searched = Vec::new();
    if let Some(dir) = data_dir {
        let candidate = dir.join("bin").join(&name);
        if candidate.exists() {
            return ensure_executable(&candidate).map(|()| candidate);
        }
        searched.push(candidate);
    }
    for dir in std::env::split_paths(path_var.unwrap_or(OsStr::new(""))) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(&name);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(NatsdError::BinaryNotFound { searched })
}

fn ensure_executable(path: &Path) -> Result<(), NatsdError> {
    if is_executable_file(path) {
        Ok(())
    } else {
        Err(NatsdError::BinaryNotExecutable {
            path: path.to_owned(),
        })
    }
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// A nats-server version as printed by `nats-server --version` (`nats-server: v2.15.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServerVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version (leading digits only: `1-RC.2` is 1).
    pub patch: u64,
    /// The version as printed, without the `nats-server: ` prefix (`v2.15.1`).
    pub text: String,
}

impl NatsServerVersion {
    /// Whether this version is at least `major.minor`.
    pub fn is_at_least(&self, major: u64, minor: u64) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Parse the output of `nats-server --version`.
    pub fn parse(output: &str) -> Option<Self> {
        let text = output
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())?
            .trim_start_matches("nats-server:")
            .trim();
        let numbers = text.strip_prefix('v').unwrap_or(text);
        let mut parts = numbers.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch_part = parts.next().unwrap_or("0");
        let digits: String = patch_part
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let patch = digits.parse().ok()?;
        Some(NatsServerVersion {
            major,
            minor,
            patch,
            text: text.to_owned(),
        })
    }
}

impl std::fmt::Display for NatsServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Run `<binary> --version` (for at most 5 s) and parse what it prints.
///
/// Blocking, but quick (a few milliseconds); from async code, call it in `spawn_blocking` if the
/// few milliseconds matter.
pub fn nats_server_version(binary: &Path) -> Result<NatsServerVersion, NatsdError> {
    let fail = |detail: String| NatsdError::Version {
        path: binary.to_owned(),
        detail,
    };
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("could not run it: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("`--version` did not finish within 5 s".into()));
            }
            Err(e) => return Err(fail(format!("could not wait for it: {e}"))),
        }
    };
    let mut printed = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut printed);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut printed);
    }
    if !status.success() {
        return Err(fail(format!(
            "`--version` failed ({status}): {}",
            printed.trim()
        )));
    }
    NatsServerVersion::parse(&printed).ok_or_else(|| {
        fail(format!(
            "unexpected `--version` output {:?}",
            printed.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        let v = NatsServerVersion::parse("nats-server: v2.15.1\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (2, 15, 1));
        assert_eq!(v.text, "v2.15.1");
        assert!(v.is_at_least(2, 10));
        let old = NatsServerVersion::parse("nats-server: v2.9.10").unwrap();
        assert!(!old.is_at_least(2, 10));
        let rc = NatsServerVersion::parse("nats-server: v2.11.0-RC.2").unwrap();
        assert_eq!((rc.major, rc.minor, rc.patch), (2, 11, 0));
        assert!(NatsServerVersion::parse("hello world").is_none());
    }
}
