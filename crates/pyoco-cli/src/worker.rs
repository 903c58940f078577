//! `pyoco-worker`: pull jobs for some tags from NATS JetStream and run them with pyoco.
//!
//! Flags follow pyoco-server 0.5.1 (contract §10.2), with two changes users will notice:
//! `--tags` defaults to `PYOCO_WORKER_TAGS`, then `PYOCO_DEFAULT_TAG` (0.5.1 ignored both,
//! §14-26), and `--concurrency N` runs N jobs at once (0.5.1: one per process). Runs execute
//! in warm Python runners (the interpreter of `PYOCO_PYTHON`, else the data dir's venv, else
//! `python3`), started in a scratch directory under the data dir, so pyoco's `./artifacts` no
//! longer appears in the directory the worker was started from.
//!
//! Ctrl-C or SIGTERM stop it gracefully: no new jobs, runs in progress may finish
//! (`--stop-timeout`, 30 s; runs still going then are stopped and handed back to the queue), the
//! registry record says `STOPPED_GRACEFUL`. (0.5.1: SIGTERM killed the worker outright.) Exit codes: 0 after SIGTERM, `--run-once` or a
//! normal end; 130 after Ctrl-C (as 0.5.1); 1 for configuration and startup errors; 2 for
//! malformed arguments.

use std::{path::Path, process::ExitCode, time::Duration};

use clap::Parser;
use pyoco_config::{spec, Settings};
use pyoco_store::{NatsConnect, SharedStore, StoreConfig};
use pyoco_worker::{Worker, WorkerConfig};
use tokio::sync::watch;

fn help(name: &str) -> String {
    let spec = spec(name).unwrap_or_else(|| panic!("{name} is in the settings table"));
    format!("{} [env: {name}]", spec.help)
}

#[derive(Parser, Debug)]
#[command(
    name = "pyoco-worker",
    version,
    about = "pyoco-server worker: runs pyoco workflows submitted through NATS JetStream",
    long_about = "pyoco-server worker: pulls jobs for its tags from NATS JetStream and runs them \
        with pyoco in warm Python runner processes.\n\n\
        Every flag overrides its PYOCO_* setting (environment or .env); docs/configuration.md \
        lists them all. Ctrl-C / SIGTERM stop gracefully (runs in progress may finish)."
)]
struct Cli {
    #[arg(long, value_name = "URL", help = help("PYOCO_NATS_URL"))]
    nats_url: Option<String>,
    /// Comma-separated tags to serve, earlier tags first; empty = PYOCO_DEFAULT_TAG
    /// [env: PYOCO_WORKER_TAGS].
    #[arg(long, value_name = "CSV")]
    tags: Option<String>,
    #[arg(long, value_name = "ID", help = help("PYOCO_WORKER_ID"))]
    worker_id: Option<String>,
    /// Flow resolver for jobs without a flow.yaml: `module:function` or
    /// `path/to/file.py:function` (called as `function(flow_name)`, must return a pyoco Flow).
    /// Without it such jobs fail with `flow_not_found` [env: PYOCO_FLOW_RESOLVER].
    #[arg(long, value_name = "SPEC")]
    flow_resolver: Option<String>,
    /// Seconds one pull request waits for jobs.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    poll_timeout: f64,
    /// Poll once, run what was fetched, then exit.
    #[arg(long)]
    run_once: bool,
    /// Jobs run at the same time (one warm Python runner each).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// On Ctrl-C / SIGTERM, seconds runs in progress may take to finish; runs still going then
    /// are stopped and their jobs handed back to the queue (NAK) for another worker.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    stop_timeout: f64,
    /// Install the registry's wheels meant for this worker into the runners' interpreter
    /// (with pip), at start and every --wheel-sync-interval-sec, between runs
    /// [env: PYOCO_WHEEL_SYNC_ENABLED].
    #[arg(long, overrides_with = "no_wheel_sync")]
    wheel_sync: bool,
    /// Turn wheel sync off, whatever PYOCO_WHEEL_SYNC_ENABLED says.
    #[arg(long, overrides_with = "wheel_sync")]
    no_wheel_sync: bool,
    /// Where synced wheels and their manifest (.installed.json) are kept; relative to the
    /// working directory [env: PYOCO_WHEEL_SYNC_DIR, default .pyoco/wheels].
    #[arg(long, value_name = "DIR")]
    wheel_sync_dir: Option<std::path::PathBuf>,
    #[arg(long, value_name = "SECONDS", help = help("PYOCO_WHEEL_SYNC_INTERVAL_SEC"))]
    wheel_sync_interval_sec: Option<f64>,
    #[arg(long, value_name = "SECONDS", help = help("PYOCO_WHEEL_INSTALL_TIMEOUT_SEC"))]
    wheel_install_timeout_sec: Option<f64>,
}

