//! A `.env` file as a document: read it, change a few keys, write it back with everything else
//! (comments, blank lines, order, `export ` prefixes, unknown keys, line endings) untouched.
//!
//! Values are evaluated by dotenvy, the same parser the loader uses, so what the settings window
//! shows is what the gateway and worker will read. To know where each entry starts and ends
//! (dotenvy only yields key/value pairs), the document splits the text with a port of dotenvy's
//! own line-joining rules (quoted values may span lines) and of its value scanner (to find an
//! inline `# comment`).

use std::fmt;
use std::io;
use std::path::Path;

use crate::atomic;
use crate::error::ConfigError;

/// A parsed `.env` file. `to_string()` of an unmodified document gives back the exact input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvDocument {
    /// The text started with a UTF-8 byte order mark (kept on write).
    bom: bool,
    entries: Vec<Entry>,
    /// dotenvy's value for each key entry, in order.
    values: Vec<String>,
}

/// One logical line: usually one physical line, several for a quoted multi-line value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Exact text, including its line terminator (none for a last line without one).
    text: String,
    /// 1-based number of its first physical line.
    line: usize,
    /// Set for `KEY=value` entries; `None` for blank and comment lines.
    key: Option<KeyPos>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPos {
    key: String,
    /// Byte range of the value as written (quotes included, inline comment excluded).
    value_start: usize,
    value_end: usize,
}

/// A `.env` text dotenvy cannot read: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl EnvDocument {
    /// An empty document.
    pub fn new() -> EnvDocument {
        EnvDocument::default()
    }

    /// Parse a `.env` text. Fails (with the line) where dotenvy would fail.
    pub fn parse(text: &str) -> Result<EnvDocument, ParseError> {
        let (bom, body) = match text.strip_prefix('\u{feff}') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let entries = split_entries(body)?;
        let values = evaluate(body, &entries)?;
        Ok(EnvDocument {
            bom,
            entries,
            values,
        })
    }

    /// Read and parse the file at `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<EnvDocument>, ConfigError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::ReadEnvFile {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::ParseEnvFile {
                path: path.to_path_buf(),
                line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
                message: "not valid UTF-8 text".to_owned(),
            }
        })?;
        EnvDocument::parse(&text)
            .map(Some)
            .map_err(|e| ConfigError::ParseEnvFile {
                path: path.to_path_buf(),
                line: e.line,
                message: e.message,
            })
    }

    /// Write the document to `path` atomically (temp file in the same directory, fsync, rename).
    /// An existing file keeps its permissions; a new file is created with mode 0600 because a
    /// `.env` may hold `PYOCO_AUTH_PEPPER`. On failure the previous file is untouched and no temp
    /// file is left behind.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        atomic::write(path, self.to_string().as_bytes(), |_| Ok(())).map_err(|source| {
            ConfigError::WriteEnvFile {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The effective value of `key` (its last occurrence, as dotenvy reads it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.key_entries()
            .zip(&self.values)
            .filter(|(k, _)| k.key == key)
            .last()
            .map(|(_, v)| v.as_str())
    }

    /// The keys, each once, in order of first appearance.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for k in self.key_entries() {
            if !keys.contains(&k.key.as_str()) {
                keys.push(&k.key);
            }
        }
        keys
    }

    /// Set `key` to `value`. An existing key has its last occurrence rewritten in place (its
    /// `export ` prefix, spacing and inline comment kept; earlier duplicates are left as they
    /// are, shadowed); a new key is appended as `KEY=value` on its own line. The value is quoted
    /// so that dotenvy reads back exactly `value` (see `quote_value`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        check_key(key)?;
        let quoted = quote_value(value);
        let mut texts: Vec<String> = self.entries.iter().map(|e| e.text.clone()).collect();
        let last = self
            .entries
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, e)| e.key.as_ref().filter(|k| k.key == key).map(|k| (i, k)));
        match last {
            Some((i, pos)) => {
                let text = &self.entries[i].text;
                let (body, terminator) = split_terminator(text);
                let rest = body.get(pos.value_end..).unwrap_or("");
                let comment = if rest.trim_start().starts_with('#') {
                    if rest.starts_with(char::is_whitespace) {
                        rest.to_owned()
                    } else {
                        format!(" {rest}")
                    }
                } else {
                    String::new()
                };
                let prefix = body.get(..pos.value_start).unwrap_or(body);
                texts[i] = format!("{prefix}{quoted}{comment}{terminator}");
            }
            None => {
                let newline = self.newline();
                if let Some(last) = texts.last_mut() {
                    if !last.ends_with('\n') {
                        last.push_str(newline);
                    }
                }
                texts.push(format!("{key}={quoted}{newline}"));
            }
        }
        self.replace_with(texts)
    }

    /// Remove every line that sets `key`. Returns whether there was one.
    pub fn unset(&mut self, key: &str) -> bool {
        let texts: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.key.as_ref().is_none_or(|k| k.key != key))
            .map(|e| e.text.clone())
            .collect();
        if texts.len() == self.entries.len() {
            return false;
        }
        // Removing whole entries cannot make the rest unparsable; if it somehow did, the
        // document stays as it was.
        self.replace_with(texts).is_ok()
    }

    fn key_entries(&self) -> impl Iterator<Item = &KeyPos> {
        self.entries.iter().filter_map(|e| e.key.as_ref())
    }

    /// The line ending new lines get: the document's first one, else `\n`.
    fn newline(&self) -> &'static str {
        match self.entries.iter().find(|e| e.text.ends_with('\n')) {
            Some(e) if e.text.ends_with("\r\n") => "\r\n",
            _ => "\n",
        }
    }

    fn replace_with(&mut self, texts: Vec<String>) -> Result<(), ConfigError> {
        let body = texts.concat();
        let entries = split_entries(&body).map_err(internal)?;
        let values = evaluate(&body, &entries).map_err(internal)?;
        self.entries = entries;
        self.values = values;
        Ok(())
    }
}

