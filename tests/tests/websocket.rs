//! WebSockets through `/terminal`: upgrade, frames both ways, the stripped path at the ttyd
//! stand-in, and the per-path idle timeout (both directions: held past the framework default,
//! and cut when configured short).
//!
//! The router relays upgraded connections with its own code on both engines (`server.fast_path`
//! true and false): every behaviour below runs on both, over the TLS and the plain listener —
//! echo of every kind of message (fragmented, 16 MiB, ping/pong), the close handshake from
//! either side, half-close, refused and broken upgrades, back-pressure to a slow reader, the
//! idle timeout, the drain at SIGTERM (1001 Going Away on both sides, bounded by
//! `server.websocket_drain`), and the handshake the upstream sees.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use hubify_edge_tests::client::{
    tls_connect, ws_connect_plain, ws_connect_tls, ws_next_message, ws_read_until_closed,
    ws_roundtrip, BoxError, ALPN_H1,
};
use hubify_edge_tests::raw::{pseudo_random, End, Head, RawConn, RawUpstream, Reply};
use hubify_edge_tests::upstream::{flood_byte, FLOOD_FRAME, HALF_CLOSE_REPLY};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Router, Trust, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const ECHO_BOUND: Duration = Duration::from_secs(10);

/// Both engines: `server.fast_path = true` (the router's own HTTP/1.1 code) and `false`
/// (Pingora's), which must relay upgrades the same way.
const ENGINES: [bool; 2] = [true, false];

fn engine(fast: bool) -> &'static str {
    if fast {
        "fast_path = true"
    } else {
        "fast_path = false"
    }
}

/// The two listeners WebSockets come through (HTTP/2 does not apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Tls,
    Plain,
}

const LISTENERS: [Listener; 2] = [Listener::Tls, Listener::Plain];

/// A client connection, TLS or plain.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;
type Ws = WebSocketStream<BoxIo>;

/// A TCP (and TLS, ALPN http/1.1) connection to `listener` of the router running `cfg`.
async fn connect(cfg: &EdgeConfig, listener: Listener) -> BoxIo {
    let alice = host("alice");
    match listener {
        Listener::Tls => {
            let tls = tls_connect(cfg.https_port(), &alice, ALPN_H1, &Trust::any())
                .await
                .unwrap_or_else(|e| panic!("TLS connect to the router: {e}"));
            Box::new(tls)
        }
        Listener::Plain => {
            let tcp = TcpStream::connect(("127.0.0.1", cfg.http_port()))
                .await
                .unwrap_or_else(|e| panic!("connect to the router's plain listener: {e}"));
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
    }
}

/// A WebSocket (tungstenite's handshake) to `path` through `listener`.
async fn ws_open(
    cfg: &EdgeConfig,
    listener: Listener,
    path: &str,
    tag: &str,
) -> (Ws, http::Response<Option<Vec<u8>>>) {
    let io = connect(cfg, listener).await;
    let scheme = match listener {
        Listener::Tls => "wss",
        Listener::Plain => "ws",
    };
    let alice = host("alice");
    let req = format!("{scheme}://{alice}{path}")
        .into_client_request()
        .expect("handshake request");
    match tokio::time::timeout(ECHO_BOUND, tokio_tungstenite::client_async(req, io)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!("{tag}: WebSocket handshake through the router failed: {e}"),
        Err(_) => panic!("{tag}: WebSocket handshake: no answer within {ECHO_BOUND:?}"),
    }
}

/// The fixed key of the hand-written handshakes.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A WebSocket handshake for `path` on `alice`, written by hand, with `extra` header lines.
fn handshake(path: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n",
        host("alice")
    );
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Writes a hand-written handshake and reads the response head: (status, head text, bytes
/// read after the head).
async fn raw_handshake(io: &mut BoxIo, request: &str, tag: &str) -> (u16, String, Vec<u8>) {
    let fut = async {
        io.write_all(request.as_bytes()).await?;
        io.flush().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err::<_, BoxError>(
                    format!(
                        "connection closed before a response head; got {:?}",
                        String::from_utf8_lossy(&buf)
                    )
                    .into(),
                );
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, head, buf[end..].to_vec()))
    };
    match tokio::time::timeout(ECHO_BOUND, fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{tag}: hand-written handshake: {e}"),
        Err(_) => panic!("{tag}: hand-written handshake: no answer within {ECHO_BOUND:?}"),
    }
}

