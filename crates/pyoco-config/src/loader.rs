//! Loading: process environment → `.env` → default, per setting, then validation of everything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::document::EnvDocument;
use crate::error::{ConfigError, Problem};
use crate::source::{Effective, Source};
use crate::spec::{Kind, Scope, Spec};
use crate::table::{Settings, SPECS};
use crate::value::{self, Base, Context, Value};

/// Everything the loader reads from the outside world, so tests can load without touching the
/// real process environment or working directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A snapshot of the process environment.
    pub env: HashMap<String, String>,
    /// The working directory relative paths are resolved against (absolute).
    pub cwd: PathBuf,
    /// The home directory `~` expands to (`None`: a `~` path is an error).
    pub home: Option<PathBuf>,
}

impl LoadOptions {
    /// Snapshot of this process: its environment (non-UTF-8 text replaced lossily), current
    /// directory and home directory.
    pub fn from_process() -> Result<LoadOptions, ConfigError> {
        let env = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
        Ok(LoadOptions { env, cwd, home })
    }

    /// The `.env` file the loader would read: `None` when `PYOCO_LOAD_DOTENV` disables it or
    /// `PYOCO_ENV_FILE` is set but empty. An invalid `PYOCO_LOAD_DOTENV` counts as "on" here (the
    /// load reports it); an unexpandable `~` gives `None` (likewise reported).
    pub fn env_file_path(&self) -> Option<PathBuf> {
        let enabled = self
            .env
            .get("PYOCO_LOAD_DOTENV")
            .and_then(|raw| value::parse_bool(raw))
            .unwrap_or(true);
        if !enabled {
            return None;
        }
        let raw = self
            .env
            .get("PYOCO_ENV_FILE")
            .map_or(".env", String::as_str);
        match value::parse(Kind::EnvFile, raw, &self.context()) {
            Ok(Some(Value::Path(path))) => Some(path),
            _ => None,
        }
    }

    /// Validate one value of setting `spec` exactly as loading would (blank text means unset,
    /// which is always valid). `source` is where the value is going to come from (the settings
    /// window passes the `.env` it edits); the [`Problem`] says what is wrong and what is
    /// expected, with the same words the CLI prints.
    pub fn check(&self, spec: &Spec, raw: &str, source: &Source) -> Result<(), Problem> {
        if raw.trim().is_empty() && spec.kind != Kind::EnvFile {
            return Ok(());
        }
        value::parse(spec.kind, raw, &self.context())
            .map(|_| ())
            .map_err(|reason| Problem::new(spec, raw, source, reason))
    }

    fn context(&self) -> Context<'_> {
        Context {
            cwd: &self.cwd,
            home: self.home.as_deref(),
        }
    }
}

impl Settings {
    /// Load every setting: process environment (non-empty) → `.env` (non-empty) → default.
    ///
    /// A missing `.env` is fine; an unreadable or unparsable one is an error naming the file and
    /// line. Every invalid value is reported together in [`ConfigError::Invalid`].
    pub fn load(opts: &LoadOptions) -> Result<Settings, ConfigError> {
        let dotenv = match opts.env_file_path() {
            Some(path) => EnvDocument::read(&path)?.map(|doc| (path, doc)),
            None => None,
        };
        Settings::resolve(opts, dotenv.as_ref().map(|(p, d)| (p.as_path(), d)))
    }

    /// [`Settings::load`] with an explicit `.env` document (or none) instead of the file named by
    /// `PYOCO_ENV_FILE`: e.g. the settings window validating an edited document before saving it.
    /// `path` is only used to report where values came from.
    pub fn resolve(
        opts: &LoadOptions,
        dotenv: Option<(&Path, &EnvDocument)>,
    ) -> Result<Settings, ConfigError> {
        let effective = SPECS
            .iter()
            .map(|spec| effective_text(spec, &opts.env, dotenv))
            .collect();
        let base = Base {
            cwd: opts.cwd.clone(),
            home: opts.home.clone(),
        };
        Settings::build(effective, base)
    }

