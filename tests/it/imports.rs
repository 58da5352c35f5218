//! The arrows of `use crate::` run one way: no module of `src/` reaches
//! itself through the modules it imports (ARCHITECTURE.md's code map). A
//! folder (`index/`, `s3/`, `verify/`) is one module; test code (from the
//! first `#[cfg(test)]` of a file on) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Arrows known to close a circle, each with the change that removes it.
/// Empty is the goal; a new circle fails the test.
const KNOWN: &[(&str, &str)] = &[];

/// The module each file of `src/` belongs to, and its code without comments
/// and tests.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next()?.as_os_str().to_str()?.to_owned();
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
            if ["bin", "lib", "main"].contains(&module.as_str()) {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let code: Vec<&str> = code.lines().map(|line| line.split("//").next().unwrap()).collect();
            Some((module, code.join("\n")))
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// The modules `code` names after `crate::`, braces (`crate::{a, b::c}`)
/// included.
fn imported(code: &str) -> BTreeSet<String> {
    let ident = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut modules = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            modules.insert(ident(rest));
            continue;
        };
        let mut depth = 0;
        let mut item_start = 0;
        for (position, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    modules.insert(ident(&group[item_start..position]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    modules.insert(ident(&group[item_start..position]));
                    item_start = position + 1;
                }
                _ => {}
            }
        }
    }
    modules.retain(|module| !module.is_empty());
    modules
}

/// Every module reachable from `from` along `arrows`.
fn reachable<'a>(arrows: &'a BTreeMap<String, BTreeSet<String>>, from: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(module) = stack.pop() {
        for next in arrows.get(module).into_iter().flatten() {
            if seen.insert(next.as_str()) {
                stack.push(next);
            }
        }
    }
    seen
}

#[test]
fn use_crate_arrows_run_one_way() {
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in sources() {
        let targets = arrows.entry(module.clone()).or_default();
        for target in imported(&code) {
            if target != module && !KNOWN.contains(&(module.as_str(), target.as_str())) {
                targets.insert(target);
            }
        }
    }
    assert!(arrows.len() > 20, "the modules of src/ were found: {arrows:?}");
    assert!(arrows["server"].contains("handlers"), "imports are read: {arrows:?}");
    let circles: Vec<String> = arrows
        .keys()
        .filter(|module| reachable(&arrows, module).contains(module.as_str()))
        .map(|module| {
            let back: Vec<&String> = arrows[module]
                .iter()
                .filter(|next| reachable(&arrows, next).contains(module.as_str()))
                .collect();
            format!("{module} -> {back:?} -> ... -> {module}")
        })
        .collect();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn imports_in_braces_and_paths_are_all_read() {
    let code = "use crate::{app::App, http::{self, Method},\n    store};\nlet x = crate::metrics::note(1);";
    let found: Vec<String> = imported(code).into_iter().collect();
    assert_eq!(found, ["app", "http", "metrics", "store"]);
}
