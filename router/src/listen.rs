//! The listeners' own accept loop.
//!
//! Pingora's listening service spawns one task per connection whose future also holds the state
//! of a TLS handshake with a 60 s timeout: ~8.6 KiB for as long as the connection lives, idle
//! keep-alive connections included (valgrind massif, docs/performance.md). Here each connection's
//! task holds the handshake only while it runs (boxed), then the connection and [`EdgeApp`]'s
//! per-connection state. On the TLS listener the PROXY v2 header (when configured) is read
//! before the handshake, which is Pingora's own acceptor (certificates by SNI, ALPN, the SNI
//! capture); a handshake that fails or takes over 60 s is logged and counted in
//! `hubify_tls_handshakes_total{result="error"|"timeout"}`.
//!
//! Everything else stays Pingora's: the service runs on Pingora's runtime with the configured
//! worker threads, connections are spread over them as Pingora does, the listening socket is
//! registered in Pingora's table of listening fds (so `SIGQUIT`'s socket hand-over to a new
//! process carries it, and a process started from a hand-over takes it back), and shutdown stops
//! the accept loop and then cleans up the app.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::conn::EdgeApp;
use crate::metrics::{ConnectionOpen, HandshakeResult, Listener, TlsVersion};

/// The kernel's accept queue (Pingora's value).
const BACKLOG: u32 = 65535;
/// While another process still holds the address (a restart), try again for this long.
const BIND_RETRY: Duration = Duration::from_millis(500);
const BIND_TRIES: u32 = 60;

/// How long a client has to complete the TLS handshake (Pingora's value).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS on a listener.
pub struct Tls {
    pub acceptor: Acceptor,
    /// Read a PROXY v2 header before the handshake.
    pub proxy_protocol: bool,
}

/// A listener serving [`EdgeApp`], plain or TLS.
pub struct EdgeListener {
    name: String,
    addr: SocketAddr,
    app: Arc<EdgeApp>,
    tls: Option<Arc<Tls>>,
    /// For `hubify_connections_open`.
    listener: Listener,
}

impl EdgeListener {
    pub fn new(name: &str, addr: SocketAddr, app: EdgeApp, tls: Option<Tls>) -> EdgeListener {
        EdgeListener {
            name: name.to_string(),
            addr,
            app: Arc::new(app),
            listener: if tls.is_some() {
                Listener::Https
            } else {
                Listener::Http
            },
            tls: tls.map(Arc::new),
        }
    }
}

#[async_trait]
impl Service for EdgeListener {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let listener = match listen(self.addr, fds).await {
            Ok(l) => l,
            Err(e) => {
                // As with Pingora's listeners: the rest of the process keeps running and
                // /readyz names this listener as not bound.
                tracing::error!(address = %self.addr, error = %e, "cannot listen");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let app = self.app.clone();
                    let tls = self.tls.clone();
                    let shutdown = shutdown.clone();
                    let open = ConnectionOpen::enter(self.listener);
                    pingora_runtime::current_handle().spawn(async move {
                        connection(app, tls, tcp, peer, shutdown).await;
                        drop(open);
                    });
                }
                Err(e) => {
                    tracing::error!(address = %self.addr, error = %e, "accept failed");
                    // Out of file descriptors: give the others time to close some.
                    if matches!(e.raw_os_error(), Some(23 | 24)) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        tracing::info!(address = %self.addr, "listener closed");
        ServerApp::cleanup(&*self.app).await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Serves one accepted connection (and what the app hands back for reuse).
async fn connection(
    app: Arc<EdgeApp>,
    tls: Option<Arc<Tls>>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownWatch,
) {
    let _ = tcp.set_nodelay(true);
    // No L4 buffers: the fast path reads into its own buffer and writes whole responses; rustls
    // reads records into its own buffer.
    let mut l4 = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(peer)));
    l4.set_socket_digest(digest);
    let stream: Stream = match tls {
        None => Box::new(l4),
        // Boxed: the handshake's state is freed once it is done.
        Some(tls) => match Box::pin(handshake(&tls, l4, peer)).await {
            Some(s) => s,
            None => return,
        },
    };
    let mut next = ServerApp::process_new(&app, stream, &shutdown).await;
    while let Some(stream) = next {
        next = ServerApp::process_new(&app, stream, &shutdown).await;
    }
}

/// PROXY v2 (when configured) and the TLS handshake, within [`HANDSHAKE_TIMEOUT`]; failures are
/// logged and counted (successes are counted by the acceptor's callback, `tls.rs`).
async fn handshake(tls: &Tls, mut l4: L4Stream, peer: SocketAddr) -> Option<Stream> {
    let steps = async {
        if tls.proxy_protocol {
            crate::proxy_protocol::ProxyV2.process(&mut l4).await?;
        }
        tls.acceptor.tls_handshake(l4).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, steps).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            crate::metrics::tls_handshake(HandshakeResult::Error, TlsVersion::None);
            tracing::warn!(client = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            crate::metrics::tls_handshake(HandshakeResult::Timeout, TlsVersion::None);
            tracing::warn!(client = %peer, "TLS handshake timed out");
            None
        }
    }
}

/// The listening socket: the one handed over by the previous process when there is one, else a
/// new one (registered for the next hand-over).
async fn listen(addr: SocketAddr, fds: Option<ListenFds>) -> io::Result<TcpListener> {
    let key = addr.to_string();
    if let Some(fd) = fds.as_ref().and_then(|f| f.lock().get(&key).copied()) {
        return adopt(fd);
    }
    let mut tries = 0;
    let listener = loop {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => break socket.listen(BACKLOG)?,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < BIND_TRIES => {
                tries += 1;
                tracing::warn!(address = %addr, "address in use, trying again");
                tokio::time::sleep(BIND_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(fds) = &fds {
        fds.lock().add(key, listener.as_raw_fd());
    }
    Ok(listener)
}

/// Takes over a listening socket received from the previous process.
#[allow(unsafe_code)]
fn adopt(fd: std::os::fd::RawFd) -> io::Result<TcpListener> {
    // SAFETY: `fd` is a listening TCP socket the previous process passed over (SCM_RIGHTS) for
    // this address; Pingora's table only records the number, and only this listener takes the
    // entry for its address, so the socket gets exactly one owner.
    let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}