/// A header of a response head (first match, case-insensitive).
fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A hand-written handshake that must be answered `101`; then the raw connection and the bytes
/// already read after the head.
async fn raw_ws(cfg: &EdgeConfig, listener: Listener, path: &str, tag: &str) -> (BoxIo, Vec<u8>) {
    let mut io = connect(cfg, listener).await;
    let (status, head, rest) = raw_handshake(&mut io, &handshake(path, &[]), tag).await;
    assert_eq!(status, 101, "{tag}: the handshake was answered {head:?}");
    assert_eq!(
        head_header(&head, "sec-websocket-accept"),
        Some(derive_accept_key(KEY.as_bytes()).as_str()),
        "{tag}: {head:?}"
    );
    (io, rest)
}

/// A masked client frame (FIN set) with `opcode` and `payload` (< 126 bytes).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![
        0x80 | opcode,
        0x80 | u8::try_from(payload.len()).unwrap_or(0),
    ];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads from `io` (after `have`) until `want` bytes are there, bounded.
async fn read_exactly(io: &mut BoxIo, have: &mut Vec<u8>, want: usize, tag: &str) -> Vec<u8> {
    let fut = async {
        let mut chunk = [0u8; 4096];
        while have.len() < want {
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err::<(), BoxError>(
                    format!("stream ended after {:?}", String::from_utf8_lossy(have)).into(),
                );
            }
            have.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(ECHO_BOUND, fut).await {
        Ok(Ok(())) => have.drain(..want).collect(),
        Ok(Err(e)) => panic!("{tag}: reading {want} bytes: {e}"),
        Err(_) => panic!("{tag}: {want} bytes did not arrive within {ECHO_BOUND:?}"),
    }
}

/// Reads until the stream ends or `bound` passes: (bytes, how it ended).
async fn read_to_end(io: &mut BoxIo, bound: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, io.read(&mut chunk)).await {
            Err(_) => return (got, End::Open),
            Ok(Ok(0)) => return (got, End::Eof),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return (got, End::Error(e.to_string())),
        }
    }
}

async fn ws_stack(
    idle: &str,
    read_timeout: &str,
    fast: Option<bool>,
) -> (Upstream, Upstream, EdgeConfig, Router) {
    let gateway = Upstream::echo("gateway").await;
    let terminal = Upstream::echo("terminal").await;
    let mut cfg = EdgeConfig::new()
        .read_timeout(read_timeout)
        .path(
            PathRule::new("/terminal", terminal.port)
                .strip()
                .idle_timeout(idle),
        )
        .path(PathRule::new("/", gateway.port));
    if let Some(fast) = fast {
        cfg = cfg.fast_path(fast);
    }
    let router = Router::start(&cfg).await;
    (gateway, terminal, cfg, router)
}

