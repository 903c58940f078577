//! What the API tests share beyond the test kit's app (`pyoco_testkit::TestApp`: a fresh
//! nats-server, the gateway on a free port, an HTTP client and a store handle; and
//! `pyoco_testkit::Gateway` for a gateway in front of a store the test made).

pub use pyoco_testkit::{nested_merge_defaults, wide_merge_defaults};
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
