//! No import circle among the files of a crate: every `crate::`, `super::` and `self::` path and
//! every `mod x;` declaration is an edge from the file it is written in to the file that defines
//! the module it names, and the edges must form no cycle, so that the files stack in layers that
//! each use only the ones below (issue 13). Comments (doc links included) and string literals do
//! not count: they create no dependency.
//!
//! A path through a re-export (`pub use a::X;` in a facade such as `lib.rs` or `search/mod.rs`)
//! counts as an edge to the module that defines `X`, not to the facade: a facade only names what
//! lies below it. For `bsa-index` the files must also stack in the layers pictured in
//! `index/src/lib.rs` ([`INDEX_LAYERS`]): no edge may point to a higher layer.
//!
//! The check reads the source as text (a small lexer, no parser): `cfg` attributes are ignored, so
//! feature-gated modules (`milvus`) are checked too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library and the `bsa` binary (`src/cli/`) are two crates, each checked on its own (the
/// binary only uses the library through `bsa::`, which cannot point back).
#[test]
fn src_has_no_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_root in ["src/lib.rs", "src/main.rs"] {
        let graph = module_graph(&root.join(crate_root));
        assert!(graph.len() > 1, "{crate_root}: found no modules");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{crate_root}: import circle {}", cycle.join(" -> "));
        }
    }
}

/// The layers of `bsa-index`, lowest first, as `index/src/lib.rs` pictures them: a file may use
/// files of its own layer or lower ones. The facades (`lib.rs`, `search/mod.rs`, `live/mod.rs`) are in none.
const INDEX_LAYERS: &[&[&str]] = &[
    &[
        "error.rs",
        "kernel.rs",
        "topk.rs",
        "bits.rs",
        "counters.rs",
        "rowset.rs",
        "memo.rs",
        "lock_note.rs",
    ],
    &[
        "hamming.rs",
        "slabs.rs",
        "dot.rs",
        "score.rs",
        "pack.rs",
        "deterministic.rs",
        "int_tables.rs",
        "pursuit.rs",
    ],
    &["format.rs", "files.rs", "manifest.rs", "model.rs"],
    &[
        "sparse.rs",
        "postings.rs",
        "bitmaps.rs",
        "graph.rs",
        "vectors.rs",
        "adc.rs",
        "adc_wide.rs",
    ],
    &[
        "search/searcher.rs",
        "search/flat.rs",
        "search/blocked.rs",
        "search/inverted.rs",
        "search/graph.rs",
        "search/rescore.rs",
    ],
    &[
        "graph_build.rs",
        "hnsw.rs",
        "hnsw/with_hnsw_rs.rs",
        "hnsw/dump.rs",
        "index.rs",
        "mode.rs",
        "builder.rs",
        "live/meta.rs",
    ],
    &[
        "live/copy.rs",
        "live/snapshot/mod.rs",
        "live/snapshot/options.rs",
        "live/snapshot/segment.rs",
        "live/snapshot/open.rs",
        "live/snapshot/verify.rs",
        "live/snapshot/accessors.rs",
        "live/snapshot/model.rs",
        "live/snapshot/merge.rs",
        "live/snapshot/search.rs",
        "live/snapshot/rescore.rs",
        "live/summary.rs",
        "live/writer.rs",
        "query.rs",
    ],
];