async fn echo_both_kinds<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, tag: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let text = format!("hello from the client ({tag})");
    let back = ws_roundtrip(ws, Message::text(text.clone()), ECHO_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{tag}: text echo: {e}"));
    assert_eq!(back, Message::text(text), "{tag}: text frame");

    let bin: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let back = ws_roundtrip(ws, Message::binary(bin.clone()), ECHO_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{tag}: binary echo: {e}"));
    assert_eq!(back, Message::binary(bin), "{tag}: binary frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_terminal_over_tls() {
    let (gateway, terminal, cfg, _router) = ws_stack("1h", "10s", None).await;
    let alice = host("alice");
    let (mut ws, resp) = ws_connect_tls(cfg.https_port(), &alice, &alice, "/terminal/ws?x=1")
        .await
        .expect("WebSocket handshake through the TLS listener");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        resp.headers().contains_key("x-request-id"),
        "the 101 answer carries no x-request-id: {:?}",
        resp.headers()
    );
    echo_both_kinds(&mut ws, "tls").await;
    // Several frames in a row, both directions.
    for i in 0..20 {
        let back = ws_roundtrip(&mut ws, Message::text(format!("line {i}")), ECHO_BOUND)
            .await
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(back, Message::text(format!("line {i}")));
    }
    assert_eq!(
        terminal.ws_paths(),
        vec!["/ws?x=1".to_owned()],
        "the ttyd stand-in must see the stripped path"
    );
    let seen = &terminal.requests()[0];
    assert_eq!(seen.header("host"), Some("alice.hubify.test"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert!(
        gateway.requests().is_empty(),
        "WebSocket went to the gateway"
    );
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_terminal_on_the_plain_listener() {
    let (_gateway, terminal, cfg, _router) = ws_stack("1h", "10s", None).await;
    let alice = host("alice");
    let (mut ws, resp) = ws_connect_plain(cfg.http_port(), &alice, "/terminal")
        .await
        .expect("WebSocket handshake through the plain listener");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_both_kinds(&mut ws, "plain").await;
    assert_eq!(terminal.ws_paths(), vec!["/".to_owned()]);
    assert_eq!(
        terminal.requests()[0].header("x-forwarded-proto"),
        Some("http")
    );
    let _ = ws.close(None).await;
}

/// Text, binary, ping → pong, fragmented messages (sent as raw frames) and a 16 MiB binary
/// message, on both engines and both listeners; the `101` carries the request id and the
/// upstream's `Upgrade`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_message_is_echoed_on_both_engines_and_listeners() {
    let big = pseudo_random(16 << 20, 0x5eed);
    for fast in ENGINES {
        let (_gateway, terminal, cfg, _router) = ws_stack("1h", "30s", Some(fast)).await;
        for listener in LISTENERS {
            let tag = format!("{} over {listener:?}", engine(fast));
            let (mut ws, resp) = ws_open(&cfg, listener, "/terminal/ws", &tag).await;
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS, "{tag}");
            let h = resp.headers();
            assert!(
                h.contains_key("x-request-id"),
                "{tag}: 101 without x-request-id: {h:?}"
            );
            assert_eq!(
                h.get("upgrade").and_then(|v| v.to_str().ok()),
                Some("websocket"),
                "{tag}: {h:?}"
            );
            assert!(
                h.get("connection")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
                "{tag}: {h:?}"
            );
            echo_both_kinds(&mut ws, &tag).await;

            // A ping is answered by the echo upstream (tungstenite pongs by itself).
            ws.send(Message::Ping(b"are you there".to_vec().into()))
                .await
                .unwrap_or_else(|e| panic!("{tag}: send ping: {e}"));
            let pong = tokio::time::timeout(ECHO_BOUND, async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Pong(p))) => return Some(p),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return None,
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{tag}: no pong within {ECHO_BOUND:?}"));
            assert_eq!(
                pong.as_deref(),
                Some(&b"are you there"[..]),
                "{tag}: the pong"
            );

            // A fragmented text message: three frames, the echo answers the whole message.
            let frames = [
                Frame::message(&b"frag"[..], OpCode::Data(Data::Text), false),
                Frame::message(&b"men"[..], OpCode::Data(Data::Continue), false),
                Frame::message(&b"ted text"[..], OpCode::Data(Data::Continue), true),
            ];
            for f in frames {
                ws.send(Message::Frame(f))
                    .await
                    .unwrap_or_else(|e| panic!("{tag}: send a fragment: {e}"));
            }
            let back = ws_next_message(&mut ws, ECHO_BOUND, &tag).await;
            assert_eq!(
                back,
                Ok(Message::text("fragmented text")),
                "{tag}: fragmented text"
            );
            // And a fragmented binary message, its fragments interleaved with a ping.
            let chunk = pseudo_random(70_000, 7);
            ws.send(Message::Frame(Frame::message(
                chunk[..30_000].to_vec(),
                OpCode::Data(Data::Binary),
                false,
            )))
            .await
            .unwrap_or_else(|e| panic!("{tag}: send a fragment: {e}"));
            ws.send(Message::Ping(b"between".to_vec().into()))
                .await
                .unwrap_or_else(|e| panic!("{tag}: send ping: {e}"));
            ws.send(Message::Frame(Frame::message(
                chunk[30_000..].to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )))
            .await
            .unwrap_or_else(|e| panic!("{tag}: send a fragment: {e}"));
            let back = ws_next_message(&mut ws, ECHO_BOUND, &tag).await;
            assert!(
                back == Ok(Message::binary(chunk.clone())),
                "{tag}: fragmented binary came back as {:?}",
                back.map(|m| m.len())
            );

            // 16 MiB in one message.
            let back = ws_roundtrip(
                &mut ws,
                Message::binary(big.clone()),
                Duration::from_secs(120),
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}: 16 MiB echo: {e}"));
            assert!(
                back == Message::binary(big.clone()),
                "{tag}: the 16 MiB message came back different ({} bytes)",
                back.len()
            );
            let _ = ws.close(None).await;
        }
        assert_eq!(
            terminal.ws_paths(),
            vec!["/ws".to_owned(), "/ws".to_owned()],
            "{}",
            engine(fast)
        );
    }
}

/// The client closes with 4000: the upstream receives 4000 and the client the reply; the
/// upstream closes with 4001: the client receives 4001 and the upstream its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_close_handshake_goes_through_from_either_side_on_both_engines() {
    for fast in ENGINES {
        let (_gateway, terminal, cfg, _router) = ws_stack("1h", "30s", Some(fast)).await;
        for listener in LISTENERS {
            let tag = format!("{} over {listener:?}", engine(fast));
            let before = terminal.ws_closes().len();

            // The client starts it.
            let (mut ws, _) = ws_open(&cfg, listener, "/terminal/ws", &tag).await;
            echo_both_kinds(&mut ws, &tag).await;
            ws.close(Some(CloseFrame {
                code: CloseCode::from(4000),
                reason: "client done".into(),
            }))
            .await
            .unwrap_or_else(|e| panic!("{tag}: send close: {e}"));
            match ws_next_message(&mut ws, ECHO_BOUND, &tag).await {
                Ok(Message::Close(Some(f))) => assert_eq!(
                    u16::from(f.code),
                    4000,
                    "{tag}: the close reply the client got"
                ),
                other => panic!("{tag}: the client got {other:?} instead of the close reply"),
            }
            let closes = terminal.wait_for_ws_closes(before + 1, ECHO_BOUND).await;
            assert_eq!(
                closes[before],
                Some(4000),
                "{tag}: the close code the upstream received"
            );

            // The upstream starts it.
            let (mut ws, _) = ws_open(&cfg, listener, "/terminal/ws", &tag).await;
            ws.send(Message::text("close-with:4001"))
                .await
                .unwrap_or_else(|e| panic!("{tag}: send: {e}"));
            match ws_next_message(&mut ws, ECHO_BOUND, &tag).await {
                Ok(Message::Close(Some(f))) => assert_eq!(
                    u16::from(f.code),
                    4001,
                    "{tag}: the close code the client received"
                ),
                other => panic!("{tag}: the client got {other:?} instead of a close frame"),
            }
            // Reading on sends tungstenite's answer; the connection then ends.
            ws_read_until_closed(&mut ws, ECHO_BOUND, &tag).await;
            let closes = terminal.wait_for_ws_closes(before + 2, ECHO_BOUND).await;
            assert_eq!(
                closes[before + 1],
                Some(4001),
                "{tag}: the client's answer as the upstream received it"
            );
        }
    }
}

