//! What can go wrong in `pyoco-client`, and how it is told to the user.
//!
//! Every error is printed on stderr as 0.5.1 prints it, so scripts that grep the first line keep
//! working: the first line is 0.5.1's (`ERR-PYOCO-0018: …`, `ERR-PYOCO-HTTP: request failed`,
//! `ERR-PYOCO-HTTP: connection error`, `ERR-PYOCO-CANCEL: wait timeout`,
//! `ERR-PYOCO-UNEXPECTED: …`), then `- reason:` says what happened (for HTTP errors exactly
//! 0.5.1's `HTTP <code> <METHOD> <path>: <body>`), and `- hint:` says what to do about it —
//! which is where we differ from 0.5.1, whose hints were generic.

use std::fmt;

use serde_json::Value;

/// The fixed MSG-PYOCO-0018 text 0.5.1 prints after `ERR-PYOCO-0018:` for input errors.
pub(crate) const ERR_0018_MSG: &str = "CLI引数が不正です（入力形式を確認してください）";

/// Exit code for every error (0.5.1: 1 for argument, input, HTTP, connection and I/O errors).
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code after Ctrl-C (128 + SIGINT), like 0.5.1.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// A failed `pyoco-client` command.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad arguments or input (`ERR-PYOCO-0018: <MSG-0018>`).
    Input {
        reason: String,
        /// Extra `- detail:` line (the JSON and YAML parse errors of `--params-file`).
        detail: Option<String>,
        /// `- usage:` line (argument-parsing errors only).
        usage: Option<String>,
        hint: String,
    },
    /// A local file could not be read (`ERR-PYOCO-0018: file I/O error`).
    FileIo { reason: String, hint: String },
    /// The gateway answered with an error status (`ERR-PYOCO-HTTP: request failed`).
    Http(HttpFailure),
    /// The gateway could not be reached, or the connection broke
    /// (`ERR-PYOCO-HTTP: connection error`).
    Connection { reason: String, hint: String },
    /// `cancel --wait` saw no terminal status in time (`ERR-PYOCO-CANCEL: wait timeout`).
    CancelTimeout { run_id: String, timeout_sec: i64 },
    /// Anything else (`ERR-PYOCO-UNEXPECTED: …`).
    Unexpected(String),
    /// stdout was closed by the reader (`pyoco-client watch … | head -1`): stop quietly.
    BrokenPipe,
    /// Ctrl-C.
    Interrupted,
}

/// An HTTP error answer, with what is needed to print 0.5.1's reason line and a useful hint.
#[derive(Debug)]
pub(crate) struct HttpFailure {
    pub status: u16,
    pub method: String,
    /// The URL path only, like 0.5.1 (`req.url.path`): no query string.
    pub path: String,
    pub body: String,
}

impl CliError {
    /// An input error with a hint.
    pub(crate) fn input(reason: impl Into<String>, hint: impl Into<String>) -> CliError {
        CliError::Input {
            reason: reason.into(),
            detail: None,
            usage: None,
            hint: hint.into(),
        }
    }

    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Interrupted => EXIT_INTERRUPTED,
            CliError::BrokenPipe => 0,
            _ => EXIT_ERROR,
        }
    }
}

impl fmt::Display for CliError {
    /// The text printed on stderr (without a trailing newline); empty for the quiet cases.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input {
                reason,
                detail,
                usage,
                hint,
            } => {
                write!(f, "ERR-PYOCO-0018: {ERR_0018_MSG}\n- reason: {reason}")?;
                if let Some(detail) = detail {
                    write!(f, "\n- detail: {detail}")?;
                }
                if let Some(usage) = usage {
                    write!(f, "\n- usage: {usage}")?;
                }
                write!(f, "\n- hint: {hint}")
            }
            CliError::FileIo { reason, hint } => write!(
                f,
                "ERR-PYOCO-0018: file I/O error\n- reason: {reason}\n- hint: {hint}"
            ),
            CliError::Http(failure) => write!(
                f,
                "ERR-PYOCO-HTTP: request failed\n- reason: {}\n- hint: {}",
                failure.reason(),
                failure.hint()
            ),
            CliError::Connection { reason, hint } => write!(
                f,
                "ERR-PYOCO-HTTP: connection error\n- reason: {reason}\n- hint: {hint}"
            ),
            CliError::CancelTimeout {
                run_id,
                timeout_sec,
            } => write!(
                f,
                "ERR-PYOCO-CANCEL: wait timeout\n- reason: cancel wait timeout for run_id={run_id}\n\
                 - hint: the run did not reach COMPLETED, FAILED or CANCELLED within {timeout_sec} s: \
                 a worker stops a run at its next task boundary (and a run no worker picked up stays \
                 CANCELLING); check it with `pyoco-client get {run_id}` and `pyoco-client workers`, \
                 or wait longer with --timeout-sec"
            ),
            CliError::Unexpected(message) => write!(f, "ERR-PYOCO-UNEXPECTED: {message}"),
            CliError::BrokenPipe | CliError::Interrupted => Ok(()),
        }
    }
}

