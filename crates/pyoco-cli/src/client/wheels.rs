//! The wheel registry (contract §3.2 `/wheels*`, §7): `wheels` (`GET /wheels`),
//! `wheel-history` (`GET /wheels/history`), `wheel-upload` (`POST /wheels`) and `wheel-delete`
//! (`DELETE /wheels/{name}`), with 0.5.1's flags and JSON output.
//!
//! `wheel-upload` first checks the wheel locally ([`preflight`]; `--preflight strict` fails on
//! a problem, `warn` prints the problems and uploads anyway, `off` skips the checks), then sends
//! it like 0.5.1 — multipart parts `replace` (`"true"`/`"false"`), `tags` (the CSV, cleaned, only
//! when there are tags) and `wheel` (the file, named as on disk, `application/octet-stream`) —
//! but streamed from disk rather than read whole into memory, with a progress bar of the bytes
//! sent when stderr is a terminal.
//!
//! The gateway refuses a version that is not newer than the package's latest (409), a wheel
//! above `PYOCO_WHEEL_MAX_BYTES` (413) and a file name that is not a wheel's (422); the hints of
//! those errors say what to change (see `error.rs`).

mod preflight;

use std::{
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{multipart, Method};

use self::preflight::{Finding, Report, Rules};
use super::{
    error::CliError,
    gateway::{streamed_file_part, upload_timeout, Gateway, Query},
    output::Out,
    parse_tags,
};

/// What 0.5.1 prints before each preflight warning (on stderr).
const WARN_PREFIX: &str = "[pyoco-client][preflight][warn]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HistoryAction {
    Upload,
    Delete,
    /// A worker's pip refused the wheel (our gateway only; a 0.5.1 gateway answers 422).
    #[value(name = "install_failed", alias = "install-failed")]
    InstallFailed,
}

impl HistoryAction {
    fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Upload => "upload",
            HistoryAction::Delete => "delete",
            HistoryAction::InstallFailed => "install_failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preflight {
    /// Check the wheel; stop on a problem.
    Strict,
    /// Check the wheel; print the problems as warnings and upload anyway.
    Warn,
    /// Upload without checking.
    Off,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelHistoryArgs {
    /// At most this many records, newest first (the gateway accepts 1..500).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        allow_negative_numbers = true
    )]
    pub limit: i64,
    /// Only records of this wheel file name.
    #[arg(long, value_name = "FILE")]
    pub wheel_name: Option<String>,
    /// Only uploads, only deletes, or only failed installs on workers.
    #[arg(long, value_enum)]
    pub action: Option<HistoryAction>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelUploadArgs {
    /// Path to the *.whl to upload.
    #[arg(long, value_name = "FILE", required = true)]
    pub wheel_file: String,
    /// Comma-separated worker tags the wheel is for (none: every worker with wheel sync).
    #[arg(long, value_name = "CSV")]
    pub tags: Option<String>,
    /// Replace an existing wheel of the same name (the default).
    #[arg(long, overrides_with = "no_replace")]
    pub replace: bool,
    /// Do not replace an existing wheel of the same name.
    #[arg(long, overrides_with = "replace")]
    pub no_replace: bool,
    /// Local checks of the wheel before uploading: strict stops on a problem, warn only
    /// prints it, off skips the checks.
    #[arg(long, value_enum, default_value = "strict")]
    pub preflight: Preflight,
    /// Accept a wheel without entry points (a plain library, no `pyoco.tasks`).
    #[arg(long)]
    pub allow_no_entry_points: bool,
    /// Accept a wheel without usage documentation (a long description of 80+ characters or a
    /// Documentation Project-URL).
    #[arg(long)]
    pub allow_missing_usage_doc: bool,
}

impl WheelUploadArgs {
    /// `--replace`/`--no-replace`: the last one given wins; replace by default.
    fn replace(&self) -> bool {
        !self.no_replace
    }

