//! The house's shape (docs/architecture.md): each folder of `src/` and `runner/src/` is a floor,
//! a module imports only from its own floor and the floors below it, and no imports go round in
//! a circle, between floors or between the files of one floor.
//!
//! Imports are read from the sources: every `crate::` path and every `super::` path (resolved
//! from the module it is in), outside comments and outside `#[cfg(test)]` modules (a test may
//! drive its module from above, as `crate::testing` does). The floor's own `mod.rs` is its
//! front: it declares the files and routes to them, and they may use what it defines, so edges
//! between a floor's front and its files are not circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The component's floors, bottom first (`lib.rs` says the same in its doc table).
const COMPONENT_FLOORS: &[&str] = &["wire", "auth", "config", "registry", "lifecycle|mirror", "api", "spin"];

/// The runner's floors, bottom first. `memory` is one file every floor may use.
const RUNNER_FLOORS: &[&str] = &["memory", "app", "store", "host", "http", "tools"];

/// Modules that stand beside the floors: test support, compiled only for tests.
const BESIDE: &[&str] = &["testing", "proptests"];

#[test]
fn the_components_imports_point_down_its_floors() {
    let modules = modules(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert_points_down(&modules, COMPONENT_FLOORS);
}

#[test]
fn the_runners_imports_point_down_its_floors() {
    let modules = modules(Path::new(env!("CARGO_MANIFEST_DIR")).join("runner/src").as_path());
    assert_points_down(&modules, RUNNER_FLOORS);
}

#[test]
fn no_imports_go_round_in_a_circle_in_the_component() {
    let modules = modules(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert_eq!(circles(&modules), Vec::<Vec<String>>::new());
}

#[test]
fn no_imports_go_round_in_a_circle_in_the_runner() {
    let modules = modules(Path::new(env!("CARGO_MANIFEST_DIR")).join("runner/src").as_path());
    assert_eq!(circles(&modules), Vec::<Vec<String>>::new());
}

/// The reader finds the imports a circle is made of (so that the tests above can fail).
#[test]
fn a_circle_and_an_upward_import_are_found() {
    let sources = BTreeMap::from([
        ("wire::a".to_owned(), "use crate::api::b;\n// crate::spin::c\nconst URL: &str = \"http://x\";".to_owned()),
        ("api::b".to_owned(), "fn f() { super::super::wire::a::g() }".to_owned()),
        (
            "api".to_owned(),
            "use crate::{wire::a, api::b::{F, G}};\n#[cfg(test)]\nmod tests {\n    use crate::spin::x;\n}".to_owned(),
        ),
        ("spin".to_owned(), String::new()),
    ]);
    let modules = resolve(&sources);
    assert_eq!(modules["wire::a"], BTreeSet::from(["api::b".to_owned()]), "comments are not imports");
    assert_eq!(modules["api::b"], BTreeSet::from(["wire::a".to_owned()]));
    assert_eq!(modules["api"], BTreeSet::from(["wire::a".to_owned(), "api::b".to_owned()]), "tests are not imports");
    assert_eq!(circles(&modules), vec![vec!["api::b".to_owned(), "wire::a".to_owned()]]);
    assert_eq!(upward(&modules, &["wire", "api", "spin"]), vec!["wire::a -> api::b".to_owned()]);
}

fn assert_points_down(modules: &BTreeMap<String, BTreeSet<String>>, floors: &[&str]) {
    let unplaced: Vec<&String> = modules
        .keys()
        .filter(|m| floor_of(m, floors).is_none() && !BESIDE.contains(&top(m)) && top(m) != "main")
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules on no floor (add them to a floor here and in docs/architecture.md): {unplaced:?}"
    );
    assert_eq!(
        upward(modules, floors),
        Vec::<String>::new(),
        "imports that point up a floor (or across lifecycle|mirror)"
    );
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The floor's height, for a module on one.
fn floor_of(module: &str, floors: &[&str]) -> Option<usize> {
    floors.iter().position(|floor| floor.split('|').any(|f| f == top(module)))
}

/// Imports from a module to one on a higher floor, or to the other module of a shared floor.
fn upward(modules: &BTreeMap<String, BTreeSet<String>>, floors: &[&str]) -> Vec<String> {
    let mut up = Vec::new();
    for (from, imports) in modules {
        let Some(here) = floor_of(from, floors) else { continue };
        for to in imports {
            let Some(there) = floor_of(to, floors) else {
                if BESIDE.contains(&top(to)) {
                    up.push(format!("{from} -> {to}"));
                }
                continue;
            };
            if there > here || (there == here && top(to) != top(from)) {
                up.push(format!("{from} -> {to}"));
            }
        }
    }
    up
}

/// Every module of a source tree (`a/b.rs` is `a::b`, `a/mod.rs` is `a`), with what it imports.
fn modules(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                continue; // the crate root declares the floors
            }
            sources.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    resolve(&sources)
}

/// What each module imports, as modules of the tree.
fn resolve(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let names: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, source)| {
            let imports = imports_of(module, source);
            // Each path names the longest module it starts with (`crate::wire::digest::Digest`
            // is `wire::digest`); paths into no module of the tree (an extern) are dropped.
            let resolved = imports
                .into_iter()
                .filter_map(|path| {
                    let parts: Vec<&str> = path.split("::").collect();
                    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| names.contains(m))
                })
                .filter(|to| to != module)
                .collect();
            (module.clone(), resolved)
        })
        .collect()
}

