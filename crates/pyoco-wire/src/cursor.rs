//! The `GET /runs` page cursor (§3.2): base64url without padding of the compact JSON
//! `{"u": <updated_at float>, "r": "<run_id>"}`, naming the last item of the page.
//!
//! Tokens are byte-identical to the ones a Python 0.5.1 gateway issues for the same page, and
//! either gateway decodes the other's. Decoding is as lenient as 0.5.1: padding optional, the
//! standard alphabet (`+`, `/`) accepted too, any JSON object whose `u` is float-convertible
//! (number, numeric string, bool) and that has an `r` (non-strings are `str()`-converted).
//!
//! An empty `cursor` query parameter is not decoded by 0.5.1 (it only switches the response to
//! the vNext shape); callers should do the same and not pass `""` here.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::Value;
use thiserror::Error;

use crate::python::{float_of_json, str_of_json, to_python_json, value_from_python_json};

const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Position after which the next page starts: items with `(updated_at, run_id)` strictly less
/// than this pair (in the descending list order).
#[derive(Debug, Clone, PartialEq)]
pub struct RunsCursor {
    pub updated_at: f64,
    pub run_id: String,
}

/// Why a cursor could not be decoded (gateway: 422 `invalid list query`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CursorError {
    #[error("cursor is not base64url")]
    Base64,
    #[error("cursor does not decode to UTF-8 JSON")]
    Json,
    #[error("cursor JSON is not an object")]
    NotAnObject,
    #[error("cursor lacks the {0:?} field")]
    MissingField(&'static str),
    #[error("cursor field \"u\" is not a number: {0}")]
    InvalidUpdatedAt(String),
}

impl RunsCursor {
    /// Encode as 0.5.1 does: `urlsafe_b64encode(json.dumps({"u": float(u), "r": str(r)},
    /// separators=(",", ":"), ensure_ascii=True)).rstrip("=")`.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut raw = b"{\"u\":".to_vec();
        raw.extend_from_slice(&to_python_json(&self.updated_at));
        raw.extend_from_slice(b",\"r\":");
        raw.extend_from_slice(&to_python_json(&self.run_id));
        raw.push(b'}');
        ENCODER.encode(raw)
    }

    /// Decode a token from either gateway.
    ///
    /// # Errors
    /// [`CursorError`] saying which step failed.
    pub fn decode(token: &str) -> Result<Self, CursorError> {
        let normalised: String = token
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let raw = DECODER
            .decode(normalised.as_bytes())
            .map_err(|_| CursorError::Base64)?;
        let value = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| value_from_python_json(s.as_bytes()).ok())
            .ok_or(CursorError::Json)?;
        let Value::Object(obj) = value else {
            return Err(CursorError::NotAnObject);
        };
        let u = obj.get("u").ok_or(CursorError::MissingField("u"))?;
        let r = obj.get("r").ok_or(CursorError::MissingField("r"))?;
        let updated_at = float_of_json(u).map_err(CursorError::InvalidUpdatedAt)?;
        Ok(RunsCursor {
            updated_at,
            run_id: str_of_json(r),
        })
    }

    /// Whether a list item with sort key `(updated_at, run_id)` comes after this cursor,
    /// i.e. `(updated_at, run_id) < (self.updated_at, self.run_id)` as Python compares tuples.
    #[must_use]
    pub fn admits(&self, updated_at: f64, run_id: &str) -> bool {
        updated_at < self.updated_at
            || (updated_at == self.updated_at && run_id < self.run_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = RunsCursor {
            updated_at: 1712345678.123456,
            run_id: "0f8c2a1e-7d2b-4c1e-9a55-0123456789ab".into(),
        };
        assert_eq!(RunsCursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn encodes_byte_identical_to_python() {
        // python3 -c 'import base64,json; print(base64.urlsafe_b64encode(json.dumps(
        //   {"u": 1712345678.123456, "r": "run-1"}, separators=(",", ":"),
        //   ensure_ascii=True).encode()).decode().rstrip("="))'
        let c = RunsCursor {
            updated_at: 1712345678.123456,
            run_id: "run-1".into(),
        };
        assert_eq!(
            c.encode(),
            "eyJ1IjoxNzEyMzQ1Njc4LjEyMzQ1NiwiciI6InJ1bi0xIn0"
        );
        let whole = RunsCursor {
            updated_at: 5.0,
            run_id: "r".into(),
        };
        // {"u":5.0,"r":"r"}
        assert_eq!(whole.encode(), "eyJ1Ijo1LjAsInIiOiJyIn0");
    }

    #[test]
    fn decodes_python_tokens_with_or_without_padding() {
        let want = RunsCursor {
            updated_at: 1712345678.123456,
            run_id: "run-1".into(),
        };
        let token = "eyJ1IjoxNzEyMzQ1Njc4LjEyMzQ1NiwiciI6InJ1bi0xIn0";
        assert_eq!(RunsCursor::decode(token).unwrap(), want);
        assert_eq!(RunsCursor::decode(&format!("{token}=")).unwrap(), want);
    }

    #[test]
    fn accepts_numeric_string_u_and_non_string_r() {
        // {"r":7,"u":"1.5"}
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"r":7,"u":"1.5"}"#);
        let c = RunsCursor::decode(&token).unwrap();
        assert_eq!(c.updated_at, 1.5);
        assert_eq!(c.run_id, "7");
    }

    #[test]
    fn typed_errors_name_the_failing_step() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        assert_eq!(RunsCursor::decode("!!!"), Err(CursorError::Base64));
        assert_eq!(RunsCursor::decode(&enc("nope")), Err(CursorError::Json));
        assert_eq!(
            RunsCursor::decode(&enc("[1]")),
            Err(CursorError::NotAnObject)
        );
        assert_eq!(
            RunsCursor::decode(&enc(r#"{"r":"x"}"#)),
            Err(CursorError::MissingField("u"))
        );
        assert_eq!(
            RunsCursor::decode(&enc(r#"{"u":1}"#)),
            Err(CursorError::MissingField("r"))
        );
        assert!(matches!(
            RunsCursor::decode(&enc(r#"{"u":"x","r":"a"}"#)),
            Err(CursorError::InvalidUpdatedAt(_))
        ));
    }

    #[test]
    fn admits_items_strictly_before_the_cursor() {
        let c = RunsCursor {
            updated_at: 10.0,
            run_id: "b".into(),
        };
        assert!(c.admits(9.0, "z"));
        assert!(c.admits(10.0, "a"));
        assert!(!c.admits(10.0, "b"));
        assert!(!c.admits(11.0, "a"));
    }
}
