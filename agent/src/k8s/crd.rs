//! The custom resources detour reads, from their own crate (`detour-api`),
//! shared with the sandbox controller and `crdgen`. The agent only reads
//! them: it runs on every node, so it never writes status.

pub use detour_api::*;

#[cfg(test)]
mod tests {
    use crate::cli::crdgen;

    /// `deploy/crds/` must be what the types generate: run `cargo xtask
    /// crdgen` after changing them.
    #[test]
    fn committed_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        for (name, yaml) in crdgen::documents().expect("generate") {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crdgen`", path.display()));
            assert!(
                committed == yaml,
                "{} differs from the types; run `cargo xtask crdgen`",
                path.display()
            );
        }
    }
}
