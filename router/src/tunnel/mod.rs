//! The router's own relay for upgraded connections (WebSockets), on both engines: after the
//! upstream's `101`, bytes flow both ways through one small buffer per direction that exists
//! only while bytes are moving — a direction waiting for its peer holds no buffer at all, so an
//! idle terminal costs the two sockets and this state. A direction reads again only once its
//! last bytes are written (back-pressure: a slow reader never makes the router buffer more than
//! [`CHUNK`]).
//!
//! The relay tracks WebSocket frame headers as bytes pass ([`frames`]); it never decodes or
//! rewrites a payload. That lets it drain at shutdown: each side gets a `1001 Going Away` close
//! frame at the next frame boundary of the bytes going to it, nothing after it, and the
//! connections close once both sides have answered with their own close frame, or after
//! `server.websocket_drain`.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

pub mod frames;

use frames::FrameScan;

/// The most a direction buffers: one read's worth.
pub const CHUNK: usize = 16 * 1024;

/// How an upgraded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (or one closed after the other's close frame).
    Closed,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// Shutdown: both close handshakes completed.
    Drained,
    /// Shutdown: the drain bound passed first.
    DrainTimeout,
    /// Reading from or writing to the client failed.
    ClientRead,
    ClientWrite,
    /// Reading from or writing to the upstream failed.
    UpstreamRead,
    UpstreamWrite,
}

impl End {
    /// The access log's `error` for this end (`None`: an orderly end).
    pub fn error(self) -> Option<&'static str> {
        use crate::metrics::{ClientError, UpstreamErrorKind};
        match self {
            End::Closed | End::Drained => None,
            End::Idle => Some("idle_timeout"),
            End::DrainTimeout => Some("drain_timeout"),
            End::ClientRead => Some(ClientError::ReadError.as_str()),
            End::ClientWrite => Some(ClientError::WriteError.as_str()),
            End::UpstreamRead => Some(UpstreamErrorKind::ReadError.as_str()),
            End::UpstreamWrite => Some(UpstreamErrorKind::WriteError.as_str()),
        }
    }
}

/// What an upgraded connection carried, for the accounting step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub end: End,
    /// Bytes written to the client (after the `101` head).
    pub to_client: u64,
    /// Bytes read from the client (after its handshake head).
    pub from_client: u64,
}

/// The bounds of one upgraded connection.
pub struct Bounds {
    /// Closed after this long without a byte either way.
    pub idle: Duration,
    /// At shutdown, the close handshakes get this long.
    pub drain: Duration,
}

/// Relays between `client` and `upstream` until the connection ends. `to_upstream` and
/// `to_client` are bytes already read from the other side (after the handshake heads).
/// `websocket`: the upgraded protocol is WebSocket (frames are tracked and shutdown drains with
/// close frames; any other protocol is closed at once at shutdown).
pub async fn relay<C, U>(
    client: &mut C,
    upstream: &mut U,
    (to_upstream, to_client): (Vec<u8>, Vec<u8>),
    websocket: bool,
    bounds: Bounds,
    shutdown: &ShutdownWatch,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut shutdown = shutdown.clone();
    let mut t = Tunnel {
        up: Half::new(to_upstream, websocket, Side::Upstream),
        down: Half::new(to_client, websocket, Side::Client),
        last: Instant::now(),
        flip: false,
        failed: None,
    };
    let mut drain_until: Option<Instant> = None;
    let end = loop {
        if drain_until.is_none() && *shutdown.borrow() {
            if !websocket {
                break End::Drained;
            }
            t.start_drain();
            drain_until = Some(later(Instant::now(), bounds.drain));
        }
        let idle_at = later(t.last, bounds.idle);
        let wake = drain_until.map_or(idle_at, |d| d.min(idle_at));
        tokio::select! {
            end = poll_fn(|cx| t.poll(cx, &mut *client, &mut *upstream)) => break end,
            _ = changed(&mut shutdown), if drain_until.is_none() => {}
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if drain_until.is_some_and(|d| d <= now) {
                    break End::DrainTimeout;
                }
                if later(t.last, bounds.idle) <= now {
                    break End::Idle;
                }
            }
        }
    };
    Relayed {
        end,
        to_client: t.down.sent,
        from_client: t.up.read,
    }
}

