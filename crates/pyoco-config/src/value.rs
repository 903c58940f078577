//! Turning a setting's text into a typed value, by its [`Kind`]: the validation rules.
//!
//! Every rule accepts what pyoco-server 0.5.1 accepts for a *valid* configuration (Python
//! `float()`/`int()` forms such as `1.0`, `10`, `+20`, `1_000`, bool words in any case, surrounding
//! whitespace) and rejects what 0.5.1 silently replaced by a default.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::spec::Kind;

/// How the gateway authenticates requests (`PYOCO_HTTP_AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// No authentication (the default).
    None,
    /// `X-API-Key`-style API keys stored in the auth KV bucket.
    ApiKey,
}

impl AuthMode {
    /// The setting's value: `none` or `api_key`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKey => "api_key",
        }
    }
}

/// Log line format (`PYOCO_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    Json,
    Text,
}

/// Minimum log level (`PYOCO_LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    /// The `tracing` filter directive for this level (`critical` has no own level: `error`).
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
        }
    }
}

/// Dashboard language (`PYOCO_DASHBOARD_LANG`); `Auto` is resolved by the gateway at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DashboardLang {
    Auto,
    Ja,
    En,
}

/// A validated value, before it is moved into its typed `Settings` field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Float(f64),
    Uint(u64),
    Port(u16),
    Bool(bool),
    List(Vec<String>),
    Path(PathBuf),
    Paths(Vec<PathBuf>),
    AuthMode(AuthMode),
    LogLevel(LogLevel),
    LogFormat(LogFormat),
    DashboardLang(DashboardLang),
}

/// What validation needs besides the text: where relative paths and `~` point.
pub(crate) struct Context<'a> {
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
}

/// An owned [`Context`]: kept by `Settings`, so their texts can be read again the same way
/// (appliance defaults).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Base {
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

impl Base {
    pub fn context(&self) -> Context<'_> {
        Context {
            cwd: &self.cwd,
            home: self.home.as_deref(),
        }
    }
}

