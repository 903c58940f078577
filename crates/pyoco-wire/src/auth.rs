//! API key records (KV `pyoco_auth`, key `api_keys.<key_id>`, §2.6) and the key formats (§9).
//!
//! It also holds the hash 0.5.1 stores: PBKDF2-HMAC-SHA256 of `secret + pepper` (UTF-8) with the
//! record's salt and iterations, 32 bytes, compared in constant time ([`ApiKeyRecord::verifies`]),
//! and the making of a new key ([`new_api_key`]) with 0.5.1's sizes, so a key made by either
//! implementation's admin CLI works on either gateway. The hash is slow on purpose (200000
//! rounds, tens of milliseconds): callers on an async executor run it on a blocking thread.

use std::num::NonZeroU32;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use ring::{
    pbkdf2,
    rand::{SecureRandom, SystemRandom},
};
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
/// Sizes 0.5.1 uses for a new key: 12-byte key id (24 hex chars), 32-byte secret, 16-byte salt.
const KEY_ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;
/// Length of the stored hash (PBKDF2 `dklen`).
const HASH_BYTES: usize = 32;

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

    /// Whether `secret` (the part of a presented key after the first `.`) with `pepper` hashes
    /// to this record's hash, compared in constant time. `false` for a revoked record, and for
    /// a record whose salt or hash is not base64url or whose iterations are 0 (a corrupt
    /// record rejects every key, as in 0.5.1). Slow on purpose: keep it off async executors.
    #[must_use]
    pub fn verifies(&self, secret: &str, pepper: &str) -> bool {
        if self.is_revoked() {
            return false;
        }
        let (Some(salt), Some(expected), Some(iterations)) = (
            decode_b64url(&self.salt_b64),
            decode_b64url(&self.hash_b64),
            NonZeroU32::new(self.iterations),
        ) else {
            return false;
        };
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password(secret, pepper).as_bytes(),
            &expected,
        )
        .is_ok()
    }
}

/// `secret + pepper`, the PBKDF2 password of 0.5.1.
fn password(secret: &str, pepper: &str) -> String {
    let mut password = String::with_capacity(secret.len() + pepper.len());
    password.push_str(secret);
    password.push_str(pepper);
    password
}

/// base64url with or without padding, as Python's `_b64url_decode_nopad` reads it.
fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// A key just made: the plain key (shown to the user once, never stored) and its record.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// `pyoco_<key_id>.<secret>`.
    pub api_key: String,
    /// What goes into the auth bucket under [`ApiKeyRecord::kv_key`].
    pub record: ApiKeyRecord,
}

/// A tenant id outside `^[A-Za-z0-9_-]{1,64}$`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid tenant id {0:?}: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidTenantId(pub String);

/// Make a key for `tenant_id` as 0.5.1's `generate_api_key` does: a random 24-hex-char key id,
/// a random 32-byte secret (base64url, no padding: 43 chars), a random 16-byte salt and the
/// PBKDF2 hash of `secret + pepper` with `iterations` rounds (0.5.1 uses
/// [`DEFAULT_PBKDF2_ITERATIONS`]). Slow on purpose: keep it off async executors.
///
/// # Errors
/// [`InvalidTenantId`] for a tenant id outside the creation rule.
///
/// # Panics
/// If the operating system has no random numbers to give.
pub fn new_api_key(
    tenant_id: &str,
    pepper: &str,
    iterations: NonZeroU32,
    created_at: f64,
) -> Result<NewApiKey, InvalidTenantId> {
    if !is_valid_tenant_id(tenant_id) {
        return Err(InvalidTenantId(tenant_id.to_string()));
    }
    let rng = SystemRandom::new();
    let mut random = [0u8; KEY_ID_BYTES + SECRET_BYTES + SALT_BYTES];
    rng.fill(&mut random)
        .expect("the operating system's random number generator failed");
    let (key_id, rest) = random.split_at(KEY_ID_BYTES);
    let (secret, salt) = rest.split_at(SECRET_BYTES);
    let key_id = hex::encode(key_id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let mut hash = [0u8; HASH_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password(&secret, pepper).as_bytes(),
        &mut hash,
    );
    Ok(NewApiKey {
        api_key: format!("{API_KEY_PREFIX}{key_id}.{secret}"),
        record: ApiKeyRecord {
            key_id,
            tenant_id: tenant_id.to_string(),
            kdf: DEFAULT_KDF.to_string(),
            iterations: iterations.get(),
            salt_b64: URL_SAFE_NO_PAD.encode(salt),
            hash_b64: URL_SAFE_NO_PAD.encode(hash),
            created_at,
            revoked_at: None,
        },
    })
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

    /// Made by pyoco-server 0.5.1: `generate_api_key(tenant_id="acme", now=1712345678.5,
    /// iterations=1000, pepper="pep")`.
    const PY_KEY: &str =
        "pyoco_8377ae60958f88ab18e68790.sQs-IgiYKbQ0prgzgQZFiKrnSGUukZlLuuJ6hbjAnFo";
    const PY_KEY_RECORD: &str = r#"{"key_id":"8377ae60958f88ab18e68790","tenant_id":"acme","kdf":"pbkdf2_hmac_sha256","iterations":1000,"salt_b64":"RIih0GG-pgQTX1hpiNgupA","hash_b64":"D3eHFX6wXbdLGr_saTFGD95h2jaYcUUw0PwdjFGR4Pg","created_at":1712345678.5,"revoked_at":null}"#;

    #[test]
    fn a_new_key_verifies_with_its_pepper_only_and_looks_like_python_s() {
        let iterations = NonZeroU32::new(1000).unwrap();
        let made = new_api_key("acme", "pep", iterations, 1.5).unwrap();
        let (key_id, secret) = parse_api_key(&made.api_key).unwrap();
        assert_eq!(key_id, made.record.key_id);
        assert_eq!(key_id.len(), 24);
        assert!(key_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(secret.len(), 43);
        assert_eq!(made.record.salt_b64.len(), 22);
        assert_eq!(made.record.hash_b64.len(), 43);
        assert_eq!(made.record.iterations, 1000);
        assert!(made.record.verifies(secret, "pep"));
        assert!(!made.record.verifies(secret, ""));
        let wrong = format!(
            "{}{}",
            if secret.starts_with('x') { 'y' } else { 'x' },
            &secret[1..]
        );
        assert!(!made.record.verifies(&wrong, "pep"));
        let revoked = ApiKeyRecord {
            revoked_at: Some(2.0),
            ..made.record.clone()
        };
        assert!(!revoked.verifies(secret, "pep"));
        let other = new_api_key("acme", "pep", iterations, 1.5).unwrap();
        assert_ne!(other.api_key, made.api_key);
        assert_eq!(
            new_api_key("no spaces", "", iterations, 1.5).unwrap_err(),
            InvalidTenantId("no spaces".into())
        );
    }

    #[test]
    fn a_python_made_record_verifies() {
        // Record written by 0.5.1 for PY_KEY (pepper "pep", 1000 iterations).
        let record = ApiKeyRecord::from_json(PY_KEY_RECORD.as_bytes()).unwrap();
        let (_, secret) = parse_api_key(PY_KEY).unwrap();
        assert!(record.verifies(secret, "pep"));
        assert!(!record.verifies(secret, "other"));
        let corrupt = ApiKeyRecord {
            salt_b64: "*".into(),
            ..record.clone()
        };
        assert!(!corrupt.verifies(secret, "pep"));
        let no_rounds = ApiKeyRecord {
            iterations: 0,
            ..record
        };
        assert!(!no_rounds.verifies(secret, "pep"));
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
