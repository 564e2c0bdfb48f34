//! ARCHITECTURE.md's module table stays complete: every top-level module of
//! the agent (a directory or a file of `agent/src`, as `lib.rs` declares
//! it) has a row, and every row names a module that exists.

use std::{collections::BTreeSet, path::Path};

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