/// The client shuts down its write side: the upstream reads EOF, and what it writes after
/// that still reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_passed_on_and_the_other_direction_keeps_flowing_on_both_engines() {
    for fast in ENGINES {
        let up = Upstream::half_close("terminal").await;
        let cfg = EdgeConfig::new()
            .fast_path(fast)
            .read_timeout("30s")
            .path(PathRule::new("/terminal", up.port).strip());
        let _router = Router::start(&cfg).await;
        for (i, listener) in LISTENERS.into_iter().enumerate() {
            let tag = format!("{} over {listener:?}", engine(fast));
            let (mut io, rest) = raw_ws(&cfg, listener, "/terminal/ws", &tag).await;
            assert!(
                rest.is_empty(),
                "{tag}: bytes before any were sent: {rest:?}"
            );
            let frame = client_frame(0x1, b"before-eof");
            io.write_all(&frame).await.expect("write a frame");
            io.flush().await.expect("flush");
            io.shutdown().await.expect("shut down the write side");

            let seen = up.wait_for_half_closed(i + 1, ECHO_BOUND).await;
            assert_eq!(seen[i], frame, "{tag}: what the upstream read before EOF");
            let (got, end) = read_to_end(&mut io, ECHO_BOUND).await;
            assert_eq!(
                got, HALF_CLOSE_REPLY,
                "{tag}: the bytes the upstream wrote after EOF (the connection then {end:?})"
            );
            assert_ne!(
                end,
                End::Open,
                "{tag}: the tunnel is still open after both sides ended"
            );
        }
    }
}

