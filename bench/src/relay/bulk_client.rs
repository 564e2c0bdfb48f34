//! `bulk-client` (hidden subcommand of the detour-bench binary, run by `bench
//! relay` inside its client namespace): sends `--bytes` over `--streams`
//! connections to `--connect`, each half-closed when its share is sent and
//! timed until the receiver closes it (so every byte has arrived), and
//! prints `BYTES SECONDS`.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;

/// Bytes per write: large, as a bulk sender writes.
const WRITE_SIZE: usize = 1 << 18;

#[derive(Debug, Args)]
pub struct BulkClientArgs {
    /// Where to send.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Bytes to send in all.
    #[arg(long)]
    pub bytes: u64,
    /// Connections, each sending an equal share at once.
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
}

pub fn run(args: &BulkClientArgs) -> anyhow::Result<()> {
    let share = args.bytes / u64::from(args.streams.max(1));
    let started = Instant::now();
    let senders: Vec<_> = (0..args.streams.max(1))
        .map(|_| {
            let addr = args.connect;
            std::thread::spawn(move || send(addr, share))
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    println!("{sent} {:.6}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Sends `bytes` on one connection, half-closes, and waits for the
/// receiver's close.
fn send(addr: SocketAddr, bytes: u64) -> anyhow::Result<u64> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    let block = vec![0x5a_u8; WRITE_SIZE];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(WRITE_SIZE, |left| left.min(WRITE_SIZE));
        stream.write_all(&block[..n]).context("send failed")?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut rest = [0u8; 64];
    match stream.read(&mut rest) {
        Ok(0) => Ok(bytes),
        Ok(_) => bail!("the receiver sent bytes back"),
        Err(error) => Err(error).context("the receiver's close never came"),
    }
}
