//! Wheel registry records: the wheel-history record (KV `pyoco_wheel_history`, §2.5), the
//! worker's local manifest (`.installed.json`, §2.8), the wheel filename rule (§7) and the
//! `x-pyoco-wheel-tags` object header.
//!
//! Wheel tags keep the 0.5.1 rule (`^[A-Za-z0-9_-]+$`, no length bound) rather than
//! [`crate::validate_tag`], so a wheel uploaded to a Python gateway stays readable here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::python::{to_python_json, value_from_python_json};

/// Name of the object-store header holding a wheel's comma-joined tags (plain string value).
pub const WHEEL_TAGS_HEADER: &str = "x-pyoco-wheel-tags";
/// Name of the object-store header holding the lower-case hex sha256 of the wheel.
pub const WHEEL_SHA256_HEADER: &str = "sha256";

/// `^[A-Za-z0-9._+-]+\.whl$`: the names the registry stores, lists and syncs.
#[must_use]
pub fn is_valid_wheel_name(name: &str) -> bool {
    match name.strip_suffix(".whl") {
        Some(stem) => {
            !stem.is_empty()
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        }
        None => false,
    }
}

fn is_valid_wheel_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A wheel tag outside `^[A-Za-z0-9_-]+$` (gateway: 422 `invalid wheel tags`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid wheel tag {tag:?}: only letters, digits, '_' and '-' are allowed")]
pub struct WheelTagError {
    pub tag: String,
}

/// Parse the upload form's `tags` (and the header, gateway side) like 0.5.1: split on `,`,
/// trim, drop empties, validate each, drop duplicates keeping the first.
///
/// # Errors
/// The first invalid tag.
pub fn parse_wheel_tags_csv(raw: &str) -> Result<Vec<String>, WheelTagError> {
    let mut out: Vec<String> = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if !is_valid_wheel_tag(item) {
            return Err(WheelTagError {
                tag: item.to_string(),
            });
        }
        if !out.iter().any(|t| t == item) {
            out.push(item.to_string());
        }
    }
    Ok(out)
}

/// The worker's reading of the tags header (0.5.1 `_parse_wheel_tags_csv` in the worker):
/// invalid items are dropped one by one; result sorted and de-duplicated. An empty result
/// means "for every worker".
#[must_use]
pub fn wheel_tags_lenient(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| is_valid_wheel_tag(t))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `sha256` header if it is 64 hex characters (trimmed, lower-cased), else `None`.
#[must_use]
pub fn sha256_from_header(raw: &str) -> Option<String> {
    let v = raw.trim().to_ascii_lowercase();
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
}

/// `upload` or `delete` (0.5.1), or `install_failed` (ours: a worker's pip refused the wheel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WheelHistoryAction {
    Upload,
    Delete,
    InstallFailed,
}

impl WheelHistoryAction {
    /// The wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WheelHistoryAction::Upload => "upload",
            WheelHistoryAction::Delete => "delete",
            WheelHistoryAction::InstallFailed => "install_failed",
        }
    }

    /// Case-insensitive parse (the `action` query of `GET /wheels/history`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "upload" => Some(WheelHistoryAction::Upload),
            "delete" => Some(WheelHistoryAction::Delete),
            "install_failed" => Some(WheelHistoryAction::InstallFailed),
            _ => None,
        }
    }
}

/// Who made the change (nulls when auth is off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelHistoryActor {
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub api_key_id: Option<String>,
}

/// Where the request came from (each `null` when missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelHistorySource {
    #[serde(default)]
    pub remote_addr: Option<String>,
    #[serde(default)]
    pub x_forwarded_for: Option<String>,
    #[serde(default)]
    pub x_real_ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
}

/// One wheel-history event (§2.5), in 0.5.1's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WheelHistoryRecord {
    /// UUID4 hex.
    pub event_id: String,
    pub occurred_at: f64,
    pub action: WheelHistoryAction,
    pub wheel_name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub sha256_hex: Option<String>,
    /// The upload's `replace` form value; null for deletes.
    #[serde(default)]
    pub replace: Option<bool>,
    #[serde(default)]
    pub actor: WheelHistoryActor,
    #[serde(default)]
    pub source: WheelHistorySource,
    /// `install_failed` only (ours): the worker whose pip failed, and pip's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WheelHistoryRecord {
    /// Its KV key, `f"{int(occurred_at*1000):013d}_{event_id}"` (see [`wheel_history_key`]).
    #[must_use]
    pub fn key(&self) -> String {
        wheel_history_key(self.occurred_at, &self.event_id)
    }

    /// The record as Python writes it (compact, ASCII-escaped).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }
}

/// Wheel-history KV key: epoch milliseconds (truncated), zero-padded to at least 13 digits,
/// `_`, event id. Lexicographic order ≈ chronological order.
#[must_use]
pub fn wheel_history_key(occurred_at: f64, event_id: &str) -> String {
    format!("{:013}_{event_id}", (occurred_at * 1000.0) as i64)
}

