//! The crates' modules import each other in one direction only: no two modules of a crate use
//! each other, directly or around a loop. A loop means neither module can be read, tested or
//! moved without the other (the gateway's route files once all imported `routes/openapi.rs`,
//! which imported all of them back).
//!
//! The check reads the sources, not the compiler's view: every `use` tree and every path that
//! starts with `crate::`, `super::` or `self::` outside comments, strings and `#[cfg(test)]`
//! modules is an edge from the module that writes it to the innermost module the path names.
//! Edges to the crate root (`lib.rs`, which declares the modules and re-exports their API) and
//! between a module and its own submodules do not count.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use pyoco_testkit::workspace_root;

/// The crates held to the rule. Each is a `src/` tree under `crates/`.
const CRATES: &[&str] = &[
    "pyoco-appliance",
    "pyoco-cli",
    "pyoco-config",
    "pyoco-desktop",
    "pyoco-gateway",
    "pyoco-natsd",
    "pyoco-store",
    "pyoco-wire",
    "pyoco-worker",
];

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut report = String::new();
    for name in CRATES {
        let src = workspace_root().join("crates").join(name).join("src");
        let graph = ModuleGraph::read(&src);
        assert!(
            graph.modules.len() > 1,
            "{name}: found {} modules under {}",
            graph.modules.len(),
            src.display()
        );
        for cycle in graph.cycles() {
            report.push_str(&format!("{name}: {}\n", cycle.join(" ↔ ")));
            for from in &cycle {
                for (to, via) in &graph.edges[from] {
                    if cycle.contains(to) {
                        report.push_str(&format!("    {from} → {to}   (`{via}`)\n"));
                    }
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "modules that import each other (directly or in a loop):\n{report}\
         Move what both need into a module that neither owns."
    );
}

#[test]
fn the_check_finds_a_loop_and_ignores_comments_strings_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    };
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod routes;\npub use a::A;\n",
    );
    write(
        "a.rs",
        "use crate::{b::{self, B}, routes};\npub struct A;\n// use crate::c;\n",
    );
    write(
        "b.rs",
        "pub struct B;\nfn f() -> &'static str { \"crate::c::X\" }\n\
         pub fn g() { super::c::h() }\n",
    );
    write(
        "c.rs",
        "pub fn h() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
    );
    write("routes/mod.rs", "mod x;\nmod y;\n");
    write("routes/x.rs", "use super::y::Y;\npub struct X;\n");
    write("routes/y.rs", "pub struct Y;\nfn f(_: super::x::X) {}\n");

    let graph = ModuleGraph::read(src);
    let edges = |m: &str| graph.edges[m].keys().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a"), ["b", "routes"]);
    assert_eq!(edges("b"), ["c"], "strings don't count, `super::` does");
    assert!(edges("c").is_empty(), "#[cfg(test)] modules don't count");
    assert_eq!(
        graph.cycles(),
        vec![vec!["routes::x".to_string(), "routes::y".to_string()]]
    );
}