    fn rules(&self) -> Rules {
        Rules {
            require_entry_points: !self.allow_no_entry_points,
            require_usage_doc: !self.allow_missing_usage_doc,
        }
    }
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelDeleteArgs {
    /// The wheel file name to delete (as `pyoco-client wheels` lists it).
    #[arg(long, value_name = "FILE", required = true)]
    pub name: String,
}

/// `pyoco-client wheels`.
pub(crate) async fn wheels(gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    out.json(&gw.get_json(&["wheels"], &Query::new()).await?)
}

/// `pyoco-client wheel-history`.
pub(crate) async fn wheel_history(
    args: &WheelHistoryArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    out.json(
        &gw.get_json(&["wheels", "history"], &history_query(args))
            .await?,
    )
}

/// 0.5.1's query: `limit` always, `wheel_name` when non-empty, `action` when given.
fn history_query(args: &WheelHistoryArgs) -> Query {
    let mut query: Query = vec![("limit", args.limit.to_string())];
    if let Some(name) = args.wheel_name.as_deref().filter(|n| !n.is_empty()) {
        query.push(("wheel_name", name.to_string()));
    }
    if let Some(action) = args.action {
        query.push(("action", action.as_str().to_string()));
    }
    query
}

/// `pyoco-client wheel-delete`.
pub(crate) async fn wheel_delete(
    args: &WheelDeleteArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let url = gw.url(&["wheels", &args.name], &Query::new());
    out.json(&gw.send_json(gw.request(Method::DELETE, url)).await?)
}

/// `pyoco-client wheel-upload`.
pub(crate) async fn wheel_upload(
    args: &WheelUploadArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let path = Path::new(&args.wheel_file);
    if args.preflight != Preflight::Off {
        let report = run_preflight(path, args.rules())?;
        let (lines, failure) = verdict(&report, args.preflight);
        let mut stderr = std::io::stderr().lock();
        for line in lines {
            let _ = writeln!(stderr, "{line}");
        }
        if let Some(error) = failure {
            return Err(error);
        }
    }

    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| file_error(path, &e))?;
    let metadata = file.metadata().await.map_err(|e| file_error(path, &e))?;
    if metadata.is_dir() {
        return Err(is_a_directory(path));
    }
    let len = metadata.len();
    let file_name = path.file_name().map_or_else(
        || args.wheel_file.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let progress = UploadProgress::new(len, &file_name, std::io::stderr().is_terminal());
    let bar = progress.bar.clone();
    let (part, read_failure) = streamed_file_part(file, len, file_name, move |n| {
        if let Some(bar) = &bar {
            bar.inc(n);
            if bar.position() >= len {
                bar.set_message("sent; waiting for the gateway to store it");
            }
        }
    });
    let mut form =
        multipart::Form::new().text("replace", if args.replace() { "true" } else { "false" });
    if let Some(tags) = parse_tags(args.tags.as_deref()) {
        form = form.text("tags", tags.join(","));
    }
    let form = form.part("wheel", part);
    let request = gw
        .request(Method::POST, gw.url(&["wheels"], &Query::new()))
        .multipart(form);
    let result = gw.send_json_within(request, upload_timeout(len)).await;
    drop(progress);
    match result {
        Ok(stored) => out.json(&stored),
        // The request broke because the file could not be read: that is the error to show.
        Err(CliError::Connection { .. }) if read_failure.get().is_some() => Err(CliError::FileIo {
            reason: format!(
                "{}: {}",
                path.display(),
                read_failure.get().unwrap_or_default()
            ),
            hint: "the wheel could not be read while it was being sent: check that nothing \
                   rewrites or removes it during the upload, then upload again"
                .to_string(),
        }),
        Err(e) => Err(e),
    }
}

/// Run the checks on the file at `path` (an unreadable file is a file I/O error, like 0.5.1).
fn run_preflight(path: &Path, rules: Rules) -> Result<Report, CliError> {
    let file = std::fs::File::open(path).map_err(|e| file_error(path, &e))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(is_a_directory(path));
    }
    let name = path.display().to_string();
    preflight::check(std::io::BufReader::new(file), &name, rules)
        .map_err(|e| file_error(path, &e.0))
}

