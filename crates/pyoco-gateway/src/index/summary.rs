//! The `GET /runs` summary item of a run (and its `include=times` keys) as a *template*: the
//! encoded JSON with holes where the values that differ from run to run go — the run id when it
//! is a canonical UUID, and `updated_at`, `heartbeat_at`, `start_time`, `end_time` when they
//! are floats. What is left (statuses, flows, tags, workers, nulls) repeats across runs, so the
//! index keeps one shared copy of each distinct template and per run only the values of its
//! holes, instead of some 300 bytes of JSON.
//!
//! A hole is only made where rendering the value gives back exactly the bytes encoding it gave
//! (a float is written as `repr(float)` either way, a UUID is a JSON string without escapes);
//! anything else stays in the template as encoded, so an odd run costs a template of its own
//! and nothing is ever rendered differently from [`pyoco_wire::RunSummary`]'s encoding.

use pyoco_wire::{python::float_repr, RUN_SUMMARY_KEYS};
use serde_json::{Map, Value};

use super::{run_key::RunKey, TIME_KEYS};

/// Starts a hole (or the split); never part of encoded JSON, which is ASCII (`ensure_ascii`),
/// nor of any UTF-8 text.
const HOLE: u8 = 0xFF;
/// After [`HOLE`]: where the summary ends and the times begin.
const SPLIT: u8 = b'|';
const RUN_ID: u8 = b'r';
const UPDATED_AT: u8 = b'u';
const HEARTBEAT_AT: u8 = b'h';
const START_TIME: u8 = b's';
const END_TIME: u8 = b'e';

/// The values of a run's holes besides its run id and `updated_at` (which the index keeps for
/// the list order anyway). Unused ones are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct HoleValues {
    pub heartbeat_at: f64,
    pub start_time: f64,
    pub end_time: f64,
}

/// What a template's holes are filled with.
pub(super) struct Fill<'a> {
    pub run_id: &'a RunKey,
    pub updated_at: f64,
    pub values: &'a HoleValues,
}

/// Encode the summary item and times of a snapshot's indexed `fields`: the template and the
/// values of its holes. `run_id` and `updated_at` are the run's list position, as
/// [`pyoco_wire::run_sort_key`] reads them.
pub(super) fn encode(
    fields: &Map<String, Value>,
    run_id: &RunKey,
    updated_at: f64,
) -> (Vec<u8>, HoleValues) {
    let mut out = Vec::with_capacity(160);
    let mut values = HoleValues::default();
    let mut value = |key: &str, v: &Value, out: &mut Vec<u8>| {
        let float = match v {
            Value::Number(n) if n.is_f64() => n.as_f64(),
            _ => None,
        };
        let hole = match (key, v, float) {
            ("run_id", Value::String(s), _)
                if run_id.uuid().is_some() && RunKey::new(s) == *run_id =>
            {
                Some(RUN_ID)
            }
            ("updated_at", _, Some(f)) if f.to_bits() == updated_at.to_bits() => Some(UPDATED_AT),
            ("heartbeat_at", _, Some(f)) => {
                values.heartbeat_at = f;
                Some(HEARTBEAT_AT)
            }
            ("start_time", _, Some(f)) => {
                values.start_time = f;
                Some(START_TIME)
            }
            ("end_time", _, Some(f)) => {
                values.end_time = f;
                Some(END_TIME)
            }
            _ => None,
        };
        match hole {
            Some(kind) => out.extend_from_slice(&[HOLE, kind]),
            None => out.extend_from_slice(&pyoco_wire::to_python_json(v)),
        }
    };
    out.push(b'{');
    let mut first = true;
    for key in RUN_SUMMARY_KEYS {
        if let Some(v) = fields.get(key) {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            push_key(&mut out, key);
            value(key, v, &mut out);
        }
    }
    out.push(b'}');
    out.extend_from_slice(&[HOLE, SPLIT]);
    for key in TIME_KEYS {
        if let Some(v) = fields.get(key) {
            out.push(b',');
            push_key(&mut out, key);
            value(key, v, &mut out);
        }
    }
    (out, values)
}

/// `"key":` (the summary keys are plain ASCII: nothing to escape).
fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Append the summary item to `out`.
pub(super) fn write_summary(template: &[u8], fill: &Fill<'_>, out: &mut Vec<u8>) {
    render(template, fill, out);
}

/// Append the summary item with its `start_time` and `end_time` (those present) to `out`.
pub(super) fn write_summary_with_times(template: &[u8], fill: &Fill<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let times = render(template, fill, out);
    let summary_len = out.len() - start;
    if times.is_empty() || summary_len < 2 {
        return;
    }
    out.pop();
    // The times start with a literal `,`; `{}` takes them without it.
    render(
        if summary_len == 2 { &times[1..] } else { times },
        fill,
        out,
    );
    out.push(b'}');
}

