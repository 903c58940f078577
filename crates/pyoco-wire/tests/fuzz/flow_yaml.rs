//! The flow.yaml loader ([`parse_workflow_yaml`]): never panics, answers every input with a
//! workflow or a meaningful rejection, and in bounded time; valid flows read back the values
//! they were written from.
//!
//! Seeds: the hostile documents of issue 13 (built in [`seeds`], each with the answer it must
//! get) and the small hand-written ones in `corpus/flow_yaml/`.

use std::time::Duration;

use indexmap::IndexMap;
use proptest::prelude::*;
use pyoco_wire::python::py_strip;
use pyoco_wire::{parse_workflow_yaml, Workflow, WorkflowYamlError};
use serde_json::{Map, Value};

use crate::{config, corpus, finite_f64, text, CpuTimer};

/// CPU time one parse of a seed (up to 256 KiB, the default `PYOCO_WORKFLOW_YAML_MAX_BYTES`)
/// may take, unless the seed sets its own: three times what the slowest takes in a debug build.
/// Before the fixes, some took seconds or minutes, or overflowed the stack.
const SEED_BUDGET: Duration = Duration::from_secs(2);
/// CPU time one parse of a generated input (at most a few KiB: milliseconds) may take.
const CASE_BUDGET: Duration = Duration::from_secs(2);

/// Parse `raw` within `budget` and check the answer is well-formed.
fn check(raw: &[u8], budget: Duration) -> Result<Workflow, WorkflowYamlError> {
    let timer = CpuTimer::start();
    let result = parse_workflow_yaml(raw);
    let took = timer.elapsed();
    assert!(
        took < budget,
        "a {}-byte document took {took:?} of CPU time (budget {budget:?})",
        raw.len()
    );
    match &result {
        Ok(wf) => {
            assert_eq!(wf.version, 1);
            assert!(!py_strip(&wf.flow.graph).is_empty(), "blank graph accepted");
            assert_eq!(wf.digest.bytes, raw.len() as u64);
            assert!(std::str::from_utf8(raw).is_ok(), "non-UTF-8 accepted");
        }
        Err(err) => assert_meaningful(err),
    }
    result
}

/// Every rejection says what is wrong: a reason, and whatever it names is not empty.
fn assert_meaningful(err: &WorkflowYamlError) {
    use WorkflowYamlError as E;
    let reason = err.reason();
    assert!(!reason.is_empty(), "{err:?}");
    assert_eq!(err.to_string(), reason);
    match err {
        E::InvalidYaml { detail } => assert!(!detail.is_empty(), "{err:?}"),
        E::UnknownTopLevelKeys(keys) | E::UnknownFlowKeys(keys) | E::UnknownRuntimeKeys(keys) => {
            assert!(!keys.is_empty(), "{err:?}")
        }
        E::UnknownTaskKeys { keys, .. } => assert!(!keys.is_empty(), "{err:?}"),
        E::TooLarge { what } => assert!(!what.is_empty(), "{err:?}"),
        E::UnsupportedValue { path, what } => {
            assert!(!path.is_empty() && !what.is_empty(), "{err:?}")
        }
        E::UnsupportedVersion(v) => assert_ne!(*v, 1),
        _ => {}
    }
}

/// A seed, the answer it must get (`OK`, text the reason contains, or `""` for any answer:
/// no panic, a meaningful rejection) and how long it may take.
struct Seed {
    name: String,
    raw: Vec<u8>,
    want: &'static str,
    budget: Duration,
}

fn seed(name: &str, raw: impl Into<Vec<u8>>, want: &'static str) -> Seed {
    Seed {
        name: name.to_string(),
        raw: raw.into(),
        want,
        budget: SEED_BUDGET,
    }
}

const TOO_MANY_MERGES: &str = "too_large: merge keys (<<) copy more than 1000000 key/value pairs";
const HEAD: &str = "flow:\n  graph: a\n  defaults:\n";

