//! The server crate's layers only look down (see the crate documentation in `src/lib.rs`).
//!
//! Reads every `.rs` file under `src/`, collects the crate modules each one names through a
//! `crate::` path, and fails on:
//!
//! - an import circle between top-level modules (a folder such as `http/` counts as one
//!   module);
//! - a module below the HTTP layer importing from `http/`: only `http/` itself and the top
//!   (`server`, `ca_service`, `cli`) may.
//!
//! The message names the offending file, line and path.
//!
//! # Limits
//!
//! The scan is textual, not a parse of Rust:
//!
//! - It sees `crate::name` paths, in `use` lines and in code, and the names inside
//!   `use crate::{a, b::c}` (nested braces included). It does not see `super::` paths that
//!   leave a folder (`super::super::x`), nor `self::` paths, nor paths through a re-export
//!   (`crate::a::X` counts as `a` even if `a` only re-exports `X` from `b`), nor macros that
//!   build paths.
//! - Lines whose code starts with `//` (comments, doc comments, doc links) are skipped, and so
//!   is the rest of a line after `//` (even inside a string): a doc link is not an import. A
//!   `crate::` inside a string literal or a block comment is counted.
//! - Test code (`#[cfg(test)]`) counts like any other code.
//! - `main.rs` is the binary, which reaches the library as `klausur_server::`; it is not
//!   scanned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that may import from `http/`.
const MAY_USE_HTTP: [&str; 4] = ["http", "server", "ca_service", "cli"];

/// One `crate::` import: where it is and what it names.
#[derive(Debug, Clone)]
struct Import {
    file: String,
    line: usize,
    /// The path as written, e.g. `crate::http::api::ApiError` or `crate::{a, b}`.
    path: String,
    /// The top-level module it names (`http`, `config`, ...).
    target: String,
}

/// The top-level module of a source file, given its path relative to `src/`: `config.rs` →
/// `config`, `http/api.rs` → `http`. `None` for `lib.rs` and `main.rs`.
fn top_module(rel: &str) -> Option<String> {
    let rel = rel.replace('\\', "/");
    match rel.split_once('/') {
        Some((dir, _)) => Some(dir.to_string()),
        None => match rel.strip_suffix(".rs")? {
            "lib" | "main" => None,
            name => Some(name.to_string()),
        },
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The first name of each item of a brace group's content (`a, b::{c, d}, e as f` → `a`, `b`,
/// `e`), at nesting depth zero only.
fn group_heads(content: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in content.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                heads.push(ident(content[start..i].trim()).to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    heads.push(ident(content[start..].trim()).to_string());
    heads.retain(|h| !h.is_empty() && h != "self");
    heads
}

/// Every `crate::` import of one file's text.
fn imports_of(file: &str, text: &str) -> Vec<Import> {
    let mut out = Vec::new();
    // A `use crate::{` group may span lines: join its lines until the braces close.
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let code = raw.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = match code.find("//") {
            Some(i) => &code[..i],
            None => code,
        };
        if let Some((line, mut acc)) = pending.take() {
            acc.push_str(code);
            if acc.matches('{').count() <= acc.matches('}').count() {
                scan(file, line, &acc, &mut out);
            } else {
                pending = Some((line, acc));
            }
            continue;
        }
        if code.contains("crate::{") && code.matches('{').count() > code.matches('}').count() {
            pending = Some((n + 1, code.to_string()));
            continue;
        }
        scan(file, n + 1, code, &mut out);
    }
    if let Some((line, acc)) = pending {
        scan(file, line, &acc, &mut out);
    }
    out
}

/// The `crate::` paths in one (joined) line of code.
fn scan(file: &str, line: usize, code: &str, out: &mut Vec<Import>) {
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `klausur_crate::` or `my_crate::` are not this crate.
        let before = rest[..i].chars().next_back();
        let after = &rest[i + "crate::".len()..];
        if before.is_some_and(is_ident_char) {
            rest = after;
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1usize;
            let mut end = group.len();
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let content = &group[..end];
            for head in group_heads(content) {
                out.push(Import {
                    file: file.to_string(),
                    line,
                    path: format!("crate::{{{content}}}"),
                    target: head,
                });
            }
            rest = &group[end..];
        } else {
            let mut path_end = after
                .find(|c: char| !(is_ident_char(c) || c == ':'))
                .unwrap_or(after.len());
            // `crate::a::{B, C}`: show the group too.
            if after[path_end..].starts_with('{') {
                if let Some(close) = after[path_end..].find('}') {
                    path_end += close + 1;
                }
            }
            let target = ident(after);
            if !target.is_empty() {
                out.push(Import {
                    file: file.to_string(),
                    line,
                    path: format!("crate::{}", &after[..path_end]),
                    target: target.to_string(),
                });
            }
            rest = after;
        }
    }
}

/// What is wrong with the layers of these files (`(path relative to src/, text)`); empty if
/// nothing.
fn check(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<String> = files.iter().filter_map(|(f, _)| top_module(f)).collect();
    let mut problems = Vec::new();
    // module → module it imports → the first import that does it.
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for (file, text) in files {
        let Some(from) = top_module(file) else {
            continue;
        };
        for import in imports_of(file, text) {
            if import.target == from || !modules.contains(&import.target) {
                continue;
            }
            if import.target == "http" && !MAY_USE_HTTP.contains(&from.as_str()) {
                problems.push(format!(
                    "{}:{}: `{from}` is below the HTTP layer but imports from it: {}",
                    import.file, import.line, import.path
                ));
            }
            edges
                .entry(from.clone())
                .or_default()
                .entry(import.target.clone())
                .or_insert(import);
        }
    }
    for circle in circles(&edges) {
        let mut text = format!("import circle: {}", circle.join(" -> "));
        for pair in circle.windows(2) {
            if let Some(i) = edges.get(&pair[0]).and_then(|e| e.get(&pair[1])) {
                text.push_str(&format!(
                    "\n  {} -> {}: {}:{}: {}",
                    pair[0], pair[1], i.file, i.line, i.path
                ));
            }
        }
        problems.push(text);
    }
    problems
}

/// One circle (as a closed path `a -> b -> ... -> a`) per strongly connected group of
/// modules that import each other.
fn circles(edges: &BTreeMap<String, BTreeMap<String, Import>>) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut in_circle: BTreeSet<String> = BTreeSet::new();
    for start in edges.keys() {
        if in_circle.contains(start) {
            continue;
        }
        // Shortest way back to `start` (breadth first), if any.
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut closed = None;
        'search: while let Some(at) = queue.pop_front() {
            for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    closed = Some(at.clone());
                    break 'search;
                }
                if !parent.contains_key(next) {
                    parent.insert(next.clone(), at.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        if let Some(last) = closed {
            // Back from `last` to `start` through the search tree, then forward.
            let mut back = vec![last];
            while let Some(p) = back.last().and_then(|at| parent.get(at)) {
                back.push(p.clone());
            }
            let mut path = vec![start.clone()];
            path.extend(back.into_iter().rev().filter(|m| m != start));
            path.push(start.clone());
            in_circle.extend(path.iter().cloned());
            found.push(path);
        }
    }
    found
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("read source file");
            out.push((rel, text));
        }
    }
}

