//! Loading settings: resolution order, the dotenv switches, validation errors, 0.5.1's quirks.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use pyoco_config::{
    spec, specs, AuthMode, ConfigError, DashboardLang, Group, LoadOptions, LogFormat, LogLevel,
    Scope, Settings, Source,
};
use tempfile::TempDir;

/// A fresh working directory (with a `home/` inside) and an empty environment snapshot.
struct Fixture {
    dir: TempDir,
    env: HashMap<String, String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("home")).unwrap();
        Fixture {
            dir,
            env: HashMap::new(),
        }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn env(mut self, key: &str, value: &str) -> Fixture {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Write `rel` (relative to the working directory) and return its absolute path.
    fn file(self, rel: &str, text: &str) -> Fixture {
        let path = self.cwd().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn opts(&self) -> LoadOptions {
        LoadOptions {
            env: self.env.clone(),
            cwd: self.cwd().to_path_buf(),
            home: Some(self.home()),
        }
    }

    fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(&self.opts())
    }

    fn settings(&self) -> Settings {
        match self.load() {
            Ok(s) => s,
            Err(e) => panic!("load failed:\n{e}"),
        }
    }

    fn error(&self) -> ConfigError {
        match self.load() {
            Ok(s) => panic!("load should fail, got {s:?}"),
            Err(e) => e,
        }
    }

    fn dotenv_source(&self) -> Source {
        Source::File {
            path: self.cwd().join(".env"),
        }
    }
}

#[test]
fn defaults_load_and_match_the_table() {
    let f = Fixture::new();
    let s = f.settings();
    assert_eq!(s.nats_url, "nats://127.0.0.1:4222");
    assert_eq!(s.work_subject_prefix, "pyoco.work");
    assert_eq!(s.consumer_max_deliver, 20);
    assert_eq!(s.run_heartbeat_interval_sec, 1.0);
    assert_eq!(s.dlq_max_bytes, 536_870_912);
    assert_eq!(s.http_auth_mode, AuthMode::None);
    assert_eq!(s.dashboard_lang, DashboardLang::Auto);
    assert_eq!(s.log_level, LogLevel::Info);
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(s.log_utc && s.dlq_publish_execution_error && !s.wheel_sync_enabled);
    assert_eq!(s.auth_pepper, None);
    assert_eq!(s.http_port, 8000);
    assert_eq!(s.nats_client_port, 4222);
    assert_eq!(s.nats_http_port, None);
    assert_eq!(s.worker_id, "worker");
    assert_eq!(s.worker_tags, vec!["default".to_owned()]);
    assert_eq!(s.cancel_grace_period_sec, 30.0);
    assert_eq!(s.env_file, Some(f.cwd().join(".env")));
    for spec in specs() {
        assert_eq!(s.source(spec.name), Some(&Source::Default), "{}", spec.name);
        assert_eq!(s.raw(spec.name), spec.default, "{}", spec.name);
    }
}