/// `l0: &l0 [lol × 10]`, `l1: &l1 [*l0 × 10]`, … `levels` levels: nine make a billion strings
/// from 1 KB.
fn billion_laughs(indent: &str, levels: usize) -> String {
    let mut raw = format!("{indent}l0: &l0 [{}]\n", ["lol"; 10].join(", "));
    for i in 1..levels {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        raw.push_str(&format!("{indent}l{i}: &l{i} [{refs}]\n"));
    }
    raw
}

/// `m1: {<<: [*m0 × 10]}` nested `levels` deep (each level copies the previous ten times).
fn nested_merges(levels: usize) -> String {
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}: {i}")).collect();
    let mut raw = format!("{HEAD}    m0: &m0 {{{}}}\n", keys.join(", "));
    for level in 1..=levels {
        let refs = vec![format!("*m{}", level - 1); 10].join(", ");
        raw.push_str(&format!(
            "    m{level}: &m{level} {{<<: [{refs}], own{level}: {level}}}\n"
        ));
    }
    raw
}

/// One mapping of `keys` keys, merged into `copies` mappings.
fn wide_merges(keys: usize, copies: usize) -> String {
    let pairs: Vec<String> = (0..keys).map(|i| format!("k{i}: {i}")).collect();
    let mut raw = format!("{HEAD}    base: &base {{{}}}\n", pairs.join(", "));
    for i in 0..copies {
        raw.push_str(&format!("    c{i}: {{<<: *base}}\n"));
    }
    raw
}

/// Lines of `line` until the document reaches `bytes`.
fn repeat_to(head: &str, bytes: usize, mut line: impl FnMut(usize) -> String) -> String {
    let mut raw = head.to_string();
    let mut i = 0;
    while raw.len() < bytes {
        raw.push_str(&line(i));
        i += 1;
    }
    raw
}

