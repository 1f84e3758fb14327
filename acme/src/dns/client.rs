//! DNS over UDP (TCP when the answer is truncated): one request, one answer, with retries.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::wire;

const ATTEMPTS: usize = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

fn bind_addr(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Sends `msg` to `server` and returns the raw answer with the same ID.
pub async fn exchange_udp(server: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, String> {
    if msg.len() < 2 {
        return Err("empty message".into());
    }
    let id = [msg[0], msg[1]];
    let sock = UdpSocket::bind(bind_addr(server))
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    let mut last = String::from("no answer");
    for _ in 0..ATTEMPTS {
        sock.send(msg)
            .await
            .map_err(|e| format!("{server}: send: {e}"))?;
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    last = format!("{server}: no answer within {ATTEMPT_TIMEOUT:?}");
                    break;
                }
                Ok(Err(e)) => {
                    last = format!("{server}: {e}");
                    break;
                }
                Ok(Ok(n)) => {
                    if n >= 12 && buf[0..2] == id {
                        let answer = buf[..n].to_vec();
                        if answer[2] & 0x02 != 0 {
                            return exchange_tcp(server, msg).await;
                        }
                        return Ok(answer);
                    }
                    // Not ours (late answer to an earlier attempt of another ID): keep reading.
                }
            }
        }
        // A refused port shows up as an error on the next recv; no need to wait it out twice.
        if last.contains("refused") {
            break;
        }
    }
    Err(last)
}

async fn exchange_tcp(server: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, String> {
    let fut = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let _ = s.set_nodelay(true);
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        framed.extend_from_slice(msg);
        s.write_all(&framed)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut answer)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("{server}: TCP: no answer within 10s"))?
}

/// The TXT values at `name` as `server` (asked directly, without recursion) has them.
pub async fn query_txt(server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let id: u16 = rand::random();
    let q = wire::query(id, name, wire::TYPE_TXT, false).map_err(|e| e.to_string())?;
    let raw = exchange_udp(server, &q).await?;
    let m = wire::parse(&raw).map_err(|e| format!("{server}: {e}"))?;
    match m.rcode() {
        0 => Ok(m.txt),
        3 => Ok(Vec::new()),
        rc => Err(format!("{server}: {}", wire::rcode_name(rc))),
    }
}
