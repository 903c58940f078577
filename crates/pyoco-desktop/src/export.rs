//! "Export for production": a `.env` for a server with the settings that matter there.
//!
//! Every server-scope setting is listed under its group's heading with its help: the ones the
//! app's `.env` sets as `NAME=value`, the others as a
//! commented-out `# NAME=default`, so the file documents itself and an operator can switch a
//! setting on by removing one `#`. Local-only settings (the managed nats-server's ports and
//! paths, the data dir) are left out. The file is written atomically, mode 0600 when new (it
//! may hold `PYOCO_AUTH_PEPPER`), and it loads the same in our `pyoco-server`/`pyoco-worker`
//! and in Python pyoco-server 0.5.1.

use std::path::{Path, PathBuf};

use pyoco_config::{quote_value, specs, EnvDocument, Group, Settings, Source};

/// Settings whose default differs from pyoco-server 0.5.1's (name, 0.5.1's default): the export
/// writes them out, so a Python gateway or worker reading the file gets our values too.
const DEFAULT_DIFFERS_FROM_0_5_1: &[(&str, &str)] = &[("PYOCO_WORKERS_KV_TTL_SEC", "15.0")];

/// Where the file went, how many settings it sets, and what is unsafe about them for a server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exported {
    pub path: String,
    pub count: usize,
    /// [`warnings`] of the exported settings (also written at the top of the file).
    pub warnings: Vec<String>,
}

/// What a server should not run with: auth off, auth without a pepper, any module callable.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    match settings.http_auth_mode {
        pyoco_config::AuthMode::None => out.push(
            "PYOCO_HTTP_AUTH_MODE is none: anyone who can reach the gateway can run flows; set \
             it to api_key and create keys with `pyoco-server-admin api-key create --tenant T`"
                .to_string(),
        ),
        pyoco_config::AuthMode::ApiKey => {
            if settings
                .auth_pepper
                .as_deref()
                .unwrap_or_default()
                .is_empty()
            {
                out.push(
                    "PYOCO_AUTH_PEPPER is empty: API key hashes are unpeppered; set the same \
                     secret for the gateways and pyoco-server-admin"
                        .to_string(),
                );
            }
        }
    }
    if settings.task_modules.is_empty() {
        out.push(
            "PYOCO_TASK_MODULES is empty: a flow may call any importable function (os:system \
             included); list your task modules"
                .to_string(),
        );
    }
    out
}

/// The text of the production `.env` for `settings` (loaded from `from`).
pub fn render(settings: &Settings, from: &Path, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    out.push_str("# pyoco-server production settings\n");
    out.push_str(&format!(
        "# Exported by the pyoco-server desktop app on {} from {}\n",
        now.format("%Y-%m-%dT%H:%M:%SZ"),
        from.display()
    ));
    out.push_str(
        "# Local-only settings (the managed nats-server's ports and store, the data dir) are \
         left out.\n# Use it as `.env` in the working directory of pyoco-server / pyoco-worker, \
         or point PYOCO_ENV_FILE at it.\n# Lines starting with `# PYOCO_` show a default: \
         remove the `#` to set it.\n",
    );
    for warning in warnings(settings) {
        out.push_str(&format!("# WARNING: {warning}.\n"));
    }
    if specs()
        .iter()
        .any(|s| s.exported() && s.secret && settings.raw(s.name).is_some())
    {
        out.push_str("# It contains a secret (PYOCO_AUTH_PEPPER): keep this file private.\n");
    }
    for group in Group::ALL {
        let group_specs: Vec<_> = specs()
            .iter()
            .filter(|s| s.group == group && s.exported())
            .collect();
        if group_specs.is_empty() {
            continue;
        }
        out.push_str(&format!("\n# --- {} ---\n", group.title()));
        for spec in group_specs {
            out.push_str(&format!("# {}\n", spec.help));
            // What the app's `.env` sets; its process environment is this machine's business.
            let set = settings
                .raw(spec.name)
                .filter(|_| matches!(settings.source(spec.name), Some(Source::File { .. })));
            let differs = DEFAULT_DIFFERS_FROM_0_5_1
                .iter()
                .find(|(name, _)| *name == spec.name);
            match (set, spec.default) {
                (None, Some(default)) if differs.is_some() => {
                    let python = differs.map_or("", |(_, p)| *p);
                    out.push_str(&format!(
                        "# (written out: pyoco-server 0.5.1's default is {python})\n{}={}\n",
                        spec.name,
                        quote_value(default)
                    ));
                }
                (Some(value), _) => {
                    out.push_str(&format!("{}={}\n", spec.name, quote_value(value)));
                }
                (None, Some(default)) => {
                    out.push_str(&format!("# {}={}\n", spec.name, quote_value(default)));
                }
                (None, None) => out.push_str(&format!("# {}=\n", spec.name)),
            }
        }
    }
    out
}

