//! `wheel-upload`'s local checks of a wheel before it is sent (contract §10.3).
//!
//! The gateway stores any wheel whose file name parses; a worker then installs it and loads its
//! `pyoco.tasks` entry points. A wheel without metadata, entry points or usage notes is almost
//! always a packaging mistake that only shows up later on every worker, so 0.5.1's client checks
//! the archive first, and so do we, with 0.5.1's rules and its messages (the `reason` line of a
//! failed preflight is byte for byte 0.5.1's):
//!
//! * the file is a zip archive (error `wheel file is not a valid zip archive`);
//! * it has a `*.dist-info/METADATA` (the first in name order; error `missing dist-info/METADATA`,
//!   and nothing else is checked then) with a non-empty `Name` and `Version` (errors);
//! * an empty `Summary` is a warning;
//! * usage documentation: the METADATA body (the long description) is at least 80 characters,
//!   or a `Project-URL` is labelled Documentation, Docs, Doc or Usage (any case) with a URL —
//!   an error unless `--allow-missing-usage-doc`, then a warning;
//! * entry points: the options of every section of `*.dist-info/entry_points.txt`, read like
//!   Python's `configparser` — none is an error unless `--allow-no-entry-points`, then a warning;
//!   a file `configparser` rejects is an error of its own.
//!
//! Each finding also says where it looked (`detail`) and what to change (`fix`), which 0.5.1 did
//! not. METADATA is read like Python's `email.parser.Parser` (headers up to the first blank line,
//! case-insensitive names, indented continuation lines; the rest is the body).

use std::{
    fmt,
    io::{Read, Seek},
};

/// What to require (`--allow-no-entry-points` and `--allow-missing-usage-doc` turn an error into
/// a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub require_entry_points: bool,
    pub require_usage_doc: bool,
}

/// One problem found in the wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// 0.5.1's message (what scripts may grep for).
    pub message: String,
    /// What exactly was seen, and where.
    pub detail: String,
    /// How to fix it.
    pub fix: String,
}

/// Everything the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// The smallest long description that counts as usage documentation (characters, after
/// trimming).
pub(crate) const MIN_DESCRIPTION_CHARS: usize = 80;

/// `Project-URL` labels that point at usage documentation (compared lower-cased).
const DOC_LABELS: [&str; 4] = ["documentation", "docs", "doc", "usage"];

const REBUILD: &str = "rebuild the wheel (`python -m build --wheel`)";

/// A wheel that cannot be read at all: the file (not its contents) is the problem.
#[derive(Debug)]
pub(crate) struct Unreadable(pub std::io::Error);

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Check the wheel in `reader`; `file` names it in the findings. An I/O error reading the file
/// itself is [`Unreadable`]; everything wrong with its contents is in the [`Report`].
pub(crate) fn check<R: Read + Seek>(
    reader: R,
    file: &str,
    rules: Rules,
) -> Result<Report, Unreadable> {
    let mut report = Report::default();
    let mut archive = match zip::ZipArchive::new(reader) {
        Ok(archive) => archive,
        Err(zip::result::ZipError::Io(e)) => return Err(Unreadable(e)),
        Err(e) => {
            report.errors.push(not_a_zip(file, &e));
            return Ok(report);
        }
    };
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|n| n.into_owned())
        .collect();

    let Some(metadata_member) = dist_info_member(&names, "METADATA") else {
        report.errors.push(Finding {
            message: "missing dist-info/METADATA".into(),
            detail: format!("{file} has no <package>-<version>.dist-info/METADATA"),
            fix: format!(
                "this is not a built wheel: {REBUILD} and upload the .whl it writes to dist/"
            ),
        });
        return Ok(report);
    };
    let metadata_text = match read_member(&mut archive, &metadata_member, file) {
        Ok(text) => text,
        Err(finding) => {
            report.errors.push(finding);
            return Ok(report);
        }
    };
    let metadata = Metadata::parse(&metadata_text);
    check_metadata(&metadata, &metadata_member, rules, &mut report);

    let entry_points_member = dist_info_member(&names, "entry_points.txt");
    let mut entry_points = 0;
    let mut entry_points_detail = format!("{file} has no *.dist-info/entry_points.txt");
    if let Some(member) = &entry_points_member {
        match read_member(&mut archive, member, file) {
            Ok(text) => match count_entry_points(&text) {
                Ok(n) => {
                    entry_points = n;
                    entry_points_detail = format!("{member} declares no entry point");
                }
                Err(why) => {
                    report.errors.push(Finding {
                        message: "dist-info/entry_points.txt format is invalid".into(),
                        detail: format!("{member}: {why}"),
                        fix: "declare the entry points in pyproject.toml \
                              ([project.entry-points.\"pyoco.tasks\"]) instead of writing the \
                              file by hand, then rebuild the wheel"
                            .into(),
                    });
                    entry_points_detail = format!("{member} could not be read");
                }
            },
            Err(finding) => {
                report.errors.push(finding);
                entry_points_detail = format!("{member} could not be read");
            }
        }
    }
    if entry_points == 0 {
        let fix = "declare the tasks module as an entry point — e.g. \
                   `[project.entry-points.\"pyoco.tasks\"]` with `mypkg = \"mypkg.tasks\"` in \
                   pyproject.toml (workers load plugin tasks from `pyoco.tasks`) — then rebuild \
                   the wheel";
        if rules.require_entry_points {
            report.errors.push(Finding {
                message: "entry_points are missing (dist-info/entry_points.txt)".into(),
                detail: entry_points_detail,
                fix: format!("{fix}, or pass --allow-no-entry-points for a plain library"),
            });
        } else {
            report.warnings.push(Finding {
                message: "entry_points are missing".into(),
                detail: entry_points_detail,
                fix: format!("{fix} (fine for a plain library)"),
            });
        }
    }
    Ok(report)
}

