//! What a worker needs to know, built once from [`Settings`] (plus CLI overrides).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use pyoco_config::{AppDirs, Settings};

use crate::{heartbeat::ack_progress_interval, runner::RunnerSpec, WorkerError};

/// Everything the worker's behaviour depends on. Build it with [`WorkerConfig::from_settings`]
/// and adjust fields (tests, CLI flags) before [`crate::Worker::new`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Registry key and the `worker_id` written into every run snapshot.
    pub worker_id: String,
    /// Tags served, in preference order (earlier tags are fetched first).
    pub tags: Vec<String>,
    /// `PYOCO_DEFAULT_TAG`: the tag of a job message without one.
    pub default_tag: String,
    /// Runs executed at the same time (one warm runner each).
    pub concurrency: usize,
    /// How long one pull request waits for jobs (`--poll-timeout`).
    pub poll_timeout: Duration,
    /// Poll once, finish what was fetched, and stop (`--run-once`).
    pub run_once: bool,
    /// Interpreter for the runners.
    pub python: PathBuf,
    /// Where `pyoco_runner.py` is written at startup.
    pub runner_dir: PathBuf,
    /// The runners' working directory (pyoco writes `./artifacts` there).
    pub work_dir: PathBuf,
    /// Environment added to the runners' (`PYOCO_DISCOVERY_MODULES`, `PYTHONPATH`, …). The
    /// runner's own settings (`PYOCO_FLOW_RESOLVER`, `PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES`,
    /// `PYOCO_RUNNER_TEE_TASK_OUTPUT`) are always in it, taken from [`Settings`], so a runner
    /// never reads them from the worker's process environment.
    pub runner_env: Vec<(String, String)>,
    /// How long a runner may take to start.
    pub runner_ready_timeout: Duration,
    /// `PYOCO_RUN_HEARTBEAT_INTERVAL_SEC`: snapshot heartbeat and cancel check period.
    pub run_heartbeat_interval: Duration,
    /// `PYOCO_ACK_PROGRESS_INTERVAL_SEC` as configured (≤ 0 disables in-progress ACKs). The
    /// period actually used also depends on the consumer's ack wait (§6.5).
    pub ack_progress_interval_sec: f64,
    /// `PYOCO_CONSUMER_ACK_WAIT_SEC`: used for the §6.5 rule when the consumer's own ack wait
    /// cannot be read.
    pub ack_wait: Duration,
    /// `PYOCO_CANCEL_GRACE_PERIOD_SEC`; `None` (0) never kills a cancelled run.
    pub cancel_grace_period: Option<Duration>,
    /// `PYOCO_MAX_RUN_SNAPSHOT_BYTES` (≤ 0 disables compaction).
    pub max_run_snapshot_bytes: i64,
    /// `PYOCO_DLQ_PUBLISH_EXECUTION_ERROR`.
    pub dlq_publish_execution_error: bool,
    /// `PYOCO_TASK_LOG_MAX_BYTES_PER_RUN`: stored live-log bytes per run (0: no live log).
    pub task_log_max_bytes_per_run: u64,
    /// `PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC`: registry touch period.
    pub worker_heartbeat_interval: Duration,
    /// Least time between two non-terminal snapshot writes of one run.
    pub snapshot_min_interval: Duration,
    /// On shutdown, how long runs in progress may take to finish before they are stopped and
    /// their jobs handed back to the queue.
    pub stop_timeout: Duration,
    /// Delay of a NAK (0.5.1: 2 s).
    pub nak_delay: Duration,
    /// Wheel sync from the registry (§6.10), off unless `PYOCO_WHEEL_SYNC_ENABLED`.
    pub wheel_sync: WheelSyncConfig,
    /// `PYOCO_TASK_MODULES`: the modules a job's flow.yaml may call (empty: any). A job naming
    /// another one is an invalid job (FAILED, DLQ `task_module_not_allowed`).
    pub task_modules: Vec<String>,
    /// `PYOCO_WORKER_PREFETCH`: fetch the next job while every runner is busy with short runs.
    pub prefetch: bool,
}

