//! Query and body values parsed the way FastAPI/pydantic v2 (lax mode) parses them, so our
//! 422 answers accept and reject exactly what pyoco-server 0.5.1's did. One copy for every
//! route.

/// pydantic refuses to parse longer integer strings (`int_parsing_size`).
const MAX_INT_DIGITS: usize = 4300;

/// pydantic-core's float from a string: Rust's `f64` syntax (so `inf`, `nan`, `1e3`, `.5`)
/// on the trimmed text, else on the untrimmed text with single `_` between characters removed.
pub(crate) fn float(text: &str) -> Option<f64> {
    text.trim()
        .parse()
        .ok()
        .or_else(|| strip_underscores(text)?.parse().ok())
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IntError {
    Invalid,
    TooLong,
}

/// pydantic-core's int from a string: trimmed; an optional sign and digits, `_` allowed
/// between digits; a fraction of zeros only (`5.00`) is accepted. Values beyond `i128`
/// saturate (they only ever fail the bounds).
pub(crate) fn int(text: &str) -> Result<i128, IntError> {
    let text = text.trim();
    if text.len() > MAX_INT_DIGITS {
        return Err(IntError::TooLong);
    }
    let whole = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') => {
            whole
        }
        Some(_) => return Err(IntError::Invalid),
        None => text,
    };
    parse_int(whole)
        .or_else(|| parse_int(&strip_underscores(whole)?))
        .ok_or(IntError::Invalid)
}

fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i128>().unwrap_or(i128::MAX);
    Some(if negative { -magnitude } else { magnitude })
}

/// pydantic-core's underscore rule: none leading, trailing or doubled; the rest removed.
fn strip_underscores(text: &str) -> Option<String> {
    if text.contains("__") || text.starts_with('_') || text.ends_with('_') {
        return None;
    }
    Some(text.replace('_', ""))
}

/// pydantic's lax `bool` from a string: exactly one of these words, any case, no spaces.
pub(crate) fn boolean(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
        "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// [`int`] when the caller does not distinguish "too long" from "invalid".
pub(crate) fn int_opt(text: &str) -> Option<i128> {
    int(text).ok()
}
