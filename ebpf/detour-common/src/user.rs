//! Userspace helpers: `aya::Pod` impls and conversions from `std::net`.
//! Only built with the `user` feature, which only the agent enables.

extern crate std;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::{Config, OrigDst, SockKey, Steered};

// SAFETY: each type is `#[repr(C)]`, made only of integers, with every padding
// byte a named field, so any bit pattern is a valid value.
unsafe impl aya::Pod for SockKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Steered {}
// SAFETY: as above.
unsafe impl aya::Pod for OrigDst {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}

/// Splits 16 address bytes into the four memory-order words of `user_ip6`.
pub fn ip6_words(octets: [u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    words
}

fn ip6_octets(words: [u32; 4]) -> [u8; 16] {
    let mut octets = [0u8; 16];
    for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    octets
}

impl SockKey {
    /// The key for a socket address; IPv4 (and IPv4-mapped IPv6) addresses are
    /// stored IPv4-mapped.
    pub fn new(addr: SocketAddr) -> Self {
        let ip6 = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Self::v6(ip6_words(ip6.octets()), addr.port().to_be())
    }

    /// The address, as IPv4 when it is IPv4-mapped.
    pub fn ip(&self) -> IpAddr {
        Ipv6Addr::from(ip6_octets(self.addr)).to_canonical()
    }

    /// The port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }

    /// The socket address this key stands for.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port())
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn sock_key_layout_matches_the_kernel_view() {
        assert_eq!(size_of::<SockKey>(), 20);
        assert_eq!(align_of::<SockKey>(), 4);
        assert_eq!(offset_of!(SockKey, port), 16);
        assert_eq!(offset_of!(OrigDst, service_id), 20);
        assert_eq!(offset_of!(OrigDst, family), 24);
        assert_eq!(offset_of!(Config, proxy_port4), 20);
        assert_eq!(offset_of!(Config, mark), 24);
    }

    #[test]
    fn ipv4_keys_are_ipv4_mapped_and_network_order() {
        let key = SockKey::new("10.96.0.20:80".parse().expect("addr"));
        let bytes: [u8; 20] = unsafe { core::mem::transmute(key) };
        assert_eq!(
            bytes,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 20, 0, 80, 0, 0
            ]
        );
        assert!(key.is_v4());
        // What connect4 builds from user_ip4/user_port must be the same key.
        let from_kernel = SockKey::v4(u32::from_ne_bytes([10, 96, 0, 20]), 80u16.to_be());
        assert_eq!(key, from_kernel);
        assert_eq!(key.socket_addr(), "10.96.0.20:80".parse().expect("addr"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_same_key_as_ipv4() {
        let mapped = SockKey::new("[::ffff:10.96.0.20]:80".parse().expect("addr"));
        let plain = SockKey::new("10.96.0.20:80".parse().expect("addr"));
        assert_eq!(mapped, plain);
    }

    #[test]
    fn ipv6_round_trips() {
        let addr: SocketAddr = "[fd00:96::20]:8080".parse().expect("addr");
        let key = SockKey::new(addr);
        assert!(!key.is_v4());
        assert_eq!(key.socket_addr(), addr);
        assert_eq!(key.port, 8080u16.to_be());
    }
}
