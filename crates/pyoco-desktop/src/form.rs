//! The settings window's form: every setting of the `pyoco-config` table, grouped, with its
//! help, default, current `.env` text and how a change takes effect; and the one-value check
//! the window runs as the user types.

use pyoco_appliance::{restarts_for, Component};
use pyoco_config::{specs, EnvDocument, Group, Kind, LoadOptions, Scope, Source, Spec};
use serde::Serialize;
use std::path::Path;

/// The whole form.
#[derive(Debug, Clone, Serialize)]
pub struct Form {
    pub env_file: String,
    pub export_path: String,
    pub groups: Vec<FormGroup>,
}

/// One section of the form.
#[derive(Debug, Clone, Serialize)]
pub struct FormGroup {
    pub id: String,
    pub title: &'static str,
    pub fields: Vec<Field>,
}

/// One setting in the form.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub name: &'static str,
    pub help: &'static str,
    pub expected: String,
    /// The default in force in the app: the table's appliance default where the setting has
    /// one (e.g. wheel sync on), else its plain default.
    pub default: Option<&'static str>,
    /// `text`, `number`, `bool`, `select`, `secret` or `path`.
    pub input: &'static str,
    pub choices: Option<Vec<String>>,
    /// The text in the `.env` (`""` when absent; always `""` for secrets).
    pub value: String,
    pub secret: bool,
    /// The `.env` has a non-empty value for it.
    pub is_set: bool,
    /// `server` or `local`.
    pub scope: &'static str,
    /// The process environment's value, which wins over the `.env` (masked for secrets).
    pub env_override: Option<String>,
    /// What a change restarts (empty: applies at the next start of the app).
    pub restarts: Vec<&'static str>,
}

/// Whether the window lists a setting: everything but the loader's own switches.
pub fn editable(spec: &Spec) -> bool {
    spec.scope != Scope::ProcessEnv
}

/// The form for the `.env` document `doc` (empty when the file does not exist yet).
pub fn build(doc: &EnvDocument, opts: &LoadOptions, env_file: &Path, export_path: &Path) -> Form {
    let mut groups: Vec<FormGroup> = Vec::new();
    for group in Group::ALL {
        let fields: Vec<Field> = specs()
            .iter()
            .filter(|s| s.group == group && editable(s))
            .map(|s| field(s, doc, opts))
            .collect();
        if !fields.is_empty() {
            groups.push(FormGroup {
                id: group_id(group),
                title: group.title(),
                fields,
            });
        }
    }
    Form {
        env_file: env_file.display().to_string(),
        export_path: export_path.display().to_string(),
        groups,
    }
}

fn field(spec: &'static Spec, doc: &EnvDocument, opts: &LoadOptions) -> Field {
    let text = doc.get(spec.name).unwrap_or("").to_owned();
    let is_set = !text.trim().is_empty();
    let (input, choices) = input_of(spec.kind);
    let choices = choices.map(|c| {
        let mut c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
        // A value written by hand that is valid but not one of the canonical spellings
        // (`info`, `ja_JP.UTF-8`) stays selectable.
        if is_set && !c.iter().any(|x| x == text.trim()) {
            c.push(text.trim().to_owned());
        }
        c
    });
    let env_override = opts
        .env
        .get(spec.name)
        .filter(|v| !v.trim().is_empty())
        .map(|v| if spec.secret { mask(v) } else { v.clone() });
    Field {
        name: spec.name,
        help: spec.help,
        expected: spec.expected(),
        // The app is the appliance: its default is the appliance default where there is one.
        default: spec.appliance_default.or(spec.default),
        input,
        choices,
        value: if spec.secret { String::new() } else { text },
        secret: spec.secret,
        is_set,
        scope: spec.scope.label(),
        env_override,
        restarts: restarts_for(spec.name)
            .iter()
            .map(|c| component_id(*c))
            .collect(),
    }
}

