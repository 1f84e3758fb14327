//! One request's bytes for Pingora's engine (see [`OneRequest`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head::{ReqBody, HEAD_MAX};
use super::HEAD_READ;
use crate::upstream::chunked::{BadChunk, Chunked};

/// One request's bytes, for Pingora's engine: the head and body bytes the router already read,
/// then the rest of that request's body from the connection — and nothing of the next request.
/// Bytes that arrive after the request's end are kept aside (`stash`) and go back to the
/// router's loop with the connection, so pipelined requests are answered in order, whichever
/// engine serves each.
#[derive(Debug)]
pub(super) struct OneRequest {
    prefix: BytesMut,
    io: Stream,
    rest: Rest,
    /// Bytes read after the request's end.
    stash: BytesMut,
    /// The client closed its side after the request.
    eof: bool,
}

/// What remains of the request's body to read from the connection.
#[derive(Debug)]
enum Rest {
    Length(u64),
    Chunked(Chunked),
    /// An upgrade: everything.
    All,
    Done,
}

impl OneRequest {
    /// The request whose head is the first `head` bytes of `buf` with body `body`; `buf` keeps
    /// whatever follows that request.
    pub(super) fn new(
        io: Stream,
        buf: &mut BytesMut,
        head: usize,
        body: ReqBody,
        new_head: Option<Vec<u8>>,
    ) -> OneRequest {
        let after_head = &buf[head..];
        let (taken, rest) = match body {
            ReqBody::Length(n) => {
                let take = (after_head.len() as u64).min(n);
                let left = n - take;
                let rest = if left == 0 {
                    Rest::Done
                } else {
                    Rest::Length(left)
                };
                (take as usize, rest)
            }
            ReqBody::Chunked => {
                let mut scan = Chunked::default();
                match scan.feed(after_head) {
                    Ok(Some(end)) => (end, Rest::Done),
                    Ok(None) => (after_head.len(), Rest::Chunked(scan)),
                    // Pingora reads the bad chunk and fails the request itself.
                    Err(BadChunk) => (after_head.len(), Rest::Done),
                }
            }
            ReqBody::Tunnel => (after_head.len(), Rest::All),
        };
        let mut prefix = buf.split_to(head + taken);
        if let Some(new_head) = new_head {
            let body = prefix.split_off(head);
            prefix = BytesMut::from(&new_head[..]);
            prefix.unsplit(body);
        }
        OneRequest {
            prefix,
            io,
            rest,
            stash: BytesMut::new(),
            eof: false,
        }
    }

    /// The connection and the bytes read past the request's end.
    pub(super) fn into_parts(self) -> (Stream, BytesMut) {
        let mut stash = self.prefix;
        stash.unsplit(self.stash);
        (self.io, stash)
    }

    /// After the request's end: reads what comes into the stash (to notice a close, and to keep
    /// a pipelined request) and tells the reader only of a close.
    fn poll_after(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; HEAD_READ];
        while !self.eof && self.stash.len() <= HEAD_MAX {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => self.stash.extend_from_slice(rb.filled()),
            }
        }
        if self.eof && self.stash.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        if matches!(this.rest, Rest::Done) {
            return this.poll_after(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = buf.filled().len() - before;
        if got == 0 {
            return Poll::Ready(Ok(()));
        }
        let new = &buf.filled()[before..];
        let keep = match &mut this.rest {
            Rest::Length(left) => {
                let keep = (got as u64).min(*left);
                *left -= keep;
                if *left == 0 {
                    this.rest = Rest::Done;
                }
                keep as usize
            }
            Rest::Chunked(scan) => match scan.feed(new) {
                Ok(Some(end)) => {
                    this.rest = Rest::Done;
                    end
                }
                Ok(None) => got,
                Err(BadChunk) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )))
                }
            },
            Rest::All | Rest::Done => got,
        };
        if keep < got {
            this.stash.extend_from_slice(&new[keep..]);
            buf.set_filled(before + keep);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.io).await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.io.id()
    }
}

impl Ssl for OneRequest {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.io.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.io.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.io.selected_alpn_proto()
    }
}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.io.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.io.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.io.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.io.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.io.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.io.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.io.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for OneRequest {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.prefix.len() >= buf.len() {
            buf.copy_from_slice(&self.prefix[..buf.len()]);
            return Ok(true);
        }
        Ok(false)
    }
}
