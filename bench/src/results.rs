//! Publishing a benchmark's table: `bench/RESULTS.md` holds one block per
//! suite, between `<!-- SUITE:begin -->` and `<!-- SUITE:end -->`, and is the
//! only place the tables are written (the README and `docs/benchmarks.md`
//! link to it). A run replaces only its own suite's block, so suites run at
//! different times (or on different days) do not overwrite each other. A
//! missing RESULTS.md is created with an empty block per known suite; a
//! block missing from it is appended.

use std::path::Path;

use anyhow::Context;

/// Every suite, in the order their blocks appear.
const SUITES: [&str; 8] = [
    "connect",
    "http",
    "h2",
    "relay",
    "soak",
    "soak-upgrade",
    "sandbox",
    "origins",
];

/// Writes `block` (markdown, ending in a newline) as `suite`'s block in
/// `bench/RESULTS.md`.
pub fn publish(suite: &str, block: &str) -> anyhow::Result<()> {
    let root = crate::host::root();
    let results = root.join("bench/RESULTS.md");
    let text = match std::fs::read_to_string(&results) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh_results(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", results.display())),
    };
    let text = replace_block(&text, suite, block);
    write(&results, &text)?;
    eprintln!("bench {suite}: results written to {}", results.display());
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn markers(suite: &str) -> (String, String) {
    (
        format!("<!-- {suite}:begin -->"),
        format!("<!-- {suite}:end -->"),
    )
}

fn empty_block(suite: &str) -> String {
    let (begin, end) = markers(suite);
    let command = suite.replace("soak-upgrade", "soak --upgrade");
    format!("{begin}\n_Not run yet: `cargo xtask bench {command}` writes this block._\n{end}\n")
}

fn fresh_results() -> String {
    let mut text = String::from(
        "# Benchmark results\n\n\
         Written by `cargo xtask bench SUITE`: each suite replaces only its own block, so the \
         blocks may come from different runs (each says when and where it ran). \
         `docs/benchmarks.md` says what each suite measures.\n",
    );
    for suite in SUITES {
        text.push('\n');
        text.push_str(&empty_block(suite));
    }
    text
}

/// `text` with `suite`'s block replaced by `block` (or appended).
fn replace_block(text: &str, suite: &str, block: &str) -> String {
    let (begin, end) = markers(suite);
    let whole = format!("{begin}\n{block}{end}");
    if let (Some(start), Some(stop)) = (text.find(&begin), text.find(&end))
        && start < stop
    {
        return format!("{}{whole}{}", &text[..start], &text[stop + end.len()..]);
    }
    let sep = if text.ends_with("\n\n") || text.is_empty() {
        ""
    } else if text.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{text}{sep}{whole}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_block() {
        let text = fresh_results();
        let once = replace_block(&text, "http", "one\n");
        let twice = replace_block(&once, "http", "two\n");
        assert!(twice.contains("<!-- http:begin -->\ntwo\n<!-- http:end -->"));
        assert!(!twice.contains("one"));
        assert!(twice.contains(&empty_block("connect")));
    }
}
