//! flow.yaml documents built to hurt a parser (issue 13): small texts that YAML merge keys
//! (`<<`) expand into millions of key/value pairs. PyYAML, and so 0.5.1's gateway, expands
//! them in full; ours refuses them with `422 too_large`. Used by the gateway's API tests and
//! by the end-to-end hostile-input suite.

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