impl Cli {
    /// Flags as `PYOCO_*` overrides, so they are validated like every other value.
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        let mut add = |name, v: Option<String>| {
            if let Some(v) = v {
                o.push((name, v));
            }
        };
        add("PYOCO_NATS_URL", self.nats_url.clone());
        add("PYOCO_WORKER_TAGS", self.tags.clone());
        add("PYOCO_WORKER_ID", self.worker_id.clone());
        // Empty: as if not given (the setting applies).
        add(
            "PYOCO_FLOW_RESOLVER",
            self.flow_resolver.clone().filter(|r| !r.trim().is_empty()),
        );
        if self.wheel_sync {
            add("PYOCO_WHEEL_SYNC_ENABLED", Some("true".into()));
        }
        if self.no_wheel_sync {
            add("PYOCO_WHEEL_SYNC_ENABLED", Some("false".into()));
        }
        add(
            "PYOCO_WHEEL_SYNC_DIR",
            self.wheel_sync_dir
                .as_ref()
                .map(|d| d.display().to_string()),
        );
        add(
            "PYOCO_WHEEL_SYNC_INTERVAL_SEC",
            self.wheel_sync_interval_sec.map(|v| v.to_string()),
        );
        add(
            "PYOCO_WHEEL_INSTALL_TIMEOUT_SEC",
            self.wheel_install_timeout_sec.map(|v| v.to_string()),
        );
        o
    }
}

/// A failure worth one clear line on stderr and exit code 1.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = crate::load_settings("pyoco-worker", &cli.overrides());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    {
        let _in_runtime = runtime.enter();
        crate::logging::init(&settings, "pyoco-server:worker");
    }
    match runtime.block_on(run(cli, settings)) {
        Ok(Some("SIGINT")) => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(Failure(message)) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("[pyoco-worker][ERR-PYOCO-0018] {message}");
    ExitCode::from(1)
}

fn worker_config(cli: &Cli, settings: &Settings, cwd: &Path) -> Result<WorkerConfig, Failure> {
    let mut config = WorkerConfig::from_settings(settings)?;
    config.poll_timeout = poll_timeout("--poll-timeout", cli.poll_timeout).map_err(Failure)?;
    if !(cli.stop_timeout.is_finite() && cli.stop_timeout >= 0.0) {
        return Err(Failure(format!(
            "--stop-timeout must be a number of seconds ≥ 0, got {}",
            cli.stop_timeout
        )));
    }
    config.stop_timeout = Duration::from_secs_f64(cli.stop_timeout);
    config.run_once = cli.run_once;
    config.concurrency = usize::from(cli.concurrency);
    // Runners work in their own directory: relative PYTHONPATH entries must not change meaning.
    config.set_pythonpath(std::env::var_os("PYTHONPATH").as_deref(), cwd, false)?;
    // As 0.5.1: a relative PYOCO_WHEEL_SYNC_DIR / --wheel-sync-dir is under the working dir.
    config.resolve_wheel_sync_dir(cwd);
    Ok(config)
}

/// A worker's poll timeout given as `flag` (`--poll-timeout`, `pyoco-server up
/// --worker-poll-timeout`): a positive, finite number of seconds.
pub(crate) fn poll_timeout(flag: &str, seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "{flag} must be a positive number of seconds, got {seconds}"
        ))
    }
}

