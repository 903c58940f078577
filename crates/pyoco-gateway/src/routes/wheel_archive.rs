//! Is the uploaded file the wheel its name says? 0.5.1 stored any bytes under a valid wheel file
//! name; every worker then failed `pip install` on it, at every sync. Here the archive is read
//! (its central directory and `METADATA` only, never the whole content) and refused with
//! `422 {"detail": "invalid wheel", "reason": …}` when:
//!
//! * it is not a zip archive;
//! * it has no top-level `*.dist-info` directory, or more than one, or one that does not start
//!   with the package's name (pip's `wheel_dist_info_dir` rules, same wording);
//! * a member path is absolute or has a `..` component (it would be written outside the
//!   install directory);
//! * the `.dist-info` directory has no `WHEEL` (or one whose `Wheel-Version` is not 1.x), no
//!   `RECORD`, or no `METADATA`;
//! * `METADATA` has no `Name`, or a `Name` that is not the file name's package (compared
//!   normalised, PEP 503: `Demo_Plugin` matches `demo-plugin`);
//! * `METADATA` has no `Version`, one that is not a PEP 440 version, or one that is not the file
//!   name's version (PEP 440 equality: `1.0` matches `1.0.0`).
//!
//! `METADATA` is read like Python's `email.parser`: headers up to the first blank line, names
//! case-insensitive, the first occurrence counts, indented lines continue a header.
//!
//! Synchronous (zip needs `Read + Seek`): run it on the blocking pool.

use std::io::{BufRead, BufReader, Read, Seek};

use pyoco_wire::{canonicalize_name, Pep440Version, WheelFilename};

/// `METADATA` header bytes read at most (the headers come first; the long description after
/// them is never read).
const MAX_METADATA_HEADER_BYTES: u64 = 1024 * 1024;

/// Why the archive is not the wheel its file name says (the 422's `reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidWheel(pub String);

/// Check the wheel in `reader` against its parsed file name `filename` (named `name`).
pub(crate) fn check<R: Read + Seek>(
    reader: R,
    name: &str,
    filename: &WheelFilename,
) -> Result<(), InvalidWheel> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|err| InvalidWheel(format!("{name} is not a zip archive: {err}")))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|n| n.into_owned())
        .collect();
    if let Some(reason) = names.iter().find_map(|n| unsafe_member(n)) {
        return Err(InvalidWheel(reason));
    }
    let info_dir = dist_info_dir(names.iter().map(String::as_str), &filename.name)?;

    // WHEEL: what pip reads first; it installs only Wheel-Version 1.x.
    let wheel_file = format!("{info_dir}/WHEEL");
    let wheel = match archive.by_name(&wheel_file) {
        Ok(entry) => read_headers(entry)
            .map_err(|err| InvalidWheel(format!("{wheel_file} cannot be read: {err}")))?,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(InvalidWheel(format!("{wheel_file} is missing")))
        }
        Err(err) => return Err(InvalidWheel(format!("{wheel_file} cannot be read: {err}"))),
    };
    match header(&wheel, "Wheel-Version") {
        None => return Err(InvalidWheel(format!("{wheel_file} has no Wheel-Version"))),
        Some(v) if v.split('.').next().map(str::trim) != Some("1") => {
            return Err(InvalidWheel(format!(
                "{wheel_file} Wheel-Version {v:?} is not 1.x (the only wheel format pip installs)"
            )))
        }
        Some(_) => {}
    }
    let record = format!("{info_dir}/RECORD");
    if !names.contains(&record) {
        return Err(InvalidWheel(format!("{record} is missing")));
    }

    let member = format!("{info_dir}/METADATA");
    let metadata = match archive.by_name(&member) {
        Ok(entry) => read_headers(entry)
            .map_err(|err| InvalidWheel(format!("{member} cannot be read: {err}")))?,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(InvalidWheel(format!("{member} is missing")))
        }
        Err(err) => return Err(InvalidWheel(format!("{member} cannot be read: {err}"))),
    };

    let meta_name =
        header(&metadata, "Name").ok_or_else(|| InvalidWheel(format!("{member} has no Name")))?;
    if canonicalize_name(meta_name) != filename.name {
        return Err(InvalidWheel(format!(
            "METADATA Name {meta_name:?} does not match the file name's package {:?}",
            filename.name
        )));
    }
    let raw_version = header(&metadata, "Version")
        .ok_or_else(|| InvalidWheel(format!("{member} has no Version")))?;
    let version: Pep440Version = raw_version.parse().map_err(|_| {
        InvalidWheel(format!(
            "METADATA Version {raw_version:?} is not a PEP 440 version"
        ))
    })?;
    if version != filename.version {
        return Err(InvalidWheel(format!(
            "METADATA Version {raw_version:?} does not match the file name's version {:?}",
            filename.version.to_string()
        )));
    }
    Ok(())
}

