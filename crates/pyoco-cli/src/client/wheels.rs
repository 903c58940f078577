//! The wheel-registry commands of 0.5.1 (`wheels`, `wheel-history`, `wheel-upload`,
//! `wheel-delete`): their flags are accepted exactly as 0.5.1 accepts them, so scripts parse,
//! but they are not implemented yet and fail with a message saying so.

use clap::{Args, ValueEnum};

use super::error::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HistoryAction {
    Upload,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preflight {
    Strict,
    Warn,
    Off,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelHistoryArgs {
    /// At most this many records, newest first.
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
    /// Only uploads or only deletes.
    #[arg(long, value_enum)]
    pub action: Option<HistoryAction>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelUploadArgs {
    /// Path to the *.whl to upload.
    #[arg(long, value_name = "FILE", required = true)]
    pub wheel_file: String,
    /// Comma-separated worker tags the wheel is for.
    #[arg(long, value_name = "CSV")]
    pub tags: Option<String>,
    /// Replace an existing wheel of the same name (the default).
    #[arg(long, overrides_with = "no_replace")]
    pub replace: bool,
    /// Do not replace an existing wheel of the same name.
    #[arg(long, overrides_with = "replace")]
    pub no_replace: bool,
    /// Local checks before uploading.
    #[arg(long, value_enum, default_value = "strict")]
    pub preflight: Preflight,
    /// Accept a wheel without entry points.
    #[arg(long)]
    pub allow_no_entry_points: bool,
    /// Accept a wheel without usage documentation.
    #[arg(long)]
    pub allow_missing_usage_doc: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct WheelDeleteArgs {
    /// The wheel file name to delete.
    #[arg(long, value_name = "FILE", required = true)]
    pub name: String,
}

/// The error every wheel command returns for now.
pub(crate) fn not_yet(command: &str) -> CliError {
    CliError::input(
        format!("`pyoco-client {command}` is not available in this version yet"),
        "use the Python pyoco-client 0.5.1 for the wheel registry meanwhile \
         (`pip install pyoco-server==0.5.1`); every run, worker and metrics command works here",
    )
}
