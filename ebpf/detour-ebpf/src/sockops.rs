//! `sock_ops`: at `TCP_CONNECT_CB` the client's source port is assigned and
//! the SYN is not yet sent. Move the original-destination record from the
//! socket's cookie to the client's (source address, source port): that is the
//! peer address the proxy sees when it accepts the connection.
//!
//! A connect to the proxy address that finds no record is counted
//! (`record_missing`): its record was evicted from the LRU before the SYN,
//! or the process dialled the proxy port itself. Either way the proxy will
//! close that connection, and this counter says why.

use aya_ebpf::{
    EbpfContext, bindings::BPF_SOCK_OPS_TCP_CONNECT_CB, helpers::bpf_get_socket_cookie,
    macros::sock_ops, programs::SockOpsContext,
};
use detour_common::{AF_INET, AF_INET6, CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, SockKey, counter};

use crate::maps::{CONFIG, ORIG_BY_COOKIE, ORIG_BY_PEER, count};

/// `sock_ops` programs return 1; the verdict for callbacks goes through `reply`.
const DONE: u32 = 1;

#[sock_ops]
pub fn detour_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_TCP_CONNECT_CB && try_rekey(&ctx).is_err() {
        count(counter::ERRORS);
    }
    DONE
}

#[inline(always)]
fn try_rekey(ctx: &SockOpsContext) -> Result<(), i64> {
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out before any other map operation.
    let Some(record) = (unsafe { ORIG_BY_COOKIE.get(cookie) }).copied() else {
        if is_to_proxy(ctx) {
            count(counter::RECORD_MISSING);
        }
        return Ok(());
    };
    // `local_port` is host order; keys hold network order.
    let port = (ctx.local_port() as u16).to_be();
    let peer = match ctx.family() as u16 {
        AF_INET => SockKey::v4(ctx.local_ip4(), port),
        // A dual-stack socket connecting to an IPv4-mapped address runs the
        // IPv4 connect path, and this callback fires inside it. Its IPv4
        // source is authoritative there (the mapped IPv6 copy is derived from
        // it by that path), so key by it; the destination, set before the
        // path is chosen, tells which case this is.
        AF_INET6 if SockKey::v6(remote_ip6(ctx), 0).is_v4() => SockKey::v4(ctx.local_ip4(), port),
        AF_INET6 => SockKey::v6(local_ip6(ctx), port),
        _ => return Ok(()),
    };
    ORIG_BY_PEER.insert(peer, record, 0)?;
    ORIG_BY_COOKIE.remove(cookie)?;
    count(counter::REKEYED);
    Ok(())
}

/// Whether the connection's destination is one of the proxy addresses, as
/// `connect4/6` rewrote it (IPv4, IPv4-mapped through a dual-stack socket,
/// or IPv6).
#[inline(always)]
fn is_to_proxy(ctx: &SockOpsContext) -> bool {
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    // `remote_port` holds the network-order port in its upper 16 bits.
    let port = (ctx.remote_port() >> 16) as u16;
    let has4 = config.flags & CONFIG_HAS_PROXY4 != 0;
    match ctx.family() as u16 {
        AF_INET => has4 && ctx.remote_ip4() == config.proxy_ip4 && port == config.proxy_port4,
        AF_INET6 => {
            let remote = SockKey::v6(remote_ip6(ctx), port);
            let proxy6 = &config.proxy_ip6;
            if remote.is_v4() {
                has4 && remote.addr[3] == config.proxy_ip4 && port == config.proxy_port4
            } else {
                // Word by word: an array comparison may become a memcmp.
                config.flags & CONFIG_HAS_PROXY6 != 0
                    && remote.addr[0] == proxy6[0]
                    && remote.addr[1] == proxy6[1]
                    && remote.addr[2] == proxy6[2]
                    && remote.addr[3] == proxy6[3]
                    && port == config.proxy_port6
            }
        }
        _ => false,
    }
}

/// `local_ip6`, one word at a time: the verifier rejects the array copy that
/// `SockOpsContext::local_ip6` compiles to (a load from a moved ctx pointer).
#[inline(always)]
fn local_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    // SAFETY: reads of fields of the valid context.
    unsafe {
        let ops = &*ctx.ops;
        [
            core::ptr::read_volatile(&ops.local_ip6[0]),
            core::ptr::read_volatile(&ops.local_ip6[1]),
            core::ptr::read_volatile(&ops.local_ip6[2]),
            core::ptr::read_volatile(&ops.local_ip6[3]),
        ]
    }
}

/// `remote_ip6`, one word at a time, for the same reason.
#[inline(always)]
fn remote_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    // SAFETY: reads of fields of the valid context.
    unsafe {
        let ops = &*ctx.ops;
        [
            core::ptr::read_volatile(&ops.remote_ip6[0]),
            core::ptr::read_volatile(&ops.remote_ip6[1]),
            core::ptr::read_volatile(&ops.remote_ip6[2]),
            core::ptr::read_volatile(&ops.remote_ip6[3]),
        ]
    }
}
