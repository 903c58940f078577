//! flow.yaml validation: one test per 0.5.1 reason, in evaluation order. Every expected reason
//! was produced by running 0.5.1's `parse_workflow_yaml_bytes` on the same bytes.

use serde_json::json;

use pyoco_wire::{parse_workflow_yaml, WorkflowDigest, WorkflowYamlError};

fn reason(raw: &[u8]) -> String {
    match parse_workflow_yaml(raw) {
        Ok(_) => "OK".into(),
        Err(e) => {
            assert_eq!(e.to_string(), e.reason(), "Display is the reason");
            e.reason()
        }
    }
}

#[test]
fn invalid_utf8() {
    assert_eq!(reason(b"flow:\n  graph: a\xff\n"), "invalid_utf8");
}

#[test]
fn invalid_yaml() {
    let err = parse_workflow_yaml(b"flow: [unclosed\n").unwrap_err();
    assert_eq!(err.reason(), "invalid_yaml");
    assert!(err.detail().is_some_and(|d| !d.is_empty()));
}

#[test]
fn invalid_yaml_root() {
    assert_eq!(reason(b"- a\n- b\n"), "invalid_yaml_root");
    assert_eq!(reason(b""), "invalid_yaml_root", "empty file");
}

#[test]
fn unsupported_key_flows() {
    assert_eq!(reason(b"flows: {}\nzzz: 1\n"), "unsupported_key_flows");
    assert_eq!(
        reason(b"flows: {}\ndiscovery: {}\n"),
        "unsupported_key_flows"
    );
}

#[test]
fn unsupported_key_discovery() {
    assert_eq!(
        reason(b"discovery: {}\nflow: {graph: a}\n"),
        "unsupported_key_discovery"
    );
}

#[test]
fn unknown_top_level_keys() {
    assert_eq!(
        reason(b"flow: {graph: a}\npipes: {}\nalpha: 1\n"),
        "unknown_top_level_keys: ['alpha', 'pipes']"
    );
    assert_eq!(
        reason(b"flow: {graph: a}\n\"it's\": 1\n"),
        "unknown_top_level_keys: [\"it's\"]"
    );
    assert_eq!(reason(b"zzz: 1\n"), "unknown_top_level_keys: ['zzz']");
}

#[test]
fn missing_flow() {
    assert_eq!(reason(b"version: 1\n"), "missing_flow");
    assert_eq!(reason(b"flow:\n"), "missing_flow", "null flow");
}

#[test]
fn invalid_flow() {
    assert_eq!(reason(b"flow: a >> b\n"), "invalid_flow");
}

#[test]
fn unknown_flow_keys() {
    assert_eq!(
        reason(b"flow: {graph: a, name: x, Defaults: 1}\n"),
        "unknown_flow_keys: ['Defaults', 'name']"
    );
}

#[test]
fn missing_flow_graph() {
    assert_eq!(reason(b"flow: {defaults: {}}\n"), "missing_flow_graph");
    assert_eq!(reason(b"flow: {graph: '   '}\n"), "missing_flow_graph");
    assert_eq!(reason(b"flow: {graph: 5}\n"), "missing_flow_graph");
}

#[test]
fn invalid_flow_defaults() {
    assert_eq!(
        reason(b"flow: {graph: a, defaults: [1]}\n"),
        "invalid_flow_defaults"
    );
}

#[test]
fn invalid_tasks() {
    assert_eq!(reason(b"flow: {graph: a}\ntasks: [a]\n"), "invalid_tasks");
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: [1]\nruntime: [1]\nversion: x\n"),
        "invalid_tasks",
        "tasks are checked before runtime and version"
    );
}

#[test]
fn invalid_task_name() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {1: {}}\n"),
        "invalid_task_name"
    );
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {' ': {}}\n"),
        "invalid_task_name"
    );
}

#[test]
fn invalid_task_config() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: m:f}\n"),
        "invalid_task_config: t1"
    );
}

#[test]
fn unknown_task_keys() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {use: x, retries: 2}}\n"),
        "unknown_task_keys: t1: ['retries', 'use']"
    );
}

#[test]
fn invalid_task_callable() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {callable: nocolon}}\n"),
        "invalid_task_callable: t1"
    );
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {callable: 5}}\n"),
        "invalid_task_callable: t1"
    );
}

#[test]
fn invalid_task_inputs() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {inputs: [x]}}\n"),
        "invalid_task_inputs: t1"
    );
}

