//! Publishing a benchmark's table: `bench/RESULTS.md` and the README's
//! "## Benchmarks" section each hold one block per suite, between
//! `<!-- SUITE:begin -->` and `<!-- SUITE:end -->`. A run replaces only its
//! own suite's block, so suites run at different times (or on different
//! days) do not overwrite each other, and the README shows the same text as
//! RESULTS.md. Nothing of the README outside that section is touched.
//!
//! A missing RESULTS.md is created with an empty block per known suite; in
//! the README, the section's placeholder line becomes those empty blocks. A
//! block missing from a file is appended (to the end of the README section).

use std::path::Path;

use anyhow::{Context, bail};

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
const README_SECTION: &str = "## Benchmarks";
const README_PLACEHOLDER: &str = "(table: see the closing section of this file once generated)";

/// Writes `block` (markdown, ending in a newline) as `suite`'s block in
/// `bench/RESULTS.md` and in the README.
pub fn publish(suite: &str, block: &str) -> anyhow::Result<()> {
    let root = crate::root();
    let results = root.join("bench/RESULTS.md");
    let text = match std::fs::read_to_string(&results) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh_results(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", results.display())),
    };
    let text = replace_block(&text, suite, block);
    write(&results, &text)?;

    let readme = root.join("README.md");
    let text = std::fs::read_to_string(&readme)
        .with_context(|| format!("cannot read {}", readme.display()))?;
    write(&readme, &update_readme(&text, suite, block)?)?;
    eprintln!(
        "bench {suite}: results written to {} and {}",
        results.display(),
        readme.display()
    );
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
         blocks may come from different runs (each says when and where it ran). The same \
         blocks are copied into the README's \"Benchmarks\" section.\n",
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

/// The README with `suite`'s block replaced inside the Benchmarks section.
fn update_readme(text: &str, suite: &str, block: &str) -> anyhow::Result<String> {
    let Some(start) = text.find(&format!("\n{README_SECTION}\n")).map(|i| i + 1) else {
        bail!("README.md has no \"{README_SECTION}\" section");
    };
    let body_start = start + README_SECTION.len() + 1;
    let end = text[body_start..]
        .find("\n## ")
        .map_or(text.len(), |i| body_start + i + 1);
    let mut section = text[start..end].to_owned();
    if let Some(at) = section.find(README_PLACEHOLDER) {
        let blocks: Vec<String> = SUITES.iter().map(|s| empty_block(s)).collect();
        let line_end = at + README_PLACEHOLDER.len() + usize::from(section[at..].contains('\n'));
        section.replace_range(at..line_end, &blocks.join("\n"));
    }
    let mut section = replace_block(section.trim_end(), suite, block);
    section.push_str(if end < text.len() { "\n\n" } else { "\n" });
    Ok(format!("{}{section}{}", &text[..start], &text[end..]))
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

    #[test]
    fn readme_section_only() -> anyhow::Result<()> {
        let readme =
            format!("# x\n\n## Benchmarks\n\nintro\n\n{README_PLACEHOLDER}\n\n## Layout\n\nrest\n");
        let out = update_readme(&readme, "http", "table\n")?;
        assert!(out.starts_with("# x\n\n## Benchmarks\n\nintro\n\n<!-- connect:begin -->"));
        assert!(out.contains("<!-- http:begin -->\ntable\n<!-- http:end -->\n\n<!-- h2:begin -->"));
        assert!(out.contains("<!-- sandbox:end -->\n\n## Layout\n\nrest\n"));
        assert!(out.contains("`cargo xtask bench soak --upgrade` writes this block"));
        let again = update_readme(&out, "connect", "c\n")?;
        assert!(again.contains("<!-- connect:begin -->\nc\n<!-- connect:end -->"));
        assert!(again.contains("<!-- http:begin -->\ntable\n<!-- http:end -->\n\n<!-- h2"));
        assert!(again.contains("<!-- h2:end -->\n\n<!-- relay:begin -->"));
        assert!(again.contains("<!-- relay:end -->\n\n<!-- soak:begin -->"));
        Ok(())
    }
}
