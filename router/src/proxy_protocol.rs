//! PROXY protocol v2 on the TLS listener (Fly's `handlers = ["proxy_proto"]`).
//!
//! The TLS listener's accept loop (`listen.rs`) runs this hook (Pingora's `PreTlsProcess`) before
//! the TLS handshake: it reads the binary header, parses it with the
//! `ppp` crate and records the client's address as the connection's peer address, so
//! `session.client_addr()` (X-Forwarded-For, access log) is the real client. A connection that
//! does not start with a valid v2 header within [`HEADER_TIMEOUT`] is dropped. `LOCAL` headers
//! (the proxy's own health checks) and address families without an IP keep the socket's address.

use std::os::fd::AsRawFd;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType, Result};
use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::AsyncReadExt;

/// How long a client has to send the whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest header accepted (addresses + TLVs); v2 allows 64 KiB, Fly sends far less.
pub const MAX_HEADER_LEN: usize = 2048;
/// Signature (12) + version/command + family/protocol + length (2).
const FIXED_LEN: usize = 16;

/// The client address a PROXY v2 header carries: `Ok(None)` for `LOCAL`, `UNSPEC` and UNIX.
pub fn parse_v2(bytes: &[u8]) -> std::result::Result<Option<std::net::SocketAddr>, String> {
    let header = Header::try_from(bytes).map_err(|e| format!("invalid PROXY v2 header: {e}"))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
        Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

/// The pre-TLS hook.
pub struct ProxyV2;

fn drop_conn(why: String) -> Box<Error> {
    tracing::debug!(reason = %why, "PROXY v2: connection dropped");
    Error::explain(ErrorType::HandshakeError, why)
}

#[async_trait]
impl PreTlsProcess for ProxyV2 {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let read = async {
            let mut buf = [0u8; FIXED_LEN + MAX_HEADER_LEN];
            stream
                .read_exact(&mut buf[..FIXED_LEN])
                .await
                .map_err(|e| format!("no PROXY v2 header: {e}"))?;
            if buf[..PROTOCOL_PREFIX.len()] != *PROTOCOL_PREFIX {
                return Err("the connection does not start with a PROXY v2 signature".to_string());
            }
            let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > MAX_HEADER_LEN {
                return Err(format!("PROXY v2 header of {len} bytes is too long"));
            }
            stream
                .read_exact(&mut buf[FIXED_LEN..FIXED_LEN + len])
                .await
                .map_err(|e| format!("truncated PROXY v2 header: {e}"))?;
            parse_v2(&buf[..FIXED_LEN + len])
        };
        let client = match tokio::time::timeout(HEADER_TIMEOUT, read).await {
            Err(_) => return Err(drop_conn("PROXY v2 header not received in time".into())),
            Ok(Err(why)) => return Err(drop_conn(why)),
            Ok(Ok(client)) => client,
        };
        if let Some(addr) = client {
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(addr)));
            if let Some(old) = stream.get_socket_digest() {
                if let Some(local) = old.local_addr() {
                    let _ = digest.local_addr.set(Some(local.clone()));
                }
            }
            stream.set_socket_digest(digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};

    fn header(src: &str, dst: &str) -> Vec<u8> {
        let src: std::net::SocketAddr = src.parse().unwrap();
        let dst: std::net::SocketAddr = dst.parse().unwrap();
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    #[test]
    fn parses_client_addresses() {
        assert_eq!(
            parse_v2(&header("203.0.113.7:51000", "10.0.0.1:443")).unwrap(),
            Some("203.0.113.7:51000".parse().unwrap())
        );
        assert_eq!(
            parse_v2(&header("[2001:db8::7]:1", "[2001:db8::1]:443")).unwrap(),
            Some("[2001:db8::7]:1".parse().unwrap())
        );
        let local = Builder::new(Version::Two | Command::Local, 0)
            .build()
            .unwrap();
        assert_eq!(parse_v2(&local).unwrap(), None);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_v2(b"").is_err());
        assert!(parse_v2(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        let mut h = header("203.0.113.7:1", "10.0.0.1:443");
        h[12] = 0x31; // version 3
        assert!(parse_v2(&h).is_err());
        let h = header("203.0.113.7:1", "10.0.0.1:443");
        assert!(parse_v2(&h[..h.len() - 3]).is_err());
    }
}
