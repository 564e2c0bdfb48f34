//! Unix socket files the agent serves on (the admin socket, the handover
//! socket): created mode 0600, so only root reaches them; a stale file left
//! by a dead agent is replaced; a live one only when this agent is taking
//! over from the agent that serves it (a hitless upgrade). The file is
//! removed at stop only if it is still this agent's: a successor that has
//! bound the same path keeps its socket.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("another detour agent is serving {path}; stop it first")]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; remove it or pass another path")]
    NotASocket { path: PathBuf },
    #[error("cannot create the socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to do with a socket file that a live process still serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Refuse: two agents serving one path is a mistake.
    Refuse,
    /// Replace it: this agent took over from the one serving it.
    Replace,
}

/// A socket file this agent created, identified by its inode.
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    /// Whether the path still names this agent's socket.
    pub fn is_ours(&self) -> bool {
        identity(&self.path).is_some_and(|id| Some(id) == self.identity)
    }

    /// Removes the file, unless another process has replaced it since.
    pub fn remove_if_ours(&self) {
        if self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `file`'s path again when another process took it and is gone (a
/// successor agent that died): what this agent serves is reachable again.
/// A live replacement is left alone.
pub fn reclaim(listener: &mut UnixListener, file: &mut SocketFile) {
    if file.is_ours() {
        return;
    }
    match bind(&file.path, Live::Refuse) {
        Ok((reclaimed, reclaimed_file)) => {
            info!(path = %file.path.display(), "socket reclaimed from a successor that is gone");
            *listener = reclaimed;
            *file = reclaimed_file;
        }
        Err(error) => tracing::warn!(%error, "socket not reclaimed"),
    }
}

/// Binds a Unix socket at `path` with mode 0600.
pub fn bind(path: &Path, live: Live) -> Result<(UnixListener, SocketFile), SocketFileError> {
    let bind_error = |source| SocketFileError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(SocketFileError::NotASocket {
                path: path.to_owned(),
            });
        }
        let serving = std::os::unix::net::UnixStream::connect(path).is_ok();
        if serving && live == Live::Refuse {
            return Err(SocketFileError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        let which = if serving {
            "the predecessor's"
        } else {
            "a stale"
        };
        info!(path = %path.display(), "replacing {which} socket");
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    // The socket is created 0600 (umask 0177 for the bind), so there is no
    // moment at which another user could connect; the mode is then set
    // explicitly as well. The umask is process-wide: the window is one
    // bind(2), and it only ever makes files more private.
    // SAFETY: umask(2) cannot fail and touches no memory.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    let file = SocketFile {
        path: path.to_owned(),
        identity: identity(path),
    };
    Ok((listener, file))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}