/// Name, Version, Summary and usage documentation.
fn check_metadata(metadata: &Metadata, member: &str, rules: Rules, report: &mut Report) {
    if metadata.first("Name").trim().is_empty() {
        report.errors.push(Finding {
            message: "METADATA Name is missing".into(),
            detail: format!("{member} has no Name header"),
            fix: "set `name` under [project] in pyproject.toml, then rebuild the wheel".into(),
        });
    }
    if metadata.first("Version").trim().is_empty() {
        report.errors.push(Finding {
            message: "METADATA Version is missing".into(),
            detail: format!("{member} has no Version header"),
            fix: "set `version` under [project] in pyproject.toml, then rebuild the wheel".into(),
        });
    }
    if metadata.first("Summary").trim().is_empty() {
        report.warnings.push(Finding {
            message: "METADATA Summary is empty".into(),
            detail: format!("{member} has no Summary header"),
            fix: "set a one-line `description` under [project] in pyproject.toml".into(),
        });
    }

    let description_chars = metadata.body.trim().chars().count();
    let has_docs_url = metadata.all("Project-URL").any(|raw| {
        let (label, url) = raw.trim().split_once(',').unwrap_or((raw.trim(), ""));
        DOC_LABELS.contains(&label.trim().to_lowercase().as_str()) && !url.trim().is_empty()
    });
    if description_chars >= MIN_DESCRIPTION_CHARS || has_docs_url {
        return;
    }
    let detail = format!(
        "{member}: the long description is {description_chars} characters (needs \
         {MIN_DESCRIPTION_CHARS}) and no Project-URL is labelled Documentation, Docs, Doc or Usage"
    );
    let fix = "write how to use the tasks (80+ characters) in a README set with \
               `readme = \"README.md\"` under [project] in pyproject.toml, or add \
               `Documentation = \"https://…\"` under [project.urls], then rebuild the wheel";
    if rules.require_usage_doc {
        report.errors.push(Finding {
            message: "usage documentation is missing (need METADATA description>=80 chars or \
                      Project-URL: Documentation,...)"
                .into(),
            detail,
            fix: format!("{fix}, or pass --allow-missing-usage-doc"),
        });
    } else {
        report.warnings.push(Finding {
            message: "usage documentation seems missing".into(),
            detail,
            fix: fix.to_string(),
        });
    }
}

fn not_a_zip(file: &str, error: &zip::result::ZipError) -> Finding {
    Finding {
        message: "wheel file is not a valid zip archive".into(),
        detail: format!("{file}: {error}"),
        fix: format!(
            "a .whl is a zip archive: pass the file that `python -m build --wheel` (or \
             `pip wheel . --no-deps`) wrote, not a source archive; if it is one, {REBUILD} \
             again (the file may be truncated)"
        ),
    }
}

