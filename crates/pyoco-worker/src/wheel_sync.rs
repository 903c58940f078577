//! Wheel sync (§6.10): keep the runners' interpreter in step with the wheel registry.
//!
//! One full attempt ([`WheelSync::sync_once`] with [`SyncMode::Full`]):
//!
//! 1. read the local manifest `<sync dir>/.installed.json` (§2.8; unreadable ⇒ empty);
//! 2. list the registry (an empty registry is an empty list, not an error — §14-11);
//! 3. keep the wheels meant for this worker — no `x-pyoco-wheel-tags`, or tags that meet the
//!    worker's — whose filename parses (PEP 427) and whose compatibility tags meet the
//!    interpreter's `packaging.tags.sys_tags()` (asked once, then cached; the others are
//!    reported as `skipped_incompatible`, reason `unsupported_wheel_tags`), and of those the
//!    latest per normalised package name (PEP 440 order; a tie goes to the larger filename);
//! 4. download and `pip install --disable-pip-version-check --no-deps --force-reinstall`
//!    every wanted wheel whose object NUID differs from the manifest's (or whose file is
//!    gone), under `PYOCO_WHEEL_INSTALL_TIMEOUT_SEC` (killed after it);
//! 5. drop manifest entries no longer wanted: delete the local file and, when no wanted wheel
//!    is left for that package (all its wheels deleted, or none matches the worker any more),
//!    `pip uninstall -y <package>` (0.5.1 left it installed);
//! 6. save the manifest if anything changed.
//!
//! **A wheel pip will not install** (it fails or times out: `Requires-Python` the interpreter
//! does not meet, a broken build, …) is the wheel's fault, not the sync's: unlike 0.5.1, whose
//! every later sync stopped at it so no wheel uploaded after it was ever installed, the worker
//! remembers that upload (name and object NUID) as failed, appends an `install_failed` record
//! to the wheel history, and goes on. Step 3 leaves failed uploads out, so the package's
//! previous wheel (if any) stays or becomes the wanted one and no later sync runs pip on the
//! failed upload again until it is replaced (a new upload is a new NUID) or the worker
//! restarts. The record lists them in `wheel_sync.failed_wheels` with pip's error, and
//! `last_result` stays `"error"` (`last_error` is the latest failure) while any is listed.
//!
//! Any other error (the registry, the disk) stops the attempt where it is, the manifest is
//! not saved (the next attempt redoes the work) and the worker record says
//! `last_result: "error"` with the message; the install errors read exactly as 0.5.1's
//! (`wheel install timed out: <name>`, `wheel install failed (code=<n>): <name>: <last 2000
//! chars of output>`).
//!
//! A [`SyncMode::Check`] attempt stops after step 3 when something is to change (and is a
//! complete, successful attempt otherwise): it only reads, so the worker runs it on schedule
//! even while runs execute, and pauses for a full attempt only when there is work. When to
//! sync, and restarting the runners afterwards so new code is really imported, is the worker
//! loop's business (`worker.rs`): installs and uninstalls never overlap a run.
//!
//! pip runs with the worker's environment minus `PYTHONPATH`, so a project directory on the
//! user's `PYTHONPATH` is never mistaken for an installed copy of a synced package.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt;
use pyoco_store::{Bucket, ObjectInfo, WheelRegistry};
use pyoco_wire::{
    wheel_manifest_from_json, wheel_manifest_to_json, FailedWheel, InstalledWheel, Pep440Version,
    SkippedWheel, WheelFilename, WheelHistoryAction, WheelHistoryActor, WheelHistoryRecord,
    WheelHistorySource, WheelManifest, WheelManifestEntry, WheelSyncResult, WheelSyncStatus,
    WHEEL_SYNC_MAX_ERROR_CHARS, WHEEL_SYNC_MAX_ITEMS,
};
use sha2::{Digest, Sha256};
use tokio::{io::AsyncWriteExt, process::Command};

use pyoco_wire::python::time as now;

use crate::config::WheelSyncConfig;

/// Name of the manifest inside the sync dir (§2.8).
pub const MANIFEST_FILE_NAME: &str = ".installed.json";

/// The `reason` of a wheel none of whose compatibility tags the interpreter supports.
pub const UNSUPPORTED_WHEEL_TAGS: &str = "unsupported_wheel_tags";