#[test]
fn the_table_is_complete_and_consistent() {
    let from_contract_13 = [
        "PYOCO_NATS_URL",
        "PYOCO_WORK_SUBJECT_PREFIX",
        "PYOCO_DEFAULT_TAG",
        "PYOCO_RUNS_KV_BUCKET",
        "PYOCO_WORKERS_KV_BUCKET",
        "PYOCO_WORKERS_KV_TTL_SEC",
        "PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC",
        "PYOCO_RUN_HEARTBEAT_INTERVAL_SEC",
        "PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC",
        "PYOCO_CANCEL_GRACE_PERIOD_SEC",
        "PYOCO_ACK_PROGRESS_INTERVAL_SEC",
        "PYOCO_CONSUMER_ACK_WAIT_SEC",
        "PYOCO_CONSUMER_MAX_DELIVER",
        "PYOCO_CONSUMER_MAX_ACK_PENDING",
        "PYOCO_DLQ_STREAM",
        "PYOCO_DLQ_SUBJECT_PREFIX",
        "PYOCO_DLQ_MAX_AGE_SEC",
        "PYOCO_DLQ_MAX_MSGS",
        "PYOCO_DLQ_MAX_BYTES",
        "PYOCO_DLQ_PUBLISH_EXECUTION_ERROR",
        "PYOCO_MAX_RUN_SNAPSHOT_BYTES",
        "PYOCO_WORKFLOW_YAML_MAX_BYTES",
        "PYOCO_HTTP_AUTH_MODE",
        "PYOCO_HTTP_API_KEY_HEADER",
        "PYOCO_AUTH_KV_BUCKET",
        "PYOCO_AUTH_PEPPER",
        "PYOCO_WHEEL_OBJECT_STORE_BUCKET",
        "PYOCO_WHEEL_MAX_BYTES",
        "PYOCO_WHEEL_SYNC_ENABLED",
        "PYOCO_WHEEL_SYNC_DIR",
        "PYOCO_WHEEL_SYNC_INTERVAL_SEC",
        "PYOCO_WHEEL_INSTALL_TIMEOUT_SEC",
        "PYOCO_WHEEL_HISTORY_KV_BUCKET",
        "PYOCO_WHEEL_HISTORY_TTL_SEC",
        "PYOCO_DASHBOARD_LANG",
        "PYOCO_LOAD_DOTENV",
        "PYOCO_ENV_FILE",
        "PYOCO_LOG_LEVEL",
        "PYOCO_LOG_FORMAT",
        "PYOCO_LOG_UTC",
        "PYOCO_LOG_INCLUDE_TRACEBACK",
        "PYOCO_DISCOVERY_MODULES",
    ];
    for name in from_contract_13 {
        assert!(spec(name).is_some(), "{name} is missing from the table");
    }
    let names: Vec<&str> = specs().iter().map(|s| s.name).collect();
    for (i, name) in names.iter().enumerate() {
        assert!(name.starts_with("PYOCO_"), "{name}");
        assert!(!names[..i].contains(name), "{name} is declared twice");
        assert!(!spec(name).unwrap().help.is_empty(), "{name} has no help");
    }
    // Groups appear in Group::ALL order, each as one block.
    let groups: Vec<_> = specs().iter().map(|s| s.group).collect();
    assert!(
        groups.windows(2).all(|w| w[0] <= w[1]),
        "table not in group order"
    );
    // The pepper and the NATS token and password are secret; scopes as specified.
    let secrets: Vec<_> = specs()
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.name)
        .collect();
    assert_eq!(
        secrets,
        [
            "PYOCO_NATS_TOKEN",
            "PYOCO_NATS_PASSWORD",
            "PYOCO_AUTH_PEPPER"
        ]
    );
    assert_eq!(spec("PYOCO_NATS_SERVER_BIN").unwrap().scope, Scope::Local);
    assert_eq!(spec("PYOCO_PYTHON").unwrap().scope, Scope::Server);
    assert_eq!(spec("PYOCO_ENV_FILE").unwrap().scope, Scope::ProcessEnv);
    assert!(spec("PYOCO_NATS_URL").unwrap().help.contains("NATS"));
}

#[test]
fn appliance_defaults_load() {
    let f = Fixture::new();
    let plain = f.settings();
    let s = plain.with_appliance_defaults().unwrap();
    assert!(
        s.wheel_sync_enabled,
        "the appliance syncs wheels by default"
    );
    assert_eq!(s.wheel_sync_dir, PathBuf::from("wheels"));
    for spec in specs() {
        match spec.appliance_default {
            Some(text) => {
                assert_ne!(
                    spec.default,
                    Some(text),
                    "{}: same as the default",
                    spec.name
                );
                assert_eq!(s.raw(spec.name), Some(text), "{}", spec.name);
                assert_eq!(s.source(spec.name), Some(&Source::ApplianceDefault));
            }
            None => {
                assert_eq!(s.raw(spec.name), plain.raw(spec.name), "{}", spec.name);
                assert_eq!(s.source(spec.name), Some(&Source::Default), "{}", spec.name);
            }
        }
    }
    // Applying them again changes nothing.
    let again = s.with_appliance_defaults().unwrap();
    assert_eq!(format!("{again:?}"), format!("{s:?}"));
    assert_eq!(
        again.source("PYOCO_WHEEL_SYNC_ENABLED"),
        Some(&Source::ApplianceDefault)
    );
}

#[test]
fn appliance_defaults_leave_set_values_alone() {
    let f = Fixture::new()
        .env("PYOCO_WHEEL_SYNC_ENABLED", "false")
        .file(".env", "PYOCO_WHEEL_SYNC_DIR=.pyoco/wheels\n");
    let s = f.settings().with_appliance_defaults().unwrap();
    assert!(!s.wheel_sync_enabled);
    assert_eq!(s.source("PYOCO_WHEEL_SYNC_ENABLED"), Some(&Source::Env));
    // Set to the plain default in the .env: still set, so kept.
    assert_eq!(s.wheel_sync_dir, PathBuf::from(".pyoco/wheels"));
    assert_eq!(s.source("PYOCO_WHEEL_SYNC_DIR"), Some(&f.dotenv_source()));
    // Paths resolved at load stay resolved the same way.
    let f = Fixture::new().env("PYOCO_DATA_DIR", "data");
    let s = f.settings().with_appliance_defaults().unwrap();
    assert_eq!(s.data_dir, Some(f.cwd().join("data")));
}