/// Validate `raw` (already known to be non-blank, except for [`Kind::EnvFile`]).
/// `Ok(None)` means "set to nothing" (an empty `PYOCO_ENV_FILE`, a tag list of only commas).
/// `Err` is a short reason; the caller adds the variable, value, source and expected form.
pub(crate) fn parse(kind: Kind, raw: &str, ctx: &Context<'_>) -> Result<Option<Value>, String> {
    let text = raw.trim();
    let value = match kind {
        Kind::Text => Value::Text(text.to_owned()),
        Kind::Secret => Value::Text(raw.to_owned()),
        Kind::NatsUrl => {
            check_nats_urls(text)?;
            Value::Text(text.to_owned())
        }
        Kind::SubjectPrefix => {
            check_subject_prefix(text)?;
            Value::Text(text.to_owned())
        }
        Kind::Name | Kind::Tag => {
            check_name(text)?;
            Value::Text(text.to_owned())
        }
        Kind::Tags => {
            let mut tags: Vec<String> = Vec::new();
            for item in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                check_name(item).map_err(|e| format!("tag {item:?}: {e}"))?;
                if !tags.iter().any(|t| t == item) {
                    tags.push(item.to_owned());
                }
            }
            if tags.is_empty() {
                return Ok(None);
            }
            Value::List(tags)
        }
        Kind::KvKey => {
            check_kv_key(text)?;
            Value::Text(text.to_owned())
        }
        Kind::HeaderName => {
            check_header_name(text)?;
            Value::Text(text.to_owned())
        }
        Kind::Host => {
            check_host(text)?;
            Value::Text(text.to_owned())
        }
        Kind::Hosts => match list(text, |item| {
            let host = item.strip_prefix("*.").unwrap_or(item);
            if item != "*" {
                check_host(host).map_err(|e| format!("host {item:?}: {e}"))?;
            }
            Ok(item.to_ascii_lowercase())
        })? {
            Some(list) => list,
            None => return Ok(None),
        },
        Kind::Origins => match list(text, |item| {
            check_origin(item).map_err(|e| format!("origin {item:?}: {e}"))?;
            Ok(item.trim_end_matches('/').to_ascii_lowercase())
        })? {
            Some(list) => list,
            None => return Ok(None),
        },
        Kind::Modules => match list(text, |item| {
            let ok = item.split('.').all(|part| {
                part.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if !ok {
                return Err(format!("{item:?} is not a Python module name"));
            }
            Ok(item.to_owned())
        })? {
            Some(list) => list,
            None => return Ok(None),
        },
        Kind::Port { min } => Value::Port(parse_port(text, min)?),
        Kind::Interval { floor } => {
            let secs = parse_float(text)?;
            if secs <= 0.0 {
                return Err("must be greater than 0".into());
            }
            Value::Float(secs.max(floor))
        }
        Kind::Seconds => {
            let secs = parse_float(text)?;
            if secs < 0.0 {
                return Err("must not be negative".into());
            }
            // `-0` parses; store it as plain 0.
            Value::Float(secs.max(0.0))
        }
        Kind::Integer { min } => {
            let n = parse_int(text)?;
            if n < i128::from(min) {
                return Err(format!("must be at least {min}"));
            }
            Value::Uint(u64::try_from(n).map_err(|_| "too large".to_owned())?)
        }
        Kind::Replicas => {
            let n = parse_int(text)?;
            if !(1..=5).contains(&n) {
                return Err(
                    "must be 1..5: JetStream keeps at most five copies (1, 3 or 5 are usual)"
                        .into(),
                );
            }
            Value::Uint(n as u64)
        }
        Kind::Bool => Value::Bool(parse_bool(text).ok_or("not a boolean word")?),
        Kind::AuthMode => Value::AuthMode(match text.to_ascii_lowercase().as_str() {
            "none" => AuthMode::None,
            "api_key" => AuthMode::ApiKey,
            _ => return Err("unknown auth mode".into()),
        }),
        Kind::LogLevel => Value::LogLevel(match text.to_ascii_lowercase().as_str() {
            "trace" | "notset" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warning" | "warn" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" | "fatal" => LogLevel::Critical,
            _ => return Err("unknown log level".into()),
        }),
        Kind::LogFormat => Value::LogFormat(match text.to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => return Err("unknown log format".into()),
        }),
        Kind::DashboardLang => Value::DashboardLang(parse_dashboard_lang(text)?),
        Kind::Path => Value::Path(PathBuf::from(text)),
        Kind::Dir => Value::Path(ctx.cwd.join(expand_tilde(text, ctx.home)?)),
        Kind::Dirs => {
            let mut dirs: Vec<PathBuf> = Vec::new();
            for item in text.split(':').map(str::trim).filter(|d| !d.is_empty()) {
                let dir = ctx.cwd.join(expand_tilde(item, ctx.home)?);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
            Value::Paths(dirs)
        }
        Kind::Program => {
            let path = expand_tilde(text, ctx.home)?;
            let is_command = !text.contains('/') && !text.contains(std::path::MAIN_SEPARATOR);
            Value::Path(if is_command { path } else { ctx.cwd.join(path) })
        }
        Kind::EnvFile => {
            if text.is_empty() {
                return Ok(None);
            }
            Value::Path(ctx.cwd.join(expand_tilde(text, ctx.home)?))
        }
        Kind::File => {
            let path = ctx.cwd.join(expand_tilde(text, ctx.home)?);
            check_readable_file(&path)?;
            Value::Path(path)
        }
        Kind::FlowResolver => Value::Text(parse_flow_resolver(text, ctx)?),
    };
    Ok(Some(value))
}

/// `1/true/yes/on` ⇒ true, `0/false/no/off` ⇒ false (trimmed, any case), else `None`.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Python's `float()` for finite numbers: `10`, `1.0`, `.5`, `1e3`, `+2`, `1_000.5`.
fn parse_float(text: &str) -> Result<f64, String> {
    let digits = strip_digit_underscores(text).ok_or("not a number")?;
    let value: f64 = digits.parse().map_err(|_| "not a number".to_owned())?;
    if !value.is_finite() {
        return Err("must be a finite number".into());
    }
    Ok(value)
}

/// Python's `int()`: `20`, `+20`, `-3`, `1_000` (no decimal point).
fn parse_int(text: &str) -> Result<i128, String> {
    let digits = strip_digit_underscores(text).ok_or("not an integer")?;
    digits.parse::<i128>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            "too large".to_owned()
        }
        _ => "not an integer".to_owned(),
    })
}

