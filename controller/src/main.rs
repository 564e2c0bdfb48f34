//! `detour-controller`: see the library's docs.

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DETOUR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let client = kube::Client::try_default().await?;
    detour_controller::run::run(client).await
}
