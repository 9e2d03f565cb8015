//! The crate's layering, checked: every `use crate::...` (or `crate::` path, or `super::` path)
//! in a file of `index/src` points to a module of the same layer or a lower one, and the
//! module graph has no circle. The layers are those pictured in `index/src/lib.rs`.
//!
//! Test modules (`#[cfg(test)]` to the end of a file) are left out: a test may use anything.
//! Facades (`lib.rs`, `search/mod.rs`: module declarations and re-exports only) are resolved
//! through their re-exports, so `crate::search::Hits` counts as an edge to `search::searcher`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first; a module may use modules of its own layer or lower ones.
const LAYERS: &[&[&str]] = &[
    &["error", "kernel", "topk", "bits"],
    &["hamming", "score", "pack"],
    &["format", "files", "manifest"],
    &["sparse", "postings", "bitmaps", "graph", "vectors"],
    &[
        "search::searcher",
        "search::flat",
        "search::blocked",
        "search::inverted",
        "search::graph",
        "search::rescore",
    ],
    &["hnsw", "index", "mode", "builder"],
];

/// Facades: files made of module declarations and re-exports only.
const FACADES: &[&str] = &["", "search"];

/// Module path of a source file relative to `src` ("" for lib.rs, "search" for search/mod.rs).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push(line);
    }
    out
}

/// Parses a use tree at the start of `s` (`a::b`, `a::{b, c::d}`, nested): its paths and the
/// number of bytes read.
fn use_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prefix = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            let mut out = Vec::new();
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return (out, i + 1);
                }
                let (paths, used) = use_tree(&s[i..]);
                if used == 0 {
                    return (out, i);
                }
                for p in paths {
                    let mut full = prefix.clone();
                    full.extend(p);
                    out.push(full);
                }
                i += used;
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        let seg = &s[start..i];
        if seg != "self" {
            prefix.push(seg.to_string());
        }
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Every path written as `crate::...` or `super::...` in `code`, as segments, with `super`
/// resolved against `module`.
fn paths_in(code: &str, module: &str) -> Vec<Vec<String>> {
    let mut found: Vec<(usize, Vec<String>)> = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start).map(|a| a + from) {
            from = at + start.len();
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut base: Vec<String> = Vec::new();
            if start == "super::" {
                base = module.split("::").map(str::to_string).collect();
                base.pop();
                base.retain(|s| !s.is_empty());
            }
            for p in use_tree(&code[from..]).0 {
                let mut full = base.clone();
                full.extend(p);
                found.push((at, full));
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, p)| p).collect()
}

/// `pub use a::b::{X, Y};` lines of a facade: item name -> module path (relative to the facade).
fn re_exports(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in code_lines(text) {
        let t = line.trim();
        let Some(body) = t
            .strip_prefix("pub use ")
            .or_else(|| t.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let body = body.trim_end_matches(';');
        let (module, items) = match body.find("::{") {
            Some(i) => (&body[..i], body[i + 3..].trim_end_matches('}')),
            None => match body.rfind("::") {
                Some(i) => (&body[..i], &body[i + 2..]),
                None => continue,
            },
        };
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap().trim().to_string();
            if !name.is_empty() {
                map.insert(name, module.trim_start_matches("crate::").to_string());
            }
        }
    }
    map
}

/// The module a path refers to: the longest prefix naming a known module, resolved through
/// facades' re-exports.
fn resolve(
    path: &[String],
    modules: &BTreeSet<String>,
    facades: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<String> {
    let mut best = None;
    for i in (1..=path.len()).rev() {
        let m = path[..i].join("::");
        if modules.contains(&m) {
            best = Some((m, i));
            break;
        }
    }
    let (m, i) = best.unwrap_or((String::new(), 0));
    if let Some(exports) = facades.get(&m) {
        let item = path.get(i)?;
        let target = exports.get(item)?;
        let full = if m.is_empty() {
            target.clone()
        } else {
            format!("{m}::{target}")
        };
        let mut rest = vec![full];
        rest.extend(path[i + 1..].iter().cloned());
        let segs: Vec<String> = rest.join("::").split("::").map(str::to_string).collect();
        if segs.len() >= path.len() + 5 {
            return None;
        }
        return resolve(&segs, modules, facades);
    }
    Some(m)
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS here and to lib.rs's picture")
        })
}

#[test]
fn every_edge_points_down_and_there_is_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let texts: BTreeMap<String, String> = files
        .iter()
        .map(|p| {
            (
                module_of(p.strip_prefix(&src).unwrap()),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let facades: BTreeMap<String, BTreeMap<String, String>> = FACADES
        .iter()
        .map(|f| (f.to_string(), re_exports(&texts[*f])))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, text) in &texts {
        if FACADES.contains(&module.as_str()) {
            continue;
        }
        let own = layer_of(module);
        let code = code_lines(text).join("\n");
        {
            for path in paths_in(&code, module) {
                let Some(target) = resolve(&path, &modules, &facades) else {
                    continue;
                };
                if &target == module || target.is_empty() {
                    continue;
                }
                if layer_of(&target) > own {
                    wrong.push(format!("{module} -> {target} (`{}`)", path.join("::")));
                }
                edges
                    .entry(module.clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges pointing to a higher layer:\n{}",
        wrong.join("\n")
    );
    // Depth-first search for a circle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == m).unwrap();
                let mut c = stack[from..].to_vec();
                c.push(m.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        if let Some(c) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", c.join(" -> "));
        }
    }
    // The check must see the edges it is about (guards against a parser that finds nothing).
    assert!(edges["search::flat"].contains("search::searcher"));
    assert!(edges["index"].contains("search::rescore"));
    assert!(edges["mode"].contains("index"));
}

#[test]
fn the_parser_finds_paths() {
    let p = paths_in(
        "use crate::search::{flat::top_k, CodesView}; let x = crate::bits::prefetch(a);",
        "search::inverted",
    );
    assert_eq!(
        p,
        vec![
            vec!["search", "flat", "top_k"],
            vec!["search", "CodesView"],
            vec!["bits", "prefetch"],
        ]
    );
    assert_eq!(
        paths_in("use super::Hits;", "search::flat"),
        vec![vec!["search", "Hits"]]
    );
}