#[test]
fn every_setting_says_what_a_change_restarts() {
    use pyoco_config::Restarts;
    for spec in specs() {
        let at_start = matches!(spec.group, Group::Logging | Group::DotenvLoader);
        assert_eq!(
            spec.restarts == Restarts::Nothing,
            at_start,
            "{}",
            spec.name
        );
    }
    assert_eq!(
        spec("PYOCO_NATS_CLIENT_PORT").unwrap().restarts,
        Restarts::Everything
    );
    assert_eq!(
        spec("PYOCO_WHEEL_SYNC_DIR").unwrap().restarts,
        Restarts::Worker
    );
    assert_eq!(
        spec("PYOCO_WHEEL_MAX_BYTES").unwrap().restarts,
        Restarts::GatewayAndWorker
    );
}

#[test]
fn environment_beats_dotenv_which_beats_default() {
    let f = Fixture::new()
        .env("PYOCO_NATS_URL", "nats://from-env:4222")
        .file(
            ".env",
            "PYOCO_NATS_URL=nats://from-file:4222\nPYOCO_DEFAULT_TAG=from_file\n",
        );
    let s = f.settings();
    assert_eq!(s.nats_url, "nats://from-env:4222");
    assert_eq!(s.source("PYOCO_NATS_URL"), Some(&Source::Env));
    assert_eq!(s.default_tag, "from_file");
    assert_eq!(s.source("PYOCO_DEFAULT_TAG"), Some(&f.dotenv_source()));
    assert_eq!(s.raw("PYOCO_DEFAULT_TAG"), Some("from_file"));
    assert_eq!(s.runs_kv_bucket, "pyoco_runs");
    assert_eq!(s.source("PYOCO_RUNS_KV_BUCKET"), Some(&Source::Default));
}

#[test]
fn empty_or_blank_values_fall_through_to_the_next_source() {
    let f = Fixture::new()
        .env("PYOCO_DEFAULT_TAG", "")
        .env("PYOCO_DLQ_STREAM", "   ")
        .file(".env", "PYOCO_DEFAULT_TAG=filetag\nPYOCO_DLQ_STREAM=\n");
    let s = f.settings();
    assert_eq!(s.default_tag, "filetag");
    assert_eq!(s.dlq_stream, "PYOCO_DLQ");
    assert_eq!(s.source("PYOCO_DLQ_STREAM"), Some(&Source::Default));
}

#[test]
fn load_dotenv_0_ignores_the_file() {
    for off in ["0", "false", "No", " OFF "] {
        let f = Fixture::new()
            .env("PYOCO_LOAD_DOTENV", off)
            .file(".env", "PYOCO_DEFAULT_TAG=from_file\n");
        let s = f.settings();
        assert_eq!(s.default_tag, "default", "PYOCO_LOAD_DOTENV={off}");
        assert!(!s.load_dotenv);
    }
}

#[test]
fn loader_switches_are_read_from_the_process_environment_only() {
    let f = Fixture::new()
        .file(
            ".env",
            "PYOCO_LOAD_DOTENV=0\nPYOCO_ENV_FILE=other.env\nPYOCO_DEFAULT_TAG=a\n",
        )
        .file("other.env", "PYOCO_DEFAULT_TAG=b\n");
    let s = f.settings();
    assert_eq!(s.default_tag, "a");
    assert!(s.load_dotenv);
    assert_eq!(s.source("PYOCO_LOAD_DOTENV"), Some(&Source::Default));
}

#[test]
fn env_file_absolute_path() {
    let other = tempfile::tempdir().unwrap();
    let path = other.path().join("prod.env");
    fs::write(&path, "PYOCO_DEFAULT_TAG=absolute\n").unwrap();
    let f = Fixture::new()
        .env("PYOCO_ENV_FILE", path.to_str().unwrap())
        .file(".env", "PYOCO_DEFAULT_TAG=cwd\n");
    let s = f.settings();
    assert_eq!(s.default_tag, "absolute");
    assert_eq!(
        s.source("PYOCO_DEFAULT_TAG"),
        Some(&Source::File { path: path.clone() })
    );
    assert_eq!(s.env_file, Some(path));
}

