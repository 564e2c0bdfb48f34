//! Apache Kafka for the Kafka tests: the broker (KRaft mode) and its tools,
//! as Maven Central publishes them, at one pinned version. Maven resolves
//! the broker's runtime dependencies from a generated POM and copies the
//! jars into `~/.cache/detour/kafka/<version>/libs`; a stamp file marks a
//! complete copy, so a second `setup` is a no-op. The tests find the
//! directory in `DETOUR_KAFKA`, which `cargo xtask test` sets, and run the
//! broker with the machine's Java (17 or newer).

use std::path::PathBuf;

use anyhow::Context;

use crate::exec;

/// The Kafka release of the broker and of its clients' jars.
pub const KAFKA_VERSION: &str = "4.1.1";
/// Environment variable naming the directory that holds `libs/`.
pub const KAFKA_ENV: &str = "DETOUR_KAFKA";
/// The logging binding the broker's slf4j writes through.
const SLF4J_VERSION: &str = "2.0.17";

/// The broker's jars, downloaded once; returns their directory's parent.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let dir = crate::cache_home()?.join("kafka").join(KAFKA_VERSION);
    let stamp = dir.join("complete");
    if stamp.exists() {
        return Ok(dir);
    }
    let work = dir.join("pom");
    std::fs::create_dir_all(&work).with_context(|| format!("{}", work.display()))?;
    std::fs::write(work.join("pom.xml"), pom()).context("write pom.xml")?;
    let libs = dir.join("libs");
    let _ = std::fs::remove_dir_all(&libs);
    println!(
        "fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {}",
        libs.display()
    );
    exec(
        std::process::Command::new("mvn")
            .current_dir(&work)
            .args([
                "-q",
                "-B",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
            ])
            .arg(format!("-DoutputDirectory={}", libs.display())),
    )
    .context("mvn could not fetch the Kafka broker's jars")?;
    std::fs::write(&stamp, KAFKA_VERSION)?;
    Ok(dir)
}

/// A POM whose runtime dependencies are the broker, its tools and a
/// logging binding.
fn pom() -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.detour.tests</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
"#
    )
}
