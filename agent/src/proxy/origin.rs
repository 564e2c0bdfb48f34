//! Where upstream connections leave from: the client's own network
//! namespace, so that a server, a NetworkPolicy or a broker sees the client
//! pod's address, exactly as without detour, and never the node's.
//!
//! Every redirected connect's record carries the cookie of its namespace
//! (`bpf_get_netns_cookie`). [`Origins`] maps cookies to handles on the
//! namespaces the container runtime names under [`NETNS_DIR`] (one per pod
//! sandbox), found by scanning that directory: at start, every
//! [`SCAN_EVERY`], and at once when a connection comes from a namespace not
//! known yet. Scans run one at a time and open only files they have not
//! seen, so a scan on a node without new pods reads the directory and
//! nothing more; files that are gone are let go (a handle keeps a
//! namespace alive). A cookie still unknown after a scan that ran after its
//! connection was made is not a named namespace (a runtime names a pod's
//! namespace before anything runs in it): it is remembered, and never
//! scanned for again (cookies are never reused).
//!
//! The node's address is kept where it is the truth or there is no other:
//! - the client is in the agent's own namespace (the node itself, a
//!   `hostNetwork` pod): its connections look as they would without
//!   detour;
//! - the namespace is not named under [`NETNS_DIR`] (a runtime that does
//!   not name them; counted);
//! - `--client-address node`, or the node cannot do it (kernel before 5.14,
//!   no `CAP_SYS_ADMIN`): `detour status` says why.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use tracing::{debug, info, warn};

use crate::netns::{Home, NETNS_DIR};

/// Named namespaces are looked for this often even without a miss: new
/// pods are found before their first connection, and deleted ones let go.
pub const SCAN_EVERY: Duration = Duration::from_secs(10);

/// Unknown cookies remembered at most (then forgotten all at once).
const UNKNOWN_MAX: usize = 64 * 1024;

/// A client's namespace, held open.
#[derive(Debug)]
pub struct Namespace {
    file: File,
    cookie: u64,
    /// The way back to the agent's namespace.
    home: Arc<Home>,
}

/// Where a client connection's upstream connections leave from.
#[derive(Debug, Clone, Default)]
pub struct Origin(Option<Arc<Namespace>>);

impl Origin {
    /// The agent's own namespace: the node's address.
    pub const NODE: Self = Self(None);

    /// Pools key upstream connections by this and the destination: a
    /// connection from one client's namespace never serves another's.
    pub fn key(&self) -> u64 {
        self.0.as_ref().map_or(0, |ns| ns.cookie)
    }

    /// Whether connections leave from the client's namespace.
    pub fn is_client(&self) -> bool {
        self.0.is_some()
    }

    /// A non-blocking TCP socket for `dst`'s family, in this namespace.
    pub fn socket(&self, v6: bool) -> io::Result<socket2::Socket> {
        let domain = if v6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let new = || {
            socket2::Socket::new(
                domain,
                socket2::Type::STREAM.nonblocking(),
                Some(socket2::Protocol::TCP),
            )
        };
        match &self.0 {
            Some(namespace) => namespace.home.inside(namespace.file.as_fd(), new)?,
            None => new(),
        }
    }
}

/// Why a client connection's upstream connections use the node's address
/// (`detour_client_address_total{kept="false"}`'s reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// From the client's namespace.
    Client,
    /// The client is in the agent's namespace (the node, `hostNetwork`).
    NodeClient,
    /// The client's namespace is not named under the runtime's directory.
    Unnamed,
    /// Keeping the client's address is off (see `detour status`).
    Off,
}

impl Resolved {
    /// The `reason` label of `detour_client_address_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client_namespace",
            Self::NodeClient => "node_client",
            Self::Unnamed => "unnamed_namespace",
            Self::Off => "off",
        }
    }
}

/// The client namespaces known by cookie, and how to find more.
pub struct Origins {
    /// `None`: off, and `off_reason` says why.
    home: Option<Arc<Home>>,
    off_reason: Option<String>,
    by_cookie: ArcSwap<HashMap<u64, Arc<Namespace>>>,
    /// Cookies not found by a scan that came after their connection.
    unknown: Mutex<HashSet<u64>>,
    /// One scan at a time; the files seen, with their inode and cookie.
    scanned: tokio::sync::Mutex<HashMap<PathBuf, (u64, u64)>>,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origins")
            .field("off_reason", &self.off_reason)
            .finish_non_exhaustive()
    }
}

