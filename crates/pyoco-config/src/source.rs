//! Where a setting's value came from: shared by the errors, the table's `Settings` and the
//! loader, so none of them has to depend on another for it.

use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The process environment.
    Env,
    /// A `.env` file (absolute path).
    File { path: PathBuf },
    /// The table's default (or unset, when there is none).
    Default,
    /// The table's appliance default, which the local appliance uses instead of the default
    /// (see `Settings::with_appliance_defaults`).
    ApplianceDefault,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env => f.write_str("environment"),
            Source::File { path } => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
            Source::ApplianceDefault => f.write_str("appliance default"),
        }
    }
}

/// A setting's effective text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effective {
    pub raw: Option<String>,
    pub source: Source,
}