/// An upstream that refuses the upgrade: its answer reaches the client, then the connection
/// closes (what the client sends next is not a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_relayed_then_the_connection_closes_on_both_engines() {
    const BODY: &str = "no terminal for you";
    for fast in ENGINES {
        let up = Upstream::refuse_upgrade("terminal", 403, BODY).await;
        let cfg = EdgeConfig::new()
            .fast_path(fast)
            .path(PathRule::new("/terminal", up.port).strip());
        let _router = Router::start(&cfg).await;
        for listener in LISTENERS {
            let tag = format!("{} over {listener:?}", engine(fast));
            let mut conn = match listener {
                Listener::Tls => RawConn::tls(cfg.https_port(), &host("alice")).await,
                Listener::Plain => RawConn::plain(cfg.http_port()).await,
            };
            let resp = conn.roundtrip(handshake("/terminal/ws", &[])).await;
            assert_eq!(resp.status, 403, "{tag}: {}", resp.summary());
            assert_eq!(resp.text(), BODY, "{tag}: {}", resp.summary());
            assert!(
                resp.header("x-request-id").is_some(),
                "{tag}: {}",
                resp.summary()
            );
            let end = conn.end(ECHO_BOUND).await;
            assert!(
                matches!(end, End::Eof | End::Error(_)),
                "{tag}: after the refused upgrade the connection is {end:?}, not closed"
            );
        }
        assert_eq!(up.ws_paths().len(), 2, "{}", engine(fast));
    }
}

/// `101` to a request that did not ask to upgrade, and `101` without `Upgrade`: 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_client_did_not_ask_for_or_without_upgrade_or_to_another_protocol_is_a_502_on_both_engines(
) {
    for fast in ENGINES {
        let switch = RawUpstream::always(Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ))
        .await;
        let no_upgrade = RawUpstream::always(Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        ))
        .await;
        let other = RawUpstream::always(Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        ))
        .await;
        let cfg = EdgeConfig::new()
            .fast_path(fast)
            .path(PathRule::new("/switch", switch.port))
            .path(PathRule::new("/other", other.port))
            .path(PathRule::new("/", no_upgrade.port));
        let _router = Router::start(&cfg).await;
        for listener in LISTENERS {
            let tag = format!("{} over {listener:?}", engine(fast));
            let open = || async {
                match listener {
                    Listener::Tls => RawConn::tls(cfg.https_port(), &host("alice")).await,
                    Listener::Plain => RawConn::plain(cfg.http_port()).await,
                }
            };
            let mut conn = open().await;
            let resp = conn
                .roundtrip(format!(
                    "GET /switch/plain HTTP/1.1\r\nHost: {}\r\n\r\n",
                    host("alice")
                ))
                .await;
            assert_eq!(
                resp.status,
                502,
                "{tag}: a 101 to a plain GET: {}",
                resp.summary()
            );

            let mut conn = open().await;
            let resp = conn.roundtrip(handshake("/ws", &[])).await;
            assert_eq!(
                resp.status,
                502,
                "{tag}: a 101 without Upgrade: {}",
                resp.summary()
            );

            // A switch to a protocol the client did not offer (RFC 9110 §7.8).
            let mut conn = open().await;
            let resp = conn.roundtrip(handshake("/other/ws", &[])).await;
            assert_eq!(
                resp.status,
                502,
                "{tag}: a 101 to h2c for a WebSocket handshake: {}",
                resp.summary()
            );
        }
        assert!(
            !switch.seen().is_empty() && !no_upgrade.seen().is_empty(),
            "{}: the requests did not reach the upstreams",
            engine(fast)
        );
    }
}

/// The router's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kb * 1024
}

