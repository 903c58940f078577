//! What `pyoco-client` prints, byte for byte like 0.5.1.
//!
//! 0.5.1 prints every answer with `json.dumps(obj, ensure_ascii=True)`: Python's **default**
//! separators (`", "` and `": "`, unlike the compact form written to NATS), non-ASCII escaped as
//! `\uXXXX`, floats as `repr(float)` — [`pyoco_wire::python::dumps`], like every other piece of
//! Python (`str()`, truthiness) the client applies to the answers. Tables are 0.5.1's
//! `_print_table`: cells are Python `str()` of the values, columns left-justified to the widest
//! cell (counted in characters) and joined by two spaces, every column padded (so lines end in
//! spaces), `(no items)` when there are no rows.

use std::io::{self, Write};

use pyoco_wire::python;
use serde::Serialize;

use super::error::CliError;

/// 0.5.1's `_print_table` as text (every line ends with `\n`).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(no items)\n".to_string();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, &width)| {
                let pad = width.saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        padded.join("  ")
    };
    let mut out = line(&mut headers.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// stdout, flushed after every write (a `watch` line must show up at once), with a closed pipe
/// turned into [`CliError::BrokenPipe`].
pub(crate) struct Out {
    stdout: io::Stdout,
}

impl Out {
    pub(crate) fn new() -> Out {
        Out {
            stdout: io::stdout(),
        }
    }

    /// `json.dumps(value, ensure_ascii=True)` and a newline.
    pub(crate) fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CliError> {
        let mut line = python::dumps(value);
        line.push('\n');
        self.text(&line)
    }

    /// Text as is.
    pub(crate) fn text(&mut self, text: &str) -> Result<(), CliError> {
        let mut lock = self.stdout.lock();
        lock.write_all(text.as_bytes())
            .and_then(|()| lock.flush())
            .map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    CliError::BrokenPipe
                } else {
                    CliError::FileIo {
                        reason: format!("writing to stdout failed: {e}"),
                        hint: "check where the output goes (disk full? closed terminal?)"
                            .to_string(),
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_every_column_like_0_5_1() {
        let rows = vec![
            vec!["r-1".to_string(), "COMPLETED".to_string()],
            vec!["run-22".to_string(), "日本".to_string()],
        ];
        assert_eq!(
            table(&["run_id", "status"], &rows),
            "run_id  status   \nr-1     COMPLETED\nrun-22  日本       \n"
        );
    }

    #[test]
    fn empty_table_says_no_items() {
        assert_eq!(table(&["run_id"], &[]), "(no items)\n");
    }
}
