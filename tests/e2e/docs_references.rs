//! Every section reference in the repository resolves inside the checkout.
//!
//! Code, tests, scripts and docs cite the wire contract by section sign: `§6.10` is a heading of
//! docs/contract.md, `§14-13` (or `§14 item 13`) item 13 of its §14, `§7 step 3` step 3 of its
//! §7, `Appendix A` its appendix. A file name right before the sign switches the document:
//! `PROTOCOL.md §3.5` is section 3.5 of the runner protocol. (The rule is written in the preface
//! of docs/contract.md.) This test scans every tracked text file and fails with one
//! `file:line: §X` line per reference that names nothing, and per pointer to a contract other
//! than docs/contract.md. A plain file scan: no NATS, no processes besides `git ls-files`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::Command,
};

/// The section sign, spelled so that this file's own text holds no reference to check.
const SIGN: char = '\u{a7}';

/// Where a reference without a document name in front of it points.
const CONTRACT: &str = "docs/contract.md";

/// The word that starts an appendix reference, spelled apart for the same reason as [`SIGN`].
const APPENDIX: &str = "Appendix ";

/// Directories never scanned when `git` cannot list the files.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    "target",
    "node_modules",
    ".venv",
    ".pyoco",
    "artifacts",
    "test-artifacts",
    "__pycache__",
    "gen",
];

#[test]
fn every_section_reference_resolves() {
    let root = pyoco_testkit::workspace_root();
    let files = text_files(&root);
    assert!(
        files.contains_key(CONTRACT),
        "{CONTRACT} is missing: every section reference points into it"
    );
    let outlines: BTreeMap<&str, Outline> = files
        .iter()
        .filter(|(path, _)| path.ends_with(".md"))
        .map(|(path, text)| (path.as_str(), Outline::parse(text)))
        .collect();

    let mut checked = 0;
    let mut unresolved = Vec::new();
    for (path, text) in &files {
        for (index, line) in text.lines().enumerate() {
            let at = format!("{path}:{}", index + 1);
            for r in references(line) {
                checked += 1;
                let target = match &r.document {
                    None => Ok(CONTRACT.to_string()),
                    Some(name) => find_document(name, path, &files),
                };
                let result = target.and_then(|target| match outlines.get(target.as_str()) {
                    Some(outline) => outline.resolve(&r),
                    None => Err(format!("{target} is not a Markdown document")),
                });
                if let Err(why) = result {
                    unresolved.push(format!("{at}: {}  ({why})", r.text));
                }
            }
            for pointer in foreign_contracts(line, path, &files) {
                unresolved.push(format!(
                    "{at}: {pointer}  (section numbers refer to {CONTRACT})"
                ));
            }
        }
    }
    // A scan that finds (almost) nothing is broken, not clean.
    assert!(
        checked > 200,
        "only {checked} section references found in {} files: is the scan broken?",
        files.len()
    );
    assert!(
        unresolved.is_empty(),
        "{} of {checked} section references do not resolve (the rule is in the preface of \
         {CONTRACT}):\n{}",
        unresolved.len(),
        unresolved.join("\n")
    );
}

