//! The module map as a test: each top-level module of the library imports only the modules
//! below it (README: Architecture), so the layers have no cycles. It reads the sources' `crate::`
//! paths, as a reviewer would with grep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module and what it may import, lowest first.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("units", &[]),
    ("render", &[]),
    ("config", &[]),
    ("redact", &[]),
    ("phases", &["model"]),
    ("names", &["model", "phases"]),
    ("sector", &["model", "phases", "names"]),
    ("metrics", &["sector"]),
    ("store", &["model", "units", "redact"]),
    ("resources", &["model", "phases", "units"]),
    ("proofs", &["model", "phases", "store", "resources"]),
    ("lotus", &["model", "redact"]),
    (
        "broker",
        &[
            "model",
            "phases",
            "names",
            "sector",
            "resources",
            "units",
            "redact",
        ],
    ),
    (
        "worker",
        &[
            "model",
            "phases",
            "names",
            "sector",
            "store",
            "resources",
            "proofs",
            "broker",
            "units",
            "render",
            "config",
            "metrics",
        ],
    ),
    (
        "publisher",
        &[
            "model",
            "phases",
            "names",
            "sector",
            "store",
            "resources",
            "proofs",
            "broker",
            "units",
            "render",
            "lotus",
            "metrics",
        ],
    ),
    (
        "autoscaler",
        &[
            "model", "phases", "names", "broker", "units", "config", "metrics",
        ],
    ),
];

/// The top-level modules a file's code names through `crate::`, whether in a `use` line, a
/// grouped `use crate::{…}` or a path in the code.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find("};").unwrap_or(group.len())];
            for part in group.split(',') {
                let name = part.trim().split("::").next().unwrap_or("").trim();
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn each_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some(may) = allowed.get(module.as_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for import in imports(&text) {
            // `crate::now_ms` and the like live in lib.rs, below everything.
            if import == module || !allowed.contains_key(import.as_str()) {
                continue;
            }
            if !may.contains(&import.as_str()) {
                wrong.push(format!("{} imports {import}", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

/// The table itself is acyclic: a module may only import modules listed before it.
#[test]
fn the_layers_are_ordered() {
    for (i, (module, may)) in LAYERS.iter().enumerate() {
        for import in *may {
            let below = LAYERS[..i].iter().any(|(m, _)| m == import);
            assert!(below, "{module} may import {import}, which is not below it");
        }
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::model::{A, B};\nuse crate::{names, phases::Phase};\nlet x = crate::store::f();\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["model", "names", "phases", "store"]);
}
