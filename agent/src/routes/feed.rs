//! How a route source hands its output to the route updater, the single
//! writer of route state: over a channel, so that no source holds the
//! updater, the snapshot, the data path or the reconnect sweep.
//!
//! A source sends a whole input each time (a routes file re-read, the
//! cluster's objects re-translated), never a delta: the updater builds each
//! snapshot from scratch, so an update lost to a closed channel at shutdown
//! loses nothing that the next one would not carry.

use tokio::sync::mpsc;

use super::input::RouteInput;

/// Updates a source may send before it waits for the updater.
const QUEUED: usize = 8;

/// What a route source has to say.
#[derive(Debug)]
pub enum SourceUpdate {
    /// The routes file was re-read and is valid: apply it.
    Reloaded(RouteInput),
    /// The routes file was re-read and rejected: the routes in force stay.
    Rejected,
    /// The cluster's route objects, translated: apply the input, and show
    /// the objects the translation ignored, with why, as route problems.
    Translated {
        input: RouteInput,
        problems: Vec<String>,
    },
}

/// A source's end of the feed.
#[derive(Debug, Clone)]
pub struct RouteFeed(mpsc::Sender<SourceUpdate>);

/// The updater's end of the feed.
#[derive(Debug)]
pub struct RouteUpdates(mpsc::Receiver<SourceUpdate>);

/// A feed from route sources to the updater.
pub fn feed() -> (RouteFeed, RouteUpdates) {
    let (send, receive) = mpsc::channel(QUEUED);
    (RouteFeed(send), RouteUpdates(receive))
}

impl RouteFeed {
    /// Sends `update`; `false` once the updater has stopped.
    pub async fn send(&self, update: SourceUpdate) -> bool {
        self.0.send(update).await.is_ok()
    }
}

impl RouteUpdates {
    /// The next update; `None` once every source has stopped.
    pub async fn next(&mut self) -> Option<SourceUpdate> {
        self.0.recv().await
    }
}
