//! Live task logs (ours): stream `PYOCO_TASK_LOGS`, one message per line on
//! `<prefix>.<run_id>.<stdout|stderr>`, body `{"task","stream","line","ts"}`. A line's id is its
//! stream sequence, so a page or a follow starts at `after + 1` with a subject filter
//! (DeliverPolicy::ByStartSequence): nothing is read twice, nothing before it is scanned.
//!
//! JetStream has no per-subject byte limit: the per-run cap is enforced by the publisher
//! ([`LogPublisher`], in the worker); the stream has a max age and a total size (discard old).

use std::{collections::VecDeque, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy},
    context::PublishAckFuture,
    stream::RawMessageErrorKind,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{config::StoreConfig, error::nats, Store, StoreError};

/// Published once when a run reaches its per-run byte cap.
pub const LOG_LIMIT_MARKER: &str =
    "\u{2026}[log limit reached: further output of this run dropped]";
/// Acks awaited at most at a time before the publisher waits for the oldest.
const MAX_IN_FLIGHT: usize = 1024;
/// Bytes of the per-run cap kept for the two marker lines.
const MARKER_RESERVE: u64 = 512;
/// Failed publishes after which a run's further lines are only counted (NATS is gone or refuses:
/// each failure may have cost a request timeout, and the run must not wait on more of them).
const MAX_FAILURES: u64 = 16;
/// A page with a `task` filter reads at most this many lines (then `next` says where to go on).
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;

/// One stored line, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogItem {
    /// The stream sequence: increasing within a run (not contiguous).
    pub seq: u64,
    pub task: Option<String>,
    pub stream: String,
    pub line: String,
    /// When the line was written (epoch seconds).
    pub ts: f64,
}

#[derive(Serialize, Deserialize)]
struct StoredLine<'a> {
    task: Option<&'a str>,
    stream: &'a str,
    line: &'a str,
    ts: f64,
}

/// A page of lines and where the next one starts (`None`: the page reached the current end).
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub items: Vec<LogItem>,
    pub next: Option<u64>,
}

/// A run id usable as one subject token.
fn token_ok(run_id: &str) -> bool {
    !run_id.is_empty()
        && run_id
            .bytes()
            .all(|b| b > b' ' && b != b'.' && b != b'*' && b != b'>' && b < 0x7f)
}

impl StoreConfig {
    /// `<prefix>.<run_id>.<stream>`.
    pub fn task_log_subject(&self, run_id: &str, stream: &str) -> String {
        format!("{}.{}.{}", self.task_logs_subject_prefix, run_id, stream)
    }

    fn task_log_filter(&self, run_id: &str, stream: Option<&str>) -> String {
        format!(
            "{}.{}.{}",
            self.task_logs_subject_prefix,
            run_id,
            stream.unwrap_or(">")
        )
    }
}

fn item(msg: &jetstream::Message) -> Result<(LogItem, u64), StoreError> {
    let info = msg
        .info()
        .map_err(|e| StoreError::unavailable("MessageInfo", e))?;
    let (seq, pending) = (info.stream_sequence, info.pending);
    let item = match serde_json::from_slice::<StoredLine>(&msg.payload) {
        Ok(s) => LogItem {
            seq,
            task: s.task.map(str::to_string),
            stream: s.stream.to_string(),
            line: s.line.to_string(),
            ts: s.ts,
        },
        // Not ours (someone published on the subject): shown, not fatal.
        Err(_) => LogItem {
            seq,
            task: None,
            stream: if msg.subject.ends_with(".stdout") {
                "stdout".into()
            } else {
                "stderr".into()
            },
            line: String::from_utf8_lossy(&msg.payload).into_owned(),
            ts: 0.0,
        },
    };
    Ok((item, pending))
}

impl Store {
    async fn task_log_stream(&self) -> Result<jetstream::stream::Stream<()>, StoreError> {
        self.check_connected()?;
        self.inner
            .js
            .get_stream_no_info(&self.inner.cfg.task_logs_stream)
            .await
            .map_err(nats)
    }