/// One entry of the worker's `.installed.json` (§2.8), keyed by wheel filename.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WheelManifestEntry {
    /// Object-store NUID of the installed object (a new one on every upload).
    pub nuid: String,
    pub package_name: String,
    pub package_version: String,
    pub size_bytes: u64,
    pub sha256_hex: String,
    /// Sorted wheel tags.
    #[serde(default)]
    pub tags: Vec<String>,
    pub installed_at: f64,
}

/// The worker's local wheel manifest: wheel filename → entry.
pub type WheelManifest = BTreeMap<String, WheelManifestEntry>;

/// Read a manifest like 0.5.1: anything unreadable (not JSON, not an object) is an empty
/// manifest; entries that do not parse are dropped.
#[must_use]
pub fn wheel_manifest_from_json(bytes: &[u8]) -> WheelManifest {
    let Ok(Value::Object(map)) = value_from_python_json(bytes) else {
        return WheelManifest::new();
    };
    map.into_iter()
        .filter_map(|(name, entry)| {
            serde_json::from_value::<WheelManifestEntry>(entry)
                .ok()
                .map(|e| (name, e))
        })
        .collect()
}

/// The manifest as Python writes it (compact, ASCII-escaped).
#[must_use]
pub fn wheel_manifest_to_json(manifest: &WheelManifest) -> Vec<u8> {
    to_python_json(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names_follow_the_registry_regex() {
        assert!(is_valid_wheel_name("demo_pkg-0.1.0-py3-none-any.whl"));
        assert!(is_valid_wheel_name("a+b-1.0-py3-none-any.whl"));
        assert!(!is_valid_wheel_name(".whl"));
        assert!(!is_valid_wheel_name("demo.tar.gz"));
        assert!(!is_valid_wheel_name("../x.whl"));
        assert!(!is_valid_wheel_name("a b.whl"));
    }

    #[test]
    fn upload_tags_are_strict_and_deduplicated() {
        assert_eq!(
            parse_wheel_tags_csv(" cpu,linux,,cpu ").unwrap(),
            vec!["cpu".to_string(), "linux".to_string()]
        );
        assert_eq!(
            parse_wheel_tags_csv("cpu,a.b").unwrap_err(),
            WheelTagError { tag: "a.b".into() }
        );
    }

    #[test]
    fn worker_reads_tags_header_leniently() {
        assert_eq!(
            wheel_tags_lenient("linux, cpu,bad tag,cpu"),
            vec!["cpu".to_string(), "linux".to_string()]
        );
        // What an async-nats list-valued header looks like to a Python reader.
        assert_eq!(wheel_tags_lenient("['cpu,linux']"), Vec::<String>::new());
    }

    #[test]
    fn sha256_header_must_be_64_hex() {
        let hex = "AB".repeat(32);
        assert_eq!(sha256_from_header(&hex), Some("ab".repeat(32)));
        assert_eq!(sha256_from_header("abc"), None);
    }

    #[test]
    fn history_key_is_zero_padded_epoch_millis() {
        assert_eq!(
            wheel_history_key(1712345678.9019, "9f0c"),
            "1712345678901_9f0c"
        );
        assert_eq!(wheel_history_key(1.5, "e"), "0000000001500_e");
    }

    #[test]
    fn history_record_round_trips_in_python_order() {
        let raw = r#"{"event_id":"9f0c","occurred_at":1712345678.901,"action":"upload","wheel_name":"demo-0.1.0-py3-none-any.whl","tags":["cpu"],"size_bytes":123,"sha256_hex":"ab","replace":true,"actor":{"tenant_id":null,"api_key_id":null},"source":{"remote_addr":"127.0.0.1","x_forwarded_for":null,"x_real_ip":null,"user_agent":"curl/8","host":"localhost:8000","scheme":"http"}}"#;
        let rec: WheelHistoryRecord = serde_json::from_str(raw).unwrap();
        assert_eq!(rec.action, WheelHistoryAction::Upload);
        assert_eq!(String::from_utf8(rec.to_json()).unwrap(), raw);
        assert_eq!(rec.key(), "1712345678901_9f0c");
    }

    #[test]
    fn manifest_reads_leniently_and_round_trips() {
        let raw = br#"{"demo-0.1.0-py3-none-any.whl":{"nuid":"N1","package_name":"demo","package_version":"0.1.0","size_bytes":10,"sha256_hex":"ab","tags":["cpu"],"installed_at":5.0},"broken.whl":7}"#;
        let manifest = wheel_manifest_from_json(raw);
        assert_eq!(manifest.len(), 1);
        assert_eq!(manifest["demo-0.1.0-py3-none-any.whl"].nuid, "N1");
        let again = wheel_manifest_to_json(&manifest);
        assert_eq!(wheel_manifest_from_json(&again), manifest);
        assert!(wheel_manifest_from_json(b"not json").is_empty());
        assert!(wheel_manifest_from_json(b"[1]").is_empty());
    }
}