/// Write the export to `path` (see the module docs). `Err` says what to do.
pub fn write(settings: &Settings, from: &Path, path: &Path) -> Result<Exported, String> {
    let text = render(settings, from, chrono::Utc::now());
    let doc = EnvDocument::parse(&text)
        .map_err(|e| format!("internal error: the export does not parse back ({e})"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!(
                "cannot export to {}: the folder {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    if path.is_dir() {
        return Err(format!(
            "cannot export to {}: it is a folder; give a file name such as {}",
            path.display(),
            path.join("pyoco-server.env").display()
        ));
    }
    doc.save(path).map_err(|e| e.to_string())?;
    let count = doc.keys().len();
    Ok(Exported {
        path: path.display().to_string(),
        count,
        warnings: warnings(settings),
    })
}

/// Resolve the path typed in the window: `~` and relative paths are taken from `home`.
pub fn resolve_path(typed: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Err("give the path of the file to write, e.g. ~/pyoco-server.env".into());
    }
    let expanded = match (typed.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        (Some(_), None) => return Err("`~` cannot be expanded: no home directory is known".into()),
        _ => PathBuf::from(typed),
    };
    Ok(match (expanded.is_absolute(), home) {
        (true, _) => expanded,
        (false, Some(home)) => home.join(expanded),
        (false, None) => expanded,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pyoco_config::LoadOptions;

    use super::*;

    /// Settings from a `.env` holding `pairs` (the process environment's values are not
    /// exported, so the tests use the file).
    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut doc = EnvDocument::new();
        for (k, v) in pairs {
            doc.set(k, v).unwrap();
        }
        let opts = LoadOptions {
            env: HashMap::from([("PYOCO_PYTHON".to_string(), "/usr/bin/python3".to_string())]),
            cwd: "/tmp".into(),
            home: None,
        };
        Settings::resolve(&opts, Some((Path::new("/c/.env"), &doc))).unwrap()
    }

    #[test]
    fn warnings_name_what_a_server_should_not_run_with() {
        let open = warnings(&settings(&[]));
        assert_eq!(open.len(), 2, "{open:?}");
        let keyed = warnings(&settings(&[("PYOCO_HTTP_AUTH_MODE", "api_key")]));
        assert_eq!(keyed.len(), 2, "{keyed:?}");
        assert!(
            keyed[0].starts_with("PYOCO_AUTH_PEPPER is empty"),
            "{keyed:?}"
        );
        let safe = warnings(&settings(&[
            ("PYOCO_HTTP_AUTH_MODE", "api_key"),
            ("PYOCO_AUTH_PEPPER", "p"),
            ("PYOCO_TASK_MODULES", "my_tasks"),
        ]));
        assert_eq!(safe, Vec::<String>::new());
    }

    #[test]
    fn export_sets_what_is_set_and_documents_the_rest_without_local_settings() {
        let s = settings(&[
            ("PYOCO_NATS_URL", "nats://nats.prod:4222"),
            ("PYOCO_HTTP_PORT", "9000"),
            ("PYOCO_NATS_CLIENT_PORT", "4333"),
            ("PYOCO_WORKER_TAGS", "cpu, gpu"),
        ]);
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T08:00:00Z")
            .unwrap()
            .to_utc();
        let text = render(&s, Path::new("/c/.env"), now);
        assert!(text.starts_with("# pyoco-server production settings\n# Exported by the pyoco-server desktop app on 2026-11-27T08:00:00Z from /c/.env\n"), "{text}");
        assert!(
            text.contains("\nPYOCO_NATS_URL=nats://nats.prod:4222\n"),
            "{text}"
        );
        assert!(text.contains("\nPYOCO_HTTP_PORT=9000\n"));
        assert!(
            text.contains("\nPYOCO_WORKER_TAGS=\"cpu, gpu\"\n")
                || text.contains("\nPYOCO_WORKER_TAGS='cpu, gpu'\n"),
            "{text}"
        );
        assert!(
            text.contains("\n# PYOCO_CONSUMER_MAX_DELIVER=20\n"),
            "{text}"
        );
        assert!(!text.contains("PYOCO_NATS_CLIENT_PORT"));
        assert!(!text.contains("PYOCO_DATA_DIR"));
        assert!(!text.contains("PYOCO_LOAD_DOTENV"));
        assert!(
            text.contains("\n# PYOCO_PYTHON=\n"),
            "the environment is not exported: {text}"
        );
        assert!(!text.contains("secret"));
        let doc = EnvDocument::parse(&text).unwrap();
        assert_eq!(
            doc.keys(),
            vec![
                "PYOCO_NATS_URL",
                "PYOCO_WORKERS_KV_TTL_SEC",
                "PYOCO_WORKER_TAGS",
                "PYOCO_HTTP_PORT"
            ]
        );
        assert_eq!(doc.get("PYOCO_WORKERS_KV_TTL_SEC"), Some("86400.0"));
    }

    #[test]
    fn export_writes_atomically_and_reports_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&[("PYOCO_AUTH_PEPPER", "pep per")]);
        let out = dir.path().join("prod.env");
        let got = write(&s, Path::new("/c/.env"), &out).unwrap();
        assert_eq!(got.count, 2, "the pepper and the registry TTL");
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("keep this file private"));
        let doc = EnvDocument::parse(&text).unwrap();
        assert_eq!(doc.get("PYOCO_AUTH_PEPPER"), Some("pep per"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let err = write(&s, Path::new("/c/.env"), &dir.path().join("nope/prod.env")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = write(&s, Path::new("/c/.env"), dir.path()).unwrap_err();
        assert!(err.contains("it is a folder"), "{err}");
    }

    #[test]
    fn typed_paths_resolve_against_home() {
        let home = Path::new("/home/u");
        assert_eq!(
            resolve_path("~/a.env", Some(home)).unwrap(),
            home.join("a.env")
        );
        assert_eq!(
            resolve_path("a.env", Some(home)).unwrap(),
            home.join("a.env")
        );
        assert_eq!(
            resolve_path("/x/a.env", Some(home)).unwrap(),
            PathBuf::from("/x/a.env")
        );
        assert!(resolve_path("  ", Some(home)).is_err());
    }
}
