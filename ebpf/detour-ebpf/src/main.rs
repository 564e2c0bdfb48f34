//! detour's eBPF programs.
//!
//! - `cgroup/connect4` and `cgroup/connect6` redirect connects to steered
//!   destinations (the `STEERED` map) to the node-local proxy, after recording
//!   the original destination under the socket's cookie.
//! - `sock_ops`, at `TCP_CONNECT_CB` (source port chosen, SYN not yet sent),
//!   re-keys that record by the client's source address, which is what the
//!   proxy sees as the peer of the connection it accepts.
//! - `sk_skb/stream_verdict` relays the bytes of connections the proxy only
//!   splices, between the two sockets, in the kernel.
//!
//! Every program is fail-open: whatever goes wrong inside, the connect proceeds
//! unmodified, to the address the application asked for. (The fork object,
//! `src/fork/main.rs`, is the one exception, and says why.)

#![no_std]
#![no_main]

mod connect;
mod maps;
mod relay;
mod sock_addr;
mod sockops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; required by `no_std`.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
