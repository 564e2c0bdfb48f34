//! `sk_skb/stream_verdict`: the in-kernel relay of spliced connections.
//!
//! Once the proxy has decided to only splice a connection (a `tcp` port, a
//! protocol that is not HTTP, a 101 Upgrade), it puts the client socket and
//! the upstream socket in `RELAY`, each under the *other's* socket cookie.
//! Every segment received on either socket comes here: looked up by its own
//! socket's cookie, it finds the peer and is sent out of it, without a copy
//! to user space or a wake-up of the proxy.
//!
//! Fail-open: a segment whose peer is not in the map (being removed, or the
//! map full) is passed to the socket's own receive queue, where the proxy
//! reads and forwards it itself. Empty segments (a FIN) are passed too, so
//! that the proxy sees the end of the stream and passes it on.

use aya_ebpf::{
    bindings::sk_action::SK_PASS, helpers::bpf_get_socket_cookie, macros::stream_verdict,
    programs::SkBuffContext,
};
use detour_common::counter;

use crate::maps::{RELAY, count};

#[stream_verdict]
pub fn detour_relay(ctx: SkBuffContext) -> u32 {
    if ctx.len() == 0 {
        return SK_PASS;
    }
    // SAFETY: the helper only reads the context's socket.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    // SK_PASS with the redirect recorded, or SK_DROP if the peer is missing.
    if RELAY.redirect_skb(&ctx, &mut cookie, 0) == i64::from(SK_PASS) {
        count(counter::RELAYED);
    } else {
        count(counter::RELAY_MISSED);
    }
    SK_PASS
}