/// The same check for `bsa-index` (`index/src`), and its layers.
#[test]
fn index_src_stacks_in_its_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = module_graph(&root.join("index/src/lib.rs"));
    assert!(graph["search/flat.rs"].contains("search/searcher.rs"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("index/src: import circle {}", cycle.join(" -> "));
    }
    let layer = |file: &str| INDEX_LAYERS.iter().position(|l| l.contains(&file));
    let mut upwards = Vec::new();
    for (from, targets) in &graph {
        if from == "lib.rs" || from == "search/mod.rs" || from == "live/mod.rs" {
            continue;
        }
        let own = layer(from).unwrap_or_else(|| {
            panic!("index/src/{from} is in no layer: add it to INDEX_LAYERS and lib.rs's picture")
        });
        for to in targets {
            if layer(to).is_some_and(|l| l > own) {
                upwards.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upwards.is_empty(),
        "index/src: edges to a higher layer:\n{}",
        upwards.join("\n")
    );
}

/// The checker itself: a circle through a `super::` path and a parent's `mod` declaration is found,
/// and paths in comments and strings are not edges.
#[test]
fn a_circle_is_found_and_comments_are_not_edges() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("lib.rs", "mod a;\nmod b;\n");
    write(
        "a.rs",
        "// crate::b\n/// [`crate::b`]\nconst S: &str = \"crate::b::X\";\n",
    );
    write(
        "b.rs",
        "use crate::a::S;\nmod inner { use super::super::a; }\n",
    );
    assert_eq!(find_cycle(&module_graph(&dir.path().join("lib.rs"))), None);
    write("a.rs", "fn f() { crate::b::g() }\n");
    let cycle = find_cycle(&module_graph(&dir.path().join("lib.rs"))).unwrap();
    assert!(cycle.contains(&"a.rs".to_string()) && cycle.contains(&"b.rs".to_string()));
    write("a.rs", "use crate::{b::{self, g}};\n");
    assert!(find_cycle(&module_graph(&dir.path().join("lib.rs"))).is_some());
}

/// Files of the crate rooted at `root_file` (names relative to its folder) and, for each, the
/// files it refers to.
fn module_graph(root_file: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let base = root_file.parent().unwrap().to_path_buf();
    // Module path (segments) -> file, found by following `mod x;` from the root.
    let mut files: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    let mut todo = vec![(Vec::<String>::new(), root_file.to_path_buf())];
    let mut tokens_of: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    while let Some((module, file)) = todo.pop() {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let tokens = tokens(&code_only(&text));
        // Children of `a/b.rs` live in `a/b/`; of `mod.rs`, `lib.rs` and `main.rs` beside them.
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let dir = if module.is_empty() || stem == "mod" {
            file.parent().unwrap().to_path_buf()
        } else {
            file.parent().unwrap().join(stem)
        };
        for (child, _) in mod_declarations(&tokens) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let path = if flat.exists() { flat } else { nested };
            let mut m = module.clone();
            m.push(child);
            todo.push((m, path));
        }
        tokens_of.insert(module.clone(), tokens);
        files.insert(module, file);
    }
    let name = |m: &Vec<String>| {
        files[m]
            .strip_prefix(&base)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // Names each file re-exports (`pub use a::b::X;`): X -> the path it stands for.
    let re_exports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = tokens_of
        .iter()
        .map(|(module, tokens)| (module.clone(), re_exports(module, tokens)))
        .collect();
    // The longest prefix of the path that is a file's module is where the item lives, unless
    // that file only re-exports the item: then it lives where the re-export points.
    let owner_of = |target: &[String]| {
        let mut target = target.to_vec();
        for _ in 0..8 {
            let owner = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|m| files.contains_key(m))
                .unwrap();
            // A re-export of the file's own item (`pub(crate) use my_macro;`) is the item itself.
            match target
                .get(owner.len())
                .and_then(|name| re_exports[&owner].get(name))
                .filter(|to| to[..to.len() - 1] != owner[..])
            {
                Some(to) => target = [to.as_slice(), &target[owner.len() + 1..]].concat(),
                None => return owner,
            }
        }
        panic!("re-exports of {target:?} go round in a circle")
    };
    let mut graph = BTreeMap::new();
    for (module, tokens) in &tokens_of {
        let mut edges = BTreeSet::new();
        for target in referenced_modules(module, tokens) {
            let owner = owner_of(&target);
            if &owner != module {
                edges.insert(name(&owner));
            }
        }
        graph.insert(name(module), edges);
    }
    graph
}

/// `text` with comments blanked and string and char literals emptied.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && matches!(c.get(i + 1), Some('"') | Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // Raw string r#"..."#: ends at a quote followed by as many hashes.
            let mut hashes = 0;
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|h| c.get(j + h) == Some(&'#')))
            {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (c.get(i + 2) == Some(&'\'') || c.get(i + 1) == Some(&'\\')) {
            // A char literal ('x' or an escape); a lifetime has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Identifiers (with `$crate` as `crate`), `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c[i] == '$' {
            i += 1;
        } else {
            if !c[i].is_whitespace() {
                out.push(c[i].to_string());
            }
            i += 1;
        }
    }
    out
}