/// An upstream floods 256 MiB at a client that reads nothing for 3 s: the router's memory stays
/// flat (back-pressure, not buffering), and the relay is alive once the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_back_pressure_not_buffering_on_both_engines() {
    const GROWTH_LIMIT: u64 = 32 << 20;
    let test = async {
        for fast in ENGINES {
            let up = Upstream::flood("terminal", 256 << 20).await;
            let cfg = EdgeConfig::new()
                .fast_path(fast)
                .read_timeout("60s")
                .path(PathRule::new("/terminal", up.port).strip());
            let router = Router::start(&cfg).await;
            let pid = router.pid();
            let base = rss_bytes(pid);
            let mut sockets = Vec::new();
            for listener in LISTENERS {
                let tag = format!("{} over {listener:?}", engine(fast));
                sockets.push((ws_open(&cfg, listener, "/terminal/ws", &tag).await.0, tag));
            }
            // Read nothing for 3 s while the upstream writes as fast as it can.
            let mut peak = base;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                peak = peak.max(rss_bytes(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let written = up.flooded();
            assert!(
                written >= 2 * FLOOD_FRAME as u64,
                "{}: the upstream wrote only {written} bytes: no flood to hold back",
                engine(fast)
            );
            assert!(
                peak.saturating_sub(base) < GROWTH_LIMIT,
                "{}: the router's RSS grew from {base} to {peak} bytes while a client read \
                 nothing (the upstream wrote {written} bytes)",
                engine(fast)
            );
            // The relay is alive: the frames arrive, in order and intact.
            for (ws, tag) in &mut sockets {
                for i in 0..4u64 {
                    match ws_next_message(ws, Duration::from_secs(30), tag).await {
                        Ok(Message::Binary(b)) => assert!(
                            b.len() == FLOOD_FRAME && b.iter().all(|&x| x == flood_byte(i)),
                            "{tag}: flood frame {i} arrived altered ({} bytes)",
                            b.len()
                        ),
                        other => panic!("{tag}: flood frame {i}: got {:?}", other.map(|m| m.len())),
                    }
                }
            }
            drop(sockets);
        }
    };
    tokio::time::timeout(Duration::from_secs(180), test)
        .await
        .expect("the slow-reader test did not finish within 180 s");
}

/// Slow on purpose (75 s): an idle WebSocket must outlive the proxy framework's 60 s default and
/// the (shorter) upstream read_timeout when the path rule says `idle_timeout = "120s"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_stays_open_for_the_configured_idle_timeout() {
    let (_gateway, _terminal, cfg, _router) = ws_stack("120s", "30s", None).await;
    let alice = host("alice");
    let (mut ws, _) = ws_connect_tls(cfg.https_port(), &alice, &alice, "/terminal/ws")
        .await
        .expect("WebSocket handshake");
    echo_both_kinds(&mut ws, "before idling").await;

    // No traffic at all for 75 s (no pings either: neither side sends any).
    let idle_until = Instant::now() + Duration::from_secs(75);
    match tokio::time::timeout_at(idle_until.into(), ws.next()).await {
        Err(_) => {} // nothing arrived: still open as far as we can tell
        Ok(other) => panic!("the idle WebSocket got {other:?} before 75 s of idling"),
    }
    echo_both_kinds(&mut ws, "after 75 s idle").await;
    let _ = ws.close(None).await;
}

/// `/terminal` has `idle_timeout = "2s"`, `/` only the 60 s read_timeout: the terminal's
/// WebSocket is closed, the gateway's idle one beside it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_is_closed_after_a_short_idle_timeout() {
    for fast in ENGINES {
        let e = engine(fast);
        // read_timeout is long: only the path rule's 2 s can close the socket within the bound.
        let (_gateway, _terminal, cfg, _router) = ws_stack("2s", "60s", Some(fast)).await;
        let (mut ws, _) = ws_open(&cfg, Listener::Tls, "/terminal/ws", e).await;
        let (mut other, _) = ws_open(&cfg, Listener::Plain, "/gateway-ws", e).await;
        echo_both_kinds(&mut ws, &format!("{e}: before idling")).await;
        echo_both_kinds(&mut other, &format!("{e}: /, before idling")).await;

        let idle_from = Instant::now();
        let bound = Duration::from_secs(10);
        let outcome = tokio::time::timeout(bound, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return format!("close frame {frame:?}"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(m)) => panic!("{e}: unexpected frame while idling: {m:?}"),
                    Some(Err(err)) => return format!("error {err}"),
                    None => return "end of stream".to_owned(),
                }
            }
        })
        .await;
        let elapsed = idle_from.elapsed();
        let how = outcome.unwrap_or_else(|_| {
            panic!("{e}: idle WebSocket still open {bound:?} after its 2 s idle_timeout")
        });
        assert!(
            elapsed >= Duration::from_secs(1),
            "{e}: idle WebSocket closed after only {elapsed:?} ({how}); idle_timeout is 2 s"
        );
        // The one on `/` idled as long and is still open.
        echo_both_kinds(
            &mut other,
            &format!("{e}: / after the terminal's idle timeout"),
        )
        .await;
        let _ = other.close(None).await;
    }
}

/// grace_period + websocket_drain + slack: the bound on the exit after SIGTERM with WebSockets
/// open (shutdown_timeout is 60 s and must not be what ends them).
const DRAIN_EXIT_BOUND: Duration = Duration::from_secs(1 + 3 + 3);

