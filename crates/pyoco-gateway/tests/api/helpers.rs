//! What the API tests share beyond the test kit's app (`pyoco_testkit::TestApp`: a fresh
//! nats-server, the gateway on a free port, an HTTP client and a store handle; and
//! `pyoco_testkit::Gateway` for a gateway in front of a store the test made).

use serde_json::{Map, Value};

/// Keys of a JSON object, in order.
pub fn keys(map: &Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

/// True for `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` (lower-case `str(uuid4())`).
pub fn is_uuid4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        && parts[2].starts_with('4')
}

/// A minimal valid flow.yaml.
pub const FLOW_YAML: &str = "\
version: 1
flow:
  graph: |
    t1 >> t2
  defaults:
    x: 1
    debug: yes
tasks:
  t1:
    callable: my_tasks:t1
  t2:
    callable: my_tasks:t2
";

/// `flow.defaults` lines (4-space indented) of a merge bomb: `m0` with 10 keys, then
/// `m<n>: {<<: [*m<n-1> × 10]}` up to `levels` — a kilobyte that PyYAML (and 0.5.1's gateway)
/// expands into 10^levels pairs.
pub fn nested_merge_defaults(levels: usize) -> String {
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}: {i}")).collect();
    let mut lines = format!("    m0: &m0 {{{}}}\n", keys.join(", "));
    for level in 1..=levels {
        let refs = vec![format!("*m{}", level - 1); 10].join(", ");
        lines.push_str(&format!("    m{level}: &m{level} {{<<: [{refs}]}}\n"));
    }
    lines
}

/// `flow.defaults` lines of `keys` distinct keys merged into `copies` mappings.
pub fn wide_merge_defaults(keys: usize, copies: usize) -> String {
    let keys: Vec<String> = (0..keys).map(|i| format!("k{i}: {i}")).collect();
    let mut lines = format!("    base: &base {{{}}}\n", keys.join(", "));
    for i in 0..copies {
        lines.push_str(&format!("    c{i}: {{<<: *base}}\n"));
    }
    lines
}
