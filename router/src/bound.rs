//! Is this process listening on an address? For the `/readyz` listener check.
//!
//! Pingora binds its listeners inside each service's start-up; when an address is taken it
//! retries for 30 s and then gives that service up, while the rest of the process keeps running.
//! Nothing in its API says whether a bind succeeded, so the check asks the kernel: a TCP socket
//! in state LISTEN on the address (`/proc/net/tcp`, `/proc/net/tcp6`) whose inode is one of this
//! process's file descriptors (`/proc/self/fd`). Another process listening on the same port does
//! not count. Connecting to the listener instead would be seen by it as a client (and, on the TLS
//! listener, as a failed handshake).
//!
//! On systems without `/proc` the check reports every address as bound.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A LISTEN socket from a `/proc/net/tcp{,6}` line: its local address and inode.
#[derive(Debug, PartialEq, Eq)]
pub struct ListenSocket {
    pub addr: SocketAddr,
    pub inode: u64,
}

const TCP_LISTEN: &str = "0A";

/// Parses one line of `/proc/net/tcp` or `/proc/net/tcp6`; `None` for the header, other states
/// and anything unreadable.
pub fn parse_proc_net_tcp_line(line: &str) -> Option<ListenSocket> {
    let mut cols = line.split_whitespace();
    let _slot = cols.next()?;
    let local = cols.next()?;
    let _remote = cols.next()?;
    let state = cols.next()?;
    if state != TCP_LISTEN {
        return None;
    }
    // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let inode = cols.nth(5)?.parse().ok()?;
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let ip = parse_hex_ip(ip_hex)?;
    Some(ListenSocket {
        addr: SocketAddr::new(ip, port),
        inode,
    })
}

/// The kernel prints addresses as 32-bit words in host byte order, each as 8 hex digits.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            Some(IpAddr::V6(v6))
        }
        _ => None,
    }
}

/// True when `socket` serves `want`: same port, and the same address (an IPv4 listener may also
/// appear as an IPv4-mapped IPv6 socket).
fn serves(socket: &SocketAddr, want: &SocketAddr) -> bool {
    if socket.port() != want.port() {
        return false;
    }
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    canon(socket.ip()) == canon(want.ip())
}

/// The inodes of this process's sockets.
fn own_socket_inodes() -> std::io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

/// Which of `wanted` this process is not listening on. Without `/proc`, none.
pub fn not_bound(wanted: &[SocketAddr]) -> Vec<SocketAddr> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(own) = own_socket_inodes() else {
        return Vec::new();
    };
    let mut listening = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            listening.extend(
                text.lines()
                    .filter_map(parse_proc_net_tcp_line)
                    .filter(|s| own.contains(&s.inode))
                    .map(|s| s.addr),
            );
        }
    }
    wanted
        .iter()
        .filter(|w| !listening.iter().any(|l| serves(l, w)))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_lines_of_both_families() {
        let v4 = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_net_tcp_line(v4).expect("listen line");
        assert_eq!(s.inode, 123456);
        assert_eq!(s.addr.port(), 8080);
        if cfg!(target_endian = "little") {
            assert_eq!(s.addr, "127.0.0.1:8080".parse().expect("addr"));
        }
        let v6 = "   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_net_tcp_line(v6).expect("listen line");
        assert_eq!(s.inode, 42);
        if cfg!(target_endian = "little") {
            assert_eq!(s.addr, "[::1]:443".parse().expect("addr"));
        }
        let established = "   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 7 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_proc_net_tcp_line(established), None);
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_proc_net_tcp_line(header), None);
        assert_eq!(parse_proc_net_tcp_line("0: zz:1 0:0 0A a b c d e 1"), None);
    }

    #[test]
    fn address_matching() {
        let want: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        assert!(serves(&want, &want));
        assert!(serves(
            &"[::ffff:127.0.0.1]:8443".parse().expect("addr"),
            &want
        ));
        assert!(!serves(&"127.0.0.1:8444".parse().expect("addr"), &want));
        assert!(!serves(&"0.0.0.0:8443".parse().expect("addr"), &want));
    }

    #[test]
    fn sees_its_own_listener_and_not_a_free_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = l.local_addr().expect("addr");
        let free = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            t.local_addr().expect("addr")
        };
        assert_eq!(not_bound(&[bound]), Vec::<SocketAddr>::new());
        assert_eq!(not_bound(&[bound, free]), vec![free]);
    }
}