#[test]
fn unresolvable_references_are_reported() {
    let doc = Outline::parse(
        "# Title\n## 6. Worker\n### 6.10 Sync\n1. load\n2. list\n```\n# 7. not a heading\n```\n\
         ## 14. Quirks\n| # | what |\n|---|---|\n| 1 | one |\n## Appendix A. Checklist\n1. names\n",
    );
    let fine = format!(
        "{SIGN}6, {SIGN}6.10, {SIGN}14-1, {SIGN}14 item 1, {SIGN}6.10 steps 1 (x, y) and 2, \
         {SIGN}6.10 steps 1–2, {APPENDIX}A, {APPENDIX}A item 1"
    );
    let refs = references(&fine);
    assert_eq!(refs.len(), 8, "{refs:?}");
    for r in &refs {
        assert_eq!(doc.resolve(r), Ok(()), "{r:?}");
    }
    let broken = format!(
        "{SIGN}6.9, {SIGN}7, {SIGN}14-2, {SIGN}14 item 2, {SIGN}6.10 step 3, \
         {SIGN}6.10 steps 1, 3, {APPENDIX}B, {APPENDIX}A item 2"
    );
    let refs = references(&broken);
    assert_eq!(refs.len(), 8, "{refs:?}");
    for r in &refs {
        assert!(doc.resolve(r).is_err(), "{r:?} should not resolve");
    }

    // A document name right before the sign switches the document, also as a link.
    let named = references(&format!(
        "`PROTOCOL.md {SIGN}3.5`, [PROTOCOL.md](python/PROTOCOL.md) {SIGN}5, contract {SIGN}8"
    ));
    let documents: Vec<_> = named.iter().map(|r| r.document.as_deref()).collect();
    assert_eq!(documents, [Some("PROTOCOL.md"), Some("PROTOCOL.md"), None]);

    // Writing about the sign itself is not a reference.
    assert_eq!(
        references(&format!("{SIGN} numbers, {SIGN}N, {SIGN}14-N, `{SIGN}`")),
        [Reference {
            document: None,
            section: "14".into(),
            item: None,
            steps: vec![],
            text: format!("{SIGN}14"),
        }]
    );

    // Pointers to a contract outside the checkout.
    let files: BTreeMap<String, String> = [(CONTRACT.to_string(), String::new())].into();
    let c = "contract.md";
    let bad = foreign_contracts(
        &format!("see shared/reference/{c} or /work/{c}."),
        "crates/x/src/lib.rs",
        &files,
    );
    assert_eq!(bad, [format!("shared/reference/{c}"), format!("/work/{c}")]);
    let good = foreign_contracts(
        &format!("[contract](../../docs/{c}), docs/{c}, {c}, my_{c}"),
        "crates/x/README.md",
        &files,
    );
    assert!(good.is_empty(), "{good:?}");
}

/// The citable places of one Markdown document: its numbered headings (`6`, `6.10`) and
/// appendices (`A`), each with the numbers of the list items and table rows under it (the items
/// of §14, the steps of an algorithm).
#[derive(Debug, Default)]
struct Outline {
    sections: BTreeMap<String, BTreeSet<u32>>,
}

impl Outline {
    fn parse(text: &str) -> Outline {
        let mut sections: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut fenced = false;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            if let Some(title) = heading(line) {
                current = section_id(title);
                if let Some(id) = &current {
                    sections.entry(id.clone()).or_default();
                }
                continue;
            }
            if let (Some(id), Some(n)) = (&current, item_number(trimmed)) {
                sections.entry(id.clone()).or_default().insert(n);
            }
        }
        Outline { sections }
    }

    fn resolve(&self, r: &Reference) -> Result<(), String> {
        let Some(items) = self.sections.get(&r.section) else {
            return Err(format!("no section {}", r.section));
        };
        for n in r.item.iter().chain(&r.steps) {
            if !items.contains(n) {
                return Err(format!("section {} has no item or step {n}", r.section));
            }
        }
        Ok(())
    }
}

/// The title of a Markdown heading line (`## 6. Worker` → `6. Worker`).
fn heading(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches('#');
    let level = line.len() - rest.len();
    ((1..=6).contains(&level) && rest.starts_with(' ')).then(|| rest.trim())
}

/// `6.10 Wheel sync` → `6.10`, `0. Baseline` → `0`, `Appendix A. …` → `A`; `None` for an
/// unnumbered heading.
fn section_id(title: &str) -> Option<String> {
    if let Some(rest) = title.strip_prefix("Appendix ") {
        let mut chars = rest.chars();
        let letter = chars.next().filter(char::is_ascii_uppercase)?;
        return matches!(chars.next(), None | Some('.' | ' ' | ':')).then(|| letter.to_string());
    }
    let (number, rest) = split_number(title);
    (!number.is_empty() && (rest.is_empty() || rest.starts_with(['.', ' ']))).then(|| number.into())
}

/// The number of a list item (`3. …`) or of a table row whose first cell is a number
/// (`| 13 | …`).
fn item_number(trimmed: &str) -> Option<u32> {
    let (digits, rest) = split_digits(trimmed);
    if !digits.is_empty() && rest.starts_with(". ") {
        return digits.parse().ok();
    }
    let cell = trimmed.strip_prefix('|')?.trim_start();
    let (digits, rest) = split_digits(cell);
    if !digits.is_empty() && rest.trim_start().starts_with('|') {
        digits.parse().ok()
    } else {
        None
    }
}