/// The hostile documents of issue 13 and of the bugs these properties found, then the files
/// of `corpus/flow_yaml/`.
fn seeds() -> Vec<Seed> {
    let long_key = "k".repeat(100_000);
    let utf16: Vec<u8> = "flow:\n  graph: a\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let laughs = "values after alias expansion";
    let too_deep = "too_large: aliases nest collections deeper than 490 levels";
    let mut seeds = vec![
        seed(
            "billion laughs in defaults",
            format!("{HEAD}{}", billion_laughs("    ", 9)),
            laughs,
        ),
        seed(
            "billion laughs under an unknown key (never expanded)",
            format!("flow:\n  graph: a\nlol:\n{}", billion_laughs("  ", 9)),
            "unknown_top_level_keys: ['lol']",
        ),
        seed(
            "merge keys nested 8 levels deep",
            nested_merges(8),
            TOO_MANY_MERGES,
        ),
        seed("merge keys nested 3 levels deep", nested_merges(3), "OK"),
        // Refused once a million pairs are copied: about 2 s in a debug build.
        Seed {
            budget: Duration::from_secs(10),
            ..seed(
                "4,000 keys merged 300 times",
                wide_merges(4000, 300),
                TOO_MANY_MERGES,
            )
        },
        seed(
            "a 100,000-character plain key",
            format!("{HEAD}    {long_key}: 1\n"),
            "invalid_yaml",
        ),
        seed(
            "a 100,000-character quoted key",
            format!("{HEAD}    \"{long_key}\": 1\n"),
            "invalid_yaml",
        ),
        seed(
            "a 100,000-character key in a flow mapping",
            format!("flow:\n  graph: a\n  defaults: {{'{long_key}': 1}}\n"),
            "invalid_yaml",
        ),
        seed(
            "version: 2",
            "version: 2\nflow:\n  graph: a\n",
            "unsupported_version: 2",
        ),
        seed(
            "version beyond 64 bits",
            "version: 99999999999999999999\nflow:\n  graph: a\n",
            "invalid_version",
        ),
        seed(
            "5,000 duplicate keys",
            (0..5000).fold(HEAD.to_string(), |raw, i| {
                raw + &format!("    k{}: {i}\n", i % 100)
            }),
            "OK",
        ),
        seed(
            "duplicate top-level keys",
            "flow: {graph: a}\nflow: {graph: b}\n",
            "OK",
        ),
        seed(
            "starts with FF FE (UTF-16LE)",
            [&[0xFF, 0xFE][..], &utf16].concat(),
            "invalid_utf8",
        ),
        seed(
            "a UTF-8 byte-order mark",
            [&[0xEF, 0xBB, 0xBF][..], b"flow:\n  graph: a\n"].concat(),
            "OK",
        ),
        seed(
            "block nesting 491 levels deep",
            (0..491)
                .map(|i| format!("{}a:\n", "  ".repeat(i)))
                .collect::<String>(),
            "invalid_yaml",
        ),
        seed(
            "flow nesting 300 levels deep",
            format!("{HEAD}    x: {}{}\n", "[".repeat(300), "]".repeat(300)),
            "invalid_yaml",
        ),
        seed(
            "defaults 120 levels deep",
            format!("{HEAD}    x: {}1{}\n", "[".repeat(120), "]".repeat(120)),
            "nested deeper than 100 levels",
        ),
        // Found by these properties: each alias nested 200 levels inside the next anchor made
        // a tree 120,000 levels deep from 250 KB, whose drop overflowed the stack (the gateway
        // process aborted). Now refused once it passes 490 levels.
        seed(
            "aliases nested inside the next anchor, 600 times",
            repeat_to(&format!("{HEAD}    x0: &x0 1\n"), 250 * 1024, |i| {
                let (open, close) = ("[".repeat(200), "]".repeat(200));
                format!("    x{}: &x{} {open}*x{i}{close}\n", i + 1, i + 1)
            }),
            too_deep,
        ),
        seed(
            "aliases nested inside the next anchor, under an unknown key",
            repeat_to("flow:\n  graph: a\nx:\n  x0: &x0 1\n", 16 * 1024, |i| {
                format!("  x{}: &x{} [[[[*x{i}]]]]\n", i + 1, i + 1)
            }),
            too_deep,
        ),
        // Found by these properties: every `.nan` key landed in one hash slot, searched from
        // end to end for each new key: 6 s for 256 KiB in a debug build, 0.25 s now.
        seed(
            "20,000 .nan keys",
            repeat_to(HEAD, 256 * 1024, |_| "    .nan: 1\n".to_string()),
            "OK",
        ),
        seed("empty document", "", "invalid_yaml_root"),
    ];
    seeds.extend(
        corpus("flow_yaml")
            .into_iter()
            .map(|(name, raw)| seed(&format!("corpus/flow_yaml/{name}"), raw, "")),
    );
    seeds
}

#[test]
fn seeds_get_their_answers_in_bounded_time() {
    for seed in seeds() {
        let result = check(&seed.raw, seed.budget);
        let got = match &result {
            Ok(_) => "OK".to_string(),
            Err(err) => err.reason(),
        };
        let ok = match seed.want {
            "" => true,
            "OK" => result.is_ok(),
            want => result.is_err() && got.contains(want),
        };
        assert!(ok, "{}: got {got:?}, want {:?}", seed.name, seed.want);
    }
}

/// The seeds mutated at the byte level: the small ones, except those that spend a whole budget
/// (each case would take a second), plus smaller bombs in their place.
fn small_seeds() -> Vec<Vec<u8>> {
    let mut small: Vec<Vec<u8>> = seeds()
        .into_iter()
        .filter(|s| s.raw.len() <= 4096 && !s.want.starts_with(TOO_MANY_MERGES))
        .filter(|s| !s.want.contains("alias expansion"))
        .map(|s| s.raw)
        .collect();
    small.push(format!("{HEAD}{}", billion_laughs("    ", 4)).into_bytes());
    small.push(nested_merges(4).into_bytes());
    small
}

