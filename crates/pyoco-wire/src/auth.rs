//! API key records (KV `pyoco_auth`, key `api_keys.<key_id>`, §2.6) and the key formats (§9).
//!
//! Hashing (PBKDF2-HMAC-SHA256, 200000 iterations, 32 bytes, pepper appended to the secret) is
//! not done here; this module only fixes the stored shape and the string rules.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::python::{float_or_zero, str_of_json, to_python_json, truthy, value_from_python_json};

/// The only KDF 0.5.1 writes (readers do not check it).
pub const DEFAULT_KDF: &str = "pbkdf2_hmac_sha256";
/// PBKDF2 iterations written by 0.5.1, and the reader default.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 200_000;
/// Prefix of every plain API key.
pub const API_KEY_PREFIX: &str = "pyoco_";

/// A stored API key (the plain secret is never stored), in 0.5.1's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant_id: String,
    pub kdf: String,
    pub iterations: u32,
    /// base64url without padding of the 16-byte salt.
    pub salt_b64: String,
    /// base64url without padding of the 32-byte PBKDF2 output.
    pub hash_b64: String,
    pub created_at: f64,
    /// Set ⇒ the key is rejected.
    pub revoked_at: Option<f64>,
}

/// A stored API key record that cannot be used (gateway: 403 `invalid api key`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiKeyRecordError {
    #[error("api key record is not JSON")]
    NotJson,
    #[error("api key record is not a JSON object")]
    NotAnObject,
    #[error("api key record lacks {0:?}")]
    MissingField(&'static str),
    #[error("api key record field {0:?} has an unusable value")]
    InvalidField(&'static str),
}

impl ApiKeyRecord {
    /// KV key of a key id: `api_keys.<key_id>`.
    #[must_use]
    pub fn kv_key(key_id: &str) -> String {
        format!("api_keys.{key_id}")
    }

    /// Whether the key has been revoked.
    #[must_use]
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Read a record like 0.5.1 `ApiKeyRecord.from_json_bytes`: `key_id`, `tenant_id`,
    /// `salt_b64`, `hash_b64` required (`str()`-converted); `kdf` defaults to
    /// `pbkdf2_hmac_sha256`, `iterations` to 200000, `created_at` to 0; `revoked_at` float or
    /// null.
    ///
    /// # Errors
    /// [`ApiKeyRecordError`] when 0.5.1 would fail to read it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ApiKeyRecordError> {
        let value = value_from_python_json(bytes).map_err(|_| ApiKeyRecordError::NotJson)?;
        let Value::Object(obj) = value else {
            return Err(ApiKeyRecordError::NotAnObject);
        };
        let required = |k: &'static str| -> Result<String, ApiKeyRecordError> {
            obj.get(k)
                .map(str_of_json)
                .ok_or(ApiKeyRecordError::MissingField(k))
        };
        let kdf = match obj.get("kdf") {
            Some(v) if truthy(v) => str_of_json(v),
            _ => DEFAULT_KDF.to_string(),
        };
        let iterations = match obj.get("iterations") {
            Some(v) if truthy(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64))
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(ApiKeyRecordError::InvalidField("iterations"))?,
            _ => DEFAULT_PBKDF2_ITERATIONS,
        };
        let created_at = float_or_zero(obj.get("created_at"))
            .map_err(|_| ApiKeyRecordError::InvalidField("created_at"))?;
        let revoked_at = match obj.get("revoked_at") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                crate::python::float_of_json(v)
                    .map_err(|_| ApiKeyRecordError::InvalidField("revoked_at"))?,
            ),
        };
        Ok(ApiKeyRecord {
            key_id: required("key_id")?,
            tenant_id: required("tenant_id")?,
            kdf,
            iterations,
            salt_b64: required("salt_b64")?,
            hash_b64: required("hash_b64")?,
            created_at,
            revoked_at,
        })
    }

    /// The record as Python writes it (compact, ASCII-escaped).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }
}

