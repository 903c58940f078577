//! `pyoco-server`: the gateway launcher of pyoco-server, and our all-in-one appliance.
//!
//! Compatible with 0.5.1's command line (contract §10.1): no arguments means `up`, and a first
//! argument that is a flag means `up <flags>` (the legacy flat form). `--with-nats` (alias
//! `--with-nats-bootstrap`) is the all-in-one appliance: a supervised nats-server with its
//! store in the data dir (instead of 0.5.1's external `nats-bootstrap` program), the gateway
//! and a local worker. Without it, `up` is 0.5.1's gateway-only launcher (add `--with-worker`
//! for a local worker, as in later pyoco-server versions). The local worker takes 0.7's
//! `--worker-id`, `--worker-tags`, `--worker-flow-resolver` and `--worker-poll-timeout`.
//!
//! Log lines go to stdout ([`crate::logging`]); the banner (addresses, data dir, the port
//! notices) and start-up errors go to stderr, so a `PYOCO_LOG_FORMAT=json` stdout is all JSON.

use std::{ffi::OsString, path::Path, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use pyoco_appliance::{shutdown_signal, Appliance, ApplianceOptions, Component, ComponentState};
use pyoco_config::{spec, Settings};
use pyoco_worker::WorkerConfig;

fn help(name: &str) -> String {
    let spec = spec(name).unwrap_or_else(|| panic!("{name} is in the settings table"));
    format!("{} [env: {name}]", spec.help)
}

#[derive(Parser, Debug)]
#[command(
    name = "pyoco-server",
    version,
    about = "pyoco-server: HTTP gateway, local worker and supervised NATS in one command",
    long_about = "pyoco-server: HTTP gateway, local worker and supervised NATS in one command.\n\n\
        Without a subcommand runs `up`. Every flag overrides its PYOCO_* setting (environment or \
        .env); docs/configuration.md lists them all."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the services (the default command).
    Up(UpArgs),
}

#[derive(Args, Debug, Default)]
struct UpArgs {
    #[arg(long, value_name = "HOST", help = help("PYOCO_HTTP_HOST"))]
    host: Option<String>,
    #[arg(long, value_name = "PORT", help = help("PYOCO_HTTP_PORT"))]
    port: Option<u16>,
    /// Log level (trace, debug, info, warning, error) [env: PYOCO_LOG_LEVEL].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[arg(long, value_name = "URL", help = help("PYOCO_NATS_URL"))]
    nats_url: Option<String>,
    #[arg(long, value_name = "LANG", help = help("PYOCO_DASHBOARD_LANG"))]
    dashboard_lang: Option<String>,
    /// All in one: start and supervise a local nats-server with JetStream (store in the data
    /// dir), and run a local worker beside the gateway.
    #[arg(long, visible_alias = "with-nats-bootstrap")]
    with_nats: bool,
    /// Run a local worker beside the gateway (the default with --with-nats).
    #[arg(long, conflicts_with = "no_worker")]
    with_worker: bool,
    /// With --with-nats: do not run a local worker.
    #[arg(long)]
    no_worker: bool,
    #[arg(long, value_name = "ID", help = help("PYOCO_WORKER_ID"))]
    worker_id: Option<String>,
    #[arg(long, value_name = "TAGS", help = help("PYOCO_WORKER_TAGS"))]
    worker_tags: Option<String>,
    /// The local worker's flow resolver for jobs without flow.yaml: `module:function` or
    /// `path/file.py:function` [env: PYOCO_FLOW_RESOLVER].
    #[arg(long, value_name = "SPEC")]
    worker_flow_resolver: Option<String>,
    /// Seconds one pull request of the local worker waits for jobs (as `pyoco-worker
    /// --poll-timeout`) [default: 1].
    #[arg(long, value_name = "SECONDS")]
    worker_poll_timeout: Option<f64>,
    #[arg(long, value_name = "HOST", help = help("PYOCO_NATS_LISTEN_HOST"))]
    nats_listen_host: Option<String>,
    #[arg(long, value_name = "PORT", help = help("PYOCO_NATS_CLIENT_PORT"))]
    nats_client_port: Option<u16>,
    #[arg(long, value_name = "PORT", help = help("PYOCO_NATS_HTTP_PORT"))]
    nats_http_port: Option<u16>,
    #[arg(long, value_name = "DIR", help = help("PYOCO_DATA_DIR"))]
    data_dir: Option<std::path::PathBuf>,
}