/// What a preflight report means in `mode`: the lines to print on stderr first (warnings, and in
/// `warn` mode the errors as warnings after them, like 0.5.1), and the error that stops the
/// upload (`strict` with errors).
fn verdict(report: &Report, mode: Preflight) -> (Vec<String>, Option<CliError>) {
    let mut lines: Vec<String> = report.warnings.iter().flat_map(warning_lines).collect();
    if report.errors.is_empty() {
        return (lines, None);
    }
    match mode {
        Preflight::Off => (Vec::new(), None),
        Preflight::Warn => {
            lines.extend(report.errors.iter().flat_map(warning_lines));
            (lines, None)
        }
        Preflight::Strict => (lines, Some(preflight_error(&report.errors))),
    }
}

/// 0.5.1's warning line, then where and how to fix it.
fn warning_lines(finding: &Finding) -> [String; 3] {
    [
        format!("{WARN_PREFIX} {}", finding.message),
        format!("  - detail: {}", finding.detail),
        format!("  - fix: {}", finding.fix),
    ]
}

/// `strict` with errors: 0.5.1's reason line, then every problem's detail and fix.
fn preflight_error(errors: &[Finding]) -> CliError {
    // Several problems are numbered so that each detail matches its fix.
    let join = |part: fn(&Finding) -> &str| -> String {
        if errors.len() == 1 {
            return part(&errors[0]).to_string();
        }
        let items: Vec<String> = errors
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{}) {}", i + 1, part(f)))
            .collect();
        items.join("; ")
    };
    let reason: Vec<&str> = errors.iter().map(|f| f.message.as_str()).collect();
    CliError::Input {
        // 0.5.1's reason, byte for byte.
        reason: format!("wheel preflight failed: {}", reason.join("; ")),
        detail: Some(join(|f| f.detail.as_str())),
        usage: None,
        hint: format!(
            "{}; or upload it anyway with --preflight warn (or off)",
            join(|f| f.fix.as_str())
        ),
    }
}

fn is_a_directory(path: &Path) -> CliError {
    file_error(
        path,
        &std::io::Error::from(std::io::ErrorKind::IsADirectory),
    )
}

fn file_error(path: &Path, error: &std::io::Error) -> CliError {
    CliError::FileIo {
        reason: format!("{}: {error}", path.display()),
        hint: "check the --wheel-file path and its read permission".to_string(),
    }
}

/// The bytes-sent bar on stderr (a terminal only), cleared when dropped — also when Ctrl-C
/// drops the upload.
struct UploadProgress {
    bar: Option<ProgressBar>,
}

impl UploadProgress {
    fn new(len: u64, file_name: &str, on_terminal: bool) -> UploadProgress {
        let bar = on_terminal.then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:24}] {bytes}/{total_bytes} \
                 ({binary_bytes_per_sec}) {msg}",
            )
            .expect("a valid progress template")
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(format!("uploading {file_name}"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        UploadProgress { bar }
    }
}