/// Render `template` into `out` up to its split (or its end); returns what follows the split.
fn render<'t>(mut template: &'t [u8], fill: &Fill<'_>, out: &mut Vec<u8>) -> &'t [u8] {
    while let Some(at) = template.iter().position(|&b| b == HOLE) {
        out.extend_from_slice(&template[..at]);
        let kind = template.get(at + 1).copied().unwrap_or(SPLIT);
        let rest = template.get(at + 2..).unwrap_or_default();
        let float = |out: &mut Vec<u8>, f: f64| out.extend_from_slice(float_repr(f).as_bytes());
        match kind {
            RUN_ID => {
                out.push(b'"');
                fill.run_id
                    .with_str(|s| out.extend_from_slice(s.as_bytes()));
                out.push(b'"');
            }
            UPDATED_AT => float(out, fill.updated_at),
            HEARTBEAT_AT => float(out, fill.values.heartbeat_at),
            START_TIME => float(out, fill.values.start_time),
            END_TIME => float(out, fill.values.end_time),
            _ => return rest,
        }
        template = rest;
    }
    out.extend_from_slice(template);
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Encode and render `snapshot` both ways; compare with the plain encoding.
    fn check(snapshot: &Value) -> (Vec<u8>, HoleValues) {
        let fields = snapshot.as_object().unwrap();
        let (updated_at, run_id) = pyoco_wire::run_sort_key(fields);
        let run_id = RunKey::new(&run_id);
        let (template, values) = encode(fields, &run_id, updated_at);
        let fill = Fill {
            run_id: &run_id,
            updated_at,
            values: &values,
        };
        let summary = pyoco_wire::to_python_json(&pyoco_wire::RunSummary::from_snapshot(fields));
        let mut out = Vec::new();
        write_summary(&template, &fill, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(summary.clone()).unwrap()
        );
        // `include=times`: the summary's keys, then those of start_time / end_time present.
        let mut with_times = fields
            .iter()
            .filter(|(k, _)| RUN_SUMMARY_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>();
        with_times.sort_by_key(|(k, _)| RUN_SUMMARY_KEYS.iter().position(|s| s == k));
        for key in TIME_KEYS {
            if let Some(v) = fields.get(key) {
                with_times.push((key.to_string(), v.clone()));
            }
        }
        let want: Map<String, Value> = with_times.into_iter().collect();
        let mut out = Vec::new();
        write_summary_with_times(&template, &fill, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(pyoco_wire::to_python_json(&want)).unwrap()
        );
        (template, values)
    }

    #[test]
    fn a_finished_run_renders_identically_with_its_values_in_holes() {
        let a = json!({
            "run_id": "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b", "flow_name": "main",
            "tag": "default", "tags": ["default"], "tenant_id": null, "api_key_id": null,
            "status": "COMPLETED", "params": {"x": 1}, "tasks": {"a": "SUCCEEDED"},
            "task_records": {"a": {"state": "SUCCEEDED"}}, "start_time": 1712345678.5,
            "end_time": 1712345679.25, "heartbeat_at": 1712345679.125,
            "updated_at": 1712345679.25, "worker_id": "w1", "error": null
        });
        let (template, values) = check(&a);
        assert_eq!(values.heartbeat_at, 1712345679.125);
        assert_eq!(
            (values.start_time, values.end_time),
            (1712345678.5, 1712345679.25)
        );
        // Another run with other ids and times shares the template.
        let mut b = a.clone();
        b["run_id"] = json!("7d444840-9dc0-11d1-b245-5ffdce74fad2");
        b["updated_at"] = json!(1.5e9);
        b["heartbeat_at"] = json!(0.1);
        b["start_time"] = json!(1e-7);
        b["end_time"] = json!(-3.25);
        assert_eq!(check(&b).0, template);
        assert!(!String::from_utf8_lossy(&template).contains("0f3c2a9e"));
    }

    #[test]
    fn values_without_an_exact_rendering_stay_in_the_template() {
        for snapshot in [
            json!({"run_id": "r", "status": "RUNNING", "updated_at": 5.0, "worker_id": null}),
            json!({"run_id": "0F3C2A9E-5B7D-4E1F-8A2B-9C0D1E2F3A4B", "updated_at": 5}),
            json!({"run_id": 7, "updated_at": "12.5", "heartbeat_at": 3}),
            json!({"run_id": ["0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b"], "updated_at": -0.0}),
            json!({"run_id": "", "updated_at": 0.0, "heartbeat_at": null}),
            json!({"run_id": "é\"\\\n", "status": "ÄÖ", "error": {"x": [1, 2.5, "ü"]}}),
            json!({"start_time": 2, "end_time": null}),
            json!({"start_time": 1.5}),
            json!({"end_time": 1.5, "status": "FAILED"}),
            json!({}),
            json!({"updated_at": 1e16, "heartbeat_at": 1e22, "start_time": 1e-5,
                   "end_time": 123456789012345680.0}),
        ] {
            check(&snapshot);
        }
        // The run id of a snapshot whose KV key differs is the snapshot's.
        let (template, _) =
            check(&json!({"run_id": "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b", "updated_at": 1.0}));
        assert!(template.starts_with(b"{\"run_id\":\xff"));
    }
}
