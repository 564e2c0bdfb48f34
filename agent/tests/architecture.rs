//! The agent's structure stays as ARCHITECTURE.md describes it:
//!
//! - its module table is complete: every top-level module of the agent (a
//!   directory or a file of `agent/src`, as `lib.rs` declares it) has a row,
//!   and every row names a module that exists;
//! - no import circle: between the agent's top-level modules, and between
//!   any two of its files neither of which contains the other, imports go
//!   one way (the controller's files too). A file naming what an enclosing
//!   module defines (`super::ProxyContext`, the stages' shared context) or
//!   what its own children define is the module tree itself, not a circle.
//!
//! Imports are read with `syn`: `use` declarations and every path in the
//! code that starts at `crate`, `super` or `self`, or at a child module.
//! Test modules are left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The modules `lib.rs` declares (`pub mod NAME;`).
fn declared() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_owned())
        .collect()
}

/// The modules the "## Agent" table of ARCHITECTURE.md has rows for: the
/// first cell of each row, `name/` or `name.rs`.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let section = text
        .split("\n## Agent\n")
        .nth(1)
        .expect("an \"## Agent\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|cell| *cell != "module")
        .map(|cell| {
            cell.trim_end_matches('/')
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_top_level_module_has_a_row_and_every_row_a_module() {
    let (declared, documented) = (declared(), documented());
    assert!(declared.len() > 10, "lib.rs read: {declared:?}");
    let missing: Vec<_> = declared.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table: no row for {missing:?}; rows for no module: {stale:?}"
    );
}

/// A module's path below the crate root: `["proxy", "http1", "parking"]`.
type ModPath = Vec<String>;

/// Every non-test source file of the crate at `src`, by module path.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "tests" {
                    dirs.push(path);
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if stem == "tests" {
                continue;
            }
            let relative = path
                .parent()
                .expect("parent")
                .strip_prefix(src)
                .expect("below src");
            let mut module: ModPath = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if !matches!(stem, "mod" | "lib" | "main") {
                module.push(stem.to_owned());
            }
            found.insert(module, path);
        }
    }
    found
}

/// The paths one file names, as segments relative to the crate root.
struct Names<'a> {
    module: &'a [String],
    children: BTreeSet<String>,
    named: Vec<ModPath>,
}

impl Names<'_> {
    /// `segments` as written in this file, made absolute; `None` for a path
    /// that does not start at the crate, an ancestor, this module, or a child.
    fn absolute(&self, segments: &[String]) -> Option<ModPath> {
        let (first, rest) = segments.split_first()?;
        let mut base: ModPath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.to_vec(),
            "super" => self.module[..self.module.len().checked_sub(1)?].to_vec(),
            child if self.children.contains(child) => {
                let mut base = self.module.to_vec();
                base.push(child.to_owned());
                base
            }
            _ => return None,
        };
        let mut rest = rest;
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop();
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn name(&mut self, segments: &[String]) {
        if let Some(path) = self.absolute(segments) {
            self.named.push(path);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut full = prefix.clone();
                if name.ident != "self" {
                    full.push(name.ident.to_string());
                }
                self.name(&full);
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                full.push(rename.ident.to_string());
                self.name(&full);
            }
            syn::UseTree::Glob(_) => self.name(&prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

impl<'ast> Visit<'ast> for Names<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.name(&segments);
        syn::visit::visit_path(self, path);
    }
}

/// The file-level import graph of the crate at `src`: for each module, the
/// modules whose items it names.
fn imports(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let modules = modules(src);
    let owner = |path: &ModPath| {
        (0..=path.len())
            .rev()
            .map(|len| path[..len].to_vec())
            .find(|prefix| modules.contains_key(prefix))
    };
    modules
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("read source");
            let parsed = syn::parse_file(&text)
                .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            let children = modules
                .keys()
                .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
                .map(|child| child[module.len()].clone())
                .collect();
            let mut names = Names {
                module,
                children,
                named: Vec::new(),
            };
            names.visit_file(&parsed);
            let targets = names
                .named
                .iter()
                .filter_map(owner)
                .filter(|target| target != module)
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// One circle in `graph`, as the modules along it, if there is any.
fn circle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        at: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match marks.get(at) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|m| m == at).expect("on the stack");
                let mut circle = stack[from..].to_vec();
                circle.push(at.clone());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(at.clone(), Mark::Open);
        stack.push(at.clone());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        marks.insert(at.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut marks, &mut Vec::new()))
}

fn show(circle: &[ModPath]) -> String {
    circle
        .iter()
        .map(|m| {
            if m.is_empty() {
                "crate".to_owned()
            } else {
                m.join("::")
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Asserts that the crate at `src` has no import circle between files that
/// do not contain one another, nor between its top-level modules.
fn assert_no_import_circle(src: &Path) {
    let graph = imports(src);
    assert!(
        graph.len() > 5,
        "{} read: {} files",
        src.display(),
        graph.len()
    );
    let files = graph
        .iter()
        .map(|(module, targets)| {
            let unrelated = targets
                .iter()
                .filter(|t| !t.starts_with(module) && !module.starts_with(t))
                .cloned()
                .collect();
            (module.clone(), unrelated)
        })
        .collect();
    if let Some(circle) = circle(&files) {
        panic!(
            "{}: files import each other: {}",
            src.display(),
            show(&circle)
        );
    }
    let mut top: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, targets) in &graph {
        let Some(from) = module.first() else { continue };
        for target in targets {
            if let Some(to) = target.first().filter(|to| *to != from) {
                top.entry(vec![from.clone()])
                    .or_default()
                    .insert(vec![to.clone()]);
            }
        }
    }
    if let Some(circle) = circle(&top) {
        panic!(
            "{}: modules import each other: {}",
            src.display(),
            show(&circle)
        );
    }
}

#[test]
fn the_agent_has_no_import_circle() {
    assert_no_import_circle(&Path::new(ROOT).join("src"));
}

#[test]
fn the_controller_has_no_import_circle() {
    assert_no_import_circle(&Path::new(ROOT).join("../controller/src"));
}

#[test]
fn a_circle_is_found_where_there_is_one() {
    let dir = std::env::temp_dir().join(format!("detour-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).expect("mkdir");
    let files = [
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::b::inner::Thing; pub struct A;"),
        ("b/mod.rs", "pub mod inner;"),
        ("b/inner.rs", "pub struct Thing(crate::c::C);"),
        ("c.rs", "pub struct C; fn f() -> super::a::A { todo!() }"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let result = std::panic::catch_unwind(|| {
        let graph = imports(&dir);
        circle(&graph).map(|c| show(&c))
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        result.expect("read").as_deref(),
        Some("a -> b::inner -> c -> a")
    );
}