/// The items a file re-exports with `pub use` or `pub(crate) use` (at its top level): each name
/// and the path, from the crate root, that it stands for.
fn re_exports(module: &[String], tokens: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut depth = 0;
    for i in 0..tokens.len() {
        match tokens[i].as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "use" if depth == 0 && i > 0 && matches!(tokens[i - 1].as_str(), "pub" | ")") => {
                let (paths, _) = expand_path(tokens, i + 1, Vec::new());
                for p in paths {
                    let full = if matches!(p[0].as_str(), "crate" | "super" | "self") {
                        resolve(module, &p)
                    } else {
                        // `pub use child::X` in a facade: relative to the file's module.
                        [module, p.as_slice()].concat()
                    };
                    if let Some(name) = full.last().filter(|n| *n != "self") {
                        out.insert(name.clone(), full.clone());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `mod x;` declarations (at any depth) with their token positions.
fn mod_declarations(tokens: &[String]) -> Vec<(String, usize)> {
    (0..tokens.len().saturating_sub(2))
        .filter(|&i| tokens[i] == "mod" && tokens[i + 2] == ";")
        .map(|i| (tokens[i + 1].clone(), i))
        .collect()
}

/// Module paths (from the crate root) that the file of `module` names: `crate::`, `super::` and
/// `self::` paths, expanded through `{...}` groups, and its `mod x;` children.
fn referenced_modules(module: &[String], tokens: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = mod_declarations(tokens)
        .into_iter()
        .map(|(child, _)| [module, &[child]].concat())
        .collect();
    // Inline modules (`mod tests { ... }`) open at a brace depth; `super::` inside one starts
    // from it.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                while inline.last().is_some_and(|&(_, d)| d > depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((tokens[i + 1].clone(), depth + 1));
            }
            "crate" | "super" | "self" if tokens.get(i + 1).map(String::as_str) == Some("::") => {
                // Not the tail of a longer path (`a::self::b` does not occur; `super::super`
                // is read from its first `super`).
                let continues = i > 0 && tokens[i - 1] == "::";
                if !continues {
                    let mut here: Vec<String> = module.to_vec();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let (paths, next) = expand_path(tokens, i, Vec::new());
                    for p in paths {
                        out.push(resolve(&here, &p));
                    }
                    i = next;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The path starting at token `i` (after `prefix`), with every branch of a `{...}` group;
/// returns the paths and the index after the path.
fn expand_path(tokens: &[String], mut i: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let mut path = prefix;
    loop {
        let Some(t) = tokens.get(i) else {
            return (vec![path], i);
        };
        if t == "{" {
            let mut all = Vec::new();
            i += 1;
            while i < tokens.len() && tokens[i] != "}" {
                if tokens[i] == "," {
                    i += 1;
                    continue;
                }
                let (paths, next) = expand_path(tokens, i, path.clone());
                all.extend(paths);
                i = next;
            }
            return (all, i + 1);
        }
        if t == "*" {
            return (vec![path], i + 1);
        }
        if !(t.chars().next().unwrap().is_alphanumeric() || t.starts_with('_')) {
            return (vec![path], i);
        }
        path.push(t.clone());
        i += 1;
        if tokens.get(i).map(String::as_str) != Some("::") {
            return (vec![path], i);
        }
        i += 1;
    }
}

/// A path that begins with `crate`, `super` or `self`, as segments from the crate root.
fn resolve(here: &[String], path: &[String]) -> Vec<String> {
    let mut at: Vec<String> = here.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &rest[1..];
        }
        _ => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        at.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
    }
    at.extend(rest.iter().filter(|s| *s != "self").cloned());
    at
}

/// A cycle of the graph, as file names with the first repeated at the end, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search; a node on the current stack reached again closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}