#[test]
fn the_layers_only_look_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(
        files.iter().any(|(f, _)| f == "http/api.rs") && files.len() > 20,
        "the scan must see the crate's files"
    );
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "the server crate's layers must only look down:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scan_sees_paths_and_groups_but_not_comments() {
    let text = "use crate::config::Config;\n\
                use crate::{auth, meeting::{Registry, MeetingCmd}};\n\
                use crate::{\n    audit,\n    budget::AddressBudget,\n};\n\
                // use crate::http::api;\n\
                /// see [`crate::server`]\n\
                let x = crate::media::MediaHandle::new(); // crate::cli\n\
                use klausur_crate::thing;\n";
    let targets: Vec<String> = imports_of("f.rs", text)
        .into_iter()
        .map(|i| i.target)
        .collect();
    assert_eq!(
        targets,
        ["config", "auth", "meeting", "audit", "budget", "media"]
    );
}

/// Negative controls: the check fails on an upward import into `http/` and on a circle, and
/// names the file and path.
#[test]
fn an_upward_import_and_a_circle_are_caught() {
    let file = |path: &str, text: &str| (path.to_string(), text.to_string());
    let good = [
        file("config.rs", ""),
        file("meeting/mod.rs", "use crate::config::Config;"),
        file("http/api.rs", "use crate::meeting::Registry;"),
        file("server.rs", "use crate::http::api;"),
    ];
    assert_eq!(check(&good), Vec::<String>::new());

    let mut upward = good.to_vec();
    upward.push(file(
        "meeting/actor.rs",
        "fn f() {}\nuse crate::http::api::ApiError;",
    ));
    let problems = check(&upward);
    assert!(
        problems.iter().any(|p| p.contains("meeting/actor.rs:2")
            && p.contains("crate::http::api::ApiError")
            && p.contains("below the HTTP layer")),
        "{problems:?}"
    );

    let mut circle = good.to_vec();
    circle.push(file("config.rs", "use crate::meeting::CLIENT_QUEUE;"));
    let problems = check(&circle);
    assert!(
        problems.iter().any(|p| p.contains("import circle")
            && p.contains("config")
            && p.contains("meeting")
            && p.contains("crate::meeting::CLIENT_QUEUE")),
        "{problems:?}"
    );
}