/// Remove `_` separators the way Python allows them (each one between two digits).
fn strip_digit_underscores(text: &str) -> Option<String> {
    if !text.contains('_') {
        return Some(text.to_owned());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            let before = i.checked_sub(1).and_then(|j| chars.get(j));
            let after = chars.get(i + 1);
            let digit = |c: Option<&char>| c.is_some_and(char::is_ascii_digit);
            if !(digit(before) && digit(after)) {
                return None;
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_port(text: &str, min: u16) -> Result<u16, String> {
    let n = parse_int(text).map_err(|_| "not a port number".to_owned())?;
    match u16::try_from(n) {
        Ok(port) if port >= min => Ok(port),
        _ => Err(format!("out of range {min}..65535")),
    }
}

fn parse_dashboard_lang(text: &str) -> Result<DashboardLang, String> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "" | "auto" | "server" | "system" | "default" => Ok(DashboardLang::Auto),
        l if l.starts_with("ja") => Ok(DashboardLang::Ja),
        l if l.starts_with("en") => Ok(DashboardLang::En),
        _ => Err("unknown language".into()),
    }
}

/// `~` and `~/rest` become the home directory (like Python's `expanduser` for the common forms).
fn expand_tilde(text: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let rest = if text == "~" {
        Some("")
    } else {
        text.strip_prefix("~/")
            .or_else(|| text.strip_prefix(&format!("~{}", std::path::MAIN_SEPARATOR)))
    };
    match rest {
        None => Ok(PathBuf::from(text)),
        Some(rest) => match home {
            Some(home) if rest.is_empty() => Ok(home.to_path_buf()),
            Some(home) => Ok(home.join(rest)),
            None => Err("cannot expand `~`: no home directory is known (set HOME)".into()),
        },
    }
}

/// `module:function` or `path/file.py:function`, split at the last `:` as the runner does. A
/// relative file path (the target ends in `.py` or contains `/` or `\`) becomes absolute
/// against the working directory, `~` expanded; module targets are kept as written.
fn parse_flow_resolver(text: &str, ctx: &Context<'_>) -> Result<String, String> {
    let Some((target, function)) = text.rsplit_once(':') else {
        return Err("no `:function` part".into());
    };
    let (target, function) = (target.trim(), function.trim());
    if target.is_empty() {
        return Err("no module or file before the `:`".into());
    }
    check_dotted_identifier(function).map_err(|e| format!("function {function:?}: {e}"))?;
    let is_path = target.ends_with(".py") || target.contains('/') || target.contains('\\');
    if !is_path {
        check_dotted_identifier(target).map_err(|e| format!("module {target:?}: {e}"))?;
        return Ok(format!("{target}:{function}"));
    }
    let path = ctx.cwd.join(expand_tilde(target, ctx.home)?);
    Ok(format!("{}:{function}", path.display()))
}

/// Python names separated by `.` (`pkg.mod`, `Class.method`).
fn check_dotted_identifier(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty".into());
    }
    for part in text.split('.') {
        let mut chars = part.chars();
        match chars.next() {
            None => return Err("an empty name between dots".into()),
            Some(c) if !(c.is_alphabetic() || c == '_') => {
                return Err(format!("{part:?} is not a Python name"))
            }
            _ => {}
        }
        if chars.any(|c| !(c.is_alphanumeric() || c == '_')) {
            return Err(format!("{part:?} is not a Python name"));
        }
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_name(text: &str) -> Result<(), String> {
    match text.chars().find(|&c| !is_name_char(c)) {
        _ if text.is_empty() => Err("empty".into()),
        Some(c) => Err(format!("contains {c:?}")),
        None => Ok(()),
    }
}

fn check_kv_key(text: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-/_=.".contains(c);
    if let Some(c) = text.chars().find(|&c| !ok(c)) {
        return Err(format!("contains {c:?}"));
    }
    if text.starts_with('.') || text.ends_with('.') {
        return Err("starts or ends with `.`".into());
    }
    Ok(())
}

fn check_subject_prefix(text: &str) -> Result<(), String> {
    for token in text.split('.') {
        if token.is_empty() {
            return Err("has an empty token (leading, trailing or double `.`)".into());
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err("contains a wildcard (`*` or `>`)".into());
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("contains {c:?}"));
        }
    }
    Ok(())
}

fn check_header_name(text: &str) -> Result<(), String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    match text.chars().find(|&c| !tchar(c)) {
        Some(c) => Err(format!("contains {c:?}")),
        None => Ok(()),
    }
}