    /// The settings as the local appliance (`pyoco-server up --with-nats`, the desktop app) runs
    /// with them: every setting whose value is the table's plain default ([`Source::Default`])
    /// and whose row has an appliance default ([`Spec::appliance_default`]) takes that instead
    /// ([`Source::ApplianceDefault`]); a value set in the environment or a `.env` — even one
    /// equal to the plain default — is kept. Applying it twice changes nothing.
    ///
    /// `Err` only if an appliance default does not validate (a table bug, caught by tests).
    pub fn with_appliance_defaults(&self) -> Result<Settings, ConfigError> {
        // Only the rows that change are touched: values a caller set on the typed fields
        // (flags, tests) are kept as they are.
        let mut settings = self.clone();
        let ctx = self.base.context();
        let mut problems = Vec::new();
        for (index, spec) in SPECS.iter().enumerate() {
            let Some(text) = spec.appliance_default else {
                continue;
            };
            if self.effective[index].source != Source::Default {
                continue;
            }
            match value::parse(spec.kind, text, &ctx) {
                Ok(value) => {
                    settings
                        .set_value(spec.name, value)
                        .map_err(|name| ConfigError::Invalid {
                            problems: vec![Problem::internal(name)],
                        })?;
                    settings.effective[index] = Effective {
                        raw: Some(text.to_owned()),
                        source: Source::ApplianceDefault,
                    };
                }
                Err(reason) => {
                    problems.push(Problem::new(spec, text, &Source::ApplianceDefault, reason))
                }
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(settings)
    }

    /// Validate every effective text (in table order) into typed settings.
    fn build(effective: Vec<Effective>, base: Base) -> Result<Settings, ConfigError> {
        let ctx = base.context();
        let mut problems = Vec::new();
        let mut values = Vec::with_capacity(SPECS.len());
        for (spec, eff) in SPECS.iter().zip(&effective) {
            let value = match &eff.raw {
                None => None,
                Some(raw) => match value::parse(spec.kind, raw, &ctx) {
                    Ok(value) => value,
                    Err(reason) => {
                        problems.push(Problem::new(spec, raw, &eff.source, reason));
                        None
                    }
                },
            };
            values.push(value);
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let problems = nats_auth_problems(&effective);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let mut settings = Settings::from_values(values, effective, base).map_err(|name| {
            ConfigError::Invalid {
                problems: vec![Problem::internal(name)],
            }
        })?;
        if settings.worker_tags.is_empty() {
            settings.worker_tags = vec![settings.default_tag.clone()];
        }
        Ok(settings)
    }

    /// The effective text of setting `name` (as found in the environment, the `.env` or the
    /// default), or `None` when it is unset or not a setting. Secrets are returned too: mask
    /// them using [`Spec::secret`] before showing them.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.effective_of(name)?.raw.as_deref()
    }

    /// Where setting `name`'s value came from (`None` when `name` is not a setting).
    pub fn source(&self, name: &str) -> Option<&Source> {
        Some(&self.effective_of(name)?.source)
    }

    /// Every setting with its effective text and source, in table order (for the settings
    /// window and `--print-config`-style output).
    pub fn entries(&self) -> impl Iterator<Item = (&'static Spec, Option<&str>, &Source)> + '_ {
        SPECS
            .iter()
            .zip(&self.effective)
            .map(|(spec, eff)| (spec, eff.raw.as_deref(), &eff.source))
    }

    fn effective_of(&self, name: &str) -> Option<&Effective> {
        let index = SPECS.iter().position(|s| s.name == name)?;
        self.effective.get(index)
    }
}

/// Resolution of one setting's text. Blank (whitespace-only) counts as unset, except that a set
/// `PYOCO_ENV_FILE` (even empty) is used as is: empty means "no `.env`".
fn effective_text(
    spec: &Spec,
    env: &HashMap<String, String>,
    dotenv: Option<(&Path, &EnvDocument)>,
) -> Effective {
    let present = |v: &&String| !v.trim().is_empty() || spec.kind == Kind::EnvFile;
    if let Some(raw) = env.get(spec.name).filter(present) {
        return Effective {
            raw: Some(raw.clone()),
            source: Source::Env,
        };
    }
    if spec.scope != Scope::ProcessEnv {
        if let Some((path, doc)) = dotenv {
            if let Some(raw) = doc.get(spec.name).filter(|v| !v.trim().is_empty()) {
                return Effective {
                    raw: Some(raw.to_owned()),
                    source: Source::File {
                        path: path.to_path_buf(),
                    },
                };
            }
        }
    }
    Effective {
        raw: spec.default.map(str::to_owned),
        source: Source::Default,
    }
}

/// Settings that only make sense together: a client certificate with its key, a user with a
/// password, and one way to authenticate to NATS (the server accepts one).
fn nats_auth_problems(effective: &[Effective]) -> Vec<Problem> {
    let set = |name: &str| -> Option<(&'static Spec, &str, &Source)> {
        let (spec, eff) = SPECS.iter().zip(effective).find(|(s, _)| s.name == name)?;
        let raw = eff.raw.as_deref()?;
        (!raw.trim().is_empty()).then_some((spec, raw, &eff.source))
    };
    let mut problems = Vec::new();
    let mut pair = |a: &str, b: &str, what: &str| {
        if let (Some((spec, raw, source)), None) = (set(a), set(b)) {
            problems.push(Problem::new(
                spec,
                raw,
                source,
                format!("{b} is not set: {what}"),
            ));
        }
    };
    pair(
        "PYOCO_NATS_TLS_CERT_FILE",
        "PYOCO_NATS_TLS_KEY_FILE",
        "a client certificate needs its key",
    );
    pair(
        "PYOCO_NATS_TLS_KEY_FILE",
        "PYOCO_NATS_TLS_CERT_FILE",
        "a key without its certificate is of no use",
    );
    pair(
        "PYOCO_NATS_USER",
        "PYOCO_NATS_PASSWORD",
        "a user name needs its password",
    );
    pair(
        "PYOCO_NATS_PASSWORD",
        "PYOCO_NATS_USER",
        "a password needs its user name",
    );
    let ways: Vec<_> = [
        "PYOCO_NATS_CREDS_FILE",
        "PYOCO_NATS_NKEY_SEED_FILE",
        "PYOCO_NATS_TOKEN",
        "PYOCO_NATS_USER",
    ]
    .into_iter()
    .filter_map(|name| set(name).map(|found| (name, found)))
    .collect();
    if let [(first, _), rest @ ..] = ways.as_slice() {
        for (_, (spec, raw, source)) in rest {
            problems.push(Problem::new(
                spec,
                raw,
                source,
                format!("{first} is set too: NATS takes one way to authenticate (credentials file, nkey seed, token, or user and password); unset one of them"),
            ));
        }
    }
    problems
}