/// Run until a signal (its name is returned) or the end of `--run-once`.
async fn run(cli: Cli, settings: Settings) -> Result<Option<&'static str>, Failure> {
    let cwd = std::env::current_dir()?;
    let config = worker_config(&cli, &settings, &cwd)?;
    if config.wheel_sync.enabled {
        tracing::info!(
            dir = %config.wheel_sync.dir.display(),
            interval_sec = config.wheel_sync.interval.as_secs_f64(),
            "wheel sync enabled"
        );
    }

    let (signal_tx, signal_rx) = watch::channel::<Option<&'static str>>(None);
    tokio::spawn(async move {
        let signal = pyoco_appliance::shutdown_signal().await;
        tracing::info!(signal, "shutdown requested");
        let _ = signal_tx.send(Some(signal));
    });
    let signalled = |mut rx: watch::Receiver<Option<&'static str>>| async move {
        let _ = rx.wait_for(Option::is_some).await;
    };

    let target = NatsConnect::from(&settings);
    tracing::info!(url = %target.redacted_url(), "connecting to NATS");
    let store = SharedStore::connect_in_background_with(
        target,
        &format!("pyoco-nats-worker:{}", config.worker_id),
        StoreConfig::from(&settings),
    );
    let store = tokio::select! {
        store = store.wait_ready(Duration::from_secs(10 * 365 * 86_400)) => store?,
        _ = signalled(signal_rx.clone()) => return Ok(*signal_rx.borrow()),
    };

    Worker::new(config)
        .run(store, signalled(signal_rx.clone()))
        .await?;
    let signal = *signal_rx.borrow();
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_overrides() {
        let cli = Cli::parse_from([
            "pyoco-worker",
            "--tags",
            "cpu,gpu",
            "--worker-id",
            "w7",
            "--nats-url",
            "nats://h:4222",
            "--no-wheel-sync",
        ]);
        let o = cli.overrides();
        assert!(o.contains(&("PYOCO_WORKER_TAGS", "cpu,gpu".to_string())));
        assert!(o.contains(&("PYOCO_WORKER_ID", "w7".to_string())));
        assert!(o.contains(&("PYOCO_NATS_URL", "nats://h:4222".to_string())));
        assert!(o.contains(&("PYOCO_WHEEL_SYNC_ENABLED", "false".to_string())));
        assert_eq!(cli.concurrency, 1);
        assert_eq!(cli.poll_timeout, 1.0);
        assert_eq!(cli.stop_timeout, 30.0);
    }

    #[test]
    fn wheel_sync_flags_are_real_and_relative_dirs_follow_the_cwd() {
        let cli = Cli::parse_from([
            "pyoco-worker",
            "--wheel-sync",
            "--wheel-sync-dir",
            "synced",
            "--wheel-sync-interval-sec",
            "1.5",
            "--wheel-install-timeout-sec",
            "20",
        ]);
        let mut env: std::collections::HashMap<String, String> = cli
            .overrides()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        env.insert("PYOCO_LOAD_DOTENV".into(), "0".into());
        env.insert(
            "PYOCO_DATA_DIR".into(),
            "/tmp/pyoco-cli-wheel-sync-test".into(),
        );
        let settings = Settings::load(&pyoco_config::LoadOptions {
            env,
            cwd: "/home/u/proj".into(),
            home: None,
        })
        .unwrap();
        let Ok(config) = worker_config(&cli, &settings, Path::new("/home/u/proj")) else {
            panic!("worker config");
        };
        assert!(config.wheel_sync.enabled);
        assert_eq!(config.wheel_sync.dir, Path::new("/home/u/proj/synced"));
        assert_eq!(config.wheel_sync.interval, Duration::from_millis(1500));
        assert_eq!(config.wheel_sync.install_timeout, Duration::from_secs(20));
    }

    #[test]
    fn the_flow_resolver_flag_wins_over_the_setting_and_reaches_the_runners() {
        let load = |cli: &Cli| {
            let mut env: std::collections::HashMap<String, String> = [
                ("PYOCO_LOAD_DOTENV", "0"),
                ("PYOCO_DATA_DIR", "/tmp/pyoco-cli-resolver-test"),
                ("PYOCO_FLOW_RESOLVER", "from_env.flows:resolve"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            for (k, v) in cli.overrides() {
                env.insert(k.to_string(), v);
            }
            let settings = Settings::load(&pyoco_config::LoadOptions {
                env,
                cwd: "/home/u/proj".into(),
                home: None,
            })
            .unwrap();
            let Ok(config) = worker_config(cli, &settings, Path::new("/home/u/proj")) else {
                panic!("worker config");
            };
            config
                .runner_env
                .iter()
                .find(|(k, _)| k == "PYOCO_FLOW_RESOLVER")
                .map(|(_, v)| v.clone())
        };
        let flag = Cli::parse_from(["pyoco-worker", "--flow-resolver", "flows/r.py:resolve"]);
        assert_eq!(
            load(&flag).as_deref(),
            Some("/home/u/proj/flows/r.py:resolve")
        );
        let setting = Cli::parse_from(["pyoco-worker"]);
        assert_eq!(load(&setting).as_deref(), Some("from_env.flows:resolve"));
        let empty_flag = Cli::parse_from(["pyoco-worker", "--flow-resolver", ""]);
        assert_eq!(load(&empty_flag).as_deref(), Some("from_env.flows:resolve"));
    }

    #[test]
    fn without_tags_the_settings_decide() {
        let cli = Cli::parse_from(["pyoco-worker"]);
        assert!(cli.overrides().is_empty());
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        assert!(Cli::try_parse_from(["pyoco-worker", "--concurrency", "0"]).is_err());
    }
}