/// How the worker keeps its interpreter in step with the wheel registry (see `wheel_sync.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct WheelSyncConfig {
    /// `PYOCO_WHEEL_SYNC_ENABLED` / `--wheel-sync`.
    pub enabled: bool,
    /// `PYOCO_WHEEL_SYNC_DIR`: downloaded wheels and `.installed.json`. A relative path is
    /// taken against the worker's working directory when it starts (as 0.5.1 does); callers
    /// that mean something else make it absolute first
    /// ([`WorkerConfig::resolve_wheel_sync_dir`]).
    pub dir: PathBuf,
    /// `PYOCO_WHEEL_SYNC_INTERVAL_SEC` (at least 0.1 s): time between two attempts, counted
    /// from the start of the previous one.
    pub interval: Duration,
    /// `PYOCO_WHEEL_INSTALL_TIMEOUT_SEC` (at least 1 s): longest `pip install` /
    /// `pip uninstall` of one wheel; the process is killed after it.
    pub install_timeout: Duration,
    /// Longest time a due sync keeps fetching paused while runs are still in progress and
    /// runners sit idle. After it, fetching resumes and the sync is retried one interval
    /// later. With every runner busy (e.g. one runner) nothing is lost by waiting, so the
    /// sync waits for the runs however long they take.
    pub max_pause: Duration,
}

/// Default [`WheelSyncConfig::max_pause`].
pub const DEFAULT_WHEEL_SYNC_MAX_PAUSE: Duration = Duration::from_secs(60);

impl WheelSyncConfig {
    /// The settings' values (`PYOCO_WHEEL_SYNC_*`, `PYOCO_WHEEL_INSTALL_TIMEOUT_SEC`), with
    /// 0.5.1's floors.
    pub fn from_settings(settings: &Settings) -> WheelSyncConfig {
        let secs = |v: f64, floor: f64| {
            Duration::try_from_secs_f64(if v.is_finite() { v.max(floor) } else { floor })
                .unwrap_or(Duration::from_secs_f64(floor))
        };
        WheelSyncConfig {
            enabled: settings.wheel_sync_enabled,
            dir: settings.wheel_sync_dir.clone(),
            interval: secs(settings.wheel_sync_interval_sec, 0.1),
            install_timeout: secs(settings.wheel_install_timeout_sec, 1.0),
            max_pause: DEFAULT_WHEEL_SYNC_MAX_PAUSE,
        }
    }
}

/// Default least time between two non-terminal snapshot writes (0.5.1's trace flush: 0.25 s).
pub const DEFAULT_SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_millis(200);

