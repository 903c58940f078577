//! Routing tags: one NATS subject token each.
//!
//! A tag routes a job (`pyoco.work.<tag>`), names the per-tag durable consumer
//! (`pyoco_workers_<tag>`) and the DLQ subject (`pyoco.dlq.<tag>`). 0.5.1 checks tags only
//! partly: the gateway applies `^[A-Za-z0-9_-]+$` to the request tag, the worker rejects only
//! `.` (§14 item 22), so a worker tag with `*`, `>` or a space produces an invalid subject or
//! consumer name at startup. We apply one rule everywhere: [`validate_tag`].
//!
//! The bound [`MAX_TAG_LEN`] (64) is ours: it matches the tenant-id and key-id bounds of the
//! contract and keeps `pyoco_workers_<tag>` (14 + 64 = 78 characters) far inside the
//! JetStream name limits (consumer names become file names on the server).

use thiserror::Error;

/// Longest accepted tag, in bytes (all accepted characters are ASCII).
pub const MAX_TAG_LEN: usize = 64;

/// Why a tag is not a valid routing tag.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagError {
    /// The tag is empty (or only whitespace, once trimmed by the caller).
    #[error("tag must not be empty")]
    Empty,
    /// The tag contains `.`, which would split it into several subject tokens.
    #[error("tag {tag:?} must not contain '.' (a tag is a single NATS subject token)")]
    ContainsDot { tag: String },
    /// The tag contains a NATS wildcard (`*` or `>`).
    #[error("tag {tag:?} must not contain the NATS wildcard {wildcard:?}")]
    ContainsWildcard { tag: String, wildcard: char },
    /// The tag contains whitespace.
    #[error("tag {tag:?} must not contain whitespace")]
    ContainsWhitespace { tag: String },
    /// The tag contains a character outside `A-Z a-z 0-9 _ -`.
    #[error("tag {tag:?} contains {ch:?}; only letters A-Z a-z, digits, '_' and '-' are allowed")]
    InvalidChar { tag: String, ch: char },
    /// The tag is longer than [`MAX_TAG_LEN`].
    #[error("tag {tag:?} is {len} characters long; at most {max} are allowed")]
    TooLong { tag: String, len: usize, max: usize },
}

/// Check that `tag` is a valid routing tag: non-empty, at most [`MAX_TAG_LEN`] characters,
/// every character in `[A-Za-z0-9_-]`. The error names the first offending character.
///
/// # Errors
/// The [`TagError`] that says what is wrong.
pub fn validate_tag(tag: &str) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    for ch in tag.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' {
            continue;
        }
        let tag = tag.to_string();
        return Err(match ch {
            '.' => TagError::ContainsDot { tag },
            '*' | '>' => TagError::ContainsWildcard { tag, wildcard: ch },
            c if c.is_whitespace() => TagError::ContainsWhitespace { tag },
            ch => TagError::InvalidChar { tag, ch },
        });
    }
    let len = tag.chars().count();
    if len > MAX_TAG_LEN {
        return Err(TagError::TooLong {
            tag: tag.to_string(),
            len,
            max: MAX_TAG_LEN,
        });
    }
    Ok(())
}

/// Parse a comma-separated tag list (`--tags`, `PYOCO_*` values): split on `,`, trim each item,
/// drop empty items, validate each with [`validate_tag`], drop duplicates keeping the first.
/// An input with no tags gives an empty list; the caller applies its default tag.
///
/// # Errors
/// The first invalid tag's [`TagError`].
pub fn parse_tags_csv(raw: &str) -> Result<Vec<String>, TagError> {
    let mut out: Vec<String> = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        validate_tag(item)?;
        if !out.iter().any(|t| t == item) {
            out.push(item.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_subject_token_tags() {
        for tag in ["default", "cpu", "gpu-a100", "team_1", "A", &"x".repeat(64)] {
            assert_eq!(validate_tag(tag), Ok(()), "{tag}");
        }
    }

    #[test]
    fn empty_tag_is_rejected() {
        assert_eq!(validate_tag(""), Err(TagError::Empty));
    }

    #[test]
    fn dot_is_rejected_as_multi_token() {
        let err = validate_tag("a.b").unwrap_err();
        assert!(matches!(err, TagError::ContainsDot { .. }));
        assert!(err.to_string().contains("'.'"), "{err}");
    }

    #[test]
    fn wildcards_are_rejected_by_name() {
        assert_eq!(
            validate_tag("gpu*"),
            Err(TagError::ContainsWildcard {
                tag: "gpu*".into(),
                wildcard: '*'
            })
        );
        assert_eq!(
            validate_tag(">"),
            Err(TagError::ContainsWildcard {
                tag: ">".into(),
                wildcard: '>'
            })
        );
    }

    #[test]
    fn whitespace_is_rejected() {
        assert!(matches!(
            validate_tag("a b"),
            Err(TagError::ContainsWhitespace { .. })
        ));
        assert!(matches!(
            validate_tag("a\t"),
            Err(TagError::ContainsWhitespace { .. })
        ));
    }

    #[test]
    fn other_characters_are_named() {
        assert_eq!(
            validate_tag("a/b"),
            Err(TagError::InvalidChar {
                tag: "a/b".into(),
                ch: '/'
            })
        );
        assert!(matches!(
            validate_tag("café"),
            Err(TagError::InvalidChar { ch: 'é', .. })
        ));
    }

    #[test]
    fn tags_longer_than_64_are_rejected() {
        let long = "x".repeat(65);
        assert_eq!(
            validate_tag(&long),
            Err(TagError::TooLong {
                tag: long.clone(),
                len: 65,
                max: 64
            })
        );
    }

    #[test]
    fn csv_is_trimmed_deduplicated_and_validated() {
        assert_eq!(
            parse_tags_csv(" cpu, gpu ,,cpu,").unwrap(),
            vec!["cpu".to_string(), "gpu".to_string()]
        );
        assert_eq!(parse_tags_csv(" , ").unwrap(), Vec::<String>::new());
        assert!(matches!(
            parse_tags_csv("cpu,a.b"),
            Err(TagError::ContainsDot { .. })
        ));
    }
}
