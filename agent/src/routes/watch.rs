//! Watches the routes file for changes (inotify, through `notify`).
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

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

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