/// The first (in name order) archive member ending in `.dist-info/<name>`, like 0.5.1.
fn dist_info_member(names: &[String], name: &str) -> Option<String> {
    let suffix = format!(".dist-info/{name}");
    names.iter().filter(|n| n.ends_with(&suffix)).min().cloned()
}

/// A member's text (invalid UTF-8 replaced, like Python's `errors="replace"`).
fn read_member<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    member: &str,
    file: &str,
) -> Result<String, Finding> {
    let mut bytes = Vec::new();
    archive
        .by_name(member)
        .and_then(|mut entry| entry.read_to_end(&mut bytes).map_err(Into::into))
        .map_err(|e| Finding {
            message: "wheel file is not a valid zip archive".into(),
            detail: format!("{file}: cannot read {member}: {e}"),
            fix: format!("{REBUILD} again (the file may be damaged or truncated)"),
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A METADATA file as Python's `email.parser.Parser` (policy compat32) reads it.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Metadata {
    /// Header names as written, values with continuation lines joined by `\n`.
    pub headers: Vec<(String, String)>,
    /// Everything after the headers.
    pub body: String,
}

impl Metadata {
    /// Parse `text`. Headers end at the first blank line, or at the first line that is not a
    /// header (which then starts the body).
    pub(crate) fn parse(text: &str) -> Metadata {
        let mut metadata = Metadata::default();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let content = line.trim_end_matches(['\n', '\r']);
            if content.is_empty() {
                offset += line.len();
                metadata.body = text[offset..].to_string();
                return metadata;
            }
            if content.starts_with([' ', '\t']) {
                // A continuation line; one before any header is dropped (a defect in Python).
                if let Some((_, value)) = metadata.headers.last_mut() {
                    value.push('\n');
                    value.push_str(content);
                }
            } else if content.starts_with("From ") {
                // A Unix "From " line: skipped (Python keeps it as the envelope, not a header).
            } else if let Some((name, value)) = header_line(content) {
                metadata.headers.push((
                    name.to_string(),
                    value.trim_start_matches([' ', '\t']).into(),
                ));
            } else {
                // Not a header: the body starts here, without a blank line.
                metadata.body = text[offset..].to_string();
                return metadata;
            }
            offset += line.len();
        }
        metadata
    }

    /// The first value of header `name` (any case), or `""`.
    pub(crate) fn first(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Name: value` when the line is a header: printable ASCII other than `:` up to a `:`.
fn header_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    name.bytes()
        .all(|b| (0x21..=0x7e).contains(&b))
        .then_some((name, value))
}

/// The number of entry points in an `entry_points.txt`: the options of every section, counted
/// like `sum(len(parser.options(s)) for s in parser.sections())` with Python's
/// `configparser.ConfigParser(interpolation=None)` and case-sensitive names (so `[DEFAULT]`
/// options count in every section). Errors are what `configparser` rejects.
pub(crate) fn count_entry_points(text: &str) -> Result<usize, String> {
    // Sections in order with their option names; `DEFAULT`'s options separately.
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut defaults: Vec<String> = Vec::new();
    // Where options go: None before any section, Some(None) in DEFAULT, Some(Some(i)) in a section.
    let mut current: Option<Option<usize>> = None;
    let mut seen_sections: Vec<String> = Vec::new();
    let mut in_option = false;
    let mut indent_level = 0usize;
    let mut bad_lines: Vec<usize> = Vec::new();

    for (index, line) in text.split('\n').enumerate() {
        let lineno = index + 1;
        let value = line.trim();
        if value.is_empty() || value.starts_with('#') || value.starts_with(';') {
            continue;
        }
        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if current.is_some() && in_option && indent > indent_level {
            continue; // a continuation of the previous value
        }
        indent_level = indent;
        if let Some(header) = section_header(value) {
            if seen_sections.iter().any(|s| s == header) {
                return Err(format!(
                    "line {lineno}: section [{header}] appears more than once"
                ));
            }
            seen_sections.push(header.to_string());
            current = Some(if header == "DEFAULT" {
                None
            } else {
                sections.push((header.to_string(), Vec::new()));
                Some(sections.len() - 1)
            });
            in_option = false;
            continue;
        }
        let Some(target) = current else {
            return Err(format!(
                "line {lineno}: {value:?} comes before any [section] header"
            ));
        };
        let Some(position) = value.find(['=', ':']) else {
            bad_lines.push(lineno);
            continue;
        };
        let name = value[..position].trim_end();
        if name.is_empty() {
            bad_lines.push(lineno);
            continue;
        }
        let options = match target {
            None => &mut defaults,
            Some(i) => &mut sections[i].1,
        };
        if options.iter().any(|o| o == name) {
            let section = target.map_or("DEFAULT", |i| sections[i].0.as_str());
            return Err(format!(
                "line {lineno}: {name:?} is declared twice in [{section}]"
            ));
        }
        options.push(name.to_string());
        in_option = true;
    }
    if !bad_lines.is_empty() {
        let lines: Vec<String> = bad_lines.iter().map(usize::to_string).collect();
        let (what, verb) = if lines.len() == 1 {
            ("line", "is")
        } else {
            ("lines", "are")
        };
        return Err(format!(
            "{what} {} {verb} not `name = object.reference`",
            lines.join(", ")
        ));
    }
    Ok(sections
        .iter()
        .map(|(_, options)| {
            options.len() + defaults.iter().filter(|d| !options.contains(d)).count()
        })
        .sum())
}

/// `[name]` at the start of a line (like `configparser`'s `\[(?P<header>.+)\]`: up to the last
/// `]`, anything after it ignored).
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;

    use super::*;

    const STRICT: Rules = Rules {
        require_entry_points: true,
        require_usage_doc: true,
    };

    const LONG: &str = "Demo tasks for pyoco. Install the wheel on a worker, then use the tasks \
                        `demo.tasks:add` and `demo.tasks:mul` in a flow.yaml.";

    fn metadata(headers: &str, body: &str) -> String {
        format!("Metadata-Version: 2.1\n{headers}\n{body}")
    }

    const GOOD_HEADERS: &str = "Name: demo\nVersion: 1.0.0\nSummary: Demo tasks\n";
    const ENTRY_POINTS: &str = "[pyoco.tasks]\ndemo = demo.tasks\n";

    /// A zip with `files` (name, text), deflate-compressed like a real wheel.
    fn wheel(files: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, text) in files {
            writer.start_file(*name, options).unwrap();
            writer.write_all(text.as_bytes()).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// The usual wheel, with METADATA `meta` and entry points `eps` (omitted when None).
    fn demo_wheel(meta: &str, eps: Option<&str>) -> Vec<u8> {
        let mut files = vec![
            ("demo/__init__.py", ""),
            ("demo/tasks.py", "def add(a, b):\n    return a + b\n"),
            ("demo-1.0.0.dist-info/METADATA", meta),
            ("demo-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\n"),
        ];
        if let Some(eps) = eps {
            files.push(("demo-1.0.0.dist-info/entry_points.txt", eps));
        }
        wheel(&files)
    }

    fn run(bytes: Vec<u8>, rules: Rules) -> Report {
        check(Cursor::new(bytes), "demo-1.0.0-py3-none-any.whl", rules).unwrap()
    }

    fn messages(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.message.as_str()).collect()
    }

    #[test]
    fn a_complete_wheel_passes_without_warnings() {
        let report = run(
            demo_wheel(&metadata(GOOD_HEADERS, LONG), Some(ENTRY_POINTS)),
            STRICT,
        );
        assert_eq!(report, Report::default());
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_one_error() {
        let report = run(b"PK\x03\x04 but not really a zip".to_vec(), STRICT);
        assert_eq!(
            messages(&report.errors),
            ["wheel file is not a valid zip archive"]
        );
        assert!(report.warnings.is_empty());
        assert!(report.errors[0].fix.contains("python -m build --wheel"));
    }

    #[test]
    fn missing_metadata_stops_the_checks() {
        let report = run(
            wheel(&[
                ("demo/__init__.py", ""),
                ("demo-1.0.0.dist-info/entry_points.txt", ENTRY_POINTS),
            ]),
            STRICT,
        );
        assert_eq!(messages(&report.errors), ["missing dist-info/METADATA"]);
        assert!(report.warnings.is_empty());
        assert_eq!(
            report.errors[0].detail,
            "demo-1.0.0-py3-none-any.whl has no <package>-<version>.dist-info/METADATA"
        );
    }

    #[test]
    fn missing_name_is_an_error_naming_the_member() {
        let report = run(
            demo_wheel(
                &metadata("Version: 1.0.0\nSummary: s\n", LONG),
                Some(ENTRY_POINTS),
            ),
            STRICT,
        );
        assert_eq!(messages(&report.errors), ["METADATA Name is missing"]);
        assert_eq!(
            report.errors[0].detail,
            "demo-1.0.0.dist-info/METADATA has no Name header"
        );
        assert!(report.errors[0].fix.contains("`name` under [project]"));
    }

    #[test]
    fn missing_or_blank_version_is_an_error() {
        for headers in [
            "Name: demo\nSummary: s\n",
            "Name: demo\nVersion:   \nSummary: s\n",
        ] {
            let report = run(
                demo_wheel(&metadata(headers, LONG), Some(ENTRY_POINTS)),
                STRICT,
            );
            assert_eq!(
                messages(&report.errors),
                ["METADATA Version is missing"],
                "{headers:?}"
            );
        }
    }

    #[test]
    fn no_entry_points_is_an_error_unless_allowed() {
        let meta = metadata(GOOD_HEADERS, LONG);
        let report = run(demo_wheel(&meta, None), STRICT);
        assert_eq!(
            messages(&report.errors),
            ["entry_points are missing (dist-info/entry_points.txt)"]
        );
        assert_eq!(
            report.errors[0].detail,
            "demo-1.0.0-py3-none-any.whl has no *.dist-info/entry_points.txt"
        );
        assert!(report.errors[0].fix.contains("--allow-no-entry-points"));

        // An entry_points.txt with sections but no entries counts as none.
        let report = run(
            demo_wheel(&meta, Some("[pyoco.tasks]\n# none yet\n")),
            STRICT,
        );
        assert_eq!(
            report.errors[0].detail,
            "demo-1.0.0.dist-info/entry_points.txt declares no entry point"
        );

        let allowed = Rules {
            require_entry_points: false,
            ..STRICT
        };
        let report = run(demo_wheel(&meta, None), allowed);
        assert!(report.errors.is_empty());
        assert_eq!(messages(&report.warnings), ["entry_points are missing"]);
    }

    #[test]
    fn a_short_description_without_a_docs_url_is_missing_usage_doc() {
        let meta = metadata(GOOD_HEADERS, "Short description.");
        let report = run(demo_wheel(&meta, Some(ENTRY_POINTS)), STRICT);
        assert_eq!(
            messages(&report.errors),
            [
                "usage documentation is missing (need METADATA description>=80 chars or \
              Project-URL: Documentation,...)"
            ]
        );
        assert!(
            report.errors[0]
                .detail
                .contains("the long description is 18 characters (needs 80)"),
            "{}",
            report.errors[0].detail
        );
        assert!(report.errors[0].fix.contains("--allow-missing-usage-doc"));

        let allowed = Rules {
            require_usage_doc: false,
            ..STRICT
        };
        let report = run(demo_wheel(&meta, Some(ENTRY_POINTS)), allowed);
        assert!(report.errors.is_empty());
        assert_eq!(
            messages(&report.warnings),
            ["usage documentation seems missing"]
        );
    }

    #[test]
    fn exactly_80_characters_after_trimming_is_enough() {
        let body = format!("\n\n  {}  \n", "x".repeat(80));
        let report = run(
            demo_wheel(&metadata(GOOD_HEADERS, &body), Some(ENTRY_POINTS)),
            STRICT,
        );
        assert!(report.errors.is_empty(), "{report:?}");
        let body = format!("  {}  \n", "é".repeat(79));
        let report = run(
            demo_wheel(&metadata(GOOD_HEADERS, &body), Some(ENTRY_POINTS)),
            STRICT,
        );
        assert_eq!(report.errors.len(), 1, "characters, not bytes");
    }

    #[test]
    fn a_documentation_project_url_counts_as_usage_doc() {
        for url in [
            "Project-URL: Documentation, https://example.org/docs",
            "project-url: docs,https://example.org",
            "Project-URL:  USAGE , https://example.org/usage",
            "Project-URL: Doc, https://example.org/doc",
        ] {
            let headers = format!("{GOOD_HEADERS}{url}\n");
            let report = run(
                demo_wheel(&metadata(&headers, ""), Some(ENTRY_POINTS)),
                STRICT,
            );
            assert!(report.errors.is_empty(), "{url}: {report:?}");
        }
        for url in [
            "Project-URL: Homepage, https://example.org",
            "Project-URL: Documentation,",
            "Project-URL: Documentation",
        ] {
            let headers = format!("{GOOD_HEADERS}{url}\n");
            let report = run(
                demo_wheel(&metadata(&headers, ""), Some(ENTRY_POINTS)),
                STRICT,
            );
            assert_eq!(report.errors.len(), 1, "{url}: {report:?}");
        }
    }

    #[test]
    fn an_empty_summary_is_only_a_warning() {
        let report = run(
            demo_wheel(
                &metadata("Name: demo\nVersion: 1.0.0\nSummary: \n", LONG),
                Some(ENTRY_POINTS),
            ),
            STRICT,
        );
        assert!(report.errors.is_empty());
        assert_eq!(messages(&report.warnings), ["METADATA Summary is empty"]);
    }

    #[test]
    fn findings_come_in_0_5_1s_order() {
        let report = run(
            demo_wheel(&metadata("Metadata-Version: 2.1\n", ""), None),
            STRICT,
        );
        assert_eq!(
            messages(&report.errors),
            [
                "METADATA Name is missing",
                "METADATA Version is missing",
                "usage documentation is missing (need METADATA description>=80 chars or \
                 Project-URL: Documentation,...)",
                "entry_points are missing (dist-info/entry_points.txt)"
            ]
        );
        assert_eq!(messages(&report.warnings), ["METADATA Summary is empty"]);
    }

    #[test]
    fn an_invalid_entry_points_file_is_reported_with_its_line() {
        let report = run(
            demo_wheel(
                &metadata(GOOD_HEADERS, LONG),
                Some("demo = demo.tasks\n[pyoco.tasks]\n"),
            ),
            STRICT,
        );
        assert_eq!(
            messages(&report.errors),
            [
                "dist-info/entry_points.txt format is invalid",
                "entry_points are missing (dist-info/entry_points.txt)"
            ]
        );
        assert!(
            report.errors[0]
                .detail
                .contains("line 1: \"demo = demo.tasks\" comes before any [section] header"),
            "{}",
            report.errors[0].detail
        );
    }

    #[test]
    fn the_first_dist_info_in_name_order_is_read() {
        let bytes = wheel(&[
            ("zzz-1.0.dist-info/METADATA", "Summary: x\n\n"),
            ("aaa-1.0.dist-info/METADATA", &metadata(GOOD_HEADERS, LONG)),
            ("aaa-1.0.dist-info/entry_points.txt", ENTRY_POINTS),
        ]);
        assert_eq!(run(bytes, STRICT), Report::default());
    }

    #[test]
    fn metadata_is_parsed_like_pythons_email_parser() {
        let m = Metadata::parse(
            "Metadata-Version: 2.1\r\nName:demo\r\nSummary: a\r\n  folded\r\n\
             Project-URL: Docs, https://a\nproject-url: Home, https://b\n\nBody line\n\nmore\n",
        );
        assert_eq!(m.first("name"), "demo");
        assert_eq!(m.first("SUMMARY"), "a\n  folded");
        assert_eq!(
            m.all("Project-URL").collect::<Vec<_>>(),
            ["Docs, https://a", "Home, https://b"]
        );
        assert_eq!(m.body, "Body line\n\nmore\n");
        assert_eq!(m.first("Version"), "");

        // A line that is not a header starts the body.
        let m = Metadata::parse("Name: x\nnot a header line\nVersion: 1\n");
        assert_eq!(m.first("Version"), "");
        assert_eq!(m.body, "not a header line\nVersion: 1\n");
        // No body at all.
        assert_eq!(Metadata::parse("Name: x").body, "");
    }

    #[test]
    fn entry_points_are_counted_like_configparser() {
        assert_eq!(count_entry_points(""), Ok(0));
        assert_eq!(
            count_entry_points(
                "[console_scripts]\ndemo = demo.cli:main\n\n; comment\n[pyoco.tasks]\n\
                 a = demo.tasks\nb: demo.more\n  continued value = not an option\n"
            ),
            Ok(3)
        );
        // DEFAULT options count in every section; names are case-sensitive.
        assert_eq!(
            count_entry_points("[DEFAULT]\nx = 1\n[a]\nx = 2\nX = 3\n[b]\n"),
            Ok(3)
        );
        assert!(count_entry_points("[a]\nx = 1\nx = 2\n")
            .unwrap_err()
            .contains("declared twice"));
        assert!(count_entry_points("[a]\n[a]\n")
            .unwrap_err()
            .contains("more than once"));
        assert_eq!(
            count_entry_points("[a]\njust words\n= empty name\n"),
            Err("lines 2, 3 are not `name = object.reference`".to_string())
        );
    }
}