impl Origins {
    /// Keeps clients' addresses when `keep`, if this node allows it.
    pub fn new(keep: bool) -> Self {
        let (home, off_reason) = if keep {
            match Home::here() {
                Ok(home) => (Some(Arc::new(home)), None),
                Err(error) => {
                    warn!(%error, "upstream connections will carry the node's address, not the client pod's");
                    (None, Some(error.to_string()))
                }
            }
        } else {
            (None, Some("--client-address node".to_owned()))
        };
        Self {
            home,
            off_reason,
            by_cookie: ArcSwap::default(),
            unknown: Mutex::default(),
            scanned: tokio::sync::Mutex::default(),
        }
    }

    /// What `detour status` says about clients' addresses.
    pub fn describe(&self) -> String {
        match &self.off_reason {
            Some(reason) => format!("not kept: servers see the node's address ({reason})"),
            None => format!(
                "kept: upstream connections leave from the client pod's network namespace ({} known)",
                self.by_cookie.load().len()
            ),
        }
    }

    /// Where the upstream connections of a client whose namespace has
    /// `cookie` leave from.
    pub async fn resolve(&self, cookie: u64) -> (Origin, Resolved) {
        let Some(home) = &self.home else {
            return (Origin::NODE, Resolved::Off);
        };
        if cookie == home.cookie {
            return (Origin::NODE, Resolved::NodeClient);
        }
        if let Some(found) = self.known(cookie) {
            return found;
        }
        if cookie == 0 || self.lock_unknown().contains(&cookie) {
            return (Origin::NODE, Resolved::Unnamed);
        }
        self.scan().await;
        if let Some(found) = self.known(cookie) {
            return found;
        }
        let mut unknown = self.lock_unknown();
        if unknown.len() >= UNKNOWN_MAX {
            unknown.clear();
        }
        unknown.insert(cookie);
        debug!(
            cookie,
            "client namespace not named under {NETNS_DIR}: the node's address is used"
        );
        (Origin::NODE, Resolved::Unnamed)
    }

    fn known(&self, cookie: u64) -> Option<(Origin, Resolved)> {
        let namespace = self.by_cookie.load().get(&cookie).cloned()?;
        Some((Origin(Some(namespace)), Resolved::Client))
    }

    fn lock_unknown(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.unknown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at [`NETNS_DIR`] again: opens what is new, lets go of what
    /// is gone.
    pub async fn scan(&self) {
        let Some(home) = &self.home else {
            return;
        };
        let mut scanned = self.scanned.lock().await;
        let mut by_cookie = HashMap::clone(&self.by_cookie.load());
        let before = by_cookie.len();
        let mut present = HashMap::new();
        for entry in std::fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(inode) = std::fs::metadata(&path).map(|m| m.ino()) else {
                continue;
            };
            if let Some(&(seen, cookie)) = scanned.get(&path)
                && seen == inode
            {
                present.insert(path, (inode, cookie));
                continue;
            }
            // A runtime's half-made file (not yet a namespace) fails here
            // and is looked at again next time.
            let opened = File::open(&path).and_then(|file| {
                let cookie = home.cookie_of(&file)?;
                Ok(Namespace {
                    file,
                    cookie,
                    home: Arc::clone(home),
                })
            });
            match opened {
                Ok(namespace) => {
                    present.insert(path, (inode, namespace.cookie));
                    by_cookie.insert(namespace.cookie, Arc::new(namespace));
                }
                Err(error) => debug!(path = %path.display(), %error, "not a usable namespace"),
            }
        }
        let live: HashSet<u64> = present.values().map(|&(_, cookie)| cookie).collect();
        by_cookie.retain(|cookie, _| live.contains(cookie));
        if by_cookie.len() != before {
            info!(namespaces = by_cookie.len(), "client namespaces");
        }
        self.by_cookie.store(Arc::new(by_cookie));
        *scanned = present;
    }

    /// Scans every [`SCAN_EVERY`] until `stop`.
    pub async fn follow(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.home.is_none() {
            return;
        }
        loop {
            self.scan().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SCAN_EVERY) => {}
            }
        }
    }
}
