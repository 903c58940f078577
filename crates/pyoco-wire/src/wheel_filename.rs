//! Wheel filenames (PEP 427) as `packaging.utils.parse_wheel_filename` reads them, project
//! names normalised per PEP 503, versions ordered per PEP 440 (`pep440_rs`).
//!
//! The gateway needs this for its upload rules (§7 steps 4 and 7: `invalid wheel filename`,
//! version comparisons) and the worker for its sync (§6.10: latest version per package,
//! compatibility tags), so it lives here, once.

use std::{collections::BTreeSet, fmt, str::FromStr};

pub use pep440_rs::Version as Pep440Version;
use thiserror::Error;

/// A parsed wheel filename: `name-version[-build]-python-abi-platform.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelFilename {
    /// The project name, normalised (PEP 503): `Pyoco_Demo.Tasks` → `pyoco-demo-tasks`.
    pub name: String,
    pub version: Pep440Version,
    /// The optional build tag: leading digits and the rest (`1a` → `(1, "a")`).
    pub build: Option<(u64, String)>,
    /// Every compatibility tag the (possibly compressed) tag set expands to, lower-cased as
    /// `str(packaging.tags.Tag)` prints them: `py2.py3-none-any` → `py2-none-any`,
    /// `py3-none-any`.
    pub tags: BTreeSet<String>,
}

/// Why a filename is not a wheel filename (the gateway's 422 `invalid wheel filename`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid wheel filename {filename:?}: {reason}")]
pub struct InvalidWheelFilename {
    pub filename: String,
    pub reason: &'static str,
}

impl WheelFilename {
    /// Parse like `packaging.utils.parse_wheel_filename` (packaging 26).
    ///
    /// # Errors
    /// When the name has the wrong extension or number of parts, an invalid project name,
    /// version, build number or tag set.
    pub fn parse(filename: &str) -> Result<WheelFilename, InvalidWheelFilename> {
        let invalid = |reason| InvalidWheelFilename {
            filename: filename.to_string(),
            reason,
        };
        let stem = filename
            .strip_suffix(".whl")
            .ok_or_else(|| invalid("extension must be '.whl'"))?;
        let dashes = stem.matches('-').count();
        if dashes != 4 && dashes != 5 {
            return Err(invalid("wrong number of parts"));
        }
        // `split("-", dashes - 2)`: the last part keeps its two dashes (the tag triple).
        let parts: Vec<&str> = stem.splitn(dashes - 1, '-').collect();
        let name_part = parts[0];
        let name_ok = !name_part.is_empty()
            && !name_part.contains("__")
            && name_part
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if !name_ok {
            return Err(invalid("invalid project name"));
        }
        let version = Pep440Version::from_str(parts[1]).map_err(|_| invalid("invalid version"))?;
        let build = if dashes == 5 {
            let b = parts[2];
            let digits_end = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let number = b[..digits_end]
                .parse::<u64>()
                .map_err(|_| invalid("invalid build number"))?;
            Some((number, b[digits_end..].to_string()))
        } else {
            None
        };
        let tags = expand_tag_set(parts[parts.len() - 1]).map_err(invalid)?;
        Ok(WheelFilename {
            name: canonicalize_name(name_part),
            version,
            build,
            tags,
        })
    }
}

impl fmt::Display for WheelFilename {
    /// `name version` (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// PEP 503 name normalisation: runs of `-`, `_` and `.` become one `-`, lower-cased.
#[must_use]
pub fn canonicalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator = false;
        }
    }
    out
}

/// Most `interpreter-abi-platform` combinations a compressed tag set may expand to (ours;
/// packaging has no bound). Real wheels have a handful; without a bound, a 6 KB file name of
/// 1,000 dotted parts in each component (`a-1-p.p.…-n.n.…-x.x.….whl`) is a billion
/// combinations to build, at upload or sync.
const MAX_WHEEL_TAGS: usize = 1024;

/// `packaging.tags.parse_tag`: `py2.py3-none-any` → every `interpreter-abi-platform`
/// combination, lower-cased. An error when the set does not have three non-empty components,
/// an interpreter is not an identifier or there are more than [`MAX_WHEEL_TAGS`] combinations.
fn expand_tag_set(tag: &str) -> Result<BTreeSet<String>, &'static str> {
    const INVALID: &str = "invalid tag component";
    let components: Vec<Vec<&str>> = tag.split('-').map(|c| c.split('.').collect()).collect();
    if components.iter().flatten().any(|p| p.is_empty()) {
        return Err(INVALID);
    }
    let [interpreters, abis, platforms] = components.as_slice() else {
        return Err(INVALID);
    };
    let combinations = interpreters
        .len()
        .saturating_mul(abis.len())
        .saturating_mul(platforms.len());
    if combinations > MAX_WHEEL_TAGS {
        return Err("the tag set expands to more than 1024 compatibility tags");
    }
    let identifier = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    if !interpreters.iter().all(|i| identifier(i)) {
        return Err(INVALID);
    }
    let mut out = BTreeSet::new();
    for i in interpreters {
        for a in abis {
            for p in platforms {
                out.insert(format!("{i}-{a}-{p}").to_lowercase());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Pep440Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_like_packaging() {
        let w = WheelFilename::parse("Pyoco_Demo.Tasks-1.0-py3-none-any.whl").unwrap();
        assert_eq!(w.name, "pyoco-demo-tasks");
        assert_eq!(w.version, v("1.0.0"));
        assert_eq!(w.build, None);
        assert_eq!(w.tags, BTreeSet::from(["py3-none-any".to_string()]));

        let w = WheelFilename::parse("pkg-2.0rc1-7b-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.build, Some((7, "b".into())));
        assert_eq!(w.version.to_string(), "2.0rc1");
        assert_eq!(w.tags.len(), 2);

        let w = WheelFilename::parse(
            "np-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert!(w.tags.contains("cp311-cp311-manylinux_2_17_x86_64"));
        assert!(w.tags.contains("cp311-cp311-manylinux2014_x86_64"));
    }

    #[test]
    fn rejects_what_packaging_rejects() {
        for bad in [
            "pkg-1.0-py3-none-any.zip",
            "pkg-1.0-any.whl",
            "a-b-c-d-e-f-g.whl",
            "pk__g-1.0-py3-none-any.whl",
            "pkg-notaversion-py3-none-any.whl",
            "pkg-1.0-x-py3-none-any.whl",
            "pkg-1.0-py3-none-.whl",
            "pkg-1.0-3py-none-any.whl",
            "-1.0-py3-none-any.whl",
        ] {
            assert!(
                WheelFilename::parse(bad).is_err(),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn versions_order_per_pep440() {
        assert!(v("1.0") == v("1.0.0"));
        assert!(v("1.0rc1") < v("1.0"));
        assert!(v("1.0.dev1") < v("1.0a1"));
        assert!(v("1.0") < v("1.0.post1"));
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("1.0-RC.1").to_string(), "1.0rc1");
    }

    #[test]
    fn names_normalise_per_pep503() {
        assert_eq!(canonicalize_name("Foo.__Bar-baz"), "foo-bar-baz");
        assert_eq!(canonicalize_name("pyoco_demo_tasks"), "pyoco-demo-tasks");
    }
}
