//! The routes-file source: watches the file for changes (inotify, through
//! `notify`), re-reads it, and sends what it finds to the route updater
//! ([`follow`]).
//!
//! The file's directory is watched, not the file: editors and Kubernetes
//! ConfigMap mounts replace files by renaming over them, which a watch on the
//! old inode would miss. Every event in the directory is a hint to re-read;
//! the reader skips content it has already applied, so spurious hints are
//! cheap. Hints are coalesced in a channel of one.
//!
//! Access events are not hints: `notify` reports the directory's opens, and
//! the re-read's own open of the routes file would otherwise hint the next
//! re-read, forever (twenty reads a second of an unchanged file).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};

use super::{
    feed::{RouteFeed, SourceUpdate},
    file::RoutesFile,
    input::RouteInput,
};

/// How long to let a burst of file events settle before re-reading.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path} for changes")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// A live watch; dropping it stops the hints.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    pub changes: mpsc::Receiver<()>,
}

/// Starts watching the directory of `file`.
pub fn watch(file: &Path) -> Result<FileWatch, WatchError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, changes) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            // Full means a hint is already pending: nothing is lost.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| WatchError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Watch {
            path: dir.clone(),
            source,
        })?;
    Ok(FileWatch {
        _watcher: watcher,
        changes,
    })
}

/// Re-reads `path` on every change hint until `stop` (or until the updater
/// stops), and sends each new content to `feed`: valid, to apply; invalid,
/// rejected (the last good routes stay). `last_text` is what the agent
/// started with. An unreadable file (mid-replace, deleted) changes nothing.
#[instrument(skip_all, fields(path = %path.display()))]
pub async fn follow(
    path: PathBuf,
    mut last_text: String,
    mut watch: FileWatch,
    feed: RouteFeed,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            hint = watch.changes.recv() => if hint.is_none() { break },
        }
        tokio::time::sleep(SETTLE).await;
        while watch.changes.try_recv().is_ok() {}
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                warn!(%error, "routes file unreadable; keeping the last good routes");
                continue;
            }
        };
        if text == last_text {
            continue;
        }
        let update = match RoutesFile::parse(&text) {
            Ok(file) => {
                info!("routes reloaded");
                SourceUpdate::Reloaded(RouteInput::from(&file))
            }
            Err(error) => {
                error!(%error, "routes file rejected; keeping the last good routes");
                SourceUpdate::Rejected
            }
        };
        if !feed.send(update).await {
            break;
        }
        last_text = text;
    }
}