/// Fragments that steer a mutated document into the loader's corners.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "<<: *a",
    "<<: [*a, *b]",
    ": ",
    "- ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    "!!python/object:os.system ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!pairs ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!timestamp ",
    "!!merge ",
    "!!value ",
    "! ",
    "!x ",
    "|\n  ",
    ">-\n  ",
    "'",
    "\"",
    "\\",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    "#",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "010",
    "1:30",
    "1e3",
    "1.0e+3",
    "2024-02-30",
    "~",
    "=",
    "yes",
    "\u{feff}",
    "\u{85}",
    "\u{2028}",
    "\u{0}",
    "\r\n",
    "version: 2\n",
    "flow:\n  graph: a\n",
    "defaults:\n",
    "tasks:\n",
    "runtime:\n  expose_env: [X]\n",
    "callable: m:f\n",
    "inputs: ",
    "outputs: [a]\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Token(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Token(p, t)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn mutate(mut raw: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *m {
            Mutation::Replace(p, b) if !raw.is_empty() => {
                let i = p % raw.len();
                raw[i] = b;
            }
            Mutation::Insert(p, b) => raw.insert(at(p, raw.len()), b),
            Mutation::Delete(p) if !raw.is_empty() => {
                raw.remove(p % raw.len());
            }
            Mutation::Token(p, t) => {
                let i = at(p, raw.len());
                raw.splice(i..i, TOKENS[t].bytes());
            }
            Mutation::Truncate(p) => raw.truncate(at(p, raw.len())),
            Mutation::DuplicateLine(p) => {
                let lines: Vec<&[u8]> = raw.split_inclusive(|b| *b == b'\n').collect();
                if !lines.is_empty() {
                    let i = p % lines.len();
                    let mut out = Vec::with_capacity(raw.len() * 2);
                    for (j, line) in lines.iter().enumerate() {
                        out.extend_from_slice(line);
                        if j == i {
                            out.extend_from_slice(line);
                        }
                    }
                    raw = out;
                }
            }
            _ => {}
        }
    }
    raw
}

/// A YAML node of a hostile document.
#[derive(Debug, Clone)]
enum Y {
    /// Scalar text, written as is (plain, quoted or with its own tag).
    Scalar(String),
    Seq(Vec<Y>),
    Map(Vec<(Y, Y)>),
    /// `&aN node`.
    Anchor(u8, Box<Y>),
    /// `*aN`.
    Alias(u8),
    /// `!tag node`.
    Tagged(&'static str, Box<Y>),
}

const TAGS: &[&str] = &[
    "!!python/object:os.system",
    "!!python/object/apply:subprocess.call",
    "!!python/tuple",
    "!!binary",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!timestamp",
    "!!map",
    "!!seq",
    "!!merge",
    "!!value",
    "!custom",
    "!",
    "!<tag:yaml.org,2002:str>",
];

const SCALARS: &[&str] = &[
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "~",
    "null",
    "",
    "010",
    "0o17",
    "0x1F",
    "0b1_0",
    "-0b11",
    "1:30",
    "1:30.5",
    "190:20:30.15",
    "1_000",
    "08",
    "+0",
    "1e3",
    "1.0e+3",
    "6.8523015e+5",
    ".5",
    "-.5",
    ".nan",
    ".NaN",
    ".inf",
    "-.Inf",
    "2024-01-01",
    "2024-1-1",
    "2024-02-30",
    "0000-01-01",
    "2001-12-14 21:59:43.10 -5",
    "2001-12-14t21:59:43.10Z",
    "2024-01-01 24:00:00",
    "<<",
    "=",
    "\"<<\"",
    "'='",
    "\"\\u00e9\"",
    "\"\\x41\"",
    "\"\\U0001F600\"",
    "\"\\0\"",
    "'it''s'",
    "123456789012345678901234567890123456789012",
    "-170141183460469231731687303715884105729",
    "1152921504606846977",
    "aGk=",
    "\"\"",
    "''",
    "a b",
    "graph",
    "flow",
    "tasks",
    "version",
    "defaults",
    "inputs",
    "outputs",
    "callable",
    "m:f",
    "runtime",
    "expose_env",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SCALARS).prop_map(str::to_string),
        3 => "[a-z][a-z0-9_]{0,6}",
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => finite_f64().prop_map(|f| format!("{f:?}")),
        1 => text().prop_map(|s| format!("{s:?}")),
        1 => (1020usize..1030).prop_map(|n| "k".repeat(n)),
        1 => (1usize..2000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ]
}

