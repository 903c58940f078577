//! [`RunKey`]: a run's KV key (or snapshot `run_id`) as the index holds it. The gateway names
//! runs by UUIDs in their canonical text form; those are kept inline as their 16 bytes instead
//! of a shared string (a 36-byte string costs an allocation of 64 bytes per run), anything else
//! as a shared string.

use std::{cmp::Ordering, fmt, sync::Arc};

/// Length of a canonical UUID: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const UUID_LEN: usize = 36;

/// Where the hyphens of a canonical UUID are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// A string that, when it is a canonical UUID (lowercase hex, hyphenated), is held as its 16
/// bytes. Every string has exactly one representation, so equality and hashing are those of the
/// string, and [`Ord`] is the string's byte order: a canonical UUID's text sorts like its bytes
/// (hex digits in ASCII rise with their value, and the hyphens sit at the same places).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum RunKey {
    Uuid([u8; 16]),
    Text(Arc<str>),
}

impl RunKey {
    pub(super) fn new(text: &str) -> RunKey {
        match parse_uuid(text) {
            Some(bytes) => RunKey::Uuid(bytes),
            None => RunKey::Text(Arc::from(text)),
        }
    }

    /// The canonical UUID this key holds, if it is one.
    pub(super) fn uuid(&self) -> Option<&[u8; 16]> {
        match self {
            RunKey::Uuid(bytes) => Some(bytes),
            RunKey::Text(_) => None,
        }
    }

    /// Call `f` with the key as a string (a UUID is written on the stack).
    pub(super) fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            RunKey::Uuid(bytes) => {
                let text = uuid_text(bytes);
                // The buffer holds hex digits and hyphens only.
                f(std::str::from_utf8(&text).unwrap_or_default())
            }
            RunKey::Text(text) => f(text),
        }
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

impl fmt::Debug for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| fmt::Debug::fmt(s, f))
    }
}

impl PartialOrd for RunKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RunKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (RunKey::Uuid(a), RunKey::Uuid(b)) => a.cmp(b),
            (RunKey::Text(a), RunKey::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (RunKey::Uuid(a), RunKey::Text(b)) => uuid_text(a)[..].cmp(b.as_bytes()),
            (RunKey::Text(a), RunKey::Uuid(b)) => a.as_bytes().cmp(&uuid_text(b)[..]),
        }
    }
}

/// The 16 bytes of `text` when it is a canonical UUID (36 characters, lowercase hex, hyphens
/// at 8, 13, 18 and 23); any other string (uppercase, braces, no hyphens) is not.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != UUID_LEN {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in text.iter().enumerate() {
        if HYPHENS.contains(&i) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let value = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bytes[nibbles / 2] |= value << if nibbles % 2 == 0 { 4 } else { 0 };
        nibbles += 1;
    }
    Some(bytes)
}

/// The canonical text of a UUID.
fn uuid_text(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; UUID_LEN];
    let mut at = 0;
    for byte in bytes {
        if HYPHENS.contains(&at) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_uuids_are_inline_and_round_trip() {
        let id = "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b";
        let key = RunKey::new(id);
        assert!(key.uuid().is_some());
        assert_eq!(key.to_string(), id);
        assert_eq!(format!("{key:?}"), format!("{id:?}"));
        for id in [uuid::Uuid::new_v4(), uuid::Uuid::nil(), uuid::Uuid::max()] {
            let text = id.to_string();
            let key = RunKey::new(&text);
            assert_eq!(key.uuid(), Some(id.as_bytes()));
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn other_strings_stay_text() {
        for id in [
            "",
            "a",
            "run-1",
            "0F3C2A9E-5B7D-4E1F-8A2B-9C0D1E2F3A4B",
            "{0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b}",
            "0f3c2a9e5b7d4e1f8a2b9c0d1e2f3a4b",
            "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4g",
            "0f3c2a9e-5b7d-4e1f-8a2b_9c0d1e2f3a4b",
            "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4",
            "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4bb",
            "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3aé",
        ] {
            let key = RunKey::new(id);
            assert!(key.uuid().is_none(), "{id}");
            assert_eq!(key.to_string(), id);
        }
    }

    #[test]
    fn equal_strings_make_equal_keys() {
        let id = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
        assert_eq!(RunKey::new(id), RunKey::new(id));
        assert_ne!(RunKey::new(id), RunKey::new("7d444840"));
    }

    /// Strings that are canonical UUIDs or close to one (a prefix, a longer string, another
    /// character at one place), so the mixed comparisons are exercised.
    fn near_uuid() -> impl Strategy<Value = String> {
        let uuid = any::<[u8; 16]>().prop_map(|b| uuid::Uuid::from_bytes(b).to_string());
        prop_oneof![
            uuid.clone(),
            (uuid.clone(), 0..36usize).prop_map(|(u, n)| u[..n].to_string()),
            (uuid.clone(), "[-0-9a-zA-Z~]{0,3}").prop_map(|(u, tail)| u + &tail),
            (uuid, 0..36usize, "[-0-9a-zA-Z~]").prop_map(|(u, at, c)| {
                let mut s = u.into_bytes();
                s[at] = c.as_bytes()[0];
                String::from_utf8(s).unwrap()
            }),
            "[-0-9a-f]{0,40}",
            ".{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn keys_order_like_their_strings(a in near_uuid(), b in near_uuid()) {
            let (ka, kb) = (RunKey::new(&a), RunKey::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(ka.to_string(), a);
        }
    }
}