#[test]
fn invalid_task_outputs() {
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {outputs: [x, 1]}}\n"),
        "invalid_task_outputs: t1"
    );
    assert_eq!(
        reason(b"flow: {graph: a}\ntasks: {t1: {outputs: x}}\n"),
        "invalid_task_outputs: t1"
    );
}

#[test]
fn invalid_runtime() {
    assert_eq!(
        reason(b"flow: {graph: a}\nruntime: [x]\n"),
        "invalid_runtime"
    );
}

#[test]
fn unknown_runtime_keys() {
    assert_eq!(
        reason(b"flow: {graph: a}\nruntime: {env: x}\n"),
        "unknown_runtime_keys: ['env']"
    );
}

#[test]
fn invalid_runtime_expose_env() {
    assert_eq!(
        reason(b"flow: {graph: a}\nruntime: {expose_env: HOME}\n"),
        "invalid_runtime_expose_env"
    );
}

#[test]
fn invalid_version() {
    assert_eq!(
        reason(b"flow: {graph: a}\nversion: one\n"),
        "invalid_version"
    );
    assert_eq!(reason(b"flow: {graph: a}\nversion:\n"), "invalid_version");
    assert_eq!(
        reason(b"flow: {graph: a}\nversion: '1.5'\n"),
        "invalid_version"
    );
}

#[test]
fn version_is_python_int_and_only_1_exists() {
    let v = |raw: &[u8]| parse_workflow_yaml(raw).unwrap().version;
    assert_eq!(v(b"flow: {graph: a}\n"), 1);
    assert_eq!(v(b"flow: {graph: a}\nversion: 1.9\n"), 1);
    assert_eq!(v(b"flow: {graph: a}\nversion: ' 1 '\n"), 1);
    assert_eq!(v(b"flow: {graph: a}\nversion: true\n"), 1);
    // 0.5.1 accepted any integer; there is no version 2 of the format.
    assert_eq!(
        reason(b"flow: {graph: a}\nversion: 2.9\n"),
        "unsupported_version: 2 (only version 1 exists)"
    );
    assert_eq!(
        reason(b"flow: {graph: a}\nversion: ' 3 '\n"),
        "unsupported_version: 3 (only version 1 exists)"
    );
}

#[test]
fn falsy_sections_mean_empty() {
    let wf =
        parse_workflow_yaml(b"flow: {graph: a, defaults: 0}\ntasks: ''\nruntime: []\n").unwrap();
    assert!(wf.flow.defaults.is_empty());
    assert!(wf.tasks.is_empty());
    assert!(wf.runtime.expose_env.is_empty());
}

#[test]
fn defaults_are_typed_like_pyyaml_safe_load() {
    let raw = b"flow:\n  graph: a >> b\n  defaults: {debug: yes, mode: off, perm: 0755, hex: 0x1F, t: 1:30, e: 1e3, f: 1.5, n: ~, d: 2024-01-01, ts: 2024-01-01 12:00:00.5 +09:00, s: '2024-01-01'}\ntasks:\n  a: {callable: 'm:f', inputs: {x: $ctx.params.n}, outputs: [y]}\n  b: {}\n";
    let wf = parse_workflow_yaml(raw).unwrap();
    // 0.5.1 gives the same values; its dates are date/datetime objects (500 on json.dumps),
    // ours are their isoformat() text.
    assert_eq!(
        serde_json::Value::Object(wf.flow.defaults.clone()),
        json!({"debug": true, "mode": false, "perm": 493, "hex": 31, "t": 90, "e": "1e3",
               "f": 1.5, "n": null, "d": "2024-01-01", "ts": "2024-01-01T12:00:00.500000+09:00",
               "s": "2024-01-01"})
    );
    assert_eq!(wf.flow.graph, "a >> b");
    let names: Vec<&str> = wf.tasks.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(wf.tasks["a"].callable.as_deref(), Some("m:f"));
    assert_eq!(wf.tasks["a"].inputs["x"], json!("$ctx.params.n"));
    assert_eq!(wf.tasks["a"].outputs, vec!["y".to_string()]);
    assert_eq!(wf.digest, WorkflowDigest::of(raw));
    assert_eq!(wf.digest.bytes, raw.len() as u64);
}

#[test]
fn date_keys_become_iso_text() {
    let wf = parse_workflow_yaml(
        b"flow:\n  graph: a\n  defaults: {2024-01-01: x, 1: y, 1.5: z, true: w, null: v}\n",
    )
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(wf.flow.defaults),
        // `true == 1` in a Python dict: the key stays 1, the value is the last one.
        json!({"2024-01-01": "x", "1": "w", "1.5": "z", "null": "v"})
    );
}

