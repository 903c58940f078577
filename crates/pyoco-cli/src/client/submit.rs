//! `submit` (`POST /runs`) and `submit-yaml` (`POST /runs/yaml`).
//!
//! `submit` builds the run's params from three sources, later ones overriding earlier ones key
//! by key (Python's `dict.update`: a key keeps its first position): `--params-file` (a JSON
//! object, else a YAML mapping), `--params` (a JSON object), then each `--param key=value`
//! (the value parsed as JSON, else kept as text; an empty value is `""`).
//!
//! `submit-yaml` uploads the flow.yaml as 0.5.1 does: read as UTF-8 text with universal newlines
//! (`\r\n` and `\r` become `\n`, so the gateway's `workflow_yaml_sha256` matches the Python
//! client's), sent as the `workflow` part named `flow.yaml` (`application/x-yaml`).

use std::path::Path;

use clap::Args;
use pyoco_wire::python;
use reqwest::{multipart, Method};
use serde_json::{Map, Value};

use super::{error::CliError, gateway::Gateway, output::Out, parse_tags};

const SUBMIT_HINT: &str = "pyoco-client submit --flow-name main --param x=1 --tag default";

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct SubmitArgs {
    /// Name of the flow the worker runs.
    #[arg(long, value_name = "NAME", default_value = "main")]
    pub flow_name: String,
    /// Params as a JSON object, e.g. '{"x":1}' (overrides --params-file).
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// File with the params: a JSON object, or a YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<String>,
    /// One param as KEY=VALUE; VALUE is parsed as JSON, else kept as text (repeatable;
    /// overrides --params and --params-file).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub param: Vec<String>,
    /// Routing tag: the queue the run goes to (default: the gateway's PYOCO_DEFAULT_TAG).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Comma-separated descriptive tags stored with the run (default: [TAG]).
    #[arg(long, value_name = "CSV")]
    pub tags: Option<String>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub(crate) struct SubmitYamlArgs {
    /// Path to the flow.yaml to run.
    #[arg(long, value_name = "FILE", required = true)]
    pub workflow_file: String,
    /// Name of the run's flow.
    #[arg(long, value_name = "NAME", required = true)]
    pub flow_name: String,
    /// Routing tag: the queue the run goes to.
    #[arg(long, value_name = "TAG", required = true)]
    pub tag: String,
}

/// `pyoco-client submit`.
pub(crate) async fn submit(args: &SubmitArgs, gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let params = build_params(args)?;
    let mut body = Map::new();
    body.insert("flow_name".into(), Value::String(args.flow_name.clone()));
    body.insert("params".into(), Value::Object(params));
    if let Some(tag) = &args.tag {
        body.insert("tag".into(), Value::String(tag.clone()));
    }
    if let Some(tags) = parse_tags(args.tags.as_deref()) {
        body.insert(
            "tags".into(),
            Value::Array(tags.into_iter().map(Value::String).collect()),
        );
    }
    let request = gw
        .request(Method::POST, gw.url(&["runs"], &Vec::new()))
        .json(&Value::Object(body));
    out.json(&gw.send_json(request).await?)
}

/// `pyoco-client submit-yaml`.
pub(crate) async fn submit_yaml(
    args: &SubmitYamlArgs,
    gw: &Gateway,
    out: &mut Out,
) -> Result<(), CliError> {
    let text = read_text(Path::new(&args.workflow_file), "--workflow-file")?;
    let part = multipart::Part::bytes(text.into_bytes())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .expect("a valid MIME type");
    let form = multipart::Form::new()
        .text("flow_name", args.flow_name.clone())
        .text("tag", args.tag.clone())
        .part("workflow", part);
    let request = gw
        .request(Method::POST, gw.url(&["runs", "yaml"], &Vec::new()))
        .multipart(form);
    out.json(&gw.send_json(request).await?)
}

/// The params of `submit`: file < `--params` < `--param`.
pub(crate) fn build_params(args: &SubmitArgs) -> Result<Map<String, Value>, CliError> {
    let mut params = Map::new();
    if let Some(path) = args.params_file.as_deref().filter(|p| !p.is_empty()) {
        params.extend(parse_params_file(Path::new(path))?);
    }
    if let Some(raw) = &args.params {
        params.extend(parse_json_object(raw)?);
    }
    params.extend(parse_param_assignments(&args.param)?);
    Ok(params)
}

/// `--params`: a JSON object.
fn parse_json_object(raw: &str) -> Result<Map<String, Value>, CliError> {
    match pyoco_wire::value_from_python_json(raw.as_bytes()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CliError::input("--params must be JSON object", SUBMIT_HINT)),
        Err(e) => Err(CliError::Input {
            reason: "--params must be valid JSON object".into(),
            detail: Some(e.to_string()),
            usage: None,
            hint: format!("{SUBMIT_HINT} (or --params '{{\"x\": 1}}')"),
        }),
    }
}