fn internal(e: ParseError) -> ConfigError {
    ConfigError::ParseEnvFile {
        path: "<edited .env document>".into(),
        line: e.line,
        message: format!(
            "internal error: an edit produced an unreadable document: {}",
            e.message
        ),
    }
}

impl fmt::Display for EnvDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bom {
            f.write_str("\u{feff}")?;
        }
        for e in &self.entries {
            f.write_str(&e.text)?;
        }
        Ok(())
    }
}

/// Keys we write must be read back by dotenvy *and* by pyoco-server 0.5.1
/// (`^[A-Za-z_][A-Za-z0-9_]*$`).
fn check_key(key: &str) -> Result<(), ConfigError> {
    let mut chars = key.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

/// How a value is written so that dotenvy reads it back unchanged:
/// * bare when it is `[A-Za-z0-9_./:@,+-]*`;
/// * else in single quotes (literal in both dotenvy and 0.5.1) when it has no `'`, no newline
///   and does not end with `\` (dotenvy's line joiner would take `\'` as an escaped quote);
/// * else in double quotes, escaping `\`, `"`, `$` and newline as `\\`, `\"`, `\$`, `\n`.
///
/// pyoco-server 0.5.1 reads all of these identically except double-quoted values containing `$`
/// (it keeps the backslash of `\$`) or non-ASCII text (its `unicode_escape` mangles it), and any
/// value containing a line separator other than `\n` (CR, VT, FF, FS, GS, RS, NEL, U+2028,
/// U+2029), which 0.5.1 splits lines at.
pub fn quote_value(value: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || "_./:@,+-".contains(c);
    if value.chars().all(bare) {
        return value.to_owned();
    }
    if !value.contains(['\'', '\n']) && !value.ends_with('\\') {
        return format!("'{value}'");
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `(body, terminator)` where terminator is `\r\n`, `\n` or empty.
fn split_terminator(text: &str) -> (&str, &str) {
    if let Some(body) = text.strip_suffix("\r\n") {
        (body, "\r\n")
    } else if let Some(body) = text.strip_suffix('\n') {
        (body, "\n")
    } else {
        (text, "")
    }
}

/// dotenvy's line-joining states (`iter.rs`, `ParseState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    Complete,
    Escape,
    StrongOpen,
    StrongOpenEscape,
    WeakOpen,
    WeakOpenEscape,
    Comment,
    WhiteSpace,
}

/// Port of dotenvy's `eval_end_state`: the state after scanning one physical line.
fn join_state(prev: Join, line: &str) -> Join {
    let mut state = prev;
    for c in line.chars() {
        state = match state {
            Join::WhiteSpace => match c {
                '#' => return Join::Comment,
                '\\' => Join::Escape,
                '"' => Join::WeakOpen,
                '\'' => Join::StrongOpen,
                _ => Join::Complete,
            },
            Join::Escape => Join::Complete,
            Join::Complete => match c {
                c if c.is_whitespace() && c != '\n' && c != '\r' => Join::WhiteSpace,
                '\\' => Join::Escape,
                '"' => Join::WeakOpen,
                '\'' => Join::StrongOpen,
                _ => Join::Complete,
            },
            Join::WeakOpen => match c {
                '\\' => Join::WeakOpenEscape,
                '"' => Join::Complete,
                _ => Join::WeakOpen,
            },
            Join::WeakOpenEscape => Join::WeakOpen,
            Join::StrongOpen => match c {
                '\\' => Join::StrongOpenEscape,
                '\'' => Join::Complete,
                _ => Join::StrongOpen,
            },
            Join::StrongOpenEscape => Join::StrongOpen,
            Join::Comment => return Join::Comment,
        };
    }
    state
}

/// Split a text into logical entries exactly where dotenvy does.
fn split_entries(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::new();
    let mut buf = String::new();
    let mut state = Join::Complete;
    let mut start_line = 1;
    for (index, physical) in text.split_inclusive('\n').enumerate() {
        if buf.is_empty() {
            start_line = index + 1;
        }
        buf.push_str(physical);
        let done = if buf.trim_start().starts_with('#') {
            true
        } else {
            state = join_state(state, physical);
            matches!(state, Join::Complete | Join::Comment)
        };
        if done {
            entries.push(classify(std::mem::take(&mut buf), start_line)?);
            state = Join::Complete;
        }
    }
    if !buf.is_empty() {
        // Without a final newline dotenvy would also stop at a trailing space or backslash;
        // the loader adds the newline, so only an open quote is an error.
        if matches!(
            state,
            Join::StrongOpen | Join::StrongOpenEscape | Join::WeakOpen | Join::WeakOpenEscape
        ) {
            return Err(ParseError {
                line: start_line,
                message: "a quoted value is never closed".to_owned(),
            });
        }
        entries.push(classify(buf, start_line)?);
    }
    Ok(entries)
}

/// Port of dotenvy's `LineParser` up to the value: is this a `KEY=value` entry, and where is
/// its value?
fn classify(text: String, line: usize) -> Result<Entry, ParseError> {
    let err = |message: &str| ParseError {
        line,
        message: message.to_owned(),
    };
    let (body, _) = split_terminator(&text);
    let body = body.trim_end();
    let mut pos = skip_whitespace(body, 0);
    if pos == body.len() || body[pos..].starts_with('#') {
        return Ok(Entry {
            text,
            line,
            key: None,
        });
    }
    let bad_key = "expected KEY=value (a key starts with a letter or `_`)";
    let (mut key, mut end) = parse_key(body, pos).ok_or_else(|| err(bad_key))?;
    pos = skip_whitespace(body, end);
    if key == "export" && !body[pos..].starts_with('=') {
        (key, end) = parse_key(body, pos).ok_or_else(|| err(bad_key))?;
        pos = skip_whitespace(body, end);
    }
    if !body[pos..].starts_with('=') {
        return Err(err("expected `=` after the key"));
    }
    let value_start = skip_whitespace(body, pos + 1);
    let rest = &body[value_start..];
    let value_end = if rest.is_empty() || rest.starts_with('#') {
        value_start
    } else {
        value_start + value_len(rest)
    };
    let key = key.to_owned();
    Ok(Entry {
        text,
        line,
        key: Some(KeyPos {
            key,
            value_start,
            value_end,
        }),
    })
}

fn skip_whitespace(s: &str, from: usize) -> usize {
    match s
        .get(from..)
        .and_then(|r| r.find(|c: char| !c.is_whitespace()))
    {
        Some(i) => from + i,
        None => s.len(),
    }
}

/// dotenvy's key: `[A-Za-z_][A-Za-z0-9_.]*`. Returns the key and the byte after it.
fn parse_key(s: &str, from: usize) -> Option<(&str, usize)> {
    let rest = s.get(from..)?;
    if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    Some((&rest[..len], from + len))
}

/// Port of dotenvy's `parse_value` scanner: the byte length of the value before an unquoted
/// space or tab (after which dotenvy only allows blanks and a `# comment`).
fn value_len(input: &str) -> usize {
    #[derive(PartialEq)]
    enum Subst {
        None,
        Block,
        EscapedBlock,
    }
    let (mut strong, mut weak, mut escaped) = (false, false, false);
    let mut subst = Subst::None;
    let mut name_len = 0usize;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if strong {
            if c == '\'' {
                strong = false;
            }
        } else if subst != Subst::None {
            if c.is_alphanumeric() {
                name_len += 1;
            } else if subst == Subst::Block {
                if c == '{' && name_len == 0 {
                    subst = Subst::EscapedBlock;
                } else {
                    name_len = 0;
                    subst = if c == '$' { Subst::Block } else { Subst::None };
                }
            } else if c == '}' {
                name_len = 0;
                subst = Subst::None;
            } else {
                name_len += 1;
            }
        } else if c == '$' {
            subst = Subst::Block;
            name_len = 0;
        } else if weak {
            if c == '"' {
                weak = false;
            } else if c == '\\' {
                escaped = true;
            }
        } else if c == '\'' {
            strong = true;
        } else if c == '"' {
            weak = true;
        } else if c == '\\' {
            escaped = true;
        } else if c == ' ' || c == '\t' {
            return i;
        }
    }
    input.len()
}

/// dotenvy's values for the key entries of `body`, in order. dotenvy reads the whole text at
/// once so `$VAR` references to earlier keys resolve as the loader resolves them.
fn evaluate(body: &str, entries: &[Entry]) -> Result<Vec<String>, ParseError> {
    let mut text = body.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let parsed: Result<Vec<(String, String)>, dotenvy::Error> =
        dotenvy::from_read_iter(text.as_bytes()).collect();
    let keyed: Vec<&Entry> = entries.iter().filter(|e| e.key.is_some()).collect();
    match parsed {
        Ok(pairs) if pairs.len() == keyed.len() => Ok(pairs.into_iter().map(|(_, v)| v).collect()),
        Ok(_) => Err(ParseError {
            line: 1,
            message: "internal error: entries and dotenvy disagree; please report this file"
                .to_owned(),
        }),
        Err(whole) => Err(locate_error(entries).unwrap_or(ParseError {
            line: 1,
            message: describe(&whole),
        })),
    }
}

/// Find the first entry dotenvy rejects on its own (parse errors never depend on other lines).
fn locate_error(entries: &[Entry]) -> Option<ParseError> {
    entries.iter().find_map(|e| {
        let mut text = e.text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let result: Result<Vec<_>, _> = dotenvy::from_read_iter(text.as_bytes()).collect();
        result.err().map(|err| ParseError {
            line: e.line,
            message: describe(&err),
        })
    })
}

fn describe(err: &dotenvy::Error) -> String {
    match err {
        dotenvy::Error::LineParse(text, index) => format!(
            "cannot parse {text:?} (at character {index}); quote values that contain spaces or \
             quotes, e.g. KEY='a b', and use only \\\\ \\\" \\' \\$ \\n escapes inside double quotes"
        ),
        other => other.to_string(),
    }
}