/// Prints `str(tag)` of every `sys_tags()` entry, one a line. pip's vendored `packaging`
/// first: pip is what installs, so its idea of "compatible" is the one that counts.
const SYS_TAGS_SCRIPT: &str = "\
import sys
try:
    from pip._vendor.packaging.tags import sys_tags
except Exception:
    from packaging.tags import sys_tags
sys.stdout.write(''.join(str(t) + '\\n' for t in sys_tags()))
";

/// What an attempt should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncMode {
    /// Read only (registry listing, manifest): safe while runs execute. Finishes the attempt
    /// when there is nothing to change, else answers [`Attempt::NeedsChanges`].
    Check,
    /// The whole attempt, installs and uninstalls included: only between runs.
    Full,
}

/// How an attempt ended (when it did not fail).
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The new `wheel_sync` object.
    Done(Box<WheelSyncStatus>),
    /// [`SyncMode::Check`] found wheels to install or remove: run a full attempt between
    /// runs.
    NeedsChanges,
}

/// The result of one attempt.
#[derive(Debug)]
pub(crate) struct SyncOutcome {
    /// When the attempt started (epoch seconds).
    pub attempted_at: f64,
    /// How it ended, or the error that stopped it.
    pub result: Result<Attempt, String>,
    /// A pip install or uninstall succeeded, or was killed half-way: runners must be
    /// restarted to see the interpreter's packages as they are now. (A pip that fails on its
    /// own leaves the environment as it was: it rolls back.)
    pub env_changed: bool,
}

/// A wheel the worker wants installed.
#[derive(Debug, Clone)]
struct Wanted {
    info: ObjectInfo,
    package: String,
    version: Pep440Version,
}

/// What the registry listing means for this worker.
#[derive(Debug, Default)]
struct Selection {
    /// Wheel filename → the wheel (one per package).
    wanted: BTreeMap<String, Wanted>,
    skipped_incompatible: Vec<SkippedWheel>,
}

/// The wheel sync of one worker.
#[derive(Debug)]
pub(crate) struct WheelSync {
    dir: PathBuf,
    install_timeout: Duration,
    python: PathBuf,
    worker_tags: BTreeSet<String>,
    wheels: WheelRegistry,
    history: Bucket,
    worker_id: String,
    /// The interpreter's `sys_tags()`, asked once.
    supported_tags: Option<HashSet<String>>,
    /// Uploads pip refused, by wheel filename (module docs).
    failed: BTreeMap<String, FailedWheel>,
    /// When the last attempt ended with nothing failed.
    last_success_at: Option<f64>,
}

impl WheelSync {
    /// `config.dir` must be absolute (the worker resolves it at start).
    pub(crate) fn new(
        config: &WheelSyncConfig,
        python: &Path,
        worker_tags: &[String],
        wheels: WheelRegistry,
        history: Bucket,
        worker_id: &str,
    ) -> WheelSync {
        WheelSync {
            dir: config.dir.clone(),
            install_timeout: config.install_timeout,
            python: python.to_path_buf(),
            worker_tags: worker_tags
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            wheels,
            history,
            worker_id: worker_id.to_string(),
            supported_tags: None,
            failed: BTreeMap::new(),
            last_success_at: None,
        }
    }

