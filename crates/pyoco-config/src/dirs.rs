//! The app's directories on disk, from the OS conventions (`directories` crate).
//!
//! On Linux: config `${XDG_CONFIG_HOME:-~/.config}/pyoco-server`, data
//! `${XDG_DATA_HOME:-~/.local/share}/pyoco-server` (an XDG variable counts only when it is an
//! absolute path), exactly what `scripts/lib.sh`'s `pyoco_data_dir` computes. `PYOCO_DATA_DIR`
//! overrides the data dir.

use std::path::{Path, PathBuf};

use directories::ProjectDirs;

use crate::error::ConfigError;
use crate::table::Settings;

/// Where the app keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDirs {
    config_dir: PathBuf,
    data_dir: PathBuf,
}

impl AppDirs {
    /// The OS directories for `io.pyoco.pyoco-server`, with the data dir replaced by
    /// `data_dir_override` when given (e.g. [`Settings::data_dir`], already absolute).
    pub fn new(data_dir_override: Option<&Path>) -> Result<AppDirs, ConfigError> {
        let project =
            ProjectDirs::from("io", "pyoco", "pyoco-server").ok_or(ConfigError::NoHomeDir)?;
        Ok(AppDirs {
            config_dir: project.config_dir().to_path_buf(),
            data_dir: data_dir_override
                .map_or_else(|| project.data_dir().to_path_buf(), Path::to_path_buf),
        })
    }

    /// [`AppDirs::new`] with `PYOCO_DATA_DIR` from the settings.
    pub fn from_settings(settings: &Settings) -> Result<AppDirs, ConfigError> {
        AppDirs::new(settings.data_dir.as_deref())
    }

    /// The config directory: holds the desktop app's `.env`.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The desktop app's `.env`: `<config dir>/.env`.
    pub fn env_file(&self) -> PathBuf {
        self.config_dir.join(".env")
    }

    /// The data directory (`PYOCO_DATA_DIR` or the OS one).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// JetStream store of the managed nats-server: `<data dir>/nats` (unless
    /// `PYOCO_NATS_STORE_DIR` says otherwise).
    pub fn nats_store_dir(&self) -> PathBuf {
        self.data_dir.join("nats")
    }

    /// The runner's Python venv: `<data dir>/venv`.
    pub fn venv_dir(&self) -> PathBuf {
        self.data_dir.join("venv")
    }

    /// Binaries installed by setup (nats-server): `<data dir>/bin`.
    pub fn bin_dir(&self) -> PathBuf {
        self.data_dir.join("bin")
    }

    /// Log files: `<data dir>/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Synced wheels and their manifest: `<data dir>/wheels`.
    pub fn wheels_dir(&self) -> PathBuf {
        self.data_dir.join("wheels")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_override_moves_every_data_path() {
        let dirs = AppDirs::new(Some(Path::new("/srv/pyoco"))).unwrap();
        assert_eq!(dirs.data_dir(), Path::new("/srv/pyoco"));
        assert_eq!(dirs.nats_store_dir(), Path::new("/srv/pyoco/nats"));
        assert_eq!(dirs.venv_dir(), Path::new("/srv/pyoco/venv"));
        assert_eq!(dirs.bin_dir(), Path::new("/srv/pyoco/bin"));
        assert_eq!(dirs.logs_dir(), Path::new("/srv/pyoco/logs"));
        assert_eq!(dirs.wheels_dir(), Path::new("/srv/pyoco/wheels"));
        assert!(dirs.env_file().ends_with("pyoco-server/.env"));
    }

    /// Run by `linux_data_dir_matches_scripts_lib_sh` in a child process with a controlled
    /// environment; does nothing on its own.
    #[test]
    #[ignore = "helper: run by linux_data_dir_matches_scripts_lib_sh"]
    fn child_print_data_dir() {
        if std::env::var_os("PYOCO_CONFIG_TEST_CHILD").is_none() {
            return;
        }
        let opts = crate::LoadOptions::from_process().unwrap();
        let settings = Settings::load(&opts).unwrap();
        let dirs = AppDirs::from_settings(&settings).unwrap();
        println!("PYOCO_TEST_DATA_DIR={}", dirs.data_dir().display());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_data_dir_matches_scripts_lib_sh() {
        use std::process::Command;
        let lib_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib.sh");
        assert!(lib_sh.exists(), "{} is missing", lib_sh.display());
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join("home");
        let cases: [(&str, &[(&str, &str)]); 5] = [
            ("no XDG", &[]),
            ("absolute XDG", &[("XDG_DATA_HOME", "/xdg/data")]),
            ("relative XDG is ignored", &[("XDG_DATA_HOME", "rel/data")]),
            ("absolute override", &[("PYOCO_DATA_DIR", "/srv/pyoco/")]),
            ("relative override", &[("PYOCO_DATA_DIR", "appdata")]),
        ];
        for (case, vars) in cases {
            let base_env = |cmd: &mut Command| {
                cmd.env_clear()
                    .env("HOME", &home)
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("PYOCO_LOAD_DOTENV", "0")
                    .envs(vars.iter().copied())
                    .current_dir(work.path());
            };
            let mut sh = Command::new("bash");
            sh.arg("-c")
                .arg(r#"source "$1" && pyoco_data_dir"#)
                .arg("bash")
                .arg(&lib_sh);
            base_env(&mut sh);
            let out = sh.output().unwrap();
            assert!(out.status.success(), "{case}: {out:?}");
            let from_shell = String::from_utf8(out.stdout).unwrap().trim_end().to_owned();

            let mut child = Command::new(std::env::current_exe().unwrap());
            child
                .args([
                    "--exact",
                    "dirs::tests::child_print_data_dir",
                    "--ignored",
                    "--nocapture",
                ])
                .arg("--test-threads=1");
            base_env(&mut child);
            child.env("PYOCO_CONFIG_TEST_CHILD", "1");
            let out = child.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            // libtest prints "test <name> ... " on the same line before the output.
            let from_rust = stdout
                .split("PYOCO_TEST_DATA_DIR=")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .unwrap_or_else(|| panic!("{case}: child printed no data dir: {out:?}"));
            assert_eq!(
                Path::new(from_rust),
                Path::new(&from_shell),
                "{case}: Rust and scripts/lib.sh disagree"
            );
        }
    }
}
