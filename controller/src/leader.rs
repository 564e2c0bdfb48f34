//! One writer: replicas elect a leader on a Lease (kube-lease-manager,
//! server-side apply, so two can never hold it at once). Only the leader
//! reconciles; a replica that loses the Lease exits, and its restart stands
//! by. A new leader takes over within one lease duration of the old one's
//! last renewal (at once when the old one stops cleanly and releases it).

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// Where and how long the Lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a holder may go without renewing before another may take it.
    pub duration: u64,
}

/// Starts competing for the Lease: the channel says whether this replica
/// holds it. Dropping the channel releases the Lease.
pub async fn elect(client: Client, config: &LeaseConfig) -> anyhow::Result<watch::Receiver<bool>> {
    // Renew a third of the duration before it runs out.
    let grace = (config.duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_parameters(LeaseParams::new(
            config.identity.clone(),
            config.duration,
            grace,
        ))
        .build()
        .await?;
    let (leading, _task) = manager.watch().await;
    Ok(leading)
}