    /// `<sync dir>/.installed.json`.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE_NAME)
    }

    /// One attempt (see the module docs).
    pub(crate) async fn sync_once(&mut self, mode: SyncMode) -> SyncOutcome {
        let attempted_at = now();
        let mut env_changed = false;
        let result = self.attempt(mode, attempted_at, &mut env_changed).await;
        SyncOutcome {
            attempted_at,
            result,
            env_changed,
        }
    }

    async fn attempt(
        &mut self,
        mode: SyncMode,
        attempted_at: f64,
        env_changed: &mut bool,
    ) -> Result<Attempt, String> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            format!(
                "cannot create the wheel sync dir {}: {e}",
                self.dir.display()
            )
        })?;
        let mut manifest = load_manifest(&self.manifest_path()).await;
        let listing = self
            .wheels
            .list()
            .await
            .map_err(|e| format!("listing the wheel registry failed: {e}"))?;
        // A failed upload that left the registry or was replaced is forgotten (and retried).
        self.failed.retain(|name, f| {
            listing
                .iter()
                .any(|i| &i.name == name && f.nuid.as_deref() == Some(i.nuid.as_str()))
        });
        let mut selection = self.select(&listing).await?;
        let dir = self.dir.clone();
        let outdated = |manifest: &WheelManifest, name: &str, w: &Wanted| {
            manifest.get(name).is_none_or(|e| e.nuid != w.info.nuid) || !dir.join(name).is_file()
        };
        if mode == SyncMode::Check {
            let any_outdated = selection
                .wanted
                .iter()
                .any(|(name, w)| outdated(&manifest, name, w));
            let any_stale = manifest.keys().any(|n| !selection.wanted.contains_key(n));
            if any_outdated || any_stale {
                return Ok(Attempt::NeedsChanges);
            }
        }

        let mut changed = false;
        let mut updated = Vec::new();
        loop {
            let todo: Vec<(String, Wanted)> = selection
                .wanted
                .iter()
                .filter(|(name, w)| outdated(&manifest, name, w))
                .map(|(name, w)| (name.clone(), w.clone()))
                .collect();
            let mut newly_failed = false;
            for (name, wanted) in todo {
                let path = self.dir.join(&name);
                let started = Instant::now();
                let (size_bytes, sha256_hex) = self.download(&name, &path).await?;
                if let Err(err) = self.pip_install(&name, &path).await {
                    *env_changed |= err.killed;
                    self.record_failure(&wanted, err.message, size_bytes, sha256_hex)
                        .await;
                    let _ = tokio::fs::remove_file(&path).await;
                    newly_failed = true;
                    continue;
                }
                *env_changed = true;
                tracing::info!(
                    wheel = %name,
                    package = %wanted.package,
                    version = %wanted.version,
                    took_ms = started.elapsed().as_millis() as u64,
                    "installed a wheel from the registry"
                );
                manifest.insert(
                    name.clone(),
                    WheelManifestEntry {
                        nuid: wanted.info.nuid.clone(),
                        package_name: wanted.package.clone(),
                        package_version: wanted.version.to_string(),
                        size_bytes,
                        sha256_hex,
                        tags: wanted.info.wheel_tags_lenient(),
                        installed_at: now(),
                    },
                );
                updated.push(name);
                changed = true;
            }
            if !newly_failed {
                break;
            }
            // Without the failed uploads, an older wheel of the same package may be the
            // wanted one now (each pass fails at least one more upload: this ends).
            selection = self.select(&listing).await?;
        }

        let wanted_packages: HashSet<&str> = selection
            .wanted
            .values()
            .map(|w| w.package.as_str())
            .collect();
        let stale: Vec<String> = manifest
            .keys()
            .filter(|name| !selection.wanted.contains_key(*name))
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for name in stale {
            let entry = manifest.get(&name).cloned();
            let package = entry
                .as_ref()
                .map(|e| e.package_name.clone())
                .filter(|p| !p.is_empty())
                .or_else(|| WheelFilename::parse(&name).ok().map(|w| w.name));
            if let Some(package) = package.filter(|p| !wanted_packages.contains(p.as_str())) {
                self.pip_uninstall(&package)
                    .await
                    .map_err(|e| e.noting(env_changed))?;
                *env_changed = true;
                tracing::info!(wheel = %name, package = %package, "uninstalled a package whose wheels left the registry");
            }
            let path = self.dir.join(&name);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot delete a stale wheel file: {e}")
                }
            }
            manifest.remove(&name);
            removed.push(name);
            changed = true;
        }

        if changed {
            save_manifest(&self.manifest_path(), &manifest).await?;
        }
        let t = now();
        let capped = |mut v: Vec<String>| {
            v.sort();
            v.truncate(WHEEL_SYNC_MAX_ITEMS);
            v
        };
        // The latest failure is `last_error` while any failed upload is listed.
        let latest_failure = self.failed.values().max_by(|a, b| {
            a.failed_at
                .unwrap_or(0.0)
                .total_cmp(&b.failed_at.unwrap_or(0.0))
        });
        let (last_result, last_error) = match latest_failure {
            None => {
                self.last_success_at = Some(t);
                (WheelSyncResult::Ok, None)
            }
            Some(f) => (WheelSyncResult::Error, Some(f.error.clone())),
        };
        Ok(Attempt::Done(Box::new(WheelSyncStatus {
            enabled: true,
            last_result,
            last_attempt_at: Some(attempted_at),
            last_success_at: self.last_success_at,
            last_synced_at: Some(t),
            last_error,
            selected_count: selection.wanted.len() as u64,
            updated_count: updated.len() as u64,
            removed_count: removed.len() as u64,
            skipped_incompatible_count: selection.skipped_incompatible.len() as u64,
            selected_wheels: capped(selection.wanted.keys().cloned().collect()),
            updated_wheels: capped(updated),
            removed_wheels: capped(removed),
            skipped_incompatible: selection
                .skipped_incompatible
                .into_iter()
                .take(WHEEL_SYNC_MAX_ITEMS)
                .collect(),
            installed_wheels: installed_wheels(&manifest),
            failed_wheels: self
                .failed
                .values()
                .take(WHEEL_SYNC_MAX_ITEMS)
                .cloned()
                .collect(),
            extra: Default::default(),
        })))
    }

    /// Remember that pip refused `wanted` (module docs): log it and append an `install_failed`
    /// record to the wheel history (best effort, like the gateway's records).
    async fn record_failure(
        &mut self,
        wanted: &Wanted,
        error: String,
        size_bytes: u64,
        sha256_hex: String,
    ) {
        let name = wanted.info.name.clone();
        tracing::error!(
            wheel = %name,
            "a wheel failed to install; this worker skips it until it is uploaded again: {error}"
        );
        let failed_at = now();
        let record = WheelHistoryRecord {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            occurred_at: failed_at,
            action: WheelHistoryAction::InstallFailed,
            wheel_name: name.clone(),
            tags: wanted.info.wheel_tags_lenient(),
            size_bytes: Some(size_bytes),
            sha256_hex: Some(sha256_hex),
            replace: None,
            actor: WheelHistoryActor::default(),
            source: WheelHistorySource::default(),
            worker_id: Some(self.worker_id.clone()),
            error: Some(error.clone()),
        };
        if let Err(err) = self.history.put(&record.key(), record.to_json()).await {
            tracing::warn!(wheel = %name, "append wheel history failed: {err}");
        }
        self.failed.insert(
            name.clone(),
            FailedWheel {
                wheel_name: name,
                package_name: Some(wanted.package.clone()),
                package_version: Some(wanted.version.to_string()),
                nuid: Some(wanted.info.nuid.clone()),
                error,
                failed_at: Some(failed_at),
            },
        );
    }

    /// Step 3 of the module docs (the interpreter is asked for its tags only when some wheel
    /// is meant for this worker).
    async fn select(&mut self, listing: &[ObjectInfo]) -> Result<Selection, String> {
        let failed = &self.failed;
        let candidates: Vec<_> = candidates(listing, &self.worker_tags)
            .into_iter()
            .filter(|(info, _)| {
                failed
                    .get(&info.name)
                    .is_none_or(|f| f.nuid.as_deref() != Some(info.nuid.as_str()))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(Selection::default());
        }
        let supported = self.supported_tags().await?;
        Ok(choose(candidates, supported))
    }

    /// The interpreter's compatibility tags, asked once.
    async fn supported_tags(&mut self) -> Result<&HashSet<String>, String> {
        if self.supported_tags.is_none() {
            let out = self
                .python_command(["-c", SYS_TAGS_SCRIPT])
                .output_within(self.install_timeout)
                .await
                .map_err(|e| {
                    format!(
                        "cannot ask {} for its wheel tags: {e}",
                        self.python.display()
                    )
                })?;
            if !out.status.success() {
                return Err(format!(
                    "cannot ask {} for its wheel tags (code={}): {}",
                    self.python.display(),
                    exit_code(&out.status),
                    output_tail(&out)
                ));
            }
            let tags: HashSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_ascii_lowercase())
                .filter(|l| !l.is_empty())
                .collect();
            tracing::debug!(count = tags.len(), python = %self.python.display(), "interpreter wheel tags");
            self.supported_tags = Some(tags);
        }
        Ok(self.supported_tags.as_ref().expect("just set"))
    }

    /// Download `name` to `path` (through a temporary file). Returns its size and SHA-256.
    async fn download(&self, name: &str, path: &Path) -> Result<(u64, String), String> {
        let failed = |e: &dyn std::fmt::Display| format!("downloading wheel {name} failed: {e}");
        let mut reader = self
            .wheels
            .download(name)
            .await
            .map_err(|e| failed(&e))?
            .ok_or_else(|| format!("wheel {name} was deleted from the registry during the sync"))?;
        let part = self.dir.join(format!(".{name}.part"));
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let copied: Result<(), String> = async {
            while let Some(chunk) = reader.next().await {
                let chunk = chunk.map_err(|e| failed(&e))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            }
            file.flush()
                .await
                .map_err(|e| format!("cannot write {}: {e}", part.display()))
        }
        .await;
        drop(file);
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, path)
            .await
            .map_err(|e| format!("cannot move the wheel to {}: {e}", path.display()))?;
        Ok((size, hex_lower(&hasher.finalize())))
    }

    /// `<python> -m pip install --disable-pip-version-check --no-deps --force-reinstall <path>`.
    async fn pip_install(&self, name: &str, path: &Path) -> Result<(), PipError> {
        let out = self
            .python_command([
                OsStr::new("-m"),
                OsStr::new("pip"),
                OsStr::new("install"),
                OsStr::new("--disable-pip-version-check"),
                OsStr::new("--no-deps"),
                OsStr::new("--force-reinstall"),
                path.as_os_str(),
            ])
            .output_within(self.install_timeout)
            .await;
        check_pip(out, "install", name)
    }

    /// `<python> -m pip uninstall -y <package>` (a package that is not installed is fine).
    async fn pip_uninstall(&self, package: &str) -> Result<(), PipError> {
        let out = self
            .python_command([
                "-m",
                "pip",
                "uninstall",
                "--disable-pip-version-check",
                "-y",
                package,
            ])
            .output_within(self.install_timeout)
            .await;
        check_pip(out, "uninstall", package)
    }

    fn python_command<I, S>(&self, args: I) -> TimedCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.python);
        cmd.args(args)
            .env_remove("PYTHONPATH")
            .env("PIP_NO_INPUT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        TimedCommand(cmd)
    }
}