fn node() -> impl Strategy<Value = Y> {
    let leaf = prop_oneof![
        5 => scalar().prop_map(Y::Scalar),
        2 => (0u8..4).prop_map(Y::Alias),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        let merge = prop_oneof![
            (0u8..4).prop_map(Y::Alias),
            prop::collection::vec((0u8..4).prop_map(Y::Alias), 1..4).prop_map(Y::Seq),
            inner.clone(),
        ]
        .prop_map(|v| (Y::Scalar("<<".into()), v));
        let pair = prop_oneof![4 => (inner.clone(), inner.clone()), 1 => merge];
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..6).prop_map(Y::Seq),
            4 => prop::collection::vec(pair, 0..6).prop_map(Y::Map),
            2 => (0u8..4, inner.clone()).prop_map(|(n, y)| Y::Anchor(n, Box::new(y))),
            1 => (prop::sample::select(TAGS), inner).prop_map(|(t, y)| Y::Tagged(t, Box::new(y))),
        ]
    })
}

/// Flow style: `[a, b]`, `{k: v}`.
fn flow(y: &Y, out: &mut String) {
    match y {
        Y::Scalar(s) => out.push_str(s),
        Y::Alias(n) => out.push_str(&format!("*a{n} ")),
        Y::Anchor(n, inner) => {
            out.push_str(&format!("&a{n} "));
            flow(inner, out);
        }
        Y::Tagged(tag, inner) => {
            out.push_str(tag);
            out.push(' ');
            flow(inner, out);
        }
        Y::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(item, out);
            }
            out.push(']');
        }
        Y::Map(pairs) => {
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(k, out);
                out.push_str(": ");
                flow(v, out);
            }
            out.push('}');
        }
    }
}

/// Block style for non-empty collections, after a `key:` or `-` already written; flow style
/// for the rest.
fn block(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::Map(pairs) if !pairs.is_empty() => {
            out.push('\n');
            for (k, v) in pairs {
                out.push_str(&pad);
                flow(k, out);
                out.push(':');
                block(v, indent + 2, out);
            }
        }
        Y::Seq(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push('-');
                block(item, indent + 2, out);
            }
        }
        Y::Anchor(n, inner) if matches!(**inner, Y::Map(_) | Y::Seq(_)) => {
            out.push_str(&format!(" &a{n}"));
            block(inner, indent, out);
        }
        Y::Tagged(tag, inner) if matches!(**inner, Y::Map(_) | Y::Seq(_)) => {
            out.push(' ');
            out.push_str(tag);
            block(inner, indent, out);
        }
        other => {
            out.push(' ');
            flow(other, out);
            out.push('\n');
        }
    }
}

/// Where a generated node goes in the document.
#[derive(Debug, Clone, Copy)]
enum Place {
    Whole,
    Defaults,
    Inputs,
    Version,
    Runtime,
    Tasks,
}

/// Whole-document twists applied after rendering.
#[derive(Debug, Clone, Copy)]
enum Twist {
    None,
    Utf8Bom,
    Utf16Bom,
    Crlf,
    SecondDocument,
    Directive,
}

