//! flow.yaml validation (§8), shared by the gateway (`POST /runs/yaml`) and the worker (YAML
//! path), with the 0.5.1 reasons in the 0.5.1 evaluation order.
//!
//! The file is read like Python's `yaml.safe_load` (YAML 1.1, see [`pyyaml`]): `yes`/`no`/
//! `on`/`off` are booleans, `010` is 8, `0x1F` is 31, `1:30` is 90, `1e3` is a string (a float
//! needs a `.`), `2024-01-01` is a date. Parsing with a YAML 1.2 library's own typing would
//! change the params a flow receives (`debug: yes` → `"yes"` instead of `true`), so we use
//! yaml-rust2 only for events and type scalars ourselves.
//!
//! `flow.defaults` become the run's params (JSON) and task `inputs` become JSON too. Values
//! Python's `json.dumps` cannot encode made 0.5.1 answer 500 (§14 item 22); here:
//! * dates and timestamps become their ISO-8601 text (`date.isoformat()` /
//!   `datetime.isoformat()`), as keys and as values;
//! * NaN/infinite floats, `!!binary` bytes, `!!set`s, nesting deeper than
//!   [`MAX_VALUE_DEPTH`] and alias expansions beyond [`MAX_VALUE_NODES`] are rejected with the
//!   reason `unsupported_value: <path>: <what>` (ours; evaluated after every 0.5.1 check);
//! * integers beyond 64 bits become floats; `!!omap`/`!!pairs` become lists of `[key, value]`.
//!
//! Hostile documents cost bounded time and memory: merge keys (`<<`) are reduced to one pair per
//! key as they are expanded and may copy at most 1,000,000 pairs in all (`too_large`), aliases may
//! not nest collections deeper than 490 levels (`too_large`; a chain of them made a tree no
//! recursive walk survives), duplicate keys are found through a hash (linear, `.nan` keys
//! included), mapping keys longer than 1024 characters are refused as PyYAML's scanner refuses
//! them (`invalid_yaml`), and a `version` other than 1 is
//! `unsupported_version` (0.5.1 accepted any integer). Callers on an async executor still run
//! the parse on a blocking thread: a 256 KiB document may take tens of milliseconds.
//!
//! `invalid_bytes` (a non-`bytes` argument in Python) cannot happen with `&[u8]`.

mod pyyaml;

use std::fmt;
use std::rc::Rc;

use indexmap::IndexMap;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::python::{float_repr, is_py_space};
use pyyaml::Py;

/// Deepest nesting of a converted `defaults`/`inputs` value. serde_json readers stop at 128
/// levels and params sit two levels deep in a snapshot or job, so deeper values would make
/// snapshots unreadable to Rust readers.
pub const MAX_VALUE_DEPTH: usize = 100;
/// Most JSON nodes the converted `defaults` and `inputs` may hold together (guards against
/// alias "billion laughs" expansion; a 256 KiB file without aliases stays far below).
pub const MAX_VALUE_NODES: usize = 1_000_000;

/// sha256 (lower-case hex) and length of the raw flow.yaml bytes, stored in the job and the
/// snapshot as `workflow_yaml_sha256` / `workflow_yaml_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkflowDigest {
    pub sha256: String,
    pub bytes: u64,
}

impl WorkflowDigest {
    /// Digest of `raw`.
    #[must_use]
    pub fn of(raw: &[u8]) -> Self {
        WorkflowDigest {
            sha256: hex::encode(Sha256::digest(raw)),
            bytes: raw.len() as u64,
        }
    }
}

/// The `flow` section.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSpec {
    /// The graph expression text (non-blank).
    pub graph: String,
    /// Default params (the run's `params` on the YAML path).
    pub defaults: Map<String, Value>,
}

/// One `tasks.<name>` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// `module:attr`.
    pub callable: Option<String>,
    pub inputs: Map<String, Value>,
    pub outputs: Vec<String>,
}

/// The `runtime` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeSpec {
    /// Accepted; unused by 0.5.1 and pyoco.
    pub expose_env: Vec<String>,
}

/// A validated flow.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// `int(version)`, default 1.
    pub version: i64,
    pub flow: FlowSpec,
    /// Tasks in file order.
    pub tasks: IndexMap<String, TaskSpec>,
    pub runtime: RuntimeSpec,
    pub digest: WorkflowDigest,
}