/// `--param key=value` items, in order (a later key overrides an earlier one).
fn parse_param_assignments(items: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for raw in items {
        let Some((key, value)) = raw.split_once('=') else {
            return Err(CliError::input(
                format!("--param must be key=value ({})", python::repr_str(raw)),
                "pyoco-client submit --param x=1 --param name=alice",
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(CliError::input(
                format!("--param key is empty ({})", python::repr_str(raw)),
                "pyoco-client submit --param x=1",
            ));
        }
        let value = if value.is_empty() {
            Value::String(String::new())
        } else {
            pyoco_wire::value_from_python_json(value.as_bytes())
                .unwrap_or_else(|_| Value::String(value.to_string()))
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// `--params-file`: a JSON object, else a YAML mapping.
fn parse_params_file(path: &Path) -> Result<Map<String, Value>, CliError> {
    let text = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}")))
        .map_err(|e| {
            CliError::input(
                format!("failed to read --params-file: {} ({e})", path.display()),
                "check file path and read permission",
            )
        })?;
    let json_error = match pyoco_wire::value_from_python_json(text.as_bytes()) {
        Ok(value) => return top_level_object(value, path),
        Err(e) => e,
    };
    match yaml_to_json(&text) {
        Ok(value) => top_level_object(value, path),
        Err(yaml_error) => Err(CliError::Input {
            reason: format!(
                "--params-file must be JSON/YAML object ({})",
                path.display()
            ),
            detail: Some(format!("json={json_error}; yaml={yaml_error}")),
            usage: None,
            hint: "file example: {\"x\":1} or x: 1".into(),
        }),
    }
}

fn top_level_object(value: Value, path: &Path) -> Result<Map<String, Value>, CliError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(CliError::input(
            format!(
                "--params-file must contain object at top level ({})",
                path.display()
            ),
            "file example: {\"x\":1}",
        )),
    }
}

/// A YAML document as JSON (`null` for an empty document).
///
/// YAML 1.2 core schema (yaml-rust2), where 0.5.1 uses PyYAML's YAML 1.1: `yes`/`no`/`on`/`off`
/// stay strings, and a duplicate key is an error instead of "last one wins". Keys become strings
/// the way `json.dumps` writes them (`1` → `"1"`, `true` → `"true"`, `~` → `"null"`).
fn yaml_to_json(text: &str) -> Result<Value, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [] => Ok(Value::Null),
        [doc] => yaml_value(doc),
        _ => Err("expected a single document in the stream, but found another document".into()),
    }
}

fn yaml_value(yaml: &yaml_rust2::Yaml) -> Result<Value, String> {
    use yaml_rust2::Yaml;
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(_) => {
            let f = yaml.as_f64().ok_or_else(|| "invalid float".to_string())?;
            python::float_value(f)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_value).collect::<Result<_, _>>()?),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                map.insert(yaml_key(k)?, yaml_value(v)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err("unsupported YAML node".into()),
    })
}

/// A mapping key as `json.dumps` writes it.
fn yaml_key(yaml: &yaml_rust2::Yaml) -> Result<String, String> {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        Yaml::Boolean(b) => Ok(b.to_string()),
        Yaml::Null => Ok("null".into()),
        Yaml::Real(_) => yaml
            .as_f64()
            .map(python::float_repr)
            .ok_or_else(|| "invalid float key".to_string()),
        _ => Err("found unhashable key (a list or mapping used as a key)".into()),
    }
}

/// A text file read like Python's `Path.read_text(encoding="utf-8")`: UTF-8, universal
/// newlines.
pub(super) fn read_text(path: &Path, flag: &str) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::FileIo {
        reason: format!("{}: {e}", path.display()),
        hint: format!("check the {flag} path and its read permission"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::input(
            format!("{flag} is not UTF-8 text: {} ({e})", path.display()),
            "save the file as UTF-8",
        )
    })?;
    Ok(universal_newlines(&text))
}