fn render(y: &Y, place: Place, block_style: bool, twist: Twist) -> Vec<u8> {
    let mut value = String::new();
    let indent = match place {
        Place::Whole => 0,
        Place::Defaults => 4,
        Place::Inputs => 6,
        Place::Version | Place::Runtime | Place::Tasks => 2,
    };
    if block_style {
        block(y, indent, &mut value);
    } else {
        value.push(' ');
        flow(y, &mut value);
        value.push('\n');
    }
    let text = match place {
        Place::Whole => {
            if block_style {
                value.trim_start_matches('\n').to_string()
            } else {
                value
            }
        }
        Place::Defaults => format!("flow:\n  graph: a >> b\n  defaults:{value}"),
        Place::Inputs => {
            format!("flow:\n  graph: t\ntasks:\n  t:\n    callable: m:f\n    inputs:{value}")
        }
        Place::Version => format!("version:{value}flow:\n  graph: a\n"),
        Place::Runtime => format!("flow:\n  graph: a\nruntime:\n  expose_env:{value}"),
        Place::Tasks => format!("flow:\n  graph: a\ntasks:{value}"),
    };
    let mut raw = match twist {
        Twist::Crlf => text.replace('\n', "\r\n").into_bytes(),
        Twist::SecondDocument => format!("{text}---\n{text}").into_bytes(),
        Twist::Directive => format!("%YAML 1.1\n---\n{text}").into_bytes(),
        _ => text.into_bytes(),
    };
    let prefix: &[u8] = match twist {
        Twist::Utf8Bom => &[0xEF, 0xBB, 0xBF],
        Twist::Utf16Bom => &[0xFF, 0xFE],
        _ => &[],
    };
    raw.splice(0..0, prefix.iter().copied());
    raw
}

fn place() -> impl Strategy<Value = Place> {
    prop::sample::select(vec![
        Place::Whole,
        Place::Defaults,
        Place::Defaults,
        Place::Inputs,
        Place::Version,
        Place::Runtime,
        Place::Tasks,
    ])
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        6 => Just(Twist::None),
        1 => prop::sample::select(vec![
            Twist::Utf8Bom,
            Twist::Utf16Bom,
            Twist::Crlf,
            Twist::SecondDocument,
            Twist::Directive,
        ]),
    ]
}

/// A task's `callable`, `inputs` and `outputs`.
type TaskValues = (Option<String>, Map<String, Value>, Vec<String>);

/// A flow.yaml every rule accepts, as the values it stands for.
#[derive(Debug, Clone, PartialEq)]
struct ValidFlow {
    graph: String,
    defaults: Map<String, Value>,
    tasks: IndexMap<String, TaskValues>,
    expose_env: Vec<String>,
}

impl ValidFlow {
    fn of(wf: &Workflow) -> Self {
        ValidFlow {
            graph: wf.flow.graph.clone(),
            defaults: wf.flow.defaults.clone(),
            tasks: wf
                .tasks
                .iter()
                .map(|(name, t)| {
                    let spec = (t.callable.clone(), t.inputs.clone(), t.outputs.clone());
                    (name.clone(), spec)
                })
                .collect(),
            expose_env: wf.runtime.expose_env.clone(),
        }
    }
}

/// A YAML double-quoted scalar of `s`: printable ASCII as is, everything else escaped.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A YAML 1.1 scalar for a JSON value (floats need a `.` and a signed exponent there).
fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => {
            let sci = format!("{:e}", n.as_f64().unwrap());
            let (mantissa, exp) = sci.split_once('e').unwrap();
            let mantissa = if mantissa.contains('.') {
                mantissa.to_string()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_string()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(_) | Value::Object(_) => unreachable!("collections are not scalars"),
    }
}

fn yaml_value(v: &Value, block_style: bool, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if block_style && !map.is_empty() => {
            out.push('\n');
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", quoted(k)));
                yaml_value(v, block_style, indent + 2, out);
            }
        }
        Value::Array(items) if block_style && !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&format!("{pad}-"));
                yaml_value(item, block_style, indent + 2, out);
            }
        }
        other => {
            out.push(' ');
            yaml_flow(other, out);
            out.push('\n');
        }
    }
}

fn yaml_flow(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    let mut s = format!("{}: ", quoted(k));
                    yaml_flow(v, &mut s);
                    s
                })
                .collect();
            out.push_str(&format!("{{{}}}", pairs.join(", ")));
        }
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| {
                    let mut s = String::new();
                    yaml_flow(v, &mut s);
                    s
                })
                .collect();
            out.push_str(&format!("[{}]", items.join(", ")));
        }
        scalar => out.push_str(&yaml_scalar(scalar)),
    }
}