/// The listed wheels meant for a worker with `worker_tags` (no wheel tags, or tags that
/// meet the worker's) whose filename parses.
fn candidates<'a>(
    listing: &'a [ObjectInfo],
    worker_tags: &BTreeSet<String>,
) -> Vec<(&'a ObjectInfo, WheelFilename)> {
    listing
        .iter()
        .filter(|info| {
            let tags = info.wheel_tags_lenient();
            tags.is_empty() || tags.iter().any(|t| worker_tags.contains(t))
        })
        .filter_map(|info| match WheelFilename::parse(&info.name) {
            Ok(w) => Some((info, w)),
            Err(err) => {
                tracing::debug!("wheel sync skips {}: {err}", info.name);
                None
            }
        })
        .collect()
}

/// Of `candidates`, the ones the interpreter supports, latest per package (PEP 440 order; a
/// tie goes to the larger filename), and the unsupported ones.
fn choose(candidates: Vec<(&ObjectInfo, WheelFilename)>, supported: &HashSet<String>) -> Selection {
    let mut out = Selection::default();
    let mut latest: BTreeMap<String, (Pep440Version, &ObjectInfo)> = BTreeMap::new();
    for (info, wheel) in candidates {
        if !wheel.tags.iter().any(|t| supported.contains(t)) {
            out.skipped_incompatible.push(SkippedWheel {
                wheel_name: info.name.clone(),
                package_name: Some(wheel.name),
                package_version: Some(wheel.version.to_string()),
                reason: UNSUPPORTED_WHEEL_TAGS.to_string(),
            });
            continue;
        }
        let newer = latest.get(&wheel.name).is_none_or(|(v, prev)| {
            wheel.version > *v || (wheel.version == *v && info.name > prev.name)
        });
        if newer {
            latest.insert(wheel.name, (wheel.version, info));
        }
    }
    out.wanted = latest
        .into_iter()
        .map(|(package, (version, info))| {
            (
                info.name.clone(),
                Wanted {
                    info: info.clone(),
                    package,
                    version,
                },
            )
        })
        .collect();
    out
}