impl HttpFailure {
    /// 0.5.1's reason: `HTTP <code> <METHOD> <path>: <body stripped>` (no `: ` when empty).
    pub(crate) fn reason(&self) -> String {
        let base = format!("HTTP {} {} {}", self.status, self.method, self.path);
        let body = self.body.trim();
        if body.is_empty() {
            base
        } else {
            format!("{base}: {body}")
        }
    }

    /// The `detail` of a JSON error body: a string, or a list of FastAPI/pydantic errors.
    fn detail(&self) -> Option<Value> {
        let body: Value = serde_json::from_str(self.body.trim()).ok()?;
        body.get("detail").cloned()
    }

    /// What the user should do about this answer.
    pub(crate) fn hint(&self) -> String {
        let detail = self.detail();
        let detail_str = detail.as_ref().and_then(Value::as_str).unwrap_or("");
        match self.status {
            401 => "the gateway requires an API key: pass --api-key KEY or set PYOCO_API_KEY \
                    (sent in the header named by --api-key-header, default X-API-Key); an admin \
                    creates keys with `pyoco-server-admin api-key create --tenant T`"
                .to_string(),
            403 => "the gateway rejected the API key: check --api-key / PYOCO_API_KEY (keys look \
                    like pyoco_<id>.<secret>; it may have been revoked, see `pyoco-server-admin \
                    api-key list`) and that --api-key-header matches the gateway's \
                    PYOCO_HTTP_API_KEY_HEADER"
                .to_string(),
            404 if detail_str == "run not found" => {
                "check the run id with `pyoco-client list` (runs of another tenant are hidden)"
                    .to_string()
            }
            404 if detail_str == "worker not found" => {
                "check the worker id with `pyoco-client workers --scope all --include-hidden`"
                    .to_string()
            }
            404 if detail_str == "wheel not found" => {
                "check the wheel file name with `pyoco-client wheels`".to_string()
            }
            404 | 405 => format!(
                "the gateway does not serve {} {}: check that --server points at a pyoco-server \
                 gateway, and that it is recent enough for this command",
                self.method, self.path
            ),
            413 if detail_str == "wheel too large" || self.path.ends_with("/wheels") => {
                "the wheel is larger than PYOCO_WHEEL_MAX_BYTES on the server: build a smaller \
                 wheel (leave tests and data files out of the package), or have the gateway's \
                 operator raise PYOCO_WHEEL_MAX_BYTES (a proxy in front of the gateway may also \
                 limit the request size)"
                    .to_string()
            }
            413 => format!(
                "{}: the gateway limits uploads (PYOCO_WORKFLOW_YAML_MAX_BYTES for flow.yaml, \
                 PYOCO_WHEEL_MAX_BYTES for wheels); send a smaller file or raise the limit",
                non_empty(detail_str, "request too large")
            ),
            422 => hint_422(detail.as_ref()),
            409 => hint_409(detail_str),
            503 => "the gateway cannot reach NATS: check the nats-server it uses \
                    (PYOCO_NATS_URL), or start everything with `pyoco-server up --with-nats`"
                .to_string(),
            500..=599 => "the gateway failed: its log has the reason".to_string(),
            200..=299 => "that is not what a pyoco-server gateway answers: check that --server \
                          points at one"
                .to_string(),
            _ => "check server status and request parameters".to_string(),
        }
    }
}