#[test]
fn unsupported_values_are_rejected_with_their_path() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"flow:\n  graph: a\n  defaults: {x: .nan}\n",
            "unsupported_value: flow.defaults.x: NaN (.nan)",
        ),
        (
            b"flow:\n  graph: a\n  defaults: {x: [1, -.inf]}\n",
            "unsupported_value: flow.defaults.x[1]: an infinite float (.inf)",
        ),
        (
            b"flow:\n  graph: a\n  defaults: {b: !!binary aGk=}\n",
            "unsupported_value: flow.defaults.b: binary data (!!binary)",
        ),
        (
            b"flow:\n  graph: a\n  defaults: {s: !!set {a, b}}\n",
            "unsupported_value: flow.defaults.s: a set (!!set)",
        ),
        (
            b"flow: {graph: a}\ntasks:\n  t1: {inputs: {x: .inf}}\n",
            "unsupported_value: tasks.t1.inputs.x: an infinite float (.inf)",
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(reason(raw), want);
    }
}

#[test]
fn python_reasons_win_over_unsupported_values() {
    assert_eq!(
        reason(b"flow:\n  graph: a\n  defaults: {x: .nan}\nversion: x\n"),
        "invalid_version"
    );
}

#[test]
fn deep_defaults_are_rejected_before_json_readers_choke() {
    let mut nested = String::from("1");
    for _ in 0..120 {
        nested = format!("[{nested}]");
    }
    let raw = format!("flow:\n  graph: a\n  defaults: {{x: {nested}}}\n");
    let err = parse_workflow_yaml(raw.as_bytes()).unwrap_err();
    assert!(
        matches!(err, WorkflowYamlError::UnsupportedValue { .. }),
        "{err}"
    );
    assert!(err.reason().contains("nested deeper than 100 levels"));
}

#[test]
fn alias_bombs_are_bounded() {
    let mut raw = String::from(
        "flow:\n  graph: a\n  defaults:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..8 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        raw.push_str(&format!("    l{i}: &l{i} [{refs}]\n"));
    }
    let err = parse_workflow_yaml(raw.as_bytes()).unwrap_err();
    assert!(err.reason().contains("alias expansion"), "{err}");
}

#[test]
fn merge_keys_and_aliases_in_defaults() {
    let raw = b"flow:\n  graph: a\n  defaults:\n    base: &b {retries: 2, region: eu}\n    job:\n      <<: *b\n      region: us\n";
    let wf = parse_workflow_yaml(raw).unwrap();
    assert_eq!(
        wf.flow.defaults["job"],
        json!({"retries": 2, "region": "us"})
    );
}

