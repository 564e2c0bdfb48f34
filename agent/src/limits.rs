//! Process resources at start: the open-file limit the proxy needs,
//! raised; and the memory start-up used, given back.
//!
//! Every proxied connection holds two descriptors (the client's and, while
//! a request is in flight, the upstream's), so `--max-connections N` needs
//! about `2N` plus the agent's own. Many runtimes start containers with a
//! soft limit of 1024 and a much higher hard limit; a process may raise its
//! soft limit up to the hard one without privilege, as Go's runtime does for
//! every program. Without this, the proxy would hit `EMFILE` at about 500
//! connections and refuse the rest at accept, whatever `--max-connections`
//! says. When even the hard limit is too low, the default connection limit
//! is fitted to it (many containers get 20,000 files, a little short of the
//! default 10,000 connections' 20,256); an explicit `--max-connections` is
//! kept, and the agent warns, naming the numbers.

use tracing::{info, warn};

use crate::defaults;

/// Descriptors the agent needs besides its proxied connections: listeners,
/// maps, the admin socket, the route source, the runtime.
const OWN_FILES: u64 = 256;

/// Descriptors `max_connections` proxied connections need.
pub fn files_needed(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(OWN_FILES)
}

/// How many connections the proxy takes at once, given the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    pub max_connections: usize,
    /// The limit is short of what an explicit `--max-connections` needs.
    pub short: bool,
}

/// The connection limit for a soft open-file limit: an explicit
/// `--max-connections` as asked (short when the files do not suffice); the
/// default fitted to the files there are, at most [`defaults::MAX_CONNECTIONS`].
pub fn fit(requested: Option<usize>, open_files: u64) -> Fitted {
    let fits = usize::try_from(open_files.saturating_sub(OWN_FILES) / 2).unwrap_or(usize::MAX);
    match requested {
        Some(asked) => Fitted {
            max_connections: asked,
            short: files_needed(asked) > open_files,
        },
        None => Fitted {
            max_connections: defaults::MAX_CONNECTIONS.min(fits).max(1),
            short: false,
        },
    }
}

/// Raises the soft open-file limit to the hard limit and fits the connection
/// limit to it ([`fit`]). Called once the configuration is known to be good,
/// so that a bad one is the first thing the agent says. Logs the outcome
/// once: a warning only when an explicit `--max-connections` cannot be met.
pub fn raise_open_files(requested: Option<usize>) -> usize {
    let open_files = raise_soft_limit();
    let fitted = fit(requested, open_files);
    let needed = files_needed(fitted.max_connections);
    if fitted.short {
        warn!(
            open_files,
            needed,
            max_connections = fitted.max_connections,
            "the open-file limit is below what --max-connections needs; connections beyond it are refused at accept (raise the container's nofile limit, or lower --max-connections)"
        );
    } else {
        info!(
            open_files,
            max_connections = fitted.max_connections,
            fitted = requested.is_none() && fitted.max_connections < defaults::MAX_CONNECTIONS,
            "open-file limit"
        );
    }
    fitted.max_connections
}

/// The soft open-file limit, raised to the hard one where it was lower.
fn raise_soft_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return 0;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
            limit.rlim_cur = before;
        }
    }
    limit.rlim_cur
}

/// Fixes the C allocator's mmap and trim thresholds at glibc's defaults
/// (128 KiB). glibc raises both each time the program frees a large mapped
/// block, and start-up frees several (the kernel's BTF is 5.5 MB: the trim
/// threshold becomes 11 MB). From then on a large block (a table of parked
/// connections that grew) is carved from a thread's heap instead of mapped,
/// and memory freed at the top of a thread's heap stays resident up to that
/// size: `malloc_trim` does not release the top of a thread's heap. Fixed,
/// large blocks are mapped (and grow by `mremap`), and a heap shrinks as its
/// top is freed. Called first, before anything allocates much.
pub fn fix_allocator_thresholds() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters.
    unsafe {
        const THRESHOLD: i32 = 128 * 1024;
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

/// Gives freed heap memory back to the OS; the C allocator keeps freed heap
/// pages mapped otherwise, and they stay in the agent's RSS. Called after
/// start-up (loading the eBPF programs parses the kernel's BTF: about 15 MiB
/// at its peak, all freed once the programs are loaded; 2.5 MiB of RSS on
/// the machines measured) and after idle connections park (the memory of
/// their ended tasks, see `proxy::http1::parking`).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_files_per_connection_plus_the_agents_own() {
        assert_eq!(files_needed(0), OWN_FILES);
        assert_eq!(files_needed(10_000), 20_000 + OWN_FILES);
        assert_eq!(files_needed(usize::MAX), u64::MAX);
    }

    #[test]
    fn the_default_is_fitted_to_a_short_limit_and_an_explicit_one_is_kept() {
        // A common container limit, 20 files short of the default's needs.
        let fitted = fit(None, 20_000);
        assert_eq!(fitted.max_connections, 9_872);
        assert!(!fitted.short);
        assert!(files_needed(fitted.max_connections) <= 20_000);
        assert_eq!(
            fit(None, 1 << 20).max_connections,
            defaults::MAX_CONNECTIONS
        );
        assert_eq!(fit(None, 0).max_connections, 1);
        assert_eq!(
            fit(Some(5_000), 8_192),
            Fitted {
                max_connections: 5_000,
                short: true
            }
        );
        assert!(!fit(Some(5_000), 10_256).short);
    }
}