impl WorkerConfig {
    /// The configuration `settings` describe. Tags: `PYOCO_WORKER_TAGS`, else
    /// `[PYOCO_DEFAULT_TAG]` (§14-26). Interpreter: `PYOCO_PYTHON`, else the data dir's venv if
    /// it exists, else `python3`. Runner files live under `<data dir>/runner`.
    pub fn from_settings(settings: &Settings) -> Result<WorkerConfig, WorkerError> {
        let dirs = AppDirs::from_settings(settings)
            .map_err(|e| WorkerError::Config(format!("cannot find the app data dir: {e}")))?;
        let tags = if settings.worker_tags.is_empty() {
            vec![settings.default_tag.clone()]
        } else {
            settings.worker_tags.clone()
        };
        let python = settings
            .python
            .clone()
            .unwrap_or_else(|| default_python(&dirs.venv_dir()));
        let runner_dir = dirs.data_dir().join("runner");
        // The worker id may contain `/` and `.` (a KV key): keep it one path component.
        let dir_name: String = settings
            .worker_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let work_dir = runner_dir.join("work").join(dir_name);
        let mut runner_env = vec![
            // Empty: no resolver (the runner treats an empty value as unset).
            (
                "PYOCO_FLOW_RESOLVER".to_string(),
                settings.flow_resolver.clone().unwrap_or_default(),
            ),
            (
                "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES".to_string(),
                settings.runner_max_task_output_bytes.to_string(),
            ),
            (
                "PYOCO_RUNNER_TEE_TASK_OUTPUT".to_string(),
                if settings.runner_tee_task_output {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
            (
                // A task value larger than a run snapshot may be is replaced by a marker in
                // the runner (0 = no compaction: bounded by the largest NATS payload instead).
                "PYOCO_RUNNER_MAX_RECORD_VALUE_BYTES".to_string(),
                match settings.max_run_snapshot_bytes {
                    0 => 8 * 1024 * 1024,
                    n => n,
                }
                .to_string(),
            ),
            (
                // The runner stops sending lines past this many line bytes (the worker's cap
                // counts stored bytes, so it is reached first; PROTOCOL.md §5.1).
                "PYOCO_RUNNER_LOG_MAX_BYTES_PER_RUN".to_string(),
                settings.task_log_max_bytes_per_run.to_string(),
            ),
            (
                "PYOCO_RUNNER_GUARD".to_string(),
                if settings.runner_guard { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(m) = settings
            .discovery_modules
            .as_ref()
            .filter(|m| !m.is_empty())
        {
            runner_env.push(("PYOCO_DISCOVERY_MODULES".to_string(), m.clone()));
        }
        if !settings.tasks_path.is_empty() {
            // PYOCO_TASKS_PATH first, then what the process's PYTHONPATH already says.
            let mut entries = settings.tasks_path.clone();
            if let Some(existing) = std::env::var_os("PYTHONPATH") {
                for e in std::env::split_paths(&existing) {
                    if !e.as_os_str().is_empty() && !entries.contains(&e) {
                        entries.push(e);
                    }
                }
            }
            let joined = std::env::join_paths(entries)
                .map_err(|e| WorkerError::Config(format!("PYOCO_TASKS_PATH: {e}")))?;
            runner_env.push((
                "PYTHONPATH".to_string(),
                joined.to_string_lossy().into_owned(),
            ));
        }
        let secs = |v: f64| Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::ZERO);
        Ok(WorkerConfig {
            task_modules: settings.task_modules.clone(),
            prefetch: settings.worker_prefetch,
            worker_id: settings.worker_id.clone(),
            tags,
            default_tag: settings.default_tag.clone(),
            concurrency: 1,
            poll_timeout: Duration::from_secs(1),
            run_once: false,
            python,
            runner_dir,
            work_dir,
            runner_env,
            runner_ready_timeout: Duration::from_secs(60),
            run_heartbeat_interval: secs(settings.run_heartbeat_interval_sec.max(0.1)),
            ack_progress_interval_sec: settings.ack_progress_interval_sec,
            ack_wait: secs(settings.consumer_ack_wait_sec),
            cancel_grace_period: (settings.cancel_grace_period_sec > 0.0)
                .then(|| secs(settings.cancel_grace_period_sec)),
            max_run_snapshot_bytes: i64::try_from(settings.max_run_snapshot_bytes)
                .unwrap_or(i64::MAX),
            dlq_publish_execution_error: settings.dlq_publish_execution_error,
            task_log_max_bytes_per_run: settings.task_log_max_bytes_per_run,
            worker_heartbeat_interval: secs(settings.worker_heartbeat_interval_sec.max(0.1)),
            snapshot_min_interval: DEFAULT_SNAPSHOT_MIN_INTERVAL,
            stop_timeout: Duration::from_secs(30),
            nak_delay: Duration::from_secs(2),
            wheel_sync: WheelSyncConfig::from_settings(settings),
        })
    }

    /// Make a relative wheel sync dir absolute against `base` (absolute ones are kept): the
    /// headless worker passes its working directory (0.5.1's meaning), the appliance its data
    /// dir (its other wheel sync defaults are the settings table's appliance defaults, see
    /// `Settings::with_appliance_defaults`).
    pub fn resolve_wheel_sync_dir(&mut self, base: &Path) {
        if self.wheel_sync.dir.is_relative() {
            self.wheel_sync.dir = base.join(&self.wheel_sync.dir);
        }
    }

    /// Give the runners a `PYTHONPATH` that means what it meant where the worker was started:
    /// relative entries of `pythonpath` (the caller's `PYTHONPATH`) are made absolute against
    /// `cwd`, because the runners work in their own scratch directory. With `include_cwd`,
    /// `cwd` itself is appended, so task modules next to the user's flow.yaml import without
    /// setting anything (what `pyoco-server up` does).
    pub fn set_pythonpath(
        &mut self,
        pythonpath: Option<&std::ffi::OsStr>,
        cwd: &Path,
        include_cwd: bool,
    ) -> Result<(), WorkerError> {
        // What is there already (PYOCO_TASKS_PATH) comes first.
        let mut entries: Vec<PathBuf> = self
            .runner_env
            .iter()
            .filter(|(k, _)| k == "PYTHONPATH")
            .flat_map(|(_, v)| std::env::split_paths(v).collect::<Vec<_>>())
            .collect();
        let given: Vec<PathBuf> = pythonpath
            .map(|p| {
                std::env::split_paths(p)
                    .map(|e| {
                        if e.as_os_str().is_empty() || e.is_relative() {
                            cwd.join(e)
                        } else {
                            e
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        for e in given {
            if !entries.contains(&e) {
                entries.push(e);
            }
        }
        if include_cwd && !entries.iter().any(|e| e == cwd) {
            entries.push(cwd.to_path_buf());
        }
        if entries.is_empty() {
            return Ok(());
        }
        let joined = std::env::join_paths(entries)
            .map_err(|e| WorkerError::Config(format!("PYTHONPATH: {e}")))?;
        self.set_runner_env("PYTHONPATH", &joined.to_string_lossy());
        Ok(())
    }

    /// Set (or replace) one variable of the runners' environment.
    pub fn set_runner_env(&mut self, name: &str, value: &str) {
        self.runner_env.retain(|(k, _)| k != name);
        self.runner_env.push((name.to_string(), value.to_string()));
    }

    /// In-progress ACK period for a consumer whose ack wait is `ack_wait` (§6.5).
    pub fn ack_progress_period(&self, ack_wait: Duration) -> Option<Duration> {
        ack_progress_interval(self.ack_progress_interval_sec, ack_wait)
    }

    pub(crate) fn runner_spec(&self, script: PathBuf) -> RunnerSpec {
        RunnerSpec {
            python: self.python.clone(),
            script,
            cwd: self.work_dir.clone(),
            env: self.runner_env.clone(),
            ready_timeout: self.runner_ready_timeout,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), WorkerError> {
        if self.tags.is_empty() {
            return Err(WorkerError::Config(
                "the worker has no tags to serve".into(),
            ));
        }
        for tag in &self.tags {
            pyoco_wire::validate_tag(tag)
                .map_err(|e| WorkerError::Config(format!("invalid worker tag: {e}")))?;
        }
        if self.worker_id.is_empty() {
            return Err(WorkerError::Config(
                "the worker id must not be empty".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(WorkerError::Config("concurrency must be at least 1".into()));
        }
        Ok(())
    }
}

/// `<venv>/bin/python` (`Scripts\python.exe` on Windows) if it exists, else `python3`.
fn default_python(venv: &Path) -> PathBuf {
    let candidate = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(if cfg!(windows) { "python" } else { "python3" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(vars: &[(&str, &str)]) -> Settings {
        let mut opts = pyoco_config::LoadOptions {
            env: Default::default(),
            cwd: PathBuf::from("/home/u/proj"),
            home: None,
        };
        opts.env.insert("PYOCO_LOAD_DOTENV".into(), "0".into());
        opts.env
            .insert("PYOCO_DATA_DIR".into(), "/srv/pyoco-data".into());
        for (k, v) in vars {
            opts.env.insert(k.to_string(), v.to_string());
        }
        Settings::load(&opts).unwrap()
    }

    #[test]
    fn the_tasks_path_comes_first_on_the_runners_pythonpath() {
        let settings = settings_with(&[("PYOCO_TASKS_PATH", "/home/u/proj:lib")]);
        let mut cfg = WorkerConfig::from_settings(&settings).unwrap();
        let pythonpath = |cfg: &WorkerConfig| {
            cfg.runner_env
                .iter()
                .find(|(k, _)| k == "PYTHONPATH")
                .map(|(_, v)| v.clone())
        };
        let first = pythonpath(&cfg).unwrap();
        assert!(
            first.starts_with("/home/u/proj:/home/u/proj/lib"),
            "{first}"
        );
        // `pyoco-server up` adds the caller's PYTHONPATH and its directory after it.
        cfg.set_pythonpath(Some("extra".as_ref()), Path::new("/launch"), true)
            .unwrap();
        let all = pythonpath(&cfg).unwrap();
        assert!(all.starts_with("/home/u/proj:/home/u/proj/lib:"), "{all}");
        assert!(all.ends_with(":/launch/extra:/launch"), "{all}");
        // Unset: nothing is added.
        let cfg = WorkerConfig::from_settings(&settings_with(&[])).unwrap();
        assert_eq!(pythonpath(&cfg), None);
    }

    #[test]
    fn wheel_sync_settings_keep_0_5_1_floors_and_a_raw_dir() {
        let settings = settings_with(&[
            ("PYOCO_WHEEL_SYNC_ENABLED", "1"),
            ("PYOCO_WHEEL_SYNC_INTERVAL_SEC", "0.1"),
            ("PYOCO_WHEEL_INSTALL_TIMEOUT_SEC", "1"),
        ]);
        let mut cfg = WorkerConfig::from_settings(&settings).unwrap();
        assert!(cfg.wheel_sync.enabled);
        assert_eq!(cfg.wheel_sync.dir, PathBuf::from(".pyoco/wheels"));
        assert_eq!(cfg.wheel_sync.interval, Duration::from_millis(100));
        assert_eq!(cfg.wheel_sync.install_timeout, Duration::from_secs(1));
        assert_eq!(cfg.wheel_sync.max_pause, DEFAULT_WHEEL_SYNC_MAX_PAUSE);
        cfg.resolve_wheel_sync_dir(Path::new("/home/u/proj"));
        assert_eq!(
            cfg.wheel_sync.dir,
            PathBuf::from("/home/u/proj/.pyoco/wheels")
        );
    }

    #[test]
    fn the_runner_settings_always_reach_the_runner_env() {
        let env = |cfg: &WorkerConfig, name: &str| {
            let found: Vec<&str> = cfg
                .runner_env
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            found[0].to_string()
        };
        // Unset: the defaults, written out, so the runner never sees the process's values.
        let cfg = WorkerConfig::from_settings(&settings_with(&[])).unwrap();
        assert_eq!(env(&cfg, "PYOCO_FLOW_RESOLVER"), "");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES"), "65536");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_TEE_TASK_OUTPUT"), "0");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_GUARD"), "1");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_MAX_RECORD_VALUE_BYTES"), "262144");
        let cfg = WorkerConfig::from_settings(&settings_with(&[
            ("PYOCO_FLOW_RESOLVER", "flows/r.py:resolve"),
            ("PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES", "1_000"),
            ("PYOCO_RUNNER_TEE_TASK_OUTPUT", "on"),
            ("PYOCO_RUNNER_GUARD", "off"),
            ("PYOCO_MAX_RUN_SNAPSHOT_BYTES", "0"),
        ]))
        .unwrap();
        assert_eq!(
            env(&cfg, "PYOCO_FLOW_RESOLVER"),
            "/home/u/proj/flows/r.py:resolve"
        );
        assert_eq!(env(&cfg, "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES"), "1000");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_TEE_TASK_OUTPUT"), "1");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_GUARD"), "0");
        assert_eq!(env(&cfg, "PYOCO_RUNNER_MAX_RECORD_VALUE_BYTES"), "8388608");
    }

    #[test]
    fn settings_defaults_give_the_default_tag_and_one_runner() {
        let mut opts = pyoco_config::LoadOptions {
            env: Default::default(),
            cwd: PathBuf::from("/"),
            home: None,
        };
        opts.env.insert("PYOCO_DEFAULT_TAG".into(), "gpu".into());
        opts.env.insert("PYOCO_LOAD_DOTENV".into(), "0".into());
        opts.env
            .insert("PYOCO_DATA_DIR".into(), "/tmp/pyoco-worker-cfg-test".into());
        opts.env
            .insert("PYOCO_DISCOVERY_MODULES".into(), "my.tasks".into());
        let settings = Settings::load(&opts).unwrap();
        let cfg = WorkerConfig::from_settings(&settings).unwrap();
        assert_eq!(cfg.tags, vec!["gpu".to_string()]);
        assert_eq!(cfg.concurrency, 1);
        assert_eq!(
            cfg.runner_dir,
            PathBuf::from("/tmp/pyoco-worker-cfg-test/runner")
        );
        assert_eq!(cfg.cancel_grace_period, Some(Duration::from_secs(30)));
        assert!(cfg
            .runner_env
            .contains(&("PYOCO_DISCOVERY_MODULES".into(), "my.tasks".into())));
        assert_eq!(
            cfg.ack_progress_period(Duration::from_secs(30)),
            Some(Duration::from_secs(10))
        );
    }
}
