//! The server-sent-events reader of `pyoco-client watch`, as 0.5.1's client parses the stream.
//!
//! 0.5.1 reads the body line by line (`\n`, `\r\n` or `\r` end a line): `event:` sets the event
//! name, `data:` adds a data line (both values stripped of surrounding whitespace — not quite the
//! SSE spec, which removes one leading space; the gateway never sends anything where it
//! matters), and a blank line ends the event: if it has data, the data lines are joined by
//! `\n`, decoded as JSON (else `{"raw": <text>}`) and the event is emitted with its name or
//! `message`. Other lines (comments `:…`, `id:`, `retry:`) are ignored, and an event still open
//! when the stream ends is dropped.
//!
//! [`SseParser`] is fed the body in arbitrary chunks, so a line or a UTF-8 character split
//! across chunks is put back together.

use serde_json::{Map, Value};

/// One event: `{"event": <name>, "data": <decoded data>}` when printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: Value,
}

impl SseEvent {
    /// The JSON object 0.5.1 prints for `--output json`, keys in its order.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("event".to_string(), Value::String(self.event.clone()));
        map.insert("data".to_string(), self.data.clone());
        Value::Object(map)
    }
}

/// Incremental parser: [`SseParser::push`] chunks, get the events they complete.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of this one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub(crate) fn new() -> SseParser {
        SseParser::default()
    }

    /// Feed the next chunk of the body; returns the events it completed, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in chunk {
            let after_cr = std::mem::take(&mut self.after_cr);
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                        events.push(event);
                    }
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let name = self.event.take();
            let data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            let raw = data.join("\n");
            let data = pyoco_wire::value_from_python_json(raw.as_bytes()).unwrap_or_else(|_| {
                let mut map = Map::new();
                map.insert("raw".to_string(), Value::String(raw));
                Value::Object(map)
            });
            let event = match name {
                Some(name) if !name.is_empty() => name,
                _ => "message".to_string(),
            };
            return Some(SseEvent { event, data });
        }
        if let Some(rest) = line.strip_prefix("event:") {
            self.event = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("data:") {
            self.data.push(rest.trim().to_string());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.push(c)).collect()
    }

    fn ev(event: &str, data: Value) -> SseEvent {
        SseEvent {
            event: event.into(),
            data,
        }
    }

    #[test]
    fn gateway_frames_become_events() {
        let body = b"event: snapshot\ndata: {\"run_id\":\"r\",\"snapshot\":{\"status\":\"PENDING\"},\"ts\":1.5}\n\n\
                     event: heartbeat\ndata: {\"run_id\":\"r\",\"ts\":7.0}\n\n";
        assert_eq!(
            parse_all(&[body]),
            vec![
                ev(
                    "snapshot",
                    json!({"run_id": "r", "snapshot": {"status": "PENDING"}, "ts": 1.5})
                ),
                ev("heartbeat", json!({"run_id": "r", "ts": 7.0})),
            ]
        );
    }

    #[test]
    fn data_lines_are_joined_with_newlines() {
        let events = parse_all(&[b"data: [1,\ndata: 2]\n\n"]);
        assert_eq!(events, vec![ev("message", json!([1, 2]))]);
        let events = parse_all(&[b"data: a\ndata: b\n\n"]);
        assert_eq!(events, vec![ev("message", json!({"raw": "a\nb"}))]);
    }

    #[test]
    fn undecodable_data_is_kept_raw_and_the_default_name_is_message() {
        assert_eq!(
            parse_all(&[b"data: not json\n\n"]),
            vec![ev("message", json!({"raw": "not json"}))]
        );
        assert_eq!(
            parse_all(&[b"event:\ndata: 1\n\n"]),
            vec![ev("message", json!(1))]
        );
    }

    #[test]
    fn chunks_split_anywhere_and_any_line_ending() {
        let body = "event: snapshot\r\ndata: {\"name\":\"caf\u{e9}\"}\r\n\r\nevent: x\rdata: 2\r\r";
        let bytes = body.as_bytes();
        let whole = parse_all(&[bytes]);
        assert_eq!(
            whole,
            vec![ev("snapshot", json!({"name": "café"})), ev("x", json!(2))]
        );
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(parse_all(&[a, b]), whole, "split at {split}");
        }
    }

    #[test]
    fn comments_other_fields_and_empty_events_are_ignored() {
        let body =
            b": keep-alive\n\nid: 3\nretry: 100\nevent: lonely\n\nevent: snapshot\ndata: {}\n\n";
        assert_eq!(parse_all(&[body]), vec![ev("snapshot", json!({}))]);
    }

    #[test]
    fn an_event_without_its_blank_line_is_dropped() {
        assert!(parse_all(&[b"event: snapshot\ndata: {}\n"]).is_empty());
    }

    #[test]
    fn printed_shape_is_event_then_data() {
        let printed = ev("snapshot", json!({"a": 1})).to_json();
        assert_eq!(
            pyoco_wire::python::dumps(&printed),
            r#"{"event": "snapshot", "data": {"a": 1}}"#
        );
    }
}
