//! The data path: connections steered by the eBPF programs (IPv4, IPv6,
//! dual-stack, VIPs), maps filling up, no open relay at the proxy, the
//! in-kernel relay of spliced bytes, connections that predate steering, and
//! the client's address kept across the hop.

mod capacity;
mod client_address;
mod kernel_relay;
mod no_open_relay;
mod reconnect;
mod steering;
