//! What `pyoco-client` prints, byte for byte like 0.5.1.
//!
//! 0.5.1 prints every answer with `json.dumps(obj, ensure_ascii=True)`: Python's **default**
//! separators (`", "` and `": "`, unlike the compact form written to NATS), non-ASCII escaped as
//! `\uXXXX`, floats as `repr(float)`. [`dumps`] reuses `pyoco-wire`'s compact Python formatter
//! for strings and numbers and only changes the separators. Tables are 0.5.1's
//! `_print_table`: cells are Python `str()` of the values, columns left-justified to the widest
//! cell (counted in characters) and joined by two spaces, every column padded (so lines end in
//! spaces), `(no items)` when there are no rows.

use std::io::{self, Write};

use pyoco_wire::{python_float_repr, PythonFormatter};
use serde::Serialize;
use serde_json::{ser::Formatter, Value};

use super::error::CliError;

/// `PythonFormatter` with Python's default separators.
#[derive(Debug, Default, Clone, Copy)]
struct DumpsFormatter(PythonFormatter);

impl Formatter for DumpsFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        self.0.write_f64(w, value)
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.0.write_f32(w, value)
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.0.write_string_fragment(w, fragment)
    }
}

/// Python's `json.dumps(value, ensure_ascii=True)` (one line, default separators).
pub(crate) fn dumps<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, DumpsFormatter::default());
    value
        .serialize(&mut ser)
        .expect("JSON values always serialize");
    // Every non-ASCII character is escaped, so the bytes are ASCII.
    String::from_utf8(out).expect("ensure_ascii output is ASCII")
}

/// Python truthiness of a JSON value (`x or default`).
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `str(value)` of a JSON value as `json.loads` returns it.
pub(crate) fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python `repr(value)` of a JSON value as `json.loads` returns it.
pub(crate) fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                python_float_repr(n.as_f64().unwrap_or(f64::NAN))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python `repr(str)`: single quotes unless the text has `'` and no `"`.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// 0.5.1's `_print_table` as text (every line ends with `\n`).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(no items)\n".to_string();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, &width)| {
                let pad = width.saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        padded.join("  ")
    };
    let mut out = line(&mut headers.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// stdout, flushed after every write (a `watch` line must show up at once), with a closed pipe
/// turned into [`CliError::BrokenPipe`].
pub(crate) struct Out {
    stdout: io::Stdout,
}

impl Out {
    pub(crate) fn new() -> Out {
        Out {
            stdout: io::stdout(),
        }
    }

    /// `json.dumps(value, ensure_ascii=True)` and a newline.
    pub(crate) fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CliError> {
        let mut line = dumps(value);
        line.push('\n');
        self.text(&line)
    }

    /// Text as is.
    pub(crate) fn text(&mut self, text: &str) -> Result<(), CliError> {
        let mut lock = self.stdout.lock();
        lock.write_all(text.as_bytes())
            .and_then(|()| lock.flush())
            .map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    CliError::BrokenPipe
                } else {
                    CliError::FileIo {
                        reason: format!("writing to stdout failed: {e}"),
                        hint: "check where the output goes (disk full? closed terminal?)"
                            .to_string(),
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use serde_json::json;

    use super::*;

    /// A value with everything `json.dumps` treats specially.
    const SAMPLE: &str = r#"{"run_id": "a-1", "status": "RUNNING", "name": "caf\u00e9 \u65e5\u672c \ud83d\ude00 \"q\" back\\slash\ttab\u007f\u0001", "nested": {"list": [1, 2.5, -0.0, 1e16, 1.5e-05, 123456789.125, true, false, null, [], {}], "empty": "", "slash": "a/b"}, "ts": 1764000000.123456, "big": 12345678901234567, "neg": -3}"#;

    #[test]
    fn dumps_uses_python_default_separators_and_ascii_escapes() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(
            dumps(&value),
            "{\"run_id\": \"a-1\", \"status\": \"RUNNING\", \"name\": \"caf\\u00e9 \\u65e5\\u672c \
             \\ud83d\\ude00 \\\"q\\\" back\\\\slash\\ttab\\u007f\\u0001\", \"nested\": {\"list\": \
             [1, 2.5, -0.0, 1e+16, 1.5e-05, 123456789.125, true, false, null, [], {}], \"empty\": \
             \"\", \"slash\": \"a/b\"}, \"ts\": 1764000000.123456, \"big\": 12345678901234567, \
             \"neg\": -3}"
        );
    }

    /// The same bytes as Python itself prints, when a python3 is around.
    #[test]
    fn dumps_matches_python_byte_for_byte() {
        let script =
            "import json,sys; print(json.dumps(json.loads(sys.argv[1]), ensure_ascii=True))";
        let Ok(output) = Command::new("python3")
            .args(["-c", script, SAMPLE])
            .output()
        else {
            eprintln!("python3 not found: skipped");
            return;
        };
        assert!(output.status.success(), "{output:?}");
        let python = String::from_utf8(output.stdout).unwrap();
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(format!("{}\n", dumps(&value)), python);
    }

    #[test]
    fn dumps_keeps_key_order() {
        let value: Value =
            serde_json::from_str(r#"{"z": 1, "a": 2, "m": {"y": 1, "b": 2}}"#).unwrap();
        assert_eq!(dumps(&value), r#"{"z": 1, "a": 2, "m": {"y": 1, "b": 2}}"#);
    }

    #[test]
    fn py_str_is_pythons_str() {
        assert_eq!(py_str(&json!("x")), "x");
        assert_eq!(py_str(&json!(1764000000.5)), "1764000000.5");
        assert_eq!(py_str(&json!(5.0)), "5.0");
        assert_eq!(py_str(&json!(7)), "7");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(
            py_str(&json!(["a", 1, {"k": "it's"}])),
            "['a', 1, {'k': \"it's\"}]"
        );
    }

    #[test]
    fn truthy_is_pythons_truthiness() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for t in [
            json!(true),
            json!(1),
            json!("x"),
            json!([0]),
            json!({"a": null}),
        ] {
            assert!(truthy(&t), "{t}");
        }
    }

    #[test]
    fn table_pads_every_column_like_0_5_1() {
        let rows = vec![
            vec!["r-1".to_string(), "COMPLETED".to_string()],
            vec!["run-22".to_string(), "日本".to_string()],
        ];
        assert_eq!(
            table(&["run_id", "status"], &rows),
            "run_id  status   \nr-1     COMPLETED\nrun-22  日本       \n"
        );
    }

    #[test]
    fn empty_table_says_no_items() {
        assert_eq!(table(&["run_id"], &[]), "(no items)\n");
    }
}