impl Workflow {
    /// The first task (in file order) whose `callable` names a module outside `allowed`, with
    /// that module: `None` when `allowed` is empty (anything goes, as 0.5.1) or every callable
    /// is inside. A module is inside a listed name when it is that name or below it
    /// (`corp.etl` allows `corp.etl` and `corp.etl.jobs`, not `corp.etlx`). Tasks without a
    /// `callable` come from the worker's own task discovery and are not checked.
    #[must_use]
    pub fn disallowed_module(&self, allowed: &[String]) -> Option<(&str, &str)> {
        if allowed.is_empty() {
            return None;
        }
        self.tasks.iter().find_map(|(name, task)| {
            let callable = task.callable.as_deref()?;
            let module = callable.split_once(':').map_or(callable, |(m, _)| m).trim();
            let inside = allowed.iter().any(|prefix| {
                module == prefix
                    || module
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            });
            (!inside).then_some((name.as_str(), module))
        })
    }
}

/// Why a flow.yaml was rejected. [`WorkflowYamlError::reason`] (also `Display`) is the 0.5.1
/// reason string; the HTTP detail is always `invalid workflow yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowYamlError {
    /// Not UTF-8.
    InvalidUtf8,
    /// Not YAML PyYAML's `safe_load` accepts; `detail` says why (for logs).
    InvalidYaml {
        detail: String,
    },
    /// The document is not a mapping (also: empty file).
    InvalidYamlRoot,
    UnsupportedKeyFlows,
    UnsupportedKeyDiscovery,
    /// Python `repr`s of the unknown keys, sorted.
    UnknownTopLevelKeys(Vec<String>),
    MissingFlow,
    InvalidFlow,
    UnknownFlowKeys(Vec<String>),
    MissingFlowGraph,
    InvalidFlowDefaults,
    InvalidTasks,
    InvalidTaskName,
    InvalidTaskConfig(String),
    UnknownTaskKeys {
        task: String,
        keys: Vec<String>,
    },
    InvalidTaskCallable(String),
    InvalidTaskInputs(String),
    InvalidTaskOutputs(String),
    InvalidRuntime,
    UnknownRuntimeKeys(Vec<String>),
    InvalidRuntimeExposeEnv,
    InvalidVersion,
    /// Ours: `version` is an integer other than 1 (0.5.1 accepted any; there is only 1).
    UnsupportedVersion(i64),
    /// Ours: the document expands beyond a budget (merge keys copying more than
    /// 1,000,000 pairs, aliases nesting collections deeper than 490 levels); `what` says which.
    TooLarge {
        what: String,
    },
    /// Ours: a `defaults`/`inputs` value that JSON cannot carry.
    UnsupportedValue {
        path: String,
        what: String,
    },
}

impl WorkflowYamlError {
    /// The reason string, exactly as 0.5.1 logs it (e.g. `unknown_top_level_keys: ['a', 'b']`,
    /// `unknown_task_keys: t1: ['use']`, `invalid_task_callable: t1`).
    #[must_use]
    pub fn reason(&self) -> String {
        use WorkflowYamlError as E;
        let list = |keys: &[String]| format!("[{}]", keys.join(", "));
        match self {
            E::InvalidUtf8 => "invalid_utf8".into(),
            E::InvalidYaml { .. } => "invalid_yaml".into(),
            E::InvalidYamlRoot => "invalid_yaml_root".into(),
            E::UnsupportedKeyFlows => "unsupported_key_flows".into(),
            E::UnsupportedKeyDiscovery => "unsupported_key_discovery".into(),
            E::UnknownTopLevelKeys(k) => format!("unknown_top_level_keys: {}", list(k)),
            E::MissingFlow => "missing_flow".into(),
            E::InvalidFlow => "invalid_flow".into(),
            E::UnknownFlowKeys(k) => format!("unknown_flow_keys: {}", list(k)),
            E::MissingFlowGraph => "missing_flow_graph".into(),
            E::InvalidFlowDefaults => "invalid_flow_defaults".into(),
            E::InvalidTasks => "invalid_tasks".into(),
            E::InvalidTaskName => "invalid_task_name".into(),
            E::InvalidTaskConfig(t) => format!("invalid_task_config: {t}"),
            E::UnknownTaskKeys { task, keys } => {
                format!("unknown_task_keys: {task}: {}", list(keys))
            }
            E::InvalidTaskCallable(t) => format!("invalid_task_callable: {t}"),
            E::InvalidTaskInputs(t) => format!("invalid_task_inputs: {t}"),
            E::InvalidTaskOutputs(t) => format!("invalid_task_outputs: {t}"),
            E::InvalidRuntime => "invalid_runtime".into(),
            E::UnknownRuntimeKeys(k) => format!("unknown_runtime_keys: {}", list(k)),
            E::InvalidRuntimeExposeEnv => "invalid_runtime_expose_env".into(),
            E::InvalidVersion => "invalid_version".into(),
            E::UnsupportedVersion(v) => format!("unsupported_version: {v} (only version 1 exists)"),
            E::TooLarge { what } => format!("too_large: {what}"),
            E::UnsupportedValue { path, what } => format!("unsupported_value: {path}: {what}"),
        }
    }