/// Which endpoint a direction writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

struct Tunnel {
    /// Client → upstream.
    up: Half,
    /// Upstream → client.
    down: Half,
    /// When a byte last moved either way.
    last: Instant,
    /// Which half goes first this time.
    flip: bool,
    /// The first direction that failed.
    failed: Option<End>,
}

impl Tunnel {
    fn poll<C, U>(&mut self, cx: &mut Context<'_>, client: &mut C, upstream: &mut U) -> Poll<End>
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        U: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        // Alternately first: a busy direction never starves the other of the task's budget.
        self.flip = !self.flip;
        let (up, down) = if self.flip {
            let up = self
                .up
                .poll(cx, &mut *client, &mut *upstream, &mut self.last);
            let down = self
                .down
                .poll(cx, &mut *upstream, &mut *client, &mut self.last);
            (up, down)
        } else {
            let down = self
                .down
                .poll(cx, &mut *upstream, &mut *client, &mut self.last);
            let up = self
                .up
                .poll(cx, &mut *client, &mut *upstream, &mut self.last);
            (up, down)
        };
        // A direction that failed stops; the other still delivers what it holds and ends on
        // its own (its source closes, or the idle bound), and the first failure is reported.
        for (r, half) in [(up, &mut self.up), (down, &mut self.down)] {
            if let Poll::Ready(Err(end)) = r {
                half.stop();
                self.failed.get_or_insert(end);
            }
        }
        if self.up.done && self.down.done {
            return Poll::Ready(match self.failed {
                Some(end) => end,
                None if self.up.draining => End::Drained,
                None => End::Closed,
            });
        }
        // Draining: done once each side has answered the close frame it was sent (what it
        // sends after it is never read by anyone).
        if self.up.draining && self.up.answered() && self.down.answered() {
            return Poll::Ready(End::Drained);
        }
        // Pending: a half that is not done is waiting on its socket (a failed half is done).
        Poll::Pending
    }

    fn start_drain(&mut self) {
        self.up.start_drain();
        self.down.start_drain();
    }
}

/// One direction: reads from its source, writes to its sink.
struct Half {
    /// Bytes read and not yet written (`buf[pos..]`); no capacity while idle.
    buf: BytesMut,
    pos: usize,
    /// The sink needs a flush after the last write.
    flush: bool,
    /// The source closed (its end is passed on as a write shutdown).
    eof: bool,
    /// The sink was shut down (after `eof`).
    done: bool,
    /// Frame boundaries of a WebSocket (`None`: another protocol).
    frames: Option<FrameScan>,
    /// Where this direction's bytes go.
    to: Side,
    /// Shutdown: a close frame goes to the sink at the next boundary.
    draining: bool,
    /// The router's (or the source's own) close frame went to the sink: nothing follows it.
    closed: bool,
    /// After `closed`: the source sent a close frame of its own (its side of the handshake).
    source_closed: bool,
    /// Bytes read from the source; bytes written to the sink.
    read: u64,
    sent: u64,
}

impl Half {
    fn new(pending: Vec<u8>, websocket: bool, to: Side) -> Half {
        let mut h = Half {
            buf: BytesMut::new(),
            pos: 0,
            flush: false,
            eof: false,
            done: false,
            frames: websocket.then(FrameScan::default),
            to,
            draining: false,
            closed: false,
            source_closed: false,
            read: 0,
            sent: 0,
        };
        h.read = pending.len() as u64;
        h.buf = BytesMut::from(&pending[..]);
        h.scan_from(0);
        h
    }

    /// Draining: the close frame went out to the sink, and the source answered with its own
    /// (or ended).
    fn answered(&self) -> bool {
        (self.source_closed || self.eof) && self.pos >= self.buf.len() && !self.flush
    }

    /// Ends this direction after a failure: nothing more is read or written.
    fn stop(&mut self) {
        self.done = true;
        self.buf = BytesMut::new();
        self.pos = 0;
        self.flush = false;
    }

