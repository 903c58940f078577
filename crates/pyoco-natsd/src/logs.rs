//! The child's output: every line goes to `tracing` (target `nats_server`, level from the
//! `[INF]`/`[WRN]`/… tag) and into a ring buffer that the desktop app and error messages read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many log lines an error message carries.
pub(crate) const LAST_LOG_LINES: usize = 20;

/// Severity of a nats-server log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `[TRC]`
    Trace,
    /// `[DBG]`
    Debug,
    /// `[INF]`, and untagged lines
    Info,
    /// `[WRN]`
    Warn,
    /// `[ERR]`, and untagged fatal messages (`nats-server: …`, Go panics)
    Error,
    /// `[FTL]`: the server exits right after
    Fatal,
}

/// One line the child printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When we read it (nats-server runs with `--logtime=false`; this is the timestamp).
    pub at: SystemTime,
    /// Its level.
    pub level: LogLevel,
    /// The line as printed, e.g. `[12345] [INF] Server is ready`.
    pub text: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

const TAGS: [(&str, LogLevel); 6] = [
    ("[TRC]", LogLevel::Trace),
    ("[DBG]", LogLevel::Debug),
    ("[INF]", LogLevel::Info),
    ("[WRN]", LogLevel::Warn),
    ("[ERR]", LogLevel::Error),
    ("[FTL]", LogLevel::Fatal),
];

/// Split a nats-server line into its level and message.
///
/// `[pid] [INF] msg` and `[pid] 2024/01/02 03:04:05.000000 [INF] msg` both give `(Info, "msg")`.
/// Untagged lines keep their text; those that are how nats-server and Go report fatal problems
/// before logging starts (`nats-server: <error>`, `panic: …`, `fatal error: …`) are errors.
pub fn parse_log_line(line: &str) -> (LogLevel, &str) {
    // The tag sits in the first few dozen bytes; don't scan message bodies for it.
    let head_end = (0..=line.len().min(64))
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    let head = &line[..head_end];
    let found = TAGS
        .iter()
        .filter_map(|(tag, level)| head.find(tag).map(|at| (at, tag.len(), *level)))
        .min_by_key(|(at, _, _)| *at);
    match found {
        Some((at, len, level)) => {
            let message = &line[at + len..];
            (level, message.strip_prefix(' ').unwrap_or(message))
        }
        None => {
            let fatal = ["nats-server: ", "panic: ", "fatal error: "]
                .iter()
                .any(|p| line.starts_with(p));
            let level = if fatal {
                LogLevel::Error
            } else {
                LogLevel::Info
            };
            (level, line)
        }
    }
}

/// The last N lines of the child's output, shared between the readers and the handle.
#[derive(Debug, Clone)]
pub(crate) struct LogBuffer {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<(u64, LogLine)>,
    next_seq: u64,
    capacity: usize,
}

impl LogBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        LogBuffer {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::new(),
                next_seq: 0,
                capacity: capacity.max(LAST_LOG_LINES),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding this lock leaves a consistent ring; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, line: LogLine) {
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.lines.len() == ring.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back((seq, line));
    }

    /// The sequence number the next line will get: remember it to ask for "lines since".
    pub(crate) fn mark(&self) -> u64 {
        self.lock().next_seq
    }

    pub(crate) fn all(&self) -> Vec<LogLine> {
        self.lock().lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The texts of the last `max` lines printed since `mark`.
    pub(crate) fn since(&self, mark: u64, max: usize) -> Vec<String> {
        let ring = self.lock();
        let newer: Vec<&LogLine> = ring
            .lines
            .iter()
            .filter(|(seq, _)| *seq >= mark)
            .map(|(_, l)| l)
            .collect();
        let skip = newer.len().saturating_sub(max);
        newer[skip..].iter().map(|l| l.text.clone()).collect()
    }
}

/// Read `stream` line by line until EOF, forwarding each line to `tracing` and `buffer`.
pub(crate) async fn forward_lines(stream: impl AsyncRead + Unpin, pid: u32, buffer: LogBuffer) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(pid, "stopped reading nats-server output: {e}");
                break;
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        let (level, message) = parse_log_line(text);
        emit(pid, level, message);
        buffer.push(LogLine {
            at: SystemTime::now(),
            level,
            text: text.to_owned(),
        });
    }
}

fn emit(pid: u32, level: LogLevel, message: &str) {
    match level {
        LogLevel::Trace => tracing::trace!(target: "nats_server", pid, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "nats_server", pid, "{message}"),
        LogLevel::Info => tracing::info!(target: "nats_server", pid, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "nats_server", pid, "{message}"),
        LogLevel::Error => tracing::error!(target: "nats_server", pid, "{message}"),
        LogLevel::Fatal => tracing::error!(target: "nats_server", pid, fatal = true, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_the_tag_with_or_without_timestamps() {
        assert_eq!(
            parse_log_line("[12] [INF] Server is ready"),
            (LogLevel::Info, "Server is ready")
        );
        assert_eq!(
            parse_log_line("[12] 2024/01/02 03:04:05.123456 [WRN] slow consumer"),
            (LogLevel::Warn, "slow consumer")
        );
        assert_eq!(
            parse_log_line("[7] [FTL] Error listening on port: 127.0.0.1:4222"),
            (LogLevel::Fatal, "Error listening on port: 127.0.0.1:4222")
        );
        assert_eq!(parse_log_line("[7] [ERR] x").0, LogLevel::Error);
        assert_eq!(parse_log_line("[7] [DBG] x").0, LogLevel::Debug);
        assert_eq!(parse_log_line("[7] [TRC] x").0, LogLevel::Trace);
        assert_eq!(parse_log_line("[7] [INF] "), (LogLevel::Info, ""));
    }

    #[test]
    fn untagged_startup_errors_are_errors_and_other_lines_info() {
        assert_eq!(
            parse_log_line("nats-server: Parse error on line 2").0,
            LogLevel::Error
        );
        assert_eq!(parse_log_line("panic: oops").0, LogLevel::Error);
        assert_eq!(
            parse_log_line("Usage: nats-server [options]"),
            (LogLevel::Info, "Usage: nats-server [options]")
        );
        // A tag deep inside a message body is not a tag.
        let long = format!("{} [ERR] quoted", "x".repeat(80));
        assert_eq!(parse_log_line(&long).0, LogLevel::Info);
    }

    #[test]
    fn ring_keeps_the_newest_lines_and_answers_since_a_mark() {
        let buf = LogBuffer::new(LAST_LOG_LINES);
        let line = |i: usize| LogLine {
            at: SystemTime::now(),
            level: LogLevel::Info,
            text: format!("line {i}"),
        };
        for i in 0..5 {
            buf.push(line(i));
        }
        let mark = buf.mark();
        for i in 5..30 {
            buf.push(line(i));
        }
        let all = buf.all();
        assert_eq!(all.len(), LAST_LOG_LINES);
        assert_eq!(all.last().unwrap().text, "line 29");
        assert_eq!(all.first().unwrap().text, "line 10");
        let since = buf.since(mark, 3);
        assert_eq!(since, ["line 27", "line 28", "line 29"]);
        assert!(buf.since(buf.mark(), 20).is_empty());
    }
}
