//! Python's semantics, where pyoco-server 0.5.1 applies them to wire values or prints them: one
//! copy for the whole workspace.
//!
//! The Python components coerce values with `float(x)`, `str(x)`, `bool(x)`, print them with
//! `repr(x)` and `json.dumps`, and stamp records with `time.time()`. Wherever such a coercion
//! decides what a record means, or such a text reaches a client byte for byte, the Rust side
//! calls the function here, so the gateway, the worker, the CLI and this crate's readers agree
//! with Python and with each other:
//!
//! | Python                                                       | here                          |
//! |--------------------------------------------------------------|-------------------------------|
//! | `repr(x)`, `str(x)` of what `json.loads` returns             | [`repr_json`], [`str_of_json`] |
//! | `repr(s)` of a `str`, `repr(f)` of a `float`                 | [`repr_str`], [`float_repr`]  |
//! | `json.dumps(x, separators=(",", ":"), ensure_ascii=True)`    | [`to_python_json`], [`PythonFormatter`] |
//! | `json.dumps(x, ensure_ascii=True)` (default separators)      | [`dumps`], [`PythonDefaultFormatter`] |
//! | `json.loads(text)` (with `NaN`/`Infinity` tokens)            | [`from_python_json`]          |
//! | `bool(x)`, `x or default`                                    | [`truthy`]                    |
//! | `s.strip()`                                                  | [`py_strip`], [`is_py_space`] |
//! | `float(x)`, `float(x or 0.0)`                                | [`float_of_json`], [`float_of_str`], [`float_or_zero`] |
//! | a `float` put into a JSON value                              | [`float_value`]               |
//! | `time.time()`                                                | [`time`]                      |
//!
//! Not here: FastAPI/pydantic's *lax* parsing of query and form values (pydantic-core accepts
//! `1_.5`, trims only Unicode whitespace, …), which is the gateway's own (`pydantic.rs` there),
//! and the settings parser's `float()`/`int()` for `PYOCO_*` values, which only needs finite
//! numbers (`pyoco-config`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod json;

pub use json::{
    dumps, from_python_json, to_python_json, try_to_python_json, value_from_python_json,
    PythonDefaultFormatter, PythonFormatter,
};

/// Python's `time.time()`: now, as seconds since the Unix epoch (the contract's timestamps).
/// A clock set before 1970 gives a negative number, as in Python.
#[must_use]
pub fn time() -> f64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A Python `float` put into a JSON value: the number, or `null` when it is not finite (which
/// is what [`to_python_json`] writes for it; Python's `json.dumps` writes `NaN`/`Infinity`).
#[must_use]
pub fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Python `float(x)` applied to a JSON value.
///
/// Numbers convert; `true`/`false` are `1.0`/`0.0`; strings follow Python's `float(str)` rules
/// (surrounding whitespace, `_` between digits, `inf`/`nan` in any case). Any other value is the
/// `TypeError` Python raises, returned as its message.
pub fn float_of_json(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => float_of_str(s),
        Value::Null => {
            Err("float() argument must be a string or a real number, not 'NoneType'".to_string())
        }
        Value::Array(_) => {
            Err("float() argument must be a string or a real number, not 'list'".to_string())
        }
        Value::Object(_) => {
            Err("float() argument must be a string or a real number, not 'dict'".to_string())
        }
    }
}

/// `float(x or 0.0)`: falsy values (null, false, 0, "", [], {}) give `0.0`.
pub fn float_or_zero(value: Option<&Value>) -> Result<f64, String> {
    match value {
        Some(v) if truthy(v) => float_of_json(v),
        _ => Ok(0.0),
    }
}

/// Python `float(s)` for a string, with the exact `ValueError` message on failure.
pub fn float_of_str(s: &str) -> Result<f64, String> {
    let err = || format!("could not convert string to float: {}", repr_str(s));
    let trimmed = s.trim_matches(is_py_space);
    if trimmed.is_empty() {
        return Err(err());
    }
    let cleaned = strip_digit_underscores(trimmed).ok_or_else(err)?;
    let lower = cleaned.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if lower.len() - unsigned.len() > 1 {
        return Err(err());
    }
    // Rust accepts a few spellings Python does not ("infinity" is fine in both, but Rust's
    // parser is stricter about nothing we rely on); the non-numeric words are checked first.
    match unsigned {
        "inf" | "infinity" => {
            return Ok(if lower.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" => return Ok(f64::NAN),
        _ => {}
    }
    if !unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'))
    {
        return Err(err());
    }
    lower.parse::<f64>().map_err(|_| err())
}

/// Python allows one `_` between two digits in numeric literals passed to `float()`/`int()`.
/// Returns the string without them, or `None` when an underscore is misplaced.
pub(crate) fn strip_digit_underscores(s: &str) -> Option<String> {
    if !s.contains('_') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let before = i > 0 && bytes[i - 1].is_ascii_digit();
            let after = bytes.get(i + 1).is_some_and(|c| c.is_ascii_digit());
            if !(before && after) {
                return None;
            }
        } else {
            out.push(b as char);
        }
    }
    Some(out)
}

