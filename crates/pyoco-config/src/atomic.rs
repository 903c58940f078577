//! Atomic file replacement: readers see the old file or the new one, never a mix.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Write `contents` to `path` through a temp file in the same directory: write, fsync, copy the
/// old file's permissions (new files: 0600 on Unix), `before_rename` (a seam for tests to inject
/// a failure), rename over `path`, fsync the directory. On any error the temp file is removed
/// and `path` is untouched. A symlink at `path` is followed: its target is replaced.
pub(crate) fn write(
    path: &Path,
    contents: &[u8],
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let target = resolve_symlink(path);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let old_permissions = fs::metadata(&target).ok().map(|m| m.permissions());

    // NamedTempFile deletes itself when dropped, which covers every early return below.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)?; // created 0600 on Unix
    if let Some(permissions) = old_permissions {
        // set_permissions (fchmod) is not subject to the umask, unlike the create mode.
        tmp.as_file().set_permissions(permissions)?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    before_rename(tmp.path())?;
    tmp.persist(&target).map_err(|e| e.error)?;
    sync_dir(&dir);
    Ok(())
}

fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or(path.into()),
        _ => path.to_path_buf(),
    }
}

/// Make the rename itself durable. Best effort: the new file is already in place, so a failure
/// here is not reported as a failed write.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn failure_before_rename_keeps_the_old_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        fs::write(&path, "OLD=1\n").unwrap();
        let mut seen_temp = None;
        let result = write(&path, b"NEW=2\n", |tmp| {
            // The temp file is complete and sits next to the target...
            assert_eq!(fs::read(tmp).unwrap(), b"NEW=2\n");
            assert_eq!(tmp.parent(), Some(dir.path()));
            seen_temp = Some(tmp.to_path_buf());
            Err(io::Error::other("injected crash before rename"))
        });
        assert!(result.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "OLD=1\n");
        assert!(!seen_temp.unwrap().exists());
        assert_eq!(dir_entries(dir.path()), vec![".env"]);
    }

    #[test]
    fn success_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        fs::write(&path, "OLD=1\n").unwrap();
        write(&path, b"NEW=2\n", |_| Ok(())).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "NEW=2\n");
        assert_eq!(dir_entries(dir.path()), vec![".env"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/.env");
        assert!(write(&path, b"X=1\n", |_| Ok(())).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_kept_and_new_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("shared.env");
        fs::write(&existing, "A=1\n").unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o664)).unwrap();
        write(&existing, b"A=2\n", |_| Ok(())).unwrap();
        let mode = fs::metadata(&existing).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o664);

        let fresh = dir.path().join("new.env");
        write(&fresh, b"A=1\n", |_| Ok(())).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_file_is_replaced_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.env");
        let link = dir.path().join(".env");
        fs::write(&real, "A=1\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, b"A=2\n", |_| Ok(())).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "A=2\n");
    }
}
