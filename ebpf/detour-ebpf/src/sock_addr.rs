//! Reading and rewriting a connect's destination in `bpf_sock_addr`, shared
//! by the node's programs and the fork programs.
//!
//! The verifier only accepts context accesses at a constant offset from the
//! context pointer, one word at a time: `user_ip6` is copied word by word
//! with volatile accesses so that LLVM cannot merge them into a memcpy.

use aya_ebpf::bindings::bpf_sock_addr;

/// Verdict that lets the connect proceed (with or without a rewrite).
pub const ALLOW: i32 = 1;
pub const SOCK_STREAM: u32 = 1;
pub const IPPROTO_TCP: u32 = 6;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Whether the connect is a TCP one (the only kind detour touches).
#[inline(always)]
pub fn is_tcp(addr: &bpf_sock_addr) -> bool {
    addr.type_ == SOCK_STREAM && addr.protocol == IPPROTO_TCP
}

#[inline(always)]
pub fn read_ip6(addr: &bpf_sock_addr) -> [u32; 4] {
    // SAFETY: reads of fields of a valid context.
    unsafe {
        [
            core::ptr::read_volatile(&addr.user_ip6[0]),
            core::ptr::read_volatile(&addr.user_ip6[1]),
            core::ptr::read_volatile(&addr.user_ip6[2]),
            core::ptr::read_volatile(&addr.user_ip6[3]),
        ]
    }
}

#[inline(always)]
pub fn write_ip6(addr: &mut bpf_sock_addr, ip6: [u32; 4]) {
    // SAFETY: writes of fields of a valid context.
    unsafe {
        core::ptr::write_volatile(&mut addr.user_ip6[0], ip6[0]);
        core::ptr::write_volatile(&mut addr.user_ip6[1], ip6[1]);
        core::ptr::write_volatile(&mut addr.user_ip6[2], ip6[2]);
        core::ptr::write_volatile(&mut addr.user_ip6[3], ip6[3]);
    }
}