fn non_empty<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() {
        fallback
    } else {
        s
    }
}

/// 409 (`POST /wheels`): the registry already has this version, or a newer one.
fn hint_409(detail: &str) -> String {
    const LISTED: &str = "`pyoco-client wheels` lists the wheels already uploaded";
    match detail {
        "wheel version already exists; bump version" => format!(
            "the registry already has this version of the package: bump the version in your \
             package and rebuild the wheel ({LISTED}; to upload the same version again, delete \
             it first with `pyoco-client wheel-delete --name <file>`)"
        ),
        "wheel version must be greater than existing latest version" => format!(
            "the registry has a newer version of the package: bump the version in your package \
             above it and rebuild the wheel ({LISTED})"
        ),
        "wheel already exists" => format!(
            "a wheel of that file name is already in the registry: bump the version in your \
             package and rebuild the wheel, or delete the old one with \
             `pyoco-client wheel-delete --name <file>` ({LISTED})"
        ),
        other => format!(
            "{}: change the request and try again",
            non_empty(other, "conflict")
        ),
    }
}

/// 422: say which input the gateway rejected and how to fix it.
fn hint_422(detail: Option<&Value>) -> String {
    match detail {
        Some(Value::String(s)) => {
            let fix = match s.as_str() {
                "invalid tag" => "a tag is letters, digits, `_` and `-` only (e.g. --tag default)",
                "invalid workflow yaml" => {
                    "check the flow.yaml (version: 1, flow.graph, tasks.<name>.callable); \
                     the gateway log has the exact reason"
                }
                "missing flow_name" => "pass a non-empty --flow-name",
                "invalid list query" => {
                    "the --cursor is not one this gateway issued: drop it to start from the first page"
                }
                "invalid workers request" => {
                    "--scope is active or all; --state is RUNNING, IDLE, STOPPED_GRACEFUL or DISCONNECTED"
                }
                "invalid wheel name" => {
                    "a wheel file name is letters, digits and `._+-` only and ends in .whl \
                     (e.g. mypkg-1.0.0-py3-none-any.whl): upload the file under the name the \
                     build gave it (or fix --wheel-name)"
                }
                "invalid wheel filename" => {
                    "the file name is not a wheel's (PEP 427: \
                     <name>-<version>[-<build>]-<python>-<abi>-<platform>.whl, e.g. \
                     mypkg-1.0.0-py3-none-any.whl): upload the file under the name \
                     `python -m build --wheel` gave it"
                }
                "invalid wheel tags" => {
                    "--tags is a comma-separated list of tags made of letters, digits, `_` and \
                     `-` (e.g. --tags default,gpu)"
                }
                "invalid action" => "--action is upload or delete (install_failed needs this project's gateway)",
                _ => "fix that input and try again",
            };
            format!("the gateway rejected the request ({s}): {fix}")
        }
        Some(Value::Array(errors)) => {
            let parts: Vec<String> = errors.iter().filter_map(validation_error).collect();
            if parts.is_empty() {
                "the gateway rejected the request parameters: see the reason above".to_string()
            } else {
                format!(
                    "the gateway rejected the request parameters: {}",
                    parts.join("; ")
                )
            }
        }
        _ => "the gateway rejected the request parameters: see the reason above".to_string(),
    }
}