/// Why a member path would land outside the install directory: absolute (`/…`, `\\…`, a
/// drive letter) or with a `..` component (either separator).
fn unsafe_member(name: &str) -> Option<String> {
    let absolute =
        name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':');
    if absolute {
        return Some(format!("member {name:?} is an absolute path"));
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Some(format!("member {name:?} leaves the install directory (..)"));
    }
    None
}

/// pip's `wheel_dist_info_dir`: exactly one top-level `*.dist-info` directory, whose
/// normalised name starts with the normalised package name.
fn dist_info_dir<'a>(
    names: impl Iterator<Item = &'a str>,
    package: &str,
) -> Result<String, InvalidWheel> {
    let mut dirs: Vec<&str> = names
        .filter_map(|n| n.split_once('/').map(|(top, _)| top))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    match dirs.as_slice() {
        [] => Err(InvalidWheel(
            ".dist-info directory not found (a wheel has <name>-<version>.dist-info/METADATA)"
                .into(),
        )),
        [dir] if canonicalize_name(dir).starts_with(package) => Ok((*dir).to_string()),
        [dir] => Err(InvalidWheel(format!(
            ".dist-info directory {dir:?} does not start with {package:?}"
        ))),
        many => Err(InvalidWheel(format!(
            "multiple .dist-info directories found: {}",
            many.join(", ")
        ))),
    }
}

/// The header section of an RFC 822 message: `(name, value)` in order, continuation lines
/// joined, values trimmed.
fn read_headers(reader: impl Read) -> std::io::Result<Vec<(String, String)>> {
    let mut reader = BufReader::new(reader.take(MAX_METADATA_HEADER_BYTES));
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break; // the body starts
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            break; // not a header: Python's parser starts the body here too
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(headers)
}

