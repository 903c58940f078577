//! `docs/configuration.md`, generated from the table plus two hand-written parts
//! (`src/docs/intro.md`, `src/docs/differences.md`). A test keeps the file in step; regenerate
//! with `PYOCO_UPDATE_DOCS=1 cargo test -p pyoco-config`.

use std::fmt::Write;

use crate::spec::Group;
use crate::table::specs;

const INTRO: &str = include_str!("docs/intro.md");
const DIFFERENCES: &str = include_str!("docs/differences.md");

/// The full text of `docs/configuration.md`.
pub fn configuration_markdown() -> String {
    let mut out = String::new();
    out.push_str(INTRO.trim_end());
    out.push_str("\n\n## Settings\n");
    for group in Group::ALL {
        let mut rows = specs().iter().filter(|s| s.group == group).peekable();
        if rows.peek().is_none() {
            continue;
        }
        let _ = write!(
            out,
            "\n### {}\n\n| Variable | Default | Expected | Scope | A change restarts | Meaning |\n|---|---|---|---|---|---|\n",
            group.title()
        );
        for spec in rows {
            let mut default = match spec.default {
                Some(d) => format!("`{d}`"),
                None => "(empty)".to_owned(),
            };
            if let Some(appliance) = spec.appliance_default {
                default.push_str(&format!("; appliance: `{appliance}`"));
            }
            let mut scope = spec.scope.label().to_owned();
            if spec.secret {
                scope.push_str(", secret");
            }
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                spec.name,
                cell(&default),
                cell(&spec.expected()),
                scope,
                spec.restarts.label(),
                cell(spec.help)
            );
        }
    }
    out.push('\n');
    out.push_str(DIFFERENCES.trim_end());
    out.push('\n');
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn docs_configuration_md_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let expected = configuration_markdown();
        if std::env::var_os("PYOCO_UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/configuration.md does not match the settings table \
             (crates/pyoco-config/src/table.rs) and crates/pyoco-config/src/docs/*.md; \
             regenerate it with:\n    PYOCO_UPDATE_DOCS=1 cargo test -p pyoco-config"
        );
    }

    #[test]
    fn every_setting_is_in_the_docs() {
        let md = configuration_markdown();
        for spec in specs() {
            assert!(
                md.contains(&format!("| `{}` |", spec.name)),
                "{}",
                spec.name
            );
        }
    }
}