/// The module paths `source` (module `module`) names, absolute, unresolved.
fn imports_of(module: &str, source: &str) -> BTreeSet<String> {
    let code = without_tests_and_comments(source);
    let mut paths = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let boundary =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let base: Option<(Vec<String>, usize)> = if boundary && rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if boundary && rest.starts_with("super::") {
            // `super::` from `a::b::c` is `a::b`; from a folder's `mod.rs` (`a::b`) it is `a`.
            let mut base: Vec<String> = module.split("::").map(str::to_owned).collect();
            let mut used = 0;
            while code[i + used..].starts_with("super::") {
                base.pop();
                used += "super::".len();
            }
            Some((base, used))
        } else {
            None
        };
        let Some((base, used)) = base else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        i += used;
        for path in paths_at(&code[i..]) {
            let mut full = base.clone();
            full.extend(path.split("::").filter(|s| !s.is_empty() && *s != "self").map(str::to_owned));
            if !full.is_empty() {
                paths.insert(full.join("::"));
            }
        }
    }
    paths
}

/// The paths right after a `crate::` or `super::`: one (`a::b::C`), or a group (`{a, b::{c, D}}`).
fn paths_at(text: &str) -> Vec<String> {
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        let inner = &group[..end];
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .flat_map(|item| match item.split_once("::{") {
                Some((head, _)) => vec![head.to_owned()],
                None => vec![item.split(" as ").next().unwrap_or(item).trim().to_owned()],
            })
            .collect();
    }
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len());
    vec![text[..end].trim_end_matches(':').to_owned()]
}

/// The source without `#[cfg(test)]` modules and comments (a comment starts at `//` at the
/// start of a line or after a space, so that `"http://..."` in code stays code).
fn without_tests_and_comments(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && let Some(next) = lines.peek()
            && next.trim_start().starts_with("mod ")
            && next.trim_end().ends_with('{')
        {
            // Skip the module: to the line that closes it at its own indentation.
            let indent = next.len() - next.trim_start().len();
            lines.next();
            for inner in lines.by_ref() {
                if inner.len() - inner.trim_start().len() == indent && inner.trim() == "}" {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Circles of imports (strongly connected sets of more than one module), each sorted, ignoring
/// the edges between a folder's front (`mod.rs`) and its own files.
fn circles(modules: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let front_and_file = |a: &str, b: &str| {
        let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
        long.strip_prefix(short).is_some_and(|rest| rest.starts_with("::") && !rest[2..].contains("::"))
    };
    let edges: BTreeMap<&str, Vec<&str>> = modules
        .iter()
        .map(|(from, to)| (from.as_str(), to.iter().map(String::as_str).filter(|t| !front_and_file(from, t)).collect()))
        .collect();
    // Two modules are on one circle when each reaches the other.
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(m) = todo.pop() {
            for &next in edges.get(m).into_iter().flatten() {
                if seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = edges.keys().map(|&m| (m, reach(m))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (&m, reached) in &reaches {
        let mut circle: Vec<String> = reached
            .iter()
            .filter(|&&other| other != m && reaches.get(other).is_some_and(|r| r.contains(m)))
            .map(|s| s.to_string())
            .collect();
        if !circle.is_empty() {
            circle.push(m.to_owned());
            circle.sort();
            found.insert(circle);
        }
    }
    found.into_iter().collect()
}