/// A comma-separated list, each non-empty item checked and normalised by `item`, duplicates
/// dropped; `None` when there is no item.
fn list(
    text: &str,
    item: impl Fn(&str) -> Result<String, String>,
) -> Result<Option<Value>, String> {
    let mut items: Vec<String> = Vec::new();
    for raw in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let value = item(raw)?;
        if !items.contains(&value) {
            items.push(value);
        }
    }
    Ok((!items.is_empty()).then_some(Value::List(items)))
}

/// `scheme://host[:port]` with an optional trailing `/` and nothing else (what a browser sends
/// in `Origin`).
fn check_origin(text: &str) -> Result<(), String> {
    let (scheme, rest) = text.split_once("://").ok_or("not scheme://host[:port]")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(format!("{scheme:?} is not a URL scheme"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or user".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if let Some(port) = port {
        port.parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port number"))?;
    }
    check_host(host)
}

fn check_host(text: &str) -> Result<(), String> {
    if text.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(drop)
            .map_err(|_| "not an IPv6 address".into());
    }
    if text.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in text.split('.') {
        let label_ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !label_ok {
            return Err(format!("{label:?} is not a valid host name label"));
        }
    }
    Ok(())
}

/// An existing file this process can open for reading.
fn check_readable_file(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", path.display())),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("no such file: {}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn check_nats_urls(text: &str) -> Result<(), String> {
    for url in text.split(',').map(str::trim) {
        if url.is_empty() {
            return Err("empty URL in the list".into());
        }
        check_nats_url(url).map_err(|e| format!("{url:?}: {e}"))?;
    }
    Ok(())
}

fn check_nats_url(url: &str) -> Result<(), String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme_lower = scheme.to_ascii_lowercase();
            if !["nats", "tls", "ws", "wss"].contains(&scheme_lower.as_str()) {
                return Err(format!("unsupported scheme {scheme:?}"));
            }
            // WebSocket URLs may carry a path; the others may end with a bare `/`.
            match rest.split_once('/') {
                Some((authority, path)) if scheme_lower.starts_with("ws") || path.is_empty() => {
                    authority
                }
                Some(_) => return Err("a NATS URL has no path".into()),
                None => rest,
            }
        }
        None => url,
    };
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let (host, port) = if let Some(after_bracket) = host_port.strip_prefix('[') {
        let (inner, tail) = after_bracket
            .split_once(']')
            .ok_or("unclosed `[` in the host")?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or("junk after `]`")?),
        };
        (format!("[{inner}]"), port)
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (host_port.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    check_host(&host)?;
    if let Some(port) = port {
        parse_port(port, 1)?;
    }
    Ok(())
}