#[test]
fn env_file_relative_to_the_working_directory() {
    let f = Fixture::new()
        .env("PYOCO_ENV_FILE", "conf/app.env")
        .file("conf/app.env", "PYOCO_DEFAULT_TAG=relative\n");
    let s = f.settings();
    assert_eq!(s.default_tag, "relative");
    let expected = f.cwd().join("conf/app.env");
    assert_eq!(
        s.source("PYOCO_DEFAULT_TAG"),
        Some(&Source::File { path: expected })
    );
}

#[test]
fn env_file_tilde_is_the_home_directory() {
    let f = Fixture::new().env("PYOCO_ENV_FILE", "~/my.env");
    fs::write(f.home().join("my.env"), "PYOCO_DEFAULT_TAG=tilde\n").unwrap();
    let s = f.settings();
    assert_eq!(s.default_tag, "tilde");
    assert_eq!(s.env_file, Some(f.home().join("my.env")));
}

#[test]
fn env_file_set_but_empty_disables_the_file() {
    let f = Fixture::new()
        .env("PYOCO_ENV_FILE", "")
        .file(".env", "PYOCO_DEFAULT_TAG=from_file\n");
    let s = f.settings();
    assert_eq!(s.default_tag, "default");
    assert_eq!(s.env_file, None);
    assert_eq!(s.source("PYOCO_ENV_FILE"), Some(&Source::Env));
}

#[test]
fn a_missing_env_file_is_fine() {
    let f = Fixture::new().env("PYOCO_ENV_FILE", "does/not/exist.env");
    assert_eq!(f.settings().default_tag, "default");
}