fn write_flow(flow: &ValidFlow, block_style: bool) -> String {
    let mut out = format!("version: 1\nflow:\n  graph: {}\n", quoted(&flow.graph));
    out.push_str("  defaults:");
    yaml_value(
        &Value::Object(flow.defaults.clone()),
        block_style,
        4,
        &mut out,
    );
    if !flow.tasks.is_empty() {
        out.push_str("tasks:\n");
        for (name, (callable, inputs, outputs)) in &flow.tasks {
            out.push_str(&format!("  {}:\n", quoted(name)));
            if let Some(callable) = callable {
                out.push_str(&format!("    callable: {}\n", quoted(callable)));
            }
            out.push_str("    inputs:");
            yaml_value(&Value::Object(inputs.clone()), block_style, 6, &mut out);
            let outputs = Value::Array(outputs.iter().cloned().map(Value::String).collect());
            out.push_str("    outputs:");
            yaml_value(&outputs, block_style, 6, &mut out);
        }
    }
    let env = Value::Array(flow.expose_env.iter().cloned().map(Value::String).collect());
    out.push_str("runtime:\n  expose_env:");
    yaml_value(&env, block_style, 4, &mut out);
    out
}

/// JSON values a flow.yaml can carry: no NaN, nothing deeper than the loader allows.
fn flow_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            flow_map(inner).prop_map(Value::Object),
        ]
    })
}

fn flow_map(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((text(), values), 0..5).prop_map(|pairs| pairs.into_iter().collect())
}

fn valid_flow() -> impl Strategy<Value = ValidFlow> {
    let non_blank = text()
        .prop_filter("not blank", |s| !py_strip(s).is_empty())
        .boxed();
    let task = (
        prop::option::of("[a-z_.]{1,8}:[a-z_]{1,8}"),
        flow_map(flow_value()),
        prop::collection::vec(text(), 0..3),
    );
    (
        non_blank.clone(),
        flow_map(flow_value()),
        prop::collection::vec((non_blank, task), 0..4),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(graph, defaults, tasks, expose_env)| ValidFlow {
            graph,
            defaults,
            tasks: tasks.into_iter().collect(),
            expose_env,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_answered(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check(&raw, CASE_BUDGET);
    }

    #[test]
    fn mutated_seeds_are_answered(
        seed in prop::sample::select(small_seeds()),
        mutations in prop::collection::vec(mutation(), 1..12),
    ) {
        let raw = mutate(seed, &mutations);
        let first = check(&raw, CASE_BUDGET);
        prop_assert_eq!(first, parse_workflow_yaml(&raw), "not deterministic");
    }

    #[test]
    fn generated_documents_are_answered(
        y in node(),
        place in place(),
        block_style in any::<bool>(),
        twist in twist(),
    ) {
        let raw = render(&y, place, block_style, twist);
        let first = check(&raw, CASE_BUDGET);
        prop_assert_eq!(first, parse_workflow_yaml(&raw), "not deterministic");
    }

    /// Oracle: a flow written from values reads back as those values, in block and in flow
    /// style, and writing what was read gives the same flow again.
    #[test]
    fn valid_flows_read_back_their_values(flow in valid_flow(), block_style in any::<bool>()) {
        let raw = write_flow(&flow, block_style);
        let wf = check(raw.as_bytes(), CASE_BUDGET)
            .map_err(|e| TestCaseError::fail(format!("{e:?} for\n{raw}")))?;
        let read = ValidFlow::of(&wf);
        prop_assert_eq!(&read, &flow, "{}", raw);
        let again = write_flow(&read, !block_style);
        let wf2 = parse_workflow_yaml(again.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?} for\n{again}")))?;
        prop_assert_eq!(ValidFlow::of(&wf2), read);
    }
}
