//! Property tests standing in for `cargo fuzz` (which needs a nightly toolchain): hostile and
//! generated inputs for the flow.yaml loader ([`flow_yaml`]) and the wire decoders ([`wire`]).
//!
//! Each target first runs its seed corpus — the hand-written hostile inputs of past bugs,
//! built in code or read from `corpus/<target>/` — then proptest generates and mutates around
//! them. `PYOCO_FUZZ_CASES` sets the cases per property (default 256, a few seconds in all in a
//! debug build); a longer local run:
//!
//! ```text
//! PYOCO_FUZZ_CASES=100000 cargo test --release -p pyoco-wire --test fuzz
//! ```
//!
//! A failing case is printed, shrunk, and not written to a `proptest-regressions` file: add
//! it to the seeds (a file under `corpus/`, or the seed list in code) with the fix.

mod flow_yaml;
mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Cases per property: `PYOCO_FUZZ_CASES`, default 256.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PYOCO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Measures the CPU time of the current thread: the work a budget bounds, whatever the load of
/// the machine (the other tests, a build). Linux's `schedstat`; wall-clock time elsewhere.
pub struct CpuTimer {
    cpu: Option<u64>,
    wall: Instant,
}

impl CpuTimer {
    pub fn start() -> Self {
        CpuTimer {
            cpu: thread_cpu_nanos(),
            wall: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_nanos()) {
            (Some(start), Some(now)) => Duration::from_nanos(now.saturating_sub(start)),
            _ => self.wall.elapsed(),
        }
    }
}

fn thread_cpu_nanos() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// The files of `corpus/<target>/`, by name, sorted.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Text with the characters that break parsers: quotes, backslashes, controls, non-ASCII,
/// astral, the non-finite tokens Python writes, and plain identifiers. Built from characters
/// rather than regexes, which are slow to generate from in a debug build.
pub fn text() -> BoxedStrategy<String> {
    let chars =
        |c: BoxedStrategy<char>| prop::collection::vec(c, 0..12).prop_map(String::from_iter);
    let ascii = prop_oneof![
        8 => prop::char::range('a', 'z'),
        2 => prop::char::range('0', '9'),
        2 => prop::sample::select(vec!['_', '.', '-', ' ', ':', ',', '"', '\\', '\'', '\n']),
    ]
    .boxed();
    prop_oneof![
        3 => chars(ascii),
        2 => chars(any::<char>().boxed()),
        1 => prop::sample::select(vec![
            "", " ", "NaN", "Infinity", "-Infinity", "nan", "inf", "1e400", "\"", "\\", "\u{0}",
            "\u{7f}", "\u{85}", "\u{feff}", "\u{fffe}", "\u{10ffff}", "\u{1f600}", "é", "\r\n",
            "1_000", "0x1F", "  42  ", "True", "None", "null",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Any finite float, with the awkward ones (zeros, subnormals, extremes, integers) likely.
pub fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
        1 => prop::sample::select(vec![
            0.0, -0.0, 1.0, -1.5, 5e-324, f64::MIN_POSITIVE, f64::MAX, f64::MIN, 1e16, 1e-5,
            0.1, 1712345678.123456, 9007199254740993.0,
        ]),
        1 => any::<i32>().prop_map(f64::from),
    ]
}

/// A JSON number: integers (signed and beyond `i64`) and finite floats.
pub fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
    ]
}

/// Any JSON value, at most 3 levels and about 24 nodes.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object of any values.
pub fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((text(), json_value()), 0..6)
        .prop_map(|pairs| pairs.into_iter().collect())
}