impl UpArgs {
    /// Flags as `PYOCO_*` overrides, so they are validated like every other value.
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        let mut add = |name, v: Option<String>| {
            if let Some(v) = v {
                o.push((name, v));
            }
        };
        add("PYOCO_HTTP_HOST", self.host.clone());
        add("PYOCO_HTTP_PORT", self.port.map(|p| p.to_string()));
        add("PYOCO_LOG_LEVEL", self.log_level.clone());
        add("PYOCO_DASHBOARD_LANG", self.dashboard_lang.clone());
        add("PYOCO_WORKER_ID", self.worker_id.clone());
        add("PYOCO_WORKER_TAGS", self.worker_tags.clone());
        // Empty: as if not given (the setting applies).
        add(
            "PYOCO_FLOW_RESOLVER",
            self.worker_flow_resolver
                .clone()
                .filter(|r| !r.trim().is_empty()),
        );
        add("PYOCO_NATS_LISTEN_HOST", self.nats_listen_host.clone());
        add(
            "PYOCO_NATS_CLIENT_PORT",
            self.nats_client_port.map(|p| p.to_string()),
        );
        add(
            "PYOCO_NATS_HTTP_PORT",
            self.nats_http_port.map(|p| p.to_string()),
        );
        add(
            "PYOCO_DATA_DIR",
            self.data_dir.as_ref().map(|d| d.display().to_string()),
        );
        // With a managed NATS, --nats-url may only repeat the managed URL (checked later).
        if !self.with_nats {
            add("PYOCO_NATS_URL", self.nats_url.clone());
        }
        o
    }
}

/// 0.5.1's legacy forms: no arguments ⇒ `up`; a leading flag ⇒ `up <flags>`.
fn normalise_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    match first.as_deref() {
        None => args.push("up".into()),
        Some("-h" | "--help" | "-V" | "--version") => {}
        Some(a) if a.starts_with('-') => args.insert(1, "up".into()),
        _ => {}
    }
    args
}

