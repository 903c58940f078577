//! `pyoco-client`: the command-line client of the pyoco-server HTTP gateway (contract §10.3).
//!
//! Same subcommands, flags, output and exit codes as 0.5.1's `pyoco-client`, so scripts written
//! for it keep working: JSON answers are printed exactly as Python's `json.dumps(obj,
//! ensure_ascii=True)` prints them, tables are padded the same way, and errors start with the
//! same first line (`ERR-PYOCO-0018: …`, `ERR-PYOCO-HTTP: request failed`, …). What changed is
//! what helps a person: every error ends with a `- hint:` that says what to do, `watch
//! --output status` shows a live progress line on a terminal, `--server` and `--api-key` can
//! come from `PYOCO_SERVER_URL` and `PYOCO_API_KEY`, and `https://` gateways work.
//!
//! One file per subcommand; this module parses the command line, runs the command on a small
//! tokio runtime (Ctrl-C ends it with exit code 130), and prints the error, if any.
//!
//! Exit codes: 0 success (also when stdout is closed early, e.g. `| head -1`); 1 for argument and
//! input errors, HTTP error answers, connection errors, cancel-wait timeouts, file I/O and
//! anything unexpected; 130 on Ctrl-C. `--help` and `--version` exit 0.

mod cancel;
mod dlq;
mod error;
mod gateway;
mod get;
mod list;
mod logs;
mod metrics;
mod output;
mod schedules;
mod sse;
mod submit;
mod watch;
mod wheels;
mod workers;

use std::{ffi::OsString, io::Write, process::ExitCode};

use clap::{error::ErrorKind, Parser, Subcommand};

use self::{error::CliError, gateway::Gateway, output::Out};

/// The gateway 0.5.1's client talks to by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// Help heading of the flags every subcommand accepts.
const GLOBAL: &str = "Global options";

#[derive(Parser, Debug)]
#[command(
    name = "pyoco-client",
    version,
    about = "Submit, inspect, watch and cancel pyoco runs, and manage plugin wheels, through a \
             pyoco-server gateway",
    long_about = "Submit, inspect, watch and cancel pyoco runs, and manage plugin wheels, through a \
        pyoco-server gateway.\n\n\
        Prints JSON (like Python's json.dumps) on stdout; errors go to stderr with a hint.\n\
        Exit codes: 0 ok, 1 error (arguments, input, HTTP, connection, timeout), 130 Ctrl-C.",
    infer_long_args = true
)]
struct Cli {
    /// Base URL of the gateway [default: http://127.0.0.1:8000].
    #[arg(long, global = true, value_name = "URL", env = "PYOCO_SERVER_URL", help_heading = GLOBAL)]
    server: Option<String>,
    /// API key, sent in the --api-key-header header (needed when the gateway has
    /// PYOCO_HTTP_AUTH_MODE=api_key).
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        env = "PYOCO_API_KEY",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    api_key: Option<String>,
    /// Header that carries the API key.
    #[arg(long, global = true, value_name = "NAME", default_value = "X-API-Key", help_heading = GLOBAL)]
    api_key_header: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a run of a flow the workers know (POST /runs).
    Submit(submit::SubmitArgs),
    /// Submit a run of a flow.yaml (POST /runs/yaml).
    SubmitYaml(submit::SubmitYamlArgs),
    /// Print a run's snapshot (GET /runs/{run_id}).
    Get(get::GetArgs),
    /// Print a run's task states and records (GET /runs/{run_id}/tasks).
    Tasks(get::TasksArgs),
    /// List runs, newest first (GET /runs).
    List(list::ListArgs),
    /// List runs page by page, or those updated after a time (GET /runs, paged shape).
    ListVnext(list::ListVnextArgs),
    /// Follow a run's changes as they happen (GET /runs/{run_id}/watch).
    Watch(watch::WatchArgs),
    /// Cancel a run, optionally waiting until it stopped (POST /runs/{run_id}/cancel).
    Cancel(cancel::CancelArgs),
    /// List the workers (GET /workers).
    Workers(workers::WorkersArgs),
    /// List the plugin wheels in the registry (GET /wheels).
    Wheels,
    /// List wheel uploads and deletions, newest first (GET /wheels/history).
    WheelHistory(wheels::WheelHistoryArgs),
    /// Check a plugin wheel locally, then upload it for the workers (POST /wheels).
    WheelUpload(wheels::WheelUploadArgs),
    /// Delete a wheel from the registry (DELETE /wheels/{name}).
    WheelDelete(wheels::WheelDeleteArgs),
    /// Print the Prometheus metrics text (GET /metrics).
    Metrics,
    /// The dead-letter queue: list, show, replay, delete (GET/POST/DELETE /dlq…; ours).
    Dlq(dlq::DlqArgs),
    /// Print the lines a run's tasks wrote; -f follows them live (GET /runs/{run_id}/logs…; ours).
    Logs(logs::LogsArgs),
    /// Run a flow.yaml on a schedule: once, every N seconds, or on a cron (POST /schedules/yaml).
    ScheduleYaml(schedules::ScheduleYamlArgs),
    /// List the schedules (GET /schedules).
    Schedules,
    /// List the runs a schedule dispatched, newest first (GET /schedules/{id}/runs).
    ScheduleRuns(schedules::ScheduleRunsArgs),
    /// Delete a schedule (DELETE /schedules/{id}).
    ScheduleDelete(schedules::ScheduleIdArgs),
    /// Pause a schedule: no runs until resumed (PATCH /schedules/{id}; ours).
    SchedulePause(schedules::ScheduleIdArgs),
    /// Resume a paused schedule from its next slot after now (PATCH /schedules/{id}; ours).
    ScheduleResume(schedules::ScheduleIdArgs),
}