async fn drain_stack(fast: bool) -> (Upstream, EdgeConfig, Router) {
    let terminal = Upstream::echo("terminal").await;
    let cfg = EdgeConfig::new()
        .fast_path(fast)
        .grace_period("1s")
        .shutdown_timeout("60s")
        .websocket_drain("3s")
        .read_timeout("60s")
        .path(PathRule::new("/terminal", terminal.port).strip());
    let router = Router::start(&cfg).await;
    (terminal, cfg, router)
}

/// A connection on each listener, opened before SIGTERM (so that the grace period is not
/// spent connecting), for an upgrade request after it.
async fn spare_connections(cfg: &EdgeConfig) -> Vec<(Listener, RawConn)> {
    vec![
        (
            Listener::Tls,
            RawConn::tls(cfg.https_port(), &host("alice")).await,
        ),
        (Listener::Plain, RawConn::plain(cfg.http_port()).await),
    ]
}

/// From SIGTERM on, a new upgrade request gets 503 + Retry-After + `Connection: close`.
async fn upgrades_are_refused_while_stopping(
    spare: Vec<(Listener, RawConn)>,
    router: &Router,
    e: &str,
) {
    router
        .wait_for_log("SIGTERM: still accepting", Duration::from_secs(5))
        .await;
    for (listener, mut conn) in spare {
        let tag = format!("{e} over {listener:?}, during the grace period");
        let resp = conn.roundtrip(handshake("/terminal/ws", &[])).await;
        assert_eq!(resp.status, 503, "{tag}: {}", resp.summary());
        assert!(
            resp.header("retry-after").is_some(),
            "{tag}: no Retry-After: {}",
            resp.summary()
        );
        assert!(
            resp.connection_has("close"),
            "{tag}: no Connection: close: {}",
            resp.summary()
        );
    }
}