#[test]
fn an_unparsable_env_file_is_an_error_naming_file_and_line() {
    let f = Fixture::new().file(".env", "# ok\nPYOCO_DEFAULT_TAG=a\nPYOCO_NATS_URL=a b c\n");
    match f.error() {
        ConfigError::ParseEnvFile {
            path,
            line,
            message,
        } => {
            assert_eq!(path, f.cwd().join(".env"));
            assert_eq!(line, 3);
            assert!(message.contains("a b c"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = f.error().to_string();
    assert!(text.contains(".env: line 3:"), "{text}");
}

#[test]
fn an_unclosed_quote_is_reported_at_its_line() {
    let f = Fixture::new().file(".env", "A=1\n\nB=\"never closed\nC=3\n");
    match f.error() {
        ConfigError::ParseEnvFile { line, .. } => assert_eq!(line, 3),
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn a_non_utf8_env_file_is_an_error_with_its_line() {
    let f = Fixture::new();
    fs::write(f.cwd().join(".env"), b"A=1\nB=\xff\xfe\n").unwrap();
    match f.error() {
        ConfigError::ParseEnvFile { line, message, .. } => {
            assert_eq!(line, 2);
            assert!(message.contains("UTF-8"));
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn an_unreadable_env_file_is_an_error_naming_the_file() {
    // A directory where the file should be cannot be read (works as root too).
    let f = Fixture::new();
    fs::create_dir(f.cwd().join(".env")).unwrap();
    match f.error() {
        ConfigError::ReadEnvFile { path, .. } => assert_eq!(path, f.cwd().join(".env")),
        other => panic!("unexpected error {other:?}"),
    }
}

// ── 0.5.1's `.env` quirks (contract §14 item 13) ─────────────────────────────────────────────

#[test]
fn quirk_quoted_value_with_inline_comment_loses_quotes_and_comment() {
    let f = Fixture::new().file(
        ".env",
        "PYOCO_HTTP_AUTH_MODE=\"api_key\" # on\nPYOCO_CONSUMER_MAX_DELIVER='5' # five\nPYOCO_WHEEL_SYNC_ENABLED=\"1\" # 0|1\n",
    );
    let s = f.settings();
    assert_eq!(s.http_auth_mode, AuthMode::ApiKey);
    assert_eq!(s.consumer_max_deliver, 5);
    assert!(s.wheel_sync_enabled);
    assert_eq!(s.raw("PYOCO_HTTP_AUTH_MODE"), Some("api_key"));
}

#[test]
fn quirk_non_ascii_in_double_quotes_is_intact() {
    let f = Fixture::new().file(
        ".env",
        "PYOCO_DISCOVERY_MODULES=\"日本語.タスク\"\nPYOCO_AUTH_PEPPER=\"ペッパー é\"\n",
    );
    let s = f.settings();
    assert_eq!(s.discovery_modules.as_deref(), Some("日本語.タスク"));
    assert_eq!(s.auth_pepper.as_deref(), Some("ペッパー é"));
}

#[test]
fn quirk_logging_and_discovery_settings_are_read_from_dotenv() {
    let f = Fixture::new().file(
        ".env",
        "PYOCO_LOG_LEVEL=debug\nPYOCO_LOG_FORMAT=text\nPYOCO_LOG_UTC=false\n\
         PYOCO_LOG_INCLUDE_TRACEBACK=no\nPYOCO_DISCOVERY_MODULES=my_tasks.a,my_tasks.b\n",
    );
    let s = f.settings();
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(s.log_format, LogFormat::Text);
    assert!(!s.log_utc);
    assert!(!s.log_include_traceback);
    assert_eq!(
        s.discovery_modules.as_deref(),
        Some("my_tasks.a,my_tasks.b")
    );
    assert_eq!(s.source("PYOCO_LOG_LEVEL"), Some(&f.dotenv_source()));
}

#[test]
fn the_seed_config_example_loads_with_the_values_it_means() {
    // docs/config.md's own example, including `"0" # 0|1` and `"7776000" # 90 days`.
    let f = Fixture::new().file(
        ".env",
        r#"# NATS
PYOCO_NATS_URL="nats://127.0.0.1:4222"
PYOCO_WORK_SUBJECT_PREFIX="pyoco.work"
PYOCO_RUN_HEARTBEAT_INTERVAL_SEC="1.0"
PYOCO_CONSUMER_MAX_DELIVER="20"
PYOCO_DLQ_PUBLISH_EXECUTION_ERROR="true"
PYOCO_WHEEL_SYNC_ENABLED="0" # 0|1（既定は無効）
PYOCO_WHEEL_HISTORY_TTL_SEC="7776000" # 90 days
PYOCO_DASHBOARD_LANG="auto"
PYOCO_LOAD_DOTENV="1" # 0|1
# PYOCO_ENV_FILE="/path/to/custom.env"
PYOCO_LOG_LEVEL="INFO"
PYOCO_LOG_FORMAT="json" # json|text
PYOCO_HTTP_AUTH_MODE="none" # none|api_key
PYOCO_HTTP_API_KEY_HEADER="X-API-Key"
# PYOCO_AUTH_PEPPER="..."
"#,
    );
    let s = f.settings();
    assert!(!s.wheel_sync_enabled);
    assert_eq!(s.wheel_history_ttl_sec, 7_776_000.0);
    assert_eq!(s.http_auth_mode, AuthMode::None);
    assert_eq!(s.auth_pepper, None);
    assert_eq!(
        s.source("PYOCO_WHEEL_SYNC_ENABLED"),
        Some(&f.dotenv_source())
    );
}

// ── Validation errors ───────────────────────────────────────────────────────────────────────

fn single_problem(f: &Fixture) -> pyoco_config::Problem {
    let err = f.error();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    problems[0].clone()
}

#[test]
fn the_runner_settings_load_from_the_dotenv_and_are_validated() {
    let s = Fixture::new().settings();
    assert_eq!(s.flow_resolver, None);
    assert_eq!(s.runner_max_task_output_bytes, 65_536);
    assert!(!s.runner_tee_task_output);

    let f = Fixture::new().file(
        ".env",
        "PYOCO_FLOW_RESOLVER=flows/resolver.py:resolve\n\
         PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES=0\n\
         PYOCO_RUNNER_TEE_TASK_OUTPUT=yes\n",
    );
    let s = f.settings();
    let resolver = format!("{}:resolve", f.cwd().join("flows/resolver.py").display());
    assert_eq!(s.flow_resolver.as_deref(), Some(resolver.as_str()));
    assert_eq!(
        s.raw("PYOCO_FLOW_RESOLVER"),
        Some("flows/resolver.py:resolve")
    );
    assert_eq!(s.runner_max_task_output_bytes, 0, "0 keeps only the marker");
    assert!(s.runner_tee_task_output);
    for name in [
        "PYOCO_FLOW_RESOLVER",
        "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES",
        "PYOCO_RUNNER_TEE_TASK_OUTPUT",
    ] {
        let spec = spec(name).unwrap();
        assert_eq!(s.source(name), Some(&f.dotenv_source()), "{name}");
        assert_eq!((spec.group, spec.scope), (Group::Worker, Scope::Server));
    }
    let s = Fixture::new()
        .env("PYOCO_FLOW_RESOLVER", "my_pkg.flows:resolve")
        .settings();
    assert_eq!(s.flow_resolver.as_deref(), Some("my_pkg.flows:resolve"));

    for (name, value, reason) in [
        (
            "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES",
            "-1",
            "must be at least 0",
        ),
        (
            "PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES",
            "abc",
            "not an integer",
        ),
        ("PYOCO_RUNNER_TEE_TASK_OUTPUT", "loud", "not a boolean word"),
        ("PYOCO_FLOW_RESOLVER", "resolve", "no `:function` part"),
        ("PYOCO_FLOW_RESOLVER", "my-pkg:resolve", "not a Python name"),
    ] {
        let f = Fixture::new().file(".env", &format!("{name}={value}\n"));
        let p = single_problem(&f);
        assert_eq!((p.name, p.value.as_str()), (name, value));
        assert!(p.reason.contains(reason), "{name}={value}: {}", p.reason);
        let shown = f.error().to_string();
        assert!(
            shown.contains(&format!("{name}={value:?} (from file ")),
            "{shown}"
        );
    }
}

#[test]
fn max_deliver_abc_is_an_error_naming_variable_value_form_and_file() {
    let f = Fixture::new().file(".env", "PYOCO_CONSUMER_MAX_DELIVER=abc\n");
    let p = single_problem(&f);
    assert_eq!(p.name, "PYOCO_CONSUMER_MAX_DELIVER");
    assert_eq!(p.value, "abc");
    assert_eq!(p.source, f.dotenv_source());
    let text = f.error().to_string();
    assert!(
        text.contains("PYOCO_CONSUMER_MAX_DELIVER=\"abc\""),
        "{text}"
    );
    assert!(text.contains("an integer ≥ 1"), "{text}");
    assert!(
        text.contains(&format!("file {}", f.cwd().join(".env").display())),
        "{text}"
    );
}

#[test]
fn negative_interval_is_an_error() {
    let f = Fixture::new().env("PYOCO_RUN_HEARTBEAT_INTERVAL_SEC", "-1");
    let p = single_problem(&f);
    assert_eq!(p.name, "PYOCO_RUN_HEARTBEAT_INTERVAL_SEC");
    assert_eq!(p.source, Source::Env);
    assert!(f.error().to_string().contains("(from environment)"));
}

#[test]
fn unknown_auth_mode_is_an_error() {
    let f = Fixture::new().env("PYOCO_HTTP_AUTH_MODE", "apikey");
    let p = single_problem(&f);
    assert_eq!(p.name, "PYOCO_HTTP_AUTH_MODE");
    assert!(p.expected.contains("api_key"));
}

#[test]
fn each_listed_bad_value_is_rejected() {
    let cases = [
        ("PYOCO_CONSUMER_MAX_ACK_PENDING", "0"),
        ("PYOCO_WORKERS_KV_TTL_SEC", "-5"),
        ("PYOCO_ACK_PROGRESS_INTERVAL_SEC", "-1"),
        ("PYOCO_CANCEL_GRACE_PERIOD_SEC", "-0.5"),
        ("PYOCO_MAX_RUN_SNAPSHOT_BYTES", "-1"),
        ("PYOCO_WHEEL_MAX_BYTES", "-1"),
        ("PYOCO_CONSUMER_ACK_WAIT_SEC", "nan"),
        ("PYOCO_DLQ_MAX_AGE_SEC", "inf"),
        ("PYOCO_HTTP_PORT", "65536"),
        ("PYOCO_HTTP_PORT", "0"),
        ("PYOCO_NATS_CLIENT_PORT", "70000"),
        ("PYOCO_NATS_HTTP_PORT", "-1"),
        ("PYOCO_RUNS_KV_BUCKET", "pyoco.runs"),
        ("PYOCO_DLQ_STREAM", "my stream"),
        ("PYOCO_WORK_SUBJECT_PREFIX", "pyoco work"),
        ("PYOCO_DLQ_SUBJECT_PREFIX", "pyoco.*"),
        ("PYOCO_WORK_SUBJECT_PREFIX", "pyoco.>"),
        ("PYOCO_NATS_URL", "http://127.0.0.1:4222"),
        ("PYOCO_HTTP_API_KEY_HEADER", "X API Key"),
        ("PYOCO_DEFAULT_TAG", "a.b"),
        ("PYOCO_WORKER_TAGS", "cpu,gpu large"),
        ("PYOCO_DASHBOARD_LANG", "fr"),
        ("PYOCO_LOG_LEVEL", "loud"),
        ("PYOCO_LOG_FORMAT", "xml"),
        ("PYOCO_WHEEL_SYNC_ENABLED", "maybe"),
        ("PYOCO_LOAD_DOTENV", "sometimes"),
        ("PYOCO_HTTP_HOST", "my host"),
        ("PYOCO_WORKER_ID", "w 1"),
        ("PYOCO_JETSTREAM_REPLICAS", "0"),
        ("PYOCO_JETSTREAM_REPLICAS", "6"),
        ("PYOCO_JETSTREAM_REPLICAS", "three"),
    ];
    for (name, value) in cases {
        let f = Fixture::new().env(name, value);
        let p = single_problem(&f);
        assert_eq!((p.name, p.value.as_str()), (name, value));
    }
}

#[test]
fn all_problems_of_one_load_are_reported_together_with_their_sources() {
    let f = Fixture::new()
        .env("PYOCO_HTTP_AUTH_MODE", "on")
        .env("PYOCO_HTTP_PORT", "99999")
        .file(
            ".env",
            "PYOCO_CONSUMER_MAX_DELIVER=abc\nPYOCO_RUN_HEARTBEAT_INTERVAL_SEC=-1\nPYOCO_RUNS_KV_BUCKET=a.b\n",
        );
    let err = f.error();
    let got: Vec<(&str, &Source)> = err.problems().iter().map(|p| (p.name, &p.source)).collect();
    let file = f.dotenv_source();
    assert_eq!(
        got,
        vec![
            ("PYOCO_RUNS_KV_BUCKET", &file),
            ("PYOCO_RUN_HEARTBEAT_INTERVAL_SEC", &file),
            ("PYOCO_CONSUMER_MAX_DELIVER", &file),
            ("PYOCO_HTTP_AUTH_MODE", &Source::Env),
            ("PYOCO_HTTP_PORT", &Source::Env),
        ]
    );
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "5 invalid settings:");
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[1..].iter().all(|l| l.contains("expected")), "{text}");
}

#[test]
fn a_bad_pepper_is_never_echoed() {
    // The pepper has no invalid form, but a secret's value must not leak in Debug output either.
    let f = Fixture::new().env("PYOCO_AUTH_PEPPER", "s3cr3t-value");
    let s = f.settings();
    assert_eq!(s.auth_pepper.as_deref(), Some("s3cr3t-value"));
    let debug = format!("{s:?}");
    assert!(!debug.contains("s3cr3t-value"), "{debug}");
    assert!(debug.contains("<secret>"));
}

#[test]
fn pepper_is_kept_verbatim_but_blank_means_none() {
    let s = Fixture::new().env("PYOCO_AUTH_PEPPER", " pep ").settings();
    assert_eq!(s.auth_pepper.as_deref(), Some(" pep "));
    let s = Fixture::new().env("PYOCO_AUTH_PEPPER", "   ").settings();
    assert_eq!(s.auth_pepper, None);
}

#[test]
fn python_accepted_forms_load() {
    let f = Fixture::new()
        .env("PYOCO_RUN_HEARTBEAT_INTERVAL_SEC", " 2 ")
        .env("PYOCO_CONSUMER_ACK_WAIT_SEC", "1e2")
        .env("PYOCO_CONSUMER_MAX_DELIVER", "+7")
        .env("PYOCO_DLQ_MAX_MSGS", "100_000")
        .env("PYOCO_WHEEL_SYNC_ENABLED", "YES")
        .env("PYOCO_HTTP_AUTH_MODE", " API_KEY ")
        .env("PYOCO_DASHBOARD_LANG", "ja_JP.UTF-8")
        .env("PYOCO_LOG_LEVEL", "warn")
        .env("PYOCO_ACK_PROGRESS_INTERVAL_SEC", "0")
        .env("PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC", "0.01");
    let s = f.settings();
    assert_eq!(s.run_heartbeat_interval_sec, 2.0);
    assert_eq!(s.consumer_ack_wait_sec, 100.0);
    assert_eq!(s.consumer_max_deliver, 7);
    assert_eq!(s.dlq_max_msgs, 100_000);
    assert!(s.wheel_sync_enabled);
    assert_eq!(s.http_auth_mode, AuthMode::ApiKey);
    assert_eq!(s.dashboard_lang, DashboardLang::Ja);
    assert_eq!(s.log_level, LogLevel::Warning);
    assert_eq!(s.ack_progress_interval_sec, 0.0);
    // Below 0.5.1's 0.1 s floor: raised to it; the raw text is kept for the UI.
    assert_eq!(s.worker_heartbeat_interval_sec, 0.1);
    assert_eq!(s.raw("PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC"), Some("0.01"));
}

#[test]
fn worker_tags_default_to_the_default_tag() {
    let s = Fixture::new().env("PYOCO_DEFAULT_TAG", "gpu").settings();
    assert_eq!(s.worker_tags, vec!["gpu".to_owned()]);
    let s = Fixture::new().env("PYOCO_WORKER_TAGS", "a, b,a").settings();
    assert_eq!(s.worker_tags, vec!["a".to_owned(), "b".to_owned()]);
}

#[test]
fn appliance_paths_are_absolute_after_loading() {
    let f = Fixture::new()
        .env("PYOCO_DATA_DIR", "appdata")
        .env("PYOCO_NATS_STORE_DIR", "~/nats")
        .env("PYOCO_PYTHON", "python3.12")
        .env("PYOCO_NATS_SERVER_BIN", "bin/nats-server");
    let s = f.settings();
    assert_eq!(s.data_dir, Some(f.cwd().join("appdata")));
    assert_eq!(s.nats_store_dir, Some(f.home().join("nats")));
    assert_eq!(s.python, Some(PathBuf::from("python3.12")));
    assert_eq!(s.nats_server_bin, Some(f.cwd().join("bin/nats-server")));
}

#[test]
fn raw_and_source_of_unknown_names_are_none() {
    let s = Fixture::new().settings();
    assert_eq!(s.raw("PYOCO_NOPE"), None);
    assert_eq!(s.source("PYOCO_NOPE"), None);
    assert_eq!(s.raw("PYOCO_AUTH_PEPPER"), None);
    assert_eq!(s.entries().count(), specs().len());
}

#[test]
fn nats_files_must_exist_and_are_resolved_against_the_working_directory() {
    let f = Fixture::new()
        .file("certs/ca.pem", "-----BEGIN CERTIFICATE-----\n")
        .file("home/nats.creds", "creds")
        .env("PYOCO_NATS_TLS_CA_FILE", "certs/ca.pem")
        .env("PYOCO_NATS_CREDS_FILE", "~/nats.creds");
    let s = f.settings();
    assert_eq!(s.nats_tls_ca_file, Some(f.cwd().join("certs/ca.pem")));
    assert_eq!(s.nats_creds_file, Some(f.home().join("nats.creds")));
    assert!(!s.nats_tls_first);

    let text = Fixture::new()
        .env("PYOCO_NATS_TLS_CA_FILE", "missing/ca.pem")
        .error()
        .to_string();
    assert!(text.contains("PYOCO_NATS_TLS_CA_FILE"), "{text}");
    assert!(text.contains("no such file:"), "{text}");
    assert!(text.contains("missing/ca.pem"), "{text}");
    let text = Fixture::new()
        .file("d/x", "")
        .env("PYOCO_NATS_NKEY_SEED_FILE", "d")
        .error()
        .to_string();
    assert!(
        text.contains("PYOCO_NATS_NKEY_SEED_FILE") && text.contains("is a directory"),
        "{text}"
    );
}

#[test]
fn nats_settings_that_only_work_together_are_checked_together() {
    let f = Fixture::new()
        .file("c.pem", "x")
        .env("PYOCO_NATS_TLS_CERT_FILE", "c.pem");
    let text = f.error().to_string();
    assert!(
        text.contains("PYOCO_NATS_TLS_CERT_FILE")
            && text.contains("PYOCO_NATS_TLS_KEY_FILE is not set"),
        "{text}"
    );
    let text = Fixture::new()
        .env("PYOCO_NATS_USER", "u")
        .error()
        .to_string();
    assert!(text.contains("PYOCO_NATS_PASSWORD is not set"), "{text}");
    // One way to authenticate; the secret is not shown.
    let text = Fixture::new()
        .env("PYOCO_NATS_TOKEN", "s3cret")
        .env("PYOCO_NATS_USER", "u")
        .env("PYOCO_NATS_PASSWORD", "p4ss")
        .error()
        .to_string();
    assert!(
        text.contains("PYOCO_NATS_USER") && text.contains("PYOCO_NATS_TOKEN is set too"),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !text.contains("p4ss"), "{text}");
    let s = Fixture::new()
        .env("PYOCO_NATS_USER", "u")
        .env("PYOCO_NATS_PASSWORD", " p ")
        .settings();
    assert_eq!(s.nats_password.as_deref(), Some(" p "));
}
