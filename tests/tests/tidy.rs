//! Hygiene by machine: every Rust source file in the workspace opens with a `//!` comment
//! saying what it owns.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_has_a_module_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for crate_dir in [
        "protocol",
        "ops",
        "agent",
        "control-plane",
        "sim",
        "test-support",
        "tests",
    ] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "found only {} files: is the walk broken?",
        files.len()
    );
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:#?}"
    );
}

/// A module's path inside its crate (`["gateway", "session"]`; a `mod.rs` is its
/// directory's module, so `super::` climbs from there).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The source without comments (line comments, doc comments; a `//` inside a string such
/// as a URL only hides the rest of its line, which holds no path).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a file names starting at `crate::` or `super::` (as absolute module paths,
/// up to seven segments), `crate::{a, b::c}` groups expanded.
fn named_paths(code: &str, here: &[String]) -> Vec<Vec<String>> {
    // Reads `a::b::{c, d}` after a prefix into paths (nested groups included).
    fn expand(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
        let rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group's top level at commas.
            let (mut level, mut start) = (0usize, 0usize);
            let chars: Vec<char> = group.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                match c {
                    '{' => level += 1,
                    '}' if level == 0 => {
                        let item: String = chars[start..i].iter().collect();
                        expand(&item, prefix.clone(), out, depth);
                        return;
                    }
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        let item: String = chars[start..i].iter().collect();
                        expand(&item, prefix.clone(), out, depth);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name == "self" {
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return;
        }
        let mut path = prefix;
        path.push(name.clone());
        let after = rest[name.len()..].trim_start();
        match after.strip_prefix("::") {
            Some(more) if depth < 6 => expand(more, path, out, depth + 1),
            _ => out.push(path),
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = code[i..].find(['c', 's']) {
        let at = i + pos;
        i = at + 1;
        let before_ok = at == 0
            || !code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if !before_ok {
            continue;
        }
        let rest = &code[at..];
        if let Some(after) = rest.strip_prefix("crate::") {
            expand(after, Vec::new(), &mut out, 0);
        } else if rest.starts_with("super::") {
            // Each `super` climbs one module; a file that is not a `mod.rs` is itself one.
            let mut base: Vec<String> = here.to_vec();
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t.trim_start();
            }
            expand(tail, base, &mut out, 0);
        }
    }
    out
}

/// The declared layer order of `krate` from ARCHITECTURE.md's ```layers block, top layer
/// first.
fn declared_layers(architecture: &str, krate: &str) -> Vec<Vec<String>> {
    let block = architecture
        .split("```layers")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or("");
    let line = block
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{krate}:")))
        .unwrap_or("");
    line.split('>')
        .map(|layer| {
            layer
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .filter(|l: &Vec<String>| !l.is_empty())
        .collect()
}

/// The cycles among `edges` (each as the strongly connected set of its nodes).
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in next.get(n.as_str()).into_iter().flatten() {
                if seen.insert(m.to_string()) {
                    todo.push(m.to_string());
                }
            }
        }
        seen
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for node in next.keys() {
        let from = reach(node);
        if !from.contains(*node) || found.iter().any(|c| c.contains(&node.to_string())) {
            continue;
        }
        let mut cycle: Vec<String> = from
            .into_iter()
            .filter(|other| reach(other).contains(*node))
            .collect();
        cycle.sort();
        found.push(cycle);
    }
    found
}

/// Import edges (from, to) between modules.
type Edges = std::collections::BTreeSet<(String, String)>;

/// The import edges of one crate: between top-level modules, and between sibling
/// submodules of each directory at any depth (`dir::a` → `dir::b`); and its top-level
/// modules.
fn import_edges(src: &Path) -> (Edges, Edges, Vec<String>) {
    use std::collections::BTreeSet;
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut top_modules: Vec<String> = files
        .iter()
        .map(|f| module_path(src, f))
        .filter_map(|p| p.first().cloned())
        .filter(|m| m != "lib" && m != "main")
        .collect();
    top_modules.sort();
    top_modules.dedup();
    let is_submodule = |dir: &str, name: &str| {
        src.join(dir).join(format!("{name}.rs")).is_file() || src.join(dir).join(name).is_dir()
    };
    let (mut top, mut inner) = (BTreeSet::new(), BTreeSet::new());
    for file in &files {
        let here = module_path(src, file);
        let Some(module) = here.first().filter(|m| *m != "lib" && *m != "main") else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for path in named_paths(&code_only(&text), &here) {
            let Some(target) = path.first() else { continue };
            if target != module {
                if top_modules.contains(target) {
                    top.insert((module.clone(), target.clone()));
                }
                continue;
            }
            // Siblings at any depth: the children of the deepest module both paths share.
            let shared = here.iter().zip(&path).take_while(|(a, b)| a == b).count();
            if let (Some(from), Some(to)) = (here.get(shared), path.get(shared)) {
                let parent = &here[..shared];
                if is_submodule(&parent.join("/"), to) {
                    let name = |child: &str| format!("{}::{child}", parent.join("::"));
                    inner.insert((name(from), name(to)));
                }
            }
        }
    }
    (top, inner, top_modules)
}

/// Checks one binary crate's imports against its declared layer order; returns how many
/// edges were checked.
fn check_layers(krate: &str, dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    let layers = declared_layers(&architecture, krate);
    assert!(
        layers.len() >= 3,
        "ARCHITECTURE.md has no ```layers line for {krate}"
    );
    let layer_of = |m: &str| layers.iter().position(|l| l.iter().any(|x| x == m));
    let (top, inner, modules) = import_edges(&root.join(dir).join("src"));
    let mut problems = Vec::new();
    for m in &modules {
        if layer_of(m).is_none() {
            problems.push(format!(
                "{krate}: module `{m}` is in no layer of ARCHITECTURE.md"
            ));
        }
    }
    for name in layers.iter().flatten() {
        if !modules.contains(name) {
            problems.push(format!(
                "{krate}: ARCHITECTURE.md names `{name}`, which is not a module"
            ));
        }
    }
    for (from, to) in &top {
        if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
            if b < a {
                problems.push(format!(
                    "{krate}: `{from}` imports `{to}`, a layer above it (crate::{to} in {dir}/src/{from})"
                ));
            }
        }
    }
    for cycle in cycles(&top).into_iter().chain(cycles(&inner)) {
        problems.push(format!("{krate}: module cycle among {}", cycle.join(", ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    top.len() + inner.len()
}

#[test]
fn the_control_plane_imports_one_way_down_its_layers() {
    let checked = check_layers("control-plane", "control-plane");
    assert!(
        checked >= 100,
        "only {checked} import edges found: is the parser broken?"
    );
}

#[test]
fn the_agent_imports_one_way_down_its_layers() {
    let checked = check_layers("agent", "agent");
    assert!(
        checked >= 70,
        "only {checked} import edges found: is the parser broken?"
    );
}