/// SIGTERM with a WebSocket open on each listener: after the grace period both clients get
/// `1001 Going Away` and the upstream too; everyone answers; the process exits well before
/// shutdown_timeout.
async fn sigterm_drains_open_websockets(fast: bool) {
    let e = engine(fast);
    let (terminal, cfg, mut router) = drain_stack(fast).await;
    let mut sockets = Vec::new();
    for listener in LISTENERS {
        let tag = format!("{e} over {listener:?}");
        let (mut ws, _) = ws_open(&cfg, listener, "/terminal/ws", &tag).await;
        echo_both_kinds(&mut ws, &tag).await;
        sockets.push((ws, tag));
    }
    let spare = spare_connections(&cfg).await;
    let signalled = Instant::now();
    router.sigterm();
    upgrades_are_refused_while_stopping(spare, &router, e).await;

    for (ws, tag) in &mut sockets {
        match ws_next_message(ws, DRAIN_EXIT_BOUND, tag).await {
            Ok(Message::Close(Some(f))) => assert_eq!(
                f.code,
                CloseCode::Away,
                "{tag}: the close frame the client got at shutdown"
            ),
            other => panic!("{tag}: at shutdown the client got {other:?}, not a 1001 close"),
        }
    }
    for (ws, tag) in &mut sockets {
        // tungstenite answers the close as it reads on; the router then closes.
        ws_read_until_closed(ws, DRAIN_EXIT_BOUND, tag).await;
    }
    let closes = terminal.wait_for_ws_closes(2, DRAIN_EXIT_BOUND).await;
    assert_eq!(
        closes,
        vec![Some(1001), Some(1001)],
        "{e}: the close codes the upstream received"
    );
    let left = DRAIN_EXIT_BOUND.saturating_sub(signalled.elapsed());
    let status = router.wait_exit(left).await.unwrap_or_else(|| {
        panic!(
            "{e}: router still running {DRAIN_EXIT_BOUND:?} after SIGTERM (grace 1 s, drain 3 s)"
        )
    });
    assert!(status.success(), "{e}: the router exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_websockets_with_going_away_fast_path() {
    sigterm_drains_open_websockets(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_websockets_with_going_away_pingora() {
    sigterm_drains_open_websockets(false).await;
}

/// SIGTERM with clients that never answer the close frame (they stop reading): the process
/// still exits within grace + drain + slack; the close frame was the first thing sent to them
/// after the last echo.
async fn sigterm_drain_is_bounded_when_clients_never_answer(fast: bool) {
    let e = engine(fast);
    let (terminal, cfg, mut router) = drain_stack(fast).await;
    let mut sockets = Vec::new();
    for listener in LISTENERS {
        let tag = format!("{e} over {listener:?}");
        let (mut io, mut rest) = raw_ws(&cfg, listener, "/terminal/ws", &tag).await;
        io.write_all(&client_frame(0x1, b"hi"))
            .await
            .expect("write");
        io.flush().await.expect("flush");
        let echo = read_exactly(&mut io, &mut rest, 4, &tag).await;
        assert_eq!(echo, b"\x81\x02hi", "{tag}: the echo");
        sockets.push((io, rest, tag));
    }
    let spare = spare_connections(&cfg).await;
    let signalled = Instant::now();
    router.sigterm();
    upgrades_are_refused_while_stopping(spare, &router, e).await;
    // No client reads or answers from here on.
    let status = router
        .wait_exit(DRAIN_EXIT_BOUND.saturating_sub(signalled.elapsed()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{e}: router still running {DRAIN_EXIT_BOUND:?} after SIGTERM with clients that \
                 do not answer the close (grace 1 s, drain 3 s)"
            )
        });
    assert!(status.success(), "{e}: the router exited with {status}");
    for (io, rest, tag) in &mut sockets {
        let (mut got, _) = read_to_end(io, ECHO_BOUND).await;
        got.splice(0..0, rest.drain(..));
        assert_eq!(
            got,
            [0x88, 0x02, 0x03, 0xe9],
            "{tag}: what the client was sent after the echo: a 1001 close frame and nothing else"
        );
    }
    assert_eq!(
        terminal.ws_closes(),
        vec![Some(1001), Some(1001)],
        "{e}: the close codes the upstream received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_is_bounded_when_clients_never_answer_fast_path() {
    sigterm_drain_is_bounded_when_clients_never_answer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_is_bounded_when_clients_never_answer_pingora() {
    sigterm_drain_is_bounded_when_clients_never_answer(false).await;
}

/// The handshake as the upstream receives it: method, path and every header (but the request
/// id) are the same on both engines, for each listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_forward_the_same_handshake() {
    let extra = [
        ("Origin", "https://alice.hubify.test"),
        ("Sec-WebSocket-Protocol", "tty, chat"),
        (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        ),
        ("User-Agent", "websocket-test/1"),
        ("Cookie", "a=1; b=2"),
        ("X-Custom", "kept"),
    ];
    let mut seen = Vec::new();
    for fast in ENGINES {
        let terminal = Upstream::echo("terminal").await;
        let cfg = EdgeConfig::new()
            .fast_path(fast)
            .path(PathRule::new("/terminal", terminal.port).strip());
        let _router = Router::start(&cfg).await;
        let mut per_listener = Vec::new();
        for (i, listener) in LISTENERS.into_iter().enumerate() {
            let tag = format!("{} over {listener:?}", engine(fast));
            let mut io = connect(&cfg, listener).await;
            let (status, head, _) =
                raw_handshake(&mut io, &handshake("/terminal/ws?tab=2", &extra), &tag).await;
            assert_eq!(status, 101, "{tag}: {head}");
            terminal.wait_for_requests(i + 1, ECHO_BOUND).await;
            let req = terminal.requests()[i].clone();
            let mut headers: Vec<(String, String)> = req
                .headers
                .iter()
                .filter(|(n, _)| n != "x-request-id")
                .cloned()
                .collect();
            headers.sort();
            assert!(
                headers.contains(&("upgrade".into(), "websocket".into()))
                    && headers.contains(&("sec-websocket-key".into(), KEY.into()))
                    && headers.contains(&("x-custom".into(), "kept".into())),
                "{tag}: the upstream saw {headers:?}"
            );
            assert!(
                req.header("x-request-id").is_some(),
                "{tag}: no x-request-id upstream: {headers:?}"
            );
            per_listener.push((req.method, req.path, headers));
        }
        seen.push(per_listener);
    }
    for (i, listener) in LISTENERS.into_iter().enumerate() {
        assert_eq!(
            seen[0][i],
            seen[1][i],
            "over {listener:?}: the handshake at the upstream with {} (left) and {} (right)",
            engine(true),
            engine(false)
        );
        assert_eq!(seen[0][i].0, "GET", "over {listener:?}");
        assert_eq!(seen[0][i].1, "/ws?tab=2", "over {listener:?}");
    }
}