/// Modules of one crate (`routes::list`, …; the root is `""`) and who imports whom.
struct ModuleGraph {
    modules: BTreeMap<String, PathBuf>,
    /// from → (to → the path that makes the edge, for the report)
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl ModuleGraph {
    fn read(src: &Path) -> ModuleGraph {
        let mut modules = BTreeMap::new();
        collect_modules(src, src, &mut modules);
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (module, file) in &modules {
            let text = std::fs::read_to_string(file).unwrap();
            let code = without_test_modules(&code_only(&text));
            let mut found = BTreeMap::new();
            for path in paths_in(&code) {
                let Some(absolute) = absolute(module, &path) else {
                    continue;
                };
                let Some(target) = innermost_module(&modules, &absolute) else {
                    continue;
                };
                let related = target.is_empty()
                    || target == *module
                    || module.starts_with(&format!("{target}::"))
                    || target.starts_with(&format!("{module}::"));
                if !related {
                    found.entry(target).or_insert_with(|| path.join("::"));
                }
            }
            edges.insert(module.clone(), found);
        }
        ModuleGraph { modules, edges }
    }

    /// The strongly connected components with more than one module (Tarjan), each sorted.
    fn cycles(&self) -> Vec<Vec<String>> {
        struct Walk<'a> {
            graph: &'a ModuleGraph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            found: Vec<Vec<String>>,
        }
        impl<'a> Walk<'a> {
            fn visit(&mut self, v: &'a str) {
                let i = self.index.len();
                self.index.insert(v, i);
                self.low.insert(v, i);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.graph.edges[v].keys() {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.on_stack.contains(w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        component.push(w.to_string());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.found.push(component);
                    }
                }
            }
        }
        let mut walk = Walk {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for module in self.modules.keys() {
            if !walk.index.contains_key(module.as_str()) {
                walk.visit(module);
            }
        }
        walk.found.sort();
        walk.found
    }
}

/// Every `.rs` file under `dir` as a module path relative to `src` (`mod.rs`/`lib.rs`/`main.rs`
/// name their directory's module). Binaries under `src/bin/` are crates of their own: skipped.
fn collect_modules(src: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path != src.join("bin") {
                collect_modules(src, &path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        out.insert(parts.join("::"), path);
    }
}

/// The source with comments removed and string/char literals emptied, so that neither can
/// look like a path.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if chars[i] == 'r' && (at(i + 1, "\"") || at(i + 1, "#")) && raw_start(&chars, i) {
            // r"…", r#"…"#: skip to the closing quote with as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if chars[i] == '\'' && char_literal_len(&chars, i).is_some() {
            i += char_literal_len(&chars, i).unwrap();
            out.push_str("' '");
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `r` at `i` starts a raw string (not the end of an identifier such as `for`).
fn raw_start(chars: &[char], i: usize) -> bool {
    let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    !after_ident && chars.get(j) == Some(&'"')
}

/// Length of a char literal (`'a'`, `'\n'`, `'\u{1F600}'`) at `i`; `None` for a lifetime.
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        let close = (i + 3..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')?;
        return Some(close - i + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(3)
}

/// The source up to its first `#[cfg(test)]` module: unit tests may import anything.
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let Some(body) = after.strip_prefix("mod ") else {
            // `#[cfg(test)]` on an item other than a module: keep scanning after it.
            rest = &rest[at + 1..];
            continue;
        };
        let Some(open) = body.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0;
        let mut end = body.len();
        for (k, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Every path a module names: the leaves of each `use` tree, and each inline
/// `crate::…`/`super::…`/`self::…` path.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(found) = code[i..].find("use ") {
        let start = i + found;
        i = start + 4;
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let Some(end) = code[i..].find(';') else {
            break;
        };
        expand_use_tree(&code[i..i + end], &mut Vec::new(), &mut paths);
        i += end;
    }
    for root in ["crate::", "super::", "self::"] {
        let mut i = 0;
        while let Some(found) = code[i..].find(root) {
            let start = i + found;
            i = start + root.len();
            if start > 0 && (is_ident(bytes[start - 1]) || bytes[start - 1] == b':') {
                continue;
            }
            let mut end = start;
            while end < bytes.len() && (is_ident(bytes[end]) || bytes[end] == b':') {
                end += 1;
            }
            let path: Vec<String> = code[start..end]
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            paths.push(path);
        }
    }
    paths
}

/// The leaves of a use tree (`a::{b, c::{self, D}}` → `a::b`, `a::c::self`, `a::c::D`).
fn expand_use_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth_before = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut item_start = 0;
        for (k, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&body[item_start..k], prefix, out);
                    item_start = k + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&body[item_start..], prefix, out);
        prefix.truncate(depth_before);
        return;
    }
    let leaf = tree.split(" as ").next().unwrap_or("").trim();
    if leaf.is_empty() {
        return;
    }
    let mut path = prefix.clone();
    path.extend(
        leaf.split("::")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string),
    );
    out.push(path);
}

/// A path as seen from `module`, made absolute within the crate; `None` for other crates' paths.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let mut here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    };
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => {
            here.extend(rest.iter().cloned());
            Some(here)
        }
        "super" => {
            here.pop();
            let mut rest = rest;
            while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                here.pop();
                rest = tail;
            }
            here.extend(rest.iter().cloned());
            Some(here)
        }
        _ => None,
    }
}

/// The longest prefix of `path` that is a module of the crate.
fn innermost_module(modules: &BTreeMap<String, PathBuf>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}
