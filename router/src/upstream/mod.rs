//! Upstream HTTP/1.1 for the router's own paths (both client protocols): the per-worker pool of
//! idle connections (checked before reuse), connecting, writing a request head, reading and
//! parsing a response head ([`response`]) and chunked bodies ([`chunked`]). No client I/O here:
//! the HTTP/1.1 and HTTP/2 engines relay what this reads.
//!
//! Connections are pooled per worker thread (each worker runs its own single-threaded runtime):
//! at most `upstream.keepalive_pool` idle connections, the oldest dropped first, none kept past
//! `upstream.keepalive_timeout`, none reused that the upstream wrote to or closed while idle. A
//! request on a pooled connection that fails before any byte of a response arrived is sent once
//! more on a new connection (the upstream closed the idle connection); the router's own paths
//! carry no request body, so that is safe.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::front::rewrite;
use crate::metrics::{self, UpstreamErrorKind};

pub mod chunked;
pub mod response;

/// Read size for response bodies.
pub(crate) const BODY_READ: usize = 16 * 1024;

/// An idle upstream connection.
struct Pooled {
    addr: SocketAddr,
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    /// This worker's idle upstream connections, oldest first.
    static POOL: RefCell<VecDeque<Pooled>> = const { RefCell::new(VecDeque::new()) };
}

/// An idle connection to `addr`, the most recently used first; expired ones are dropped, and so
/// is one the upstream wrote to or closed while it sat idle ([`quiet`]).
fn checkout(addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = Instant::now();
        while pool
            .front()
            .is_some_and(|c| now.duration_since(c.since) > max_idle)
        {
            pool.pop_front();
        }
        loop {
            let i = pool.iter().rposition(|c| c.addr == addr)?;
            let c = pool.remove(i)?;
            if quiet(&c.stream) {
                return Some(c.stream);
            }
        }
    })
}

/// Whether an idle upstream connection is still at a message boundary: nothing to read and not
/// closed. Bytes sent after a complete response (a late body, a second response) would be read
/// as the next request's response — another client's — so such a connection is never reused
/// (as Pingora's pool, nginx and HAProxy do).
fn quiet(stream: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    matches!(stream.try_read(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

pub(crate) fn checkin(addr: SocketAddr, stream: TcpStream, capacity: usize) {
    if capacity == 0 {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.push_back(Pooled {
            addr,
            stream,
            since: Instant::now(),
        });
        while pool.len() > capacity {
            pool.pop_front();
        }
    })
}

/// Why forwarding failed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: UpstreamErrorKind,
    /// Nothing of a response arrived on a reused connection: worth one more try.
    pub retry: bool,
}

impl Failure {
    pub fn new(kind: UpstreamErrorKind) -> Failure {
        Failure { kind, retry: false }
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            UpstreamErrorKind::ReadTimeout | UpstreamErrorKind::WriteTimeout => 504,
            _ => 502,
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    let started = Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::new(UpstreamErrorKind::ConnectTimeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Failure::new(UpstreamErrorKind::ConnectRefused))
        }
        Ok(Err(_)) => return Err(Failure::new(UpstreamErrorKind::ConnectError)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    metrics::upstream().connected(false, Some(started.elapsed()));
    Ok(stream)
}

/// Reads into `buf` (at most [`BODY_READ`] more) within `timeout`.
pub(crate) async fn read_some(
    up: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, UpstreamErrorKind> {
    buf.reserve(BODY_READ);
    match tokio::time::timeout(timeout, up.read_buf(buf)).await {
        Err(_) => Err(UpstreamErrorKind::ReadTimeout),
        Ok(Err(_)) => Err(UpstreamErrorKind::ReadError),
        Ok(Ok(n)) => Ok(n),
    }
}

/// The upstream connections one request may use, in order: an idle pooled one when there is
/// one, then new ones. A request goes out again on the next one only after a failure marked
/// [`Failure::retry`] (a pooled connection the upstream had closed), so at most two are used.
/// Both client protocols forward through this.
pub(crate) struct Upstreams<'a> {
    addr: SocketAddr,
    conf: &'a hubify_edge_config::Upstream,
    pooled: Option<TcpStream>,
}

impl<'a> Upstreams<'a> {
    pub fn new(addr: SocketAddr, conf: &'a hubify_edge_config::Upstream) -> Upstreams<'a> {
        Upstreams {
            addr,
            conf,
            pooled: checkout(addr, conf.keepalive_timeout),
        }
    }

    /// The next connection, and whether it was pooled (reused).
    pub async fn next(&mut self) -> Result<(TcpStream, bool), Failure> {
        if let Some(c) = self.pooled.take() {
            metrics::upstream().connected(true, None);
            return Ok((c, true));
        }
        Ok((connect(self.addr, self.conf.connect_timeout).await?, false))
    }
}

/// Writes a request head upstream within `timeout`; a write error on a `reused` connection is
/// worth a retry.
pub(crate) async fn send_head(
    up: &mut TcpStream,
    head: &[u8],
    timeout: Duration,
    reused: bool,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, up.write_all(head)).await {
        Err(_) => Err(Failure::new(UpstreamErrorKind::WriteTimeout)),
        Ok(Err(_)) => Err(Failure {
            kind: UpstreamErrorKind::WriteError,
            retry: reused,
        }),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads into `rbuf` until `parse` finds a response head at its start (`parse` is tried on what
/// is already there first). With `retryable`, a close or read error before any byte arrived is
/// marked for a retry.
pub(crate) async fn read_response_head<R>(
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    timeout: Duration,
    retryable: bool,
    mut parse: impl FnMut(&[u8]) -> Result<Option<R>, Failure>,
) -> Result<R, Failure> {
    let retry = |kind| Failure {
        kind,
        retry: retryable,
    };
    let mut got_any = false;
    loop {
        if !rbuf.is_empty() {
            if let Some(r) = parse(rbuf)? {
                return Ok(r);
            }
        }
        match read_some(up, rbuf, timeout).await {
            Ok(0) if !got_any => return Err(retry(UpstreamErrorKind::Closed)),
            Ok(0) => return Err(Failure::new(UpstreamErrorKind::Closed)),
            Ok(_) => got_any = true,
            Err(UpstreamErrorKind::ReadError) if !got_any => {
                return Err(retry(UpstreamErrorKind::ReadError))
            }
            Err(kind) => return Err(Failure::new(kind)),
        }
    }
}

/// The access log's name for an upstream failure: its name in `hubify_upstream_errors_total`.
pub(crate) fn error_name(kind: UpstreamErrorKind) -> Option<&'static str> {
    Some(kind.as_str())
}

/// Appends `name: value\r\n`.
#[inline]
pub(crate) fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Starts a request head sent upstream (both client protocols): the request line (HTTP/1.1)
/// and the router's `Host`, first (RFC 9112 §3.2).
pub(crate) fn start_upstream_head(
    method: &str,
    target: &str,
    fields: &rewrite::RouterFields<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields.write_host(|name: &'static str, value: &[u8]| put_header(&mut out, name, value));
    out
}

/// Ends a request head sent upstream (both client protocols): the router's fields, the empty
/// line.
pub(crate) fn end_upstream_head(out: &mut Vec<u8>, fields: &rewrite::RouterFields<'_>) {
    fields.write(|name: &'static str, value: &[u8]| put_header(out, name, value));
    out.extend_from_slice(b"\r\n");
}