fn is_token(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^[A-Za-z0-9_-]{1,64}$`, the tenant id rule at key creation.
#[must_use]
pub fn is_valid_tenant_id(tenant_id: &str) -> bool {
    is_token(tenant_id, 1, 64)
}

/// Why a presented API key is malformed (gateway: 401 for `Missing`, 403 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ApiKeyFormatError {
    #[error("api key is required")]
    Missing,
    #[error("invalid api key format")]
    InvalidFormat,
}

/// Split a plain key `pyoco_<key_id>.<secret>` into `(key_id, secret)` with the 0.5.1 rules:
/// prefix `pyoco_`; split at the first `.`; key id `^[A-Za-z0-9_-]{8,64}$`; secret
/// `^[A-Za-z0-9_-]{16,256}$`.
///
/// # Errors
/// [`ApiKeyFormatError`].
pub fn parse_api_key(api_key: &str) -> Result<(&str, &str), ApiKeyFormatError> {
    if api_key.is_empty() {
        return Err(ApiKeyFormatError::Missing);
    }
    let rest = api_key
        .strip_prefix(API_KEY_PREFIX)
        .ok_or(ApiKeyFormatError::InvalidFormat)?;
    let (key_id, secret) = rest
        .split_once('.')
        .ok_or(ApiKeyFormatError::InvalidFormat)?;
    if !is_token(key_id, 8, 64) || !is_token(secret, 16, 256) {
        return Err(ApiKeyFormatError::InvalidFormat);
    }
    Ok((key_id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY_RECORD: &str = r#"{"key_id":"0123456789abcdef01234567","tenant_id":"acme","kdf":"pbkdf2_hmac_sha256","iterations":200000,"salt_b64":"c2FsdHNhbHRzYWx0c2FsdA","hash_b64":"aGFzaA","created_at":1712345678.5,"revoked_at":null}"#;

    #[test]
    fn python_record_round_trips_byte_exact() {
        let rec = ApiKeyRecord::from_json(PY_RECORD.as_bytes()).unwrap();
        assert!(!rec.is_revoked());
        assert_eq!(String::from_utf8(rec.to_json()).unwrap(), PY_RECORD);
        assert_eq!(
            ApiKeyRecord::kv_key(&rec.key_id),
            "api_keys.0123456789abcdef01234567"
        );
    }

    #[test]
    fn reader_defaults_kdf_and_iterations() {
        let rec = ApiKeyRecord::from_json(
            br#"{"key_id":"k","tenant_id":"t","salt_b64":"s","hash_b64":"h","revoked_at":5}"#,
        )
        .unwrap();
        assert_eq!(rec.kdf, DEFAULT_KDF);
        assert_eq!(rec.iterations, 200_000);
        assert_eq!(rec.created_at, 0.0);
        assert!(rec.is_revoked());
        assert_eq!(
            ApiKeyRecord::from_json(br#"{"key_id":"k"}"#),
            Err(ApiKeyRecordError::MissingField("tenant_id"))
        );
    }

    #[test]
    fn plain_keys_follow_the_format_rules() {
        let secret = "A".repeat(43);
        let key = format!("pyoco_0123456789abcdef01234567.{secret}");
        assert_eq!(
            parse_api_key(&key),
            Ok(("0123456789abcdef01234567", secret.as_str()))
        );
        assert_eq!(parse_api_key(""), Err(ApiKeyFormatError::Missing));
        for bad in [
            "nope_0123456789.AAAAAAAAAAAAAAAAAAAA",
            "pyoco_0123456789",
            "pyoco_short.AAAAAAAAAAAAAAAAAAAA",
            "pyoco_0123456789.short",
            "pyoco_0123456789.AAAAAAAAAAAAAAAA.AA",
        ] {
            assert_eq!(
                parse_api_key(bad),
                Err(ApiKeyFormatError::InvalidFormat),
                "{bad}"
            );
        }
        assert!(is_valid_tenant_id("acme_1-x"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id(&"x".repeat(65)));
    }
}