    fn start_drain(&mut self) {
        self.draining = true;
        self.close_if_at_boundary();
    }

    /// Draining and between frames: the close frame goes after the bytes buffered now.
    fn close_if_at_boundary(&mut self) {
        if !self.draining || self.closed {
            return;
        }
        let Some(frames) = &self.frames else { return };
        if self.eof {
            // The source ended: its sink was (or is being) shut down; nothing more goes there.
            self.closed = true;
            return;
        }
        if !frames.at_boundary() {
            return;
        }
        if frames.close_seen() {
            // The source's own close frame already went through: the sink has its close.
            self.closed = true;
            self.source_closed = true;
            return;
        }
        match self.to {
            Side::Client => self.buf.extend_from_slice(&frames::GOING_AWAY_TO_CLIENT),
            Side::Upstream => self
                .buf
                .extend_from_slice(&frames::going_away_to_server(rand::random())),
        }
        self.closed = true;
    }

    /// Tracks `buf[start..]`, the bytes just read.
    fn scan_from(&mut self, start: usize) {
        let Some(frames) = &mut self.frames else {
            return;
        };
        if self.closed {
            // Nothing more goes to the sink; the source's close frame ends its half.
            frames.feed(&self.buf[start..]);
            self.source_closed |= frames.close_seen();
            self.buf.truncate(start);
            return;
        }
        if !self.draining {
            frames.feed(&self.buf[start..]);
            return;
        }
        match frames.until_boundary(&self.buf[start..]) {
            None => {}
            Some(k) => {
                // The rest of what was read comes after the close frame: never sent; watched.
                let rest = self.buf.split_off(start + k);
                if frames.close_seen() {
                    self.closed = true;
                    self.source_closed = true;
                } else {
                    self.close_if_at_boundary();
                }
                if let Some(frames) = &mut self.frames {
                    // A close frame in the rest: the source's answer.
                    frames.feed(&rest);
                    self.source_closed |= frames.close_seen();
                }
            }
        }
    }

    /// Moves bytes from `src` to `dst` until one of them is not ready. `Ok(())`: the source
    /// ended and the sink was shut down.
    fn poll<S, D>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        last: &mut Instant,
    ) -> Poll<Result<(), End>>
    where
        S: AsyncRead + Unpin + ?Sized,
        D: AsyncWrite + Unpin + ?Sized,
    {
        let (read_err, write_err) = match self.to {
            Side::Client => (End::UpstreamRead, End::ClientWrite),
            Side::Upstream => (End::ClientRead, End::UpstreamWrite),
        };
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.pos < self.buf.len() {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.pos..]))
                    .map_err(|_| write_err)?;
                if n == 0 {
                    return Poll::Ready(Err(write_err));
                }
                self.pos += n;
                self.sent += n as u64;
                self.flush = true;
                *last = Instant::now();
            }
            if self.flush {
                ready!(Pin::new(&mut *dst).poll_flush(cx)).map_err(|_| write_err)?;
                self.flush = false;
            }
            self.buf.clear();
            self.pos = 0;
            if self.eof {
                // A half-close is passed on: the other direction goes on.
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                self.done = true;
                continue;
            }
            if self.buf.capacity() > CHUNK {
                // Bytes that came with the heads, or a close frame added to a full buffer.
                self.buf = BytesMut::new();
            }
            self.buf.reserve(CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *src), cx, &mut self.buf) {
                Poll::Pending => {
                    // Waiting for the source: no buffer while idle.
                    self.buf = BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(read_err)),
                Poll::Ready(Ok(n)) => {
                    if n == 0 {
                        self.eof = true;
                        continue;
                    }
                    self.read += n as u64;
                    *last = Instant::now();
                    self.scan_from(0);
                }
            }
        }
    }
}

/// `at + d`, or a year from `at` when that is past what an instant can hold.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

/// Resolves when the shutdown flag changes; never when its sender is gone.
async fn changed(shutdown: &mut ShutdownWatch) {
    if shutdown.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests;