/// A command run to completion within a time limit, killed after it.
struct TimedCommand(Command);

enum RunError {
    Spawn(std::io::Error),
    TimedOut,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot start it: {e}"),
            RunError::TimedOut => f.write_str("timed out"),
        }
    }
}

impl TimedCommand {
    async fn output_within(mut self, limit: Duration) -> Result<std::process::Output, RunError> {
        let child = self.0.spawn().map_err(RunError::Spawn)?;
        // Dropping the `wait_with_output` future on timeout drops the child: `kill_on_drop`.
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(out) => out.map_err(RunError::Spawn),
            Err(_) => Err(RunError::TimedOut),
        }
    }
}

/// A pip run that did not succeed.
#[derive(Debug)]
struct PipError {
    message: String,
    /// Killed on timeout: the environment may be half-changed.
    killed: bool,
}

impl PipError {
    /// The message, after flagging `env_changed` when pip was killed half-way.
    fn noting(self, env_changed: &mut bool) -> String {
        *env_changed |= self.killed;
        self.message
    }
}

/// 0.5.1's error texts for a pip run on `subject` (a wheel filename or a package name).
fn check_pip(
    out: Result<std::process::Output, RunError>,
    verb: &str,
    subject: &str,
) -> Result<(), PipError> {
    let (message, killed) = match out {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => (
            format!(
                "wheel {verb} failed (code={}): {subject}: {}",
                exit_code(&out.status),
                output_tail(&out)
            ),
            false,
        ),
        Err(RunError::TimedOut) => (format!("wheel {verb} timed out: {subject}"), true),
        Err(e @ RunError::Spawn(_)) => (format!("wheel {verb} failed: {subject}: {e}"), false),
    };
    Err(PipError { message, killed })
}