/// Run `pyoco-client` with the process's arguments.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Run `pyoco-client` with `args` (the first one is the program name).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return parse_failure(&e),
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Unexpected(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                tokio::select! {
                    result = execute(&cli) => result,
                    _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string();
            if !text.is_empty() {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(cli: &Cli) -> Result<(), CliError> {
    // An empty PYOCO_SERVER_URL (or --server "") means the default, not "no URL".
    let server = cli
        .server
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_SERVER);
    let gw = Gateway::new(server, cli.api_key.as_deref(), &cli.api_key_header)?;
    let out = &mut Out::new();
    match &cli.command {
        Command::Submit(args) => submit::submit(args, &gw, out).await,
        Command::SubmitYaml(args) => submit::submit_yaml(args, &gw, out).await,
        Command::Get(args) => get::get(args, &gw, out).await,
        Command::Tasks(args) => get::tasks(args, &gw, out).await,
        Command::List(args) => list::list(args, &gw, out).await,
        Command::ListVnext(args) => list::list_vnext(args, &gw, out).await,
        Command::Watch(args) => watch::watch(args, &gw, out).await,
        Command::Cancel(args) => cancel::cancel(args, &gw, out).await,
        Command::Workers(args) => workers::workers(args, &gw, out).await,
        Command::Wheels => wheels::wheels(&gw, out).await,
        Command::WheelHistory(args) => wheels::wheel_history(args, &gw, out).await,
        Command::WheelUpload(args) => wheels::wheel_upload(args, &gw, out).await,
        Command::WheelDelete(args) => wheels::wheel_delete(args, &gw, out).await,
        Command::Metrics => metrics::metrics(&gw, out).await,
        Command::Dlq(args) => dlq::dlq(args, &gw, out).await,
        Command::Logs(args) => logs::logs(args, &gw, out).await,
        Command::ScheduleYaml(args) => schedules::schedule_yaml(args, &gw, out).await,
        Command::Schedules => schedules::schedules(&gw, out).await,
        Command::ScheduleRuns(args) => schedules::schedule_runs(args, &gw, out).await,
        Command::ScheduleDelete(args) => schedules::schedule_delete(args, &gw, out).await,
        Command::SchedulePause(args) => schedules::schedule_pause(args, true, &gw, out).await,
        Command::ScheduleResume(args) => schedules::schedule_pause(args, false, &gw, out).await,
    }
}

/// `--help`/`--version` print and exit 0; a usage error is 0.5.1's ERR-PYOCO-0018 message, exit 1
/// (0.5.1's client turns argparse errors into exit 1, not argparse's usual 2).
fn parse_failure(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            let err = CliError::Input {
                reason: "the following arguments are required: command".to_string(),
                detail: None,
                usage: Some("usage: pyoco-client [OPTIONS] <COMMAND>".to_string()),
                hint: "pyoco-client -h lists the commands (submit, submit-yaml, get, tasks, list, \
                       list-vnext, watch, cancel, workers, wheels, wheel-history, wheel-upload, \
                       wheel-delete, metrics, dlq, schedule-yaml, schedules, schedule-runs, \
                       schedule-delete, schedule-pause, schedule-resume)"
                    .to_string(),
            };
            let _ = writeln!(std::io::stderr(), "{err}");
            ExitCode::from(err.exit_code())
        }
        _ => {
            let err = usage_error(&e.render().to_string());
            let _ = writeln!(std::io::stderr(), "{err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// clap's rendered error as 0.5.1's `reason`/`usage`/`hint` lines.
fn usage_error(rendered: &str) -> CliError {
    let mut reason = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("error: ") {
            reason.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("tip: ") {
            tips.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("Usage: ") {
            usage = Some(format!("usage: {rest}"));
        } else if line.starts_with("For more information") {
        } else if !line.is_empty() && usage.is_none() && tips.is_empty() {
            // Continuation lines of the error (e.g. the list of missing arguments).
            reason.push(line.to_string());
        }
    }
    let subcommand = usage
        .as_deref()
        .and_then(|u| u.split_whitespace().nth(2))
        .filter(|w| !w.starts_with(['[', '<', '-']));
    let help = match subcommand {
        Some(sub) => format!("pyoco-client {sub} -h"),
        None => "pyoco-client <subcommand> -h".to_string(),
    };
    tips.push(help);
    CliError::Input {
        reason: reason.join(" "),
        detail: None,
        usage,
        hint: tips.join("; "),
    }
}

/// `--tags` CSV: trimmed, empty items dropped; `None` when nothing is left (not sent).
fn parse_tags(raw: Option<&str>) -> Option<Vec<String>> {
    let tags: Vec<String> = raw?
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    (!tags.is_empty()).then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pyoco-client").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_have_0_5_1_defaults() {
        let cli = parse(&["tasks", "r1"]).unwrap();
        // PYOCO_SERVER_URL may be set around the tests; the default shows without it.
        if std::env::var_os("PYOCO_SERVER_URL").is_none() {
            assert_eq!(cli.server, None);
        }
        assert_eq!(cli.api_key_header, "X-API-Key");
        let cli = parse(&[
            "--server",
            "http://h:1",
            "--api-key",
            "k",
            "get",
            "r1",
            "--records",
        ])
        .unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://h:1"));
        assert_eq!(cli.api_key.as_deref(), Some("k"));
        match cli.command {
            Command::Get(args) => assert!(args.records && args.run_id == "r1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_may_also_follow_the_subcommand() {
        let cli = parse(&["metrics", "--server", "http://h:2"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://h:2"));
    }

    #[test]
    fn submit_flags_parse_like_0_5_1() {
        let cli = parse(&[
            "submit",
            "--params",
            "{\"x\":1}",
            "--param",
            "a=1",
            "--param",
            "b=",
            "--tag",
            "t",
            "--tags",
            "x, y",
        ])
        .unwrap();
        let Command::Submit(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.flow_name, "main");
        assert_eq!(args.param, ["a=1", "b="]);
        assert_eq!(args.tag.as_deref(), Some("t"));
        assert_eq!(
            parse_tags(args.tags.as_deref()),
            Some(vec!["x".into(), "y".into()])
        );
    }

    #[test]
    fn long_flags_may_be_abbreviated_like_argparse() {
        let cli = parse(&["submit", "--flow", "f"]).unwrap();
        let Command::Submit(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.flow_name, "f");
    }

    #[test]
    fn list_vnext_has_the_list_flags_and_its_own() {
        let cli = parse(&[
            "list-vnext",
            "--status",
            "RUNNING",
            "--limit",
            "5",
            "--updated-after",
            "1700000000",
            "--cursor",
            "c",
            "--workflow-yaml-sha256",
            "ab",
            "--output",
            "table",
            "--full",
        ])
        .unwrap();
        let Command::ListVnext(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.list.status.as_deref(), Some("RUNNING"));
        assert_eq!(args.list.limit, Some(5));
        assert!(args.list.full);
        assert_eq!(args.list.output, list::ListOutput::Table);
        assert_eq!(args.updated_after, Some(1_700_000_000.0));
        assert_eq!(args.cursor.as_deref(), Some("c"));
    }

    #[test]
    fn watch_cancel_and_workers_defaults() {
        let Command::Watch(w) = parse(&["watch", "r"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (w.max_events, w.until_terminal, w.output),
            (0, false, watch::WatchOutput::Json)
        );
        let Command::Cancel(c) = parse(&["cancel", "--run-id", "r"]).unwrap().command else {
            panic!()
        };
        assert_eq!((c.wait, c.timeout_sec), (false, 30));
        let Command::Workers(k) = parse(&["workers"]).unwrap().command else {
            panic!()
        };
        assert_eq!(k.scope, "active");
        assert_eq!(k.output, workers::WorkersOutput::Json);
        assert!(
            parse(&["workers", "--state", "idle"]).is_err(),
            "choices are upper-case"
        );
        assert!(parse(&["workers", "--scope", "some"]).is_err());
    }

    #[test]
    fn required_flags_and_choices_are_enforced() {
        assert!(parse(&[
            "submit-yaml",
            "--workflow-file",
            "f.yaml",
            "--flow-name",
            "x"
        ])
        .is_err());
        assert!(parse(&["cancel"]).is_err());
        assert!(parse(&["list", "--output", "csv"]).is_err());
        assert!(parse(&["watch", "r", "--output", "table"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn usage_errors_become_the_0018_message() {
        let e = parse(&["cancel"]).unwrap_err();
        let text = usage_error(&e.render().to_string()).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("ERR-PYOCO-0018: {}", error::ERR_0018_MSG));
        assert!(
            lines[1].starts_with("- reason: the following required arguments were not provided:"),
            "{text}"
        );
        assert!(lines[1].contains("--run-id"), "{text}");
        assert!(
            lines[2].starts_with("- usage: usage: pyoco-client cancel"),
            "{text}"
        );
        assert_eq!(lines[3], "- hint: pyoco-client cancel -h");
    }

    #[test]
    fn an_unknown_flag_gets_a_suggestion() {
        // `--record` is an unambiguous prefix of `--records`: accepted, like argparse.
        assert!(parse(&["get", "r", "--record"]).is_ok());
        let e = parse(&["get", "r", "--recrods"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{e}");
        let text = usage_error(&e.render().to_string()).to_string();
        assert!(
            text.contains("- reason: unexpected argument '--recrods' found"),
            "{text}"
        );
        assert!(text.contains("- hint: "), "{text}");
        assert!(text.ends_with("pyoco-client get -h"), "{text}");
    }

    #[test]
    fn wheel_commands_parse_like_0_5_1() {
        assert!(matches!(
            parse(&["wheels"]).unwrap().command,
            Command::Wheels
        ));

        let Command::WheelHistory(h) = parse(&["wheel-history"]).unwrap().command else {
            panic!()
        };
        assert_eq!((h.limit, h.wheel_name, h.action), (100, None, None));
        let Command::WheelHistory(h) = parse(&[
            "wheel-history",
            "--limit",
            "5",
            "--wheel-name",
            "a-1.0-py3-none-any.whl",
            "--action",
            "delete",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(h.limit, 5);
        assert_eq!(h.wheel_name.as_deref(), Some("a-1.0-py3-none-any.whl"));
        assert_eq!(h.action, Some(wheels::HistoryAction::Delete));
        assert!(parse(&["wheel-history", "--action", "replace"]).is_err());
        for spelling in ["install_failed", "install-failed"] {
            let Command::WheelHistory(h) = parse(&["wheel-history", "--action", spelling])
                .unwrap()
                .command
            else {
                panic!()
            };
            assert_eq!(h.action, Some(wheels::HistoryAction::InstallFailed));
        }

        let Command::WheelUpload(u) = parse(&[
            "wheel-upload",
            "--wheel-file",
            "dist/a-1.0-py3-none-any.whl",
            "--tags",
            "cpu, gpu",
            "--no-replace",
            "--preflight",
            "off",
            "--allow-no-entry-points",
            "--allow-missing-usage-doc",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(u.wheel_file, "dist/a-1.0-py3-none-any.whl");
        assert_eq!(u.tags.as_deref(), Some("cpu, gpu"));
        assert!(u.no_replace && u.allow_no_entry_points && u.allow_missing_usage_doc);
        assert_eq!(u.preflight, wheels::Preflight::Off);
        assert!(
            parse(&["wheel-upload"]).is_err(),
            "--wheel-file is required"
        );
        assert!(parse(&[
            "wheel-upload",
            "--wheel-file",
            "a.whl",
            "--preflight",
            "lax"
        ])
        .is_err());

        let Command::WheelDelete(d) = parse(&["wheel-delete", "--name", "a-1.0-py3-none-any.whl"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(d.name, "a-1.0-py3-none-any.whl");
        assert!(parse(&["wheel-delete"]).is_err(), "--name is required");
    }

    #[test]
    fn tags_csv_drops_empty_items() {
        assert_eq!(parse_tags(None), None);
        assert_eq!(parse_tags(Some(" , ")), None);
        assert_eq!(
            parse_tags(Some("a,,b ")),
            Some(vec!["a".into(), "b".into()])
        );
    }
}