/// Characters Python's `str.strip()` removes (Unicode whitespace plus the ASCII
/// information separators U+001C..U+001F, which Python counts as whitespace).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `str(x)` of a JSON value as `json.loads` would have produced it.
pub fn str_of_json(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => repr_json(other),
    }
}

/// Python `repr(x)` of a JSON value as `json.loads` would have produced it.
pub fn repr_json(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                float_repr(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => repr_str(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(repr_json).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), repr_json(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python `repr(float)`: shortest round-trip digits, fixed notation when the decimal exponent is
/// in `-4 < decpt <= 16`, otherwise `d.ddde±XX`; `inf`, `-inf`, `nan` for non-finite values.
pub fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if -4 < decpt && decpt <= 16 {
        let ndigits = digits.len() as i32;
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= ndigits {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - ndigits) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", e.unsigned_abs()));
    }
    out
}

/// Python `repr(str)`: single quotes unless the text holds `'` and no `"`; backslash escapes for
/// the quote, `\\`, `\t`, `\n`, `\r` and non-printable characters.
///
/// "Printable" follows Python for ASCII and Latin-1 and approximates it elsewhere (separators,
/// format characters, private use); it only affects log/error texts.
pub fn repr_str(s: &str) -> String {
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
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn is_printable(c: char) -> bool {
    let n = c as u32;
    if c == ' ' {
        return true;
    }
    !(n < 0x20
        || (0x7f..=0xa0).contains(&n)
        || n == 0xad
        || n == 0x1680
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x2064).contains(&n)
        || n == 0x3000
        || n == 0xfeff
        || (0xfff9..=0xfffb).contains(&n)
        || (0xe000..=0xf8ff).contains(&n)
        || n >= 0xf0000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python_layout() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (5.0, "5.0"),
            (1.5, "1.5"),
            (1712345678.123456, "1712345678.123456"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e300, "1e+300"),
            (0.1, "0.1"),
        ];
        for (v, want) in cases {
            assert_eq!(float_repr(v), want, "repr({v:e})");
        }
    }

    #[test]
    fn time_is_now_in_unix_seconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let now = time();
        assert!(now >= before && now < before + 5.0, "{before} {now}");
        assert!(now > 1.6e9, "{now}");
    }

    #[test]
    fn float_value_is_null_when_not_finite() {
        assert_eq!(float_value(1712345678.25), json!(1712345678.25));
        assert_eq!(float_value(f64::NAN), Value::Null);
        assert_eq!(float_value(f64::INFINITY), Value::Null);
    }

    #[test]
    fn float_of_str_follows_python() {
        assert_eq!(float_of_str("1.5"), Ok(1.5));
        assert_eq!(float_of_str("  2 \n"), Ok(2.0));
        assert_eq!(float_of_str("1_000.5"), Ok(1000.5));
        assert_eq!(float_of_str("1e3"), Ok(1000.0));
        assert_eq!(float_of_str("-Infinity"), Ok(f64::NEG_INFINITY));
        assert!(float_of_str("nan").unwrap().is_nan());
        assert_eq!(
            float_of_str("abc"),
            Err("could not convert string to float: 'abc'".to_string())
        );
        assert!(float_of_str("1__0").is_err());
        assert!(float_of_str("_1").is_err());
        assert!(float_of_str("0x10").is_err());
        assert!(float_of_str("").is_err());
        assert!(float_of_str("+-1").is_err());
    }

    #[test]
    fn repr_and_truthiness_follow_python() {
        assert_eq!(repr_str("a"), "'a'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a'\"b"), "'a\\'\"b'");
        assert_eq!(repr_str("tab\there\u{7}"), "'tab\\there\\x07'");
        assert_eq!(repr_str("日本"), "'日本'");
        assert_eq!(
            repr_json(&json!([1, "x", null, true, 1.5])),
            "[1, 'x', None, True, 1.5]"
        );
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!("false")));
        assert!(!truthy(&json!({})));
    }

    #[test]
    fn str_of_json_is_pythons_str() {
        assert_eq!(str_of_json(&json!("x")), "x");
        assert_eq!(str_of_json(&json!(1764000000.5)), "1764000000.5");
        assert_eq!(str_of_json(&json!(5.0)), "5.0");
        assert_eq!(str_of_json(&json!(7)), "7");
        assert_eq!(str_of_json(&json!(null)), "None");
        assert_eq!(str_of_json(&json!(true)), "True");
        assert_eq!(
            str_of_json(&json!(["a", 1, {"k": "it's"}])),
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
    fn strip_removes_what_python_strips() {
        assert_eq!(py_strip(" \t flow \u{1f}\n"), "flow");
        assert!(!truthy(&Value::from(0.0)));
        assert!(truthy(&Value::from("x")));
        assert!(!truthy(&json!({})));
    }
}
