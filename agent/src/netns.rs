//! Network namespaces, as the agent uses them: handles on the namespaces
//! container runtimes name under [`NETNS_DIR`], a moment inside one on the
//! calling thread ([`Entered`]), and each namespace's cookie, the number the
//! kernel gives it for life and the eBPF programs record with every
//! redirected connect (`bpf_get_netns_cookie`).
//!
//! Threads, not processes, change namespace (`setns(2)` with `CLONE_NEWNET`
//! moves only the calling thread). A socket belongs for life to the
//! namespace it was created in, whichever thread later uses it: so the
//! proxy creates an upstream socket inside the client's namespace and
//! comes straight back, with nothing else running on the thread meanwhile.
//! Entering a namespace needs `CAP_SYS_ADMIN`.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

/// Where container runtimes (containerd, CRI-O) and `ip netns` bind named
/// network namespaces: one file per pod sandbox.
pub const NETNS_DIR: &str = "/run/netns";

/// The namespace the agent's threads live in, and the way back to it.
#[derive(Debug)]
pub struct Home {
    file: File,
    /// Its cookie.
    pub cookie: u64,
}

impl Home {
    /// The calling thread's namespace (at startup: the agent's). Fails when
    /// the kernel has no namespace cookies for user space (before 5.14) or
    /// the agent may not enter namespaces (no `CAP_SYS_ADMIN`): the reason
    /// is the error's message.
    pub fn here() -> io::Result<Self> {
        let file = File::open("/proc/thread-self/ns/net")?;
        let cookie = socket_cookie(&socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            None,
        )?)
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "the kernel gives no namespace cookies (SO_NETNS_COOKIE, Linux 5.14): {error}"
                ),
            )
        })?;
        let home = Self { file, cookie };
        // Entering the namespace one is in needs the same capability as
        // entering any other: find out now, not on the first connection.
        setns(home.file.as_fd()).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot enter network namespaces (CAP_SYS_ADMIN): {error}"),
            )
        })?;
        Ok(home)
    }

    /// Runs `work` on the calling thread inside `namespace`, then returns
    /// the thread home. `work` must not block or yield: the thread is a
    /// runtime worker, and anything else it ran meanwhile would run in the
    /// wrong namespace.
    pub fn inside<T>(&self, namespace: BorrowedFd<'_>, work: impl FnOnce() -> T) -> io::Result<T> {
        setns(namespace)?;
        let _back = Back(self);
        Ok(work())
    }

    /// The cookie of the namespace `file` refers to: a socket made inside
    /// it, asked.
    pub fn cookie_of(&self, file: &File) -> io::Result<u64> {
        let socket = self.inside(file.as_fd(), || {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        })??;
        socket_cookie(&socket)
    }
}

/// Takes the thread home when dropped, even if the work panicked.
struct Back<'a>(&'a Home);

impl Drop for Back<'_> {
    fn drop(&mut self) {
        if let Err(error) = setns(self.0.file.as_fd()) {
            // A runtime worker left in a pod's namespace would open every
            // later socket there: nothing is safe past this point.
            eprintln!("detour: cannot return to the agent's network namespace: {error}; aborting");
            std::process::abort();
        }
    }
}

fn setns(namespace: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor the caller holds open; it changes
    // only the calling thread's network namespace.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_NETNS_COOKIE` of a socket: its namespace's cookie.
fn socket_cookie(socket: &socket2::Socket) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cookie`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
