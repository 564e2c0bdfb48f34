//! `server` (hidden subcommand of the detour-bench binary, run by `bench
//! connect` inside its namespaces): a listener.
//!
//! Without `--upstream` it accepts and closes at once: the benchmark's
//! server. With `--sink` (for `bench relay`) it reads each connection to its
//! end, then closes it. With `--upstream` it is a minimal forwarding proxy, the stand-in
//! for what an iptables rule sends traffic to: per accepted connection it
//! connects to the upstream, copies the client's bytes until the client is
//! gone, then closes both; that is the per-connection work detour's proxy
//! does for a steered connection, minus the original-destination lookup.
//! Blocking threads, std's listen backlog (128, the same as the agent's
//! proxy listener shows in `ss -ltn`).
//!
//! It prints `listening` once bound, and exits when its stdin reaches EOF
//! (the bench ended, or died) or after a lifetime cap, so it never outlives
//! the benchmark; its accept loops end with the process.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;

/// A server lives at most this long, even if nobody closes its stdin.
const SERVER_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Forward each accepted connection to this address (a minimal proxy);
    /// without it, accepted connections are closed at once.
    #[arg(long)]
    pub upstream: Option<SocketAddr>,
    /// Read each accepted connection to its end (one thread each), then
    /// close it.
    #[arg(long, conflicts_with = "upstream")]
    pub sink: bool,
    /// Accepting threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u16,
}

/// `server`: serves until stdin closes or the lifetime cap.
pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("cannot bind {}", args.listen))?;
    for _ in 0..args.threads.max(1) {
        let listener = listener.try_clone().context("cannot clone the listener")?;
        let (upstream, sink) = (args.upstream, args.sink);
        std::thread::spawn(move || accept_loop(&listener, upstream, sink));
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", args.listen)?;
    stdout.flush()?;

    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = done.send(());
    });
    // Either way the process ends, and the accepting threads with it.
    let _ = wait.recv_timeout(SERVER_LIFETIME);
    Ok(())
}

/// Accepts until the process ends (bounded by `server`'s lifetime).
fn accept_loop(listener: &TcpListener, upstream: Option<SocketAddr>, sink: bool) {
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                if let Some(upstream) = upstream {
                    forward(client, upstream);
                } else if sink {
                    std::thread::spawn(move || drain(client));
                }
                // Without an upstream: dropped, i.e. closed, at once.
            }
            // E.g. ECONNABORTED or EMFILE: back off briefly, do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The per-connection work of a forwarding proxy: connect upstream, copy the
/// client's bytes until it is done (the bench client sends none and resets
/// at once), close both.
fn forward(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(upstream) else {
        return;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = client.read(&mut buf) {
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Reads `client` to its end, then closes it: the receiving end of a bulk
/// transfer.
fn drain(mut client: TcpStream) {
    let mut buf = vec![0u8; 1 << 18];
    while let Ok(1..) = client.read(&mut buf) {}
}