/// Python's `returncode`: the exit code, or minus the signal that ended the process.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return -sig;
        }
    }
    -1
}

/// `(err or out).decode(errors="replace")[-2000:]`.
fn output_tail(out: &std::process::Output) -> String {
    let raw = if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let text = String::from_utf8_lossy(raw);
    let n = text.chars().count();
    text.chars()
        .skip(n.saturating_sub(WHEEL_SYNC_MAX_ERROR_CHARS))
        .collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest at `path`; missing or unreadable ⇒ empty (§2.8).
pub(crate) async fn load_manifest(path: &Path) -> WheelManifest {
    match tokio::fs::read(path).await {
        Ok(bytes) => wheel_manifest_from_json(&bytes),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "wheel manifest unreadable, starting empty: {e}");
            }
            WheelManifest::new()
        }
    }
}

/// Write the manifest through a temporary file, so a crash never leaves half of it.
async fn save_manifest(path: &Path, manifest: &WheelManifest) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let failed =
        |e: std::io::Error| format!("cannot save the wheel manifest {}: {e}", path.display());
    tokio::fs::write(&tmp, wheel_manifest_to_json(manifest))
        .await
        .map_err(failed)?;
    tokio::fs::rename(&tmp, path).await.map_err(failed)
}

/// `installed_wheels` of the worker record: the manifest, sorted by name, at most 50.
fn installed_wheels(manifest: &WheelManifest) -> Vec<InstalledWheel> {
    manifest
        .iter()
        .take(WHEEL_SYNC_MAX_ITEMS)
        .map(|(name, e)| {
            let parsed = WheelFilename::parse(name).ok();
            let or_parsed = |v: &str, f: &dyn Fn(&WheelFilename) -> String| {
                if v.is_empty() {
                    parsed.as_ref().map(f)
                } else {
                    Some(v.to_string())
                }
            };
            InstalledWheel {
                wheel_name: name.clone(),
                package_name: or_parsed(&e.package_name, &|w| w.name.clone()),
                package_version: or_parsed(&e.package_version, &|w| w.version.to_string()),
                installed_at: Some(e.installed_at),
                nuid: Some(e.nuid.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn pip_errors_read_like_0_5_1() {
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: b"ignored".to_vec(),
            stderr: format!("{}END", "x".repeat(3000)).into_bytes(),
        };
        let err = check_pip(Ok(out), "install", "a-1.0-py3-none-any.whl")
            .unwrap_err()
            .message;
        let prefix = "wheel install failed (code=1): a-1.0-py3-none-any.whl: ";
        assert!(err.starts_with(prefix), "{err}");
        assert_eq!(err.len() - prefix.len(), 2000);
        assert!(err.ends_with("END"));
        let timed_out = check_pip(Err(RunError::TimedOut), "install", "a.whl").unwrap_err();
        assert_eq!(timed_out.message, "wheel install timed out: a.whl");
        assert!(timed_out.killed);
        let killed = std::process::Output {
            status: std::process::ExitStatus::from_raw(9),
            stdout: b"only stdout".to_vec(),
            stderr: vec![],
        };
        assert_eq!(
            check_pip(Ok(killed), "uninstall", "pkg")
                .unwrap_err()
                .message,
            "wheel uninstall failed (code=-9): pkg: only stdout"
        );
    }

    fn info(name: &str, tags: &str) -> ObjectInfo {
        let mut i = ObjectInfo {
            name: name.into(),
            nuid: format!("N-{name}"),
            ..Default::default()
        };
        if !tags.is_empty() {
            i.headers
                .insert("x-pyoco-wheel-tags".into(), tags.to_string());
        }
        i
    }

    fn select(listing: &[ObjectInfo], worker_tags: &[&str]) -> Selection {
        let worker_tags = worker_tags.iter().map(|t| t.to_string()).collect();
        let supported = ["py3-none-any", "cp311-cp311-manylinux_2_17_x86_64"]
            .map(String::from)
            .into();
        choose(candidates(listing, &worker_tags), &supported)
    }

    #[test]
    fn latest_matching_compatible_version_wins_per_package() {
        let listing = [
            info("demo-1.9-py3-none-any.whl", ""),
            info("demo-1.10-py3-none-any.whl", "cpu"),
            info("Demo-2.0-py3-none-win_amd64.whl", "cpu"),
            info("demo-3.0-py3-none-any.whl", "gpu"),
            info("other-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "gpu,cpu"),
            info("bad_name.whl", ""),
        ];
        let s = select(&listing, &["cpu"]);
        assert_eq!(
            s.wanted.keys().collect::<Vec<_>>(),
            [
                "demo-1.10-py3-none-any.whl",
                "other-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
            ]
        );
        assert_eq!(s.wanted["demo-1.10-py3-none-any.whl"].package, "demo");
        assert_eq!(s.skipped_incompatible.len(), 1);
        assert_eq!(
            s.skipped_incompatible[0].wheel_name,
            "Demo-2.0-py3-none-win_amd64.whl"
        );
        assert_eq!(s.skipped_incompatible[0].reason, "unsupported_wheel_tags");

        let s = select(&listing, &["gpu"]);
        assert!(s.wanted.contains_key("demo-3.0-py3-none-any.whl"));
    }

    #[test]
    fn equal_versions_go_to_the_larger_filename() {
        let listing = [
            info("demo-1.0-py3-none-any.whl", ""),
            info("demo-1.0.0-py3-none-any.whl", ""),
        ];
        let s = select(&listing, &["default"]);
        assert_eq!(
            s.wanted.keys().collect::<Vec<_>>(),
            ["demo-1.0.0-py3-none-any.whl"]
        );
    }

    #[test]
    fn installed_wheels_come_sorted_from_the_manifest() {
        let mut m = WheelManifest::new();
        for (name, pkg) in [
            ("b-1.0-py3-none-any.whl", "b"),
            ("a-2.0-py3-none-any.whl", ""),
        ] {
            m.insert(
                name.into(),
                WheelManifestEntry {
                    nuid: format!("N-{name}"),
                    package_name: pkg.into(),
                    package_version: String::new(),
                    size_bytes: 1,
                    sha256_hex: String::new(),
                    tags: vec![],
                    installed_at: 3.0,
                },
            );
        }
        let w = installed_wheels(&m);
        assert_eq!(w[0].wheel_name, "a-2.0-py3-none-any.whl");
        assert_eq!(w[0].package_name.as_deref(), Some("a"));
        assert_eq!(w[0].package_version.as_deref(), Some("2.0"));
        assert_eq!(w[1].package_name.as_deref(), Some("b"));
    }
}