    /// Extra detail for logs (the YAML parser's message), when there is one.
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        match self {
            WorkflowYamlError::InvalidYaml { detail } => Some(detail),
            _ => None,
        }
    }
}

impl fmt::Display for WorkflowYamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for WorkflowYamlError {}

const TOP_LEVEL_KEYS: [&str; 4] = ["version", "flow", "tasks", "runtime"];
const FLOW_KEYS: [&str; 2] = ["graph", "defaults"];
const TASK_KEYS: [&str; 3] = ["callable", "inputs", "outputs"];
const RUNTIME_KEYS: [&str; 1] = ["expose_env"];

type Pairs = [(Rc<Py>, Rc<Py>)];

/// `sorted(set(keys) - allowed)` as Python `repr`s; empty when every key is allowed.
fn unknown_keys(pairs: &Pairs, allowed: &[&str]) -> Vec<String> {
    let unknown: Vec<&Rc<Py>> = pairs
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !k.as_str().is_some_and(|s| allowed.contains(&s)))
        .collect();
    let mut strs: Vec<&str> = unknown.iter().filter_map(|k| k.as_str()).collect();
    if strs.len() == unknown.len() {
        strs.sort_unstable();
        return strs.into_iter().map(crate::python::repr_str).collect();
    }
    // Mixed key types: Python's sorted() would raise; order by repr for a stable message.
    let mut reprs: Vec<String> = unknown.iter().map(|k| k.repr()).collect();
    reprs.sort();
    reprs
}

/// `x or default` where the default is an empty dict/list: `None` when falsy.
fn or_empty(v: Option<&Rc<Py>>) -> Option<&Rc<Py>> {
    v.filter(|v| v.truthy())
}

fn is_blank(s: &str) -> bool {
    s.trim_matches(is_py_space).is_empty()
}