impl Drop for UploadProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(n: u8) -> Finding {
        Finding {
            message: format!("message {n}"),
            detail: format!("detail {n}"),
            fix: format!("fix {n}"),
        }
    }

    fn args(extra: &[&str]) -> WheelUploadArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            upload: WheelUploadArgs,
        }
        let argv = ["x", "--wheel-file", "demo-1.0-py3-none-any.whl"];
        Wrapper::try_parse_from(argv.iter().chain(extra))
            .unwrap()
            .upload
    }

    #[test]
    fn upload_flags_default_like_0_5_1() {
        let a = args(&[]);
        assert!(a.replace());
        assert_eq!(a.preflight, Preflight::Strict);
        assert_eq!(
            a.rules(),
            Rules {
                require_entry_points: true,
                require_usage_doc: true
            }
        );
        assert_eq!(a.tags, None);
    }

    #[test]
    fn the_last_of_replace_and_no_replace_wins() {
        assert!(!args(&["--no-replace"]).replace());
        assert!(args(&["--no-replace", "--replace"]).replace());
        assert!(!args(&["--replace", "--no-replace"]).replace());
    }

    #[test]
    fn allow_flags_relax_the_rules() {
        let a = args(&[
            "--allow-no-entry-points",
            "--allow-missing-usage-doc",
            "--preflight",
            "warn",
        ]);
        assert_eq!(
            a.rules(),
            Rules {
                require_entry_points: false,
                require_usage_doc: false
            }
        );
        assert_eq!(a.preflight, Preflight::Warn);
    }

    #[test]
    fn history_query_is_0_5_1s() {
        let a = WheelHistoryArgs {
            limit: 100,
            wheel_name: None,
            action: None,
        };
        assert_eq!(history_query(&a), vec![("limit", "100".to_string())]);
        let a = WheelHistoryArgs {
            limit: 5,
            wheel_name: Some("demo-1.0-py3-none-any.whl".into()),
            action: Some(HistoryAction::Delete),
        };
        assert_eq!(
            history_query(&a),
            vec![
                ("limit", "5".to_string()),
                ("wheel_name", "demo-1.0-py3-none-any.whl".to_string()),
                ("action", "delete".to_string())
            ]
        );
        let a = WheelHistoryArgs {
            limit: 1,
            wheel_name: Some(String::new()),
            action: None,
        };
        assert_eq!(history_query(&a).len(), 1, "an empty name is not sent");
    }

    #[test]
    fn strict_fails_with_0_5_1s_reason_then_details_and_fixes() {
        let report = Report {
            errors: vec![finding(1), finding(2)],
            warnings: vec![finding(3)],
        };
        let (warnings, error) = verdict(&report, Preflight::Strict);
        assert_eq!(
            warnings.len(),
            3,
            "the warnings are printed before the error"
        );
        let text = error.expect("strict fails").to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("ERR-PYOCO-0018: {}", super::super::error::ERR_0018_MSG)
        );
        assert_eq!(
            lines[1],
            "- reason: wheel preflight failed: message 1; message 2"
        );
        assert_eq!(lines[2], "- detail: 1) detail 1; 2) detail 2");
        assert_eq!(
            lines[3],
            "- hint: 1) fix 1; 2) fix 2; or upload it anyway with --preflight warn (or off)"
        );
        // One problem: no numbers.
        let one = Report {
            errors: vec![finding(1)],
            warnings: vec![],
        };
        let text = verdict(&one, Preflight::Strict).1.unwrap().to_string();
        assert!(
            text.ends_with(
                "\n- detail: detail 1\n- hint: fix 1; or upload it anyway with --preflight warn (or off)"
            ),
            "{text}"
        );
    }

    #[test]
    fn warn_prints_errors_as_warnings_after_the_warnings() {
        let report = Report {
            errors: vec![finding(1)],
            warnings: vec![finding(2)],
        };
        let (lines, error) = verdict(&report, Preflight::Warn);
        assert!(error.is_none());
        assert_eq!(
            lines,
            [
                "[pyoco-client][preflight][warn] message 2",
                "  - detail: detail 2",
                "  - fix: fix 2",
                "[pyoco-client][preflight][warn] message 1",
                "  - detail: detail 1",
                "  - fix: fix 1",
            ]
        );
        // Without errors, strict only warns.
        let report = Report {
            errors: vec![],
            warnings: vec![finding(2)],
        };
        let (lines, error) = verdict(&report, Preflight::Strict);
        assert_eq!((lines.len(), error.is_none()), (3, true));
    }

    #[test]
    fn an_unreadable_wheel_is_a_file_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let rules = args(&[]).rules();
        let missing = run_preflight(&dir.path().join("missing.whl"), rules)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("ERR-PYOCO-0018: file I/O error\n- reason: "),
            "{missing}"
        );
        assert!(missing.contains("--wheel-file"), "{missing}");
        let directory = run_preflight(dir.path(), rules).unwrap_err().to_string();
        assert!(
            directory.starts_with("ERR-PYOCO-0018: file I/O error\n- reason: "),
            "{directory}"
        );
    }
}