/// One reference as written.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    /// The Markdown document named right before the sign (`PROTOCOL.md`); `None`: the contract.
    document: Option<String>,
    /// `6.10`, `14`, or an appendix letter.
    section: String,
    /// `§14-13` / `§14 item 13` / `Appendix A item 2`.
    item: Option<u32>,
    /// `§7 steps 3–4`.
    steps: Vec<u32>,
    /// The reference as written, for the report.
    text: String,
}

/// Every reference in one line: the section sign followed by a number, and the word
/// `Appendix` followed by a capital letter.
/// A sign followed by anything else is prose about the sign, not a reference.
fn references(line: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices(SIGN) {
        let after = &line[at + SIGN.len_utf8()..];
        let (section, mut rest) = split_number(after);
        if section.is_empty() {
            continue;
        }
        let item = match item_suffix(rest) {
            Some((n, tail)) => {
                rest = tail;
                Some(n)
            }
            None => None,
        };
        let (steps, tail) = step_list(rest);
        let end = line.len() - tail.len();
        found.push(Reference {
            document: document_before(&line[..at]),
            section: section.to_string(),
            item,
            steps,
            text: line[at..end].trim_end().to_string(),
        });
    }
    for (at, _) in line.match_indices(APPENDIX) {
        let after = &line[at + APPENDIX.len()..];
        let mut chars = after.chars();
        let Some(letter) = chars.next().filter(char::is_ascii_uppercase) else {
            continue;
        };
        if chars.next().is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let mut rest = &after[1..];
        let item = rest.strip_prefix(" item ").and_then(|tail| {
            let (digits, tail) = split_digits(tail);
            let n = digits.parse().ok()?;
            rest = tail;
            Some(n)
        });
        let end = line.len() - rest.len();
        found.push(Reference {
            document: None,
            section: letter.to_string(),
            item,
            steps: Vec::new(),
            text: line[at..end].to_string(),
        });
    }
    found
}

/// `-13…` or ` item 13…` right after a section number.
fn item_suffix(rest: &str) -> Option<(u32, &str)> {
    let tail = rest
        .strip_prefix('-')
        .or_else(|| rest.strip_prefix(" item "))?;
    let (digits, tail) = split_digits(tail);
    Some((digits.parse().ok()?, tail))
}

/// ` step 3`, ` steps 3–4`, ` steps 1 (…), 3, 4 and 5`: the step numbers and what follows.
fn step_list(rest: &str) -> (Vec<u32>, &str) {
    let Some(mut tail) = rest
        .strip_prefix(" steps ")
        .or_else(|| rest.strip_prefix(" step "))
    else {
        return (Vec::new(), rest);
    };
    let mut steps = Vec::new();
    let mut end = rest;
    loop {
        let (digits, after) = split_digits(tail);
        let Ok(first) = digits.parse::<u32>() else {
            break;
        };
        let mut after = after;
        let mut last = first;
        if let Some(range) = after.strip_prefix(['–', '-']) {
            let (digits, after_range) = split_digits(range);
            if let Ok(n) = digits.parse() {
                last = n;
                after = after_range;
            }
        }
        steps.extend(first..=last.max(first));
        // A remark in parentheses after a step: `1 (\`replace\`, if read)`.
        if let Some(open) = after.strip_prefix(" (") {
            if let Some(close) = open.find(')') {
                after = &open[close + 1..];
            }
        }
        end = after;
        let next = [", and ", " and ", ", "]
            .iter()
            .find_map(|sep| after.strip_prefix(sep));
        match next {
            Some(next) if next.starts_with(|c: char| c.is_ascii_digit()) => tail = next,
            _ => break,
        }
    }
    (steps, end)
}