/// A failure worth one clear line on stderr and exit code 1.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalise_args(std::env::args_os().collect()));
    let Command::Up(args) = cli.command;
    let settings = crate::load_settings("pyoco-server", &args.overrides());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    {
        let _in_runtime = runtime.enter();
        crate::logging::init(&settings, "pyoco-server:http");
    }
    match runtime.block_on(up(args, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("[pyoco-server][ERR-PYOCO-0018] {message}");
    ExitCode::from(1)
}

impl UpArgs {
    /// Whether `up` runs a local worker.
    fn runs_worker(&self) -> bool {
        if self.with_nats {
            !self.no_worker
        } else {
            self.with_worker
        }
    }
}

/// The local worker's configuration (`None` without a local worker): the appliance's (its
/// defaults, synced wheels under the data dir; `--worker-flow-resolver` is
/// `PYOCO_FLOW_RESOLVER` in `settings`), with `--worker-poll-timeout` and the folder `up` was
/// started in on the runners' `PYTHONPATH`. `--worker-poll-timeout` is checked even when no
/// worker runs, so a typo never goes unnoticed.
fn local_worker_config(
    args: &UpArgs,
    settings: &Settings,
    cwd: &Path,
) -> Result<Option<WorkerConfig>, Failure> {
    let poll_timeout = args
        .worker_poll_timeout
        .map(|s| crate::worker::poll_timeout("--worker-poll-timeout", s))
        .transpose()
        .map_err(Failure)?;
    if !args.runs_worker() {
        return Ok(None);
    }
    let mut config = pyoco_appliance::local_worker_config(settings)?;
    if let Some(poll_timeout) = poll_timeout {
        config.poll_timeout = poll_timeout;
    }
    // Task modules next to the user's flow.yaml import without any PYTHONPATH.
    config.set_pythonpath(std::env::var_os("PYTHONPATH").as_deref(), cwd, true)?;
    Ok(Some(config))
}

async fn up(args: UpArgs, settings: Settings) -> Result<(), Failure> {
    let managed_nats = args.with_nats;
    let worker = args.runs_worker();
    let cwd = if worker {
        std::env::current_dir()?
    } else {
        std::path::PathBuf::new()
    };
    let worker_config = local_worker_config(&args, &settings, &cwd)?;
    let options = || {
        let mut options = ApplianceOptions::all_in_one(settings.clone());
        options.managed_nats = managed_nats;
        options.worker = worker;
        options.worker_config = worker_config.clone();
        options
    };
    let appliance = if managed_nats && args.nats_url.is_none() {
        // The appliance on a developer's machine: a default port another program holds (a
        // system nats-server on 4222, a web server on 8000) is replaced by a free one, and the
        // addresses printed below say which. (`--nats-url` names the managed server's address,
        // so its port is not replaced.)
        Appliance::start_taking_free_default_ports(options, |notice| {
            eprintln!("pyoco-server: {notice}")
        })
        .await?
    } else {
        Appliance::start(options()).await?
    };
    let status = appliance.status().borrow().clone();
    if let (true, Some(url)) = (managed_nats, &args.nats_url) {
        if url.trim_end_matches('/') != status.nats_url {
            appliance.stop().await;
            return Err(Failure(format!(
                "--nats-url mismatch with managed NATS: expected {}, got {url} \
                 (drop --with-nats to use an external NATS)",
                status.nats_url
            )));
        }
    }
    // The banner is for the person who started us: stderr, like the notices above and the
    // startup errors. Stdout carries the log lines only (0.5.1's stream), so with
    // PYOCO_LOG_FORMAT=json every stdout line is JSON.
    if let Some(api) = &status.api_url {
        eprintln!("pyoco-server: API and dashboard at {api}/");
    }
    if managed_nats {
        eprintln!(
            "pyoco-server: NATS (JetStream) ready at {}",
            status.nats_url
        );
        if let Some(m) = appliance.nats().and_then(|n| n.monitor_url()) {
            eprintln!("pyoco-server: NATS monitoring at {m}");
        }
        if let Some(n) = appliance.nats() {
            eprintln!("pyoco-server: JetStream store {}", n.store_dir().display());
        }
    } else {
        eprintln!("pyoco-server: using NATS at {}", status.nats_url);
    }
    if worker {
        eprintln!(
            "pyoco-server: local worker {:?} serving tags {}",
            settings.worker_id,
            settings.worker_tags.join(",")
        );
        // Where `tasks:hello` is looked for: the first thing to check when a run fails with
        // `ModuleNotFoundError`.
        if let Some(config) = &worker_config {
            eprintln!(
                "pyoco-server: local worker {:?} imports task modules from {}",
                settings.worker_id,
                task_import_folders(config)
            );
        }
    }
    eprintln!("pyoco-server: data dir {}", status.data_dir);
    eprintln!("pyoco-server: press Ctrl-C to stop");

    let outcome = wait_for_stop(&appliance).await;
    tracing::info!("stopping");
    appliance.stop().await;
    eprintln!("pyoco-server: stopped");
    outcome
}

/// The runners' `PYTHONPATH` entries, in order, for the start-up banner.
fn task_import_folders(config: &WorkerConfig) -> String {
    let folders: Vec<String> = config
        .runner_env
        .iter()
        .filter(|(name, _)| name == "PYTHONPATH")
        .flat_map(|(_, value)| std::env::split_paths(value).collect::<Vec<_>>())
        .map(|folder| folder.display().to_string())
        .collect();
    if folders.is_empty() {
        "the runner's own sys.path only".to_string()
    } else {
        folders.join(", ")
    }
}

/// Wait for Ctrl-C or SIGTERM (Ok), or for NATS or the gateway to fail for good (Err). A
/// failing local worker is restarted by the appliance and does not stop the gateway.
async fn wait_for_stop(appliance: &Appliance) -> Result<(), Failure> {
    let mut status = appliance.status();
    let failed = async {
        loop {
            {
                let s = status.borrow_and_update();
                for c in [Component::Nats, Component::Gateway] {
                    if let ComponentState::Failed { error } = &s.component(c).state {
                        return format!("{} failed: {error}", c.label());
                    }
                }
            }
            if status.changed().await.is_err() {
                return "the appliance stopped unexpectedly".to_string();
            }
        }
    };
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutdown requested");
            Ok(())
        }
        error = failed => Err(Failure(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn no_arguments_means_up() {
        assert_eq!(
            normalise_args(args(&["pyoco-server"])),
            args(&["pyoco-server", "up"])
        );
    }

    #[test]
    fn a_leading_flag_means_up_with_flags() {
        assert_eq!(
            normalise_args(args(&["pyoco-server", "--port", "9000"])),
            args(&["pyoco-server", "up", "--port", "9000"])
        );
        assert_eq!(
            normalise_args(args(&["pyoco-server", "--help"])),
            args(&["pyoco-server", "--help"])
        );
    }

    #[test]
    fn flags_become_overrides_and_help_names_the_variable() {
        let cli = Cli::parse_from(normalise_args(args(&[
            "pyoco-server",
            "--with-nats-bootstrap",
            "--nats-client-port",
            "0",
            "--port",
            "9001",
        ])));
        let Command::Up(up) = cli.command;
        assert!(up.with_nats);
        let o = up.overrides();
        assert!(o.contains(&("PYOCO_NATS_CLIENT_PORT", "0".to_string())));
        assert!(o.contains(&("PYOCO_HTTP_PORT", "9001".to_string())));
        assert!(help("PYOCO_HTTP_PORT").contains("[env: PYOCO_HTTP_PORT]"));
    }

    #[test]
    fn the_worker_flow_resolver_flag_is_the_flow_resolver_setting() {
        let up = |extra: &[&str]| {
            let mut v = vec!["pyoco-server", "up", "--with-nats"];
            v.extend_from_slice(extra);
            let Command::Up(up) = Cli::parse_from(args(&v)).command;
            up.overrides()
        };
        assert!(up(&["--worker-flow-resolver", "flows/r.py:resolve"])
            .contains(&("PYOCO_FLOW_RESOLVER", "flows/r.py:resolve".to_string())));
        assert!(!up(&["--worker-flow-resolver", ""])
            .iter()
            .any(|(k, _)| *k == "PYOCO_FLOW_RESOLVER"));
        assert!(!up(&[]).iter().any(|(k, _)| *k == "PYOCO_FLOW_RESOLVER"));
    }

    fn up_args(v: &[&str]) -> UpArgs {
        let Command::Up(up) = Cli::try_parse_from(normalise_args(args(v)))
            .unwrap_or_else(|e| panic!("{v:?}: {e}"))
            .command;
        up
    }

    fn settings() -> Settings {
        let env = [
            ("PYOCO_LOAD_DOTENV", "0"),
            ("PYOCO_DATA_DIR", "/tmp/pyoco-cli-up-worker-test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Settings::load(&pyoco_config::LoadOptions {
            env,
            cwd: "/home/u/proj".into(),
            home: None,
        })
        .unwrap()
    }

    fn local_worker(v: &[&str]) -> Result<Option<WorkerConfig>, String> {
        local_worker_config(&up_args(v), &settings(), Path::new("/home/u/proj")).map_err(|f| f.0)
    }

    #[test]
    fn worker_poll_timeout_reaches_the_local_worker_config() {
        use std::time::Duration;
        let poll = |v: &[&str]| {
            local_worker(v)
                .unwrap()
                .expect("a local worker")
                .poll_timeout
        };
        assert_eq!(
            poll(&[
                "pyoco-server",
                "up",
                "--with-nats",
                "--worker-poll-timeout",
                "2.5"
            ]),
            Duration::from_millis(2500)
        );
        assert_eq!(
            poll(&[
                "pyoco-server",
                "--with-worker",
                "--worker-poll-timeout",
                "0.2"
            ]),
            Duration::from_millis(200),
            "legacy flat form, gateway with a local worker"
        );
        assert_eq!(
            poll(&["pyoco-server", "up", "--with-nats"]),
            Duration::from_secs(1),
            "pyoco-worker's default"
        );
        assert!(
            local_worker(&["pyoco-server", "up", "--with-nats", "--no-worker"])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn worker_poll_timeout_must_be_a_positive_number_of_seconds() {
        for (given, shown) in [("0", "0"), ("-1", "-1"), ("NaN", "NaN"), ("inf", "inf")] {
            let flag = format!("--worker-poll-timeout={given}");
            for v in [
                &["pyoco-server", "up", "--with-nats", &flag][..],
                // Checked even without a local worker.
                &["pyoco-server", "up", "--with-nats", "--no-worker", &flag][..],
            ] {
                assert_eq!(
                    local_worker(v).unwrap_err(),
                    format!(
                        "--worker-poll-timeout must be a positive number of seconds, got {shown}"
                    ),
                    "{v:?}"
                );
            }
        }
        // Not a number at all: a usage error, like pyoco-worker --poll-timeout abc.
        assert!(Cli::try_parse_from(args(&[
            "pyoco-server",
            "up",
            "--worker-poll-timeout",
            "abc"
        ]))
        .is_err());
    }
}
