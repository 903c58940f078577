//! `json.dumps` and `json.loads` the way pyoco-server 0.5.1 calls them.
//!
//! Python writes every KV value and message with
//! `json.dumps(obj, separators=(",", ":"), ensure_ascii=True)`. [`to_python_json`] produces the
//! same bytes for the same values: compact separators, every non-ASCII character (and DEL)
//! escaped as lower-case `\uXXXX` (astral characters as surrogate pairs), and floats printed
//! like Python's `repr(float)` (`5.0`, `1712345678.123456`, `1e+16`, `1e-05`). Byte parity
//! matters for snapshot compaction, whose threshold is measured on this encoding (§6.9).
//! What 0.5.1 prints or stores with the *default* separators (`", "`, `": "`) — the client's
//! output, object-store metadata — is [`dumps`].
//!
//! Differences that remain, by design:
//! * key order is the order of the Rust value (struct field order; `serde_json::Map` order,
//!   which is sorted unless serde_json's `preserve_order` feature is on);
//! * non-finite floats are written as `null` (Python writes the non-standard `NaN`/`Infinity`);
//! * integers beyond `u64`/`i64` are floats once read by serde_json.
//!
//! [`from_python_json`] reads what Python writes, including the `NaN`, `Infinity` and
//! `-Infinity` tokens a Python task output can put into a snapshot (read as `null`).

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::Value;

use super::float_repr;

/// serde_json formatter reproducing Python's `json.dumps(..., separators=(",", ":"),
/// ensure_ascii=True)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\u{7f}' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialize like Python's `json.dumps(obj, separators=(",", ":"), ensure_ascii=True)`.
///
/// # Errors
/// Whatever `T`'s `Serialize` implementation reports (e.g. a map with non-string keys).
pub fn try_to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Serialize like Python's `json.dumps(obj, separators=(",", ":"), ensure_ascii=True)`.
///
/// # Panics
/// Only if `T`'s `Serialize` implementation fails; none of this crate's types nor
/// `serde_json::Value` can.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    try_to_python_json(value).expect("wire values serialize to JSON")
}

/// serde_json formatter reproducing Python's `json.dumps(..., ensure_ascii=True)` with its
/// default separators (`", "` and `": "`): [`PythonFormatter`] with spaces after `,` and `:`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonDefaultFormatter;

impl Formatter for PythonDefaultFormatter {
    fn begin_array_value<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W>(&mut self, writer: &mut W) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(b": ")
    }

    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        PythonFormatter.write_f64(writer, value)
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        PythonFormatter.write_f32(writer, value)
    }

    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        PythonFormatter.write_string_fragment(writer, fragment)
    }
}

/// Python's `json.dumps(value, ensure_ascii=True)`: one line, default separators (`", "` and
/// `": "`), non-ASCII escaped as `\uXXXX`, floats as `repr(float)`.
///
/// # Panics
/// Only if `T`'s `Serialize` implementation fails; none of this crate's types nor
/// `serde_json::Value` can.
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonDefaultFormatter);
    value
        .serialize(&mut ser)
        .expect("wire values serialize to JSON");
    // Every non-ASCII character is escaped, so the bytes are ASCII.
    String::from_utf8(out).expect("ensure_ascii output is ASCII")
}

/// Parse JSON written by Python (`json.dumps` default `allow_nan=True`): standard JSON, plus the
/// `NaN`, `Infinity` and `-Infinity` tokens, which are read as `null`.
///
/// # Errors
/// The serde_json error of the input when it is not JSON even after that substitution.
pub fn from_python_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(first) => match replace_non_finite_tokens(bytes) {
            Some(fixed) => serde_json::from_slice(&fixed).map_err(|_| first),
            None => Err(first),
        },
    }
}

/// [`from_python_json`] into a `serde_json::Value`.
///
/// # Errors
/// See [`from_python_json`].
pub fn value_from_python_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    from_python_json(bytes)
}

/// Replace `NaN`, `Infinity`, `-Infinity` outside strings by `null`. `None` if there are none.
fn replace_non_finite_tokens(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        let token_len = if rest.starts_with(b"NaN") {
            3
        } else if rest.starts_with(b"Infinity") {
            8
        } else if rest.starts_with(b"-Infinity") {
            9
        } else {
            0
        };
        if token_len > 0 {
            out.extend_from_slice(b"null");
            changed = true;
            i += token_len;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_non_ascii_like_python_ensure_ascii() {
        // python3 -c 'import json; print(json.dumps({"k": "caf\u00e9 \U0001F600 \x7f \x01 \"q\" /"},
        //     separators=(",", ":"), ensure_ascii=True))'
        let v = json!({"k": "café 😀 \u{7f} \u{1} \"q\" /"});
        assert_eq!(
            String::from_utf8(to_python_json(&v)).unwrap(),
            r#"{"k":"caf\u00e9 \ud83d\ude00 \u007f \u0001 \"q\" /"}"#
        );
    }

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
        let Ok(output) = std::process::Command::new("python3")
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
    fn reads_python_non_finite_tokens_as_null() {
        let v: Value =
            from_python_json(br#"{"a":NaN,"b":[Infinity,-Infinity],"s":"NaN Infinity"}"#).unwrap();
        assert_eq!(
            v,
            json!({"a": null, "b": [null, null], "s": "NaN Infinity"})
        );
        assert!(from_python_json::<Value>(b"{nope").is_err());
    }
}