/// The first non-empty header `name` (case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, text) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    fn check_files(file_name: &str, files: &[(&str, &str)]) -> Result<(), InvalidWheel> {
        let filename = WheelFilename::parse(file_name).unwrap();
        check(Cursor::new(zip_of(files)), file_name, &filename)
    }

    const NAME: &str = "Demo_Plugin-1.0-py3-none-any.whl";
    const WHEEL: (&str, &str) = (
        "demo_plugin-1.0.dist-info/WHEEL",
        "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    const RECORD: (&str, &str) = ("demo_plugin-1.0.dist-info/RECORD", "");

    /// `files` plus a valid WHEEL and RECORD in `demo_plugin-1.0.dist-info`.
    fn check_wheel(files: &[(&str, &str)]) -> Result<(), InvalidWheel> {
        let mut all = files.to_vec();
        all.extend([WHEEL, RECORD]);
        check_files(NAME, &all)
    }

    #[test]
    fn a_wheel_whose_metadata_matches_its_name_passes() {
        let metadata =
            "Metadata-Version: 2.1\r\nname: demo.plugin\r\nVersion:  1.0.0\r\n\r\nName: other\n";
        check_files(
            NAME,
            &[
                ("demo_plugin/__init__.py", ""),
                ("Demo_Plugin-1.0.dist-info/METADATA", metadata),
                ("Demo_Plugin-1.0.dist-info/WHEEL", "Wheel-Version: 1.9\n"),
                ("Demo_Plugin-1.0.dist-info/RECORD", ""),
            ],
        )
        .unwrap();
    }

    #[test]
    fn each_failed_check_is_named() {
        let filename = WheelFilename::parse(NAME).unwrap();
        let err = check(Cursor::new(b"not a zip".to_vec()), NAME, &filename).unwrap_err();
        assert!(err.0.contains("is not a zip archive"), "{err}");

        let err = check_files(NAME, &[("demo_plugin/__init__.py", "")]).unwrap_err();
        assert!(err.0.starts_with(".dist-info directory not found"), "{err}");

        let err = check_files(
            NAME,
            &[
                ("a-1.0.dist-info/METADATA", ""),
                ("demo_plugin-1.0.dist-info/METADATA", ""),
            ],
        )
        .unwrap_err();
        assert!(
            err.0.starts_with("multiple .dist-info directories"),
            "{err}"
        );

        let err = check_files(NAME, &[("other-1.0.dist-info/METADATA", "")]).unwrap_err();
        assert!(
            err.0.contains("does not start with \"demo-plugin\""),
            "{err}"
        );

        let err = check_wheel(&[]).unwrap_err();
        assert_eq!(err.0, "demo_plugin-1.0.dist-info/METADATA is missing");

        // What pip needs besides METADATA, and where the files may go.
        let metadata = (
            "demo_plugin-1.0.dist-info/METADATA",
            "Name: demo-plugin\nVersion: 1.0\n",
        );
        let err = check_files(NAME, &[metadata, RECORD]).unwrap_err();
        assert_eq!(err.0, "demo_plugin-1.0.dist-info/WHEEL is missing");
        let err = check_files(NAME, &[metadata, WHEEL]).unwrap_err();
        assert_eq!(err.0, "demo_plugin-1.0.dist-info/RECORD is missing");
        let err = check_files(
            NAME,
            &[
                metadata,
                RECORD,
                ("demo_plugin-1.0.dist-info/WHEEL", "Wheel-Version: 2.0\n"),
            ],
        )
        .unwrap_err();
        assert!(err.0.contains("Wheel-Version \"2.0\" is not 1.x"), "{err}");
        let err = check_files(
            NAME,
            &[
                metadata,
                RECORD,
                ("demo_plugin-1.0.dist-info/WHEEL", "Tag: x\n"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            "demo_plugin-1.0.dist-info/WHEEL has no Wheel-Version"
        );
        for (member, what) in [
            (
                "demo_plugin/../../etc/cron.d/x",
                "leaves the install directory",
            ),
            ("demo_plugin\\..\\x", "leaves the install directory"),
            ("/etc/passwd", "is an absolute path"),
            ("C:/x", "is an absolute path"),
        ] {
            let err = check_wheel(&[metadata, (member, "")]).unwrap_err();
            assert!(
                err.0.contains(what) && err.0.contains(&format!("{member:?}")),
                "{err}"
            );
        }
        check_wheel(&[metadata, ("demo_plugin/a..b.py", "")]).unwrap();

        let err = check_wheel(&[(
            "demo_plugin-1.0.dist-info/METADATA",
            "Name: other\nVersion: 1.0\n",
        )])
        .unwrap_err();
        assert_eq!(
            err.0,
            "METADATA Name \"other\" does not match the file name's package \"demo-plugin\""
        );

        let err = check_wheel(&[(
            "demo_plugin-1.0.dist-info/METADATA",
            "Name: demo-plugin\nVersion: 1.1\n",
        )])
        .unwrap_err();
        assert_eq!(
            err.0,
            "METADATA Version \"1.1\" does not match the file name's version \"1.0\""
        );

        let err = check_wheel(&[(
            "demo_plugin-1.0.dist-info/METADATA",
            "Name: demo-plugin\n\nVersion: 1.0\n",
        )])
        .unwrap_err();
        assert_eq!(err.0, "demo_plugin-1.0.dist-info/METADATA has no Version");

        let err = check_wheel(&[(
            "demo_plugin-1.0.dist-info/METADATA",
            "Name: demo-plugin\nVersion: one\n",
        )])
        .unwrap_err();
        assert!(err.0.contains("is not a PEP 440 version"), "{err}");
    }
}