/// `\r\n` and lone `\r` become `\n`, as Python's text mode reads them.
fn universal_newlines(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(params_file: Option<&str>, params: Option<&str>, param: &[&str]) -> SubmitArgs {
        SubmitArgs {
            flow_name: "main".into(),
            params: params.map(str::to_string),
            params_file: params_file.map(str::to_string),
            param: param.iter().map(|s| s.to_string()).collect(),
            tag: None,
            tags: None,
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn file_then_params_then_param_each_override_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "p.yaml", "a: 1\nb: file\nc: file\nd: [1, 2]\n");
        let params = build_params(&args(
            Some(&file),
            Some(r#"{"b": "params", "c": "params", "e": true}"#),
            &[
                "c=param",
                "f=",
                "g=3.5",
                "h={\"k\": null}",
                "i= spaced out ",
            ],
        ))
        .unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"a": 1, "b": "params", "c": "param", "d": [1, 2], "e": true,
                   "f": "", "g": 3.5, "h": {"k": null}, "i": "spaced out"})
        );
    }

    #[test]
    fn param_values_are_json_else_text() {
        let p = parse_param_assignments(&[
            "n=1".into(),
            "s=\"quoted\"".into(),
            "t=plain text".into(),
            "b=false".into(),
            "z=null".into(),
            "x=a=b".into(),
            "l=[1,".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"n": 1, "s": "quoted", "t": "plain text", "b": false, "z": null,
                   "x": "a=b", "l": "[1,"})
        );
    }

    #[test]
    fn a_later_param_overrides_an_earlier_one() {
        let p = parse_param_assignments(&["x=1".into(), "y=2".into(), "x=3".into()]).unwrap();
        assert_eq!(python::dumps(&p), r#"{"x": 3, "y": 2}"#);
    }

    #[test]
    fn bad_params_are_0018_input_errors() {
        let e = parse_param_assignments(&["novalue".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("- reason: --param must be key=value ('novalue')"),
            "{e}"
        );
        let e = parse_param_assignments(&[" =1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("- reason: --param key is empty (' =1')"), "{e}");
        let e = parse_json_object("[1]").unwrap_err().to_string();
        assert!(e.starts_with("ERR-PYOCO-0018: "), "{e}");
        assert!(e.contains("- reason: --params must be JSON object"), "{e}");
        let e = parse_json_object("{x").unwrap_err().to_string();
        assert!(
            e.contains("- reason: --params must be valid JSON object"),
            "{e}"
        );
    }

    #[test]
    fn params_file_is_json_first_then_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let json_file = write(&dir, "p.json", r#"{"x": 1, "name": "caf\u00e9"}"#);
        assert_eq!(
            Value::Object(parse_params_file(Path::new(&json_file)).unwrap()),
            json!({"x": 1, "name": "café"})
        );
        let yaml_file = write(
            &dir,
            "p.yaml",
            "x: 1\nratio: 0.5\nname: alice\nempty:\nlist:\n  - a\n  - 2\nnested: {k: v}\n1: one\n",
        );
        assert_eq!(
            Value::Object(parse_params_file(Path::new(&yaml_file)).unwrap()),
            json!({"x": 1, "ratio": 0.5, "name": "alice", "empty": null, "list": ["a", 2],
                   "nested": {"k": "v"}, "1": "one"})
        );
    }

    #[test]
    fn params_file_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let list = write(&dir, "list.yaml", "- 1\n- 2\n");
        let e = parse_params_file(Path::new(&list)).unwrap_err().to_string();
        assert!(e.contains("must contain object at top level"), "{e}");
        let empty = write(&dir, "empty.yaml", "");
        let e = parse_params_file(Path::new(&empty))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must contain object at top level"), "{e}");
        let bad = write(&dir, "bad.yaml", "a: [1\n");
        let e = parse_params_file(Path::new(&bad)).unwrap_err().to_string();
        assert!(
            e.contains("- reason: --params-file must be JSON/YAML object"),
            "{e}"
        );
        assert!(e.contains("- detail: json="), "{e}");
        let e = parse_params_file(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("- reason: failed to read --params-file: "),
            "{e}"
        );
    }

    #[test]
    fn an_empty_params_file_flag_is_ignored_like_0_5_1() {
        assert!(build_params(&args(Some(""), None, &[])).unwrap().is_empty());
    }

    #[test]
    fn workflow_text_gets_universal_newlines() {
        assert_eq!(universal_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(universal_newlines("plain\n"), "plain\n");
    }
}