/// The Markdown document named right before a sign: `PROTOCOL.md §5`,
/// `` `PROTOCOL.md §5` ``, `[PROTOCOL.md](path) §5`.
fn document_before(before: &str) -> Option<String> {
    let mut text = before.trim_end();
    if text.ends_with(')') {
        if let Some(link) = text.rfind("](") {
            text = &text[..link];
        }
    }
    let text = text.trim_end_matches(['`', ']', '*', '"', '\'']);
    let start = text
        .char_indices()
        .rev()
        .find(|(_, c)| !is_path_char(*c))
        .map_or(0, |(at, c)| at + c.len_utf8());
    let name = &text[start..];
    (name.len() > ".md".len() && name.ends_with(".md")).then(|| name.to_string())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-/~".contains(c)
}

/// The file a document name in front of a sign means, seen from the file `from`: a path is
/// taken relative to `from`'s directory, then to the repository root; a bare name must be the
/// name of exactly one file (or of one in `from`'s directory).
fn find_document(
    name: &str,
    from: &str,
    files: &BTreeMap<String, String>,
) -> Result<String, String> {
    let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    if name.contains('/') {
        return [normalize(&format!("{dir}/{name}")), normalize(name)]
            .into_iter()
            .flatten()
            .find(|p| files.contains_key(p))
            .ok_or_else(|| format!("no file {name}"));
    }
    let matching: Vec<&String> = files
        .keys()
        .filter(|p| p.rsplit('/').next() == Some(name))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("no file named {name}")),
        several => several
            .iter()
            .find(|p| p.rsplit_once('/').map_or("", |(d, _)| d) == dir)
            .map(|p| (*p).clone())
            .ok_or_else(|| format!("{name} is ambiguous: write its path")),
    }
}

/// `a/b/../c` → `a/c`; `None` when it climbs out of the repository.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Paths in `line` that end in `contract.md` but are not docs/contract.md as seen from the
/// file `from` (relative to its directory or to the repository root). A bare `contract.md` is
/// the document's name, not a path.
fn foreign_contracts(line: &str, from: &str, files: &BTreeMap<String, String>) -> Vec<String> {
    const NAME: &str = "contract.md";
    let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut foreign = Vec::new();
    for (at, _) in line.match_indices(NAME) {
        if line[at + NAME.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `contract.mdx`
        }
        let before = &line[..at];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !is_path_char(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let prefix = &before[start..];
        if prefix.is_empty() || !prefix.ends_with('/') {
            continue; // the bare name, or another file such as `my_contract.md`
        }
        let path = &line[start..at + NAME.len()];
        let ours = !path.starts_with(['/', '~'])
            && [normalize(&format!("{dir}/{path}")), normalize(path)]
                .into_iter()
                .flatten()
                .any(|p| p == CONTRACT && files.contains_key(&p));
        if !ours {
            foreign.push(path.to_string());
        }
    }
    foreign
}

/// `6.10 rest` → (`6.10`, ` rest`); a trailing `.` that ends a sentence is not part of it.
fn split_number(text: &str) -> (&str, &str) {
    let (digits, _) = split_digits(text);
    let mut end = digits.len();
    if end == 0 {
        return ("", text);
    }
    loop {
        let rest = &text[end..];
        let Some(after_dot) = rest.strip_prefix('.') else {
            break;
        };
        let (digits, _) = split_digits(after_dot);
        if digits.is_empty() {
            break;
        }
        end += 1 + digits.len();
    }
    (&text[..end], &text[end..])
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Every tracked (or new, not ignored) text file under `root`, by path relative to it with `/`
/// separators. Binary files (a NUL byte, not UTF-8) are left out.
fn text_files(root: &Path) -> BTreeMap<String, String> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output();
    let paths: Vec<String> = match listed {
        Ok(out) if out.status.success() => out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        _ => {
            let mut paths = Vec::new();
            walk(root, "", &mut paths);
            paths
        }
    };
    paths
        .into_iter()
        .filter_map(|path| {
            let bytes = fs::read(root.join(&path)).ok()?;
            if bytes.contains(&0) {
                return None;
            }
            Some((path, String::from_utf8(bytes).ok()?))
        })
        .collect()
}

/// The files under `dir` (`prefix` is its path relative to the root), skipping build output,
/// virtual environments and `.git`.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        match entry.file_type() {
            Ok(t) if t.is_dir() && !SKIPPED_DIRS.contains(&name.as_str()) => {
                walk(&entry.path(), &format!("{path}/"), out);
            }
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}
