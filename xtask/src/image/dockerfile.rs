//! The Dockerfile and `cargo xtask image` are one image: the Dockerfile's
//! build stage runs `cargo xtask image` and its last stage is that image's
//! layers. What it must repeat (the run settings and the labels, which a
//! `FROM scratch` stage cannot take from the layers) is compared here.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::{
        image::{CMD, ENTRYPOINT, ENV, USER, labels},
        root,
    };

    fn dockerfile() -> String {
        std::fs::read_to_string(root().join("Dockerfile")).expect("the Dockerfile")
    }

    /// The Dockerfile's last stage: from its last `FROM`, continuation
    /// lines joined.
    fn last_stage() -> String {
        let text = dockerfile().replace("\\\n", " ");
        let at = text.rfind("\nFROM ").expect("a FROM line");
        text[at + 1..].to_owned()
    }

    #[test]
    fn the_dockerfile_packages_the_layers_cargo_xtask_image_builds() {
        let text = dockerfile();
        assert!(text.contains("RUN cargo xtask image"), "{text}");
        let stage = last_stage();
        assert!(stage.starts_with("FROM scratch\n"), "{stage}");
        assert!(stage.contains("COPY --from=build /rootfs/ /"), "{stage}");
        let copies = stage.lines().filter(|l| l.starts_with("COPY")).count();
        assert_eq!(copies, 1, "nothing but the image's layers: {stage}");
    }

    #[test]
    fn the_dockerfile_runs_the_image_as_cargo_xtask_image_does() {
        let stage = last_stage();
        let line = |keyword: &str| {
            stage
                .lines()
                .find_map(|l| l.strip_prefix(keyword))
                .unwrap_or_else(|| panic!("no {keyword} in {stage}"))
                .trim()
                .to_owned()
        };
        assert_eq!(line("ENTRYPOINT "), format!("[\"{ENTRYPOINT}\"]"));
        assert_eq!(line("CMD "), format!("[\"{CMD}\"]"));
        assert_eq!(line("USER "), USER);
        let env: BTreeSet<&str> = line("ENV ").leak().split_whitespace().collect();
        assert_eq!(env, ENV.into_iter().collect::<BTreeSet<_>>());
    }

    #[test]
    fn the_dockerfile_labels_are_the_images() {
        let stage = last_stage();
        let label = stage
            .lines()
            .find_map(|l| l.strip_prefix("LABEL "))
            .expect("a LABEL line");
        let keys: BTreeSet<String> = label
            .split_whitespace()
            .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
            .filter(|k| !k.contains('"'))
            .collect();
        let expected: BTreeSet<String> = labels("test").into_keys().collect();
        assert_eq!(keys, expected);
    }
}
