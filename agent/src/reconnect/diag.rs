//! The kernel's view of TCP connections in one network namespace, and the
//! way to close one, through `sock_diag` netlink (`NETLINK_SOCK_DIAG`):
//! a dump of established TCP sockets with their cgroup, mark and timing,
//! and `SOCK_DESTROY` for one socket (`CONFIG_INET_DIAG_DESTROY`).
//!
//! A netlink socket belongs to the namespace it was created in, so a
//! [`Diag`] must be created by a thread that has joined the namespace.

use std::{io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DESTROY},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

/// `INET_DIAG_CGROUP_ID`: the cgroup v2 id of the socket's cgroup.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// One established TCP connection as the kernel reports it.
#[derive(Debug, Clone)]
pub struct TcpConn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The cgroup (v2 id) of the process that created the socket.
    pub cgroup_id: u64,
    pub mark: u32,
    /// Bytes not yet read by the application, and not yet acknowledged by
    /// the peer.
    pub queued: u64,
    /// Milliseconds since data was last sent and last received.
    pub since_sent_ms: u32,
    pub since_received_ms: u32,
    /// Data segments sent and received so far.
    pub segments_out: u32,
    pub segments_in: u32,
    id: SocketId,
    family: u8,
}

impl TcpConn {
    /// Nothing in flight: no queued bytes, and either nothing was ever sent
    /// or the last thing that happened was data received (an answer), not
    /// data sent (a request awaiting one). Times are in milliseconds, so a
    /// request and its answer may share one: then anything received at all
    /// counts as the answer, and a request sent in the millisecond the
    /// connection opened, with nothing received, as awaiting one.
    pub fn is_quiet(&self) -> bool {
        let awaiting = self.segments_out > 0
            && (self.since_sent_ms < self.since_received_ms || self.segments_in == 0);
        self.queued == 0 && !awaiting
    }
}

/// A `sock_diag` socket in the calling thread's network namespace.
pub struct Diag {
    socket: Socket,
}

impl Diag {
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self { socket })
    }

    /// Every established TCP connection of the namespace, IPv4 and IPv6.
    pub fn established(&mut self) -> io::Result<Vec<TcpConn>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let request = InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::INFO,
                states: StateFlags::ESTABLISHED,
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            };
            self.send(request, NLM_F_REQUEST | NLM_F_DUMP, None)?;
            self.receive(|response| {
                if let Some(conn) = conn_of(family, response) {
                    out.push(conn);
                }
            })?;
        }
        Ok(out)
    }

    /// Closes `conn` (`SOCK_DESTROY`): the kernel aborts the socket, its
    /// owner's next read or write fails with `ECONNABORTED`, and the peer
    /// gets a reset.
    pub fn destroy(&mut self, conn: &TcpConn) -> io::Result<()> {
        let request = InetRequest {
            family: conn.family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: conn.id.clone(),
        };
        self.send(request, NLM_F_REQUEST | NLM_F_ACK, Some(SOCK_DESTROY))?;
        self.receive(|_| {})
    }

    fn send(&mut self, request: InetRequest, flags: u16, kind: Option<u16>) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
        packet.finalize();
        if let Some(kind) = kind {
            packet.header.message_type = kind;
        }
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map(drop)
    }

    /// Reads answers until the dump is done or the request acknowledged.
    fn receive(&mut self, mut each: impl FnMut(&InetResponse)) -> io::Result<()> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        each(&response);
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

fn conn_of(family: u8, response: &InetResponse) -> Option<TcpConn> {
    let id = &response.header.socket_id;
    let mut conn = TcpConn {
        local: SocketAddr::new(canonical(id.source_address), id.source_port),
        remote: SocketAddr::new(canonical(id.destination_address), id.destination_port),
        cgroup_id: 0,
        mark: 0,
        queued: u64::from(response.header.recv_queue) + u64::from(response.header.send_queue),
        since_sent_ms: 0,
        since_received_ms: 0,
        segments_out: 0,
        segments_in: 0,
        id: id.clone(),
        family,
    };
    for nla in &response.nlas {
        match nla {
            Nla::Mark(mark) => conn.mark = *mark,
            Nla::TcpInfo(info) => {
                conn.since_sent_ms = info.last_data_sent;
                conn.since_received_ms = info.last_data_recv;
                conn.segments_out = info.data_segs_out;
                conn.segments_in = info.data_segs_in;
            }
            Nla::Other(other) if netlink_packet_core::Nla::kind(other) == INET_DIAG_CGROUP_ID => {
                let mut bytes = [0; 8];
                netlink_packet_core::Nla::emit_value(other, &mut bytes);
                conn.cgroup_id = u64::from_ne_bytes(bytes);
            }
            _ => {}
        }
    }
    Some(conn)
}

/// IPv4-mapped IPv6 addresses as IPv4: the steered set holds IPv4 ones.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    }
}