/// One FastAPI/pydantic validation error as `query.limit: Input should be …`.
fn validation_error(error: &Value) -> Option<String> {
    let msg = error.get("msg")?.as_str()?;
    let loc: Vec<String> = error
        .get("loc")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if loc.is_empty() {
        Some(msg.to_string())
    } else {
        Some(format!("{}: {msg}", loc.join(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, path: &str, body: &str) -> HttpFailure {
        HttpFailure {
            status,
            method: "GET".into(),
            path: path.into(),
            body: body.into(),
        }
    }

    #[test]
    fn http_error_keeps_the_0_5_1_first_line_and_reason() {
        let err = CliError::Http(failure(404, "/runs/x", "{\"detail\":\"run not found\"}\n"));
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ERR-PYOCO-HTTP: request failed");
        assert_eq!(
            lines[1],
            "- reason: HTTP 404 GET /runs/x: {\"detail\":\"run not found\"}"
        );
        assert!(lines[2].starts_with("- hint: check the run id with `pyoco-client list`"));
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn empty_body_has_no_colon_in_the_reason() {
        assert_eq!(failure(502, "/runs", "  ").reason(), "HTTP 502 GET /runs");
    }

    #[test]
    fn hints_say_what_to_do_per_status() {
        assert!(failure(401, "/runs", "{\"detail\":\"api key required\"}")
            .hint()
            .contains("--api-key"));
        assert!(failure(403, "/runs", "{\"detail\":\"invalid api key\"}")
            .hint()
            .contains("--api-key"));
        assert!(failure(
            503,
            "/runs",
            "{\"detail\":\"nats unavailable: NotConnected\"}"
        )
        .hint()
        .contains("nats-server"));
        assert!(failure(404, "/workers", "{\"detail\":\"Not Found\"}")
            .hint()
            .contains("--server"));
        assert!(failure(422, "/runs/yaml", "{\"detail\":\"invalid tag\"}")
            .hint()
            .contains("(invalid tag)"));
    }

    #[test]
    fn wheel_conflicts_say_to_bump_the_version() {
        let post = |status: u16, body: &str| HttpFailure {
            status,
            method: "POST".into(),
            path: "/wheels".into(),
            body: body.into(),
        };
        for detail in [
            "wheel version already exists; bump version",
            "wheel version must be greater than existing latest version",
            "wheel already exists",
        ] {
            let hint = post(409, &format!("{{\"detail\":\"{detail}\"}}")).hint();
            assert!(
                hint.contains("bump the version in your package")
                    && hint.contains("rebuild the wheel"),
                "{detail}: {hint}"
            );
        }
        let too_large = post(413, r#"{"detail":"wheel too large"}"#).hint();
        assert!(
            too_large.starts_with("the wheel is larger than PYOCO_WHEEL_MAX_BYTES on the server"),
            "{too_large}"
        );
        // A proxy's 413 page on the upload path gets the same hint.
        assert!(post(413, "<html>413</html>")
            .hint()
            .contains("PYOCO_WHEEL_MAX_BYTES on the server"));
        for (detail, needle) in [
            ("invalid wheel name", "ends in .whl"),
            ("invalid wheel filename", "PEP 427"),
            ("invalid wheel tags", "--tags"),
            ("invalid action", "upload or delete"),
        ] {
            let hint = post(422, &format!("{{\"detail\":\"{detail}\"}}")).hint();
            assert!(hint.contains(&format!("({detail})")), "{hint}");
            assert!(hint.contains(needle), "{detail}: {hint}");
        }
    }

    #[test]
    fn a_validation_list_is_summarised_by_location() {
        let body = r#"{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 200","input":"500"}]}"#;
        assert_eq!(
            failure(422, "/runs", body).hint(),
            "the gateway rejected the request parameters: query.limit: Input should be less than or equal to 200"
        );
    }

    #[test]
    fn input_errors_use_the_0018_template() {
        let err = CliError::Input {
            reason: "--params must be JSON object".into(),
            detail: None,
            usage: Some("usage: pyoco-client submit".into()),
            hint: "pyoco-client submit -h".into(),
        };
        assert_eq!(
            err.to_string(),
            format!(
                "ERR-PYOCO-0018: {ERR_0018_MSG}\n- reason: --params must be JSON object\n\
                 - usage: usage: pyoco-client submit\n- hint: pyoco-client submit -h"
            )
        );
    }

    #[test]
    fn cancel_timeout_names_the_run() {
        let text = CliError::CancelTimeout {
            run_id: "r1".into(),
            timeout_sec: 30,
        }
        .to_string();
        assert!(text.starts_with(
            "ERR-PYOCO-CANCEL: wait timeout\n- reason: cancel wait timeout for run_id=r1\n- hint: "
        ));
    }

    #[test]
    fn quiet_errors_print_nothing() {
        assert_eq!(CliError::Interrupted.to_string(), "");
        assert_eq!(CliError::Interrupted.exit_code(), 130);
        assert_eq!(CliError::BrokenPipe.exit_code(), 0);
    }
}