/// Moves a validated [`Value`] into a typed `Settings` field. `None` in, `None` out means a
/// required value is missing (a table error, reported as a problem, never a panic).
pub(crate) trait FromValue: Sized {
    fn from_value(value: Option<Value>) -> Option<Self>;
}

macro_rules! from_value {
    ($ty:ty, $variant:ident) => {
        impl FromValue for $ty {
            fn from_value(value: Option<Value>) -> Option<Self> {
                match value {
                    Some(Value::$variant(v)) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

from_value!(String, Text);
from_value!(f64, Float);
from_value!(u64, Uint);
from_value!(u16, Port);
from_value!(bool, Bool);
from_value!(PathBuf, Path);
from_value!(AuthMode, AuthMode);
from_value!(LogLevel, LogLevel);
from_value!(LogFormat, LogFormat);
from_value!(DashboardLang, DashboardLang);

impl FromValue for Vec<String> {
    fn from_value(value: Option<Value>) -> Option<Self> {
        match value {
            Some(Value::List(v)) => Some(v),
            None => Some(Vec::new()),
            Some(_) => None,
        }
    }
}

impl FromValue for Vec<PathBuf> {
    fn from_value(value: Option<Value>) -> Option<Self> {
        match value {
            Some(Value::Paths(v)) => Some(v),
            None => Some(Vec::new()),
            Some(_) => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Option<Value>) -> Option<Self> {
        match value {
            None => Some(None),
            some => T::from_value(some).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            cwd: Path::new("/work/dir"),
            home: Some(Path::new("/home/u")),
        }
    }

    fn ok(kind: Kind, raw: &str) -> Value {
        match parse(kind, raw, &ctx()) {
            Ok(Some(v)) => v,
            other => panic!("{kind:?} {raw:?} should parse, got {other:?}"),
        }
    }

    fn bad(kind: Kind, raw: &str) {
        if let Ok(v) = parse(kind, raw, &ctx()) {
            panic!("{kind:?} {raw:?} should be rejected, got {v:?}");
        }
    }

    #[test]
    fn interval_accepts_python_float_forms_and_raises_to_the_floor() {
        let k = Kind::Interval { floor: 0.1 };
        assert_eq!(ok(k, "1.0"), Value::Float(1.0));
        assert_eq!(ok(k, " 10 "), Value::Float(10.0));
        assert_eq!(ok(k, "+2.5"), Value::Float(2.5));
        assert_eq!(ok(k, ".5"), Value::Float(0.5));
        assert_eq!(ok(k, "1e1"), Value::Float(10.0));
        assert_eq!(ok(k, "1_000.5"), Value::Float(1000.5));
        assert_eq!(ok(k, "0.01"), Value::Float(0.1));
        for raw in [
            "0", "-1", "-0.5", "abc", "nan", "inf", "-inf", "1__0", "_1", "1.0s", "",
        ] {
            bad(k, raw);
        }
    }

    #[test]
    fn relative_resolver_paths_become_absolute() {
        // (Was the worker's `absolutize_resolver` test: the rule now runs when settings load.)
        let proj = Context {
            cwd: Path::new("/home/u/proj"),
            home: Some(Path::new("/home/u")),
        };
        let resolve = |raw: &str| match parse(Kind::FlowResolver, raw, &proj) {
            Ok(Some(Value::Text(t))) => t,
            other => panic!("{raw:?}: {other:?}"),
        };
        assert_eq!(
            resolve("flows/r.py:resolve"),
            "/home/u/proj/flows/r.py:resolve"
        );
        assert_eq!(resolve("r.py:resolve"), "/home/u/proj/r.py:resolve");
        assert_eq!(resolve("/abs/r.py:resolve"), "/abs/r.py:resolve");
        assert_eq!(resolve("my_pkg.flows:resolve"), "my_pkg.flows:resolve");
    }

    #[test]
    fn flow_resolvers_take_the_runners_forms() {
        let k = Kind::FlowResolver;
        let text = |raw| match ok(k, raw) {
            Value::Text(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(" pkg.flows:Resolver.resolve "),
            "pkg.flows:Resolver.resolve"
        );
        assert_eq!(text("~/r.py:resolve"), "/home/u/r.py:resolve");
        // Split at the last `:`, as the runner does: a colon in a file path is fine.
        assert_eq!(text("a:b/r.py:resolve"), "/work/dir/a:b/r.py:resolve");
        assert_eq!(
            text("flows/resolver:resolve"),
            "/work/dir/flows/resolver:resolve"
        );
        for raw in [
            "resolve",
            "pkg.flows",
            ":resolve",
            "pkg.flows:",
            "pkg flows:resolve",
            "pkg..flows:resolve",
            "pkg.flows:1resolve",
            "pkg.flows:re-solve",
            "pkg:flows:resolve",
            "r.py:",
        ] {
            bad(k, raw);
        }
    }

    #[test]
    fn seconds_accept_zero_and_reject_negative_or_non_finite() {
        assert_eq!(ok(Kind::Seconds, "0"), Value::Float(0.0));
        assert_eq!(ok(Kind::Seconds, "-0"), Value::Float(0.0));
        assert_eq!(ok(Kind::Seconds, "604800"), Value::Float(604800.0));
        for raw in ["-1", "-0.001", "NaN", "infinity", "ten"] {
            bad(Kind::Seconds, raw);
        }
    }

    #[test]
    fn integers_follow_python_int_and_the_minimum() {
        let count = Kind::Integer { min: 1 };
        assert_eq!(ok(count, "20"), Value::Uint(20));
        assert_eq!(ok(count, " +20 "), Value::Uint(20));
        assert_eq!(ok(count, "100_000"), Value::Uint(100_000));
        for raw in [
            "0",
            "-1",
            "20.0",
            "abc",
            "1e3",
            "99999999999999999999999999999",
        ] {
            bad(count, raw);
        }
        assert_eq!(ok(Kind::Integer { min: 0 }, "0"), Value::Uint(0));
        bad(Kind::Integer { min: 0 }, "-5");
    }

    #[test]
    fn bools_take_the_python_words_in_any_case() {
        for raw in ["1", "true", "YES", " On "] {
            assert_eq!(ok(Kind::Bool, raw), Value::Bool(true));
        }
        for raw in ["0", "False", "no", "OFF"] {
            assert_eq!(ok(Kind::Bool, raw), Value::Bool(false));
        }
        for raw in ["2", "y", "enabled", "truee"] {
            bad(Kind::Bool, raw);
        }
    }

    #[test]
    fn ports_are_range_checked() {
        assert_eq!(ok(Kind::Port { min: 0 }, "0"), Value::Port(0));
        assert_eq!(ok(Kind::Port { min: 0 }, "65535"), Value::Port(65535));
        assert_eq!(ok(Kind::Port { min: 1 }, "8000"), Value::Port(8000));
        bad(Kind::Port { min: 1 }, "0");
        bad(Kind::Port { min: 0 }, "65536");
        bad(Kind::Port { min: 0 }, "-1");
        bad(Kind::Port { min: 0 }, "http");
    }

    #[test]
    fn auth_mode_is_trimmed_and_case_insensitive() {
        assert_eq!(
            ok(Kind::AuthMode, " API_KEY "),
            Value::AuthMode(AuthMode::ApiKey)
        );
        assert_eq!(ok(Kind::AuthMode, "None"), Value::AuthMode(AuthMode::None));
        bad(Kind::AuthMode, "apikey");
        bad(Kind::AuthMode, "api-key");
    }

    #[test]
    fn log_levels_are_python_level_names() {
        assert_eq!(ok(Kind::LogLevel, "INFO"), Value::LogLevel(LogLevel::Info));
        assert_eq!(
            ok(Kind::LogLevel, "warn"),
            Value::LogLevel(LogLevel::Warning)
        );
        assert_eq!(
            ok(Kind::LogLevel, "Critical"),
            Value::LogLevel(LogLevel::Critical)
        );
        assert_eq!(
            ok(Kind::LogLevel, "trace"),
            Value::LogLevel(LogLevel::Trace)
        );
        assert_eq!(
            ok(Kind::LogLevel, "fatal"),
            Value::LogLevel(LogLevel::Critical)
        );
        bad(Kind::LogLevel, "verbose");
        bad(Kind::LogLevel, "10");
    }

    #[test]
    fn log_format_is_json_or_text() {
        assert_eq!(
            ok(Kind::LogFormat, "TEXT"),
            Value::LogFormat(LogFormat::Text)
        );
        assert_eq!(
            ok(Kind::LogFormat, "json"),
            Value::LogFormat(LogFormat::Json)
        );
        bad(Kind::LogFormat, "logfmt");
    }

    #[test]
    fn dashboard_lang_maps_locales_and_aliases() {
        let lang = |raw| ok(Kind::DashboardLang, raw);
        assert_eq!(lang("ja_JP.UTF-8"), Value::DashboardLang(DashboardLang::Ja));
        assert_eq!(lang("EN-us"), Value::DashboardLang(DashboardLang::En));
        for alias in ["auto", "server", "System", "default"] {
            assert_eq!(lang(alias), Value::DashboardLang(DashboardLang::Auto));
        }
        bad(Kind::DashboardLang, "fr");
        bad(Kind::DashboardLang, "de_DE");
    }

    #[test]
    fn names_and_single_tags() {
        assert_eq!(
            ok(Kind::Name, "pyoco_runs-2"),
            Value::Text("pyoco_runs-2".into())
        );
        for raw in ["pyoco.runs", "my bucket", "a*b", "runs/x"] {
            bad(Kind::Name, raw);
            bad(Kind::Tag, raw);
        }
    }

    #[test]
    fn tag_lists_drop_empty_items_and_duplicates() {
        assert_eq!(
            ok(Kind::Tags, " cpu, gpu ,,cpu "),
            Value::List(vec!["cpu".into(), "gpu".into()])
        );
        assert_eq!(parse(Kind::Tags, " , ", &ctx()), Ok(None));
        bad(Kind::Tags, "cpu,gpu.large");
        assert_eq!(
            parse(
                Kind::Hosts,
                " API.example.com, *.corp.example ,*, 10.0.0.1,api.example.com",
                &ctx()
            ),
            Ok(Some(Value::List(vec![
                "api.example.com".into(),
                "*.corp.example".into(),
                "*".into(),
                "10.0.0.1".into(),
            ])))
        );
        bad(Kind::Hosts, "example.com:8000");
        bad(Kind::Hosts, "exa mple.com");
        assert_eq!(
            parse(Kind::Origins, "https://App.example.com/, http://localhost:3000, tauri://localhost, http://[::1]:8000", &ctx()),
            Ok(Some(Value::List(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into(),
                "tauri://localhost".into(),
                "http://[::1]:8000".into(),
            ])))
        );
        for origin in [
            "example.com",
            "https://example.com/path",
            "https://a:b@example.com",
            "https://example.com:99999",
            "*",
        ] {
            bad(Kind::Origins, origin);
        }
        assert_eq!(
            parse(Kind::Modules, "my_tasks, corp.etl ,_private", &ctx()),
            Ok(Some(Value::List(vec![
                "my_tasks".into(),
                "corp.etl".into(),
                "_private".into(),
            ])))
        );
        for module in ["os:system", "corp..etl", "1abc", "corp.etl."] {
            bad(Kind::Modules, module);
        }
        assert_eq!(parse(Kind::Modules, " , ", &ctx()), Ok(None));
    }

    #[test]
    fn kv_keys() {
        assert_eq!(
            ok(Kind::KvKey, "host-1.example"),
            Value::Text("host-1.example".into())
        );
        bad(Kind::KvKey, ".w");
        bad(Kind::KvKey, "w.");
        bad(Kind::KvKey, "w 1");
        bad(Kind::KvKey, "w*");
    }

    #[test]
    fn subject_prefixes() {
        assert_eq!(
            ok(Kind::SubjectPrefix, "pyoco.work"),
            Value::Text("pyoco.work".into())
        );
        for raw in [
            "pyoco work",
            "pyoco.*",
            "pyoco.>",
            "pyoco..work",
            ".pyoco",
            "pyoco.",
            "a\tb",
        ] {
            bad(Kind::SubjectPrefix, raw);
        }
    }

    #[test]
    fn nats_urls() {
        for raw in [
            "nats://127.0.0.1:4222",
            "tls://user:pw@nats.example.com:4443",
            "ws://localhost:8080/nats",
            "wss://[::1]:443",
            "NATS://a:1, nats://b:2",
            "localhost:4222",
            "localhost",
            "nats://host/",
        ] {
            ok(Kind::NatsUrl, raw);
        }
        for raw in [
            "http://127.0.0.1:4222",
            "nats://",
            "nats://host:99999",
            "nats://host:port",
            "nats://a:1,,nats://b:2",
            "nats://ho st:1",
            "nats://host:1/path",
        ] {
            bad(Kind::NatsUrl, raw);
        }
    }

    #[test]
    fn header_names_are_http_tokens() {
        ok(Kind::HeaderName, "X-API-Key");
        ok(Kind::HeaderName, "x_api.key~1");
        bad(Kind::HeaderName, "X API Key");
        bad(Kind::HeaderName, "X-Key:");
        bad(Kind::HeaderName, "Ключ");
    }

    #[test]
    fn hosts_are_ip_addresses_or_host_names() {
        for raw in [
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "[::1]",
            "localhost",
            "my-host.lan",
        ] {
            ok(Kind::Host, raw);
        }
        for raw in ["my host", "-bad", "a..b", "http://x", "[1.2.3.4]"] {
            bad(Kind::Host, raw);
        }
    }

    #[test]
    fn paths_expand_tilde_and_resolve_against_cwd() {
        assert_eq!(ok(Kind::Dir, "~/data"), Value::Path("/home/u/data".into()));
        assert_eq!(ok(Kind::Dir, "rel"), Value::Path("/work/dir/rel".into()));
        assert_eq!(ok(Kind::Dir, "/abs"), Value::Path("/abs".into()));
        assert_eq!(ok(Kind::Program, "python3"), Value::Path("python3".into()));
        assert_eq!(
            ok(Kind::Program, "./py"),
            Value::Path("/work/dir/./py".into())
        );
        assert_eq!(
            ok(Kind::Program, "~/bin/py"),
            Value::Path("/home/u/bin/py".into())
        );
        assert_eq!(ok(Kind::Path, "~/.pyoco"), Value::Path("~/.pyoco".into()));
        assert_eq!(parse(Kind::EnvFile, "  ", &ctx()), Ok(None));
        let no_home = Context {
            cwd: Path::new("/w"),
            home: None,
        };
        assert!(parse(Kind::Dir, "~/x", &no_home).is_err());
    }

    #[test]
    fn directory_lists_split_on_colons_expand_and_dedupe() {
        assert_eq!(
            ok(Kind::Dirs, "~/proj: rel ::/abs:rel"),
            Value::Paths(vec![
                "/home/u/proj".into(),
                "/work/dir/rel".into(),
                "/abs".into()
            ])
        );
        assert_eq!(ok(Kind::Dirs, ":"), Value::Paths(vec![]));
    }

    #[test]
    fn secrets_are_kept_verbatim_and_text_is_trimmed() {
        assert_eq!(ok(Kind::Secret, " p e "), Value::Text(" p e ".into()));
        assert_eq!(
            ok(Kind::Text, " mod.a,mod.b "),
            Value::Text("mod.a,mod.b".into())
        );
    }
}