/// The window's id for a component.
pub fn component_id(c: Component) -> &'static str {
    match c {
        Component::Nats => "nats",
        Component::Gateway => "gateway",
        Component::Worker => "worker",
    }
}

fn mask(_secret: &str) -> String {
    "••••••".to_owned()
}

fn input_of(kind: Kind) -> (&'static str, Option<&'static [&'static str]>) {
    match kind {
        Kind::Bool => ("bool", None),
        Kind::AuthMode => ("select", Some(&["none", "api_key"])),
        Kind::LogFormat => ("select", Some(&["json", "text"])),
        Kind::LogLevel => (
            "select",
            Some(&["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
        ),
        Kind::DashboardLang => ("select", Some(&["auto", "en", "ja"])),
        Kind::Replicas => ("select", Some(&["1", "2", "3", "4", "5"])),
        Kind::Secret => ("secret", None),
        Kind::Path | Kind::Dir | Kind::Dirs | Kind::Program | Kind::EnvFile | Kind::File => {
            ("path", None)
        }
        Kind::Port { .. } | Kind::Interval { .. } | Kind::Seconds | Kind::Integer { .. } => {
            ("number", None)
        }
        Kind::Text
        | Kind::NatsUrl
        | Kind::SubjectPrefix
        | Kind::Name
        | Kind::Tag
        | Kind::Tags
        | Kind::KvKey
        | Kind::HeaderName
        | Kind::Host
        | Kind::Hosts
        | Kind::Origins
        | Kind::Modules
        | Kind::FlowResolver => ("text", None),
    }
}

fn group_id(group: Group) -> String {
    let title = group.title();
    let mut id = String::new();
    for ch in title.chars() {
        if ch.is_ascii_alphanumeric() {
            id.push(ch.to_ascii_lowercase());
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

/// Check one value as the user types: `None` when valid (blank = unset = valid), else the
/// reason and the expected form, worded as the CLI words them.
pub fn validate(
    name: &str,
    value: &str,
    opts: &LoadOptions,
    env_file: &Path,
) -> Result<Option<String>, String> {
    let spec = pyoco_config::spec(name)
        .filter(|s| editable(s))
        .ok_or_else(|| format!("{name} is not a setting of the settings window"))?;
    let source = Source::File {
        path: env_file.to_path_buf(),
    };
    Ok(opts
        .check(spec, value, &source)
        .err()
        .map(|p| problem_message(&p)))
}

/// How a problem is shown next to its field: the reason and the expected form (the variable
/// and value are already on screen).
pub fn problem_message(p: &pyoco_config::Problem) -> String {
    format!("{}; expected {}", p.reason, p.expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            env: Default::default(),
            cwd: "/tmp".into(),
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn every_editable_setting_is_in_the_form_once_in_table_order() {
        let form = build(
            &EnvDocument::new(),
            &opts(),
            Path::new("/c/.env"),
            Path::new("/x"),
        );
        let names: Vec<&str> = form
            .groups
            .iter()
            .flat_map(|g| g.fields.iter().map(|f| f.name))
            .collect();
        let expected: Vec<&str> = specs()
            .iter()
            .filter(|s| editable(s))
            .map(|s| s.name)
            .collect();
        assert_eq!(names, expected);
        assert_eq!(form.groups[0].title, "NATS");
        assert_eq!(form.groups[0].id, "nats");
        assert!(form.groups.iter().any(|g| g.id == "subjects-buckets"));
        assert!(!names.contains(&"PYOCO_LOAD_DOTENV"));
    }

    #[test]
    fn fields_show_the_file_text_and_mask_secrets() {
        let doc = EnvDocument::parse(
            "PYOCO_HTTP_PORT=8123\nPYOCO_AUTH_PEPPER=hunter2\nPYOCO_LOG_LEVEL=info\n",
        )
        .unwrap();
        let mut o = opts();
        o.env.insert("PYOCO_AUTH_PEPPER".into(), "from-env".into());
        let form = build(&doc, &o, Path::new("/c/.env"), Path::new("/x"));
        let find = |n: &str| {
            form.groups
                .iter()
                .flat_map(|g| &g.fields)
                .find(|f| f.name == n)
                .unwrap()
                .clone()
        };
        let port = find("PYOCO_HTTP_PORT");
        assert_eq!(
            (port.value.as_str(), port.input, port.is_set),
            ("8123", "number", true)
        );
        assert_eq!(port.restarts, vec!["gateway"]);
        let pepper = find("PYOCO_AUTH_PEPPER");
        assert_eq!(pepper.value, "");
        assert!(pepper.is_set && pepper.secret);
        assert_eq!(pepper.env_override.as_deref(), Some("••••••"));
        let json = serde_json::to_string(&form).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("from-env"));
        let level = find("PYOCO_LOG_LEVEL");
        assert_eq!(level.input, "select");
        assert!(level.choices.unwrap().contains(&"info".to_owned()));
        assert!(level.restarts.is_empty());
        let nats_port = find("PYOCO_NATS_CLIENT_PORT");
        assert_eq!(nats_port.scope, "local");
        assert_eq!(nats_port.restarts, vec!["nats", "gateway", "worker"]);
    }

    #[test]
    fn fields_show_the_default_the_app_runs_with() {
        let form = build(
            &EnvDocument::new(),
            &opts(),
            Path::new("/c/.env"),
            Path::new("/x"),
        );
        let default = |n: &str| {
            form.groups
                .iter()
                .flat_map(|g| &g.fields)
                .find(|f| f.name == n)
                .unwrap()
                .default
        };
        // The appliance's own defaults, where the table gives one…
        assert_eq!(default("PYOCO_WHEEL_SYNC_ENABLED"), Some("true"));
        assert_eq!(default("PYOCO_WHEEL_SYNC_DIR"), Some("wheels"));
        // …else the plain default.
        assert_eq!(default("PYOCO_NATS_URL"), Some("nats://127.0.0.1:4222"));
        assert_eq!(default("PYOCO_PYTHON"), None);
    }

    #[test]
    fn creation_only_settings_are_the_ones_the_store_keeps() {
        let names: Vec<&str> = specs()
            .iter()
            .filter(|s| s.applies_at_creation())
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "PYOCO_WORKERS_KV_TTL_SEC",
                "PYOCO_CONSUMER_ACK_WAIT_SEC",
                "PYOCO_CONSUMER_MAX_DELIVER",
                "PYOCO_CONSUMER_MAX_ACK_PENDING",
                "PYOCO_WORKFLOW_KEEP_SEC",
                "PYOCO_DLQ_MAX_AGE_SEC",
                "PYOCO_DLQ_MAX_MSGS",
                "PYOCO_DLQ_MAX_BYTES",
                "PYOCO_TASK_LOG_MAX_AGE_SEC",
                "PYOCO_TASK_LOG_STREAM_MAX_BYTES",
                "PYOCO_WHEEL_HISTORY_TTL_SEC",
            ]
        );
    }

    #[test]
    fn validation_uses_the_loader_rules_and_words() {
        let env = Path::new("/c/.env");
        assert_eq!(validate("PYOCO_HTTP_PORT", "8000", &opts(), env), Ok(None));
        assert_eq!(validate("PYOCO_HTTP_PORT", "", &opts(), env), Ok(None));
        let msg = validate("PYOCO_HTTP_PORT", "abc", &opts(), env)
            .unwrap()
            .unwrap();
        assert!(msg.ends_with("expected a port number 1..65535"), "{msg}");
        let msg = validate("PYOCO_NATS_URL", "http://x", &opts(), env)
            .unwrap()
            .unwrap();
        assert!(msg.contains("expected comma-separated NATS URLs"), "{msg}");
        assert!(validate("PYOCO_NOPE", "1", &opts(), env).is_err());
        assert!(validate("PYOCO_LOAD_DOTENV", "1", &opts(), env).is_err());
    }
}