#[test]
fn fixture_flow_yaml_is_valid() {
    let raw = std::fs::read(format!(
        "{}/tests/fixtures/flow.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let wf = parse_workflow_yaml(&raw).unwrap();
    assert_eq!(wf.flow.defaults["n"], json!(3));
    assert_eq!(
        wf.digest.sha256,
        "bef53d95c624471d16323d4c2c19343d52dada51ec2d0ddbe3c4d387bbaa8ab4"
    );
}

#[test]
fn disallowed_modules_are_found_by_module_and_dotted_prefix() {
    let wf = parse_workflow_yaml(
        b"flow:\n  graph: a >> b >> c\ntasks:\n  a:\n    callable: corp.etl.jobs:load\n  b:\n    callable: my_tasks:t\n  c: {}\n",
    )
    .unwrap();
    let allow = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(wf.disallowed_module(&[]), None, "empty: anything goes");
    assert_eq!(
        wf.disallowed_module(&allow(&["corp.etl", "my_tasks"])),
        None
    );
    assert_eq!(
        wf.disallowed_module(&allow(&["corp.etl"])),
        Some(("b", "my_tasks"))
    );
    assert_eq!(
        wf.disallowed_module(&allow(&["corp.et", "my_tasks"])),
        Some(("a", "corp.etl.jobs")),
        "a prefix is a whole module name, not a string prefix"
    );
    let os =
        parse_workflow_yaml(b"flow:\n  graph: x\ntasks:\n  x:\n    callable: os:system\n").unwrap();
    assert_eq!(
        os.disallowed_module(&allow(&["my_tasks"])),
        Some(("x", "os"))
    );
}

/// `m1: {<<: [*m0, *m0, …]}` eight levels deep: a kilobyte that took 0.5.1's loader (and ours
/// before) past 5 GB, as PyYAML copies every merged pair with its duplicates. Counted as PyYAML
/// would copy, it is refused like an alias bomb; three levels of the same are fine.
fn nested_merges(levels: usize) -> String {
    let mut raw = String::from("flow:\n  graph: a\n  defaults:\n    m0: &m0 {");
    raw.push_str(
        &(0..10)
            .map(|i| format!("k{i}: {i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    raw.push_str("}\n");
    for level in 1..=levels {
        let refs = vec![format!("*m{}", level - 1); 10].join(", ");
        raw.push_str(&format!(
            "    m{level}: &m{level} {{<<: [{refs}], own{level}: {level}}}\n"
        ));
    }
    raw
}

#[test]
fn nested_merge_bombs_are_too_large() {
    let raw = nested_merges(8);
    assert!(raw.len() < 1500, "{}", raw.len());
    assert_eq!(
        reason(raw.as_bytes()),
        "too_large: merge keys (<<) copy more than 1000000 key/value pairs"
    );
    let wf = parse_workflow_yaml(nested_merges(3).as_bytes()).unwrap();
    let m3 = wf.flow.defaults["m3"].as_object().unwrap();
    // k0..k9 first (merged, first position), then own1..own3.
    let keys: Vec<&str> = m3.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 13, "{keys:?}");
    assert_eq!(&keys[..2], ["k0", "k1"]);
    assert_eq!(m3["own1"], json!(1));
    assert_eq!(m3["k9"], json!(9));
}

/// Earlier mappings of a merge list win, explicit keys win over merged ones, and the first
/// position of a key is kept — also when a mapping is merged twice.
#[test]
fn merge_keys_keep_pyyaml_precedence() {
    let raw = b"flow:\n  graph: a\n  defaults:\n    a: &a {x: 1, y: 1}\n    b: &b {y: 2, z: 2}\n    m: {<<: [*a, *b, *a], z: 3}\n";
    let wf = parse_workflow_yaml(raw).unwrap();
    let m = &wf.flow.defaults["m"];
    assert_eq!(m, &json!({"x": 1, "y": 1, "z": 3}));
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["x", "y", "z"]);
}

/// 4,000 distinct keys merged 300 times copy 1.2 million pairs: over the budget, refused
/// without building them all (0.5.1 spent seconds on its event loop).
#[test]
fn merges_copying_more_than_a_million_pairs_are_too_large() {
    let mut raw = String::from("flow:\n  graph: a\n  defaults:\n    base: &base {");
    raw.push_str(
        &(0..4000)
            .map(|i| format!("k{i}: {i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    raw.push_str("}\n");
    for i in 0..300 {
        raw.push_str(&format!("    c{i}: {{<<: *base}}\n"));
    }
    assert_eq!(
        reason(raw.as_bytes()),
        "too_large: merge keys (<<) copy more than 1000000 key/value pairs"
    );
}

/// Many duplicate keys are found in linear time; the last value wins at the first position.
#[test]
fn duplicate_keys_last_value_wins() {
    let mut raw = String::from("flow:\n  graph: a\n  defaults:\n");
    for i in 0..50_000 {
        raw.push_str(&format!("    k{}: {i}\n", i % 1000));
    }
    let wf = parse_workflow_yaml(raw.as_bytes()).unwrap();
    assert_eq!(wf.flow.defaults.len(), 1000);
    assert_eq!(wf.flow.defaults["k0"], json!(49_000));
    assert_eq!(wf.flow.defaults.keys().next().unwrap(), "k0");
    // 1, 1.0 and true are one key in Python.
    let wf = parse_workflow_yaml(
        b"flow:\n  graph: a\n  defaults:\n    m: {1: a, 1.0: b, true: c, 2: d}\n",
    )
    .unwrap();
    assert_eq!(wf.flow.defaults["m"], json!({"1": "c", "2": "d"}));
}

/// PyYAML's scanner refuses an implicit key longer than 1024 characters; so do we, at submit.
#[test]
fn over_long_keys_are_invalid_yaml() {
    let key = "k".repeat(100_000);
    for raw in [
        format!("flow:\n  graph: a\n  defaults:\n    {key}: 1\n"),
        format!("flow:\n  graph: a\n  defaults:\n    \"{key}\": 1\n"),
        format!("flow:\n  graph: a\n  defaults: {{'{key}': 1}}\n"),
    ] {
        assert_eq!(reason(raw.as_bytes()), "invalid_yaml");
        let err = parse_workflow_yaml(raw.as_bytes()).unwrap_err();
        assert!(err.detail().is_some(), "{err:?}");
    }
    let ok = format!(
        "flow:\n  graph: a\n  defaults:\n    {}: 1\n",
        "k".repeat(1024)
    );
    assert_eq!(reason(ok.as_bytes()), "OK");
}
