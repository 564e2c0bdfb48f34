//! A stand-in for Cilium's socket-level load balancing (its kube-proxy
//! replacement), for the coexistence test: a `cgroup/connect4` program
//! attached at a cgroup above the pods' that rewrites a Service's
//! ClusterIP:port to one backend's address at `connect()`, as Cilium's
//! `cil_sock4_connect` does. Cilium itself cannot run here (no images, no
//! engine), so this program stands in for it; what matters for detour is
//! where it attaches and what it rewrites, and this one does the same.
//!
//! The program is a handful of instructions, assembled here (one compare
//! pair and one rewrite per rule) and loaded with `bpf(2)`; it is attached
//! through a BPF link, which the kernel detaches when the guard is dropped
//! (or the test process dies).

use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

/// `struct bpf_sock_addr` offsets: `user_ip4` and `user_port` (network order).
const USER_IP4: i16 = 4;
const USER_PORT: i16 = 24;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

/// One instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program: for each rule, if the destination is its ClusterIP:port,
/// rewrite it to the backend and allow; anything else is allowed as it is.
fn program(rules: &[(SocketAddrV4, SocketAddrV4)]) -> Vec<Insn> {
    // As loaded from memory on this little-endian machine.
    let ip = |addr: &SocketAddrV4| i32::from_le_bytes(addr.ip().octets());
    let port = |addr: &SocketAddrV4| i32::from(addr.port().to_be());
    let mut code = vec![insn(0xbf, 6, 1, 0, 0)]; // r6 = ctx
    for (service, backend) in rules {
        code.extend([
            insn(0x61, 2, 6, USER_IP4, 0),      // w2 = ctx->user_ip4
            insn(0x56, 2, 0, 8, ip(service)),   // if w2 != service ip: next rule
            insn(0x61, 2, 6, USER_PORT, 0),     // w2 = ctx->user_port
            insn(0x56, 2, 0, 6, port(service)), // if w2 != service port: next rule
            insn(0xb4, 3, 0, 0, ip(backend)),   // w3 = backend ip
            insn(0x63, 6, 3, USER_IP4, 0),      // ctx->user_ip4 = w3
            insn(0xb4, 3, 0, 0, port(backend)), // w3 = backend port
            insn(0x63, 6, 3, USER_PORT, 0),     // ctx->user_port = w3
            insn(0xb7, 0, 0, 0, 1),             // r0 = 1 (allow)
            insn(0x95, 0, 0, 0, 0),             // exit
        ]);
    }
    code.extend([insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)]);
    code
}

/// The attached program; detached on drop.
#[derive(Debug)]
pub struct SocketLb {
    _link: OwnedFd,
    _program: OwnedFd,
}

impl SocketLb {
    /// Loads the program for `rules` (ClusterIP:port -> backend) and attaches
    /// it to `cgroup` (and so to every cgroup below it).
    pub fn attach(cgroup: &Path, rules: &[(SocketAddrV4, SocketAddrV4)]) -> io::Result<Self> {
        let code = program(rules);
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
        put_u32(&mut attr, 4, u32::try_from(code.len()).unwrap_or(u32::MAX));
        put_u64(&mut attr, 8, code.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        put_u32(&mut attr, 24, 1); // log level
        put_u32(&mut attr, 28, u32::try_from(log.len()).unwrap_or(0));
        put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        attr[48..48 + 9].copy_from_slice(b"socket_lb");
        put_u32(&mut attr, 68, BPF_CGROUP_INET4_CONNECT);
        let program = bpf(BPF_PROG_LOAD, &mut attr).map_err(|error| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            io::Error::new(
                error.kind(),
                format!("{error}: {}", String::from_utf8_lossy(&log[..end])),
            )
        })?;
        let cgroup_dir = std::fs::File::open(cgroup)?;
        let mut attr = [0u8; 64];
        put_u32(&mut attr, 0, fd_u32(&program));
        put_u32(
            &mut attr,
            4,
            u32::try_from(cgroup_dir.as_raw_fd()).unwrap_or(0),
        );
        put_u32(&mut attr, 8, BPF_CGROUP_INET4_CONNECT);
        let link = bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(Self {
            _link: link,
            _program: program,
        })
    }
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(0)
}

fn put_u32(attr: &mut [u8], at: usize, value: u32) {
    attr[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, value: u64) {
    attr[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// `bpf(command, attr)`: a new file descriptor.
fn bpf(command: libc::c_long, attr: &mut [u8]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zeroed `union bpf_attr` prefix of the size passed,
    // whose pointers (instructions, license, log) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            u32::try_from(attr.len()).unwrap_or(0),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel gave us this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_jumps_to_the_next_rule_when_it_does_not_match() {
        let rule = (
            "10.96.0.20:80".parse().expect("addr"),
            "10.244.0.4:8080".parse().expect("addr"),
        );
        let code = program(&[rule, rule]);
        assert_eq!(code.len(), 1 + 10 + 10 + 2);
        // The first compare of rule one lands on rule two's first load.
        let (at, off) = (2, code[2].off);
        assert_eq!(code[at + 1 + off as usize].code, 0x61);
        assert_eq!(code[1 + 10].code, 0x61);
        // 10.96.0.20 as loaded from memory, port 80 in network order.
        assert_eq!(code[2].imm, i32::from_le_bytes([10, 96, 0, 20]));
        assert_eq!(code[4].imm, i32::from(80u16.to_be()));
    }
}
