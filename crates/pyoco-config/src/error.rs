//! Errors: each names what to fix (variable, value, expected form, file and line).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::source::Source;
use crate::spec::Spec;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One or more settings have invalid values; all of them are listed, one per line.
    #[error("{}", display_problems(problems))]
    Invalid { problems: Vec<Problem> },

    /// The `.env` file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadEnvFile { path: PathBuf, source: io::Error },

    /// The `.env` file cannot be parsed.
    #[error("{}: line {line}: {message}", path.display())]
    ParseEnvFile {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// Writing the `.env` file failed; the previous file (if any) is unchanged.
    #[error("cannot write {}: {source} (the previous file is unchanged)", path.display())]
    WriteEnvFile { path: PathBuf, source: io::Error },

    /// A `.env` key that neither dotenvy nor pyoco-server 0.5.1 would read back.
    #[error("invalid .env key {key:?}: use letters, digits and `_`, not starting with a digit")]
    InvalidKey { key: String },

    /// The working directory cannot be determined.
    #[error("cannot determine the current directory: {0}")]
    CurrentDir(io::Error),

    /// No home directory, so no OS app directories.
    #[error("cannot determine the app directories: no home directory is known (set HOME or PYOCO_DATA_DIR)")]
    NoHomeDir,
}

impl ConfigError {
    /// The invalid settings of a [`ConfigError::Invalid`] (empty for other errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "invalid setting:".to_owned(),
        n => format!("{n} invalid settings:"),
    };
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The variable, e.g. `PYOCO_CONSUMER_MAX_DELIVER`.
    pub name: &'static str,
    /// The offending text (`"<secret>"` for secrets).
    pub value: String,
    /// Where the value came from.
    pub source: Source,
    /// What is wrong with it, e.g. `not an integer`.
    pub reason: String,
    /// The expected form, e.g. `an integer ≥ 1`.
    pub expected: String,
}

impl Problem {
    pub(crate) fn new(spec: &Spec, raw: &str, source: &Source, reason: String) -> Problem {
        Problem {
            name: spec.name,
            value: if spec.secret {
                "<secret>".to_owned()
            } else {
                raw.to_owned()
            },
            source: source.clone(),
            reason,
            expected: spec.expected(),
        }
    }

    pub(crate) fn internal(name: &'static str) -> Problem {
        Problem {
            name,
            value: String::new(),
            source: Source::Default,
            reason: "internal error: the settings table gives this setting no value of its type"
                .to_owned(),
            expected: "a pyoco-config bug report".to_owned(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} (from {}): {}; expected {}",
            self.name, self.value, self.source, self.reason, self.expected
        )
    }
}
