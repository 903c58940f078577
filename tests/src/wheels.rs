//! Task wheels built in the test, and throwaway venvs for workers to `pip install` them into.
//!
//! A worker with wheel sync installs into its own interpreter. Pointing it at a shared venv
//! (the test venv, the interop venv) would leave the test's package installed there for the
//! next run, which could then pass on a stale install. A [`ThrowawayVenv`] is created from
//! the base interpreter of an existing venv without pip; a `.pth` file adds that venv's
//! site-packages after its own, so it imports what the venv has (pyoco, pip, pyoco-server)
//! while everything pip installs lands in the throwaway venv and disappears with it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

/// A venv in a temporary directory that sees another venv's packages (module docs).
pub struct ThrowawayVenv {
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl ThrowawayVenv {
    /// A throwaway venv on top of the venv whose interpreter is `base_python`.
    pub fn on_top_of(base_python: &Path) -> ThrowawayVenv {
        let facts = python_stdout(
            base_python,
            "import sys, sysconfig\n\
             p = sysconfig.get_paths()\n\
             print(sys._base_executable); print(p['purelib']); print(p['platlib'])",
        );
        let mut lines = facts.lines();
        let base = PathBuf::from(lines.next().expect("base interpreter"));
        let mut shared: Vec<&str> = lines.collect();
        shared.dedup();
        let dir = tempfile::Builder::new()
            .prefix("pyoco-test-venv-")
            .tempdir()
            .expect("venv dir");
        let venv = dir.path().join("venv");
        let status = Command::new(&base)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status()
            .unwrap_or_else(|e| panic!("{} -m venv: {e}", base.display()));
        assert!(status.success(), "creating the throwaway venv failed");
        let python = venv.join("bin").join("python");
        let own_site = python_stdout(
            &python,
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        );
        let mut pth = shared.join("\n");
        pth.push('\n');
        std::fs::write(Path::new(own_site.trim()).join("pyoco_testkit.pth"), pth)
            .expect("writing the .pth file");
        ThrowawayVenv { dir, python }
    }

    /// The venv's interpreter.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The temporary directory holding the venv (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `python -c code` in this venv without `PYTHONPATH`: its trimmed stdout, or `None`
    /// when it failed.
    pub fn run(&self, code: &str) -> Option<String> {
        let out = Command::new(&self.python)
            .args(["-c", code])
            .env_remove("PYTHONPATH")
            .output()
            .expect("running the throwaway venv's python");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// `python -c code`: its stdout (panics with stderr when it fails).
fn python_stdout(python: &Path, code: &str) -> String {
    let out = Command::new(python)
        .args(["-c", code])
        .env_remove("PYTHONPATH")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} -c …: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A long description: enough usage documentation for `pyoco-client wheel-upload`'s strict
/// preflight (80+ characters).
const USAGE: &str = "Task functions for pyoco flows, built by the test kit. Once a worker has \
                     synced this wheel, call its tasks from a flow.yaml as `module:function`.\n";

/// A pure-Python wheel (`py3-none-any`) of the single module `module` (the distribution has
/// the same name) at `version`, whose `module/__init__.py` is `source`. It passes
/// `pyoco-client wheel-upload`'s strict preflight: METADATA with a summary and a long
/// description, and a `pyoco.tasks` entry point. Returns the file's bytes.
pub fn task_wheel(module: &str, version: &str, source: &str) -> Vec<u8> {
    task_wheel_with_metadata(module, version, source, "")
}

/// [`task_wheel`] with `extra_headers` (lines ending in `\n`, such as `"Requires-Python:
/// >=4\n"`) added to its METADATA headers.
pub fn task_wheel_with_metadata(
    module: &str,
    version: &str,
    source: &str,
    extra_headers: &str,
) -> Vec<u8> {
    let dist_info = format!("{module}-{version}.dist-info");
    let files = [
        (format!("{module}/__init__.py"), source.to_string()),
        (
            format!("{dist_info}/METADATA"),
            format!(
                "Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n\
                 Summary: Test tasks {module} {version}\n{extra_headers}\n{USAGE}"
            ),
        ),
        (
            format!("{dist_info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: pyoco-testkit\nRoot-Is-Purelib: true\n\
             Tag: py3-none-any\n"
                .to_string(),
        ),
        (
            format!("{dist_info}/entry_points.txt"),
            format!("[pyoco.tasks]\n{module} = {module}\n"),
        ),
    ];
    let mut record = String::new();
    for (path, _) in &files {
        record.push_str(&format!("{path},,\n"));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    let mut members: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_bytes()))
        .collect();
    let record_path = format!("{dist_info}/RECORD");
    members.push((&record_path, record.as_bytes()));
    zip_archive(&members)
}

/// A zip archive (deflated) of `members` (path, content) in that order: for wheels that are
/// broken on purpose.
pub fn zip_archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, content) in members {
        zip.start_file(*path, options).expect("zip entry");
        zip.write_all(content).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// The file name of [`task_wheel`]`(module, version, …)`.
pub fn task_wheel_name(module: &str, version: &str) -> String {
    format!("{module}-{version}-py3-none-any.whl")
}

/// Write [`task_wheel`] into `dir` under its proper file name; returns the path and the bytes.
pub fn write_task_wheel(
    dir: &Path,
    module: &str,
    version: &str,
    source: &str,
) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let bytes = task_wheel(module, version, source);
    let path = dir.join(task_wheel_name(module, version));
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    (path, bytes)
}

#[cfg(feature = "app")]
/// `POST {base_url}/wheels` as `pyoco-client wheel-upload` sends it (`replace=true`, `tags`
/// CSV when not empty); returns the HTTP status and JSON body.
pub async fn upload_wheel(
    http: &reqwest::Client,
    base_url: &str,
    name: &str,
    bytes: Vec<u8>,
    tags: &[&str],
) -> (u16, serde_json::Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str("application/octet-stream")
        .expect("mime type");
    let mut form = reqwest::multipart::Form::new()
        .part("wheel", part)
        .text("replace", "true");
    if !tags.is_empty() {
        form = form.text("tags", tags.join(","));
    }
    let response = http
        .post(format!("{base_url}/wheels"))
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base_url}/wheels: {e}"));
    crate::status_json(response).await
}