/// A list of strings (`isinstance(x, list) and all(isinstance(i, str) ...)`).
fn str_list(v: Option<&Rc<Py>>) -> Option<Vec<String>> {
    match or_empty(v).map(|v| &**v) {
        None => Some(Vec::new()),
        Some(Py::List(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(_) => None,
    }
}

/// Python `int(x)` for the `version` key; values outside `i64` are rejected.
fn py_int_version(v: &Py) -> Option<i64> {
    match v {
        Py::Bool(b) => Some(i64::from(*b)),
        Py::Int(i) => i64::try_from(*i).ok(),
        Py::Float(f) if f.is_finite() => {
            let t = f.trunc();
            (t >= i64::MIN as f64 && t <= i64::MAX as f64).then_some(t as i64)
        }
        Py::Str(s) => parse_decimal_int(s),
        Py::Bytes(b) => std::str::from_utf8(b).ok().and_then(parse_decimal_int),
        _ => None,
    }
}

/// Python `int(str)`: whitespace, sign, `_` between digits, no leading zeros unless all zero.
fn parse_decimal_int(s: &str) -> Option<i64> {
    let t = s.trim_matches(is_py_space);
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = crate::python::strip_digit_underscores(body)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Converts YAML values to JSON with the rules in the module doc.
struct JsonConverter {
    nodes: usize,
}

impl JsonConverter {
    fn unsupported(path: &str, what: impl Into<String>) -> WorkflowYamlError {
        WorkflowYamlError::UnsupportedValue {
            path: path.to_string(),
            what: what.into(),
        }
    }

    fn value(&mut self, v: &Py, path: &str, depth: usize) -> Result<Value, WorkflowYamlError> {
        self.nodes += 1;
        if self.nodes > MAX_VALUE_NODES {
            return Err(Self::unsupported(
                path,
                format!("more than {MAX_VALUE_NODES} values after alias expansion"),
            ));
        }
        if depth > MAX_VALUE_DEPTH {
            return Err(Self::unsupported(
                path,
                format!("nested deeper than {MAX_VALUE_DEPTH} levels"),
            ));
        }
        Ok(match v {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(*b),
            Py::Int(i) => {
                if let Ok(n) = i64::try_from(*i) {
                    Value::Number(n.into())
                } else if let Ok(n) = u64::try_from(*i) {
                    Value::Number(n.into())
                } else {
                    float_number(*i as f64, path)?
                }
            }
            Py::HugeInt(f) => float_number(*f, path)?,
            Py::Float(f) => float_number(*f, path)?,
            Py::Str(s) => Value::String(s.clone()),
            Py::Date(d) => Value::String(d.isoformat()),
            Py::DateTime(dt) => Value::String(dt.isoformat()),
            Py::Bytes(_) => return Err(Self::unsupported(path, "binary data (!!binary)")),
            Py::Set(_) => return Err(Self::unsupported(path, "a set (!!set)")),
            Py::List(items) | Py::Tuple(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, &format!("{path}[{i}]"), depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Py::Dict(pairs) => Value::Object(self.object(pairs, path, depth)?),
        })
    }

    fn object(
        &mut self,
        pairs: &Pairs,
        path: &str,
        depth: usize,
    ) -> Result<Map<String, Value>, WorkflowYamlError> {
        let mut out = Map::new();
        for (k, v) in pairs {
            let key = json_key(k).ok_or_else(|| {
                Self::unsupported(&format!("{path}[{}]", k.repr()), "a key JSON cannot hold")
            })?;
            let child = if matches!(**k, Py::Str(_)) {
                format!("{path}.{key}")
            } else {
                format!("{path}[{}]", k.repr())
            };
            let value = self.value(v, &child, depth + 1)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

fn float_number(f: f64, path: &str) -> Result<Value, WorkflowYamlError> {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| {
        JsonConverter::unsupported(
            path,
            if f.is_nan() {
                "NaN (.nan)"
            } else {
                "an infinite float (.inf)"
            },
        )
    })
}

/// The JSON object key Python's `json.dumps` writes for a dict key (dates: ISO text).
fn json_key(k: &Py) -> Option<String> {
    Some(match k {
        Py::Str(s) => s.clone(),
        Py::Int(i) => i.to_string(),
        Py::HugeInt(f) => format!("{f:.0}"),
        Py::Float(f) if f.is_nan() => "NaN".into(),
        Py::Float(f) if f.is_infinite() => {
            if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }
        }
        Py::Float(f) => float_repr(*f),
        Py::Bool(b) => b.to_string(),
        Py::None => "null".into(),
        Py::Date(d) => d.isoformat(),
        Py::DateTime(dt) => dt.isoformat(),
        _ => return None,
    })
}

/// Validate a flow.yaml like 0.5.1's `parse_workflow_yaml_bytes(raw, require_flow=True)`.
///
/// # Errors
/// The first failing rule, as a [`WorkflowYamlError`] whose reason 0.5.1 would log.
pub fn parse_workflow_yaml(raw: &[u8]) -> Result<Workflow, WorkflowYamlError> {
    use WorkflowYamlError as E;
    let digest = WorkflowDigest::of(raw);
    let text = std::str::from_utf8(raw).map_err(|_| E::InvalidUtf8)?;
    let data = pyyaml::safe_load(text).map_err(|err| match err {
        pyyaml::LoadError::Invalid(detail) => E::InvalidYaml { detail },
        pyyaml::LoadError::TooLarge(what) => E::TooLarge { what },
    })?;
    let data = data.ok_or(E::InvalidYamlRoot)?;
    let top = data.as_dict().ok_or(E::InvalidYamlRoot)?;

    if data.get("flows").is_some() {
        return Err(E::UnsupportedKeyFlows);
    }
    if data.get("discovery").is_some() {
        return Err(E::UnsupportedKeyDiscovery);
    }
    let unknown = unknown_keys(top, &TOP_LEVEL_KEYS);
    if !unknown.is_empty() {
        return Err(E::UnknownTopLevelKeys(unknown));
    }

    let flow_data = match data.get("flow") {
        None => return Err(E::MissingFlow),
        Some(v) if matches!(**v, Py::None) => return Err(E::MissingFlow),
        Some(v) => v,
    };
    let flow_pairs = flow_data.as_dict().ok_or(E::InvalidFlow)?;
    let unknown = unknown_keys(flow_pairs, &FLOW_KEYS);
    if !unknown.is_empty() {
        return Err(E::UnknownFlowKeys(unknown));
    }
    let graph = match flow_data.get("graph").and_then(|g| g.as_str()) {
        Some(g) if !is_blank(g) => g.to_string(),
        _ => return Err(E::MissingFlowGraph),
    };
    let defaults = or_empty(flow_data.get("defaults"));
    if defaults.is_some_and(|d| d.as_dict().is_none()) {
        return Err(E::InvalidFlowDefaults);
    }

    let tasks_data = or_empty(data.get("tasks"));
    let task_pairs: &Pairs = match tasks_data {
        None => &[],
        Some(t) => t.as_dict().ok_or(E::InvalidTasks)?,
    };
    let mut task_inputs: Vec<(String, Option<Rc<Py>>)> = Vec::new();
    let mut tasks: IndexMap<String, TaskSpec> = IndexMap::new();
    for (name, conf) in task_pairs {
        let name = match name.as_str() {
            Some(n) if !is_blank(n) => n.to_string(),
            _ => return Err(E::InvalidTaskName),
        };
        let conf_pairs = conf
            .as_dict()
            .ok_or_else(|| E::InvalidTaskConfig(name.clone()))?;
        let unknown = unknown_keys(conf_pairs, &TASK_KEYS);
        if !unknown.is_empty() {
            return Err(E::UnknownTaskKeys {
                task: name,
                keys: unknown,
            });
        }
        let callable = match conf.get("callable").map(|c| &**c) {
            None | Some(Py::None) => None,
            Some(Py::Str(s)) if s.contains(':') => Some(s.clone()),
            Some(_) => return Err(E::InvalidTaskCallable(name)),
        };
        let inputs = or_empty(conf.get("inputs"));
        if inputs.is_some_and(|i| i.as_dict().is_none()) {
            return Err(E::InvalidTaskInputs(name));
        }
        let outputs =
            str_list(conf.get("outputs")).ok_or_else(|| E::InvalidTaskOutputs(name.clone()))?;
        task_inputs.push((name.clone(), inputs.cloned()));
        tasks.insert(
            name,
            TaskSpec {
                callable,
                inputs: Map::new(),
                outputs,
            },
        );
    }

    let runtime_data = or_empty(data.get("runtime"));
    if let Some(rt) = runtime_data {
        let rt_pairs = rt.as_dict().ok_or(E::InvalidRuntime)?;
        let unknown = unknown_keys(rt_pairs, &RUNTIME_KEYS);
        if !unknown.is_empty() {
            return Err(E::UnknownRuntimeKeys(unknown));
        }
    }
    let expose_env = str_list(runtime_data.and_then(|rt| rt.get("expose_env")))
        .ok_or(E::InvalidRuntimeExposeEnv)?;

    let version = match data.get("version") {
        None => 1,
        Some(v) => py_int_version(v).ok_or(E::InvalidVersion)?,
    };
    if version != 1 {
        return Err(E::UnsupportedVersion(version));
    }

    let mut conv = JsonConverter { nodes: 0 };
    let defaults = match defaults.and_then(|d| d.as_dict()) {
        Some(pairs) => conv.object(pairs, "flow.defaults", 0)?,
        None => Map::new(),
    };
    for (name, inputs) in task_inputs {
        if let Some(pairs) = inputs.as_deref().and_then(Py::as_dict) {
            let converted = conv.object(pairs, &format!("tasks.{name}.inputs"), 0)?;
            if let Some(task) = tasks.get_mut(&name) {
                task.inputs = converted;
            }
        }
    }

    Ok(Workflow {
        version,
        flow: FlowSpec { graph, defaults },
        tasks,
        runtime: RuntimeSpec { expose_env },
        digest,
    })
}