    /// A publisher of `run_id`'s lines with the per-run cap `max_bytes` (stored bytes).
    pub fn task_log_publisher(&self, run_id: &str, max_bytes: u64) -> LogPublisher {
        LogPublisher {
            js: self.inner.js.clone(),
            stdout: self.inner.cfg.task_log_subject(run_id, "stdout"),
            stderr: self.inner.cfg.task_log_subject(run_id, "stderr"),
            enabled: token_ok(run_id) && max_bytes > 0,
            max_bytes,
            used: 0,
            cut: false,
            dropped_lines: 0,
            dropped_bytes: 0,
            failed: 0,
            published: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// Up to `limit` lines of `run_id` after sequence `after`, optionally only one stream
    /// (server-side filter) or one task (read and skipped here: at most
    /// [`MAX_SCANNED_PER_PAGE`] lines are read for one page).
    pub async fn task_log_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
        stream: Option<&str>,
        task: Option<&str>,
    ) -> Result<LogPage, StoreError> {
        if !token_ok(run_id) || limit == 0 {
            return Ok(LogPage::default());
        }
        let js_stream = self.task_log_stream().await?;
        let consumer = js_stream
            .create_consumer(consumer::pull::Config {
                filter_subject: self.inner.cfg.task_log_filter(run_id, stream),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let name = consumer.cached_info().name.clone();
        let result = async {
            let mut page = LogPage::default();
            let mut scanned = 0usize;
            let mut last = after;
            let batch = if task.is_some() { 1000 } else { limit };
            loop {
                let mut messages = consumer
                    .fetch()
                    .max_messages(batch)
                    .messages()
                    .await
                    .map_err(nats)?;
                let mut got = 0usize;
                let mut pending = 0u64;
                while let Some(msg) = messages
                    .try_next()
                    .await
                    .map_err(|e| StoreError::unavailable("Fetch", e))?
                {
                    let (it, p) = item(&msg)?;
                    got += 1;
                    scanned += 1;
                    last = it.seq;
                    pending = p;
                    if task.is_none_or(|t| it.task.as_deref() == Some(t)) {
                        page.items.push(it);
                        if page.items.len() == limit {
                            break;
                        }
                    }
                }
                let at_end = got == 0 || pending == 0;
                if at_end {
                    page.next = None;
                    return Ok(page);
                }
                if page.items.len() == limit || scanned >= MAX_SCANNED_PER_PAGE {
                    page.next = Some(last);
                    return Ok(page);
                }
            }
        }
        .await;
        let cleanup = js_stream.clone();
        tokio::spawn(async move {
            let _ = cleanup.delete_consumer(&name).await;
        });
        result
    }

    /// The sequence of `run_id`'s last line (0: none).
    pub async fn task_log_last_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        if !token_ok(run_id) {
            return Ok(0);
        }
        let stream = self.task_log_stream().await?;
        let mut last = 0;
        for s in ["stdout", "stderr"] {
            match stream
                .get_last_raw_message_by_subject(&self.inner.cfg.task_log_subject(run_id, s))
                .await
            {
                Ok(msg) => last = last.max(msg.sequence),
                Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(err) => return Err(nats(err)),
            }
        }
        Ok(last)
    }

    /// `run_id`'s lines after `after` as they are stored, then new ones as they come (an
    /// ordered push consumer: flow control and gap recovery by the client library).
    pub async fn task_log_follow(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Result<LogItem, StoreError>> + Send + Unpin + 'static, StoreError>
    {
        let filter = if token_ok(run_id) {
            self.inner.cfg.task_log_filter(run_id, None)
        } else {
            // matches nothing we publish
            format!("{}._invalid_", self.inner.cfg.task_logs_subject_prefix)
        };
        let stream = self.task_log_stream().await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client().new_inbox(),
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let messages = consumer.messages().await.map_err(nats)?;
        Ok(messages.map(|m| match m {
            Ok(msg) => item(&msg).map(|(it, _)| it),
            Err(err) => Err(nats(err)),
        }))
    }
}

/// Publishes one run's lines: pipelined (at most [`MAX_IN_FLIGHT`] acks outstanding), capped
/// at `max_bytes` stored bytes per run, after which one marker line goes out and the rest is
/// counted; [`LogPublisher::finish`] adds the final count and waits for every ack.
pub struct LogPublisher {
    js: jetstream::Context,
    stdout: String,
    stderr: String,
    enabled: bool,
    max_bytes: u64,
    used: u64,
    cut: bool,
    dropped_lines: u64,
    dropped_bytes: u64,
    failed: u64,
    published: u64,
    in_flight: VecDeque<PublishAckFuture>,
}

impl LogPublisher {
    /// Lines published so far (acked or not).
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Payload bytes published so far.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Publish one line (or count it as dropped beyond the cap).
    pub async fn push(&mut self, task: Option<&str>, stream: &str, line: &str, ts: f64) {
        if !self.enabled {
            return;
        }
        if self.cut || self.failed >= MAX_FAILURES {
            self.dropped_lines += 1;
            self.dropped_bytes += line.len() as u64;
            return;
        }
        let stream = if stream == "stdout" {
            "stdout"
        } else {
            "stderr"
        };
        let payload = match serde_json::to_vec(&StoredLine {
            task,
            stream,
            line,
            ts,
        }) {
            Ok(p) => p,
            Err(_) => return,
        };
        let len = payload.len() as u64;
        if self.used + len > self.max_bytes.saturating_sub(MARKER_RESERVE) {
            self.cut = true;
            self.dropped_lines += 1;
            self.dropped_bytes += line.len() as u64;
            self.marker(LOG_LIMIT_MARKER, ts).await;
            return;
        }
        self.used += len;
        self.send(stream, payload).await;
    }

    async fn marker(&mut self, text: &str, ts: f64) {
        if let Ok(payload) = serde_json::to_vec(&StoredLine {
            task: None,
            stream: "stderr",
            line: text,
            ts,
        }) {
            self.used += payload.len() as u64;
            self.send("stderr", payload).await;
        }
    }

    async fn send(&mut self, stream: &str, payload: Vec<u8>) {
        let subject = if stream == "stdout" {
            self.stdout.clone()
        } else {
            self.stderr.clone()
        };
        match self.js.publish(subject, Bytes::from(payload)).await {
            Ok(ack) => {
                self.published += 1;
                self.in_flight.push_back(ack);
            }
            Err(err) => self.fail(&err.to_string()),
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.await_oldest().await;
        }
    }

    async fn await_oldest(&mut self) {
        if let Some(ack) = self.in_flight.pop_front() {
            if let Err(err) = ack.await {
                self.fail(&err.to_string());
            }
        }
    }

    fn fail(&mut self, err: &str) {
        self.failed += 1;
        if self.failed == 1 {
            tracing::warn!("publishing a task log line failed (later failures are counted): {err}");
        }
    }

    /// The run ended: publish the count of what was dropped (here and, `also_dropped`, by the
    /// runner), then wait for every outstanding ack. Returns (lines published, failures).
    pub async fn finish(&mut self, also_dropped: (u64, u64), ts: f64) -> (u64, u64) {
        if self.enabled {
            let lines = self.dropped_lines + also_dropped.0;
            let bytes = self.dropped_bytes + also_dropped.1;
            if lines > 0 {
                if !self.cut {
                    self.cut = true;
                    self.marker(LOG_LIMIT_MARKER, ts).await;
                }
                let text = format!(
                    "\u{2026}[log limit reached: {lines} lines ({bytes} bytes) of output dropped]"
                );
                self.marker(&text, ts).await;
            }
        }
        while !self.in_flight.is_empty() {
            self.await_oldest().await;
        }
        if self.failed > 1 {
            tracing::warn!(
                failed = self.failed,
                "task log lines could not be published"
            );
        }
        (self.published, self.failed)
    }
}
